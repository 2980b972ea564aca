"""A rollout's stored form (`dump` / `load`, what the state database keeps) and its API document
(`document`: the ROLLOUT object of docs/operations.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fleet.core import model
from fleet.core.rollout import machine
from fleet.core.rollout import members as members_

# ----------------------------------------------------------------------------------------------------------
# Stored form and API document.


def _count(c: model.Count) -> Any:
    return f"{c.value}%" if c.percent else c.value


def _uncount(v: Any) -> model.Count:
    if isinstance(v, str) and v.endswith("%"):
        return model.Count(int(v[:-1]), percent=True)
    return model.Count(int(v))


def _stored(m: members_.Member) -> dict[str, Any]:
    """A member's stored form, made once per `Member` value (immutable, and shared by every version of a
    rollout it did not change in: storing a rollout of many clusters rebuilds none of theirs)."""
    done: dict[str, Any] | None = m.__dict__.get("_stored")
    if done is None:
        done = {
            "wave": m.wave,
            "phase": str(m.phase),
            "from": m.from_revision,
            "startedAt": m.started_at,
            "appliedAt": m.applied_at,
            "healthySince": m.healthy_since,
            "deadlineAt": m.deadline_at,
            "unreachableSince": m.unreachable_since,
            "retryingSince": m.retrying_since,
            "reason": str(m.reason) if m.reason else None,
            "message": m.message,
        }
        object.__setattr__(m, "_stored", done)  # a cache beside the fields: not part of the value
    return done


def dump(r: machine.Rollout) -> dict[str, Any]:
    """The stored form (JSON-able); `load(dump(r)) == r` apart from wave placements, which are not needed
    once membership is frozen."""
    return {
        "bundle": r.bundle,
        "revision": r.revision,
        "spec": {
            "waves": [
                {
                    "name": w.name,
                    "maxConcurrency": _count(w.max_concurrency),
                    "maxFailures": _count(w.max_failures),
                    "soak": w.soak,
                    "approval": str(w.approval),
                }
                for w in r.spec.waves
            ],
            "progressDeadline": r.spec.progress_deadline,
            "onFailure": str(r.spec.on_failure),
        },
        "members": {name: dict(_stored(m)) for name, m in sorted(r.members.items())},
        "startedAt": r.started_at,
        "updatedAt": r.updated_at,
        "phase": str(r.phase),
        "wave": r.wave,
        "reason": r.reason,
        "paused": r.paused,
        "approved": sorted(r.approved),
        "soakUntil": r.soak_until,
        "actions": [
            {
                "action": a.action,
                "actor": a.actor,
                "reason": a.reason,
                "at": a.at,
                "wave": a.wave,
                "cluster": a.cluster,
            }
            for a in r.actions
        ],
        "author": r.author,
        "failures": list(r.failures),
    }


def load(d: Mapping[str, Any]) -> machine.Rollout:
    spec = d["spec"]
    waves = tuple(
        model.WaveSpec(
            name=w["name"],
            max_concurrency=_uncount(w["maxConcurrency"]),
            max_failures=_uncount(w["maxFailures"]),
            soak=float(w["soak"]),
            approval=model.Approval(w["approval"]),
        )
        for w in spec["waves"]
    )
    members = {
        name: members_.Member(
            cluster=name,
            wave=int(m["wave"]),
            phase=members_.ClusterPhase(m["phase"]),
            from_revision=m["from"],
            started_at=m["startedAt"],
            applied_at=m["appliedAt"],
            healthy_since=m["healthySince"],
            deadline_at=m["deadlineAt"],
            unreachable_since=m["unreachableSince"],
            retrying_since=m.get("retryingSince"),  # absent from rollouts stored by earlier versions
            reason=members_.FailReason(m["reason"]) if m["reason"] else None,
            message=m["message"],
        )
        for name, m in d["members"].items()
    }
    return machine.Rollout(
        bundle=d["bundle"],
        revision=d["revision"],
        spec=model.RolloutSpec(
            waves=waves,
            progress_deadline=float(spec["progressDeadline"]),
            on_failure=model.OnFailure(spec["onFailure"]),
        ),
        members=members_.Members(members),
        started_at=float(d["startedAt"]),
        updated_at=float(d["updatedAt"]),
        phase=machine.Phase(d["phase"]),
        wave=int(d["wave"]),
        reason=d["reason"],
        paused=bool(d["paused"]),
        approved=frozenset(d["approved"]),
        soak_until=d["soakUntil"],
        actions=tuple(
            machine.ActionRecord(
                action=a["action"],
                actor=a["actor"],
                reason=a["reason"],
                at=float(a["at"]),
                wave=a.get("wave"),
                cluster=a.get("cluster"),
            )
            for a in d["actions"]
        ),
        author=d.get("author"),
        failures=tuple(d.get("failures", ())),
    )


def _time(t: float | None) -> str | None:
    if t is None or not math.isfinite(t):
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wave_state(r: machine.Rollout, index: int) -> str:
    if index < r.wave:
        return "Completed"
    if index > r.wave:
        return "Pending"
    if r.phase is machine.Phase.COMPLETED:
        return "Completed"
    return str(r.phase)


def document(r: machine.Rollout, *, now: float) -> dict[str, Any]:
    """The ROLLOUT object of the HTTP API and the status document (docs/rollouts.md)."""
    waves = []
    for index, w in enumerate(r.spec.waves):
        members = r.in_wave(index)
        entry: dict[str, Any] = {
            "name": w.name,
            "state": _wave_state(r, index),
            "clusters": {m.cluster: str(m.phase) for m in members},
            "approval": str(w.approval),
            "approved": w.name in r.approved,
        }
        failed = {
            m.cluster: {"reason": str(m.reason), "message": m.message}
            for m in members
            if m.phase is members_.ClusterPhase.FAILED
        }
        if failed:
            entry["failed"] = failed
        deadlines = {
            m.cluster: _time(m.deadline_at)
            for m in members
            if m.phase is members_.ClusterPhase.PROGRESSING and m.deadline_at is not None
        }
        if deadlines:
            entry["deadlines"] = deadlines
        retrying = {
            m.cluster: m.message
            for m in members
            if m.phase is members_.ClusterPhase.PROGRESSING and m.retrying_since is not None
        }
        if retrying:
            entry["retrying"] = retrying
        if index == r.wave and r.phase is machine.Phase.SOAKING and r.soak_until is not None:
            entry["soakUntil"] = _time(r.soak_until)
            entry["soakRemainingSeconds"] = max(0.0, round(r.soak_until - now, 1))
        waves.append(entry)
    return {
        "bundle": r.bundle,
        "revision": r.revision,
        "state": str(r.phase),
        "reason": r.reason,
        "wave": r.wave_name,
        "waves": waves,
        "startedAt": _time(r.started_at),
        "updatedAt": _time(r.updated_at),
        "paused": r.paused,
        "actions": [
            {"action": a.action, "actor": a.actor, "reason": a.reason, "at": _time(a.at)}
            | ({"wave": a.wave} if a.wave else {})
            | ({"cluster": a.cluster} if a.cluster else {})
            for a in r.actions
        ],
    }
