"""Coordination of replicas: what one replica does with the leases it sees, tick by tick (pure).

Owns: a replica's knowledge between ticks (`State`: every lease of its instance as it saw them, the
leases it holds, whether it is draining), folding in what it read (`observe`) and what its writes
answered (`wrote`, `refused`; a conflict that was its own write whose answer was lost, `own_write` and
`adopted`), and the decision of a tick (`decide` -> `Decision`): which leases to create,
renew, acquire, release or delete, which shards it may write to now, whether it may take rollout
decisions (the coordinator lease), and when to look again. Every time is this replica's monotonic clock,
passed in; nothing here reads a clock or sends a request.

Does not: name clusters (a cluster's shard is `fleet.core.sharding.shard_of`), talk to the management
cluster (the lease client does), or fence writes on clusters (`fleet.core.fencing`).

The rules (docs/scaling.md):

* A replica takes part once its replica lease ``<instance>-replica-<id>`` is written (renewed like any
  lease). The **live replicas** are those whose replica lease it sees held and unexpired, itself
  included while it may write under its own; the shards are assigned over them (`sharding.assign`), keeping
  each shard with its live holder where the bounds allow.
* It **acquires** a shard assigned to it once the shard's lease is free (absent, released, or expired as
  it saw it: `leases.free_at`), and only after its own registration is one retry period old (so the others
  have seen it and agree on the assignment). A lease is written with optimistic concurrency: two replicas
  cannot both win it.
* It **renews** each lease it holds every retry period, replica lease first (so others never see its
  shards outlive its liveness), and **releases** a held shard the assignment gives to another (handover:
  the runtime stops writing to that shard's clusters before sending the release).
* It **writes** to a shard's clusters only while it holds the lease and has renewed it within the renew
  deadline (`leases.may_write`); past it, it stops until a renewal succeeds (or finds the lease lost).
* The **coordinator lease** is taken by any live replica that finds it free, and kept (rollout decisions
  stay with one replica); `coordinating` follows the same deadline rule.
* **Draining** (SIGTERM): it stops writing at once, releases every shard and the coordinator lease, then
  its replica lease, so the others take over within a retry period instead of a lease duration.
* Replicas that announce another shard count or load factor on their replica lease would assign shards
  differently: while one is live, nobody acquires (what is held is kept), and `Decision.waiting` says so.
* The coordinator deletes replica leases that have been free for ten lease durations (replicas that
  died): over the version it saw, so a replica that came back is never deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from fleet.core import leases, sharding

FORGET_AFTER = 10  # lease durations a dead replica's lease stays before the coordinator deletes it


@dataclass(frozen=True)
class Config:
    """One replica's settings. `me` is its identity: unique per process (a restarted process is another
    replica), so a lease naming `me` as holder was written by this process."""

    instance: str
    me: str
    shards: int = sharding.DEFAULT_SHARDS
    load_factor: float = sharding.DEFAULT_LOAD_FACTOR
    timings: leases.Timings = field(default_factory=leases.Timings)

    def __post_init__(self) -> None:
        leases.check_replica_id(self.me)
        sharding.check_shards(self.shards)
        sharding.check_load_factor(self.load_factor)

    @property
    def replica_lease(self) -> str:
        return leases.replica_lease(instance=self.instance, replica=self.me)

    @property
    def coordinator_lease(self) -> str:
        return leases.coordinator_lease(instance=self.instance)

    def shard_lease(self, shard: int) -> str:
        return leases.shard_lease(instance=self.instance, shard=shard)

    @property
    def announcement(self) -> dict[str, str]:
        """What this replica's lease announces: the settings the assignment depends on."""
        return {
            leases.ANNOTATION_SHARDS: str(self.shards),
            leases.ANNOTATION_LOAD_FACTOR: f"{self.load_factor:g}",
        }

    def role(self, name: str) -> str:
        if name == self.coordinator_lease:
            return leases.Role.COORDINATOR
        if leases.replica_of_lease(name, instance=self.instance) is not None:
            return leases.Role.REPLICA
        return leases.Role.SHARD


