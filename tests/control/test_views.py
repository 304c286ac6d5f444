"""The control plane's views, versions and deltas (fastmesh.control.views) and the proxy's replica of a view
(fastmesh.control.protocol.Replica): unit tests, no network."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from fastmesh.control.protocol import ProtocolError, Replica, canonical, key_of, render
from fastmesh.control.views import Deliveries, Store, Subscriber
from fastmesh.kube.source import documents
from fastmesh.kube.source import render as kube_render


def doc(kind: str, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"namespace": namespace, "name": name}, "spec": spec}


def texts(*docs: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    return {key_of(d): canonical(d) for d in docs}


def follow(store: Store, namespace: str) -> tuple[Replica, Subscriber]:
    """A replica caught up with the namespace's view, and its subscription (as the server sets them up)."""
    view, replica, subscriber = store.view(namespace), Replica(), Subscriber()
    for message in view.catch_up(None, None):
        replica.apply(message)
    view.subscribers.add(subscriber)
    return replica, subscriber


def deliver(replica: Replica, subscriber: Subscriber) -> int:
    delivered = 0
    while not subscriber.queue.empty():
        message = subscriber.queue.get_nowait()
        assert message is not None
        replica.apply(message)
        delivered += 1
    return delivered


def test_a_change_is_one_delta_per_view_with_a_new_version() -> None:
    store = Store(epoch="e1")
    store.apply(texts(doc("Service", "a", "web", port=1), doc("Service", "b", "db", port=2)), [])
    ra, sa = follow(store, "a")
    rb, sb = follow(store, "b")
    ra2, sa2 = follow(store, "a")  # a second proxy of namespace a: the same view
    assert len(store.views) == 2 and store.view("a").version == 1

    changed = store.apply(texts(doc("Service", "a", "web", port=3)), [])
    assert changed == 2  # each view once, not each proxy
    assert store.view("a").version == 2 and store.view("b").version == 2
    message = sa.queue.get_nowait()
    assert message is not None and message is sa2.queue.get_nowait()  # the same text for both proxies of a
    ra.apply(message)  # view: encoded once
    deliver(rb, sb)
    assert json.loads(ra.texts[("Service", "a", "web")])["spec"] == {"port": 3}
    assert ra.version == 2 and rb.version == 2

    assert store.apply(texts(doc("Service", "a", "web", port=3)), []) == 0  # same text: no new version
    assert store.view("a").version == 2 and sa.queue.empty()

    store.apply({}, [("Service", "b", "db")])
    deliver(ra, sa)
    assert set(ra.texts) == {("Service", "a", "web")} and ra.version == 3


def test_proxy_objects_of_other_namespaces_are_not_in_a_view() -> None:
    store = Store(epoch="e1")
    store.apply(texts(doc("Proxy", "a", "p"), doc("Proxy", "b", "p"), doc("Service", "b", "db")), [])
    ra, sa = follow(store, "a")
    assert set(ra.texts) == {("Proxy", "a", "p"), ("Service", "b", "db")}
    assert store.apply(texts(doc("Proxy", "b", "p", workerThreads=2)), []) == 0  # no view sees it
    assert store.view("a").version == 1 and sa.queue.empty()
    store.apply(texts(doc("Proxy", "a", "p", workerThreads=2)), [])
    deliver(ra, sa)
    assert json.loads(ra.texts[("Proxy", "a", "p")])["spec"] == {"workerThreads": 2}


def test_a_reconnecting_proxy_gets_only_what_it_missed_else_a_full_state() -> None:
    store = Store(epoch="e1", history=3)
    store.apply(texts(doc("Service", "a", "s0")), [])
    replica, subscriber = follow(store, "a")
    store.view("a").subscribers.discard(subscriber)  # the proxy disconnects at version 1
    for i in (1, 2):
        store.apply(texts(doc("Service", "a", f"s{i}")), [])
    view = store.view("a")
    assert view.version == 3

    missed = view.catch_up("e1", 1)
    assert [json.loads(m)["type"] for m in missed] == ["delta", "delta"]
    for message in missed:
        replica.apply(message)
    assert replica.version == 3 and len(replica.texts) == 3
    assert view.catch_up("e1", 3) == []  # up to date: nothing to send

    for i in (3, 4, 5):  # the history keeps 3 deltas: version 1's successors are gone
        store.apply(texts(doc("Service", "a", f"s{i}")), [])
    assert [json.loads(m)["type"] for m in view.catch_up("e1", 1)] == ["full"]
    assert [json.loads(m)["type"] for m in view.catch_up("e1", 3)] == ["delta"] * 3
    # Another run of the control plane (its versions count anew): a full state whatever the version.
    assert [json.loads(m)["type"] for m in view.catch_up("e0", 6)] == ["full"]
    assert [json.loads(m)["type"] for m in view.catch_up("e1", 99)] == ["full"]


