"""Rollouts: how one bundle's new revision reaches its clusters, wave by wave, halting at the first failure.

Owns: the rollout of one (bundle, revision) as an immutable `Rollout` value and every decision about it,
as pure functions with explicit times (seconds since the epoch, wall clock, so that a restarted
controller continues from stored times):

* `membership`: which wave each placed cluster falls in (the first wave that selects it);
* `start`: a new rollout, its membership and strategy frozen;
* `advance`: timers (progress deadlines, soak), wave completion, approvals and which clusters to put in
  flight now (never more than the wave's `maxConcurrency`, never past a halt, never two waves at once);
* `applied`, `health`, `unreachable`, `joined`, `left`: what the controller observed (`observe_round`: a
  round's result for the bundle on a cluster, turned into those);
* `act`: a person's action (pause, resume, approve, skip, abort, rollback), refused with `NotApplicable`
  when it does not apply to the rollout's state (the API answers 409);
* `supersede`: a newer revision of the bundle replaces this rollout;
* `target`: the revision of the bundle a cluster must hold while this rollout governs it;
* `next_wake`: when `advance` must run again if nothing else happens (a deadline or the end of a soak);
* `dump` / `load` (the stored form) and `document` (the API's ROLLOUT object);
* `Members`: a rollout's members indexed as they change, so that an observation and the `advance` after
  it cost the same however many clusters the rollout has (`fleet.core.rollout.members`).

Does not: parse `spec.rollout` (`fleet.core.repository`), evaluate placement clauses (`fleet.core.placement`),
apply or read anything, keep timers or persist (the controller does, from these values), or judge
health (the controller reports what it observed, with the time it observed it).

The rules, for users, are in docs/rollouts.md.
"""

from __future__ import annotations

from fleet.core.rollout.machine import (
    TERMINAL,
    Action,
    ActionRecord,
    Membership,
    NotApplicable,
    Phase,
    Rollout,
    Selector,
    Step,
    Verdict,
    act,
    advance,
    applied,
    governs,
    health,
    joined,
    left,
    membership,
    next_wake,
    observe_round,
    start,
    supersede,
    target,
    unreachable,
)
from fleet.core.rollout.members import ClusterPhase, FailReason, Member, Members
from fleet.core.rollout.records import document, dump, load

__all__ = [
    "TERMINAL",
    "Action",
    "ActionRecord",
    "ClusterPhase",
    "FailReason",
    "Member",
    "Members",
    "Membership",
    "NotApplicable",
    "Phase",
    "Rollout",
    "Selector",
    "Step",
    "Verdict",
    "act",
    "advance",
    "applied",
    "document",
    "dump",
    "governs",
    "health",
    "joined",
    "left",
    "load",
    "membership",
    "next_wake",
    "observe_round",
    "start",
    "supersede",
    "target",
    "unreachable",
]