@dataclass(frozen=True)
class State:
    """What one replica knows: every lease of its instance as last read (`seen`, by name), the leases it
    holds (`held`, by name), when its current registration began (`registered`: None while it holds no
    replica lease), and whether it is `draining`."""

    seen: Mapping[str, leases.Seen] = field(default_factory=dict)
    held: Mapping[str, leases.Held] = field(default_factory=dict)
    registered: float | None = None
    draining: bool = False
    read_at: float | None = None  # when it last read every lease (None: never; nothing is acquired)


def observe(config: Config, state: State, records: Mapping[str, leases.Record], *, now: float) -> State:
    """Fold in a complete read of the instance's leases at `now` (a lease missing from `records` is
    absent). A held lease the read shows changed by someone else, or gone, is lost; one that shows this
    replica as holder at another version (an answer it never got) is adopted at that version, without
    extending its deadline."""
    seen = {name: leases.observe(state.seen.get(name), rec, now=now) for name, rec in records.items()}
    for name, old in state.seen.items():
        if name not in records:
            seen[name] = leases.observe(old, None, now=now)
    held = dict(state.held)
    for name, h in state.held.items():
        rec = records.get(name)
        if rec is None or rec.holder != config.me:
            if rec is None or rec.version != h.version:
                del held[name]
        elif rec.version != h.version:
            held[name] = replace(h, version=rec.version, epoch=rec.transitions)
    registered = state.registered if config.replica_lease in held else None
    return replace(state, seen=seen, held=held, registered=registered, read_at=now)


def wrote(config: Config, state: State, record: leases.Record, *, sent: float, now: float) -> State:
    """Fold in a successful create or update of a lease, sent at `sent`, answered with `record` at `now`."""
    seen = {**state.seen, record.name: leases.Seen(record=record, since=now)}
    held = dict(state.held)
    registered = state.registered
    if record.holder == config.me:
        held[record.name] = leases.Held(
            name=record.name, epoch=record.transitions, version=record.version, sent=sent
        )
        if record.name == config.replica_lease and registered is None:
            registered = sent
    else:
        held.pop(record.name, None)
        if record.name == config.replica_lease:
            registered = None
    return replace(state, seen=seen, held=held, registered=registered)


def refused(config: Config, state: State, name: str) -> State:
    """Fold in a write of lease `name` refused by a conflict (409: another replica wrote it first, or it
    exists already): it is not held any more; the next read says by whom."""
    held = {k: v for k, v in state.held.items() if k != name}
    registered = state.registered if name != config.replica_lease else None
    return replace(state, held=held, registered=registered)


def own_write(config: Config, held: leases.Held, sent: leases.Record, current: leases.Record | None) -> bool:
    """Whether `current`, read after a write of `sent` over lease `held` met a conflict (409), is this
    replica's own write: the write (or an earlier one) landed and its answer was lost, so the client's
    retry met it. So it is when `current` still names this replica as holder (its identity is unique
    per process) at the epoch it holds, or at the epoch `sent` lifted it to; anything else is another
    replica's write."""
    return (
        current is not None
        and current.name == held.name
        and current.holder == config.me
        and current.transitions in (held.epoch, sent.transitions)
    )


def adopted(config: Config, state: State, record: leases.Record, *, now: float) -> State:
    """Fold in `record`, a lease this replica holds as changed by a write of its own whose answer it never
    got (`own_write`): still held, at `record`'s version and epoch, with its deadline unchanged (that write
    was sent after the last one answered, so the deadline it had is the earlier, safe one)."""
    held = state.held.get(record.name)
    if held is None or record.holder != config.me:
        return state
    seen = {**state.seen, record.name: leases.observe(state.seen.get(record.name), record, now=now)}
    mine = replace(held, version=record.version, epoch=record.transitions)
    return replace(state, seen=seen, held={**state.held, record.name: mine})


