"""The stored form of objects and of watch events: what every other part of the store hands around.

Owns: `Stored` (one object version: the dict, never mutated once stored, with its cached full and
list-item encodings), `Event` (one committed change with the object before and after), the event types,
storage keys (`namespace/name`), the key order of the real server's JSON (`order`), `with_rv` (the
last state of an object restamped at a deletion's resourceVersion), and `now()` (metav1.Time).

Does not: hold state, decide anything or encode watch events (`fleet.sim.storage.watches`).

Encoding: each stored object keeps its serialized bytes (full, and without kind/apiVersion for list
items of built-in types), so an object is encoded once however often it is listed or watched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"

_META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)


def now() -> str:
    """RFC 3339 with second precision and `Z`, as metav1.Time serializes."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Stored:
    """One stored object version: the dict (never mutated once stored) and its cached encodings."""

    __slots__ = ("_full", "_item", "obj", "rv")

    def __init__(self, obj: dict[str, Any], rv: int) -> None:
        self.obj = obj
        self.rv = rv
        self._full: bytes | None = None
        self._item: bytes | None = None

    def full(self) -> bytes:
        if self._full is None:
            self._full = orjson.dumps(self.obj)
        return self._full

    def item(self) -> bytes:
        """Encoding as a list item of a built-in type: without kind and apiVersion (kubernetes#63676).

        Stored objects start with kind and apiVersion (see `order`), so this is a slice of the cached
        full encoding: no second copy to keep and nothing to encode again.
        """
        if self._item is None:
            full = self.full()
            obj = self.obj
            head = orjson.dumps({"kind": obj.get("kind"), "apiVersion": obj.get("apiVersion")})
            if len(obj) > 2 and full.startswith(head[:-1] + b","):
                return b"{" + full[len(head) :]
            self._item = orjson.dumps({k: v for k, v in obj.items() if k != "kind" and k != "apiVersion"})
        return self._item

    def copy(self) -> dict[str, Any]:
        """A deep copy the caller may mutate (decoding the cached bytes is faster than deepcopy)."""
        result: dict[str, Any] = orjson.loads(self.full())
        return result

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.obj.get("metadata", {}).get("labels") or {}
        return labels


def with_rv(stored: Stored, rv: int) -> Stored:
    meta = dict(stored.obj.get("metadata") or {})
    meta["resourceVersion"] = str(rv)
    obj = dict(stored.obj)
    obj["metadata"] = meta
    return Stored(obj, rv)


@dataclass
class Event:
    rv: int
    type: str
    ns: str
    name: str
    new: Stored | None  # the object after the change; for DELETED the last state at the deletion RV
    prev: Stored | None  # the object before the change
    at: float = 0.0  # time.monotonic() of the commit (history expires by age, like etcd compaction)


def storage_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def split_key(key: str) -> tuple[str, str]:
    ns, _, name = key.rpartition("/")
    return ns, name


def order(obj: dict[str, Any]) -> dict[str, Any]:
    """Key order like the real server's JSON: kind, apiVersion, metadata (Go field order), ..., status."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        ordered = {k: meta[k] for k in _META_ORDER if k in meta}
        if len(ordered) != len(meta):
            ordered.update((k, v) for k, v in meta.items() if k not in ordered)
        meta = ordered
    out: dict[str, Any] = {}
    for k in ("kind", "apiVersion"):
        if k in obj:
            out[k] = obj[k]
    if meta is not None:
        out["metadata"] = meta
    for k, v in obj.items():
        if k not in out and k != "status":
            out[k] = v
    if "status" in obj:
        out["status"] = obj["status"]
    return out


def strip_times(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    mfs = meta.get("managedFields")
    if not mfs:
        return obj
    out = dict(obj)
    out["metadata"] = dict(meta, managedFields=[{k: v for k, v in e.items() if k != "time"} for e in mfs])
    return out
