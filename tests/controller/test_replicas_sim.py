"""Replicas' coordination loops (fleet.controller.replicas) in-process, over real HTTP against `fleet sim` as
the management cluster, with short lease timings (4 s duration, 2 s renew deadline, 0.5 s retry)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

import anyio
import pytest

from fleet.clients import kube, management
from fleet.controller import replicas
from fleet.core import fencing, leases, sharding
from fleet.sim import testing
from tests.support import lease_replicas
from tests.support.lease_replicas import BASE, SLACK, T

SHARDS = 12

pytestmark = pytest.mark.slow  # seconds of lease timings each


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["mgmt"]) as handle:
        yield handle


def make(sim: testing.SimHandle, me: str) -> replicas.Replica:
    return lease_replicas.make(sim, me, shards=SHARDS)


READER = "fleet-test-reader"  # the User-Agent of the test's own reads of the leases


async def read(sim: testing.SimHandle) -> dict[str, leases.Record]:
    """Every lease of the instance, read by the test over a client of its own (a replica's client is its
    lease thread's)."""
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    client = kube.Client(
        cluster="mgmt", context=kc.context("mgmt"), settings=kube.with_settings(BASE, user_agent=READER)
    )
    try:
        return await management.Leases(client, instance="fleet").read()
    finally:
        await client.aclose()


async def holders(sim: testing.SimHandle) -> dict[int, str]:
    out = {}
    for name, rec in (await read(sim)).items():
        shard = leases.shard_of_lease(name, instance="fleet")
        if shard is not None and rec.holder:
            out[shard] = rec.holder
    return out


async def epochs(sim: testing.SimHandle) -> dict[str, int]:
    """Lease -> its epoch (leaseTransitions)."""
    return {name: rec.transitions for name, rec in (await read(sim)).items()}


async def until(check: Callable[[], Awaitable[bool]], *, within: float) -> float:
    """Seconds until `check` holds (fails after `within`)."""
    start = time.monotonic()
    with anyio.fail_after(within):
        # Polls the management cluster: what is checked is the server's state, no event tells of it.
        while True:
            if await check():
                return time.monotonic() - start
            await anyio.sleep(0.05)


def run(sim: testing.SimHandle, names: list[str], body: Callable[..., Awaitable[None]]) -> None:
    async def main() -> None:
        reps = [make(sim, n) for n in names]
        scopes = {r.config.me: anyio.CancelScope() for r in reps}

        async def loop(r: replicas.Replica) -> None:
            with scopes[r.config.me]:
                await r.run()

        try:
            async with anyio.create_task_group() as tg:
                for r in reps:
                    tg.start_soon(loop, r)
                await body(reps, scopes)
                tg.cancel_scope.cancel()
        finally:
            for r in reps:
                await r.client.client.aclose()

    anyio.run(main)


def test_three_replicas_share_every_shard_each_writable_by_exactly_one(sim: testing.SimHandle) -> None:
    async def body(reps: list[replicas.Replica], _: object) -> None:
        async def settled() -> bool:
            owners = await holders(sim)
            return len(owners) == SHARDS and set(owners.values()) == {r.config.me for r in reps}

        await until(settled, within=10)
        owners = await holders(sim)
        for r in reps:
            assert r.writable() == {s for s, who in owners.items() if who == r.config.me}
        loads = sharding.Assignment(shards=SHARDS, owner=owners).loads()
        assert all(SHARDS // 3 <= n <= 5 for n in loads.values()), loads
        assert sum(r.coordinating() for r in reps) == 1
        fences = {r.fence(s) for r in reps for s in r.writable()}
        assert {f.lease for f in fences if f} == {f"fleet-shard-{s}" for s in range(SHARDS)}

    run(sim, ["a-1", "b-2", "c-3"], body)
    agents = {e["userAgent"] for e in sim.journal_sync("mgmt")} - {READER}
    assert agents == {management.user_agent(n) for n in ("a-1", "b-2", "c-3")}


def test_the_shards_of_a_replica_that_vanishes_are_owned_again_within_the_lease_duration_and_a_retry(
    sim: testing.SimHandle,
) -> None:
    async def body(reps: list[replicas.Replica], scopes: dict[str, anyio.CancelScope]) -> None:
        a, _, c = reps

        async def settled() -> bool:
            return len(set((await holders(sim)).values())) == 3

        await until(settled, within=10)
        theirs = {s for s, who in (await holders(sim)).items() if who == "b-2"}
        scopes["b-2"].cancel()  # like SIGKILL: nothing released

        async def taken() -> bool:
            owners = await holders(sim)
            return all(owners.get(s) in ("a-1", "c-3") for s in theirs)

        took = await until(taken, within=T.duration + T.retry + 3 * SLACK)
        assert took <= T.duration + T.retry + SLACK

        async def heard() -> (
            bool
        ):  # the server stores a take before the replica's lease thread reads the answer
            return theirs <= a.writable() | c.writable()

        await until(heard, within=SLACK)

    run(sim, ["a-1", "b-2", "c-3"], body)


def test_a_stopped_replica_hands_its_shards_over_within_a_retry_period(sim: testing.SimHandle) -> None:
    async def body(reps: list[replicas.Replica], _: object) -> None:
        _, b = reps

        async def settled() -> bool:
            return len(set((await holders(sim)).values())) == 2

        await until(settled, within=10)
        theirs = {s for s, who in (await holders(sim)).items() if who == "b-2"}
        b.stop()
        assert b.writable() == frozenset() and not b.coordinating()

        async def taken() -> bool:
            owners = await holders(sim)
            return all(owners.get(s) == "a-1" for s in theirs)

        took = await until(taken, within=T.duration + SLACK)
        assert took <= T.retry + SLACK
        assert not (await read(sim))["fleet-replica-b-2"].holder  # gone, at once

    run(sim, ["a-1", "b-2"], body)


def test_a_replica_cut_off_from_the_management_cluster_stops_writing_before_its_shards_are_taken(
    sim: testing.SimHandle,
) -> None:
    async def body(reps: list[replicas.Replica], _: object) -> None:
        _, b = reps

        async def settled() -> bool:
            return len(set((await holders(sim)).values())) == 2

        await until(settled, within=10)
        theirs = {s for s, who in (await holders(sim)).items() if who == "b-2"}
        # The latest moment (wall clock) b may write to each of its shards, as b itself says.
        last: dict[int, float] = {}

        async def watch_b() -> None:
            while True:
                offset = time.time() - time.monotonic()
                for s in theirs:
                    d = b.deadline(s)
                    if d is not None:
                        last[s] = max(last.get(s, 0.0), d + offset)
                await anyio.sleep(0.02)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_b)
            await anyio.sleep(0.1)
            cut_at = time.time()
            await sim.faults("mgmt", {"userAgent": r"\(replica b-2\)", "refuse": True})

            async def taken() -> bool:
                owners = await holders(sim)
                return all(owners.get(s) == "a-1" for s in theirs)

            await until(taken, within=T.duration + T.retry + 3 * SLACK)
            tg.cancel_scope.cancel()
        assert b.writable() == frozenset()
        taken_at = {}
        for e in sim.journal_sync("mgmt"):
            shard = leases.shard_of_lease(e["path"].rsplit("/", 1)[-1], instance="fleet")
            if e["method"] == "PUT" and e["status"] == 200 and e["userAgent"] == management.user_agent("a-1"):
                if shard in theirs and shard not in taken_at and e["time"] > cut_at:
                    taken_at[shard] = e["time"]
        assert set(taken_at) == theirs
        for s in theirs:
            assert last[s] < taken_at[s], (s, last[s], taken_at[s])

    run(sim, ["a-1", "b-2"], body)


def test_a_renewal_whose_answer_was_lost_keeps_the_lease_at_its_epoch_and_every_shard_writable(
    sim: testing.SimHandle,
) -> None:
    """The renewals of its replica lease and of one shard lease land but their answers are lost: the
    client's retry of each meets the write it made itself (409). That is not another replica's write: the
    replica reads the lease again, finds it still its own at its epoch and carries on."""

    async def body(reps: list[replicas.Replica], _: object) -> None:
        (a,) = reps
        dropped: list[frozenset[int]] = []

        async def drained(shard: int) -> None:
            dropped.append(frozenset({shard}))

        def changed(owned: frozenset[int]) -> None:
            if owned != frozenset(range(SHARDS)):
                dropped.append(owned)

        async def settled() -> bool:
            return a.writable() == frozenset(range(SHARDS))

        await until(settled, within=10)
        a.attach(before_release=drained, on_change=changed, on_tick=lambda: None)
        before = await epochs(sim)
        assert set(before) == {"fleet-replica-a-1", "fleet-coordinator"} | {
            f"fleet-shard-{s}" for s in range(SHARDS)
        }
        for lease in ("fleet-replica-a-1", "fleet-shard-3"):
            await sim.faults("mgmt", {"loseAnswer": True, "method": "PUT", "path": f"/{lease}$", "count": 1})

        async def fired() -> bool:
            return all(r["fired"] == 1 for r in await sim.fault_rules("mgmt"))

        await until(fired, within=10)
        await anyio.sleep(4 * T.retry)  # the renewals after the lost answers
        assert dropped == []
        assert a.writable() == frozenset(range(SHARDS))
        assert await epochs(sim) == before
        conflicts = [e for e in sim.journal_sync("mgmt") if e["method"] == "PUT" and e["status"] == 409]
        assert len(conflicts) == 2  # the retries that met the replica's own writes, and nothing else

    run(sim, ["a-1"], body)


def test_an_epoch_lift_whose_write_failed_is_sent_again_at_the_next_renewal(sim: testing.SimHandle) -> None:
    """A round met a fence above the epoch of a lease the replica holds (`raise_epoch`, asked once): the
    renewal that lifts it fails (the management cluster answers 503 to every attempt, an unknown outcome).
    The lift is not forgotten: once the management cluster answers again, the next renewal lifts the
    epoch above the fence."""

    async def body(reps: list[replicas.Replica], _: object) -> None:
        (a,) = reps

        async def settled() -> bool:
            return a.writable() == frozenset(range(SHARDS))

        await until(settled, within=10)
        assert (await epochs(sim))["fleet-shard-3"] == 1
        await sim.faults("mgmt", {"status": 503, "method": "PUT", "path": "/fleet-shard-3$"})
        a.raise_epoch(3, 41)

        async def refused() -> bool:  # the lift's write, every attempt answered 503
            journal = await sim.journal("mgmt")
            return sum(e["status"] == 503 for e in journal) >= 3

        await until(refused, within=10)
        await anyio.sleep(T.retry)
        await sim.clear_faults("mgmt")

        # The lift landed, and the replica heard its answer: the server stores it before the lease thread
        # reads the answer, so on a loaded machine the test may see epoch 42 there while the replica's
        # fence is still at 1 (63 ms later it was at 42, seen once in 14 runs with 4 CPU burners).
        async def lifted() -> bool:
            mine = a.fence(3) == fencing.Fence(lease="fleet-shard-3", epoch=42)
            return mine and (await epochs(sim))["fleet-shard-3"] == 42

        await until(lifted, within=4 * T.retry + SLACK)

    run(sim, ["a-1"], body)
