"""A replica's leases while the event loop it shares with the rest of the controller is busy or wedged
(fleet.controller.replicas): in-process, over real HTTP against `fleet sim` as the management cluster,
with short lease timings (4 s duration, 2 s renew deadline, 0.5 s retry).

Busy: tasks that burn the CPU in slices and yield between them, as rounds of many clusters do; every
await of the loop waits behind all of them. Wedged: a task that blocks the loop and never yields."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import anyio
import anyio.lowlevel
import pytest

from fleet.clients import management
from fleet.controller import replicas
from fleet.sim import testing
from tests.support import lease_replicas
from tests.support.lease_replicas import SLACK, T

SHARDS = 8
ALL = frozenset(range(SHARDS))

pytestmark = pytest.mark.slow  # seconds of lease timings each


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["mgmt"]) as handle:
        yield handle


def make(sim: testing.SimHandle, me: str) -> replicas.Replica:
    return lease_replicas.make(sim, me, shards=SHARDS)


class Sampler:
    """What the replica says it may write to, sampled from a thread of its own every 10 ms (the event
    loop under test is the one kept busy), with the monotonic time of each sample."""

    def __init__(self, replica: replicas.Replica) -> None:
        self.replica = replica
        self.samples: list[tuple[float, frozenset[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.samples.append((time.monotonic(), self.replica.writable()))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def burn(seconds: float) -> None:
    """CPU, without yielding to the event loop."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(1000))


async def busy(*, tasks: int, slice_: float, until: float) -> None:
    """`tasks` tasks burning `slice_` s of CPU each, yielding between slices, until `until` (monotonic):
    each turn of the event loop takes about tasks * slice_ seconds."""

    async def one() -> None:
        while time.monotonic() < until:
            burn(slice_)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for _ in range(tasks):
            tg.start_soon(one)


def run(sim: testing.SimHandle, body: Callable[[replicas.Replica], Awaitable[None]]) -> None:
    async def main() -> None:
        a = make(sim, "a-1")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(a.run)
                with anyio.fail_after(10):
                    while a.writable() != ALL:  # noqa: ASYNC110 (polls: no event tells of the leases taken)
                        await anyio.sleep(0.05)
                await body(a)
                tg.cancel_scope.cancel()
        finally:
            await a.client.client.aclose()

    anyio.run(main)


def renewals(sim: testing.SimHandle, me: str) -> list[float]:
    """When (wall clock) the management cluster took each renewal of `me`'s shard leases."""
    return [
        e["time"]
        for e in sim.journal_sync("mgmt")
        if e["method"] == "PUT"
        and e["status"] == 200
        and e["userAgent"] == management.user_agent(me)
        and "-shard-" in e["path"]
    ]


def test_a_replica_whose_event_loop_is_busy_with_cpu_bound_work_keeps_every_lease(
    sim: testing.SimHandle,
) -> None:
    """Four renew deadlines of a loop whose every turn takes 0.6 s (12 tasks of 50 ms slices): its lease
    renewals do not wait for it, every shard stays writable throughout, no lease changes hands."""

    async def body(a: replicas.Replica) -> None:
        with Sampler(a) as sampler:
            await busy(tasks=12, slice_=0.05, until=time.monotonic() + 4 * T.renew_deadline)
        lost = [(t, s) for t, s in sampler.samples if s != ALL]
        assert len(sampler.samples) > 100
        assert lost == [], f"{len(lost)} samples without every shard, first {lost[0]}"
        assert a.writable() == ALL

    before = time.time()
    run(sim, body)
    took = [t for t in renewals(sim, "a-1") if t > before]
    gaps = [b - a for a, b in itertools.pairwise(took)]
    assert took and max(gaps) < T.renew_deadline, gaps


def test_a_replica_whose_event_loop_is_wedged_stops_renewing_and_writing_within_its_bound(
    sim: testing.SimHandle,
) -> None:
    """A task blocks the loop without ever yielding: within the heartbeat bound (the renew deadline) and
    a retry period the replica sends no more renewals, and a renew deadline later it may write to
    nothing, so the other replicas take its shards a lease duration after they saw its last renewal."""
    wedged: list[float] = []

    async def body(a: replicas.Replica) -> None:
        with Sampler(a) as sampler:
            wedged.append(time.time())
            at = time.monotonic()
            time.sleep(T.renew_deadline * 2 + T.retry * 2 + SLACK)  # noqa: ASYNC251 (the loop wedged)
        bound = T.renew_deadline + T.retry + T.renew_deadline + SLACK
        after = [(t - at, s) for t, s in sampler.samples if t - at > bound]
        assert after and all(s == frozenset() for _, s in after), after[:3]

    run(sim, body)
    late = [t - wedged[0] for t in renewals(sim, "a-1") if t > wedged[0] + T.renew_deadline + T.retry + SLACK]
    assert late == [], late


def test_a_replica_stopped_while_its_event_loop_is_busy_hands_every_shard_over_within_seconds(
    sim: testing.SimHandle,
) -> None:
    """SIGTERM while 6 tasks burn the CPU in 50 ms slices (each turn of the loop about 0.3 s): every
    shard is drained on the controller's loop and released within 3 s (the handover bound of
    docs/scaling.md). The drains are asked all at once: one after the other, each costs turns of the loop."""
    stopped: list[float] = []

    async def body(a: replicas.Replica) -> None:
        drained: set[int] = set()

        async def drain(shard: int) -> None:
            await anyio.lowlevel.checkpoint()  # nothing in flight: one turn of the loop
            drained.add(shard)

        a.attach(before_release=drain, on_change=lambda owned: None, on_tick=lambda: None)
        stopped.append(time.time())
        a.stop()
        assert a.writable() == frozenset() and not a.coordinating()
        await busy(tasks=6, slice_=0.05, until=time.monotonic() + 6.0)
        assert drained == ALL

    run(sim, body)
    released = [
        e
        for e in sim.journal_sync("mgmt")
        if e["method"] == "PUT" and e["userAgent"] == management.user_agent("a-1") and e["time"] > stopped[0]
    ]
    shards = {e["path"].rsplit("/", 1)[-1] for e in released if e["status"] == 200 and "-shard-" in e["path"]}
    assert shards == {f"fleet-shard-{s}" for s in ALL}
    took = max(e["time"] for e in released) - stopped[0]
    assert took < 3.0, took
