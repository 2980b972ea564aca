"""The lease client (fleet.clients.management) over real HTTP against `fleet sim` as the management cluster:
optimistic concurrency decides between replicas, and every request names its replica."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest

from fleet.clients import kube, management
from fleet.core import leases
from fleet.sim import testing

T = leases.Timings()
BASE = kube.Settings(request_timeout=2.0, connect_timeout=1.0, retry_budget=3.0, backoff_base=0.05)
SHARD = "fleet-shard-0"


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["mgmt"]) as handle:
        yield handle


def replica(sim: testing.SimHandle, me: str, *, instance: str = "fleet") -> management.Leases:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    settings = management.settings_for(BASE, timings=T, replica=me)
    return management.Leases(
        kube.Client(cluster="mgmt", context=kc.context("mgmt"), settings=settings), instance=instance
    )


def run(sim: testing.SimHandle, *names: str, body: Callable[..., Awaitable[Any]]) -> Any:
    async def main() -> Any:
        clients = [replica(sim, n) for n in names]
        try:
            await clients[0].prepare()
            return await body(*clients)
        finally:
            for c in clients:
                await c.client.aclose()

    return anyio.run(main)


def take(current: leases.Record | None, me: str, *, name: str = SHARD) -> leases.Record:
    return leases.acquiring(current, name=name, me=me, wall=1_800_000_000.0, timings=T)


def test_two_replicas_creating_one_lease_leave_one_holder_and_the_other_learns_it_lost(
    sim: testing.SimHandle,
) -> None:
    async def body(a: management.Leases, b: management.Leases) -> None:
        got_a = await a.create(take(None, "a"), role="shard")
        got_b = await b.create(take(None, "b"), role="shard")
        assert got_a is not None and got_a.holder == "a" and got_a.transitions == 1 and got_a.version
        assert got_b is None
        assert (await b.read())[SHARD].holder == "a"

    run(sim, "a", "b", body=body)


def test_an_update_over_a_version_someone_else_replaced_gets_a_conflict_and_changes_nothing(
    sim: testing.SimHandle,
) -> None:
    async def body(a: management.Leases, b: management.Leases) -> None:
        mine = await a.create(take(None, "a"), role="shard")
        assert mine is not None
        seen_by_b = (await b.read())[SHARD]
        renewed = await a.update(leases.renewing(mine, wall=1_800_000_002.0, timings=T), role="shard")
        assert renewed is not None and renewed.version != mine.version and renewed.transitions == 1
        # b thinks the lease expired and takes it over the version it saw: too late, a renewed it.
        assert await b.update(take(seen_by_b, "b"), role="shard") is None
        after = (await a.read())[SHARD]
        assert (after.holder, after.version) == ("a", renewed.version)
        # a's own stale renewal (over the version before its last one) loses too.
        assert await a.update(leases.renewing(mine, wall=1_800_000_004.0, timings=T), role="shard") is None

    run(sim, "a", "b", body=body)


def test_a_released_lease_is_taken_at_once_by_another_replica_one_epoch_later(sim: testing.SimHandle) -> None:
    async def body(a: management.Leases, b: management.Leases) -> None:
        mine = await a.create(take(None, "a"), role="shard")
        assert mine is not None
        released = await a.update(leases.releasing(mine, wall=1_800_000_001.0), role="shard")
        assert released is not None and released.free and released.transitions == 1
        seen = (await b.read())[SHARD]
        assert seen.free
        theirs = await b.update(take(seen, "b"), role="shard")
        assert theirs is not None and (theirs.holder, theirs.transitions) == ("b", 2)

    run(sim, "a", "b", body=body)


def test_a_lease_gone_from_the_cluster_is_a_lost_update_not_a_recreation(sim: testing.SimHandle) -> None:
    async def body(a: management.Leases, b: management.Leases) -> None:
        mine = await a.create(take(None, "a"), role="shard")
        assert mine is not None
        assert await b.delete(mine) is True
        assert await a.update(leases.renewing(mine, wall=1_800_000_002.0, timings=T), role="shard") is None
        assert SHARD not in await a.read()

    run(sim, "a", "b", body=body)


def test_a_delete_over_a_version_renewed_meanwhile_is_refused(sim: testing.SimHandle) -> None:
    async def body(a: management.Leases, coordinator: management.Leases) -> None:
        name = "fleet-replica-a"
        mine = await a.create(take(None, "a", name=name), role="replica")
        assert mine is not None
        seen = (await coordinator.read())[name]
        assert await a.update(leases.renewing(mine, wall=1_800_000_002.0, timings=T), role="replica")
        assert await coordinator.delete(seen) is False
        assert name in await coordinator.read()

    run(sim, "a", "c", body=body)


def test_a_read_returns_every_lease_of_its_instance_and_none_of_another(sim: testing.SimHandle) -> None:
    async def body(a: management.Leases, b: management.Leases) -> None:
        other = replica(sim, "z", instance="other")
        try:
            await a.create(take(None, "a"), role="shard")
            await a.create(take(None, "a", name="fleet-replica-a"), role="replica")
            await other.create(take(None, "z", name="other-shard-0"), role="shard")
            assert set(await b.read()) == {SHARD, "fleet-replica-a"}
            assert set(await other.read()) == {"other-shard-0"}
        finally:
            await other.client.aclose()

    run(sim, "a", "b", body=body)


def test_a_lease_that_cannot_be_read_fails_the_read_naming_it_and_is_never_taken_as_free(
    sim: testing.SimHandle,
) -> None:
    async def body(a: management.Leases) -> None:
        # Held, but without a duration: nobody can tell when it expires.
        obj = leases.encode(take(None, "x"), instance="fleet", role="shard")
        del obj["spec"]["leaseDurationSeconds"]
        await a.client.request(
            "POST", management.LEASES.collection_path("fleet-system"), what="setup", body=obj
        )
        with pytest.raises(
            leases.LeaseError, match=r"Lease/fleet-system/fleet-shard-0: .*leaseDurationSeconds"
        ):
            await a.read()

    run(sim, "a", body=body)


def test_every_request_of_a_replica_names_it_in_its_user_agent(sim: testing.SimHandle) -> None:
    async def body(a: management.Leases, b: management.Leases) -> None:
        mine = await a.create(take(None, "a-7f3k2"), role="shard")
        assert mine is not None
        await b.read()
        await b.update(take(mine, "b-x9q1z"), role="shard")

    run(sim, "a-7f3k2", "b-x9q1z", body=body)
    agents = [(e["method"], e["userAgent"]) for e in sim.journal_sync("mgmt")]
    assert agents == [
        ("POST", "fleet/0.1.0 (replica a-7f3k2)"),  # the namespace
        ("POST", "fleet/0.1.0 (replica a-7f3k2)"),
        ("GET", "fleet/0.1.0 (replica b-x9q1z)"),
        ("PUT", "fleet/0.1.0 (replica b-x9q1z)"),
    ]


def test_the_namespace_is_created_when_missing_and_an_existing_one_is_left_alone(
    sim: testing.SimHandle,
) -> None:
    async def body(a: management.Leases) -> None:
        await a.prepare()  # exists now (run prepared it): a 409, not an error
        status, ns = await a.client.request("GET", "/api/v1/namespaces/fleet-system", what="ns")
        assert status == 200 and ns["metadata"]["labels"]["fleet.dev/owner"] == "fleet"

    run(sim, "a", body=body)
    assert [e["status"] for e in sim.journal_sync("mgmt")][:2] == [201, 409]


def test_lease_requests_end_within_a_retry_period_each_and_two_in_all() -> None:
    s = management.settings_for(kube.Settings(), timings=T, replica="a")
    assert (s.request_timeout, s.retry_budget, s.max_attempts) == (2.0, 4.0, 3)
    assert s.user_agent == "fleet/0.1.0 (replica a)"
    assert dataclasses.replace(s, user_agent="").qps == kube.Settings().qps


def test_an_update_without_a_version_is_refused_before_anything_is_sent(sim: testing.SimHandle) -> None:
    async def body(a: management.Leases) -> None:
        with pytest.raises(ValueError, match="must carry the resourceVersion"):
            await a.update(take(None, "a"), role="shard")
        with pytest.raises(ValueError, match="must carry the resourceVersion"):
            await a.delete(take(None, "a"))

    run(sim, "a", body=body)
