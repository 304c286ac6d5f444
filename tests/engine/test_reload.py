"""Config swaps: in-flight requests finish on their snapshot; reloads under full load lose nothing."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness import backend, mesh_config, parse_h2load, parse_wrk, route, rule, service, split_config, wait_until


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


@pytest.mark.slow
def test_hot_reload_under_full_load_loses_no_request(upstream_factory, proxy_factory, require_tools):
    require_tools("wrk", "h2load")
    v1, v2 = upstream_factory.many(["v1", "v2"])
    addresses = {"v1": v1.address, "v2": v2.address}
    px = proxy_factory(split_config(addresses, {"v1": 50, "v2": 50}))
    duration = 20

    wrk = subprocess.Popen(
        ["wrk", "-t1", "-c16", f"-d{duration}s", "--timeout", "5s", "-H", "Host: reviews", f"{px.url}/"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    h2 = subprocess.Popen(
        ["h2load", "-c4", "-m8", "-D", str(duration), "-H", ":authority: reviews", f"{px.url}/"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    reloads: list[dict] = []
    errors: list[BaseException] = []

    def rewrite() -> None:
        try:
            time.sleep(2)  # let both loads reach full speed first
            for w1, w2 in WEIGHTS:
                reloads.append(px.reload(split_config(addresses, {"v1": w1, "v2": w2})))
                time.sleep(2)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)

    reloader = threading.Thread(target=rewrite)
    reloader.start()
    wrk_out, _ = wrk.communicate(timeout=duration + 30)
    h2_out, _ = h2.communicate(timeout=duration + 30)
    reloader.join()

    print(wrk_out, h2_out, sep="\n")
    assert not errors, errors
    assert [e["event"] for e in reloads] == ["reloaded"] * len(WEIGHTS)
    versions = [e["version"] for e in reloads]
    assert versions == sorted(versions) and len(set(versions)) == len(versions), versions

    assert wrk.returncode == 0, wrk_out
    wrk_stats = parse_wrk(wrk_out)
    assert (wrk_stats["non_2xx_3xx"], wrk_stats["socket_errors"]) == (0, 0), wrk_out
    assert wrk_stats["requests"] > 2000, wrk_out

    assert h2.returncode == 0, h2_out
    h2_stats = parse_h2load(h2_out)
    assert (h2_stats["failed"], h2_stats["errored"], h2_stats["timeout"]) == (0, 0, 0), h2_out
    assert (h2_stats["3xx"], h2_stats["4xx"], h2_stats["5xx"]) == (0, 0, 0), h2_out
    assert h2_stats["succeeded"] > 2000, h2_out

    # The last weights (25/75) rule now.
    with px.client() as client:
        counts = Counter(client.get("/", headers={"host": "reviews"}).json()["upstream"] for _ in range(100))
    assert abs(counts["v2"] - 75) <= 2, counts
