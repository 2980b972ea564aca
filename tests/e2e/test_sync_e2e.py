"""`fleet sync` end to end against `fleet sim` over HTTP, on real git repositories (pygit2).

The first and the no-change syncs run the real CLI in a subprocess; the other scenarios run the same
code path in-process (`fleet.cli.sync.prepare` + `run_sync`) to keep the suite fast.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.clients import source
from fleet.core import inventory, model
from fleet.sim import testing
from tests.support import faultproxy
from tests.support.reconcile import (
    CRD,
    WIDGET,
    GitOpsRepo,
    configmap,
    live_objects,
    run_fleet,
    send,
    sync_in_process,
    writes,
)

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["prod-1", "dev-1"]) as handle:
        yield handle


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    r = GitOpsRepo(tmp_path / "repo")
    r.cluster("prod-1", labels={"env": "prod"})
    r.cluster("dev-1", labels={"env": "dev"})
    return r


def last_seq(sim: testing.SimHandle, cluster: str) -> int:
    journal = sim.journal_sync(cluster)
    return journal[-1]["seq"] if journal else 0


def test_the_first_sync_creates_everything_and_a_second_sync_sends_no_write(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one"), configmap("two", a="1")], namespace="web", selector={"env": "prod"})
    repo.bundle("base", [configmap("shared")], namespace="base", selector={})
    repo.commit("first")

    first = run_fleet("sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--format", "json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["ok"] is True
    assert report["clusters"]["prod-1"]["bundles"]["web"]["created"] == 2
    assert report["clusters"]["prod-1"]["bundles"]["base"]["state"] == "Synced"
    assert "web" not in report["clusters"]["dev-1"]["bundles"]
    assert set(live_objects(sim, "prod-1", namespace="web")) >= {"one", "two"}
    assert set(live_objects(sim, "dev-1", namespace="base")) >= {"shared"}
    shared = live_objects(sim, "dev-1", namespace="base")["shared"]
    assert shared["metadata"]["labels"][model.LABEL_OWNER] == "fleet"
    assert shared["metadata"]["labels"][model.LABEL_BUNDLE] == "base"
    assert shared["metadata"]["annotations"][model.ANNOTATION_REVISION] == report["revision"]
    assert "reading revision" in first.stderr

    marks = {c: last_seq(sim, c) for c in ("prod-1", "dev-1")}
    second = run_fleet("sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig))
    assert second.returncode == 0, second.stderr
    for cluster, since in marks.items():
        journal = sim.journal_sync(cluster, since=since)
        assert journal, "the second sync read the cluster"
        assert writes(journal) == []
        assert [r for r in journal if r["method"] in WRITE_METHODS] == []


def test_a_commit_that_changes_nothing_for_an_object_does_not_touch_it(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "prod"})
    first = repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.write("README.md", "unrelated change\n")
    repo.commit("docs only")
    since = last_seq(sim, "prod-1")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    assert writes(sim.journal_sync("prod-1", since=since)) == []
    one = live_objects(sim, "prod-1", namespace="web")["one"]
    assert one["metadata"]["annotations"][model.ANNOTATION_REVISION] == first


def test_a_changed_manifest_is_applied_only_where_it_is_placed(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={"env": "prod"})
    repo.bundle("base", [configmap("shared")], namespace="base", selector={})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    marks = {c: last_seq(sim, c) for c in ("prod-1", "dev-1")}

    repo.bundle(
        "web", [configmap("one", key="changed"), configmap("two")], namespace="web", selector={"env": "prod"}
    )
    second = repo.commit("change one")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert result.ok
    assert writes(sim.journal_sync("dev-1", since=marks["dev-1"])) == []
    prod_writes = writes(sim.journal_sync("prod-1", since=marks["prod-1"]))
    assert [(w["method"], w["path"]) for w in prod_writes] == [
        ("PATCH", "/api/v1/namespaces/web/configmaps/one"),  # carrying the new revision's claim
    ]
    one = live_objects(sim, "prod-1", namespace="web")["one"]
    assert one["data"] == {"key": "changed"}
    assert one["metadata"]["annotations"][model.ANNOTATION_REVISION] == second
    claim = inventory.claim_of(one, source=source.identity(repo.root))
    assert claim is not None and claim.revision == second and claim.writer.startswith("fleet sync on ")
    web = result.clusters["prod-1"].bundles["web"]
    assert web.changes.count(model.Action.CONFIGURED) == 1
    assert web.changes.count(model.Action.UNCHANGED) == 1


def test_a_removed_manifest_is_pruned_and_a_removed_field_is_removed(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle(
        "web", [configmap("one", a="1", b="2"), configmap("two")], namespace="web", selector={"env": "prod"}
    )
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle("web", [configmap("one", a="1")], namespace="web", selector={"env": "prod"})
    repo.commit("drop two and a field")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert result.ok
    live = live_objects(sim, "prod-1", namespace="web")
    assert "two" not in live
    assert live["one"]["data"] == {"a": "1"}
    assert result.clusters["prod-1"].bundles["web"].changes.count(model.Action.DELETED) == 1


def test_a_bundle_rendering_to_nothing_is_refused_while_its_inventory_is_not_empty(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle("web", [], namespace="web", selector={"env": "prod"})
    repo.commit("empty the bundle")
    since = last_seq(sim, "prod-1")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert not result.ok
    web = result.clusters["prod-1"].bundles["web"]
    assert web.state is model.State.FAILED
    assert "allowEmpty" in web.message
    assert writes(sim.journal_sync("prod-1", since=since)) == []
    assert "one" in live_objects(sim, "prod-1", namespace="web")

    repo.bundle("web", [], namespace="web", selector={"env": "prod"}, allowEmpty=True)
    repo.commit("allow it")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert result.ok
    assert "one" not in live_objects(sim, "prod-1", namespace="web")


def test_an_object_without_fleets_owner_label_is_never_overwritten_or_deleted(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("mine")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    created = send(
        sim, "prod-1", "POST", "/api/v1/namespaces/web/configmaps", configmap("theirs", key="hand-made")
    )
    assert created.status_code == 201
    repo.bundle(
        "web",
        [configmap("mine"), configmap("theirs", key="from-git")],
        namespace="web",
        selector={"env": "prod"},
    )
    repo.commit("claim theirs")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert not result.ok
    web = result.clusters["prod-1"].bundles["web"]
    assert web.state is model.State.FAILED
    assert any("ConfigMap/web/theirs" in p and "not managed by fleet" in p for p in web.problems)
    assert live_objects(sim, "prod-1", namespace="web")["theirs"]["data"] == {"key": "hand-made"}

    # A user takes an object away from fleet by removing the owner label: removing it from git keeps it.
    patched = send(
        sim,
        "prod-1",
        "PATCH",
        "/api/v1/namespaces/web/configmaps/mine",
        {"metadata": {"labels": {model.LABEL_OWNER: None}}},
    )
    assert patched.status_code == 200
    repo.bundle("web", [configmap("other")], namespace="web", selector={"env": "prod"})
    repo.commit("drop both")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert result.ok
    live = live_objects(sim, "prod-1", namespace="web")
    assert {"mine", "theirs", "other"} <= set(live)


def test_adoption_takes_over_an_unlabelled_object_when_asked(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    send(
        sim,
        "prod-1",
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}},
    )
    send(sim, "prod-1", "POST", "/api/v1/namespaces/web/configmaps", configmap("legacy", key="old"))
    adopt = configmap("legacy", key="new")
    adopt["metadata"]["annotations"] = {model.ANNOTATION_ADOPT: "true"}
    repo.bundle("web", [adopt], namespace="web", selector={"env": "prod"})
    repo.commit("adopt legacy")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    legacy = live_objects(sim, "prod-1", namespace="web")["legacy"]
    assert legacy["data"] == {"key": "new"}
    assert legacy["metadata"]["labels"][model.LABEL_OWNER] == "fleet"


def test_another_instances_object_is_a_conflict_and_is_left_alone(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one", key="blue")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="blue").ok
    repo.bundle("web", [configmap("one", key="green")], namespace="web", selector={"env": "prod"}, adopt=True)
    repo.commit("green wants it")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="green")
    assert not result.ok
    assert any(
        "owned by fleet instance 'blue'" in p for p in result.clusters["prod-1"].bundles["web"].problems
    )
    assert live_objects(sim, "prod-1", namespace="web")["one"]["data"] == {"key": "blue"}


def test_an_object_annotated_prune_disabled_survives_its_removal(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    keep = configmap("keep")
    keep["metadata"]["annotations"] = {model.ANNOTATION_PRUNE: "disabled"}
    repo.bundle("web", [keep, configmap("go")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle("web", [configmap("stay")], namespace="web", selector={"env": "prod"})
    repo.commit("drop both")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    live = live_objects(sim, "prod-1", namespace="web")
    assert "keep" in live and "go" not in live


def test_a_cluster_that_stops_matching_and_a_removed_bundle_lose_their_objects(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "prod"})
    repo.bundle("tools", [configmap("tool")], namespace="tools", selector={})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    assert "one" in live_objects(sim, "prod-1", namespace="web")

    repo.cluster("prod-1", labels={"env": "retired"})
    repo.remove("bundles/tools")
    repo.commit("prod-1 retired, tools removed")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert result.ok, result
    assert "one" not in live_objects(sim, "prod-1", namespace="web")
    for cluster in ("prod-1", "dev-1"):
        assert "tool" not in live_objects(sim, cluster, namespace="tools")
        assert "tools" in result.clusters[cluster].removed
        inventories = live_objects(sim, cluster, namespace=model.INVENTORY_NAMESPACE)
        assert model.inventory_name(instance="fleet", bundle="tools") not in inventories
    assert "web" in result.clusters["prod-1"].removed
    # The bundle namespaces fleet created are not owned: they stay.
    namespaces = send(sim, "prod-1", "GET", "/api/v1/namespaces").json()["items"]
    assert {"web", "tools"} <= {n["metadata"]["name"] for n in namespaces}


def test_a_paused_cluster_and_a_suspended_bundle_are_never_written(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.cluster("dev-1", labels={"env": "dev"}, paused=True)
    repo.bundle("web", [configmap("one")], namespace="web", selector={})
    repo.bundle("frozen", [configmap("ice")], namespace="frozen", selector={}, suspend=True)
    repo.commit("first")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert result.ok
    assert result.clusters["dev-1"].state is model.State.PAUSED
    assert result.clusters["prod-1"].bundles["frozen"].state is model.State.SUSPENDED
    assert writes(sim.journal_sync("dev-1")) == []
    assert sim.journal_sync("dev-1") == []
    assert "one" in live_objects(sim, "prod-1", namespace="web")
    assert live_objects(sim, "prod-1", namespace="frozen") == {}


def test_an_owned_namespace_is_pruned_only_when_it_holds_nothing_else(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    repo.bundle("team", [ns, configmap("cfg", namespace="team")], selector={"env": "prod"})
    repo.bundle(
        "other",
        [ns | {"metadata": {"name": "other"}}, configmap("cfg", namespace="other")],
        selector={"env": "prod"},
    )
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    send(sim, "prod-1", "POST", "/api/v1/namespaces/other/configmaps", configmap("user-data"))
    repo.remove("bundles/team")
    repo.remove("bundles/other")
    repo.bundle("keep", [configmap("k")], namespace="keep", selector={"env": "prod"})
    repo.commit("remove both")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    names = {
        n["metadata"]["name"]: n for n in send(sim, "prod-1", "GET", "/api/v1/namespaces").json()["items"]
    }
    team = names.get("team")
    assert team is None or team.get("metadata", {}).get("deletionTimestamp")
    assert "other" in names and not names["other"]["metadata"].get("deletionTimestamp")
    assert "user-data" in live_objects(sim, "prod-1", namespace="other")
    skipped = [
        c for c in result.clusters["prod-1"].removed["other"].changes.changes if c.ref.kind == "Namespace"
    ]
    assert skipped and "holds ConfigMap/other/user-data" in skipped[0].message


def test_a_revision_with_no_bundle_is_refused_unless_allow_empty_repo(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.commit("clusters only")
    refused = run_fleet("sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig))
    assert refused.returncode == 2
    assert "no bundle" in refused.stderr and "--allow-empty-repo" in refused.stderr
    assert sim.journal_sync("prod-1") == []
    allowed = run_fleet("sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--allow-empty-repo")
    assert allowed.returncode == 0, allowed.stderr


def test_a_crd_and_its_custom_resources_in_one_commit_are_applied_in_order(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("widgets", [WIDGET, configmap("cfg"), CRD], namespace="web", selector={"env": "prod"})
    repo.commit("crd and cr together")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert result.ok, result.clusters["prod-1"].bundles["widgets"]
    journal = [r for r in sim.journal_sync("prod-1") if r["method"] == "PATCH" and r["status"] in (200, 201)]
    paths = [r["path"] for r in journal]
    crd_at = next(i for i, p in enumerate(paths) if "customresourcedefinitions" in p)
    widget_at = next(i for i, p in enumerate(paths) if "/widgets/" in p)
    assert crd_at < widget_at
    widgets = send(sim, "prod-1", "GET", "/apis/example.com/v1/namespaces/web/widgets").json()["items"]
    assert [w["metadata"]["name"] for w in widgets] == ["w1"]
    since = last_seq(sim, "prod-1")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    assert writes(sim.journal_sync("prod-1", since=since)) == []


def hiding_new_groups(groups: set[str], answers: int) -> Any:
    """A faultproxy `edit` for aggregated discovery of `/apis`: the first `answers` answers that list one
    of `groups` leave it out, as a real API server does for a moment after a CRD is Established."""
    hidden = dict.fromkeys(groups, 0)

    def edit(doc: Any) -> Any:
        items = doc.get("items") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            return doc
        kept = []
        for item in items:
            name = (item.get("metadata") or {}).get("name")
            if name in hidden and hidden[name] < answers:
                hidden[name] += 1
                continue
            kept.append(item)
        return {**doc, "items": kept}

    return edit


def test_custom_resources_wait_until_discovery_serves_their_kind_not_only_until_the_crd_is_established(
    tmp_path: Path,
) -> None:
    """A real kube-apiserver lists a new kind in its discovery a moment after the CRD is Established
    (docs/real-cluster.md): fleet refreshes discovery until the kind is served before applying resources
    of it, in the CRD's own bundle and in a bundle that dependsOn it."""
    gadgets = copy.deepcopy(CRD)
    gadgets["metadata"]["name"] = "widgets.example.org"
    gadgets["spec"]["group"] = "example.org"
    gadget = {**WIDGET, "apiVersion": "example.org/v1"}
    with testing.serving(names=["prod-1"]) as sim, faultproxy.serving(sim.kubeconfig_dict) as proxy:
        edit = hiding_new_groups({"example.com", "example.org"}, 2)
        proxy.add(faultproxy.Rule(method="GET", path=r"^/apis/?$", edit=edit))
        repo = GitOpsRepo(tmp_path / "repo")
        repo.cluster("prod-1")
        repo.bundle("crds", [CRD], selector={})
        repo.bundle("widgets", [WIDGET], namespace="web", selector={}, dependsOn=["crds"])
        repo.bundle("together", [gadget, gadgets], namespace="gadgets", selector={})
        repo.commit("crds and custom resources")
        result = sync_in_process(repo.root, proxy.kubeconfig, instance="fleet", wait=True)
        bundles = result.clusters["prod-1"].bundles
        assert result.ok, {b: r.problems or r.message for b, r in bundles.items()}
        for path in (
            "/apis/example.com/v1/namespaces/web/widgets",
            "/apis/example.org/v1/namespaces/gadgets/widgets",
        ):
            assert [w["metadata"]["name"] for w in send(sim, "prod-1", "GET", path).json()["items"]] == ["w1"]


