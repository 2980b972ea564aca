"""Drift, the pure half: is a watch event drift, and fights with other writers.

Owns:

- what fleet compares (`shape`): the desired object as the server should hold it: fleet's revision
  annotation left out (it does not decide writes), Secret ``stringData`` folded into ``data`` as the
  server does, ``status`` left out (never fleet's to set);
- `fingerprint`: a short hash of the VALUES a live object has at the fields present in the desired
  object. Fields the server defaults, fields only others set (a label added by someone else) and
  ``managedFields`` (an edit with kubectl moves ownership to kubectl) are not part of it, so they never
  count as drift. Numbers compare by value (``1`` == ``1.0``); a list compares by length and item by item;
  a field absent live reads as missing;
- `judge`: one event of a managed object -> a `Verdict`. A MODIFIED whose fingerprint differs from the
  desired one (and from the normalised form the server gave fleet's own apply, learnt by the caller
  from the apply answer: quantities such as ``0.5`` -> ``500m``) is drift; a DELETED of a desired
  object is drift; fleet's own applies read back as desired and are not; an object labelled for another
  bundle is being moved by a full reconcile and is left to it;
- `FightGuard`: per-object repair history; more than `limit` repairs of one object within `window`
  seconds is a fight with another writer: further repairs back off exponentially (up to `cap`) and the
  fight is reported (`Fight.message`, a counter) until the object stays calm for a window;
- `desired_objects`: the objects the engine applies on one cluster (``plan.marked``), keyed by ref,
  from its `plan.Target`s; `kinds` of them.

The repair itself (the I/O half: server-side apply of drifted objects) is `fleet.cluster.repair`.

Does not: watch (`fleet.cluster.watch`), write anything (`fleet.cluster.repair`), inventories, prune or
full reconciles (`fleet.cluster.reconcile`); no I/O at all.
"""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from fleet.core import backoff, model, plan, secrets

_MISSING = "\x00missing"
_TYPE_MISMATCH = "\x00type"


class Verdict(enum.StrEnum):
    IN_SYNC = "in-sync"  # live holds fleet's values at every field fleet sets
    DRIFTED = "drifted"  # a value fleet sets was changed (or removed) by someone else
    DELETED = "deleted"  # a desired object is gone (or no longer carries our owner label)
    UNMANAGED = "unmanaged"  # not desired on this cluster: none of drift's business
    MOVING = "moving"  # labelled for another bundle: a full reconcile relabels it


# ----------------------------------------------------------------------------------------------------------
# Comparing (pure)


def shape(desired: Mapping[str, Any]) -> Mapping[str, Any]:
    """The desired object as the server should read it back (see the module docstring).

    Only a Secret with ``stringData`` is copied; ``status`` and the revision annotation are skipped by
    `fingerprint` itself, so one desired object shared by many clusters is not copied per cluster.
    """
    return secrets.fold_string_data(desired)


