"""Operators' actions on a rollout in a real `fastmesh proxy` (real hypercorn upstreams, a bounded httpx
load): `fastmesh rollout start|pause|resume|abort|promote` through the admin API with its bearer token,
`fastmesh rollout status --watch|--json`; what they set survives a restart (the state file)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.harness import Proxy, fastmesh_cli
from tests.rollout.test_rollout_proxy import V1, V2, load, rollout_config, rollouts, served_weights, state, wait_decision


def token_proxy(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    token = tmp_path / "admin-token"
    token.write_text("s3cret\n")
    return {"admin": {"tokenFile": str(token)}}, token


def cli(verb: str, px: Proxy, token: Path | None, name: str = "reviews") -> Any:
    args = ["rollout", verb, name, "--admin", px.admin_address]
    return fastmesh_cli(*args, *(["--token-file", str(token)] if token else []))


@contextmanager
def killed_on_error(px: Proxy) -> Iterator[None]:
    try:
        yield
    except BaseException:
        px.kill()
        raise


def restart(px: Proxy, config: Path, tmp_path: Path) -> Proxy:
    """Stop `px` (drained: exit 0) and start a proxy on the same config file, and so the same state file."""
    try:
        assert px.terminate() == 0
    finally:
        px.kill()
    return Proxy.start_file(config, tmp_path)


def judged(px: Proxy, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in px.events[since:] if e.get("event") == "rollout" and "window_s" in e]


def start_on_file(upstream_factory: Callable[..., Any], tmp_path: Path, **rollout: Any) -> tuple[Proxy, Path, Path]:
    """(proxy, config file, admin token file): a proxy on a config file whose Rollout has `rollout` options."""
    v1, v2 = upstream_factory.many(["v1", "v2"])  # type: ignore[attr-defined]
    proxy, token = token_proxy(tmp_path)
    config = tmp_path / "mesh.yaml"
    config.write_text(rollout_config(v1, v2, proxy=proxy, **rollout))
    return Proxy.start_file(config, tmp_path), config, token


def test_declared_paused_it_waits_then_start_pause_resume_and_a_restart_keeps_each(
    upstream_factory: Callable[..., Any], tmp_path: Path
) -> None:
    px, config, token = start_on_file(upstream_factory, tmp_path, steps=[10, 50, 100], interval="3s", paused=True)
    with killed_on_error(px):
        assert served_weights(px) == [(V1, 100), (V2, 0)]
        with load(px) as running:
            time.sleep(1.5)  # a pending rollout is not judged: nothing holds, nothing moves
            assert judged(px) == [] and rollouts(px)[0]["phase"] == "Pending"
            assert {who for who, _ in running.since(0.0)} == {"v1"}

            refused = cli("start", px, None)  # no token: the admin API refuses it
            assert refused.returncode == 1 and "401" in refused.stderr and "bearer token" in refused.stderr
            wrong = cli("pause", px, token)
            assert wrong.returncode == 1 and "409" in wrong.stderr and "it is Pending; it has not started: use start" \
                in wrong.stderr, wrong.stderr
            started = cli("start", px, token)
            assert started.returncode == 0, started.stderr
            assert started.stdout.splitlines()[0].startswith("default/reviews  Progressing  weights: stable 90% canary 10%")
            assert served_weights(px) == [(V1, 90), (V2, 10)]
            advanced = wait_decision(px, "advanced", "rolled_back", "promoted", timeout=60)
            assert (advanced["decision"], advanced["next_step"]) == ("advanced", 1), px.events

            paused = cli("pause", px, token)
            assert paused.returncode == 0, paused.stderr
            assert "  step 1  50% [....................] PAUSED" in paused.stdout.splitlines()
            seen = len(px.events)
            time.sleep(4.0)  # more than an interval under load: nothing judged, the weights stay
            assert judged(px, seen) == [] and served_weights(px) == [(V1, 50), (V2, 50)]
        assert state(px)["phase"] == "Paused"
    again = restart(px, config, tmp_path)
    try:
        restored = next(e for e in again.events if e.get("event") == "rollout")
        assert (restored["decision"], restored["phase"], restored["step"]) == ("restored", "Paused", 1)
        assert served_weights(again) == [(V1, 50), (V2, 50)]
        with load(again) as running:
            resumed = cli("resume", again, token)
            assert resumed.returncode == 0, resumed.stderr
            moved = wait_decision(again, "advanced", "promoted", "rolled_back", timeout=60)
            assert (moved["decision"], moved["step"]) == ("promoted", 1), again.events
            late = cli("abort", again, token)  # finished: nothing to abort
            assert late.returncode == 1 and "it is Succeeded; it is finished" in late.stderr
    finally:
        again.terminate()


def test_abort_sends_everything_to_stable_at_once_and_it_stays_aborted(
    upstream_factory: Callable[..., Any], tmp_path: Path
) -> None:
    # minRequests never reached: the step holds until the operator acts
    px, config, token = start_on_file(upstream_factory, tmp_path, steps=[50, 100], interval="500ms",
                                      gates={"minSuccessRate": 99, "minRequests": 1_000_000})
    with killed_on_error(px):
        with load(px) as running:
            wait_decision(px, "hold", timeout=30)
            assert {who for who, _ in running.since(0.0)} == {"v1", "v2"}
            aborted = cli("abort", px, token)
            assert aborted.returncode == 0, aborted.stderr
            after = time.monotonic() + 0.5
            time.sleep(1.5)
            tail = running.since(after)
        assert tail and {who for who, _ in tail} == {"v1"} and {s for _, s in tail} == {200}
        assert served_weights(px) == [(V1, 100), (V2, 0)]
        [view] = rollouts(px)
        assert (view["phase"], view["canary_weight"], view["reason"]) == (
            "Aborted", 0, "aborted by the operator at step 0 (50% canary)")
        event = [e for e in px.events if e.get("event") == "rollout"][-1]
        assert (event["decision"], event["by"], event["applied"]) == ("aborted", "operator", True)
        assert state(px)["phase"] == "Aborted"
    again = restart(px, config, tmp_path)
    try:
        assert served_weights(again) == [(V1, 100), (V2, 0)] and rollouts(again)[0]["phase"] == "Aborted"
    finally:
        again.terminate()


def test_promote_skips_the_gates_and_status_watch_follows_it_to_the_end(
    upstream_factory: Callable[..., Any], proxy_factory: Callable[..., Proxy], tmp_path: Path
) -> None:
    v1 = upstream_factory("v1")
    v2 = upstream_factory("v2", fail_status=503, fail_every=2)  # would fail every gate
    proxy, token = token_proxy(tmp_path)
    px = proxy_factory(rollout_config(v1, v2, steps=[5, 10, 100], interval="30s", proxy=proxy))
    watched = fastmesh_cli("rollout", "status", "--admin", px.admin_address, "--watch", "--count", "2",
                           "--interval", "0.2")
    assert watched.returncode == 0, watched.stderr
    frames = watched.stdout.split("--- ")[1:]
    assert len(frames) == 2, watched.stdout
    for text in frames:  # a bar per step, the weights, the time left in the step, the gates
        lines = text.splitlines()
        assert lines[1] == f"default/reviews  Progressing  weights: stable 95% canary 5%  ({V2} vs stable {V1})"
        assert lines[2].startswith("  step 0   5% [") and "s/30s, " in lines[2] and lines[2].endswith("s left")
        assert lines[3] == "  step 1  10% [....................]"
        assert lines[4] == "  step 2 100% [....................]"
        assert lines[5] == "  gates: minSuccessRate 99.0, minRequests 10"
    as_json = fastmesh_cli("rollout", "status", "--admin", px.admin_address, "--json")
    admin = httpx.get(f"{px.admin_url}/rollouts", timeout=5).json()
    shown = json.loads(as_json.stdout)
    for doc in (shown, admin):  # the same document, but for the clock
        for r in doc["rollouts"]:
            r.pop("step_elapsed_s")
            r.pop("step_left_s")
    assert shown == admin and shown["rollouts"][0]["stable_weight"] == 95

    with load(px, clients=2) as running:
        promoted = cli("promote", px, token)
        assert promoted.returncode == 0, promoted.stderr
        after = time.monotonic() + 0.5
        time.sleep(1.5)
        tail = running.since(after)
    assert served_weights(px) == [(V1, 0), (V2, 100)]
    assert tail and {who for who, _ in tail} <= {"v2", ""}  # v2 answers, half of it 503: the gates were skipped
    [view] = rollouts(px)
    assert (view["phase"], view["step"], view["canary_weight"]) == ("Succeeded", 2, 100)
    assert view["reason"] == "promoted by the operator at step 0 (5% canary), gates skipped"
    final = fastmesh_cli("rollout", "status", "--admin", px.admin_address, "--watch", "--interval", "0.2")
    assert final.returncode == 0 and final.stdout.count("--- ") == 1  # finished: one frame, then exit 0
    assert "  step 2 100% [####################] passed" in final.stdout.splitlines()
