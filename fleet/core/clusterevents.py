"""Kubernetes Events fleet writes on a cluster: which, about what, and their ``events.k8s.io/v1`` form.

Owns: `Occurrence` (one thing worth an Event on one cluster: an apply that changed objects, a prune, a
drift repair, a halted rollout), `of_entry` (from a `fleet.core.history.Entry`: every Event is also a
history row) and `of_halt`; `Series` and `Aggregator`, which fold repeats of the same occurrence (same
cluster, object, reason and note) within `WINDOW` seconds into one Event with a `series` count, so a drift
fight writes one Event and a few updates, never one Event per repair; `body` (the Event to create) and
`series_patch` (the merge patch of a repeat).

Does not: write anything or keep clients (`fleet.controller.events` does, off the reconcile's path). Notes carry
the revision, counts and object names: never an object's content, a Secret value or a token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.core import history as hist
from fleet.core import model

CONTROLLER = "fleet.dev/fleet"
WINDOW = 360.0  # seconds: repeats closer than this are one Event with a series (client-go's 6 minutes)
NOTE_LIMIT = 1024
MAX_SERIES = 10_000  # series remembered (the least recently seen are forgotten first)


@dataclass(frozen=True)
class Regarding:
    api_version: str
    kind: str
    namespace: str
    name: str

    def document(self) -> dict[str, str]:
        out = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        return out


@dataclass(frozen=True)
class Occurrence:
    cluster: str
    regarding: Regarding
    reason: str
    action: str
    type: str  # Normal | Warning
    note: str
    at: float

    @property
    def key(self) -> tuple[str, Regarding, str, str, str, str]:
        return (self.cluster, self.regarding, self.reason, self.action, self.type, self.note)


def inventory(bundle: str, *, instance: str) -> Regarding:
    """The bundle's inventory ConfigMap: what an Event about a bundle on a cluster regards."""
    return Regarding(
        "v1", "ConfigMap", model.INVENTORY_NAMESPACE, model.inventory_name(instance=instance, bundle=bundle)
    )


def _short(revision: str | None) -> str:
    return (revision or "unknown")[:12]


def _counts(objects: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in objects.items() if n) or "no object"


def _cut(note: str) -> str:
    return (
        note
        if len(note.encode()) <= NOTE_LIMIT
        else note.encode()[: NOTE_LIMIT - 3].decode(errors="ignore") + "..."
    )


def of_entry(entry: hist.Entry, *, instance: str, refs: Iterable[model.ObjectRef] = ()) -> Occurrence | None:
    """The Event a history entry is worth on its cluster, if any. A drift repair of one namespaced
    object regards that object (so a fight over it is one series); everything else regards the bundle's
    inventory ConfigMap (an Event in fleet-system may not regard a cluster-scoped object)."""
    if not entry.cluster:
        return None
    regarding = inventory(entry.bundle, instance=instance)
    rev = _short(entry.to_revision)
    if entry.outcome == hist.SYNCED:
        reason, action, kind = "Applied", "Apply", "Normal"
        note = f"revision {rev}: bundle {entry.bundle}: {_counts(entry.objects)}"
    elif entry.outcome == hist.ROLLED_BACK:
        reason, action, kind = "RolledBack", "Rollback", "Normal"
        note = f"revision {rev}: bundle {entry.bundle} rolled back from {_short(entry.from_revision)}: {_counts(entry.objects)}"
    elif entry.outcome == hist.PRUNED:
        reason, action, kind = "Pruned", "Prune", "Normal"
        note = f"revision {rev}: bundle {entry.bundle}: {_counts(entry.objects)}"
    elif entry.outcome == hist.FAILED and (
        entry.objects.get("created") or entry.objects.get("configured") or entry.objects.get("deleted")
    ):
        reason, action, kind = "ApplyFailed", "Apply", "Warning"
        note = f"revision {rev}: bundle {entry.bundle}: {_counts(entry.objects)}: {entry.message}"
    elif entry.outcome == hist.DRIFT_REPAIRED:
        reason, action, kind = "DriftRepaired", "Repair", "Normal"
        namespaced = [r for r in refs if r.namespace]
        listed = list(refs)
        if len(listed) == 1 and namespaced:
            ref = listed[0]
            regarding = Regarding(ref.api_version, ref.kind, ref.namespace, ref.name)
            note = (
                f"revision {rev}: bundle {entry.bundle}: {ref.kind} {ref.namespace}/{ref.name} written back"
            )
        else:
            names = ", ".join(
                f"{r.kind} {r.namespace + '/' if r.namespace else ''}{r.name}" for r in sorted(listed)[:10]
            )
            note = f"revision {rev}: bundle {entry.bundle}: written back: {names or _counts(entry.objects)}"
    else:
        return None
    return Occurrence(entry.cluster, regarding, reason, action, kind, _cut(note), entry.at)