def letting_go(config: Config, state: State, name: str) -> State:
    """The replica is about to send the release of lease `name`: from now on it holds it no more (writes
    under it have stopped before this is called). Whether the release lands or not, the next read tells:
    a lease still naming this replica is taken back only if the assignment gives it to it again."""
    held = {k: v for k, v in state.held.items() if k != name}
    registered = state.registered if name != config.replica_lease else None
    return replace(state, held=held, registered=registered)


def forgotten(state: State, name: str) -> State:
    """Fold in the deletion of lease `name`."""
    seen = {k: v for k, v in state.seen.items() if k != name}
    return replace(state, seen=seen)


def draining(state: State) -> State:
    """The replica is shutting down: it writes nothing more and gives everything up."""
    return replace(state, draining=True)


@dataclass(frozen=True)
class Decision:
    """What a replica does this tick, in this order: `renew`, `acquire` (a lease this replica saw absent is
    created, any other updated over the version it saw), `release`, `forget` (delete over the version
    seen). Its own replica lease comes first in `renew` or `acquire`; when that write fails, the runtime
    sends none of the others this tick (its shards never outlive its liveness in others' eyes).
    `writable` are the shards whose clusters it may write to now; `coordinating` whether it may decide
    rollouts; `wake_at` when to tick again at the latest; `waiting` says why no shard is acquired, when
    something stops it."""

    assignment: sharding.Assignment
    live: tuple[str, ...]
    renew: tuple[str, ...] = ()
    acquire: tuple[str, ...] = ()
    release: tuple[str, ...] = ()
    forget: tuple[str, ...] = ()
    writable: frozenset[int] = frozenset()
    coordinating: bool = False
    wake_at: float = 0.0
    waiting: str | None = None


def live_replicas(config: Config, state: State, *, now: float) -> dict[str, Mapping[str, str]]:
    """The live replicas (id -> what their lease announces), this one included while it may write under
    its replica lease and is not draining."""
    out: dict[str, Mapping[str, str]] = {}
    for name, seen in state.seen.items():
        replica = leases.replica_of_lease(name, instance=config.instance)
        if replica is None or replica == config.me or seen.record is None:
            continue
        if seen.record.holder == replica and leases.live(seen, now=now):
            out[replica] = seen.record.annotations
    mine = state.held.get(config.replica_lease)
    if not state.draining and leases.may_write(mine, now=now, timings=config.timings):
        out[config.me] = config.announcement
    return out


def holders(config: Config, state: State, *, now: float) -> dict[int, str]:
    """Who holds each shard as this replica knows it: its own held leases, and others' unexpired ones."""
    out: dict[int, str] = {}
    for name, seen in state.seen.items():
        shard = leases.shard_of_lease(name, instance=config.instance)
        if shard is None or shard >= config.shards or seen.record is None:
            continue
        if name in state.held:
            out[shard] = config.me
        elif leases.live(seen, now=now):
            out[shard] = seen.record.holder
    for name in state.held:
        shard = leases.shard_of_lease(name, instance=config.instance)
        if shard is not None and shard < config.shards:
            out[shard] = config.me
    return out


