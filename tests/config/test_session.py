"""Session persistence (HTTPRoute `sessionPersistence`, Rollout `stickiness`) and the Rollout's canary
header: what they compile to in the snapshot, and the errors naming file, document and field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fastmesh.config import ConfigError, MeshConfig, compile_snapshot
from tests.config.test_rollout import BASE, GOOD, rollout


def routes(cfg: MeshConfig, vhost: str = "default/reviews") -> list[dict[str, Any]]:
    [found] = [v for v in compile_snapshot(cfg)["vhosts"] if v["name"] == vhost]
    return list(found["routes"])


def with_rule(extra: str) -> str:
    rule = "    - backendRefs: [{name: reviews-v1, port: 9080, weight: 90}, {name: reviews-v2, port: 9080, weight: 10}]\n"
    assert rule in BASE
    return BASE.replace(rule, rule + "".join(f"      {line}\n" for line in extra.splitlines()))


def only(error: ConfigError) -> tuple[int, str | None, str]:
    assert len(error.problems) == 1, error.problems
    p = error.problems[0]
    return p.document, p.path, p.message


@pytest.mark.parametrize(("yaml", "session"), [
    ("sessionPersistence: {}", {"type": "Cookie", "name": "fastmesh-session", "max_age_s": None}),
    ("sessionPersistence: {sessionName: Sticky, absoluteTimeout: 1h, cookieConfig: {lifetimeType: Permanent}}",
     {"type": "Cookie", "name": "Sticky", "max_age_s": 3600}),
    ("sessionPersistence: {type: Header, sessionName: X-User}", {"type": "Header", "name": "x-user"}),
])
def test_http_route_session_persistence_compiles_onto_the_rule(
    load: Callable[[str], MeshConfig], yaml: str, session: dict[str, Any]
) -> None:
    [r] = routes(load(with_rule(yaml)))
    assert r["session"] == session
    assert "session" not in routes(load(BASE))[0]


@pytest.mark.parametrize(("yaml", "path", "message"), [
    ("sessionPersistence: {type: Header}", "spec.rules[0].sessionPersistence",
     "type Header needs sessionName: the request header whose value is hashed"),
    ("sessionPersistence: {sessionName: 'a b'}", "spec.rules[0].sessionPersistence.sessionName",
     "is not a valid header name"),
    ("sessionPersistence: {type: Hash}", "spec.rules[0].sessionPersistence.type", "Cookie"),
    ("sessionPersistence: {cookieConfig: {lifetimeType: Permanent}}", "spec.rules[0].sessionPersistence",
     "cookieConfig.lifetimeType Permanent needs absoluteTimeout"),
    ("sessionPersistence: {idleTimeout: 10m}", "spec.rules[0].sessionPersistence.idleTimeout",
     "fastmesh does not support yet"),
    ("sessionPersistence: {absoluteTimeout: 10ms}", "spec.rules[0].sessionPersistence",
     "absoluteTimeout must be at least 1s"),
    ("sessionPersistence: {type: Header, sessionName: x-user, absoluteTimeout: 1h}",
     "spec.rules[0].sessionPersistence", "apply to type Cookie only"),
])
def test_bad_session_persistence_names_the_field(
    errors: Callable[[str], ConfigError], yaml: str, path: str, message: str
) -> None:
    document, got_path, got = only(errors(with_rule(yaml)))
    assert (document, got_path) == (4, path), got
    assert message in got


def test_rollout_stickiness_and_canary_header_compile_onto_the_rule(load: Callable[[str], MeshConfig]) -> None:
    # The file lists canary first: the rollout's rule is laid out stable first (header hash order).
    text = rollout(GOOD + "  stickiness: {type: Header, header: X-User}\n  canaryHeader: {}\n")
    text = text.replace("[{name: reviews-v1, port: 9080, weight: 90}, {name: reviews-v2, port: 9080, weight: 10}]",
                        "[{name: reviews-v2, port: 9080, weight: 10}, {name: reviews-v1, port: 9080, weight: 90}]")
    compiled = routes(load(text))
    by_name = {r["name"]: r for r in compiled}
    assert [r["name"] for r in compiled] == [
        "default/reviews/rule/0/canary-pin", "default/reviews/rule/0/stable-pin", "default/reviews/rule/0"]
    split = by_name["default/reviews/rule/0"]
    assert split["session"] == {"type": "Header", "name": "x-user"}
    assert [b["backend"] for b in split["backends"]] == ["default/reviews-v1:9080", "default/reviews-v2:9080"]
    canary = by_name["default/reviews/rule/0/canary-pin"]
    assert canary["match"]["headers"] == [{"type": "Exact", "name": "x-canary", "value": "always"}]
    assert canary["backends"] == [{"backend": "default/reviews-v2:9080", "weight": 1}]
    assert "session" not in canary
    stable = by_name["default/reviews/rule/0/stable-pin"]
    assert stable["match"]["headers"] == [{"type": "Exact", "name": "x-canary", "value": "never"}]
    assert stable["backends"] == [{"backend": "default/reviews-v1:9080", "weight": 1}]


def test_rollout_cookie_stickiness_and_a_custom_pin(load: Callable[[str], MeshConfig]) -> None:
    text = rollout(GOOD + "  stickiness: {type: Cookie, cookieName: canary-session, maxAge: 30m}\n"
                   "  canaryHeader: {name: X-Tester, value: 'yes', stableValue: null}\n")
    compiled = routes(load(text))
    assert [r["name"] for r in compiled] == ["default/reviews/rule/0/canary-pin", "default/reviews/rule/0"]
    assert compiled[1]["session"] == {"type": "Cookie", "name": "canary-session", "max_age_s": 1800}
    assert compiled[0]["match"]["headers"] == [{"type": "Exact", "name": "x-tester", "value": "yes"}]


@pytest.mark.parametrize(("extra", "path", "message"), [
    ("  stickiness: {type: Header}\n", "spec.stickiness", "type Header needs `header`"),
    ("  stickiness: {type: Cookie, header: x-user}\n", "spec.stickiness", "header applies to type Header only"),
    ("  stickiness: {type: Cookie, cookieName: 'bad;name'}\n", "spec.stickiness.cookieName", "not a valid header name"),
    ("  stickiness: {type: Cookie, maxAge: forever}\n", "spec.stickiness.maxAge", "duration"),
    ("  stickiness: {type: Sticky}\n", "spec.stickiness.type", "Cookie"),
    ("  canaryHeader: {value: never}\n", "spec.canaryHeader", "value and stableValue must differ"),
    ("  canaryHeader: {name: 'x canary'}\n", "spec.canaryHeader.name", "not a valid header name"),
])
def test_bad_stickiness_or_canary_header_names_the_field(
    errors: Callable[[str], ConfigError], extra: str, path: str, message: str
) -> None:
    document, got_path, got = only(errors(rollout(GOOD + extra)))
    assert (document, got_path) == (5, path), got
    assert message in got


def test_stickiness_on_a_rule_with_its_own_session_persistence_is_refused(
    errors: Callable[[str], ConfigError]
) -> None:
    text = rollout(GOOD + "  stickiness: {type: Cookie}\n").replace(BASE, with_rule("sessionPersistence: {}"))
    document, path, message = only(errors(text))
    assert (document, path) == (5, "spec.stickiness")
    assert message == "rule 0 of HTTPRoute default/reviews has its own sessionPersistence: remove one of the two"
