"""Rounds that read a cluster's watch cache (`fleet.cluster.cache`) instead of the server, over real HTTP
against `fleet sim` (docs/reconcile.md, "Reading from the watch caches").

The cache here is filled from the server's own lists, as a watch fills it when it lists, and no stream
runs afterwards: it is frozen at "the cache's last event", so another writer's change after that point is
exactly the change a cache has not seen yet. Each test counts the round's requests in the sim's journal.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from fleet.cli import sync
from fleet.clients import kube, source
from fleet.cluster import apply, cache, reconcile
from fleet.core import inventory, model
from fleet.sim import testing
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, sync_request

CLUSTER = "c-1"


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=[CLUSTER]) as handle:
        yield handle


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    r = GitOpsRepo(tmp_path / "repo")
    r.cluster(CLUSTER)
    r.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={})
    r.commit("first")
    return r


def client_for(sim: testing.SimHandle) -> kube.Client:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    return kube.Client(cluster=CLUSTER, context=kc.context(CLUSTER), settings=kube.Settings(retry_budget=3.0))


async def prime(client: kube.Client, into: cache.ObjectCache) -> None:
    """What a watch holds once its lists are read and its streams open: fleet's ConfigMaps, every
    Namespace."""
    owned = await client.list(apply.CONFIGMAP, label_selector=f"{model.LABEL_OWNER}=fleet")
    into.listed("v1", "ConfigMap", owned)
    into.opened("v1", "ConfigMap")
    into.listed("v1", "Namespace", await client.list(apply.NAMESPACE))
    into.opened("v1", "Namespace")


class Controller:
    """One cluster's client with its cache, kept between rounds as the engine keeps them."""

    def __init__(self, sim: testing.SimHandle, repo: GitOpsRepo) -> None:
        self.sim, self.repo = sim, repo
        self.cache = cache.ObjectCache()
        self.client = client_for(sim)
        self.client.on_write = self.cache.wrote

    async def seq(self) -> int:
        journal = await self.sim.journal(CLUSTER)
        return journal[-1]["seq"] if journal else 0

    async def sent(self, since: int) -> list[str]:
        return [f"{e['method']} {e['path']}" for e in await self.sim.journal(CLUSTER, since=since)]

    async def round(self, *, use_cache: bool = True) -> reconcile.ClusterResult:
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
        )

    async def start(self) -> None:
        """The first round (from the server), then the cache as a watch fills it."""
        assert (await self.round(use_cache=False)).state is model.State.SYNCED
        await prime(self.client, self.cache)


def running(sim: testing.SimHandle, repo: GitOpsRepo, body: Any) -> None:
    async def main() -> None:
        fleet = Controller(sim, repo)
        try:
            await fleet.start()
            await body(fleet)
        finally:
            await fleet.client.aclose()

    anyio.run(main)


async def other_writer(sim: testing.SimHandle, method: str, path: str, body: dict[str, Any]) -> None:
    """Someone else's write (its own client: the controller's cache hears nothing of it)."""
    client = client_for(sim)
    try:
        content = "application/merge-patch+json" if method == "PATCH" else "application/json"
        await client.request(method, path, what=path, body=body, content_type=content)
    finally:
        await client.aclose()


