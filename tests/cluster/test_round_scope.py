"""Which bundles a round of `fleet serve` plans (`fleet.cluster.scope`, docs/reconcile.md, "What a round
plans"), over real HTTP against `fleet sim`: on a cluster whose watch cache is fresh, only the bundles that
can have work; everything when the round reads the server, when the cache has a gap, or without the
memory of the rounds before (`fleet sync`).

The cache is filled from the server's own lists, as a watch fills it when it lists; another writer's
change reaches it the way a watch event does (`ObjectCache.event` with the object read back). The count
is `ClusterResult.planned` (the bundles the round planned and executed), never a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.cli import sync
from fleet.clients import kube, source
from fleet.cluster import apply, cache, reconcile, scope
from fleet.core import inventory, model
from fleet.sim import testing
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, sync_request

CLUSTER = "c-1"
BUNDLES = [f"b{i}" for i in range(10)]


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=[CLUSTER]) as handle:
        yield handle


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    r = GitOpsRepo(tmp_path / "repo")
    r.cluster(CLUSTER)
    for b in BUNDLES:
        r.bundle(b, [configmap(f"{b}-one"), configmap(f"{b}-two")], namespace="web", selector={})
    r.commit("first")
    return r


def client_for(sim: testing.SimHandle) -> kube.Client:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    return kube.Client(cluster=CLUSTER, context=kc.context(CLUSTER), settings=kube.Settings(retry_budget=3.0))


class Controller:
    """One cluster's client, cache and round memory, kept between rounds as `fleet serve` keeps them."""

    def __init__(self, sim: testing.SimHandle, repo: GitOpsRepo) -> None:
        self.sim, self.repo = sim, repo
        self.cache = cache.ObjectCache()
        self.memory = scope.Memory()
        self.client = client_for(sim)
        self.client.on_write = self.cache.wrote

    async def round(self, *, use_cache: bool = True, memory: bool = True) -> reconcile.ClusterResult:
        request = sync_request(self.repo.root, self.sim.kubeconfig, instance="fleet")
        parsed, targets, _ = await sync.prepare(request)
        claim = inventory.Claim(
            source=source.identity(self.repo.root),
            revision=parsed.revision or "",
            observed_at=inventory.now_rfc3339(),
            writer="test",
        )
        return await reconcile.reconcile_cluster(
            self.client,
            parsed.clusters[CLUSTER],
            targets[CLUSTER],
            options=reconcile.Options(wait=False, claim=claim),
            cache=self.cache if use_cache else None,
            memory=self.memory if memory else None,
        )

    async def start(self) -> None:
        """The first round (from the server), the cache as a watch fills it, then a round on the cache
        (the first one plans everything: nothing is known of the cache before it)."""
        assert (await self.round(use_cache=False)).state is model.State.SYNCED
        owned = await self.client.list(apply.CONFIGMAP, label_selector=f"{model.LABEL_OWNER}=fleet")
        self.cache.listed("v1", "ConfigMap", owned)
        self.cache.opened("v1", "ConfigMap")
        self.cache.listed("v1", "Namespace", await self.client.list(apply.NAMESPACE))
        self.cache.opened("v1", "Namespace")
        first = await self.round()
        assert first.state is model.State.SYNCED, first
        assert set(first.planned) == set(BUNDLES)

    async def restarted(self) -> reconcile.ClusterResult:
        """As after a restart of `fleet serve`: a new client, no cache and no memory; the first round reads
        the server (no watch yet: its cache comes after), then the watch lists every kind into a new cache.
        Returns that first round's result."""
        await self.client.aclose()
        self.client, self.memory = client_for(self.sim), scope.Memory()
        first = await self.round(use_cache=False)
        self.cache = cache.ObjectCache()
        self.client.on_write = self.cache.wrote
        return first

    async def watch_lists(self) -> None:
        """The new watch's first list of each kind (after the round that read the server)."""
        owned = await self.client.list(apply.CONFIGMAP, label_selector=f"{model.LABEL_OWNER}=fleet")
        self.cache.listed("v1", "ConfigMap", owned)
        self.cache.opened("v1", "ConfigMap")
        self.cache.listed("v1", "Namespace", await self.client.list(apply.NAMESPACE))
        self.cache.opened("v1", "Namespace")

    async def seen_by_watch(self, name: str) -> None:
        """The watch event of ConfigMap web/<name> as it is on the server now."""
        obj = await self.client.get(apply.CONFIGMAP, namespace="web", name=name)
        assert obj is not None
        self.cache.event("MODIFIED", {"apiVersion": "v1", "kind": "ConfigMap", **obj})


