"""Sources and revisions on a cluster, at the reconcile layer over real HTTP against `fleet sim`.

Inventories say which source wrote them; every object a round writes carries its writer's claim
(`fleet.dev/claim`), and a source's revision record holds the claim of the last round that deleted
something. An older replica that finds a newer claim in either writes nothing (rounds and drift repairs),
a person's `fleet sync` always applies, an inventory from an earlier fleet is adopted, `fleet diff`
reports another source's bundles as conflicts, and the revision record is written by compare-and-swap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.cli import sync
from fleet.clients import source
from fleet.cluster import apply, diff, repair
from fleet.core import inventory, model
from fleet.sim import testing
from tests.support.claims import CLUSTER, claim_for, claims_repo, claims_sim, client_for, last_seq, one_round
from tests.support.reconcile import (
    GitOpsRepo,
    configmap,
    live_objects,
    sync_in_process,
    sync_request,
    writes,
)

EARLY = "2026-01-01T00:00:00.000Z"
LATE = "2099-01-01T00:00:00.000Z"

__all__ = ["claims_repo", "claims_sim"]  # the fixtures `sim` and `repo`


def write_record(sim: testing.SimHandle, claim: inventory.Claim) -> None:
    async def main() -> None:
        client = client_for(sim)
        try:
            await apply.ensure_namespace(client, "fleet-system", instance="fleet")
            _, rv = await apply.read_record(client, instance="fleet", source=claim.source)
            await apply.write_record(client, claim, instance="fleet", resource_version=rv)
        finally:
            await client.aclose()

    anyio.run(main)


def record_of(sim: testing.SimHandle, repo: GitOpsRepo) -> dict[str, Any]:
    name = inventory.record_name(instance="fleet", source=source.identity(repo.root))
    return live_objects(sim, CLUSTER, namespace="fleet-system")[name]["data"]


def test_a_controller_holding_an_older_revision_writes_nothing_and_says_who_is_ahead(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    first = str(repo.repo.head.target)
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    write_record(sim, claim_for(repo, "f" * 40, LATE))  # a newer replica got here first
    repo.bundle("web", [configmap("one", key="changed")], namespace="web", selector={})
    repo.commit("older replica's view")
    mark = last_seq(sim)
    result = one_round(sim, repo, claim_for(repo, first, EARLY))
    assert result.state is model.State.FAILED
    assert f"superseded by revision {'f' * 40} written by another controller (test" in result.message
    assert all(b.state is model.State.FAILED for b in result.bundles.values())
    assert writes(sim.journal_sync(CLUSTER, since=mark)) == []
    assert set(live_objects(sim, CLUSTER, namespace="web")) >= {"one", "two"}


def claim_on(sim: testing.SimHandle, name: str) -> str | None:
    obj = live_objects(sim, CLUSTER, namespace="web").get(name)
    assert obj is not None, name
    return (obj["metadata"].get("annotations") or {}).get(model.ANNOTATION_CLAIM)


def has_record(sim: testing.SimHandle, repo: GitOpsRepo) -> bool:
    name = inventory.record_name(instance="fleet", source=source.identity(repo.root))
    return name in live_objects(sim, CLUSTER, namespace="fleet-system")


def test_a_round_marks_every_object_it_writes_with_its_claim_and_writes_no_record_without_a_delete(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    first = str(repo.repo.head.target)
    early = claim_for(repo, "0" * 40, EARLY)
    assert one_round(sim, repo, early).state is model.State.SYNCED
    assert claim_on(sim, "one") == claim_on(sim, "two") == early.mark()
    mark = last_seq(sim)
    result = one_round(sim, repo, claim_for(repo, first, LATE))  # nothing to write: nothing rewritten
    assert result.state is model.State.SYNCED and writes(sim.journal_sync(CLUSTER, since=mark)) == []
    repo.bundle("web", [configmap("one", key="changed"), configmap("two")], namespace="web", selector={})
    second = repo.commit("change")
    late = claim_for(repo, second, LATE)
    result = one_round(sim, repo, late)
    assert result.state is model.State.SYNCED
    done = [(w["method"], w["path"]) for w in writes(sim.journal_sync(CLUSTER, since=mark))]
    assert done == [("PATCH", "/api/v1/namespaces/web/configmaps/one")], done  # one write: the object
    assert claim_on(sim, "one") == late.mark()
    assert claim_on(sim, "two") == early.mark()  # unchanged, not rewritten
    assert not has_record(sim, repo)
    assert inventory.claim_of(live_objects(sim, CLUSTER, namespace="web")["one"], source=late.source) == late


def test_a_round_that_deletes_records_its_claim_first_so_an_older_controller_puts_nothing_back(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    first = str(repo.repo.head.target)
    assert one_round(sim, repo, claim_for(repo, first, EARLY)).state is model.State.SYNCED
    repo.bundle("web", [configmap("one")], namespace="web", selector={})
    second = repo.commit("drop two")
    mark = last_seq(sim)
    assert one_round(sim, repo, claim_for(repo, second, LATE)).state is model.State.SYNCED
    done = [(w["method"], w["path"]) for w in writes(sim.journal_sync(CLUSTER, since=mark))]
    assert done[0] == ("POST", "/api/v1/namespaces/fleet-system/configmaps"), done  # the record, first
    assert ("DELETE", "/api/v1/namespaces/web/configmaps/two") in done[1:], done
    assert record_of(sim, repo)["revision"] == second
    assert record_of(sim, repo)["observedAt"] == LATE
    # The older controller still has `two`: it finds the newer claim in the record and puts nothing back.
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={})
    repo.commit("older replica's view")
    mark = last_seq(sim)
    result = one_round(sim, repo, claim_for(repo, first, EARLY))
    assert result.state is model.State.FAILED and f"superseded by revision {second}" in result.message
    assert writes(sim.journal_sync(CLUSTER, since=mark)) == []
    assert "two" not in live_objects(sim, CLUSTER, namespace="web")


def test_a_controller_holding_an_older_revision_finds_the_newer_claim_on_an_object_and_writes_nothing(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    first = str(repo.repo.head.target)
    assert one_round(sim, repo, claim_for(repo, first, EARLY)).state is model.State.SYNCED
    repo.bundle("web", [configmap("one", key="changed"), configmap("two")], namespace="web", selector={})
    second = repo.commit("change")
    assert one_round(sim, repo, claim_for(repo, second, LATE)).state is model.State.SYNCED
    assert not has_record(sim, repo)  # the claim is on the changed object only
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={})
    repo.commit("older replica's view")
    mark = last_seq(sim)
    result = one_round(sim, repo, claim_for(repo, first, EARLY))
    assert result.state is model.State.FAILED
    assert f"superseded by revision {second} written by another controller (test" in result.message
    assert writes(sim.journal_sync(CLUSTER, since=mark)) == []
    assert live_objects(sim, CLUSTER, namespace="web")["one"]["data"] == {"key": "changed"}
    assert one_round(sim, repo, claim_for(repo, second, LATE)).state is model.State.SYNCED


def test_a_persons_fleet_sync_applies_over_a_newer_revision_record_and_records_itself(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    write_record(sim, claim_for(repo, "f" * 40, LATE))
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert result.ok
    assert set(live_objects(sim, CLUSTER, namespace="web")) >= {"one", "two"}
    record = record_of(sim, repo)
    assert record["revision"] == str(repo.repo.head.target)
    assert record["writer"].startswith("fleet sync on ")
    mark = claim_on(sim, "one")
    assert mark is not None and " fleet sync on " in mark


def test_a_drift_repair_never_writes_back_an_older_revision(sim: testing.SimHandle, repo: GitOpsRepo) -> None:
    first = str(repo.repo.head.target)
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    live = live_objects(sim, CLUSTER, namespace="web")["one"]
    wanted: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap"}
    wanted["metadata"] = {
        "name": "one",
        "namespace": "web",
        "labels": live["metadata"]["labels"],
        "annotations": live["metadata"]["annotations"],
    }
    wanted["data"] = {"key": "as the older revision had it"}
    ref = model.ObjectRef.of(wanted)
    write_record(sim, claim_for(repo, "f" * 40, LATE))
    mark = last_seq(sim)

    async def main(claim: inventory.Claim) -> model.ChangeSet:
        client = client_for(sim)
        try:
            done = await repair.repair_objects(client, {ref: wanted}, instance="fleet", claim=claim)
            return done.changes
        finally:
            await client.aclose()

    changes = anyio.run(main, claim_for(repo, first, EARLY))
    assert [c.action for c in changes.changes] == [model.Action.SKIPPED]
    assert "superseded by revision" in changes.changes[0].message
    assert writes(sim.journal_sync(CLUSTER, since=mark)) == []
    # the newer claim itself repairs
    changes = anyio.run(main, claim_for(repo, "f" * 40, LATE))
    assert [c.action for c in changes.changes] == [model.Action.CONFIGURED], changes


def test_a_drift_repair_leaves_an_object_that_carries_a_newer_claim(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    first = str(repo.repo.head.target)
    assert one_round(sim, repo, claim_for(repo, first, EARLY)).state is model.State.SYNCED
    repo.bundle("web", [configmap("one", key="changed"), configmap("two")], namespace="web", selector={})
    second = repo.commit("change")
    assert one_round(sim, repo, claim_for(repo, second, LATE)).state is model.State.SYNCED
    live = live_objects(sim, CLUSTER, namespace="web")["one"]
    wanted: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap"}
    wanted["metadata"] = {"name": "one", "namespace": "web", "labels": live["metadata"]["labels"]}
    wanted["data"] = {"key": "value"}  # as the older revision has it
    ref = model.ObjectRef.of(wanted)
    mark = last_seq(sim)

    async def main(claim: inventory.Claim) -> model.ChangeSet:
        client = client_for(sim)
        try:
            return (await repair.repair_objects(client, {ref: wanted}, instance="fleet", claim=claim)).changes
        finally:
            await client.aclose()

    changes = anyio.run(main, claim_for(repo, first, EARLY))
    assert [c.action for c in changes.changes] == [model.Action.SKIPPED], changes
    assert f"superseded by revision {second}" in changes.changes[0].message
    assert writes(sim.journal_sync(CLUSTER, since=mark)) == []
    changes = anyio.run(main, claim_for(repo, first, "2098-01-01T00:00:00.000Z"))
    assert [c.action for c in changes.changes] == [model.Action.SKIPPED], changes  # LATE is later still
    newer = claim_for(repo, "e" * 40, "2100-01-01T00:00:00.000Z")
    changes = anyio.run(main, newer)
    assert [c.action for c in changes.changes] == [model.Action.CONFIGURED], changes
    assert claim_on(sim, "one") == newer.mark()


def test_the_revision_record_is_written_by_compare_and_swap(sim: testing.SimHandle, repo: GitOpsRepo) -> None:
    write_record(sim, claim_for(repo, "9" * 40, EARLY))

    async def main() -> None:
        client = client_for(sim)
        try:
            mine = claim_for(repo, "a" * 40, EARLY)
            found, rv = await apply.read_record(client, instance="fleet", source=mine.source)
            assert found is not None and rv is not None
            await apply.write_record(
                client, claim_for(repo, "b" * 40, LATE), instance="fleet", resource_version=rv
            )
            with pytest.raises(apply.RecordRaced, match="written by another controller of the same source"):
                await apply.write_record(client, mine, instance="fleet", resource_version=rv)
            with pytest.raises(apply.RecordRaced):
                await apply.write_record(client, mine, instance="fleet", resource_version=None)
            again, _ = await apply.read_record(client, instance="fleet", source=mine.source)
            assert again is not None and again.revision == "b" * 40
        finally:
            await client.aclose()

    anyio.run(main)


def test_a_record_written_meanwhile_with_the_same_revision_is_no_race(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    """Two replicas of one source at the same commit both read the record, then both write it: the second
    finds the record holding its own revision and goes on (it failed its round with RecordRaced before,
    which a rollout counted as a failed apply and halted on)."""
    write_record(sim, claim_for(repo, "9" * 40, EARLY))

    async def main() -> None:
        client = client_for(sim)
        try:
            one, two = claim_for(repo, "c" * 40, LATE), claim_for(repo, "c" * 40, EARLY)
            found, rv = await apply.read_record(client, instance="fleet", source=one.source)
            assert found is not None and rv is not None
            await apply.write_record(client, one, instance="fleet", resource_version=rv)
            await apply.write_record(client, two, instance="fleet", resource_version=rv)  # stale: no raise
            again, _ = await apply.read_record(client, instance="fleet", source=one.source)
            assert again is not None and again.revision == "c" * 40
            with pytest.raises(apply.RecordRaced):  # another revision meanwhile is still a race
                await apply.write_record(
                    client, claim_for(repo, "d" * 40, LATE), instance="fleet", resource_version=rv
                )
        finally:
            await client.aclose()

    anyio.run(main)


def test_an_inventory_written_by_an_earlier_fleet_is_adopted_and_pruned_from_as_before(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    one_round(sim, repo, None)  # no source named: written as earlier fleets wrote it
    inv = live_objects(sim, CLUSTER, namespace="fleet-system")["fleet-inventory-web"]
    assert "source" not in inv["data"]
    repo.bundle("web", [configmap("one")], namespace="web", selector={})
    repo.commit("drop two")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    assert set(live_objects(sim, CLUSTER, namespace="web")) & {"one", "two"} == {"one"}
    inv = live_objects(sim, CLUSTER, namespace="fleet-system")["fleet-inventory-web"]
    assert inv["data"]["source"] == source.identity(repo.root)


def test_diff_reports_another_sources_bundles_as_conflicts_never_as_removed(
    sim: testing.SimHandle, repo: GitOpsRepo, tmp_path: Path
) -> None:
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    other = GitOpsRepo(tmp_path / "other")
    other.cluster(CLUSTER)
    other.bundle("api", [configmap("api")], namespace="api", selector={})
    other.commit("other team")

    async def main() -> diff.ClusterDiff:
        request = sync_request(other.root, sim.kubeconfig, instance="fleet")
        parsed, targets, _ = await sync.prepare(request)
        client = client_for(sim)
        try:
            return await diff.diff_cluster(
                client,
                parsed.clusters[CLUSTER],
                targets[CLUSTER],
                instance="fleet",
                source=source.identity(other.root),
            )
        finally:
            await client.aclose()

    result = anyio.run(main)
    kinds = {(d.bundle, d.kind) for d in result.diffs}
    assert ("web", "conflict") in kinds and ("web", "removed") not in kinds
    (web,) = [d for d in result.diffs if d.bundle == "web"]
    assert str(repo.root) in web.text and str(other.root) in web.text
    assert result.failed


def test_an_inventory_that_appeared_since_the_round_read_the_cluster_is_never_overwritten(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    before = live_objects(sim, CLUSTER, namespace="fleet-system")["fleet-inventory-web"]
    mark = last_seq(sim)

    async def main() -> None:
        client = client_for(sim)
        try:
            with pytest.raises(apply.InventoryRaced, match="fleet-inventory-web: created by another writer"):
                await apply.create_inventory(client, "web", [], instance="fleet", source="someone else")
        finally:
            await client.aclose()

    anyio.run(main)
    assert writes(sim.journal_sync(CLUSTER, since=mark)) == []
    assert live_objects(sim, CLUSTER, namespace="fleet-system")["fleet-inventory-web"] == before