def test_no_matches_for_kind_is_a_clear_error_and_nothing_of_that_bundle_is_pruned(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle("web", [configmap("one"), WIDGET], namespace="web", selector={"env": "prod"})
    repo.commit("a widget without its CRD")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert not result.ok
    web = result.clusters["prod-1"].bundles["web"]
    assert web.state is model.State.FAILED
    assert any('no matches for kind "Widget" in version "example.com/v1"' in p for p in web.problems)
    assert "two" in live_objects(sim, "prod-1", namespace="web")


def test_depends_on_applies_the_dependency_first_and_waits_for_it(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("base", [configmap("b1"), configmap("b2")], namespace="base", selector={"env": "prod"})
    repo.bundle("web", [configmap("w1")], namespace="web", selector={"env": "prod"}, dependsOn=["base"])
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet", wait=True).ok
    paths = [
        r["path"]
        for r in sim.journal_sync("prod-1")
        if r["method"] == "PATCH" and "/configmaps/" in r["path"]
    ]
    objects = [p for p in paths if "fleet-system" not in p]
    assert objects.index("/api/v1/namespaces/web/configmaps/w1") > max(
        objects.index("/api/v1/namespaces/base/configmaps/b1"),
        objects.index("/api/v1/namespaces/base/configmaps/b2"),
    )


def test_a_bundle_whose_dependency_failed_is_not_applied(sim: testing.SimHandle, repo: GitOpsRepo) -> None:
    send(
        sim,
        "prod-1",
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "base"}},
    )
    send(sim, "prod-1", "POST", "/api/v1/namespaces/base/configmaps", configmap("b1", key="not fleet's"))
    repo.bundle("base", [configmap("b1")], namespace="base", selector={"env": "prod"})
    repo.bundle("web", [configmap("w1")], namespace="web", selector={"env": "prod"}, dependsOn=["base"])
    repo.commit("first")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet", wait=True)
    assert not result.ok
    bundles = result.clusters["prod-1"].bundles
    assert bundles["base"].state is model.State.FAILED
    assert bundles["web"].state is model.State.PENDING
    assert "waiting for base" in bundles["web"].message
    assert live_objects(sim, "prod-1", namespace="web") == {}


