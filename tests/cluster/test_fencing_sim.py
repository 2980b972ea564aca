"""Fencing on the inventory over real HTTP against `fleet sim` (fleet.cluster.apply.write_fenced_inventory):
a stale owner of a shard never writes over, or prunes after, a newer owner; each replica's requests are
told apart by their User-Agent in the sim's journal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from fleet.clients import kube, management
from fleet.cluster import apply
from fleet.core import fencing, inventory, leases, model
from fleet.sim import testing

BASE = kube.Settings(request_timeout=2.0, connect_timeout=1.0, retry_budget=3.0, backoff_base=0.05)
LEASE = "fleet-shard-7"
CM_A = model.ObjectRef("", "v1", "ConfigMap", "web", "a")
CM_B = model.ObjectRef("", "v1", "ConfigMap", "web", "b")
INVENTORY = "fleet-inventory-web"
SOURCE = "git.example.com/team/gitops"


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["c1", "mgmt"]) as handle:
        yield handle


def client(sim: testing.SimHandle, cluster: str, replica: str) -> kube.Client:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    settings = kube.with_settings(BASE, user_agent=management.user_agent(replica))
    return kube.Client(cluster=cluster, context=kc.context(cluster), settings=settings)


def fence(epoch: int) -> fencing.Fence:
    return fencing.Fence(lease=LEASE, epoch=epoch)


async def setup(c: kube.Client) -> None:
    for ns in ("fleet-system", "web"):
        await apply.ensure_namespace(c, ns, instance="fleet")


async def read(c: kube.Client) -> inventory.Inventory | None:
    doc = await c.get(apply.CONFIGMAP, namespace="fleet-system", name=INVENTORY)
    return None if doc is None else inventory.decode(doc, instance="fleet")


async def put(c: kube.Client, ref: model.ObjectRef) -> None:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ref.name, "namespace": ref.namespace, "labels": {"fleet.dev/owner": "fleet"}},
        "data": {"v": "1"},
    }
    await c.apply(apply.CONFIGMAP, obj, force=True)


async def write(c: kube.Client, refs: set[model.ObjectRef], mine: fencing.Fence | None) -> None:
    found = await read(c)
    await apply.write_fenced_inventory(
        c, "web", refs, instance="fleet", source=SOURCE, fence=mine, found=found
    )


def writes_by(sim: testing.SimHandle, replica: str) -> list[dict[str, Any]]:
    agent = management.user_agent(replica)
    return [e for e in sim.journal_sync("c1") if e["userAgent"] == agent and e["method"] != "GET"]


def test_a_stale_owner_that_reads_a_newer_fence_sends_no_write_and_prunes_nothing(
    sim: testing.SimHandle,
) -> None:
    async def main() -> None:
        a, b = client(sim, "c1", "a"), client(sim, "c1", "b")
        await setup(b)
        # b owns the shard at epoch 8: inventory first, then its objects.
        await write(b, {CM_A, CM_B}, fence(8))
        await put(b, CM_A)
        await put(b, CM_B)
        # a, paused while it held epoch 7, wakes up at an older revision without CM_B.
        with pytest.raises(
            apply.Fenced, match="fenced: written by a newer owner of shard lease fleet-shard-7"
        ):
            await write(a, {CM_A}, fence(7))
        found = await read(a)
        assert found is not None and found.fence == fence(8) and found.refs == {CM_A, CM_B}
        assert await a.get(apply.CONFIGMAP, namespace="web", name="b") is not None
        for c in (a, b):
            await c.aclose()

    anyio.run(main)
    assert writes_by(sim, "a") == []  # it read, and wrote nothing at all


def test_a_stale_owner_that_read_before_the_newer_owner_wrote_gets_a_conflict_not_a_write(
    sim: testing.SimHandle,
) -> None:
    async def main() -> None:
        a, b = client(sim, "c1", "a"), client(sim, "c1", "b")
        await setup(a)
        await write(a, {CM_A}, fence(7))
        await put(a, CM_A)
        seen_by_a = await read(a)  # a's round reads at epoch 7 ...
        await write(b, {CM_A, CM_B}, fence(8))  # ... b takes the shard over and writes ...
        await put(b, CM_B)
        with pytest.raises(kube.ConflictError):  # ... a's write over what it read is refused
            await apply.write_fenced_inventory(
                a, "web", {CM_A}, instance="fleet", source=SOURCE, fence=fence(7), found=seen_by_a
            )
        found = await read(b)
        assert found is not None and found.fence == fence(8) and found.refs == {CM_A, CM_B}
        for c in (a, b):
            await c.aclose()

    anyio.run(main)
    assert [(e["method"], e["status"]) for e in writes_by(sim, "a")][-1] == ("PATCH", 409)


def test_a_holder_whose_lease_was_created_again_lifts_its_epoch_above_the_fence_and_writes(
    sim: testing.SimHandle,
) -> None:
    t = leases.Timings()

    async def main() -> None:
        b, c = client(sim, "c1", "b"), client(sim, "c1", "c")
        leases_c = management.Leases(client(sim, "mgmt", "c"), instance="fleet")
        await leases_c.prepare()
        await setup(b)
        await write(b, {CM_A}, fence(8))  # b held the shard at epoch 8; then its Lease was deleted
        held = await leases_c.create(
            leases.acquiring(None, name=LEASE, me="c", wall=1_800_000_000.0, timings=t), role="shard"
        )
        assert held is not None and held.transitions == 1
        with pytest.raises(apply.Fenced) as fenced:
            await write(c, {CM_A, CM_B}, fence(held.transitions))
        # c still holds the lease (its renewal over the version it wrote succeeds): it lifts its epoch.
        raised = await leases_c.update(
            leases.raising(held, above=fenced.value.above, wall=1_800_000_001.0, timings=t), role="shard"
        )
        assert raised is not None and raised.transitions == 9
        await write(c, {CM_A, CM_B}, fence(raised.transitions))
        found = await read(c)
        assert found is not None and found.fence == fence(9)
        with pytest.raises(apply.Fenced):  # and b, stale at 8, is fenced out now
            await write(b, {CM_A}, fence(8))
        for x in (b, c, leases_c.client):
            await x.aclose()

    anyio.run(main)


def test_a_writer_without_a_lease_keeps_the_fence_it_found(sim: testing.SimHandle) -> None:
    async def main() -> None:
        b, person = client(sim, "c1", "b"), client(sim, "c1", "sync")
        await setup(b)
        # Written by server-side apply only (as earlier fleets created inventories): a field the next
        # apply leaves out is removed, so the fence stays only because the writer carries it.
        await apply.write_inventory(b, "web", {CM_A}, instance="fleet", source=SOURCE, fence=fence(8))
        await write(person, {CM_A, CM_B}, None)  # fleet sync: always writes
        found = await read(person)
        assert found is not None and found.refs == {CM_A, CM_B} and found.fence == fence(8)
        for c in (b, person):
            await c.aclose()

    anyio.run(main)
