"""Config swaps: in-flight requests finish on their snapshot; reloads under full load lose nothing."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.harness import Loads, backend, mesh_config, parse_h2load, parse_wrk, route, rule, service, split_config, wait_until


def test_in_flight_request_finishes_on_the_snapshot_it_started_with(upstream_factory, proxy_factory):
    v1, v2 = upstream_factory.many(["v1", "v2"])
    before = mesh_config(
        services=[service("app"), service("app-v1", [v1.address]), service("app-v2", [v2.address])],
        routes=[route("app", [rule(backend("app-v1"))], parent="app")],
    )
    # The new config routes to v2 and drops app-v1 altogether: its backend and pool are gone.
    after = mesh_config(
        services=[service("app"), service("app-v2", [v2.address])],
        routes=[route("app", [rule(backend("app-v2"))], parent="app")],
    )
    px = proxy_factory(before)

    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(px.get, "/slow/5000", "app")
        wait_until(lambda: v1.stats()["active"] == 1, timeout=5, what="the slow request to reach v1")
        px.reload(after)
        assert px.get("/", host="app").json()["upstream"] == "v2"
        assert not in_flight.done(), "the slow request ended early: the test proves nothing"
        r = in_flight.result(timeout=10)
    assert r.status_code == 200
    assert r.json()["upstream"] == "v1"


WEIGHTS = [(90, 10), (10, 90), (50, 50), (0, 100), (100, 0), (70, 30), (25, 75)]
DURATION_S = 20  # of each load; both start after `t0`, so both run until t0 + DURATION_S at least
FIRST_RELOAD_S = 2.0  # after t0: both loads are at full speed by then
RELOAD_EVERY_S = 2.2  # the last reload starts at t0 + 15.2 s
SHARE_TOLERANCE = 0.05  # requests dispatched just before a swap reach the upstream just after it


@dataclass
class Window:
    """The weights of one reload and what the upstreams received while they were live."""

    weights: tuple[int, int]
    sent: float  # config written (time.monotonic())
    landed: float  # `reloaded` event received
    counts: tuple[int, int] = (0, 0)  # v1, v2 requests from `landed` to the next reload's write

    def v2_share(self) -> float:
        return self.counts[1] / sum(self.counts)


@pytest.mark.slow
def test_hot_reload_under_full_load_loses_no_request(upstream_factory, proxy_factory, require_tools):
    require_tools("wrk", "h2load")
    v1, v2 = upstream_factory.many(["v1", "v2"])
    addresses = {"v1": v1.address, "v2": v2.address}
    px = proxy_factory(split_config(addresses, {"v1": 50, "v2": 50}))

    def received() -> tuple[int, int]:
        return v1.stats()["requests"], v2.stats()["requests"]

    at_start = received()
    t0 = time.monotonic()
    loads = Loads(px, "reviews", DURATION_S, wrk_conns=16, h2_conns=4, h2_streams=8)
    windows: list[Window] = []
    reloads: list[dict] = []
    before_first: list[tuple[int, int]] = []

    def pace(at: float) -> None:
        """Waits for the schedule (not for readiness): reload i goes at t0 + FIRST + i * EVERY."""
        time.sleep(max(0.0, t0 + at - time.monotonic()))

    def close_window(until: tuple[int, int]) -> None:
        if windows:
            windows[-1].counts = (until[0] - windows[-1].counts[0], until[1] - windows[-1].counts[1])
        else:
            before_first.append(until)

    def rewrite() -> None:
        for i, (w1, w2) in enumerate(WEIGHTS):
            pace(FIRST_RELOAD_S + i * RELOAD_EVERY_S)
            close_window(received())
            sent = time.monotonic()
            reloads.append(px.reload(split_config(addresses, {"v1": w1, "v2": w2})))
            window = Window((w1, w2), sent, time.monotonic())
            window.counts = received()  # the start; close_window turns it into the difference
            windows.append(window)
        pace(DURATION_S - 1.0)
        assert time.monotonic() < t0 + DURATION_S, "the machine is too slow for the schedule"
        close_window(received())

    wrk_out, h2_out = loads.finish(during=rewrite)

    print(wrk_out, h2_out, sep="\n")
    for w in windows:
        print(f"reload {w.weights} at t0+{w.sent - t0:.2f}s..{w.landed - t0:.2f}s: v1/v2 got {w.counts}")
    assert [e["event"] for e in reloads] == ["reloaded"] * len(WEIGHTS)
    versions = [e["version"] for e in reloads]
    assert versions == sorted(versions) and len(set(versions)) == len(versions), versions

    # Every reload landed while both loads ran: the load was flowing before the first was written,
    # and the last one's event came before the earliest moment either load could have stopped.
    assert sum(before_first[0]) - sum(at_start) > 500, (at_start, before_first)
    assert windows[-1].landed < t0 + DURATION_S, windows[-1]
    # ... and each took effect right away, the next reload's weights being the next to show.
    for w in windows:
        # Enough requests to judge the share (the split is exact per request; the tolerance is for the
        # requests in flight across a swap); at load average 9 a window got 293.
        assert sum(w.counts) > 150, w
        expected = w.weights[1] / sum(w.weights)
        assert abs(w.v2_share() - expected) <= SHARE_TOLERANCE, w

    assert loads.wrk.returncode == 0, wrk_out
    wrk_stats = parse_wrk(wrk_out)
    assert (wrk_stats["non_2xx_3xx"], wrk_stats["socket_errors"]) == (0, 0), wrk_out
    assert wrk_stats["requests"] > 2000, wrk_out

    assert loads.h2.returncode == 0, h2_out
    h2_stats = parse_h2load(h2_out)
    assert (h2_stats["failed"], h2_stats["errored"], h2_stats["timeout"]) == (0, 0, 0), h2_out
    assert (h2_stats["3xx"], h2_stats["4xx"], h2_stats["5xx"]) == (0, 0, 0), h2_out
    assert h2_stats["succeeded"] > 2000, h2_out

    # The last weights (25/75) rule now.
    with px.client() as client:
        counts = Counter(client.get("/", headers={"host": "reviews"}).json()["upstream"] for _ in range(100))
    assert abs(counts["v2"] - 75) <= 2, counts
