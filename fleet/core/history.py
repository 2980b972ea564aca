"""The audit trail: what one change fleet made looks like, and which happenings are changes (docs/history.md).

Owns: `Entry` (one row of the history: time, cluster, bundle, from and to revision, outcome, object
counts, trace id, actor, a person's reason, a bounded message) and its API form (`Entry.document`); the
outcome names; the decisions of what to record, as pure functions over what the controller saw:

* `of_round`: what a cluster's round did to each bundle (`Pair`): an apply that wrote objects is
  `Synced` (or `RolledBack`, or `DriftRepaired` when the pair already held that revision), a write that
  failed or a pair turning `Failed` is `Failed` (once per distinct failure, not once per retry), a round
  that only deleted objects (of a bundle no longer placed, or taken out of one) is `Pruned`;
* `of_repair`: a drift repair found by a watch, per bundle (`DriftRepaired`);
* `of_rollout`: a rollout's own turns that no round shows (`Halted`, an automatic `RolledBack`);
* `of_action`: a person's action on a rollout (its name is the outcome: `pause`, `resume`, ...);
* `Query` and `query`: the filters of ``fleet history`` and ``GET /api/v1/history``, checked, with errors
  naming the parameter; `parse_since` (a duration back from now, or an RFC 3339 time).

Does not: store, prune or read rows (`fleet.clients.statedb`), know the engine's or reconcile's types (the
controller hands plain values), or render tables (the CLI does). Nothing here ever holds an object body
or a Secret value: counts, names, revisions and messages only, the message cut to `MAX_MESSAGE`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.core import durations
from fleet.core import rollout as ro

SYNCED = "Synced"
FAILED = "Failed"
PRUNED = "Pruned"
ROLLED_BACK = "RolledBack"
DRIFT_REPAIRED = "DriftRepaired"
HALTED = "Halted"
OUTCOMES = (SYNCED, FAILED, PRUNED, ROLLED_BACK, DRIFT_REPAIRED, HALTED, *(str(a) for a in ro.Action))

# Object counts kept per entry, by the apply/prune action names of `fleet.core.model.Action`.
COUNTED = ("created", "configured", "deleted", "failed", "conflict")
FLEET = "fleet"  # the actor of what fleet decided itself (drift repair, halts, automatic rollback)
MAX_MESSAGE = 500
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 100
_REVISION = re.compile(r"^[0-9a-f]{4,64}$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def rfc3339(at: float) -> str:
    """An entry's time as the API shows it: UTC, milliseconds."""
    when = dt.datetime.fromtimestamp(at, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _cut(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


@dataclass(frozen=True)
class Entry:
    """One change fleet made (or a person's action), as stored and shown."""

    at: float  # seconds since the epoch
    cluster: str  # "" when the entry is about a bundle's rollout, not one cluster
    bundle: str
    outcome: str
    from_revision: str | None = None
    to_revision: str | None = None
    objects: Mapping[str, int] = field(default_factory=dict)
    trace_id: str | None = None
    actor: str | None = None
    reason: str = ""  # a person's reason for an action
    message: str = ""  # an error or a halt's reason
    seq: int = 0  # the store's order (0 until stored)

    def document(self) -> dict[str, Any]:
        return {
            "at": rfc3339(self.at),
            "cluster": self.cluster or None,
            "bundle": self.bundle or None,
            "outcome": self.outcome,
            "fromRevision": self.from_revision,
            "toRevision": self.to_revision,
            "objects": {k: v for k, v in self.objects.items() if v},
            "traceId": self.trace_id,
            "actor": self.actor,
            "reason": self.reason or None,
            "message": self.message or None,
        }


def counts(actions: Iterable[str]) -> dict[str, int]:
    """Object counts from the action names of a change set (unchanged and skipped objects left out)."""
    out: dict[str, int] = {}
    for a in actions:
        if a in COUNTED:
            out[a] = out.get(a, 0) + 1
    return out


def _written(objects: Mapping[str, int]) -> int:
    return objects.get("created", 0) + objects.get("configured", 0) + objects.get("deleted", 0)


@dataclass(frozen=True)
class Pair:
    """What one round did to one bundle on one cluster, as the controller saw it."""

    bundle: str
    state: str  # the pair's state after the round (a `fleet.core.model.State` value)
    objects: Mapping[str, int]  # `counts` of its change set
    to_revision: str | None  # the revision the round handed the pair
    from_revision: str | None  # the revision the pair was last Synced at before the round
    message: str = ""
    failed_before: str | None = None  # the pair's error when it was already Failed before the round
    removed: bool = False  # no longer placed on the cluster: its objects were pruned
    rollback: bool = False  # the round returned the pair to an earlier revision (a rollout rolled back)


def of_round(
    cluster: str,
    pairs: Iterable[Pair],
    *,
    at: float,
    trace_id: str | None,
    author_of: Callable[[str | None], str | None],
    rollback_actor: Callable[[str], str] = lambda bundle: FLEET,
) -> list[Entry]:
    """The entries of one cluster's round: only pairs it changed, or that turned Failed (see the module)."""
    out: list[Entry] = []
    for p in pairs:
        objects = {k: v for k, v in p.objects.items() if v and k in COUNTED}
        written = _written(objects)
        common: dict[str, Any] = {
            "at": at,
            "cluster": cluster,
            "bundle": p.bundle,
            "from_revision": p.from_revision,
            "to_revision": p.to_revision,
            "objects": objects,
            "trace_id": trace_id,
        }
        if p.removed:
            if written:
                out.append(Entry(outcome=PRUNED, actor=author_of(p.to_revision), **common))
            continue
        if p.state == "Failed":
            new_failure = p.failed_before is None or _cut(p.failed_before) != _cut(p.message)
            if written or new_failure:
                out.append(
                    Entry(outcome=FAILED, actor=author_of(p.to_revision), message=_cut(p.message), **common)
                )
            continue
        if not written:
            continue
        if p.rollback:
            out.append(Entry(outcome=ROLLED_BACK, actor=rollback_actor(p.bundle), **common))
        elif p.from_revision is not None and p.from_revision == p.to_revision:
            out.append(Entry(outcome=DRIFT_REPAIRED, actor=FLEET, **common))
        elif written == objects.get("deleted", 0):  # only deletes: objects taken out of the bundle
            out.append(Entry(outcome=PRUNED, actor=author_of(p.to_revision), **common))
        else:
            out.append(Entry(outcome=SYNCED, actor=author_of(p.to_revision), **common))
    return out


def of_repair(
    cluster: str,
    per_bundle: Mapping[str, Mapping[str, int]],
    *,
    revisions: Mapping[str, str | None],
    at: float,
    trace_id: str | None,
) -> list[Entry]:
    """Drift repaired by a watch: one entry per bundle whose objects were written back."""
    out: list[Entry] = []
    for bundle, objects in sorted(per_bundle.items()):
        kept = {k: v for k, v in objects.items() if v and k in COUNTED}
        if not (kept.get("created", 0) + kept.get("configured", 0)):
            continue
        revision = revisions.get(bundle)
        out.append(
            Entry(
                at=at,
                cluster=cluster,
                bundle=bundle,
                outcome=DRIFT_REPAIRED,
                from_revision=revision,
                to_revision=revision,
                objects=kept,
                trace_id=trace_id,
                actor=FLEET,
            )
        )
    return out


def of_rollout(old: ro.Rollout | None, new: ro.Rollout, *, at: float) -> list[Entry]:
    """A rollout's turns that no round records: it halted, or it rolled back on its own (`onFailure`)."""
    if old is None or old.revision != new.revision or old.phase is new.phase:
        return []
    common: dict[str, Any] = {
        "at": at,
        "cluster": "",
        "bundle": new.bundle,
        "to_revision": new.revision,
        "actor": FLEET,
        "message": _cut(new.reason),
    }
    if new.phase is ro.Phase.HALTED:
        return [Entry(outcome=HALTED, **common)]
    if new.phase is ro.Phase.ROLLED_BACK and not (
        new.actions and new.actions[-1].action == ro.Action.ROLLBACK
    ):
        return [Entry(outcome=ROLLED_BACK, **common)]
    return []


def of_action(r: ro.Rollout, record: ro.ActionRecord) -> Entry:
    """A person's action on a rollout; `skip` names its cluster, the others are about the bundle."""
    return Entry(
        at=record.at,
        cluster=(record.cluster or "") if record.action == ro.Action.SKIP else "",
        bundle=r.bundle,
        outcome=str(record.action),
        to_revision=r.revision,
        actor=_cut(record.actor) or None,
        reason=_cut(record.reason),
        message=f"wave {record.wave}" if record.wave else "",
    )


def rollback_actor(r: ro.Rollout | None) -> str:
    """Who rolled a rollout back: the person of its last `rollback` action, else fleet (`onFailure`)."""
    if r is not None:
        for a in reversed(r.actions):
            if a.action == ro.Action.ROLLBACK:
                return a.actor or FLEET
    return FLEET


# -- queries ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """Filters of a history query; every one optional. Newest first, at most `limit` entries."""

    cluster: str | None = None
    bundle: str | None = None
    since: float | None = None  # seconds since the epoch
    revision: str | None = None  # a full or abbreviated commit id (from or to)
    limit: int = DEFAULT_LIMIT


def parse_since(text: str, *, now: float) -> float:
    """``24h`` (a duration back from `now`) or an RFC 3339 time; ValueError saying what is wrong."""
    raw = text.strip()
    if re.match(r"^\d{4}-\d{2}-\d{2}", raw):
        try:
            when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"{text!r} is not an RFC 3339 time (2025-01-31T12:00:00Z)") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    try:
        seconds = durations.parse(raw)
    except ValueError as e:
        raise ValueError(f"{e} or an RFC 3339 time") from None
    return now - seconds


def query(
    *,
    cluster: str | None = None,
    bundle: str | None = None,
    since: str | None = None,
    revision: str | None = None,
    limit: str | int | None = None,
    now: float,
) -> Query:
    """A checked `Query` from text as people and URLs give it; ValueError naming the parameter."""
    for name, value in (("cluster", cluster), ("bundle", bundle)):
        if value and not _NAME.match(value):
            raise ValueError(f"{name} {value!r}: not a cluster or bundle name")
    since_at: float | None = None
    if since:
        try:
            since_at = parse_since(since, now=now)
        except ValueError as e:
            raise ValueError(f"since: {e}") from None
        if not math.isfinite(since_at):
            raise ValueError(f"since {since!r}: out of range")
    rev = check_revision(revision) if revision else None
    n = DEFAULT_LIMIT
    if limit not in (None, ""):
        try:
            n = int(limit)
        except (TypeError, ValueError):
            raise ValueError(f"limit {limit!r}: not a whole number") from None
        if not 1 <= n <= MAX_LIMIT:
            raise ValueError(f"limit {n}: must be between 1 and {MAX_LIMIT}")
    return Query(cluster=cluster or None, bundle=bundle or None, since=since_at, revision=rev, limit=n)


def check_revision(text: str) -> str:
    """A full or abbreviated commit id, lower case; ValueError otherwise."""
    rev = text.strip().lower()
    if not _REVISION.match(rev):
        raise ValueError(f"revision {text!r}: not a commit id (4 to 64 hexadecimal digits)")
    return rev
