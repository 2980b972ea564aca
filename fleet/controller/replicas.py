"""A replica's coordination loop: the I/O half of `fleet.core.coordination` (docs/scaling.md).

Owns: `Replica`, whose loop every retry period reads the instance's leases from the management cluster,
folds them in, takes the tick's decision and sends its writes through the Lease client
(`fleet.clients.management`) in the decision's order: its replica lease first, and the other renewals and
acquisitions only when that write succeeded; releases (those of a tick together, the replica lease last)
after letting the shard go (it is no longer `writable`) and after `before_release` has drained the
shard's writes in flight; deletions of dead
replicas' leases when it coordinates.

That loop runs on a thread of its own with its own event loop (`run` starts it), and the Lease client is
used there only: the controller's event loop may be kept busy by rounds without making renewals late.
The controller's loop shows it is not wedged by a heartbeat (`run` keeps it); the lease thread renews and
takes leases only while the last heartbeat is at most the renew deadline old (`leases.Timings.stall`), so
a wedged controller loses its shards as a dead one would. The controller's hooks (`attach`: a drain
before a release, the writable shards changed, a tick done) run on the controller's loop, as `run` is
told of them. The view the controller asks at any moment, from any thread, on the monotonic clock (each
answer from one snapshot of the state): `writable` (shards it may write to now), `deadline` (when it must
have stopped writing to a shard), `fence` (what it writes on inventories), `coordinating`, `holders` (who
holds every shard, as last read); and `raise_epoch`, asked when a round met a fence of a higher epoch of a
lease it holds (the Lease was deleted and created again): its next renewal of that lease lifts the epoch
above the fence (`leases.raising`; a lift whose write did not land is sent again at the next renewal).
`stop` (SIGTERM): it writes nothing more at once, gives every lease up and `run` returns. A conflict (409) on a lease it holds is read again: its own write whose answer was
lost keeps the lease (`coordination.own_write`). `new_identity`: a replica id unique per process.
`Doorbell`: wakes one thread's event loop from another.

Does not: decide (`fleet.core.coordination`), reconcile clusters (the engine asks `writable` before a
round, cancels writes at `deadline`, and fences inventories with `fence`), or parse flags.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import secrets
import string
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import anyio
import anyio.abc

from fleet.clients import management
from fleet.core import coordination, errors, fencing, leases

log = logging.getLogger("fleet.replicas")

_ALPHABET = string.ascii_lowercase + string.digits
JOIN_TIMEOUT = 10.0  # seconds the controller waits for the lease thread to end once told to
CLOSE_TIMEOUT = 5.0  # seconds the lease thread gives its client to close


class Doorbell:
    """Wakes the event loop of one thread from any thread (fleet's loops are asyncio's, under anyio):
    `bind` in the loop that waits, `ring` from anywhere, `wait` there (a ring while nobody waits is kept
    for the next `wait`); `call` runs a function soon in the bound loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._rung = False

    def bind(self) -> None:
        loop, event = asyncio.get_running_loop(), asyncio.Event()
        with self._lock:
            self._loop, self._event = loop, event
            if self._rung:
                event.set()

    def unbind(self) -> None:
        with self._lock:
            self._loop, self._event = None, None

    def call(self, fn: Callable[[], object]) -> bool:
        """Run `fn` soon in the bound loop; False when no loop is bound (or it has closed)."""
        with self._lock:
            loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop has closed
            return False
        return True

    def ring(self) -> None:
        with self._lock:
            if self._rung:
                return  # one ring is waiting to be heard: the waiter looks at everything when it wakes
            self._rung = True
            event = self._event
        if event is not None:
            self.call(event.set)

    async def wait(self, seconds: float) -> None:
        """Until rung or `seconds` have passed; what is looked at after it returns includes every change made
        before any ring it missed."""
        event = self._event
        assert event is not None, "Doorbell.wait before bind"
        with anyio.move_on_after(max(seconds, 0.0)):
            await event.wait()
        with self._lock:
            self._rung = False
            event.clear()


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
        self._write_limit = max(1, write_limit)
        self._limit: anyio.CapacityLimiter | None = None  # made in the lease thread's loop
        self._owned: frozenset[int] = frozenset()  # as the controller's loop last heard (`_changed`)
        self._prepared = False
        self._lock = threading.Lock()  # `_raise`, `_drains`, `_scope`, `_halted`
        self._raise: dict[str, int] = {}  # lease -> the epoch of a fence its next renewal lifts it above
        self._bell = Doorbell()  # wakes the lease thread
        self._main = Doorbell()  # wakes the controller's side of `run`
        self._drains: list[tuple[int, concurrent.futures.Future[None]]] = []  # asked of the controller
        self._stopping = False  # `stop` was called: nothing is writable from that moment
        self._halted = False  # `run` was cancelled: the lease thread ends at once, releasing nothing
        self._scope: anyio.CancelScope | None = None  # the lease thread's, cancelled by a halt
        self._finished = False
        self._crash: BaseException | None = None
        self._ticks = 0  # ticks done by the lease thread
        self._ticks_heard = 0  # of which the controller's loop has heard (`_hooks`)
        self._beat = clock()  # the controller's loop's last heartbeat (`run`)
        self._stalled = False

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
        state = self.state
        if state.draining or self._stopping:
            return frozenset()
        now = self._clock()
        out = set()
        for name, held in state.held.items():
            shard = self._shard(name)
            if shard is not None and leases.may_write(held, now=now, timings=self.config.timings):
                out.add(shard)
        return frozenset(out)

    def _held(self, shard: int) -> leases.Held | None:
        """The lease of `shard` while this replica may write under it now (one snapshot of the state)."""
        state = self.state
        held = state.held.get(self.config.shard_lease(shard))
        if held is None or state.draining or self._stopping:
            return None
        return held if self._clock() < leases.writable_until(held, self.config.timings) else None

    def deadline(self, shard: int) -> float | None:
        """When (monotonic clock) writes to `shard` must have stopped; None when it may not write now."""
        held = self._held(shard)
        return None if held is None else leases.writable_until(held, self.config.timings)

    def fence(self, shard: int) -> fencing.Fence | None:
        """The fence of writes to `shard`'s clusters (None when it may not write to them now)."""
        held = self._held(shard)
        return None if held is None else fencing.Fence(lease=held.name, epoch=held.epoch)

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
        state = self.state
        held = state.held.get(self.config.coordinator_lease)
        return (
            not state.draining
            and not self._stopping
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
            with self._lock:
                self._raise[name] = max(above, self._raise.get(name, 0))
            self._bell.ring()

    def stop(self) -> None:
        """Drain: write nothing more (from this moment), give every lease up, then `run` returns. Called on
        the controller's loop."""
        self._stopping = True
        self._changed_here()
        self._bell.ring()

    # -- the controller's side -----------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the leases on a thread of their own until drained (`stop`), or until cancelled: then the
        lease thread ends at once and nothing is released (as when the process dies). Meanwhile, on this
        (the controller's) loop: the heartbeat, and the hooks (`attach`) as the lease thread asks."""
        self._main.bind()
        self._beat = self._clock()
        self._finished = False
        thread = threading.Thread(
            target=self._thread_main, name=f"fleet-leases-{self.config.me}", daemon=True
        )
        thread.start()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat)
                while True:
                    finished = self._finished
                    self._hooks(tg)
                    if finished:
                        break
                    await self._main.wait(self.config.timings.retry)
                tg.cancel_scope.cancel()
        finally:
            self._halt()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(thread.join, JOIN_TIMEOUT)
            if thread.is_alive():
                log.error("replica %s: the lease thread did not end within %gs", self.config.me, JOIN_TIMEOUT)
            self._main.unbind()
        if self._crash is not None:
            raise RuntimeError(f"replica {self.config.me}: the lease thread failed") from self._crash

    async def _heartbeat(self) -> None:
        """The controller's loop is turning: the lease thread renews only while this is recent."""
        every = min(0.5, self.config.timings.retry / 4)
        while True:
            self._beat = self._clock()
            await anyio.sleep(every)

    def _hooks(self, tg: anyio.abc.TaskGroup) -> None:
        """What the lease thread asked of the controller's loop: hear of the writable shards changing,
        drain shards before their release, move deadlines after a tick."""
        self._changed_here()
        with self._lock:
            drains, self._drains = self._drains, []
        for shard, done in drains:
            tg.start_soon(self._drain_here, shard, done)
        ticks = self._ticks
        if ticks != self._ticks_heard:
            self._ticks_heard = ticks
            if self._on_tick is not None:
                self._on_tick()

    def _changed_here(self) -> None:
        owned = self.writable()
        if owned != self._owned:
            self._owned = owned
            if self._on_change is not None:
                self._on_change(owned)

    async def _drain_here(self, shard: int, done: concurrent.futures.Future[None]) -> None:
        try:
            if self._before_release is not None:
                await self._before_release(shard)
        finally:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                done.set_result(None)

    def _halt(self) -> None:
        with self._lock:
            self._halted = True
            scope = self._scope
        if scope is not None:
            self._bell.call(scope.cancel)

    # -- the lease thread ----------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            anyio.run(self._keep)
        except BaseException as e:  # reported by `run`, on the controller's loop
            log.exception("replica %s: the lease thread failed", self.config.me)
            self._crash = e
        finally:
            self._finished = True
            self._main.ring()

    def _alive(self) -> bool:
        """Whether the controller's loop showed a heartbeat within the bound (`leases.Timings.stall`)."""
        return self._clock() - self._beat <= self.config.timings.stall

    async def _keep(self) -> None:
        """Tick until drained, or halted."""
        self._bell.bind()
        self._limit = anyio.CapacityLimiter(self._write_limit)
        try:
            with anyio.CancelScope() as scope:
                with self._lock:
                    self._scope = scope
                    if self._halted:
                        scope.cancel()
                while True:
                    if self._stopping and not self.state.draining:
                        self.state = coordination.draining(self.state)
                    await self.tick()
                    self._ticks += 1
                    self._main.ring()
                    if self.state.draining and not self.state.held:
                        log.info(
                            "replica %s: drained (every lease released, or left to expire where a "
                            "release failed)",
                            self.config.me,
                        )
                        return
                    wake_at = self.decision.wake_at if self.decision is not None else self._clock()
                    wait = min(wake_at, self._clock() + self.config.timings.retry) - self._clock()
                    await self._bell.wait(max(wait, 0.001))
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
                await self.client.aclose()
            self._bell.unbind()

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
        if not self._alive():  # the controller's loop is wedged: write nothing, let the leases go
            if not self._stalled:
                self._stalled = True
                log.warning(
                    "replica %s: the controller's event loop showed no heartbeat for %.1fs (bound %gs): "
                    "no lease is renewed or taken until it does",
                    cfg.me,
                    self._clock() - self._beat,
                    cfg.timings.stall,
                )
            return
        if self._stalled:
            self._stalled = False
            log.warning("replica %s: the controller's event loop is turning again", cfg.me)
        with self._lock:
            raising = list(self._raise)
        lifts = [
            n
            for n in raising
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
        # Handed over or given up together (each drained on the controller's loop first), the replica
        # lease last: others see it leave only once its shards are free.
        async with anyio.create_task_group() as tg:
            for name in decision.release:
                if name != cfg.replica_lease:
                    tg.start_soon(self._release, name)
        if cfg.replica_lease in decision.release:
            await self._release(cfg.replica_lease)
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

    async def _limited_write(self, name: str, renew: bool) -> None:
        if self._limit is None:
            self._limit = anyio.CapacityLimiter(self._write_limit)
        async with self._limit:
            await self._write(name, renew=renew)

    async def _write(self, name: str, *, renew: bool, again: bool = True) -> bool:
        cfg = self.config
        seen = self.state.seen.get(name)
        current = seen.record if seen is not None else None
        held = self.state.held.get(name)
        above: int | None = None  # the fence this write lifts the epoch above, if it is a lift
        if renew:
            if held is None or current is None:
                return False
            with self._lock:
                above = self._raise.pop(name, None)
            if above is not None and above < held.epoch:  # lifted already (a write whose answer was lost)
                above = None
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
            self._lift_later(name, above)
            return False
        if answer is None and held is not None:
            mine = await self._reread(name, held, record)
            if mine is None:  # unknown: kept as it is until the next read tells
                self._lift_later(name, above)
                return False
            if mine:  # a lift is sent again over what was read (none if it was the write that landed)
                self._lift_later(name, above)
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

    def _lift_later(self, name: str, above: int | None) -> None:
        """A write that was to lift lease `name`'s epoch above `above` did not land as far as this replica
        knows: the lift is asked again (`raise_epoch` is asked once per fence a round meets), so the next
        renewal of the lease sends it; one that landed after all is seen by then and sends nothing more."""
        if above is not None:
            with self._lock:
                self._raise[name] = max(above, self._raise.get(name, 0))

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
        if shard is not None and not await self._drained(shard):
            log.warning(
                "replica %s: the writes to shard %d were not seen to end (the controller's event loop is "
                "not turning): lease %s is left to expire, not released",
                cfg.me,
                shard,
                name,
            )
            return
        if held is None or seen is None or seen.record is None:
            return
        record = leases.releasing(replace(seen.record, version=held.version), wall=self._wall())
        try:
            if self._limit is None:
                self._limit = anyio.CapacityLimiter(self._write_limit)
            async with self._limit:
                answer = await self.client.write(record, role=cfg.role(name))
        except errors.FleetError as e:
            log.warning("replica %s: release of lease %s not sent: %s (it expires instead)", cfg.me, name, e)
            return
        if answer is not None:
            self.state = coordination.wrote(cfg, self.state, answer, sent=self._clock(), now=self._clock())
            log.info("replica %s: released lease %s", cfg.me, name)

    async def _drained(self, shard: int) -> bool:
        """Ask the controller's loop to end the shard's writes in flight (`before_release`) and wait for
        it, while its heartbeat shows it turning; False when it stopped turning first."""
        if self._before_release is None:
            return True
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            self._drains.append((shard, done))
        self._main.ring()
        waiting = asyncio.wrap_future(done)
        try:
            while True:
                with anyio.move_on_after(self.config.timings.retry):
                    await asyncio.shield(waiting)
                    return True
                if not self._alive():
                    return False
        finally:
            waiting.cancel()

    def _changed(self) -> None:
        """The state changed: the controller's loop looks at what it may write to (`_changed_here`)."""
        self._main.ring()
