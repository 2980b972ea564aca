"""What the watch streams know of one cluster, kept so that a round can read it instead of the server.

Owns: `ObjectCache`, one per watched cluster: per kind the objects its stream delivers (fleet's own
objects: the owner label selector; every Namespace), as compact JSON without ``managedFields``, fed by
`fleet.cluster.watch.ClusterWatch` (a list replaces a kind's objects, events update them) and by fleet's
own writes through the cluster's `kube.Client` (`wrote`: an apply's or create's answer is the newest
state; a delete leaves the object in doubt until its event arrives). `fresh` says whether a kind may
answer a round: listed, its stream open now (not in a gap: 410, relist, reconnect, a stream not opened
yet), nothing of it in doubt, nothing dropped for size. `doubt` makes every kind unfit until the next
round read from the server (`trust_again`). `changes` and `changed_since` say which objects changed since a
mark, leaving out fleet's own apply and create answers (`fleet.cluster.scope`: which bundles a round
plans); a list, a kind dropped or a change log that no longer reaches back answer "unknown"; `lists`
counts a kind's lists and `differs` compares its objects with versions read from the server. The rules a round follows with it (which decisions it may take
on cached data, and which need the server) are in docs/reconcile.md, "Reading from the watch caches".

Does not: open streams or judge drift (`fleet.cluster.watch`), decide anything (`fleet.cluster.reading`
and `fleet.cluster.reconcile` ask it), or send requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from fleet.core import model, plan

GroupKind = tuple[str, str]  # (group, kind): one store per kind, whatever version it is watched at


def newer(rv: str, than: str) -> bool:
    """Whether `rv` comes after `than` (resourceVersions compare as integers when both are)."""
    try:
        return int(rv) > int(than)
    except ValueError:
        return rv != than


@dataclass(slots=True)
class _Entry:
    rv: str
    labels: Mapping[str, str]
    body: bytes  # the object as the server last said, without managedFields (orjson)


@dataclass
class _Store:
    version: str = ""  # the version the kind is listed and watched at
    entries: dict[plan.Key, _Entry] = field(default_factory=dict)
    listed: bool = False
    open: bool = False  # its stream is open: events flow
    doubt: set[plan.Key] = field(default_factory=set)  # fleet deleted them: wait for the event
    overflow: bool = False  # more objects than the cache keeps: not an answer


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, dict) else {}


def _compact(obj: Mapping[str, Any]) -> bytes:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    # orjson's bytes keep the 4 KiB buffer they were written into; a copy holds only the object's bytes
    # (10x less memory for a typical ConfigMap).
    return bytes(memoryview(orjson.dumps(obj)))


class ObjectCache:
    """The watched objects of one cluster (see the module docstring)."""

    def __init__(self, *, max_objects: int = 50_000, log_size: int = 512) -> None:
        self.max_objects = max_objects
        self._stores: dict[GroupKind, _Store] = {}
        self._count = 0
        self._doubted = False
        self.doubts = (
            0  # how many times the cache was doubted (a round's server read clears only those before it)
        )
        self.answered = 0  # reads answered from the cache (lists and gets)
        # Changes taken, numbered: (number, the object or None for "any of them"), at most `log_size` of
        # them since the last mark asked about (`changed_since` drops those up to it: marks only advance).
        self.changes = 0
        self.log_size = log_size
        self._log: deque[tuple[int, plan.Key | None]] = deque()
        self._floor = 0  # changes up to this number are no longer in the log
        self._lists: dict[
            GroupKind, int
        ] = {}  # how many times each kind was listed (a drop does not reset it)

    # -- fed by the watch ----------------------------------------------------------------------------

    def listed(self, api_version: str, kind: str, items: list[dict[str, Any]]) -> None:
        """A whole list of the kind (every page read): it replaces what the store held."""
        group, _, version = api_version.rpartition("/")
        store = self._stores.setdefault((group, kind), _Store())
        self._count -= len(store.entries)
        store.version, store.entries, store.doubt, store.overflow = version, {}, set(), False
        store.listed, store.open = True, False
        self._lists[(group, kind)] = self._lists.get((group, kind), 0) + 1
        for item in items:
            self._put(store, item, note=False)
        self._changed(None)  # what changed in the kind before this list is not known

    def opened(self, api_version: str, kind: str) -> None:
        store = self._stores.get(_group_kind(api_version, kind))
        if store is not None and store.listed:
            store.open = True

    def closed(self, api_version: str, kind: str) -> None:
        """The stream ended (at its timeout, an error, a 410): a gap until it is open again."""
        store = self._stores.get(_group_kind(api_version, kind))
        if store is not None:
            store.open = False

    def dropped(self, api_version: str, kind: str) -> None:
        """The kind is no longer watched."""
        store = self._stores.pop(_group_kind(api_version, kind), None)
        if store is not None:
            self._count -= len(store.entries)
            self._changed(None)

    def event(self, event: str, obj: Mapping[str, Any]) -> None:
        """A watch event (ADDED, MODIFIED, DELETED) of a watched kind."""
        store = self._stores.get(_group_kind(str(obj.get("apiVersion") or ""), str(obj.get("kind") or "")))
        if store is None or not store.listed:
            return
        k = plan.key_of(obj)
        store.doubt.discard(k)
        if event == "DELETED":
            if store.entries.pop(k, None) is not None:
                self._count -= 1
                self._changed(k)
            return
        self._put(store, obj)

    # -- fed by fleet's own writes (`kube.Client.on_write`) ------------------------------------------

    def wrote(self, verb: str, ref: model.ObjectRef, answer: Mapping[str, Any] | None) -> None:
        """fleet wrote `ref` (`kube.WriteHook`): the answer of an apply or create is its newest state; a
        delete leaves it in doubt until the watch says what it is now; a create that found the object
        there shows the cache behind (`doubt`)."""
        if verb == "exists":
            self.doubt()
            return
        store = self._stores.get((ref.group, ref.kind))
        if store is None or not store.listed:
            return
        k = plan.key(ref)
        if verb in ("apply", "create") and answer is not None:
            if answer.get("apiVersion", ref.api_version) != store_api_version(ref.group, store.version):
                store.doubt.add(k)  # answered at another version than the store holds
                return
            self._put(store, {"apiVersion": ref.api_version, "kind": ref.kind, **answer}, note=False)
        elif k in store.entries or verb != "delete":
            store.doubt.add(k)

    def doubt(self) -> None:
        """Something showed the cache behind (a create found the object there): read from the server."""
        self._doubted = True
        self.doubts += 1

    def trust_again(self, *, doubts: int) -> None:
        """A round read from the server after `doubts` doubts: those are resolved (one raised while it was
        reading is not)."""
        if self.doubts == doubts:
            self._doubted = False

    # -- read by a round -----------------------------------------------------------------------------

    def fresh(self, group: str, kind: str, version: str) -> bool:
        """Whether the kind may answer a round: listed at `version`, its stream open, nothing in doubt."""
        store = self._stores.get((group, kind))
        return (
            store is not None
            and not self._doubted
            and store.listed
            and store.open
            and not store.doubt
            and not store.overflow
            and store.version == version
        )

    def objects(
        self, group: str, kind: str, *, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The kind's objects (in `namespace`; carrying every label of `labels`), each a fresh dict."""
        store = self._stores.get((group, kind))
        if store is None:
            return []
        out = []
        for k, entry in store.entries.items():
            if namespace is not None and k[2] != namespace:
                continue
            if labels and any(entry.labels.get(n) != v for n, v in labels.items()):
                continue
            out.append(orjson.loads(entry.body))
        self.answered += 1
        return out

    def names(self, group: str, kind: str) -> list[str]:
        """The names of the kind's objects (nothing decoded: a round that needs only which exist)."""
        store = self._stores.get((group, kind))
        self.answered += 1
        return [k[3] for k in store.entries] if store is not None else []

    def get(self, group: str, kind: str, *, namespace: str, name: str) -> dict[str, Any] | None:
        store = self._stores.get((group, kind))
        entry = store.entries.get((group, kind, namespace, name)) if store is not None else None
        self.answered += 1
        return orjson.loads(entry.body) if entry is not None else None

    def lists(self, group: str, kind: str) -> int:
        """How many times the kind was listed on this cache (1: its first list only, no relist since; a
        kind dropped and listed again counts twice)."""
        return self._lists.get((group, kind), 0)

    def differs(self, group: str, kind: str, versions: Mapping[plan.Key, str]) -> set[plan.Key]:
        """The objects of the kind whose resourceVersion is not the one in `versions` (the kind's objects as
        someone read them whole: there then or here now, missing on one side, or at another version)."""
        store = self._stores.get((group, kind))
        entries = store.entries if store is not None else {}
        out = {k for k, entry in entries.items() if versions.get(k) != entry.rv}
        out.update(k for k in versions if k not in entries)
        return out

    def changed_since(self, mark: int) -> set[plan.Key] | None:
        """The objects changed after change number `mark` (`changes` when it was taken), fleet's own apply
        and create answers left out; None when that is not known (a kind listed again or dropped since,
        or the log no longer reaches back to `mark`)."""
        if mark > self.changes or mark < self._floor:
            return None
        while self._log and self._log[0][0] <= mark:
            self._log.popleft()
        self._floor = mark
        out: set[plan.Key] = set()
        for _, k in self._log:
            if k is None:
                return None
            out.add(k)
        return out

    @property
    def size(self) -> int:
        return self._count

    # -- inside --------------------------------------------------------------------------------------

    def _put(self, store: _Store, obj: Mapping[str, Any], *, note: bool = True) -> None:
        k = plan.key_of(obj)
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        entry = store.entries.get(k)
        if entry is not None:
            if rv and entry.rv and not newer(rv, entry.rv):
                return  # older than what the store holds: a replay, or our write seen already
            entry.rv, entry.labels, entry.body = rv, _labels(obj), _compact(obj)
            if note:
                self._changed(k)
            return
        if self._count >= self.max_objects:
            store.overflow = True
            return
        store.entries[k] = _Entry(rv, _labels(obj), _compact(obj))
        self._count += 1
        if note:
            self._changed(k)

    def _changed(self, k: plan.Key | None) -> None:
        self.changes += 1
        self._log.append((self.changes, k))
        if len(self._log) > self.log_size:
            self._floor = self._log.popleft()[0]


def store_api_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def _group_kind(api_version: str, kind: str) -> GroupKind:
    return (api_version.rpartition("/")[0], kind)


def parse_selector(selector: str) -> dict[str, str]:
    """`a=b,c=d` (equality only, what fleet's own selectors are) as a mapping."""
    out = {}
    for part in selector.split(","):
        name, _, value = part.partition("=")
        out[name.strip()] = value.strip()
    return out