def running(sim: testing.SimHandle, repo: GitOpsRepo, body: Any) -> None:
    async def main() -> None:
        fleet = Controller(sim, repo)
        try:
            await fleet.start()
            await body(fleet)
        finally:
            await fleet.client.aclose()

    anyio.run(main)


async def other_writer(sim: testing.SimHandle, path: str, body: dict[str, Any]) -> None:
    """Someone else's merge patch (its own client: the controller's cache hears nothing of it)."""
    client = client_for(sim)
    try:
        await client.request("PATCH", path, what=path, body=body, content_type="application/merge-patch+json")
    finally:
        await client.aclose()


def change_b3(repo: GitOpsRepo) -> None:
    repo.bundle("b3", [configmap("b3-one", key="new"), configmap("b3-two")], namespace="web", selector={})
    repo.commit("change b3")


def test_a_commit_that_changes_one_bundle_of_ten_plans_and_executes_only_that_one(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        before = await fleet.round()
        assert before.planned == (), before.planned  # nothing changed: nothing planned
        change_b3(repo)
        result = await fleet.round()
        assert result.planned == ("b3",), result.planned
        assert result.state is model.State.SYNCED, result
        # The others keep what they were: Synced at their hash, not unknown or blank.
        assert set(result.bundles) == set(BUNDLES)
        for b in BUNDLES:
            assert result.bundles[b].state is model.State.SYNCED, result.bundles[b]
            assert result.bundles[b].hash == before.bundles[b].hash or b == "b3"
            assert result.bundles[b].objects == 2
        assert result.bundles["b3"].hash != before.bundles["b3"].hash
        assert result.changes.count(model.Action.CONFIGURED) == 1

    running(sim, repo, body)
    assert live_objects(sim, CLUSTER, namespace="web")["b3-one"]["data"] == {"key": "new"}


def test_drift_of_an_unchanged_bundle_seen_by_the_watch_is_repaired_by_the_next_round(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        await other_writer(sim, "/api/v1/namespaces/web/configmaps/b5-two", {"data": {"key": "edited"}})
        await fleet.seen_by_watch("b5-two")
        change_b3(repo)
        result = await fleet.round()
        assert set(result.planned) == {"b3", "b5"}, result.planned
        assert result.state is model.State.SYNCED, result
        assert result.changes.count(model.Action.CONFIGURED) == 2

    running(sim, repo, body)
    assert live_objects(sim, CLUSTER, namespace="web")["b5-two"]["data"] == {"key": "value"}


def test_a_round_that_reads_the_server_plans_every_bundle_and_repairs_what_the_cache_did_not_see(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        # The watch never hears of this edit: only a round verifying from the server (the resync) finds it.
        await other_writer(sim, "/api/v1/namespaces/web/configmaps/b7-one", {"data": {"key": "edited"}})
        assert (await fleet.round()).planned == ()
        result = await fleet.round(use_cache=False)
        assert set(result.planned) == set(BUNDLES), result.planned
        assert result.changes.count(model.Action.CONFIGURED) == 1

    running(sim, repo, body)
    assert live_objects(sim, CLUSTER, namespace="web")["b7-one"]["data"] == {"key": "value"}


def test_after_a_round_that_read_the_server_the_rounds_on_the_watched_cache_plan_only_what_changed(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        fleet.memory.watched = fleet.cache  # as `fleet serve` says which cache its cluster's watch keeps
        assert set((await fleet.round(use_cache=False)).planned) == set(BUNDLES)  # a resync
        change_b3(repo)
        assert (await fleet.round()).planned == ("b3",)

    running(sim, repo, body)


def test_a_gap_in_a_watch_stream_makes_the_round_plan_every_bundle(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        fleet.cache.closed("v1", "ConfigMap")  # its stream ended: until it is open again, a gap
        result = await fleet.round()
        assert set(result.planned) == set(BUNDLES), result.planned
        fleet.cache.opened("v1", "ConfigMap")
        fleet.cache.listed("v1", "ConfigMap", await fleet.client.list(apply.CONFIGMAP))  # a relist
        fleet.cache.opened("v1", "ConfigMap")
        assert set((await fleet.round()).planned) == set(BUNDLES)
        assert (await fleet.round()).planned == ()

    running(sim, repo, body)


def test_without_the_memory_of_earlier_rounds_every_bundle_is_planned_as_fleet_sync_does(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        change_b3(repo)
        result = await fleet.round(memory=False)
        assert set(result.planned) == set(BUNDLES), result.planned

    running(sim, repo, body)


def test_a_bundle_that_failed_is_planned_again_until_it_is_synced(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        # b4 declares b2's object: both are a conflict, Failed, and planned at every round until fixed.
        repo.bundle("b4", [configmap("b4-one"), configmap("b2-one")], namespace="web", selector={})
        repo.commit("clash")
        clash = await fleet.round()
        assert clash.bundles["b4"].state is model.State.FAILED, clash.bundles["b4"]
        again = await fleet.round()
        assert {"b2", "b4"} <= set(again.planned), again.planned
        assert again.bundles["b4"].state is model.State.FAILED
        repo.bundle("b4", [configmap("b4-one"), configmap("b4-two")], namespace="web", selector={})
        repo.commit("fixed")
        fixed = await fleet.round()
        assert fixed.state is model.State.SYNCED, fixed
        assert (await fleet.round()).planned == ()

    running(sim, repo, body)


def _cm(name: str, rv: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": "web", "resourceVersion": rv, "labels": {model.LABEL_OWNER: "fleet"}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}


def test_the_cache_says_what_changed_since_a_mark_leaving_out_fleets_own_answers() -> None:
    c = cache.ObjectCache(log_size=3)
    c.listed("v1", "ConfigMap", [_cm("a", "1"), _cm("b", "1")])
    mark = c.changes
    assert c.changed_since(mark - 1) is None  # a list: what changed before it is not known
    assert c.changed_since(mark) == set()
    ref = model.ObjectRef("", "v1", "ConfigMap", "web", "a")
    c.wrote("apply", ref, _cm("a", "2"))  # fleet's own apply answer: not a change
    c.event("MODIFIED", _cm("a", "2"))  # its event, seen already
    assert c.changed_since(mark) == set()
    c.event("MODIFIED", _cm("b", "3"))  # another writer
    c.event("DELETED", _cm("a", "4"))
    assert c.changed_since(mark) == {("", "ConfigMap", "web", "b"), ("", "ConfigMap", "web", "a")}
    for rv in ("5", "6", "7"):
        c.event("MODIFIED", _cm("b", rv))
    assert c.changed_since(mark) is None  # the log no longer reaches back to the mark
    assert c.changed_since(c.changes) == set()


def test_after_a_restart_the_first_round_on_the_new_watch_cache_plans_only_what_changed(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        first = await fleet.restarted()
        assert set(first.planned) == set(BUNDLES) and first.changes.count(model.Action.UNCHANGED) == 20
        await fleet.watch_lists()
        change_b3(repo)
        result = await fleet.round()
        assert result.planned == ("b3",), result.planned
        assert result.state is model.State.SYNCED, result
        assert {b: r.state for b, r in result.bundles.items()} == dict.fromkeys(BUNDLES, model.State.SYNCED)

    running(sim, repo, body)
    assert live_objects(sim, CLUSTER, namespace="web")["b3-one"]["data"] == {"key": "new"}


def test_a_change_between_the_round_that_read_the_server_and_the_first_list_of_the_cache_is_planned(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        await fleet.restarted()
        # Another writer's edit after that round's read, before the watch's list: no event will say it.
        await other_writer(sim, "/api/v1/namespaces/web/configmaps/b5-two", {"data": {"key": "edited"}})
        await fleet.watch_lists()
        change_b3(repo)
        result = await fleet.round()
        assert set(result.planned) == {"b3", "b5"}, result.planned
        assert result.changes.count(model.Action.CONFIGURED) == 2, result.changes

    running(sim, repo, body)
    assert live_objects(sim, CLUSTER, namespace="web")["b5-two"]["data"] == {"key": "value"}


def test_an_object_of_fleets_that_no_bundle_names_appearing_before_the_first_list_makes_every_bundle_planned(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        await fleet.restarted()
        stray = configmap("stray")
        stray["metadata"]["labels"] = {model.LABEL_OWNER: "fleet"}
        client = client_for(sim)
        try:
            await client.request("POST", "/api/v1/namespaces/web/configmaps", what="stray", body=stray)
        finally:
            await client.aclose()
        await fleet.watch_lists()
        assert set((await fleet.round()).planned) == set(BUNDLES)

    running(sim, repo, body)


def test_a_relist_or_a_gap_after_the_round_that_read_the_server_still_makes_every_bundle_planned(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        await fleet.restarted()
        await fleet.watch_lists()
        fleet.cache.listed("v1", "ConfigMap", await fleet.client.list(apply.CONFIGMAP))  # a relist (a 410)
        fleet.cache.opened("v1", "ConfigMap")
        assert set((await fleet.round()).planned) == set(BUNDLES)
        await fleet.restarted()
        await fleet.watch_lists()
        fleet.cache.closed("v1", "Namespace")  # a gap: that stream is not open now
        assert set((await fleet.round()).planned) == set(BUNDLES)

    running(sim, repo, body)


def test_a_cache_compares_a_kinds_objects_with_versions_read_elsewhere_and_counts_its_lists() -> None:
    c = cache.ObjectCache()
    assert c.lists("", "ConfigMap") == 0
    c.listed("v1", "ConfigMap", [_cm("a", "1"), _cm("b", "2"), _cm("c", "3")])
    assert c.lists("", "ConfigMap") == 1
    key = {n: ("", "ConfigMap", "web", n) for n in "abcd"}
    read = {key["a"]: "1", key["b"]: "1", key["d"]: "4"}
    assert c.differs("", "ConfigMap", read) == {key["b"], key["c"], key["d"]}
    c.dropped("v1", "ConfigMap")
    c.listed("v1", "ConfigMap", [])
    assert c.lists("", "ConfigMap") == 2  # listed again (after a drop, or a 410): not the first


def test_a_round_before_the_new_caches_first_list_reads_the_server_and_the_one_after_plans_only_what_changed(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        await fleet.restarted()
        fleet.memory.watched = fleet.cache  # the watch is there, its lists still to come
        early = await fleet.round()  # nothing fresh: every kind read from the server
        assert set(early.planned) == set(BUNDLES), early.planned
        await fleet.watch_lists()
        change_b3(repo)
        assert (await fleet.round()).planned == ("b3",)

    running(sim, repo, body)


def test_an_object_moved_to_another_bundle_is_planned_with_the_bundle_that_declares_it_now(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        repo.bundle("b3", [configmap("b3-one")], namespace="web", selector={})
        repo.bundle(
            "b4", [configmap(n) for n in ("b4-one", "b4-two", "b3-two")], namespace="web", selector={}
        )
        repo.commit("b3-two moves to b4")
        moved = await fleet.round()
        assert moved.state is model.State.SYNCED, moved
        assert {"b3", "b4"} <= set(moved.planned), moved.planned
        for named_by in (("b3", "b4"), ("b4",)):
            await other_writer(sim, "/api/v1/namespaces/web/configmaps/b3-two", {"data": {"key": "edited"}})
            await fleet.seen_by_watch("b3-two")
            result = await fleet.round()
            # First b3 too (its last plan named it: the step that dropped it from its inventory), then b4
            # alone: b3's plan since names it no more.
            assert result.planned == named_by, result.planned
            assert result.changes.count(model.Action.CONFIGURED) == 1

    running(sim, repo, body)
    assert live_objects(sim, CLUSTER, namespace="web")["b3-two"]["data"] == {"key": "value"}


def test_the_one_bundle_a_round_plans_failing_its_apply_fails_alone_and_is_planned_again(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        await sim.faults(CLUSTER, {"status": 422, "method": "PATCH", "path": "configmaps/b3-one$"})
        change_b3(repo)
        failed = await fleet.round()
        assert failed.planned == ("b3",), failed.planned
        assert failed.bundles["b3"].state is model.State.FAILED, failed.bundles["b3"]
        assert "b3-one" in failed.bundles["b3"].message
        assert all(failed.bundles[b].state is model.State.SYNCED for b in BUNDLES if b != "b3")
        await sim.clear_faults(CLUSTER)
        again = await fleet.round()
        assert again.planned == ("b3",) and again.state is model.State.SYNCED, again

    running(sim, repo, body)
