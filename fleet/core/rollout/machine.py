"""The rollout state machine: `membership`, `start`, `advance`, the observations (`applied`, `health`,
`unreachable`, `joined`, `left`, `observe_round`), a person's actions (`act`), `supersede`, `target` and
`next_wake`, as pure functions over the immutable `Rollout` value with explicit times.

An observation and the `advance` after it read the members' index (`fleet.core.rollout.members.Members`:
counts per wave and phase, the next Pending clusters, a deadline bound), never every member: what a
round costs does not grow with the rollout's clusters. Only what happens once per wave or deadline
looks at them all (a wave that completes, a soak that starts, a deadline that passes, a halt's reason,
a person's action).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fleet.core import durations, model
from fleet.core.rollout.members import ClusterPhase, FailReason, Member, Members


class Phase(enum.StrEnum):
    PROGRESSING = "Progressing"
    WAITING_APPROVAL = "WaitingApproval"
    SOAKING = "Soaking"
    HALTED = "Halted"
    COMPLETED = "Completed"
    SUPERSEDED = "Superseded"
    ABORTED = "Aborted"
    ROLLED_BACK = "RolledBack"


TERMINAL = frozenset({Phase.COMPLETED, Phase.SUPERSEDED, Phase.ABORTED, Phase.ROLLED_BACK})


class Verdict(enum.StrEnum):
    """What the controller observed of a bundle's objects on a cluster."""

    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"  # not healthy yet
    DEGRADED = "Degraded"  # unhealthy for good (e.g. a Deployment past its own progress deadline)


