"""What each proxy sees, versioned, and the deltas between versions.

The `Store` holds every document of the cluster once (as canonical JSON text). A `View` is what the
proxies of one namespace see: every document except the Proxy objects of other namespaces (those are other
proxies' settings); GAMMA consumer routes and inbound policy are decided by the proxy's compiler from its
namespace and identity, so one namespace is one view. A change is turned into one delta per view that sees
it, encoded once and sent as the same text to every subscriber of that view: the work per change grows with
the number of views (namespaces with proxies), not of proxies, and never relists anything.

Each view numbers its states 1, 2, ... within an epoch (one run of the control plane) and keeps the last
`history` deltas, so a proxy reconnecting with a recent version gets only what it missed.

Messages are kept and queued as the bytes of their line (newline included): encoded once, written as they are
to every stream (a full state at 10,000 Services is ~20 MB: no copy per proxy), and a view's full state is
dropped as soon as its version moves on.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from fastmesh.control.protocol import Key, canonical, delta_message, full_line, key_of

HISTORY = 256
QUEUE = 1024


def visible(key: Key, namespace: str) -> bool:
    kind, ns, _ = key
    return kind != "Proxy" or ns == namespace


def line(message: str) -> bytes:
    """A message as the stream carries it."""
    return message.encode() + b"\n"


class Subscriber:
    """One proxy's stream: the messages for it (lines), in order. Overflowing (a proxy that does not read)
    closes it: it reconnects and resumes from its version."""

    def __init__(self, maxsize: int = QUEUE) -> None:
        self.queue: asyncio.Queue[bytes | bytearray | None] = asyncio.Queue(maxsize)
        self.closed = False

    def send(self, message: bytes | bytearray) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            while not self.queue.empty():  # the end marker must fit
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class View:
    def __init__(self, namespace: str, epoch: str, texts: dict[Key, str], history: int = HISTORY) -> None:
        self.namespace = namespace
        self.epoch = epoch
        self.texts = {k: t for k, t in texts.items() if visible(k, namespace)}
        self.version = 1
        self.history: deque[tuple[int, bytes]] = deque(maxlen=history)
        """(version it starts from, the delta message to the next version)."""
        self.subscribers: set[Subscriber] = set()
        self._full: tuple[int, bytearray] | None = None  # the full state message of the version, made once

    def apply(self, upserts: dict[Key, str], deletes: Iterable[Key]) -> bytes | None:
        """Record a change of the store; the delta message sent to the subscribers, or None if this view
        does not see it."""
        changed = [t for k, t in upserts.items() if visible(k, self.namespace) and self.texts.get(k) != t]
        gone = [k for k in deletes if k in self.texts]
        if not changed and not gone:
            return None
        for k, t in upserts.items():
            if visible(k, self.namespace):
                self.texts[k] = t
        for k in gone:
            del self.texts[k]
        base, self.version = self.version, self.version + 1
        self._full = None  # an older version's: never sent again
        message = line(delta_message(self.epoch, base, self.version, changed, gone))
        self.history.append((base, message))
        for subscriber in list(self.subscribers):
            subscriber.send(message)
        return message

    def catch_up(self, epoch: str | None, version: int | None) -> list[bytes | bytearray]:
        """The messages that bring a proxy having `version` of `epoch` to the current version: the deltas it
        missed if they are all still in the history, else the full state."""
        if epoch == self.epoch and version is not None:
            if version == self.version:
                return []
            missed = [message for base, message in self.history if base >= version]
            if self.history and self.history[0][0] <= version < self.version and missed:
                return missed
        if self._full is None or self._full[0] != self.version:
            self._full = (self.version, full_line(self.epoch, self.version, list(self.texts.values())))
        return [self._full[1]]


class Store:
    """Every document of the cluster, and the views made of them."""

    def __init__(self, epoch: str | None = None, history: int = HISTORY) -> None:
        self.epoch = epoch or secrets.token_hex(8)
        self.history = history
        self.texts: dict[Key, str] = {}
        self.views: dict[str, View] = {}
        self.changes = 0
        self.pushed: list[tuple[bytes, int]] = []
        """The last change's delta messages, each with the number of subscribers it was queued for."""

    def view(self, namespace: str) -> View:
        view = self.views.get(namespace)
        if view is None:
            view = self.views[namespace] = View(namespace, self.epoch, self.texts, self.history)
        return view

    def replace_kind(self, kind: str, docs: Iterable[dict[str, Any]]) -> int:
        """All documents of `kind` are now `docs` (a relist); returns how many views changed."""
        return self.replace_texts(kind, {key_of(d): canonical(d) for d in docs})

    def replace_texts(self, kind: str, new: dict[Key, str]) -> int:
        """All documents of `kind` are now those of `new` (their canonical texts); how many views changed."""
        gone = [k for k in self.texts if k[0] == kind and k not in new]
        return self.apply(new, gone)

    def apply(self, upserts: dict[Key, str], deletes: Iterable[Key]) -> int:
        """Upsert and delete documents (their canonical texts); returns how many views changed."""
        upserts = {k: t for k, t in upserts.items() if self.texts.get(k) != t}
        deletes = [k for k in deletes if k in self.texts and k not in upserts]
        if not upserts and not deletes:
            return 0
        self.texts.update(upserts)
        for k in deletes:
            del self.texts[k]
        self.changes += 1
        self.pushed = [(message, sum(not s.closed for s in view.subscribers)) for view in self.views.values()
                       if (message := view.apply(upserts, deletes)) is not None]
        return len(self.pushed)


class Deliveries:
    """When each change's delta messages have been written to every subscriber they were queued for:
    `done(change, subscribers)` is called then (the control plane's `sent` event). Changes whose messages
    never all get written (a proxy went away) are forgotten after `keep` newer ones."""

    def __init__(self, done: Callable[[int, int], None], keep: int = HISTORY) -> None:
        self.done = done
        self.keep = keep
        self._messages: dict[int, list[Any]] = {}
        """id(message) -> [message, its change]; the message is held so that its id is not reused."""
        self._changes: OrderedDict[int, list[int]] = OrderedDict()
        """change -> [writes still to come, subscribers]."""

    def track(self, change: int, pushed: list[tuple[bytes, int]]) -> None:
        subscribers = sum(n for _, n in pushed)
        if not subscribers:
            return
        for message, n in pushed:
            if n:
                self._messages[id(message)] = [message, change]
        self._changes[change] = [subscribers, subscribers]
        while len(self._changes) > self.keep:
            old, _ = self._changes.popitem(last=False)
            self._forget(old)

    def written(self, message: bytes | bytearray) -> None:
        """One subscriber's stream has been handed `message`."""
        entry = self._messages.get(id(message))
        if entry is None or entry[0] is not message:
            return
        change = entry[1]
        counts = self._changes.get(change)
        if counts is None:
            return
        counts[0] -= 1
        if counts[0] == 0:
            del self._changes[change]
            self._forget(change)
            self.done(change, counts[1])

    def _forget(self, change: int) -> None:
        for key in [k for k, (_, c) in self._messages.items() if c == change]:
            del self._messages[key]
