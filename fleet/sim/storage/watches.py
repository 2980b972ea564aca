"""Watch streams of a simulated cluster: one watcher's filters and queue, and how events reach it.

Owns: `Watcher` (namespace, label and field selectors, a bounded queue of encoded events with the
cacher's overflow rule: a watcher that falls `Settings.watch_queue` events behind is closed and its
client re-lists, a wake-up flag, an optional per-watcher encoding for Table watches), `fan_out` (a
committed event to every matching watcher, with the selector transitions of the real cacher: an object
that starts matching is ADDED, one that stops matching is DELETED at the new resourceVersion),
`replay` (the same for events of the history a resumed watch starts after), and the bytes of watch
events (`event_bytes`, `bookmark`, `error_event`), each encoded once and shared by every watcher.

Does not: choose where a watch starts or keep history (`fleet.sim.storage.store.Cluster.watch`), or
stream to HTTP clients (`fleet.sim.rest.reads`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from fleet.sim.kinds import types
from fleet.sim.storage import objects, selectors


class Watcher:
    """One open watch: its filters, a bounded queue of encoded events, and a wake-up flag."""

    def __init__(
        self,
        *,
        rtype: types.ResourceType,
        namespace: str | None,
        labels: selectors.LabelSelector,
        fields: selectors.FieldSelector,
        max_queue: int,
    ) -> None:
        self.rtype = rtype
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.filtered = not labels.empty or not fields.empty
        self.queue: deque[bytes] = deque()
        self.max_queue = max_queue
        self.wake = asyncio.Event()
        self.closed = False
        self.overflowed = False
        self.close_after_drain = False
        self.path = ""  # request path, for fault rules that drop watches by path
        self.after = 0  # a watch from a resourceVersion not reached yet: only events after it
        # A per-watcher event encoding (e.g. kubectl's Table watches); None: the shared bytes of the event.
        self.encode: Callable[[str, objects.Stored], bytes] | None = None

    def encoded(self, etype: str, stored: objects.Stored, cache: dict[str, bytes] | None = None) -> bytes:
        if self.encode is not None:
            return self.encode(etype, stored)
        if cache is None:
            return event_bytes(etype, stored)
        data = cache.get(etype)
        if data is None:
            data = cache[etype] = event_bytes(etype, stored)
        return data

    def matches(self, stored: objects.Stored) -> bool:
        if not self.filtered:
            return True
        obj = stored.obj
        return self.labels.matches(obj.get("metadata", {}).get("labels")) and self.fields.matches(obj)

    def push(self, data: bytes) -> None:
        if self.closed:
            return
        if len(self.queue) >= self.max_queue:
            # Like the cacher's unresponsive-watcher handling: stop the stream, the client re-lists.
            self.overflowed = True
            self.close()
            return
        self.queue.append(data)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


def event_bytes(etype: str, stored: objects.Stored) -> bytes:
    return b'{"type":"' + etype.encode() + b'","object":' + stored.full() + b"}\n"


def error_event(status_body: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": "ERROR", "object": status_body}) + b"\n"


def bookmark(rtype: types.ResourceType, rv: int, *, initial_end: bool = False) -> bytes:
    """A BOOKMARK event at `rv` (with `initial_end`: the end of `sendInitialEvents`)."""
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return (
        orjson.dumps(
            {
                "type": "BOOKMARK",
                "object": {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta},
            }
        )
        + b"\n"
    )


def fan_out(watchers: set[Watcher], event: objects.Event) -> None:
    """Push a committed event to every matching watcher, as the cacher does (selector transitions too)."""
    cache: dict[str, bytes] = {}
    new, prev = event.new, event.prev
    assert new is not None
    left: objects.Stored | None = None  # the previous state at the new RV, for watchers the object left
    for w in list(watchers):
        if (w.namespace and w.namespace != event.ns) or event.rv <= w.after:
            continue
        if event.type == objects.ADDED or event.type == objects.DELETED:
            if w.matches(new):
                w.push(w.encoded(event.type, new, cache))
        else:
            now_m = w.matches(new)
            was_m = prev is not None and w.matches(prev)
            if now_m and was_m:
                w.push(w.encoded(objects.MODIFIED, new, cache))
            elif now_m:
                w.push(w.encoded(objects.ADDED, new, cache))
            elif was_m:
                assert prev is not None
                if left is None:
                    left = objects.with_rv(prev, event.rv)
                w.push(w.encoded(objects.DELETED, left, cache))


def replay(w: Watcher, ev: objects.Event) -> None:
    """Queue an event of the history for a watcher that resumes before it."""
    new, prev = ev.new, ev.prev
    assert new is not None
    if ev.type == objects.MODIFIED:
        now_m, was_m = w.matches(new), prev is not None and w.matches(prev)
        if now_m and was_m:
            w.queue.append(w.encoded(objects.MODIFIED, new))
        elif now_m:
            w.queue.append(w.encoded(objects.ADDED, new))
        elif was_m and prev is not None:
            w.queue.append(w.encoded(objects.DELETED, objects.with_rv(prev, ev.rv)))
    elif w.matches(new):
        w.queue.append(w.encoded(ev.type, new))