def test_a_secret_value_never_reaches_the_output_even_when_the_server_rejects_it(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    canary = "zz-canary-value-31337"
    db = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "stringData": {"password": canary},
    }
    ok = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "ok"},
        "stringData": {"password": canary},
    }
    repo.bundle("web", [db, ok], namespace="web", selector={"env": "prod"})
    repo.commit("a secret the server refuses")
    sim.faults_sync("prod-1", {"status": 422, "method": "PATCH", "path": "secrets/db$"})
    proc = run_fleet("sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--format", "json")
    assert proc.returncode == 1
    assert "Secret/web/db" in proc.stdout
    assert canary not in proc.stdout + proc.stderr


def test_a_suspended_bundle_is_not_pruned_where_a_cluster_stops_matching(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "nowhere"}, suspend=True)
    repo.commit("suspend, and match nothing")
    since = last_seq(sim, "prod-1")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert result.ok
    assert writes(sim.journal_sync("prod-1", since=since)) == []
    assert "one" in live_objects(sim, "prod-1", namespace="web")
    assert "web" not in result.clusters["prod-1"].bundles
    assert "web" not in result.clusters["prod-1"].removed


def test_a_bundle_whose_dependency_failed_to_render_waits(sim: testing.SimHandle, repo: GitOpsRepo) -> None:
    broken = configmap("b1", key="${cluster.labels.missing}")
    repo.bundle("base", [broken], namespace="base", selector={"env": "prod"})
    repo.bundle("web", [configmap("w1")], namespace="web", selector={"env": "prod"}, dependsOn=["base"])
    repo.commit("base cannot render on prod-1")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet", wait=True)
    bundles = result.clusters["prod-1"].bundles
    assert bundles["base"].state is model.State.FAILED
    assert bundles["web"].state is model.State.PENDING
    assert live_objects(sim, "prod-1", namespace="web") == {}


