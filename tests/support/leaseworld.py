"""A world of replicas coordinating through leases, on a fake clock, for property tests of
`fleet.core.coordination`.

Real time is simulated (discrete events); each replica sees it through its own clock (an offset and a
rate: bounded skew). The lease store is an in-memory API server with optimistic concurrency (create fails
when the lease exists, update and delete fail when the version moved). Each replica runs the real
decision loop of `fleet.core.coordination` as a process: read every lease, decide, send its writes one by
one (renews, acquisitions, releases), sleep until the decision's `wake_at`. Requests take a latency each
way and time out; faults are scheduled: kill (the process is gone), term (graceful: draining, then
exit), pause (SIGSTOP: the process does nothing, its clock runs on), partition (its requests are lost),
deaf (the answers to its requests are lost, the requests land), deaf-releases (only the answers to its
releases are lost), start (a new replica joins).

What it records: for every lease, the windows of real time in which each replica was allowed to write
under it (`leases.may_write` on its own clock, from the moment it learned it held the lease until its
deadline, a release, or its death), and every change of holder in the store with its real time.

Not a model of the management cluster's performance: requests are applied in the order they arrive.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from fleet.core import coordination, leases

LOST = object()  # a request whose answer never came (timeout)
CONFLICT = object()  # 409


@dataclass
class Fault:
    at: float  # real time
    kind: str  # kill | term | pause | partition | deaf | start
    replica: str
    length: float = 0.0  # pause / partition length


@dataclass
class Window:
    replica: str
    start: float
    end: float
    epoch: int


@dataclass
class Replica:
    name: str
    offset: float = 0.0
    rate: float = 1.0
    config: coordination.Config | None = None
    state: coordination.State = field(default_factory=coordination.State)
    alive: bool = True
    started: float = 0.0
    killed_at: float | None = None
    paused: list[tuple[float, float]] = field(default_factory=list)
    cut: list[tuple[float, float, str]] = field(default_factory=list)  # (from, to, how)
    terming: bool = False
    sleeping: tuple[int, Any] | None = None  # (token, generator) while asleep: a SIGTERM wakes it
    open: dict[str, tuple[float, leases.Held]] = field(default_factory=dict)
    writable_log: list[tuple[float, frozenset[int]]] = field(default_factory=list)

    def local(self, real: float) -> float:
        return self.offset + self.rate * real

    def real(self, local: float) -> float:
        return (local - self.offset) / self.rate

    def paused_until(self, real: float) -> float | None:
        for a, b in self.paused:
            if a <= real < b:
                return b
        return None

    def cut_at(self, real: float) -> str | None:
        for a, b, how in self.cut:
            if a <= real < b:
                return how
        return None


class Store:
    """The leases of the management cluster, with resourceVersions."""

    def __init__(self) -> None:
        self.records: dict[str, leases.Record] = {}
        self._rv = itertools.count(100)
        self.holders: dict[str, list[tuple[float, str, int]]] = {}  # name -> (real time, holder, transitions)

    def _put(self, rec: leases.Record, at: float) -> leases.Record:
        stored = replace(rec, version=str(next(self._rv)))
        old = self.records.get(rec.name)
        self.records[rec.name] = stored
        if old is None or old.holder != stored.holder:
            self.holders.setdefault(rec.name, []).append((at, stored.holder, stored.transitions))
        return stored

    def apply(self, op: tuple[Any, ...], at: float) -> Any:
        kind = op[0]
        if kind == "list":
            return dict(self.records)
        rec = op[1]
        current = self.records.get(rec.name)
        if kind == "create":
            if current is not None:
                return CONFLICT
            return self._put(replace(rec, version=""), at)
        if kind == "update":
            if current is None or current.version != rec.version:
                return CONFLICT
            return self._put(rec, at)
        if kind == "delete":
            if current is None or current.version != rec.version:
                return CONFLICT
            del self.records[rec.name]
            self.holders.setdefault(rec.name, []).append((at, "", current.transitions))
            return True
        raise AssertionError(kind)


@dataclass(frozen=True)
class Net:
    latency: float = 0.02  # each way
    timeout: float = 1.0  # a request's answer is given up after this long (real time)


class World:
    def __init__(
        self,
        *,
        instance: str = "fleet",
        shards: int = 8,
        timings: leases.Timings | None = None,
        net: Net | None = None,
        latency: Callable[[int], float] | None = None,
    ) -> None:
        self.instance = instance
        self.shards = shards
        self.timings = timings or leases.Timings()
        self.net = net or Net()
        self._latency = latency
        self.store = Store()
        self.replicas: dict[str, Replica] = {}
        self.windows: dict[str, list[Window]] = {}
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._requests = itertools.count()

    # -- engine ------------------------------------------------------------------------------------

    def at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (max(when, self.now), next(self._seq), fn))

    def run(self, until: float) -> None:
        same = 0
        while self._queue and self._queue[0][0] <= until:
            when, _, fn = heapq.heappop(self._queue)
            same = same + 1 if when == self.now else 0
            assert same < 100_000, f"the world spins at t={when}: a process acts without time passing"
            self.now = when
            fn()
        self.now = until

    def latency(self) -> float:
        n = next(self._requests)
        return self._latency(n) if self._latency is not None else self.net.latency

    # -- replicas ----------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        *,
        at: float = 0.0,
        offset: float = 0.0,
        rate: float = 1.0,
        shards: int | None = None,
    ) -> Replica:
        r = Replica(name=name, offset=offset, rate=rate, started=at)
        r.config = coordination.Config(
            instance=self.instance, me=name, shards=shards or self.shards, timings=self.timings
        )
        self.replicas[name] = r
        self.at(at, lambda: self._step(r, self._process(r), None))
        return r

    def schedule(self, faults: Iterable[Fault]) -> None:
        for f in faults:
            self.at(f.at, lambda f=f: self._fault(f))

    def _fault(self, f: Fault) -> None:
        r = self.replicas.get(f.replica)
        if f.kind == "start":
            if r is None:
                self.add(f.replica, at=f.at)
            return
        if r is None or not r.alive:
            return
        if f.kind == "kill":
            self._kill(r)
        elif f.kind == "term":
            r.terming = True
            if r.sleeping is not None:  # the signal interrupts its sleep
                _, gen = r.sleeping
                r.sleeping = None
                self.at(self.now, lambda: self._step(r, gen, None))
        elif f.kind == "pause":
            r.paused.append((f.at, f.at + f.length))
        elif f.kind == "partition":
            r.cut.append((f.at, f.at + f.length, "all"))
        elif f.kind == "deaf":
            r.cut.append((f.at, f.at + f.length, "answers"))
        elif f.kind == "deaf-releases":
            r.cut.append((f.at, f.at + f.length, "release answers"))

    def _kill(self, r: Replica) -> None:
        r.alive = False
        r.killed_at = self.now
        for name in list(r.open):
            self._close(r, name)

    # A process is a generator yielding ("sleep", real time) or ("request", op); it gets back the answer.
    def _step(self, r: Replica, gen: Generator[Any, Any, None], value: Any) -> None:
        if not r.alive:
            return
        until = r.paused_until(self.now)
        if until is not None:  # a stopped process resumes where it was, when it is continued
            self.at(until, lambda: self._step(r, gen, value))
            return
        try:
            what = gen.send(value)
        except StopIteration:
            self._kill(r)  # exited
            return
        if what[0] == "sleep":
            token = next(self._seq)
            r.sleeping = (token, gen)

            def wake() -> None:
                if r.sleeping is not None and r.sleeping[0] == token:
                    r.sleeping = None
                    self._step(r, gen, None)

            self.at(what[1], wake)
        else:
            self._request(r, gen, what[1])

    def _request(self, r: Replica, gen: Generator[Any, Any, None], op: tuple[Any, ...]) -> None:
        sent = self.now
        give_up = sent + self.net.timeout
        if r.cut_at(sent) == "all":
            self.at(give_up, lambda: self._step(r, gen, LOST))
            return
        arrive = sent + self.latency()
        if arrive >= give_up:
            self.at(give_up, lambda: self._step(r, gen, LOST))
            return

        def land() -> None:
            answer = self.store.apply(op, self.now)
            back = self.now + self.latency()
            cut = {r.cut_at(self.now), r.cut_at(back)} - {None}
            if not (op[0] == "update" and op[1].holder == ""):
                cut.discard("release answers")
            if back >= give_up or cut:
                self.at(give_up, lambda: self._step(r, gen, LOST))
            else:
                self.at(back, lambda: self._step(r, gen, answer))

        self.at(arrive, land)

    # -- windows -----------------------------------------------------------------------------------

    def _close(self, r: Replica, name: str) -> None:
        start, held = r.open.pop(name)
        end = min(self.now, r.real(leases.writable_until(held, self.timings)))
        if end > start:
            self.windows.setdefault(name, []).append(Window(r.name, start, end, held.epoch))

    def _sync_windows(self, r: Replica) -> None:
        for name in list(r.open):
            if r.state.held.get(name) != r.open[name][1]:
                self._close(r, name)
        for name, held in r.state.held.items():
            if name not in r.open and leases.replica_of_lease(name, instance=self.instance) is None:
                r.open[name] = (self.now, held)

    def finish(self) -> None:
        for r in self.replicas.values():
            for name in list(r.open):
                self._close(r, name)

    # -- the replica process -----------------------------------------------------------------------

    def _process(self, r: Replica) -> Generator[Any, Any, None]:
        cfg = r.config
        assert cfg is not None

        def now() -> float:
            return r.local(self.now)

        def update(state: coordination.State) -> None:
            r.state = state
            self._sync_windows(r)

        while True:
            if r.terming and not r.state.draining:
                update(coordination.draining(r.state))
            answer = yield ("request", ("list",))
            if answer is not LOST:
                records = {n: rec for n, rec in answer.items()}
                update(coordination.observe(cfg, r.state, records, now=now()))
            decision = coordination.decide(cfg, r.state, now=now())
            r.writable_log.append((self.now, decision.writable))
            ok = yield from self._writes(r, decision, now, update)
            if r.state.draining and not r.state.held:
                return  # drained: exit
            if not ok:
                decision = coordination.decide(cfg, r.state, now=now())
            if r.terming and not r.state.draining:
                continue  # the signal came during this tick: no sleep
            wake = min(decision.wake_at, now() + cfg.timings.retry)
            # At least a millisecond: a wake a rounding error away must not spin on a frozen fake clock.
            yield ("sleep", max(r.real(wake), self.now + 0.001))

    def _writes(
        self,
        r: Replica,
        decision: coordination.Decision,
        now: Callable[[], float],
        update: Callable[[coordination.State], None],
    ) -> Generator[Any, Any, bool]:
        cfg = r.config
        assert cfg is not None
        mine = cfg.replica_lease
        for name in (*decision.renew, *decision.acquire):
            state = r.state
            seen = state.seen.get(name)
            current = seen.record if seen is not None else None
            held = state.held.get(name)
            if name in decision.renew:
                if held is None or current is None:
                    continue
                rec = leases.renewing(replace(current, version=held.version), wall=now(), timings=cfg.timings)
                op: tuple[Any, ...] = ("update", rec)
            else:
                ann = cfg.announcement if name == mine else {}
                rec = leases.acquiring(
                    current, name=name, me=cfg.me, wall=now(), timings=cfg.timings, annotations=ann
                )
                op = ("create", rec) if current is None else ("update", rec)
            sent = now()
            answer = yield ("request", op)
            if answer is LOST:
                if name == mine:
                    return False
                continue
            if answer is CONFLICT:
                update(coordination.refused(cfg, r.state, name))
                if name == mine:
                    return False
                continue
            update(coordination.wrote(cfg, r.state, answer, sent=sent, now=now()))
        for name in decision.release:
            seen = r.state.seen.get(name)
            held = r.state.held.get(name)
            if held is None or seen is None or seen.record is None:
                update(coordination.letting_go(cfg, r.state, name))
                continue
            rec = leases.releasing(replace(seen.record, version=held.version), wall=now())
            update(coordination.letting_go(cfg, r.state, name))
            answer = yield ("request", ("update", rec))
            if answer not in (LOST, CONFLICT):
                update(coordination.wrote(cfg, r.state, answer, sent=now(), now=now()))
        for name in decision.forget:
            seen = r.state.seen.get(name)
            if seen is None or seen.record is None:
                continue
            answer = yield ("request", ("delete", seen.record))
            if answer is True:
                update(coordination.forgotten(r.state, name))
        return True

    # -- what happened -----------------------------------------------------------------------------

    def overlaps(self) -> list[tuple[str, Window, Window]]:
        """Pairs of windows of two replicas allowed to write under one lease at the same moment."""
        out = []
        for name, ws in self.windows.items():
            ws = sorted(ws, key=lambda w: w.start)
            for i, a in enumerate(ws):
                for b in ws[i + 1 :]:
                    if b.start >= a.end:
                        break
                    if a.replica != b.replica:
                        out.append((name, a, b))
        return out

    def holder_at(self, name: str, real: float) -> str:
        holder = ""
        for at, who, _ in self.store.holders.get(name, []):
            if at > real:
                break
            holder = who
        return holder

    def taken_after(self, name: str, real: float, *, other_than: str) -> float:
        """When, after `real`, the store first named a holder other than `other_than` (inf: never)."""
        for at, who, _ in self.store.holders.get(name, []):
            if at > real and who and who != other_than:
                return at
        return math.inf

    def shard_lease(self, shard: int) -> str:
        return leases.shard_lease(instance=self.instance, shard=shard)

    def owners(self) -> dict[int, str]:
        """Who holds each shard in the store now (unheld shards left out)."""
        out = {}
        for s in range(self.shards):
            rec = self.store.records.get(self.shard_lease(s))
            if rec is not None and rec.holder:
                out[s] = rec.holder
        return out
