"""Scalar types: durations, addresses, hostnames."""

from __future__ import annotations

import pytest

from fastmesh.config.model.types import hostname_problem, join_hostport, parse_duration, split_hostport


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("500ms", 0.5), ("1h30m", 5400.0), ("1m30s500ms", 90.5), ("0s", 0.0), ("99999ms", 99.999)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10", "1.5s", "10 s", "1d", "", "1h1h1h1h1h", "123456s", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_hostports() -> None:
    assert split_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
    assert split_hostport("[::1]:80") == ("::1", 80)
    assert split_hostport("example.com:8080") == ("example.com", 8080)
    for bad in ["::1:80", "127.0.0.1", ":80", "[::1]80", "a:b", "a:70000"]:
        with pytest.raises(ValueError):
            split_hostport(bad)
    assert join_hostport("::1", 80) == "[::1]:80"
    assert join_hostport("10.0.0.1", 80) == "10.0.0.1:80"


def test_hostnames() -> None:
    assert hostname_problem("shop.example.com", wildcard=True) is None
    assert hostname_problem("*.example.com", wildcard=True) is None
    assert hostname_problem("reviews", wildcard=True) is None
    assert "wildcards are not allowed" in (hostname_problem("*.example.com", wildcard=False) or "")
    assert "leave `hostnames` empty" in (hostname_problem("*", wildcard=True) or "")
    assert "must not include a port" in (hostname_problem("a.com:80", wildcard=True) or "")
    assert "not a valid hostname" in (hostname_problem("a..com", wildcard=True) or "")
    assert "not a valid hostname" in (hostname_problem("foo.*.com", wildcard=True) or "")
    assert "not a valid hostname" in (hostname_problem("-a.com", wildcard=True) or "")