def of_halt(cluster: str, *, bundle: str, revision: str, reason: str, instance: str, at: float) -> Occurrence:
    note = f"revision {_short(revision)}: rollout of bundle {bundle} halted: {reason}"
    return Occurrence(
        cluster, inventory(bundle, instance=instance), "RolloutHalted", "Halt", "Warning", _cut(note), at
    )


# -- aggregation -----------------------------------------------------------------------------------------


@dataclass
class Series:
    """One Event on a cluster and how often its occurrence was seen."""

    name: str
    first: Occurrence
    count: int = 1
    last_at: float = 0.0
    written: int = 0  # the count the cluster has (0: not created yet)
    written_at: float = 0.0  # when it was last written (monotonic)

    @property
    def dirty(self) -> bool:
        return self.count != self.written


class Aggregator:
    """Folds repeats into series. Not thread-safe (the event writer's task owns it)."""

    def __init__(self, *, window: float = WINDOW, limit: int = MAX_SERIES) -> None:
        self.window = window
        self.limit = limit
        self._series: OrderedDict[tuple[Any, ...], Series] = OrderedDict()

    def observe(self, occ: Occurrence) -> Series:
        key = occ.key
        s = self._series.get(key)
        if s is not None and occ.at - s.last_at <= self.window:
            s.count += 1
            s.last_at = max(s.last_at, occ.at)
            self._series.move_to_end(key)
            return s
        s = Series(name=event_name(occ), first=occ, last_at=occ.at)
        self._series[key] = s
        self._series.move_to_end(key)
        while len(self._series) > self.limit:
            self._series.popitem(last=False)
        return s

    def forget(self, series: Series) -> None:
        self._series.pop(series.first.key, None)


def event_name(occ: Occurrence) -> str:
    """``<regarding name>.<16 hex digits>``, as client-go names Events (unique per occurrence)."""
    digest = hashlib.sha256(repr((occ.key, occ.at)).encode()).hexdigest()[:16]
    return f"{occ.regarding.name[:200]}.{digest}"


def micro_time(at: float) -> str:
    when = dt.datetime.fromtimestamp(at, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}Z"


def body(series: Series, *, instance: str) -> dict[str, Any]:
    """The ``events.k8s.io/v1`` Event to create for a series (with its `series` once it repeats)."""
    occ = series.first
    out: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": series.name, "namespace": model.INVENTORY_NAMESPACE},
        "eventTime": micro_time(occ.at),
        "reportingController": CONTROLLER,
        "reportingInstance": instance,
        "action": occ.action,
        "reason": occ.reason,
        "type": occ.type,
        "regarding": occ.regarding.document(),
        "note": occ.note,
    }
    if series.count > 1:
        out["series"] = {"count": series.count, "lastObservedTime": micro_time(series.last_at)}
    return out


def series_patch(series: Series) -> dict[str, Any]:
    """The merge patch that brings a written Event's series up to date."""
    return {"series": {"count": series.count, "lastObservedTime": micro_time(series.last_at)}}