def _scalar(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return _TYPE_MISMATCH


def _project(want: Any, have: Any) -> Any:
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return _MISSING if have is _MISSING or have is None else _TYPE_MISMATCH
        return {k: _project(v, have.get(k, _MISSING)) for k, v in want.items() if v is not None}
    if isinstance(want, list):
        if not isinstance(have, list):
            return _MISSING if have is _MISSING or have is None else _TYPE_MISMATCH
        return [len(have), *(_project(w, h) for w, h in zip(want, have, strict=False))]
    if have is _MISSING:
        return _MISSING
    if isinstance(have, Mapping | list):
        return _TYPE_MISMATCH
    return _scalar(have)


_UNCOMPARED = (model.ANNOTATION_REVISION, model.ANNOTATION_CLAIM)


def _project_object(want: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in want.items():
        if v is None or k == "status":
            continue
        have = live.get(k, _MISSING)
        if k == "metadata" and isinstance(v, Mapping) and isinstance(have, Mapping):
            meta = {}
            for mk, mv in v.items():
                if mv is None:
                    continue
                mhave = have.get(mk, _MISSING)
                if mk == "annotations" and isinstance(mv, Mapping):
                    kept = {a: x for a, x in mv.items() if a not in _UNCOMPARED}
                    if kept:
                        meta[mk] = _project(kept, mhave)
                else:
                    meta[mk] = _project(mv, mhave)
            out[k] = meta
        else:
            out[k] = _project(v, have)
    return out


def fingerprint(want: Mapping[str, Any], live: Mapping[str, Any]) -> bytes:
    """Hash of the values `live` has at the fields present in `want` (a `shape`), ``status`` and the
    revision annotation left out."""
    data = orjson.dumps(_project_object(want, live), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(data, digest_size=12).digest()


@dataclass(frozen=True)
class Wanted:
    """One desired object, prepared for comparison once per revision."""

    ref: model.ObjectRef
    obj: Mapping[str, Any]
    shape: Mapping[str, Any]
    fingerprint: bytes

    @property
    def bundle(self) -> str:
        return str(((self.obj.get("metadata") or {}).get("labels") or {}).get(model.LABEL_BUNDLE, ""))

    @classmethod
    def of(cls, ref: model.ObjectRef, obj: Mapping[str, Any]) -> Wanted:
        s = shape(obj)
        return cls(ref=ref, obj=obj, shape=s, fingerprint=fingerprint(s, s))


class DesiredIndex:
    """The desired objects of one cluster by `plan.Key` (any served version), prepared lazily."""

    def __init__(self, objects: Mapping[model.ObjectRef, Mapping[str, Any]]) -> None:
        self._refs = {plan.key(ref): (ref, obj) for ref, obj in objects.items()}
        self._prepared: dict[plan.Key, Wanted] = {}

    def __len__(self) -> int:
        return len(self._refs)

    def get(self, k: plan.Key) -> Wanted | None:
        found = self._prepared.get(k)
        if found is None:
            entry = self._refs.get(k)
            if entry is None:
                return None
            found = self._prepared[k] = Wanted.of(*entry)
        return found


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("labels") or {}


def judge(
    event: str,
    live: Mapping[str, Any],
    wanted: Wanted | None,
    *,
    live_fingerprint: bytes | None = None,
    accepted: Iterable[bytes] = (),
) -> Verdict:
    """Whether one watch event (ADDED, MODIFIED, DELETED) of an object carrying our owner label is drift.

    `accepted`: fingerprints the server gave fleet's own apply of this same desired object (its
    normalised form), which are in sync too.
    """
    if wanted is None:
        return Verdict.UNMANAGED
    if event == "DELETED":
        return Verdict.DELETED
    bundle = labels_of(live).get(model.LABEL_BUNDLE)
    if bundle and wanted.bundle and bundle != wanted.bundle:
        return Verdict.MOVING
    fp = live_fingerprint if live_fingerprint is not None else fingerprint(wanted.shape, live)
    if fp == wanted.fingerprint or fp in set(accepted):
        return Verdict.IN_SYNC
    return Verdict.DRIFTED


def last_writer(live: Mapping[str, Any]) -> str:
    """The field manager (other than fleet) that wrote `live` most recently, if the object says."""
    best = ("", "")
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if not isinstance(entry, Mapping):
            continue
        manager = str(entry.get("manager") or "")
        if not manager or manager == model.FIELD_MANAGER:
            continue
        when = str(entry.get("time") or "")
        if when >= best[0]:
            best = (when, manager)
    return best[1]


# ----------------------------------------------------------------------------------------------------------
# Fights (pure state, the caller passes the time)


@dataclass(frozen=True)
class Fight:
    """Another writer keeps changing an object back: fleet's repairs of it are backed off."""

    ref: model.ObjectRef
    repairs: int  # repairs within the window when it was noticed
    window: float
    backoff: float  # seconds until the next repair is allowed
    strikes: int  # how many times in a row it backed off
    writer: str = ""  # the other field manager, when known

    @property
    def message(self) -> str:
        by = f" (last written by field manager {self.writer!r})" if self.writer else ""
        return (
            f"{self.ref}: changed by another writer and repaired {self.repairs} times within "
            f"{self.window:g}s{by}; fleet backs off repairing it for {self.backoff:g}s"
        )


@dataclass
class _Track:
    times: deque[float]
    strikes: int = 0
    until: float = 0.0
    last: float = 0.0


class FightGuard:
    """Counts repairs per object; more than `limit` within `window` seconds starts exponential backoff
    (`backoff`, doubling, at most `cap`); a window without repairs ends the fight."""

    def __init__(
        self,
        *,
        limit: int = 5,
        window: float = 60.0,
        backoff: float = 10.0,
        cap: float = 600.0,
        max_tracked: int = 10_000,
    ) -> None:
        self.limit = max(1, limit)
        self.window = window
        self.backoff = backoff
        self.cap = cap
        self.max_tracked = max_tracked
        self.fights = 0  # backoffs started or escalated, ever
        self._tracks: dict[plan.Key, _Track] = {}

    def next_allowed(self, k: plan.Key, now: float) -> float:
        """When a repair of `k` may run (`now` when it may run at once)."""
        t = self._tracks.get(k)
        return now if t is None else max(now, t.until)

    def fighting(self, k: plan.Key, now: float) -> bool:
        t = self._tracks.get(k)
        return t is not None and t.strikes > 0 and now - max(t.last, t.until) <= self.window

    def record(self, k: plan.Key, now: float, *, ref: model.ObjectRef, writer: str = "") -> Fight | None:
        """Record a repair that wrote; return the fight when this one starts or escalates backoff."""
        t = self._tracks.get(k)
        if t is None:
            if len(self._tracks) >= self.max_tracked:
                self._forget_calm(now)
            t = self._tracks[k] = _Track(times=deque(maxlen=self.limit + 1))
        if t.strikes and now - max(t.last, t.until) > self.window:
            t.strikes = 0  # calm for a whole window: the fight is over
        while t.times and now - t.times[0] > self.window:
            t.times.popleft()
        t.times.append(now)
        t.last = now
        if t.strikes == 0 and len(t.times) <= self.limit:
            return None
        t.strikes += 1
        delay = backoff.delay(t.strikes, base=self.backoff, cap=self.cap, jitter=False)
        t.until = now + delay
        self.fights += 1
        return Fight(
            ref=ref, repairs=len(t.times), window=self.window, backoff=delay, strikes=t.strikes, writer=writer
        )

    def _forget_calm(self, now: float) -> None:
        for k in [k for k, t in self._tracks.items() if now - max(t.last, t.until) > self.window]:
            del self._tracks[k]
        while len(self._tracks) >= self.max_tracked:
            self._tracks.pop(next(iter(self._tracks)))


# ----------------------------------------------------------------------------------------------------------
# What the engine applies on a cluster


def desired_objects(
    targets: Mapping[str, plan.Target], *, instance: str
) -> dict[model.ObjectRef, Mapping[str, Any]]:
    """The objects a full reconcile applies on one cluster, as it applies them (`plan.marked`).

    Left out: suspended bundles, pairs in error, and objects declared by several bundles (a conflict
    nobody writes). Build it once per revision and cluster; `ClusterWatch` calls its source often.
    """
    out: dict[model.ObjectRef, Mapping[str, Any]] = {}
    claimed: dict[plan.Key, int] = {}
    for t in targets.values():
        if t.desired is None or t.suspended or t.error is not None:
            continue
        for ref in t.desired.refs:  # made once per DesiredSet
            k = plan.key(ref)
            claimed[k] = claimed.get(k, 0) + 1
    for name, t in sorted(targets.items()):
        if t.desired is None or t.suspended or t.error is not None:
            continue
        want = plan.marked_objects(t.desired, bundle=name, instance=instance)
        for ref, marked in zip(t.desired.refs, want, strict=True):
            if claimed[plan.key(ref)] == 1:
                out[ref] = marked
    return out


def kinds(refs: Iterable[model.ObjectRef]) -> frozenset[tuple[str, str]]:
    """The (apiVersion, kind) pairs of `refs`: what `ClusterWatch.set_kinds` takes."""
    return frozenset((r.api_version, r.kind) for r in refs)
