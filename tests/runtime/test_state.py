"""The orchestrator's state: timestamps as /config shows them, the applied snapshot kept as text."""

from __future__ import annotations

import datetime
import json
import random

from fastmesh.state import AppliedConfig, rfc3339


def _with_datetime(t: float) -> str:
    moment = datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_rfc3339_is_what_datetime_writes() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1764091203.9999996) == "2025-11-25T17:20:04.000Z"  # rounded to µs, then cut to ms
    rng = random.Random(3)
    for t in [0.9995, 1.0, 1764091203.1234567] + [rng.uniform(0, 4e9) for _ in range(20_000)]:
        assert rfc3339(t) == _with_datetime(t), t


def test_applied_config_keeps_the_json_and_reads_it_on_demand() -> None:
    applied = AppliedConfig(3, '{"version":3,"listeners":[]}', 0.0)
    assert applied.snapshot == {"version": 3, "listeners": []}
    assert applied.snapshot is not applied.snapshot  # parsed per read, not kept
    assert json.loads(applied.snapshot_json)["version"] == 3
