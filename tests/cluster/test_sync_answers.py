"""`fleet sync` against a cluster whose answers are broken, slow or endless (docs/reliability.md).

The cluster `bad-1` sits behind `tests.support.faultproxy` (the others are reached directly); the sync
runs in-process through the same code as the command. Unknown is never empty: no prune, no inventory
rewrite and no Synced from an answer that cannot be read; every round ends within its deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.core import inventory, model
from fleet.sim import testing
from tests.support import faultproxy
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, send, sync_in_process

CLUSTERS = ("bad-1", "good-1", "good-2")  # sorted: bad-1 takes the only slot first when concurrency is 1
HTML = {"status": 200, "headers": faultproxy.HTML, "body": faultproxy.HTML_LOGIN}


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=list(CLUSTERS)) as handle:
        yield handle


@pytest.fixture
def proxy(sim: testing.SimHandle) -> Iterator[faultproxy.FaultProxy]:
    with faultproxy.serving(sim.kubeconfig_dict, clusters=["bad-1"]) as p:
        yield p


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    r = GitOpsRepo(tmp_path / "repo")
    for name in CLUSTERS:
        r.cluster(name, labels={"env": "prod"})
    r.bundle("base", [configmap("base", namespace="default")], selector={"env": "prod"})
    return r


def inventory_refs(sim: testing.SimHandle, cluster: str, bundle: str) -> set[str] | None:
    cms = live_objects(sim, cluster, namespace=model.INVENTORY_NAMESPACE)
    cm = cms.get(model.inventory_name(instance="fleet", bundle=bundle))
    return None if cm is None else {str(r) for r in inventory.decode(cm, instance="fleet").refs}


def sync(proxy: faultproxy.FaultProxy, repo: GitOpsRepo, **overrides: object) -> object:
    settings = {"request_timeout": 2.0, "retry_budget": 1.0, **overrides}
    return sync_in_process(repo.root, proxy.kubeconfig, instance="fleet", **settings)


@pytest.mark.slow
def test_a_namespace_whose_content_lists_answer_html_is_not_pruned_with_what_it_holds(
    sim: testing.SimHandle, proxy: faultproxy.FaultProxy, repo: GitOpsRepo
) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    repo.bundle("team", [namespace, configmap("settings", namespace="team")], selector={"env": "prod"})
    repo.commit("first")
    assert sync(proxy, repo).ok  # type: ignore[attr-defined]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keep-me"}, "stringData": {"k": "v"}}
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    for name in CLUSTERS:  # not fleet's: a prune of the namespace would take them along
        assert send(sim, name, "POST", "/api/v1/namespaces/team/secrets", secret).status_code == 201
        assert (
            send(sim, name, "POST", "/api/v1/namespaces/team/persistentvolumeclaims", claim).status_code
            == 201
        )
    repo.remove("bundles/team")
    repo.commit("drop the team bundle")
    proxy.add(faultproxy.Rule(method="GET", path=r"/namespaces/team/[a-z]+$", watch=False, **HTML))

    result = sync(proxy, repo)

    bad = result.clusters["bad-1"]  # type: ignore[attr-defined]
    team = bad.removed["team"]
    assert team.state is model.State.FAILED
    assert any("Namespace/team: not pruned" in p and "not JSON" in p for p in team.problems)
    assert bad.state is not model.State.SYNCED and not result.ok  # type: ignore[attr-defined]
    assert "keep-me" in live_objects(sim, "bad-1", "secrets", namespace="team")
    assert "data" in live_objects(sim, "bad-1", "persistentvolumeclaims", namespace="team")
    assert "Namespace/team" in (inventory_refs(sim, "bad-1", "team") or set())  # still recorded
    for good in ("good-1", "good-2"):  # the same content read properly: held by what it holds, kept
        assert "keep-me" in live_objects(sim, good, "secrets", namespace="team")


@pytest.mark.slow
def test_an_inventory_list_answered_with_html_fails_the_cluster_and_rewrites_no_inventory(
    sim: testing.SimHandle, proxy: faultproxy.FaultProxy, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync(proxy, repo).ok  # type: ignore[attr-defined]
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "prod"})
    repo.commit("drop two")
    since = sim.journal_sync("bad-1")[-1]["seq"]
    proxy.add(faultproxy.Rule(method="GET", path=r"/fleet-system/configmaps$", watch=False, **HTML))

    result = sync(proxy, repo)

    bad = result.clusters["bad-1"]  # type: ignore[attr-defined]
    assert bad.state is model.State.FAILED
    assert "not JSON" in bad.message
    assert [r for r in sim.journal_sync("bad-1", since=since) if r["mutated"]] == []  # nothing written
    assert inventory_refs(sim, "bad-1", "web") == {"ConfigMap/web/one", "ConfigMap/web/two"}
    assert "two" in live_objects(sim, "bad-1", namespace="web")
    for good in ("good-1", "good-2"):
        assert "two" not in live_objects(sim, good, namespace="web")

    proxy.clear()  # readable again: the object removed from the repository is pruned, not orphaned
    assert sync(proxy, repo).ok  # type: ignore[attr-defined]
    assert "two" not in live_objects(sim, "bad-1", namespace="web")
    assert inventory_refs(sim, "bad-1", "web") == {"ConfigMap/web/one"}


@pytest.mark.slow
def test_an_apply_answered_with_html_is_failed_never_configured_and_prunes_nothing(
    sim: testing.SimHandle, proxy: faultproxy.FaultProxy, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync(proxy, repo).ok  # type: ignore[attr-defined]
    repo.bundle("web", [configmap("one", v="2")], namespace="web", selector={"env": "prod"})
    repo.commit("change one, drop two")
    proxy.add(faultproxy.Rule(method="PATCH", path=r"/configmaps/one$", **HTML))

    result = sync(proxy, repo)

    web = result.clusters["bad-1"].bundles["web"]  # type: ignore[attr-defined]
    assert web.state is model.State.FAILED
    assert web.changes.count(model.Action.CONFIGURED) == 0
    assert any("ConfigMap/web/one" in p and "not JSON" in p for p in web.problems)
    assert web.changes.count(model.Action.DELETED) == 0
    assert "two" in live_objects(sim, "bad-1", namespace="web")


@pytest.mark.slow
def test_a_namespace_create_answered_with_json_that_is_not_an_object_fails_its_bundle_before_its_apply(
    sim: testing.SimHandle, proxy: faultproxy.FaultProxy, repo: GitOpsRepo
) -> None:
    repo.commit("first")
    assert sync(proxy, repo).ok  # type: ignore[attr-defined]
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "prod"})
    repo.commit("a bundle in a new namespace")
    since = sim.journal_sync("bad-1")[-1]["seq"]
    # A 201 whose body is JSON but no object (a proxy's "[]"): what was created is unknown.
    proxy.add(faultproxy.Rule(method="POST", path=r"/api/v1/namespaces$", status=201, body=[]))

    result = sync(proxy, repo)

    web = result.clusters["bad-1"].bundles["web"]  # type: ignore[attr-defined]
    assert web.state is model.State.FAILED
    assert any(p.startswith("Namespace/web:") for p in web.problems), web.problems
    sent = [f"{r['method']} {r['path']}" for r in sim.journal_sync("bad-1", since=since) if r["mutated"]]
    assert not [r for r in sent if "/namespaces/web/" in r], sent  # nothing sent into it
    for good in ("good-1", "good-2"):
        assert result.clusters[good].bundles["web"].state is model.State.SYNCED  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_trickling_cluster_is_unreachable_within_its_deadline_and_frees_the_only_slot(
    sim: testing.SimHandle, proxy: faultproxy.FaultProxy, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync(proxy, repo).ok  # type: ignore[attr-defined]
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "prod"})
    repo.commit("drop two")
    # A byte every half second: never silent long enough for a timeout between bytes.
    proxy.add(faultproxy.Rule(method="GET", watch=False, trickle=(1, 0.5), trickle_for=60))

    started = time.monotonic()
    result = sync(proxy, repo, concurrency=1, request_timeout=2.0, retry_budget=3.0)
    elapsed = time.monotonic() - started

    bad = result.clusters["bad-1"]  # type: ignore[attr-defined]
    assert bad.state is model.State.UNREACHABLE
    assert "no complete answer within" in bad.message
    assert "two" in live_objects(sim, "bad-1", namespace="web")  # nothing pruned from unknown state
    for good in ("good-1", "good-2"):  # they waited for the only slot, and still finished
        assert result.clusters[good].state is model.State.SYNCED  # type: ignore[attr-defined]
        assert "two" not in live_objects(sim, good, namespace="web")
    assert elapsed < 25


@pytest.mark.slow
def test_a_round_slower_than_its_timeout_stops_and_the_cluster_is_unreachable(
    sim: testing.SimHandle, proxy: faultproxy.FaultProxy, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap(f"c{i}") for i in range(6)], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync(proxy, repo).ok  # type: ignore[attr-defined]
    repo.bundle("web", [configmap("c0")], namespace="web", selector={"env": "prod"})
    repo.commit("drop five")
    sim.faults_sync("bad-1", {"latencyMs": 1000})  # every request answers, slowly

    started = time.monotonic()
    result = sync(proxy, repo, concurrency=1, round_timeout=1.5)
    elapsed = time.monotonic() - started

    bad = result.clusters["bad-1"]  # type: ignore[attr-defined]
    assert bad.state is model.State.UNREACHABLE
    assert "did not finish within 1.5s (the round timeout)" in bad.message
    assert bad.bundles["web"].state is model.State.UNREACHABLE
    assert {f"c{i}" for i in range(6)} <= set(live_objects(sim, "bad-1", namespace="web"))
    for good in ("good-1", "good-2"):
        assert result.clusters[good].state is model.State.SYNCED  # type: ignore[attr-defined]
    assert elapsed < 15


@pytest.mark.slow
def test_a_429_asking_for_a_day_fails_that_cluster_in_time_and_the_others_sync(
    sim: testing.SimHandle, proxy: faultproxy.FaultProxy, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    sim.faults_sync("bad-1", {"status": 429, "retryAfter": 86400, "method": "PATCH", "count": 1})

    started = time.monotonic()
    result = sync(proxy, repo, concurrency=1, retry_budget=2.0)
    elapsed = time.monotonic() - started

    bad = result.clusters["bad-1"]  # type: ignore[attr-defined]
    assert bad.state is model.State.FAILED
    # the first PATCH is an object's apply (a missing inventory and revision record are created by POST)
    reported = " ".join([bad.message, *(b.message for b in bad.bundles.values())])
    assert "Retry-After 86400s is beyond the retry budget" in reported, bad
    for good in ("good-1", "good-2"):
        assert result.clusters[good].state is model.State.SYNCED  # type: ignore[attr-defined]
    assert elapsed < 20
