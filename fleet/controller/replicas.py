"""A replica's coordination loop: the I/O half of `fleet.core.coordination` (docs/scaling.md).

Owns: `Replica`, one task that every retry period reads the instance's leases from the management cluster,
folds them in, takes the tick's decision and sends its writes through the Lease client
(`fleet.clients.management`) in the decision's order: its replica lease first, and the other renewals and
acquisitions only when that write succeeded; releases after letting the shard go (it is no longer
`writable`) and after `before_release` has drained the shard's writes in flight; deletions of dead
replicas' leases when it coordinates. The view the rest of the controller asks at any moment, on the
replica's monotonic clock: `writable` (shards it may write to now), `deadline` (when it must have
stopped writing to a shard), `fence` (what it writes on inventories), `coordinating`, `holders` (who
holds every shard, as last read); and `raise_epoch`, asked when a round met a fence of a higher epoch of
a lease it holds (the Lease was deleted and created again): its next renewal of that lease lifts the
epoch above the fence (`leases.raising`). `stop` (SIGTERM):
it writes nothing more, gives every lease up and `run` returns. `new_identity`: a replica id unique per
process.

Does not: decide (`fleet.core.coordination`), reconcile clusters (the engine asks `writable` before a
round, cancels writes at `deadline`, and fences inventories with `fence`), or parse flags.
"""

from __future__ import annotations

import logging
import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import anyio

from fleet.clients import management
from fleet.core import coordination, errors, fencing, leases

log = logging.getLogger("fleet.replicas")

_ALPHABET = string.ascii_lowercase + string.digits


def new_identity(host: str) -> str:
    """A replica id for this process: the host name made a DNS label (at most 34 characters) and 5 random
    characters, so a restarted process never takes its predecessor for itself."""
    base = re.sub(r"[^a-z0-9-]+", "-", host.lower()).strip("-")[:34].strip("-") or "fleet"
    return leases.check_replica_id(f"{base}-{''.join(secrets.choice(_ALPHABET) for _ in range(5))}")