def decide(config: Config, state: State, *, now: float) -> Decision:
    """The decision of one tick at `now` (see the module docstring for the rules)."""
    t = config.timings
    mine = state.held.get(config.replica_lease)
    replicas = live_replicas(config, state, now=now)
    wakes = [now + t.retry]

    def due(h: leases.Held) -> bool:
        return now >= h.sent + 0.9 * t.retry

    if state.draining:
        # Everything goes, the replica lease last (others see it leave after its shards are free).
        others = sorted(n for n in state.held if n != config.replica_lease)
        last = (config.replica_lease,) if mine is not None else ()
        return Decision(
            assignment=sharding.Assignment(shards=config.shards, owner={}),
            live=tuple(sorted(replicas)),
            release=(*others, *last),
            wake_at=now + t.retry,
        )

    renew: list[str] = []
    acquire: list[str] = []
    if mine is None:
        acquire.append(config.replica_lease)
    elif due(mine):
        renew.append(config.replica_lease)

    disagreeing = sorted(
        r
        for r, ann in replicas.items()
        if r != config.me and any(ann.get(k) != v for k, v in config.announcement.items())
    )
    assignment = sharding.assign(
        shards=config.shards,
        live=list(replicas),
        held=holders(config, state, now=now),
        load_factor=config.load_factor,
    )
    settled = state.registered is not None and now >= state.registered + t.retry and config.me in replicas
    waiting: str | None = None
    if config.me not in replicas:
        waiting = "not registered: its replica lease is not written or not renewed within the renew deadline"
    elif disagreeing:
        waiting = (
            f"replicas {', '.join(disagreeing)} announce other settings than --shards {config.shards} "
            f"--load-factor {config.load_factor:g}: no shard is taken until every live replica agrees"
        )
    elif state.read_at is None:
        waiting = "has not read the leases yet"
    elif not settled:
        waiting = "registered less than a retry period ago: the other replicas may not have seen it yet"
        if state.registered is not None:
            wakes.append(state.registered + t.retry)

    release: list[str] = []
    writable: set[int] = set()
    for shard in range(config.shards):
        name = config.shard_lease(shard)
        held = state.held.get(name)
        ours = assignment.owner.get(shard) == config.me
        if held is not None:
            if not ours:
                release.append(name)  # handover (or it is not live in its own view: others will take it)
                continue
            if due(held):
                renew.append(name)
            if leases.may_write(held, now=now, timings=t):
                writable.add(shard)
                wakes.append(leases.writable_until(held, t))
            continue
        if not ours or waiting is not None:
            continue
        seen = state.seen.get(name)
        if seen is None or seen.record is None or seen.record.holder == config.me:
            # Absent: created. Naming this replica at a version it has not adopted: taken back over it.
            acquire.append(name)
            continue
        at = leases.free_at(seen)
        if at <= now:
            acquire.append(name)
        else:
            wakes.append(at)
    # Others' replica leases expiring change the assignment: look again then.
    for name, seen in state.seen.items():
        if leases.replica_of_lease(name, instance=config.instance) not in (None, config.me) and leases.live(
            seen, now=now
        ):
            wakes.append(leases.free_at(seen))

    coordinator = state.held.get(config.coordinator_lease)
    coordinating = False
    if coordinator is not None:
        if config.me in replicas:
            if due(coordinator):
                renew.append(config.coordinator_lease)
            coordinating = leases.may_write(coordinator, now=now, timings=t)
            if coordinating:
                wakes.append(leases.writable_until(coordinator, t))
        else:
            release.append(config.coordinator_lease)
    elif config.me in replicas and not disagreeing and state.read_at is not None:
        seen = state.seen.get(config.coordinator_lease)
        if seen is None or seen.record is None or seen.record.holder == config.me:
            acquire.append(config.coordinator_lease)
        elif (at := leases.free_at(seen)) <= now:
            acquire.append(config.coordinator_lease)
        else:
            wakes.append(at)

    forget: list[str] = []
    if coordinating:
        for name, seen in state.seen.items():
            replica = leases.replica_of_lease(name, instance=config.instance)
            if replica is None or replica == config.me or seen.record is None:
                continue
            if now >= leases.free_at(seen) + FORGET_AFTER * t.duration:
                forget.append(name)

    return Decision(
        assignment=assignment,
        live=tuple(sorted(replicas)),
        renew=tuple(renew),
        acquire=tuple(acquire),
        release=tuple(release),
        forget=tuple(sorted(forget)),
        writable=frozenset(writable),
        coordinating=coordinating,
        wake_at=min(w for w in wakes if w > now),
        waiting=waiting,
    )