def test_a_prune_planned_on_a_stale_cache_is_judged_on_the_server_and_spares_what_another_writer_took(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        # After the cache's last event, another writer takes ConfigMap two over; the next commit drops it.
        takeover = {"metadata": {"labels": {model.LABEL_OWNER: "team-b"}}}
        await other_writer(sim, "PATCH", "/api/v1/namespaces/web/configmaps/two", takeover)
        repo.bundle("web", [configmap("one")], namespace="web", selector={})
        repo.commit("drop two")
        mark = await fleet.seq()
        result = await fleet.round()
        sent = await fleet.sent(mark)
        assert "GET /api/v1/configmaps" in sent, sent  # the plan would delete: judged on the server's list
        assert "DELETE /api/v1/namespaces/web/configmaps/two" not in sent, sent
        assert result.state is model.State.SYNCED, result

    running(sim, repo, body)
    two = live_objects(sim, CLUSTER, namespace="web")["two"]
    assert two["metadata"]["labels"][model.LABEL_OWNER] == "team-b"


def test_a_prune_of_fleets_own_object_reads_the_server_then_deletes(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        repo.bundle("web", [configmap("one")], namespace="web", selector={})
        repo.commit("drop two")
        mark = await fleet.seq()
        result = await fleet.round()
        sent = await fleet.sent(mark)
        deleted = sent.index("DELETE /api/v1/namespaces/web/configmaps/two")
        assert "GET /api/v1/configmaps" in sent[:deleted], sent
        assert result.state is model.State.SYNCED, result

    running(sim, repo, body)
    assert "two" not in live_objects(sim, CLUSTER, namespace="web")


def test_fleets_own_writes_keep_the_cache_current_so_the_next_round_sends_nothing(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        repo.bundle("web", [configmap("one", key="changed"), configmap("two")], namespace="web", selector={})
        repo.commit("change one")
        mark = await fleet.seq()
        assert (await fleet.round()).state is model.State.SYNCED
        sent = await fleet.sent(mark)
        assert sent == [
            "PATCH /api/v1/namespaces/web/configmaps/one",
        ], sent  # the changed object, carrying the round's claim; no read, no revision record
        mark = await fleet.seq()
        result = await fleet.round()  # no stream runs: only the answers to its own writes told the cache
        assert await fleet.sent(mark) == []
        assert result.state is model.State.SYNCED
        assert result.bundles["web"].changes.count(model.Action.UNCHANGED) == 2

    running(sim, repo, body)


def test_a_create_that_finds_the_object_there_sends_the_next_round_to_the_server(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    async def body(fleet: Controller) -> None:
        # Namespace shop appears after the cache's last event; a new bundle wants it.
        shop = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
        await other_writer(sim, "POST", "/api/v1/namespaces", shop)
        repo.bundle("shop", [configmap("cart")], namespace="shop", selector={})
        repo.commit("shop")
        assert (await fleet.round()).state is model.State.SYNCED  # its create of shop finds it there
        mark = await fleet.seq()
        assert (await fleet.round()).state is model.State.SYNCED
        sent = await fleet.sent(mark)
        assert "GET /api/v1/namespaces" in sent, sent
        assert not [r for r in sent if not r.startswith("GET")], sent

    running(sim, repo, body)


def _cm(name: str, rv: str, **data: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": "web", "resourceVersion": rv, "labels": {model.LABEL_OWNER: "fleet"}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def test_a_kind_answers_only_while_listed_with_its_stream_open_and_nothing_of_it_in_doubt() -> None:
    c = cache.ObjectCache()
    assert not c.fresh("", "ConfigMap", "v1")  # not watched yet
    c.listed("v1", "ConfigMap", [_cm("one", "5")])
    assert not c.fresh("", "ConfigMap", "v1")  # listed, stream not open yet
    c.opened("v1", "ConfigMap")
    assert c.fresh("", "ConfigMap", "v1") and not c.fresh("", "ConfigMap", "v2")
    ref = model.ObjectRef("", "v1", "ConfigMap", "web", "one")
    c.wrote("delete", ref, None)
    assert not c.fresh("", "ConfigMap", "v1")  # fleet deleted it: in doubt until the watch says
    c.event("DELETED", _cm("one", "7"))
    assert c.fresh("", "ConfigMap", "v1") and c.objects("", "ConfigMap") == []
    c.closed("v1", "ConfigMap")  # a gap: reconnect, 410, the stream's end
    assert not c.fresh("", "ConfigMap", "v1")


def test_an_apply_answer_is_not_replaced_by_an_older_event_and_managed_fields_are_not_kept() -> None:
    c = cache.ObjectCache()
    c.listed("v1", "ConfigMap", [_cm("one", "5", mode="a")])
    c.opened("v1", "ConfigMap")
    answer = _cm("one", "9", mode="c")
    answer["metadata"]["managedFields"] = [{"manager": "fleet"}]
    c.wrote("apply", model.ObjectRef("", "v1", "ConfigMap", "web", "one"), answer)
    c.event("MODIFIED", _cm("one", "8", mode="b"))  # arrives after the answer, yet older
    (one,) = c.objects("", "ConfigMap")
    assert one["data"] == {"mode": "c"} and "managedFields" not in one["metadata"]


def test_a_doubt_raised_while_a_round_reads_the_server_outlives_that_round() -> None:
    c = cache.ObjectCache()
    c.listed("v1", "Namespace", [])
    c.opened("v1", "Namespace")
    before = c.doubts
    c.wrote("exists", model.ObjectRef("", "v1", "Namespace", "", "shop"), None)  # during the round's reads
    c.trust_again(doubts=before)
    assert not c.fresh("", "Namespace", "v1")
    c.trust_again(doubts=c.doubts)  # the next round read after it
    assert c.fresh("", "Namespace", "v1")


def test_a_cached_object_takes_about_its_size_in_memory() -> None:
    items = [_cm(f"cm-{i}", str(i), payload="x" * 300) for i in range(500)]
    size = len(orjson.dumps(items[0]))
    tracemalloc.start()
    try:
        c = cache.ObjectCache()
        c.listed("v1", "ConfigMap", items)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert c.size == 500
    assert held / 500 < 3 * size, f"{held / 500:.0f} bytes held per object of {size} bytes"