class Replica:
    """One replica's leases, kept by `run`."""

    def __init__(
        self,
        client: management.Leases,
        config: coordination.Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        before_release: Callable[[int], Awaitable[None]] | None = None,
        on_change: Callable[[frozenset[int]], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        write_limit: int = 8,
    ) -> None:
        self.client = client
        self.config = config
        self.state = coordination.State()
        self.decision: coordination.Decision | None = None
        self._clock = clock
        self._wall = wall
        self._before_release = before_release
        self._on_change = on_change
        self._on_tick = on_tick
        self._limit = anyio.CapacityLimiter(max(1, write_limit))
        self._wake = anyio.Event()
        self._owned: frozenset[int] = frozenset()
        self._prepared = False
        self._raise: dict[str, int] = {}  # lease -> the epoch of a fence its next renewal lifts it above

    def attach(
        self,
        *,
        before_release: Callable[[int], Awaitable[None]],
        on_change: Callable[[frozenset[int]], None],
        on_tick: Callable[[], None],
    ) -> None:
        """The controller's hooks: drain a shard's writes before its release, hear of the writable shards
        changing, and after every tick move its writes' deadlines (`deadline`)."""
        self._before_release, self._on_change, self._on_tick = before_release, on_change, on_tick

    @property
    def shards(self) -> int:
        return self.config.shards

    # -- what the controller asks ------------------------------------------------------------------

    def _shard(self, name: str) -> int | None:
        shard = leases.shard_of_lease(name, instance=self.config.instance)
        return shard if shard is not None and shard < self.config.shards else None

    def writable(self) -> frozenset[int]:
        """The shards whose clusters this replica may write to now."""
        if self.state.draining:
            return frozenset()
        now = self._clock()
        out = set()
        for name, held in self.state.held.items():
            shard = self._shard(name)
            if shard is not None and leases.may_write(held, now=now, timings=self.config.timings):
                out.add(shard)
        return frozenset(out)

    def deadline(self, shard: int) -> float | None:
        """When (monotonic clock) writes to `shard` must have stopped; None when it may not write now."""
        held = self.state.held.get(self.config.shard_lease(shard))
        if held is None or self.state.draining:
            return None
        until = leases.writable_until(held, self.config.timings)
        return until if self._clock() < until else None

    def fence(self, shard: int) -> fencing.Fence | None:
        """The fence of writes to `shard`'s clusters (None when it may not write to them now)."""
        name = self.config.shard_lease(shard)
        held = self.state.held.get(name)
        if held is None or self.deadline(shard) is None:
            return None
        return fencing.Fence(lease=name, epoch=held.epoch)

    def holders(self) -> dict[int, str | None]:
        """Shard -> the replica holding its lease, as this replica last read the leases (the whole
        instance); None for a shard no live lease holds (free, released or expired)."""
        now = self._clock()
        out: dict[int, str | None] = dict.fromkeys(range(self.config.shards))
        for name, seen in self.state.seen.items():
            shard = self._shard(name)
            if shard is not None and seen.record is not None and leases.live(seen, now=now):
                out[shard] = seen.record.holder
        return out

    def coordinating(self) -> bool:
        held = self.state.held.get(self.config.coordinator_lease)
        return (
            not self.state.draining
            and held is not None
            and leases.may_write(held, now=self._clock(), timings=self.config.timings)
        )

    def raise_epoch(self, shard: int, above: int) -> None:
        """A round on one of `shard`'s clusters met a fence of epoch `above` of the shard's lease, higher
        than the epoch this replica holds: renew the lease at once with its epoch lifted above it. The
        renewal is an update over the version held, so only the holder's lands; a stale replica's gets a
        409 and it loses the lease (`fleet.core.fencing`)."""
        name = self.config.shard_lease(shard)
        held = self.state.held.get(name)
        if held is not None and above >= held.epoch:
            self._raise[name] = max(above, self._raise.get(name, 0))
            self._wake.set()

    def stop(self) -> None:
        """Drain: write nothing more, give every lease up, then `run` returns."""
        self.state = coordination.draining(self.state)
        self._changed()
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick until drained (`stop`)."""
        while True:
            await self.tick()
            if self.state.draining and not self.state.held:
                log.info(
                    "replica %s: drained (every lease released, or left to expire where a release failed)",
                    self.config.me,
                )
                return
            wake_at = self.decision.wake_at if self.decision is not None else self._clock()
            wait = min(wake_at, self._clock() + self.config.timings.retry) - self._clock()
            with anyio.move_on_after(max(wait, 0.001)):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def tick(self) -> None:
        """Read, decide, write: one retry period's work."""
        cfg = self.config
        if not self._prepared:
            try:
                await self.client.prepare()
                self._prepared = True
            except errors.FleetError as e:
                log.warning("replica %s: cannot prepare namespace %s: %s", cfg.me, leases.NAMESPACE, e)
        try:
            records = await self.client.read()
        except errors.FleetError as e:  # unknown, never empty: decide on what was known before
            log.warning("replica %s: cannot read the leases: %s", cfg.me, e)
        else:
            self.state = coordination.observe(cfg, self.state, records, now=self._clock())
        self._changed()
        decision = coordination.decide(cfg, self.state, now=self._clock())
        self.decision = decision
        if decision.waiting and decision.live:
            log.debug("replica %s: %s", cfg.me, decision.waiting)
        lifts = [
            n
            for n in self._raise
            if n in self.state.held and n not in decision.renew and n not in decision.release
        ]
        writes = [
            (n, n in decision.renew or n in lifts) for n in (*decision.renew, *lifts, *decision.acquire)
        ]
        first = [w for w in writes if w[0] == cfg.replica_lease]
        ok = True
        for name, renew in first:
            ok = await self._write(name, renew=renew)
        if ok:
            async with anyio.create_task_group() as tg:
                for name, renew in writes:
                    if name != cfg.replica_lease:
                        tg.start_soon(self._limited_write, name, renew)
        self._changed()
        for name in decision.release:
            await self._release(name)
        self._changed()
        for name in decision.forget:
            seen = self.state.seen.get(name)
            if seen is None or seen.record is None:
                continue
            try:
                if await self.client.delete(seen.record):
                    self.state = coordination.forgotten(self.state, name)
                    log.info("replica %s: deleted the lease of dead replica %s", cfg.me, name)
            except errors.FleetError as e:
                log.warning("replica %s: cannot delete lease %s: %s", cfg.me, name, e)
        if self._on_tick is not None:
            self._on_tick()

    async def _limited_write(self, name: str, renew: bool) -> None:
        async with self._limit:
            await self._write(name, renew=renew)

    async def _write(self, name: str, *, renew: bool, again: bool = True) -> bool:
        cfg = self.config
        seen = self.state.seen.get(name)
        current = seen.record if seen is not None else None
        held = self.state.held.get(name)
        if renew:
            if held is None or current is None:
                return False
            above = self._raise.pop(name, None)
            if above is not None:
                log.info(
                    "replica %s: lifting the epoch of lease %s above %d (a fence met)", cfg.me, name, above
                )
                record = leases.raising(
                    replace(current, version=held.version),
                    above=above,
                    wall=self._wall(),
                    timings=cfg.timings,
                )
            else:
                record = leases.renewing(
                    replace(current, version=held.version), wall=self._wall(), timings=cfg.timings
                )
        else:
            announce = cfg.announcement if name == cfg.replica_lease else None
            record = leases.acquiring(
                current, name=name, me=cfg.me, wall=self._wall(), timings=cfg.timings, annotations=announce
            )
        sent = self._clock()
        try:
            answer = await self.client.write(record, role=cfg.role(name))
        except errors.FleetError as e:  # unknown outcome: the next read tells
            log.warning("replica %s: lease %s not written: %s", cfg.me, name, e)
            return False
        if answer is None and held is not None:
            mine = await self._reread(name, held, record)
            if mine is None:  # unknown: kept as it is until the next read tells
                return False
            if mine:
                return await self._write(name, renew=True, again=False) if again else False
        if answer is None:
            self.state = coordination.refused(cfg, self.state, name)
            if held is not None:
                log.warning("replica %s: lost lease %s (another replica wrote it)", cfg.me, name)
            return False
        self.state = coordination.wrote(cfg, self.state, answer, sent=sent, now=self._clock())
        if held is None:
            log.info("replica %s: acquired lease %s (epoch %d)", cfg.me, name, answer.transitions)
        return True

    async def _reread(self, name: str, held: leases.Held, sent: leases.Record) -> bool | None:
        """A write of `sent` over lease `held` met a conflict: read the lease again. True when the conflict
        was this replica's own write whose answer was lost (the client's retry met it): the lease is
        adopted at the version read, its epoch and deadline kept (`coordination.adopted`). False when
        another replica wrote it; None when it cannot be read (unknown)."""
        cfg = self.config
        try:
            current = await self.client.get(name)
        except errors.FleetError as e:
            log.warning("replica %s: lease %s met a conflict and cannot be read again: %s", cfg.me, name, e)
            return None
        if not coordination.own_write(cfg, held, sent, current):
            return False
        assert current is not None
        self.state = coordination.adopted(cfg, self.state, current, now=self._clock())
        log.info(
            "replica %s: lease %s met its own write (an answer lost): kept at epoch %d",
            cfg.me,
            name,
            current.transitions,
        )
        return True

    async def _release(self, name: str) -> None:
        cfg = self.config
        seen = self.state.seen.get(name)
        held = self.state.held.get(name)
        self.state = coordination.letting_go(cfg, self.state, name)
        self._changed()
        shard = self._shard(name)
        if shard is not None and self._before_release is not None:
            await self._before_release(shard)  # the shard's writes in flight end before anyone may take it
        if held is None or seen is None or seen.record is None:
            return
        record = leases.releasing(replace(seen.record, version=held.version), wall=self._wall())
        try:
            answer = await self.client.write(record, role=cfg.role(name))
        except errors.FleetError as e:
            log.warning("replica %s: release of lease %s not sent: %s (it expires instead)", cfg.me, name, e)
            return
        if answer is not None:
            self.state = coordination.wrote(cfg, self.state, answer, sent=self._clock(), now=self._clock())
            log.info("replica %s: released lease %s", cfg.me, name)

    def _changed(self) -> None:
        owned = self.writable()
        if owned != self._owned:
            self._owned = owned
            if self._on_change is not None:
                self._on_change(owned)