class Action(enum.StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    APPROVE = "approve"
    SKIP = "skip"
    ABORT = "abort"
    ROLLBACK = "rollback"


class NotApplicable(ValueError):
    """A person's action that does not apply to the rollout's state (the API answers 409)."""


@dataclass(frozen=True)
class ActionRecord:
    action: str
    actor: str
    reason: str
    at: float
    wave: str | None = None
    cluster: str | None = None


@dataclass(frozen=True)
class Rollout:
    bundle: str
    revision: str
    spec: model.RolloutSpec
    members: Members  # any mapping of cluster name to Member is taken (and indexed)
    started_at: float
    updated_at: float
    phase: Phase = Phase.PROGRESSING
    wave: int = 0  # index of the current wave in spec.waves
    reason: str = ""
    paused: bool = False
    approved: frozenset[str] = frozenset()  # names of waves a person approved
    soak_until: float | None = None
    actions: tuple[ActionRecord, ...] = ()
    author: str | None = None
    failures: tuple[str, ...] = field(default=())  # clusters whose failure halted the rollout

    def __post_init__(self) -> None:
        if not isinstance(self.members, Members):
            object.__setattr__(self, "members", Members(self.members))

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    @property
    def wave_name(self) -> str:
        return self.spec.waves[self.wave].name

    def in_wave(self, index: int) -> list[Member]:
        """The members of wave `index` in name order."""
        return self.members.in_wave(index)


@dataclass(frozen=True)
class Membership:
    """Which clusters each wave holds, in wave order; `errors` maps a cluster no wave could judge (a CEL
    error) or none selects to the message. Clusters in `errors` are in no wave."""

    waves: tuple[tuple[str, tuple[str, ...]], ...]
    errors: Mapping[str, str]


@dataclass(frozen=True)
class Step:
    rollout: Rollout
    start: tuple[str, ...] = ()  # clusters put in flight now: apply the rollout's revision to them


# ----------------------------------------------------------------------------------------------------------
# Membership.

Selector = Callable[[model.Placement, str], "tuple[bool, str | None]"]


def membership(spec: model.RolloutSpec, placed: Sequence[str], *, select: Selector) -> Membership:
    """Each placed cluster in the first wave whose placement selects it (absent: every remaining cluster).

    `select(placement, cluster)` answers (selected, error message or None) with placement's own rules.
    """
    remaining = sorted(placed)
    waves: list[tuple[str, tuple[str, ...]]] = []
    errs: dict[str, str] = {}
    for wave in spec.waves:
        taken: list[str] = []
        for cluster in remaining:
            if cluster in errs:
                continue
            if wave.placement is None:
                taken.append(cluster)
                continue
            held, error = select(wave.placement, cluster)
            if error:
                errs[cluster] = f"rollout wave {wave.name}: {error}"
            elif held:
                taken.append(cluster)
        remaining = [c for c in remaining if c not in taken and c not in errs]
        waves.append((wave.name, tuple(taken)))
    for cluster in remaining:
        errs[cluster] = f"no wave of spec.rollout selects cluster {cluster}"
    return Membership(waves=tuple(waves), errors=dict(sorted(errs.items())))


# ----------------------------------------------------------------------------------------------------------
# Starting, superseding.


def start(
    *,
    bundle: str,
    revision: str,
    spec: model.RolloutSpec,
    waves: Sequence[tuple[str, Sequence[str]]],
    from_revisions: Mapping[str, str | None],
    unchanged: Collection[str] = (),
    now: float,
    author: str | None = None,
) -> Rollout:
    """A new rollout of `revision`. `waves` comes from `membership` (names in the spec's order).

    Clusters in `unchanged` render the same objects at `revision` as at what they hold: they move at once,
    with nothing to write, and count as Done.
    """
    names = [w.name for w in spec.waves]
    if [name for name, _ in waves] != names:
        raise ValueError(f"rollout of {bundle}: waves {[n for n, _ in waves]} do not match the spec {names}")
    members: dict[str, Member] = {}
    for index, (_, clusters) in enumerate(waves):
        for cluster in clusters:
            m = Member(cluster=cluster, wave=index, from_revision=from_revisions.get(cluster))
            if cluster in unchanged:
                m = replace(m, phase=ClusterPhase.DONE, started_at=now, applied_at=now, healthy_since=now)
            members[cluster] = m
    return Rollout(
        bundle=bundle,
        revision=revision,
        spec=spec,
        members=Members(members),
        started_at=now,
        updated_at=now,
        author=author,
    )


def supersede(r: Rollout, *, by: str, now: float) -> Rollout:
    """A newer revision of the bundle replaces this rollout (fix forward). Idempotent on terminal ones."""
    if r.terminal:
        return r
    return replace(r, phase=Phase.SUPERSEDED, reason=f"superseded by revision {by[:12]}", updated_at=now)


# ----------------------------------------------------------------------------------------------------------
# What a cluster holds.


def governs(r: Rollout, cluster: str) -> bool:
    """True when this rollout decides which revision of the bundle `cluster` holds."""
    m = r.members.get(cluster)
    return m is not None and m.phase is not ClusterPhase.REMOVED


def target(r: Rollout, cluster: str) -> str | None:
    """The revision of the bundle `cluster` must hold under this rollout (None: none of it). Only for
    clusters it `governs`."""
    m = r.members[cluster]
    if m.moved:
        return m.from_revision if r.phase is Phase.ROLLED_BACK else r.revision
    return m.from_revision


# ----------------------------------------------------------------------------------------------------------
# Observations.


def _member(r: Rollout, cluster: str) -> Member | None:
    return r.members.get(cluster)


def _with(r: Rollout, m: Member, *, now: float) -> Rollout:
    return replace(r, members=r.members.put(m), updated_at=now)


def _fail(m: Member, reason: FailReason, message: str) -> Member:
    return replace(m, phase=ClusterPhase.FAILED, reason=reason, message=message, healthy_since=None)


def applied(
    r: Rollout,
    cluster: str,
    *,
    now: float,
    ok: bool,
    message: str = "",
    unreachable: bool = False,
    retriable: bool = False,
) -> Rollout:
    """The apply of this rollout's revision to `cluster` finished: `ok`, refused (`ok=False`: the cluster
    fails with reason apply), refused in a way a retry can fix (`retriable=True`: a race on fleet's own
    records, a 429/5xx or timeout past the request's retry budget; it stays in flight, its rounds retried,
    until its deadline, then fails with reason apply), or the cluster could not be reached
    (`unreachable=True`: it stays in flight until its deadline, then fails with reason unreachable)."""
    m = _member(r, cluster)
    if r.terminal or m is None or m.phase is not ClusterPhase.PROGRESSING:
        return r  # stale: the rollout moved on
    if ok:
        m = replace(m, applied_at=now, unreachable_since=None, retrying_since=None, message="")
    elif unreachable:
        m = replace(m, unreachable_since=m.unreachable_since or now, retrying_since=None, message=message)
    elif retriable:
        m = replace(m, retrying_since=m.retrying_since or now, unreachable_since=None, message=message)
    else:
        m = _fail(m, FailReason.APPLY, message)
    return _with(r, m, now=now)


def health(
    r: Rollout, cluster: str, *, now: float, verdict: Verdict, observed_at: float, message: str = ""
) -> Rollout:
    """Health of the bundle's objects on `cluster`, observed at `observed_at` on objects at this revision.

    An observation older than this revision's apply never counts (an old Healthy never advances a
    rollout). A Healthy cluster that turns Progressing while its wave soaks is back in flight with a new
    deadline, and the soak starts again once it is healthy; Degraded fails it.
    """
    m = _member(r, cluster)
    if r.terminal or m is None or m.applied_at is None or observed_at < m.applied_at:
        return r
    if m.phase is ClusterPhase.PROGRESSING:
        if verdict is Verdict.HEALTHY:
            m = replace(m, phase=ClusterPhase.HEALTHY, healthy_since=observed_at, unreachable_since=None)
        elif verdict is Verdict.DEGRADED:
            m = _fail(m, FailReason.DEGRADED, message)
        else:
            return r
    elif m.phase is ClusterPhase.HEALTHY and m.wave == r.wave:
        if verdict is Verdict.HEALTHY:
            return r
        if verdict is Verdict.DEGRADED:
            m = _fail(m, FailReason.DEGRADED, message)
        else:
            deadline = now + r.spec.progress_deadline
            m = replace(m, phase=ClusterPhase.PROGRESSING, healthy_since=None, deadline_at=deadline)
    else:
        return r
    return _with(r, m, now=now)


def observe_round(
    r: Rollout,
    cluster: str,
    *,
    state: model.State,
    degraded: bool = False,
    retriable: bool = False,
    message: str = "",
    now: float,
) -> Rollout:
    """What one round that reconciled `cluster` to this rollout's revision saw of the bundle there, in the
    words of a bundle's status: Synced (applied and healthy), Progressing (applied, not healthy yet),
    Failed (a write refused; `retriable`: every failed write is one a retry can fix, the cluster stays in
    flight until its deadline; `degraded`: an object unhealthy for good), Unreachable. The one rule
    `fleet serve` and `fleet sync --waves` both follow (docs/rollouts.md, "Which failures are retried")."""
    m = _member(r, cluster)
    if r.terminal or m is None or m.phase not in (ClusterPhase.PROGRESSING, ClusterPhase.HEALTHY):
        return r
    if state is model.State.UNREACHABLE:
        return applied(r, cluster, now=now, ok=False, unreachable=True, message=message)
    if state is model.State.FAILED and not degraded:
        return applied(r, cluster, now=now, ok=False, retriable=retriable, message=message)
    verdicts = {
        model.State.SYNCED: Verdict.HEALTHY,
        model.State.PROGRESSING: Verdict.PROGRESSING,
        model.State.FAILED: Verdict.DEGRADED,
    }
    if state not in verdicts:
        return r  # Pending (waiting for a dependsOn bundle), Suspended, Paused: nothing to judge yet
    if m.applied_at is None or m.unreachable_since is not None or m.retrying_since is not None:
        r = applied(r, cluster, now=now, ok=True)
    return health(r, cluster, now=now, verdict=verdicts[state], observed_at=now, message=message)


def unreachable(r: Rollout, cluster: str, *, now: float, message: str) -> Rollout:
    """`cluster` could not be reached while in flight: it fails with reason unreachable at its deadline."""
    m = _member(r, cluster)
    if r.terminal or m is None or m.phase is not ClusterPhase.PROGRESSING or m.unreachable_since is not None:
        return r
    return _with(r, replace(m, unreachable_since=now, message=message), now=now)


def joined(r: Rollout, cluster: str, *, from_revision: str | None, now: float) -> Rollout:
    """A cluster placed during the rollout joins its last wave (a removed one comes back there too)."""
    m = _member(r, cluster)
    if r.terminal or (m is not None and m.phase is not ClusterPhase.REMOVED):
        return r
    last = len(r.spec.waves) - 1
    return _with(r, Member(cluster=cluster, wave=last, from_revision=from_revision), now=now)


def left(r: Rollout, cluster: str, *, now: float) -> Rollout:
    """A cluster that left the placement or the registry is Removed (not a failure)."""
    m = _member(r, cluster)
    if r.terminal or m is None or m.phase is ClusterPhase.REMOVED:
        return r
    return _with(r, replace(m, phase=ClusterPhase.REMOVED, message="left the placement"), now=now)


# ----------------------------------------------------------------------------------------------------------
# Advancing.


def _expire(r: Rollout, now: float) -> Rollout:
    floor = r.members.deadline_floor
    if floor is None or now < floor:
        return r  # no deadline has passed (the bound is never later than the earliest)
    failed: list[Member] = []
    for m in r.members.values():
        if m.phase is not ClusterPhase.PROGRESSING or m.deadline_at is None or now < m.deadline_at:
            continue
        limit = durations.show(r.spec.progress_deadline)
        if m.unreachable_since is not None:
            why = f"unreachable past the progress deadline ({limit})"
            failed.append(_fail(m, FailReason.UNREACHABLE, f"{why}: {m.message}" if m.message else why))
        elif m.retrying_since is not None:
            why = f"still failing when retried until the progress deadline ({limit})"
            failed.append(_fail(m, FailReason.APPLY, f"{why}: {m.message}" if m.message else why))
        else:
            failed.append(
                _fail(m, FailReason.DEADLINE, f"not healthy within the progress deadline ({limit})")
            )
    if not failed:
        r.members.tighten()  # the bound was a deadline of a cluster no longer in flight
        return r
    members = r.members.put(*failed)
    members.tighten()
    return replace(r, members=members, updated_at=now)


def _failed_in_wave(r: Rollout) -> list[Member]:
    if not r.members.count(r.wave, ClusterPhase.FAILED):
        return []
    return [m for m in r.in_wave(r.wave) if m.phase is ClusterPhase.FAILED]


def _size(r: Rollout, wave: int) -> int:
    """The members of `wave` that are still in the rollout (not Removed)."""
    return r.members.size(wave) - r.members.count(wave, ClusterPhase.REMOVED)


def _budget(r: Rollout) -> int:
    wave = r.spec.waves[r.wave]
    return wave.max_failures.of(_size(r, r.wave), at_least_one=False)


def _over_budget(r: Rollout) -> bool:
    return r.members.count(r.wave, ClusterPhase.FAILED) > _budget(r)


def _halt_reason(r: Rollout) -> str:
    failed = _failed_in_wave(r)
    wave = r.spec.waves[r.wave]
    detail = "; ".join(
        f"{m.cluster}: {m.reason} ({m.message})" if m.message else f"{m.cluster}: {m.reason}" for m in failed
    )
    return (
        f"wave {wave.name}: {len(failed)} cluster(s) failed, more than maxFailures {wave.max_failures} "
        f"allows: {detail}"
    )


def _roll_back(r: Rollout, *, reason: str, now: float) -> Rollout:
    return replace(r, phase=Phase.ROLLED_BACK, reason=reason, soak_until=None, updated_at=now)


def _check_failures(r: Rollout, now: float) -> Rollout:
    if r.phase is Phase.HALTED or not _over_budget(r):
        return r
    reason = _halt_reason(r)
    failures = tuple(m.cluster for m in _failed_in_wave(r))
    if r.spec.on_failure is model.OnFailure.ROLLBACK:
        return replace(_roll_back(r, reason=f"onFailure rollback: {reason}", now=now), failures=failures)
    return replace(r, phase=Phase.HALTED, reason=reason, failures=failures, soak_until=None, updated_at=now)


def advance(r: Rollout, *, now: float) -> Step:
    """Run the rollout's decisions at `now`: expire deadlines, halt on failures, finish soaks and waves,
    wait for approvals, and put clusters in flight. Returns the new rollout and the clusters started (the
    caller stores the rollout before it applies to them)."""
    if r.terminal:
        return Step(r)
    r = _check_failures(_expire(r, now), now)
    if r.phase is Phase.HALTED or r.terminal:
        return Step(r)
    started: list[str] = []
    while True:
        wave = r.spec.waves[r.wave]
        size = _size(r, r.wave)
        if not size:  # an empty wave needs neither work nor approval
            if r.wave == len(r.spec.waves) - 1:
                return Step(_set(r, Phase.COMPLETED, "every wave completed", now), tuple(started))
            r = replace(r, wave=r.wave + 1, soak_until=None, updated_at=now)
            continue
        pending = r.members.count(r.wave, ClusterPhase.PENDING)
        if pending == size and wave.approval is model.Approval.BEFORE and wave.name not in r.approved:
            return Step(
                _waiting(r, f"wave {wave.name} waits for approval before it starts", now), tuple(started)
            )
        in_flight = r.members.count(r.wave, ClusterPhase.PROGRESSING)
        limit = wave.max_concurrency.of(size, at_least_one=True)
        if pending and in_flight < limit:
            fresh = [
                replace(
                    m,
                    phase=ClusterPhase.PROGRESSING,
                    started_at=now,
                    applied_at=None,
                    deadline_at=now + r.spec.progress_deadline,
                )
                for m in r.members.pending(r.wave, limit - in_flight)
            ]
            started.extend(m.cluster for m in fresh)
            r = replace(r, members=r.members.put(*fresh), updated_at=now)
            pending -= len(fresh)
            in_flight += len(fresh)
        if pending or in_flight:
            return Step(_set(r, Phase.PROGRESSING, f"wave {wave.name} in progress", now), tuple(started))
        healthy = r.members.memo(("healthy", r.wave), _healthy_of(r.wave))
        if wave.soak > 0 and healthy:
            until = max(m.healthy_since or now for m in healthy) + wave.soak
            if now < until:
                r = replace(r, soak_until=until)
                return Step(_set(r, Phase.SOAKING, f"wave {wave.name} soaks", now), tuple(started))
        if healthy:
            done = [replace(m, phase=ClusterPhase.DONE) for m in healthy]
            r = replace(r, members=r.members.put(*done), soak_until=None, updated_at=now)
        if wave.approval is model.Approval.AFTER and wave.name not in r.approved:
            return Step(
                _waiting(r, f"wave {wave.name} waits for approval after it completed", now), tuple(started)
            )
        if r.wave == len(r.spec.waves) - 1:
            return Step(_set(r, Phase.COMPLETED, "every wave completed", now), tuple(started))
        r = replace(r, wave=r.wave + 1, soak_until=None, updated_at=now)


def _healthy_of(wave: int) -> Callable[[Members], list[Member]]:
    """The Healthy members of `wave` (looked for once per members: a soaking wave is advanced often)."""

    def healthy(members: Members) -> list[Member]:
        if not members.count(wave, ClusterPhase.HEALTHY):
            return []
        return [m for m in members.in_wave(wave) if m.phase is ClusterPhase.HEALTHY]

    return healthy


def _set(r: Rollout, phase: Phase, reason: str, now: float) -> Rollout:
    if r.phase is phase and r.reason == reason:
        return r
    return replace(r, phase=phase, reason=reason, updated_at=now)


def _waiting(r: Rollout, reason: str, now: float) -> Rollout:
    return _set(r, Phase.WAITING_APPROVAL, reason, now)


def next_wake(r: Rollout) -> float | None:
    """When `advance` must run again if no event comes first: the earliest progress deadline of a cluster
    in flight, or the end of the current soak. None: only events move this rollout.

    It may be earlier than the earliest deadline, never later: the deadline bound of the members' index,
    which can be the deadline of a cluster that has left flight since; `advance` then finds nothing due
    and tightens the bound to the earliest deadline of the clusters still in flight."""
    if r.terminal:
        return None
    times = [t for t in (r.members.deadline_floor,) if t is not None]
    if r.phase is Phase.SOAKING and r.soak_until is not None:
        times.append(r.soak_until)
    return min(times) if times else None


# ----------------------------------------------------------------------------------------------------------
# A person's actions.


def act(
    r: Rollout,
    action: Action,
    *,
    actor: str,
    reason: str = "",
    now: float,
    wave: str | None = None,
    cluster: str | None = None,
) -> Rollout:
    """Apply a person's action, recorded with its time, actor and reason; `NotApplicable` (409) when it
    does not apply to the rollout's state. The caller runs `advance` afterwards."""
    record = ActionRecord(action=str(action), actor=actor, reason=reason, at=now, wave=wave, cluster=cluster)
    done = _ACTIONS[action](r, now=now, actor=actor, reason=reason, wave=wave, cluster=cluster)
    return replace(done, actions=(*done.actions, record), updated_at=now)


def _refuse(r: Rollout, action: str, why: str) -> NotApplicable:
    return NotApplicable(f"rollout of {r.bundle} at {r.revision[:12]} is {r.phase}: cannot {action}: {why}")


def _pause(r: Rollout, *, now: float, actor: str, reason: str, **_: Any) -> Rollout:
    if r.terminal or r.paused:
        raise _refuse(r, "pause", "it is already paused" if r.paused else "it has ended")
    why = f"paused by {actor}" + (f": {reason}" if reason else "")
    return replace(r, phase=Phase.HALTED, paused=True, reason=why, soak_until=None)


def _resume(r: Rollout, *, now: float, **_: Any) -> Rollout:
    if r.phase is not Phase.HALTED:
        raise _refuse(r, "resume", "only a halted or paused rollout resumes")
    members = r.members.put(
        *(  # the failures that halted it get another try
            Member(cluster=m.cluster, wave=m.wave, from_revision=m.from_revision) for m in _failed_in_wave(r)
        )
    )
    return replace(r, members=members, phase=Phase.PROGRESSING, paused=False, reason="resumed", failures=())


def _approve(r: Rollout, *, wave: str | None, **_: Any) -> Rollout:
    if r.terminal:
        raise _refuse(r, "approve", "it has ended")
    name = wave or (r.wave_name if r.phase is Phase.WAITING_APPROVAL else None)
    if name is None:
        raise _refuse(r, "approve", "no wave waits for approval; name one with --wave")
    spec = next((w for w in r.spec.waves if w.name == name), None)
    if spec is None:
        raise _refuse(r, "approve", f"it has no wave {name!r}")
    if spec.approval is model.Approval.NONE:
        raise _refuse(r, "approve", f"wave {name} needs no approval")
    if name in r.approved:
        raise _refuse(r, "approve", f"wave {name} is already approved")
    index = [w.name for w in r.spec.waves].index(name)
    if index < r.wave:
        raise _refuse(r, "approve", f"wave {name} has already completed")
    started = r.members.count(index, ClusterPhase.PENDING) < r.members.size(index)
    if index == r.wave and spec.approval is model.Approval.BEFORE and started:
        raise _refuse(r, "approve", f"wave {name} has already started")
    return replace(r, approved=r.approved | {name})


def _skip(r: Rollout, *, cluster: str | None, now: float, actor: str, reason: str, **_: Any) -> Rollout:
    if r.terminal:
        raise _refuse(r, "skip", "it has ended")
    m = r.members.get(cluster or "")
    if m is None:
        raise _refuse(r, "skip", f"cluster {cluster!r} is not in it")
    if m.phase in (ClusterPhase.DONE, ClusterPhase.SKIPPED, ClusterPhase.REMOVED):
        raise _refuse(r, "skip", f"cluster {m.cluster} is already {m.phase}")
    why = f"skipped by {actor}" + (f": {reason}" if reason else "")
    r = _with(r, replace(m, phase=ClusterPhase.SKIPPED, reason=None, message=why), now=now)
    if r.phase is Phase.HALTED and not r.paused and not _over_budget(r):
        r = replace(r, phase=Phase.PROGRESSING, reason=f"halt lifted: {why}", failures=())
    return r


def _abort(r: Rollout, *, actor: str, reason: str, **_: Any) -> Rollout:
    if r.terminal:
        raise _refuse(r, "abort", "it has ended")
    why = f"aborted by {actor}" + (f": {reason}" if reason else "")
    return replace(r, phase=Phase.ABORTED, reason=why, soak_until=None)


def _rollback(r: Rollout, *, now: float, actor: str, reason: str, **_: Any) -> Rollout:
    if r.phase in (Phase.SUPERSEDED, Phase.ABORTED, Phase.ROLLED_BACK):
        raise _refuse(r, "rollback", "it has ended")
    why = f"rolled back by {actor}" + (f": {reason}" if reason else "")
    return _roll_back(r, reason=why, now=now)


_ACTIONS: dict[Action, Callable[..., Rollout]] = {
    Action.PAUSE: _pause,
    Action.RESUME: _resume,
    Action.APPROVE: _approve,
    Action.SKIP: _skip,
    Action.ABORT: _abort,
    Action.ROLLBACK: _rollback,
}
