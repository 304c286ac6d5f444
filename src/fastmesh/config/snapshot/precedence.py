"""Gateway API precedence among the route entries of one virtual host.

Within a host: rules of the route with the most specific matching hostname first (the characters of
a matching exact hostname, then of a matching hostname); then the match with an Exact path, a
PathPrefix with the most characters (RegularExpression paths after every prefix), a method, the most
header matches, the most query matches; ties go to the oldest route, then `namespace/name`
alphabetically, then rule order, then match order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastmesh.config.snapshot.routes import Entry

_PATH_CLASS = {"Exact": 0, "PathPrefix": 1, "RegularExpression": 2}


def hostname_specificity(route_hostnames: list[str], host: str) -> tuple[int, int]:
    """(characters of a matching exact hostname, characters of a matching hostname) of a route for
    the vhost `host`; (0, 0) when the route has no hostnames."""
    best = (0, 0)
    for hostname in route_hostnames:
        if hostname == host and not hostname.startswith("*"):
            best = max(best, (len(hostname), len(hostname)))
        elif covers(hostname, host):
            best = max(best, (0, len(hostname)))
    return best


def covers(hostname: str, host: str) -> bool:
    """Whether route hostname `hostname` serves `host` (itself possibly a wildcard vhost)."""
    if hostname == host:
        return True
    return hostname.startswith("*.") and host.endswith(hostname[1:])


def _age(created: datetime | None) -> tuple[int, Any]:
    return (0, created) if created is not None else (1, 0)  # no timestamp: newest


def precedence_key(entry: Entry, specificity: tuple[int, int] = (0, 0)) -> tuple[Any, ...]:
    """Sort key: smaller sorts first (wins)."""
    match = entry.match
    path_class = _PATH_CLASS[match.path.type]
    return (
        -specificity[0],
        -specificity[1],
        path_class,
        -len(match.path.value) if path_class < 2 else 0,
        0 if match.method else 1,
        -len(match.headers),
        -len(match.query_params),
        _age(entry.route.metadata.creation_timestamp),
        entry.route.ref,
        entry.rule_index,
        entry.match_index,
    )
