"""Stickiness and the canary pin in a real `fastmesh proxy` with real hypercorn upstreams under load.

Cookie clients are httpx clients with their own cookie jar (the proxy's `Set-Cookie` is all they
keep); header clients send `x-user`. Weights change by rewriting the config file (the reload path)
or by the rollout controller, while the clients keep sending. Every load stops by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.harness import Proxy, Upstream, backend, mesh_config, route, rule, service
from tests.rollout.test_rollout_proxy import V1, V2, load, rollout_config, served_weights, wait_decision

LOAD_MAX_S = 90.0


def split_config(v1: Upstream, v2: Upstream, w1: int, w2: int, session: dict[str, Any]) -> str:
    services = [service("reviews-v1", [v1.address]), service("reviews-v2", [v2.address]), service("reviews")]
    split = rule(backend("reviews-v1", w1), backend("reviews-v2", w2))
    split["sessionPersistence"] = session
    return mesh_config(services=services, routes=[route("reviews", [split], parent="reviews")])


class CookieClients:
    """`n` closed-loop clients, each an httpx.Client with its own cookie jar, sending until stopped.
    Records per client: (time, upstream, status, Set-Cookie or None)."""

    def __init__(self, px: Proxy, n: int) -> None:
        self.seen: list[list[tuple[float, str, int, str | None]]] = [[] for _ in range(n)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(px.url, i), daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def _run(self, url: str, i: int) -> None:
        deadline = time.monotonic() + LOAD_MAX_S
        with httpx.Client(base_url=url, headers={"host": "reviews"}, timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    r = client.get("/")
                    who, status, cookie = r.json()["upstream"], r.status_code, r.headers.get("set-cookie")
                except (httpx.HTTPError, ValueError, KeyError):
                    who, status, cookie = "error", 0, None
                with self._lock:
                    self.seen[i].append((time.monotonic(), who, status, cookie))

    def wait_all_answered(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.seen):
            assert time.monotonic() < deadline, "a client got no answer"
            time.sleep(0.05)

    def between(self, i: int, start: float, end: float = float("inf")) -> list[tuple[float, str, int, str | None]]:
        with self._lock:
            return [s for s in self.seen[i] if start <= s[0] < end]

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)


def test_cookie_clients_keep_their_version_across_weight_changes_until_its_weight_is_zero(
    upstream_factory: Callable[..., Any], proxy_factory: Callable[..., Proxy]
) -> None:
    v1, v2 = upstream_factory.many(["v1", "v2"])  # type: ignore[attr-defined]
    session = {"sessionName": "reviews-version"}
    px = proxy_factory(split_config(v1, v2, 90, 10, session))
    clients = CookieClients(px, 30)
    try:
        clients.wait_all_answered()
        first = [clients.seen[i][0] for i in range(30)]
        # the first answer of each carries the cookie; the first 30 picks of smooth 90/10: 27 and 3
        assert all(cookie and cookie.startswith("reviews-version=") and cookie.endswith("; Path=/; HttpOnly")
                   for _, _, _, cookie in first), first
        version = [who for _, who, _, _ in first]
        assert (version.count("v1"), version.count("v2")) == (27, 3)
        assert len({cookie for _, who, _, cookie in first if who == "v1"}) == 1  # one token per backendRef
        marks = []
        for w1, w2 in [(50, 50), (10, 90)]:
            px.reload(split_config(v1, v2, w1, w2, session))
            marks.append(time.monotonic())
            time.sleep(1.0)
        # clients without a cookie follow the new weights: at 10/90 ten new users, from the
        # snapshot's fresh smooth picker (the pinned clients take no picks), exactly 1 and 9
        newcomers = [httpx.get(px.url, headers={"host": "reviews"}, timeout=10).json()["upstream"] for _ in range(10)]
        assert (newcomers.count("v1"), newcomers.count("v2")) == (1, 9)
        zeroing = time.monotonic()  # the proxy may serve 0/100 before reload() has seen its event
        px.reload(split_config(v1, v2, 0, 100, session))
        stable_gone = time.monotonic()
        time.sleep(1.5)
    finally:
        clients.stop()
    for i in range(30):
        kept = clients.between(i, 0.0, zeroing)
        assert {who for _, who, _, _ in kept} == {version[i]}, (i, kept[:5])
        assert {status for _, _, status, _ in kept} == {200}
        assert [c for _, _, _, c in kept[1:] if c] == [], "a pinned request got a new cookie"
        assert any(t >= marks[1] for t, *_ in kept), "the client kept sending after 10/90"
        after = clients.between(i, stable_gone + 0.5)
        assert after and {who for _, who, _, _ in after} == {"v2"}, (i, after[:5])
    moved = [i for i in range(30) if version[i] == "v1"]
    for i in moved:  # stable at weight 0: one fresh choice, one new cookie naming v2, then pinned again
        cookies = [c for _, _, _, c in clients.between(i, zeroing) if c]
        assert len(cookies) == 1 and cookies[0] == first[version.index("v2")][3], cookies


def test_header_hash_users_on_the_canary_stay_there_as_its_weight_grows(
    upstream_factory: Callable[..., Any], proxy_factory: Callable[..., Proxy]
) -> None:
    v1, v2 = upstream_factory.many(["v1", "v2"])  # type: ignore[attr-defined]
    session = {"type": "Header", "sessionName": "x-user"}
    px = proxy_factory(split_config(v1, v2, 90, 10, session))
    users = [f"user-{i}" for i in range(200)]
    steps: list[list[str]] = []
    with load(px, clients=4) as running, httpx.Client(base_url=px.url, timeout=10) as client:
        for w1, w2 in [(90, 10), (50, 50), (10, 90)]:
            if steps:
                px.reload(split_config(v1, v2, w1, w2, session))
            seen = []
            for user in users:
                answers = {client.get("/", headers={"host": "reviews", "x-user": user}).json()["upstream"]
                           for _ in range(2)}
                assert len(answers) == 1, (user, answers)  # consistent
                seen.append(answers.pop())
            on_canary = seen.count("v2")
            assert abs(on_canary - 2 * w2) <= 24, (w2, on_canary)  # 200 users, a hash: near the weight
            steps.append(seen)
        background = running.since(0.0)
    for before, after in zip(steps, steps[1:]):
        left = [u for u, (b, a) in enumerate(zip(before, after)) if b == "v2" and a != "v2"]
        assert left == [], f"canary users moved back to stable: {left}"
        assert sum(1 for b, a in zip(before, after) if b == "v1" and a == "v2") > 0
    # the plain clients (no header) were served throughout, by both versions
    assert background and {status for _, status in background} == {200}
    assert {who for who, _ in background} == {"v1", "v2"}


def with_spec(config: str, extra: str) -> str:
    """The Rollout of `rollout_config` with more `spec` fields."""
    assert "  gates:" in config
    return config.replace("  gates:", extra + "\n  gates:", 1)


def test_the_pin_header_reaches_the_canary_at_zero_weight(
    upstream_factory: Callable[..., Any], proxy_factory: Callable[..., Proxy]
) -> None:
    v1 = upstream_factory("v1")
    v2 = upstream_factory("v2", fail_status=500)  # a failing canary: rolled back to 0 %
    config = rollout_config(v1, v2, steps=[20, 100], gates={"minSuccessRate": 99, "minRequests": 10})
    px = proxy_factory(with_spec(config, "  canaryHeader: {}"))
    with load(px, clients=4):
        failed = wait_decision(px, "rolled_back", "advanced", "promoted", timeout=60)
    assert failed["decision"] == "rolled_back", px.events
    assert served_weights(px) == [(V1, 100), (V2, 0)]  # the canary backendRef is still in the rule, at 0
    with httpx.Client(base_url=px.url, headers={"host": "reviews"}, timeout=10) as client:
        pinned = [client.get("/", headers={"x-canary": "always"}) for _ in range(40)]
        plain = [client.get("/").json()["upstream"] for _ in range(40)]
        never = [client.get("/", headers={"x-canary": "never"}).json()["upstream"] for _ in range(20)]
        other = [client.get("/", headers={"x-canary": "sometimes"}).json()["upstream"] for _ in range(20)]
    # the canary answers (its 500s: it is the failing version) whatever its weight
    assert {(r.status_code, r.json()["upstream"]) for r in pinned} == {(500, "v2")}
    assert set(plain) == set(never) == set(other) == {"v1"}
    # pinned requests count on their own route, not in the rollout's windows
    counted = {(e["route"], e["backend"]): e["status"] for e in px.stats()["routes"]}
    assert counted[("default/reviews/rule/0/canary-pin", V2)] == {"5xx": 40}
    assert counted[("default/reviews/rule/0/stable-pin", V1)] == {"2xx": 20}


def test_a_rollout_with_cookie_stickiness_keeps_each_user_on_its_version_through_its_steps(
    upstream_factory: Callable[..., Any], proxy_factory: Callable[..., Proxy]
) -> None:
    v1, v2 = upstream_factory.many(["v1", "v2"])  # type: ignore[attr-defined]
    config = rollout_config(v1, v2, steps=[10, 50, 100], interval="2s",
                            gates={"minSuccessRate": 99, "minRequests": 10})
    px = proxy_factory(with_spec(config, "  stickiness: {type: Cookie, cookieName: reviews-version}"))
    assert served_weights(px) == [(V1, 90), (V2, 10)]
    clients = CookieClients(px, 20)
    try:
        clients.wait_all_answered()
        version = [clients.seen[i][0][1] for i in range(20)]
        assert (version.count("v1"), version.count("v2")) == (18, 2)
        advanced = wait_decision(px, "advanced", "rolled_back", "promoted", timeout=60)
        assert advanced["decision"] == "advanced", px.events
        stepped = time.monotonic()
        promoted = wait_decision(px, "promoted", "rolled_back", timeout=60)
        assert promoted["decision"] == "promoted", px.events
        done = time.monotonic()
        time.sleep(1.0)
    finally:
        clients.stop()
    assert served_weights(px) == [(V1, 0), (V2, 100)]
    for i in range(20):
        # The 50 % step is judged one interval (2 s) after it began (before `stepped`): for a
        # second after `stepped`, at 50/50, every user keeps the version its cookie names.
        kept = clients.between(i, 0.0, stepped + 1.0)
        assert {who for _, who, _, _ in kept} == {version[i]}, (i, kept[:5])
        assert any(t > stepped for t, *_ in kept), "the client kept sending after the step change"
        assert {s for _, _, s, _ in clients.seen[i]} == {200}
        # promoted: stable's weight is 0, so its users moved to the canary
        assert {who for _, who, _, _ in clients.between(i, done + 0.5)} == {"v2"}