def test_insecure_skip_tls_verify_works_and_is_reported_as_a_warning(tmp_path: Path) -> None:
    with testing.serving(names=["tls-1"], tls=True) as tls_sim:
        doc = yaml.safe_load(tls_sim.kubeconfig.read_text())
        cluster = doc["clusters"][0]["cluster"]
        cluster.pop("certificate-authority-data", None)
        cluster["insecure-skip-tls-verify"] = True
        kubeconfig = tmp_path / "insecure-kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(doc))
        r = GitOpsRepo(tmp_path / "repo")
        r.cluster("tls-1")
        r.bundle("web", [configmap("one")], namespace="web", selector={})
        r.commit("first")
        proc = run_fleet("sync", str(r.root), "--kubeconfig", str(kubeconfig), "--format", "json")
        assert proc.returncode == 0, proc.stderr
        assert "insecure-skip-tls-verify" in proc.stderr
        report = json.loads(proc.stdout)
        assert any("insecure-skip-tls-verify" in w for w in report["clusters"]["tls-1"]["warnings"])


@pytest.mark.slow
def test_a_broken_bundle_fails_the_sync_and_is_named_in_the_table_and_the_json(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one")], namespace="web", selector={})
    repo.bundle("new", [configmap("two")], namespace="web", selector={})
    repo.write("bundles/new/manifests/all.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n")
    repo.commit("web, and a new bundle whose YAML is broken")

    as_json = run_fleet("sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--format", "json")
    assert as_json.returncode == 1, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert report["clusters"]["prod-1"]["bundles"]["web"]["state"] == "Synced"  # the rest proceeds
    assert report["bundles"]["new"]["state"] == "Failed"
    assert "bundles/new/manifests/all.yaml:" in report["bundles"]["new"]["message"]
    assert [e["path"] for e in report["errors"]] == ["bundles/new/manifests/all.yaml"]
    assert report["errors"][0]["line"] >= 1

    as_table = run_fleet("sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig))
    assert as_table.returncode == 1, as_table.stderr
    broken_rows = [line.split() for line in as_table.stdout.splitlines() if " new " in f" {line} "]
    assert broken_rows and broken_rows[0][:3] == ["-", "new", "Failed"], as_table.stdout
    assert "bundles/new/manifests/all.yaml:" in as_table.stdout