def test_a_relist_deletes_what_is_gone_and_touches_only_its_kind() -> None:
    store = Store(epoch="e1")
    store.apply(texts(doc("Service", "a", "x"), doc("Service", "a", "y"), doc("HTTPRoute", "a", "r")), [])
    replica, subscriber = follow(store, "a")
    store.replace_kind("Service", [doc("Service", "a", "y"), doc("Service", "a", "z")])
    deliver(replica, subscriber)
    assert set(replica.texts) == {("Service", "a", "y"), ("Service", "a", "z"), ("HTTPRoute", "a", "r")}


def test_the_replica_renders_what_a_proxy_watching_the_cluster_reads() -> None:
    listed = {"Service": [doc("Service", "b", "s"), doc("Service", "a", "s")],
              "HTTPRoute": [doc("HTTPRoute", "a", "r")], "Proxy": [doc("Proxy", "a", "p")]}
    projected = documents(listed)
    store = Store(epoch="e1")
    store.apply({key_of(d): canonical(d) for d in reversed(projected)}, [])
    replica, _ = follow(store, "a")
    assert replica.content() == kube_render(projected) == render(replica.texts)


def test_a_delta_that_does_not_follow_the_replicas_version_is_refused() -> None:
    store = Store(epoch="e1")
    replica, subscriber = follow(store, "a")
    store.apply(texts(doc("Service", "a", "x")), [])
    store.apply(texts(doc("Service", "a", "y")), [])
    subscriber.queue.get_nowait()  # the first delta lost
    with pytest.raises(ProtocolError, match="delta from version 2 .* has version 1"):
        replica.apply(subscriber.queue.get_nowait() or "")
    fresh = Replica()
    with pytest.raises(ProtocolError, match="delta"):  # no full state yet
        fresh.apply(store.view("a").history[-1][1])
    with pytest.raises(ProtocolError, match="unknown message type"):
        fresh.apply('{"type":"surprise"}')


def test_a_subscriber_that_does_not_read_is_closed_not_buffered_without_bound() -> None:
    async def run() -> None:
        store = Store(epoch="e1")
        view = store.view("a")
        subscriber = Subscriber(maxsize=3)
        view.subscribers.add(subscriber)
        for i in range(5):
            store.apply(texts(doc("Service", "a", f"s{i}")), [])
        assert subscriber.closed
        assert subscriber.queue.get_nowait() is None  # the end marker: the server resets the stream

    asyncio.run(run())


def test_a_change_is_sent_once_every_subscriber_it_was_queued_for_has_been_written_it() -> None:
    store = Store(epoch="e1")
    store.apply(texts(doc("Service", "a", "web", port=1), doc("Service", "b", "db", port=2)), [])
    _, sa = follow(store, "a")
    _, sa2 = follow(store, "a")
    _, sb = follow(store, "b")
    sent: list[tuple[int, int]] = []
    deliveries = Deliveries(lambda change, subscribers: sent.append((change, subscribers)))

    store.apply(texts(doc("Service", "a", "web", port=3), doc("Service", "b", "db", port=4)), [])
    deliveries.track(store.changes, store.pushed)
    assert sorted(n for _, n in store.pushed) == [1, 2]  # two views: a (2 proxies), b (1)
    for subscriber in (sa, sb):
        message = subscriber.queue.get_nowait()
        assert message is not None
        deliveries.written(message)
    assert sent == []  # the second proxy of view a has not been written it yet
    deliveries.written((sa2.queue.get_nowait() or b"") + b" ")  # another text (not the queued one): not counted
    assert sent == []
    store.apply(texts(doc("Service", "b", "db", port=5)), [])  # a later change, written to all three
    deliveries.track(store.changes, store.pushed)
    for subscriber in (sa, sa2, sb):
        later = subscriber.queue.get_nowait()
        assert later is not None
        deliveries.written(later)
    assert sent == [(store.changes, 3)]  # the first change still waits for the second proxy of view a


def test_changes_never_written_everywhere_are_forgotten_after_the_history() -> None:
    store = Store(epoch="e1")
    _, subscriber = follow(store, "a")
    deliveries = Deliveries(lambda change, subscribers: None, keep=3)
    for i in range(5):
        store.apply(texts(doc("Service", "a", f"s{i}")), [])
        deliveries.track(store.changes, store.pushed)
    assert len(deliveries._changes) == 3 and len(deliveries._messages) == 3


def test_a_views_full_state_is_encoded_once_and_dropped_when_its_version_moves_on() -> None:
    store = Store(epoch="e1")
    store.apply(texts(doc("Service", "a", "web", port=1)), [])
    view = store.view("a")
    first = view.catch_up(None, None)[0]
    assert first.endswith(b"\n") and first.count(b"\n") == 1  # one line, as written to the stream
    assert view.catch_up(None, None)[0] is first  # a second proxy gets the same bytes: no second encoding
    store.apply(texts(doc("Service", "a", "web", port=2)), [])
    assert view._full is None  # the old version's full state is not held on to
    assert json.loads(view.catch_up(None, None)[0])["version"] == 2
