"""The proxy's side of `--control-plane` compiles incrementally: the replica of its view hands over what
each message changed (`Replica.take_changes`: a full state replaces every kind, a delta its upserts and
deletes) and fastmesh.config.incremental compiles it to the snapshot a full compile of the whole view
gives (what the proxy did before, and what `--kubernetes` compiles): unit test, no network."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from bench.synthetic_cluster import cluster
from fastmesh.config.incremental import IncrementalCompiler
from fastmesh.config.worker import compile_content
from fastmesh.control.protocol import Key, Replica, canonical, key_of
from fastmesh.control.views import Store
from fastmesh.kube.source import RESOURCES, project
from fastmesh.overrides import Overrides
from tests.config.test_incremental import Listed, key, proxy, random_change, upsert
from tests.control.test_views import deliver, follow

SOURCE = "control plane https://127.0.0.1:15012"
API_VERSION = {kind: api_version for kind, api_version, _ in RESOURCES}
OVERRIDES = Overrides(listeners={"outbound": "127.0.0.1:0"})


def projected(kind: str, obj: dict[str, Any]) -> tuple[Key, str | None]:
    """What the control plane stores of an API object (None: left out, as a delete)."""
    doc = project(kind, API_VERSION[kind], obj)
    return (kind, *key(obj)), canonical(doc) if doc is not None else None


def store_of(listed: Listed, epoch: str = "e1") -> Store:
    store = Store(epoch=epoch)
    texts = dict(projected(kind, obj) for kind, objs in listed.items() for obj in objs)
    store.apply({k: t for k, t in texts.items() if t is not None}, [])
    return store


class Compiles:
    """An incremental compiler fed the replica's changes, checked against a full compile of the replica."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.compiler = IncrementalCompiler(SOURCE, namespace="mesh", overrides=OVERRIDES)
        self.incremental = 0

    def check(self, step: str) -> dict[str, Any]:
        changes = self.replica.take_changes()
        assert not self.replica.pending
        result = self.compiler.apply(changes.upserts, changes.deletes, changes.replace_kinds)
        header, snapshot = compile_content(self.replica.content(), SOURCE, OVERRIDES, cluster=True,
                                           namespace="mesh")
        assert "problems" not in header, step
        assert result.header == header, step
        assert result.snapshot_json == snapshot, step
        self.incremental += result.incremental
        return {"replace_kinds": changes.replace_kinds, "upserts": len(changes.upserts),
                "deletes": len(changes.deletes)}


@pytest.mark.parametrize("seed", range(2))
def test_the_replicas_changes_compile_to_a_full_compile_of_its_view(seed: int) -> None:
    rng = random.Random(seed)
    listed: Listed = {**cluster(services=30, endpoints=300, routes=8, policies=4),
                      "Proxy": [proxy("mesh"), proxy("other", 15002)]}
    store = store_of(listed)
    replica, subscriber = follow(store, "mesh")
    compiles = Compiles(replica)
    first = compiles.check("the full state")
    assert first["replace_kinds"] == [kind for kind, _, _ in RESOURCES]  # a full state replaces every kind
    assert first["upserts"] == len(replica.texts) and ("Proxy", "other", "proxy") not in replica.texts
    for generation in range(1, 80):
        kind, obj, deleted = random_change(listed, rng, generation)
        upserts: dict[Key, str] = {}
        deletes = [deleted] if deleted is not None else []
        if obj is not None:
            upsert(listed, kind, obj)
            k, text = projected(kind, obj)
            if text is None:
                deletes.append(k)
            else:
                upserts[k] = text
        if not store.apply(upserts, deletes):
            continue  # no view sees it (the other namespace's Proxy), or no change
        assert deliver(replica, subscriber) == 1
        took = compiles.check(f"step {generation}: {kind} {obj and key(obj)} {deleted}")
        assert took["replace_kinds"] == [] and took["upserts"] + took["deletes"] == len(upserts) + len(deletes)
    assert compiles.incremental > 20  # the slice changes took the incremental path

    # A relist of a kind (the control plane's watch got 410) is a delta too; a control-plane restart
    # (another epoch) is a full state again: every kind replaced, what is gone deleted.
    services = listed["Service"]
    store.replace_kind("Service", [json.loads(t) for k, t in replica.texts.items()
                                   if k[0] == "Service" and k[2] != key(services[0])[1]])
    deliver(replica, subscriber)
    compiles.check("a relist without one Service")
    restarted = store_of({**listed, "Service": services[2:]}, epoch="e2")
    for message in [f'{{"type":"hello","epoch":"e2","namespace":"mesh"}}',
                    *restarted.view("mesh").catch_up(replica.epoch, replica.version)]:
        replica.apply(message)
    assert replica.pending and replica.epoch == "e2"
    again = compiles.check("a full state of another epoch")
    assert again["replace_kinds"] == [kind for kind, _, _ in RESOURCES]
    assert ("Service", *key(services[1])) not in replica.texts


def test_changes_not_taken_add_up_until_taken() -> None:
    listed: Listed = cluster(services=4, endpoints=12, routes=1, policies=0)
    store = store_of(listed)
    replica, subscriber = follow(store, "ns1")
    replica.take_changes()
    svc = json.loads(replica.texts[("Service", "ns1", "svc-1")])
    svc["spec"]["ports"][0]["port"] = 9999
    store.apply({key_of(svc): canonical(svc)}, [])
    store.apply({}, [("Service", "ns2", "svc-2")])
    store.apply({}, [("Service", "ns3", "svc-3"), ("Service", "ns9", "never-there")])
    assert deliver(replica, subscriber) == 3 and replica.pending
    changes = replica.take_changes()
    assert changes.upserts == [("Service", svc)] and changes.replace_kinds == []
    assert changes.deletes == [("Service", "ns2", "svc-2"), ("Service", "ns3", "svc-3")]
    assert not replica.pending and not replica.take_changes()
