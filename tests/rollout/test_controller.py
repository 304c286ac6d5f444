"""The controller with small fakes: engine counters as a dict, the re-apply as a recorder, the state file real."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastmesh.rollout import ActionError, FileStore, RolloutController, state_path

BOUNDS = [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]


def plan(steps: list[int] | None = None, name: str = "default/r") -> dict[str, Any]:
    return {"name": name, "route": "default/r/rule/0", "stable": "s", "canary": "c", "steps": steps or [10, 50, 100],
            "interval_s": 0.0, "gates": {"min_success_rate": 99.0, "max_success_rate_drop": None,
                                         "max_p99_ms": None, "max_p99_ratio": None, "min_requests": 10}}


class Fake:
    def __init__(self, tmp_path: Path) -> None:
        self.counts = {"s": [0, 0], "c": [0, 0]}  # backend -> [2xx, 5xx]
        self.events: list[dict[str, Any]] = []
        self.reapplied = 0
        self.path = state_path(tmp_path / "mesh.yaml")

    def stats(self) -> dict[str, Any]:
        return {"latency_bounds_ms": BOUNDS, "routes": [
            {"route": "default/r/rule/0", "backend": b, "status": {"2xx": ok, "5xx": bad},
             "latency": {"buckets": [0, 0, 0, 0, ok + bad] + [0] * 9, "inf": 0}}
            for b, (ok, bad) in self.counts.items()]}

    async def reapply(self) -> bool:
        self.reapplied += 1
        return True

    def emit(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})

    def controller(self) -> RolloutController:
        return RolloutController(FileStore(self.path), self.stats, self.reapply, self.emit)


def step(c: RolloutController, fake: Fake, ok: int, bad: int = 0) -> dict[str, Any]:
    """Traffic to the canary, then one judgement; the decision event."""
    c.applied()
    fake.counts["c"][0] += ok
    fake.counts["c"][1] += bad
    fake.counts["s"][0] += 100
    before = len(fake.events)
    asyncio.run(c.tick())
    [event] = fake.events[before:]
    return event


def test_advances_holds_promotes_and_keeps_state_in_the_file(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    c = fake.controller()
    c.configure([plan()])
    assert c.weights() == {"default/r/rule/0": {"s": 90, "c": 10}}
    assert step(c, fake, 5)["decision"] == "hold"
    assert step(c, fake, 5)["decision"] == "advanced"  # the held window kept its 5: 10 in all
    assert c.weights() == {"default/r/rule/0": {"s": 50, "c": 50}}
    assert json.loads(fake.path.read_text())["rollouts"]["default/r"] == {
        "key": ["default/r/rule/0", "s", "c", [10, 50, 100]], "phase": "Progressing", "step": 1, "reason": ""}
    assert step(c, fake, 10)["decision"] == "promoted"
    assert c.weights() == {"default/r/rule/0": {"s": 0, "c": 100}} and fake.reapplied == 2
    assert [p.name for p in tmp_path.iterdir()] == [fake.path.name]  # no temporary file left


def test_a_failing_step_rolls_back_and_a_new_controller_resumes_from_the_file(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    c = fake.controller()
    c.configure([plan()])
    assert step(c, fake, 10)["decision"] == "advanced"
    again = fake.controller()  # a restart
    again.configure([plan()])
    assert fake.events[-1]["decision"] == "restored" and again.weights()["default/r/rule/0"] == {"s": 50, "c": 50}
    event = step(again, fake, 19, 1)
    assert event["decision"] == "rolled_back" and event["reason"].startswith("step 1 (50%): canary success rate 95.00%")
    assert again.weights()["default/r/rule/0"] == {"s": 100, "c": 0}
    assert again.view()[0]["phase"] == "Failed"


def test_changed_steps_start_over_and_a_broken_state_file_is_ignored(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    c = fake.controller()
    c.configure([plan()])
    step(c, fake, 10)
    c.configure([plan([20, 100])])
    assert fake.events[-1]["decision"] == "started" and c.weights()["default/r/rule/0"] == {"s": 80, "c": 20}
    step(c, fake, 10)
    assert (c.view()[0]["phase"], c.view()[0]["step"]) == ("Succeeded", 1)
    seen = len(fake.events)
    c.configure([plan([20, 100])])  # an unrelated reload: the rollout goes on where it is
    assert len(fake.events) == seen and c.view()[0]["step"] == 1
    c.configure([])
    assert c.weights() == {} and json.loads(fake.path.read_text()) == {"rollouts": {}}
    fake.path.write_text("{not json")
    fresh = fake.controller()
    fresh.configure([plan()])
    assert fake.events[-1]["decision"] == "started"


def act(c: RolloutController, action: str, name: str = "default/r") -> dict[str, Any]:
    return asyncio.run(c.act(name, action))


def test_a_rollout_declared_paused_waits_at_0_percent_until_started(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    c = fake.controller()
    c.configure([{**plan(), "paused": True}])
    assert fake.events[-1]["decision"] == "pending" and c.view()[0]["phase"] == "Pending"
    assert c.weights()["default/r/rule/0"] == {"s": 100, "c": 0}
    fake.counts["c"][0] += 50
    asyncio.run(c.tick())  # nothing judged while pending
    assert c.view()[0]["phase"] == "Pending" and fake.events[-1]["decision"] == "pending"
    again = fake.controller()  # pending survives a restart
    again.configure([{**plan(), "paused": True}])
    assert (again.view()[0]["phase"], fake.events[-1]["decision"]) == ("Pending", "restored")
    view = act(again, "start")
    assert (view["phase"], view["step"], view["canary_weight"]) == ("Progressing", 0, 10) and fake.reapplied == 1
    assert fake.events[-1] | {"decision": "started", "by": "operator", "next_canary_weight": 10} == fake.events[-1]
    assert step(again, fake, 10)["decision"] == "advanced"


def test_pause_holds_the_step_and_resume_judges_a_fresh_window(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    c = fake.controller()
    c.configure([plan()])
    c.applied()
    view = act(c, "pause")
    assert (view["phase"], view["canary_weight"], fake.reapplied) == ("Paused", 10, 0)  # weights stay
    fake.counts["c"] = [0, 50]  # a failing canary while paused: not judged
    before = len(fake.events)
    asyncio.run(c.tick())
    assert len(fake.events) == before and c.view()[0]["phase"] == "Paused"
    assert json.loads(fake.path.read_text())["rollouts"]["default/r"]["phase"] == "Paused"
    try:
        act(c, "pause")
        raise AssertionError("paused twice")
    except ActionError as e:
        assert e.status == 409 and str(e) == "cannot pause rollout default/r: it is Paused; it is paused: use resume"
    assert act(c, "resume")["phase"] == "Progressing"
    event = step(c, fake, 10)  # the window began at resume: the 50 failures before it do not count
    assert event["decision"] == "advanced" and event["canary_requests"] == 10


def test_abort_sends_all_to_stable_and_promote_all_to_canary(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    c = fake.controller()
    c.configure([plan(), plan(name="default/q")])
    view = act(c, "abort")
    assert (view["phase"], view["canary_weight"], view["reason"]) == (
        "Aborted", 0, "aborted by the operator at step 0 (10% canary)")
    view = act(c, "promote", "default/q")
    assert (view["phase"], view["step"], view["canary_weight"]) == ("Succeeded", 2, 100)
    assert fake.reapplied == 2
    saved = json.loads(fake.path.read_text())["rollouts"]
    assert (saved["default/r"]["phase"], saved["default/q"]["phase"]) == ("Aborted", "Succeeded")
    for name, action, status in (("default/r", "promote", 409), ("default/x", "abort", 404),
                                 ("default/q", "rewind", 400)):
        try:
            act(c, action, name)
            raise AssertionError(f"{action} {name} done")
        except ActionError as e:
            assert e.status == status, e
