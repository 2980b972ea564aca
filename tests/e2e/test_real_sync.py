"""`fleet sync` and `fleet diff` against two real API servers (tests/support/kube.py), not the sim.

Each test uses its own fleet instance, namespaces and repository: the clusters live for the whole session.
Most syncs run in this process (`sync_in_process`: the command's code path minus printing) to keep the
suite fast; the CLI runs where the program itself is the point (its report, its exit code, a kill -9).
What fleet wrote is read back from the API servers as the admin, and through the real kubectl.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.sim import testing
from tests.support import kube, real
from tests.support.reconcile import FLEET, GitOpsRepo, configmap, run_fleet, sync_in_process

pytestmark = [pytest.mark.real, pytest.mark.slow]

BOTH = ["real-1", "real-2"]


def configmaps(plane: kube.ControlPlane, cluster: str, namespace: str) -> dict[str, dict[str, Any]]:
    return real.objects(plane, cluster, namespace)


def sync(repo: GitOpsRepo, kubeconfig: Path, instance: str) -> tuple[int, dict[str, Any], str]:
    done = run_fleet(
        "sync", str(repo.root), "--kubeconfig", str(kubeconfig), "--instance", instance, "--format", "json"
    )
    return done.returncode, real.fleet_json(done), done.stderr


def actions(bundle: Any) -> Counter[str]:
    """How many objects of a bundle's result were created, configured, unchanged, deleted, ..."""
    return Counter(str(c.action) for c in bundle.changes.changes)


def versions(plane: kube.ControlPlane, places: list[tuple[str, str]]) -> dict[tuple[str, str, str], str]:
    return {
        (cluster, ns, name): obj["metadata"]["resourceVersion"]
        for cluster, ns in places
        for name, obj in configmaps(plane, cluster, ns).items()
    }


@pytest.fixture
def names() -> tuple[str, str, str]:
    suffix = uuid.uuid4().hex[:6]
    return f"i{suffix}", f"web-{suffix}", f"base-{suffix}"


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    r = GitOpsRepo(tmp_path / "repo")
    r.cluster("real-1", labels={"env": "prod"})
    r.cluster("real-2", labels={"env": "dev"})
    return r


@pytest.fixture
def admin(real_kube: kube.ControlPlane) -> Path:
    return real_kube.kubeconfig(BOTH)


def test_fleet_sync_creates_on_two_real_clusters_and_a_second_sync_rewrites_nothing(
    real_kube: kube.ControlPlane, tmp_path: Path, names: tuple[str, str, str]
) -> None:
    instance, web, base = names
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("real-1", labels={"env": "prod"})
    repo.cluster("real-2", labels={"env": "dev"})
    repo.bundle("web", [configmap("one"), configmap("two", a="1")], namespace=web, selector={"env": "prod"})
    repo.bundle("base", [configmap("shared")], namespace=base, selector={})
    repo.commit("first")
    kubeconfig = real_kube.kubeconfig(["real-1", "real-2"])

    code, report, stderr = sync(repo, kubeconfig, instance)
    assert code == 0, stderr
    assert report["clusters"]["real-1"]["bundles"]["web"]["created"] == 2
    assert report["clusters"]["real-2"]["bundles"]["base"]["state"] == "Synced"
    assert "web" not in report["clusters"]["real-2"]["bundles"]
    places = [("real-1", web), ("real-1", base), ("real-2", base)]
    before = versions(real_kube, places)
    assert len(before) == 4

    code, report, stderr = sync(repo, kubeconfig, instance)
    assert code == 0, stderr
    assert report["clusters"]["real-1"]["bundles"]["web"]["unchanged"] == 2
    assert versions(real_kube, places) == before


def test_a_prune_the_limited_user_may_not_do_fails_stays_in_the_inventory_and_the_next_sync_as_admin_does_it(
    real_kube: kube.ControlPlane, tmp_path: Path, names: tuple[str, str, str]
) -> None:
    instance, web, _ = names
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("real-1")
    repo.bundle("web", [configmap("keep"), configmap("drop")], namespace=web, selector={})
    repo.commit("first")
    admin = real_kube.kubeconfig(["real-1"])
    limited = real_kube.kubeconfig(["real-1"], user=kube.LIMITED_USER)
    assert sync_in_process(repo.root, limited, instance=instance).ok  # the limited user may create
    both = {f"ConfigMap/{web}/keep", f"ConfigMap/{web}/drop"}
    assert real.inventory(real_kube, "real-1", instance=instance, bundle="web") == both

    repo.bundle("web", [configmap("keep")], namespace=web, selector={})
    repo.commit("drop one")
    result = sync_in_process(repo.root, limited, instance=instance)
    assert not result.ok
    bundle = result.clusters["real-1"].bundles["web"]
    assert str(bundle.state) == "Failed" and "deleted" not in actions(bundle)
    assert 'User "limited" cannot delete resource "configmaps"' in bundle.message
    assert "drop" in configmaps(real_kube, "real-1", web)
    # The object fleet could not delete is still fleet's to delete: it stays in the inventory.
    assert real.inventory(real_kube, "real-1", instance=instance, bundle="web") == both

    result = sync_in_process(repo.root, admin, instance=instance)
    assert result.ok
    assert actions(result.clusters["real-1"].bundles["web"])["deleted"] == 1
    assert set(configmaps(real_kube, "real-1", web)) == {"keep"}
    assert real.inventory(real_kube, "real-1", instance=instance, bundle="web") == {f"ConfigMap/{web}/keep"}


def test_a_change_reaches_only_the_clusters_it_is_placed_on_and_a_removed_manifest_and_field_are_pruned(
    real_kube: kube.ControlPlane, repo: GitOpsRepo, admin: Path, names: tuple[str, str, str]
) -> None:
    instance, web, base = names
    repo.bundle(
        "web", [configmap("one", a="1", b="2"), configmap("two")], namespace=web, selector={"env": "prod"}
    )
    repo.bundle("base", [configmap("shared")], namespace=base, selector={})
    repo.commit("first")
    assert sync_in_process(repo.root, admin, instance=instance).ok
    untouched = versions(real_kube, [("real-1", base), ("real-2", base)])

    repo.bundle("web", [configmap("one", a="1")], namespace=web, selector={"env": "prod"})
    repo.commit("drop two and a field")
    result = sync_in_process(repo.root, admin, instance=instance)
    assert result.ok
    live = configmaps(real_kube, "real-1", web)
    assert set(live) == {"one"}
    assert live["one"]["data"] == {"a": "1"}  # server-side apply removed the field fleet no longer sets
    assert actions(result.clusters["real-1"].bundles["web"]) == {"configured": 1, "deleted": 1}
    assert real.inventory(real_kube, "real-1", instance=instance, bundle="web") == {f"ConfigMap/{web}/one"}
    assert configmaps(real_kube, "real-2", web) == {}
    assert versions(real_kube, [("real-1", base), ("real-2", base)]) == untouched


def test_a_cluster_that_stops_matching_and_a_removed_bundle_lose_their_objects_and_inventories(
    real_kube: kube.ControlPlane, repo: GitOpsRepo, admin: Path, names: tuple[str, str, str]
) -> None:
    instance, web, base = names
    repo.bundle("web", [configmap("one")], namespace=web, selector={"env": "prod"})
    repo.bundle("tools", [configmap("tool")], namespace=base, selector={})
    repo.commit("first")
    assert sync_in_process(repo.root, admin, instance=instance).ok
    assert set(configmaps(real_kube, "real-1", web)) == {"one"}

    repo.cluster("real-1", labels={"env": "retired"})
    repo.remove("bundles/tools")
    repo.bundle("keep", [configmap("k")], namespace=base, selector={"env": "dev"})
    repo.commit("real-1 retired, tools removed")
    result = sync_in_process(repo.root, admin, instance=instance)
    assert result.ok, result
    assert configmaps(real_kube, "real-1", web) == {}
    assert "web" in result.clusters["real-1"].removed
    assert real.inventory(real_kube, "real-1", instance=instance, bundle="web") is None
    for cluster in BOTH:
        assert "tool" not in configmaps(real_kube, cluster, base)
        assert "tools" in result.clusters[cluster].removed
        assert real.inventory(real_kube, cluster, instance=instance, bundle="tools") is None
    assert set(configmaps(real_kube, "real-2", base)) == {"k"}
    # The bundle namespaces fleet created are not owned: they stay.
    assert real.get(real_kube, "real-1", f"/api/v1/namespaces/{web}") is not None


def test_an_object_fleet_does_not_own_is_never_overwritten_or_pruned(
    real_kube: kube.ControlPlane, repo: GitOpsRepo, admin: Path, names: tuple[str, str, str]
) -> None:
    instance, web, _ = names
    repo.bundle("web", [configmap("mine"), configmap("given-away")], namespace=web, selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, admin, instance=instance).ok
    real.kubectl(
        real_kube, "real-1", "-n", web, "create", "configmap", "theirs", "--from-literal=key=hand-made"
    )
    real.kubectl(real_kube, "real-1", "-n", web, "create", "configmap", "bystander", "--from-literal=k=v")
    # A person takes an object away from fleet by removing its owner label.
    real.kubectl(real_kube, "real-1", "-n", web, "label", "configmap", "given-away", f"{real.OWNER}-")
    before = real.uids(configmaps(real_kube, "real-1", web))

    repo.bundle(
        "web",
        [configmap("mine"), configmap("given-away"), configmap("theirs", key="from-git")],
        namespace=web,
        selector={"env": "prod"},
    )
    repo.commit("claim theirs")
    result = sync_in_process(repo.root, admin, instance=instance)
    assert not result.ok
    bundle = result.clusters["real-1"].bundles["web"]
    assert str(bundle.state) == "Failed"
    assert any(f"ConfigMap/{web}/theirs" in p and "not managed by fleet" in p for p in bundle.problems)
    assert configmaps(real_kube, "real-1", web)["theirs"]["data"] == {"key": "hand-made"}

    repo.bundle("web", [configmap("other")], namespace=web, selector={"env": "prod"})
    repo.commit("drop everything but other")
    result = sync_in_process(repo.root, admin, instance=instance)
    assert result.ok, result.clusters["real-1"].bundles["web"].problems
    live = configmaps(real_kube, "real-1", web)
    assert set(live) == {"other", "theirs", "bystander", "given-away"}  # only "mine" was fleet's to prune
    assert {n: u for n, u in real.uids(live).items() if n != "other"} == {
        n: before[n] for n in ("theirs", "bystander", "given-away")
    }
    assert live["theirs"]["data"] == {"key": "hand-made"}
    assert real.inventory(real_kube, "real-1", instance=instance, bundle="web") == {f"ConfigMap/{web}/other"}


def test_objects_of_another_fleet_instance_are_never_written_or_pruned(
    real_kube: kube.ControlPlane, tmp_path: Path, admin: Path, names: tuple[str, str, str]
) -> None:
    _, ns, _ = names
    blue, green = GitOpsRepo(tmp_path / "blue"), GitOpsRepo(tmp_path / "green")
    for r in (blue, green):
        r.cluster("real-1")
        r.cluster("real-2")
    blue.bundle("web", [configmap("b1", key="blue")], namespace=ns, selector={})
    blue.commit("blue")
    green.bundle("web", [configmap("g1"), configmap("g2")], namespace=ns, selector={})
    green.commit("green")
    assert sync_in_process(blue.root, admin, instance="blue" + ns[-6:]).ok
    assert sync_in_process(green.root, admin, instance="green" + ns[-6:]).ok
    # green's g2 is handed over to blue by relabelling it (as a person moving an object between instances).
    real.kubectl(
        real_kube,
        "real-2",
        "-n",
        ns,
        "label",
        "configmap",
        "g2",
        f"{real.OWNER}=blue{ns[-6:]}",
        "--overwrite",
    )
    before = {c: real.uids(configmaps(real_kube, c, ns)) for c in BOTH}

    green.bundle(
        "web",
        [configmap("g1"), configmap("g2"), configmap("b1", key="green")],
        namespace=ns,
        selector={},
        adopt=True,
    )
    green.commit("green wants b1")
    result = sync_in_process(green.root, admin, instance="green" + ns[-6:])
    assert not result.ok
    for cluster in BOTH:
        problems = result.clusters[cluster].bundles["web"].problems
        assert any(f"owned by fleet instance 'blue{ns[-6:]}'" in p for p in problems), problems
        assert configmaps(real_kube, cluster, ns)["b1"]["data"] == {"key": "blue"}

    green.remove("bundles/web")
    green.bundle("elsewhere", [configmap("e")], namespace=ns + "-e", selector={})
    green.commit("green leaves the namespace")
    result = sync_in_process(green.root, admin, instance="green" + ns[-6:])
    assert result.ok
    assert set(configmaps(real_kube, "real-1", ns)) == {"b1"}  # green's own g1 and g2 were pruned
    assert set(configmaps(real_kube, "real-2", ns)) == {"b1", "g2"}  # g2 is blue's now: left alone
    for cluster in BOTH:
        live = real.uids(configmaps(real_kube, cluster, ns))
        assert {n: before[cluster][n] for n in live} == live  # nothing left was deleted and recreated


def test_a_sync_killed_with_sigkill_mid_apply_leaves_no_orphan_and_the_next_sync_converges(
    real_kube: kube.ControlPlane, repo: GitOpsRepo, admin: Path, names: tuple[str, str, str]
) -> None:
    instance, web, _ = names
    repo.bundle("web", [configmap(f"old{i}") for i in range(10)], namespace=web, selector={})
    repo.commit("first")
    assert sync_in_process(repo.root, admin, instance=instance).ok
    kept = {c: real.uids(configmaps(real_kube, c, web)) for c in BOTH}
    desired = [configmap(f"new{i:03}") for i in range(60)] + [configmap(f"old{i}") for i in range(5)]
    repo.bundle("web", desired, namespace=web, selector={})
    repo.commit("replace most")
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    with real.watching(real_kube, "real-1", web) as events:
        proc = subprocess.Popen(
            [*FLEET, "sync", str(repo.root), "--kubeconfig", str(admin), "--instance", instance, "--no-wait"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            events.wait("ADDED", 10, prefix="new", timeout=60)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    mid = configmaps(real_kube, "real-1", web)
    created = {n for n in mid if n.startswith("new")}
    assert created and len(created) < 60, f"not killed mid-apply: {len(created)} of 60 created"
    # What the killed sync wrote is already in the inventory: nothing it created can be orphaned.
    listed = real.inventory(real_kube, "real-1", instance=instance, bundle="web") or set()
    assert {f"ConfigMap/{web}/{n}" for n in mid} <= listed

    result = sync_in_process(repo.root, admin, instance=instance)
    assert result.ok
    wanted = {o["metadata"]["name"] for o in desired}
    for cluster in BOTH:
        live = configmaps(real_kube, cluster, web)
        assert real.owned_by(live, instance) == wanted == set(live)  # converged, no orphan
        assert real.inventory(real_kube, cluster, instance=instance, bundle="web") == {
            f"ConfigMap/{web}/{n}" for n in wanted
        }
        # Nothing desired was deleted on the way: the kept objects are the very ones of the first sync.
        assert {n: real.uids(live)[n] for n in kept[cluster] if n in wanted} == {
            n: u for n, u in kept[cluster].items() if n in wanted
        }
    assert {n: u for n, u in real.uids(configmaps(real_kube, "real-1", web)).items() if n in created} == {
        n: mid[n]["metadata"]["uid"] for n in created
    }


def test_a_sync_killed_with_sigkill_mid_prune_leaves_no_orphan_and_the_next_sync_finishes_the_prune(
    real_kube: kube.ControlPlane, repo: GitOpsRepo, admin: Path, names: tuple[str, str, str]
) -> None:
    instance, web, _ = names
    repo.bundle("web", [configmap(f"c{i:03}") for i in range(60)], namespace=web, selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, admin, instance=instance).ok
    repo.bundle("web", [configmap("c000"), configmap("fresh")], namespace=web, selector={"env": "prod"})
    repo.commit("drop 59, add one")
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    with real.watching(real_kube, "real-1", web) as events:
        proc = subprocess.Popen(
            [*FLEET, "sync", str(repo.root), "--kubeconfig", str(admin), "--instance", instance, "--no-wait"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            events.wait("DELETED", 10, prefix="c", timeout=60)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    mid = configmaps(real_kube, "real-1", web)
    left = {n for n in mid if n.startswith("c")} - {"c000"}
    assert "fresh" in mid and left, "not killed mid-prune"
    assert {f"ConfigMap/{web}/{n}" for n in mid} <= (
        real.inventory(real_kube, "real-1", instance=instance, bundle="web") or set()
    )

    assert sync_in_process(repo.root, admin, instance=instance).ok
    assert set(configmaps(real_kube, "real-1", web)) == {"c000", "fresh"}
    assert real.inventory(real_kube, "real-1", instance=instance, bundle="web") == {
        f"ConfigMap/{web}/c000",
        f"ConfigMap/{web}/fresh",
    }


def crd(group: str) -> dict[str, Any]:
    """A namespaced Widget kind in its own API group (the clusters, and their CRDs, live for the session)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                            },
                        }
                    },
                }
            ],
        },
    }


def widget(group: str, name: str = "w1", size: int = 3) -> dict[str, Any]:
    return {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": size}}


def test_a_crd_and_its_custom_resources_in_one_bundle_are_applied_in_order_and_then_left_alone(
    real_kube: kube.ControlPlane, repo: GitOpsRepo, admin: Path, names: tuple[str, str, str]
) -> None:
    instance, web, _ = names
    group = f"{instance}.example.com"
    repo.bundle("widgets", [widget(group), configmap("cfg"), crd(group)], namespace=web, selector={})
    repo.commit("crd and cr together")
    result = sync_in_process(repo.root, admin, instance=instance)
    assert result.ok, [c.bundles["widgets"].problems for c in result.clusters.values()]
    for cluster in BOTH:
        widgets = real.objects(real_kube, cluster, web, "widgets", group=f"{group}/v1")
        assert set(widgets) == {"w1"} and widgets["w1"]["spec"] == {"size": 3}
    before = {c: real.objects(real_kube, c, web, "widgets", group=f"{group}/v1") for c in BOTH}
    result = sync_in_process(repo.root, admin, instance=instance)
    assert result.ok
    assert actions(result.clusters["real-1"].bundles["widgets"]) == {"unchanged": 3}
    assert {c: real.objects(real_kube, c, web, "widgets", group=f"{group}/v1") for c in BOTH} == before


def test_custom_resources_in_a_bundle_not_depending_on_their_crds_bundle_wait_one_sync_on_real_and_sim_alike(
    real_kube: kube.ControlPlane, tmp_path: Path, admin: Path, names: tuple[str, str, str]
) -> None:
    """A kind is served only once its CRD is Established, and fleet reads what is served before it writes:
    the first sync cannot apply custom resources of a bundle that does not dependsOn the CRD's bundle
    (nothing of that bundle is pruned), the next sync applies them. The sim, which serves a CRD's kind the
    moment it is created, must give fleet the very same outcome (docs/real-cluster.md)."""
    instance, web, _ = names
    group = f"{instance}.example.com"

    def first_and_second(kubeconfig: Path, clusters: list[str], root: Path) -> list[tuple[str, ...]]:
        repo = GitOpsRepo(root)
        for c in clusters:
            repo.cluster(c)
        repo.bundle("crds", [crd(group)], selector={})
        repo.bundle("widgets", [widget(group), configmap("cfg")], namespace=web, selector={})
        repo.commit("crd and widgets, no dependsOn")
        outcome = []
        for _ in range(2):
            result = sync_in_process(repo.root, kubeconfig, instance=instance)
            for c in clusters:
                bundles = result.clusters[c].bundles
                outcome.append(
                    (
                        str(bundles["crds"].state) != "Failed",
                        str(bundles["widgets"].state),
                        *bundles["widgets"].problems,
                    )
                )
        return outcome

    no_matches = (
        f'Widget/{web}/w1: no matches for kind "Widget" in version "{group}/v1" '
        "(is its CustomResourceDefinition installed?)"
    )
    expected = [(True, "Failed", no_matches)] * 2 + [(True, "Synced")] * 2
    assert first_and_second(admin, BOTH, tmp_path / "real") == expected
    for cluster in BOTH:
        assert set(real.objects(real_kube, cluster, web, "widgets", group=f"{group}/v1")) == {"w1"}
    with testing.serving(names=["sim-1", "sim-2"]) as sim:
        assert first_and_second(sim.kubeconfig, ["sim-1", "sim-2"], tmp_path / "sim") == expected


def test_custom_resources_whose_bundle_depends_on_the_crds_bundle_are_applied_by_the_first_sync(
    real_kube: kube.ControlPlane, repo: GitOpsRepo, admin: Path, names: tuple[str, str, str]
) -> None:
    instance, web, _ = names
    group = f"{instance}.example.com"
    repo.bundle("crds", [crd(group)], selector={})
    repo.bundle("widgets", [widget(group)], namespace=web, selector={}, dependsOn=["crds"])
    repo.commit("crd and widgets, with dependsOn")
    result = sync_in_process(repo.root, admin, instance=instance, wait=True)
    assert result.ok, [c.bundles["widgets"].problems for c in result.clusters.values()]
    for cluster in BOTH:
        assert set(real.objects(real_kube, cluster, web, "widgets", group=f"{group}/v1")) == {"w1"}


CANARY = "canary-s3cr3t-on-a-real-cluster"


def secret(name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"password": value},
    }


def diff(repo: GitOpsRepo, kubeconfig: Path, instance: str) -> tuple[int, str, str]:
    done = run_fleet("diff", str(repo.root), "--kubeconfig", str(kubeconfig), "--instance", instance)
    return done.returncode, done.stdout, done.stderr


def everything(plane: kube.ControlPlane, namespaces: list[str]) -> dict[tuple[str, str, str, str], str]:
    """Every ConfigMap and Secret of the namespaces on both clusters with its resourceVersion."""
    return {
        (cluster, ns, plural, name): obj["metadata"]["resourceVersion"]
        for cluster in BOTH
        for ns in namespaces
        for plural in ("configmaps", "secrets")
        for name, obj in real.objects(plane, cluster, ns, plural).items()
    }


def test_fleet_diff_on_real_clusters_exits_0_when_in_sync_and_1_with_a_unified_diff_and_never_writes(
    real_kube: kube.ControlPlane, repo: GitOpsRepo, admin: Path, names: tuple[str, str, str]
) -> None:
    instance, web, base = names
    repo.bundle("web", [configmap("one"), configmap("two"), secret("db", CANARY)], namespace=web, selector={})
    repo.commit("first")
    assert sync_in_process(repo.root, admin, instance=instance).ok
    code, out, err = diff(repo, admin, instance)
    assert (code, out) == (0, ""), err

    repo.bundle(
        "web",
        [configmap("one", key="changed"), configmap("three"), secret("db", CANARY + "-rotated")],
        namespace=web,
        selector={},
    )
    repo.bundle("base", [configmap("new-here")], namespace=base, selector={"env": "prod"})
    repo.commit("change one, add three, drop two, rotate db, a new namespace on real-1")
    before = everything(real_kube, [web, base])
    code, out, err = diff(repo, admin, instance)
    assert code == 1, err
    assert out.count(f"--- live/ConfigMap/{web}/one") == 2 and f"+++ desired/ConfigMap/{web}/one" in out
    assert "-  key: value" in out and "+  key: changed" in out
    assert f"ConfigMap/{web}/three (new)" in out and f"ConfigMap/{web}/two (removed)" in out
    assert f"ConfigMap/{base}/new-here (new)" in out  # dry-run into a namespace that does not exist yet
    assert "<redacted: changed>" in out
    for noise in ("managedFields", "resourceVersion", "creationTimestamp", "uid:", CANARY):
        assert noise not in out + err
    assert everything(real_kube, [web, base]) == before  # a server-side dry run writes nothing
    assert real.get(real_kube, "real-1", f"/api/v1/namespaces/{base}") is None


def test_a_secret_from_string_data_is_stored_as_data_and_a_second_sync_leaves_it_alone(
    real_kube: kube.ControlPlane, repo: GitOpsRepo, admin: Path, names: tuple[str, str, str]
) -> None:
    instance, web, _ = names
    repo.bundle("web", [secret("db", CANARY)], namespace=web, selector={})
    repo.commit("first")
    done = run_fleet("sync", str(repo.root), "--kubeconfig", str(admin), "--instance", instance)
    assert done.returncode == 0, done.stderr
    assert CANARY not in done.stdout + done.stderr
    stored = real.objects(real_kube, "real-1", web, "secrets")["db"]
    assert "stringData" not in stored and stored["data"]["password"]  # the API server folded it into data
    first = {c: real.objects(real_kube, c, web, "secrets")["db"]["metadata"]["resourceVersion"] for c in BOTH}
    result = sync_in_process(repo.root, admin, instance=instance)
    assert result.ok
    assert actions(result.clusters["real-2"].bundles["web"]) == {"unchanged": 1}
    assert {
        c: real.objects(real_kube, c, web, "secrets")["db"]["metadata"]["resourceVersion"] for c in BOTH
    } == first


def deployment(name: str, *, replicas: int, deadline: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": name, "image": "registry.invalid/web:1"}]},
        },
    }
    if deadline is not None:
        spec["progressDeadlineSeconds"] = deadline
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


def test_health_is_what_the_real_deployment_controller_reports(
    real_kube: kube.ControlPlane, repo: GitOpsRepo, admin: Path, names: tuple[str, str, str]
) -> None:
    """Pods never run here (no scheduler, no kubelet): a Deployment of 0 replicas is healthy once the
    controller-manager observed it; one that needs a Pod fails when its progress deadline is exceeded."""
    instance, web, base = names
    repo.bundle("idle", [deployment("idle", replicas=0)], namespace=web, selector={"env": "prod"})
    repo.bundle(
        "stuck", [deployment("stuck", replicas=1, deadline=2)], namespace=base, selector={"env": "prod"}
    )
    repo.commit("first")
    result = sync_in_process(repo.root, admin, instance=instance, wait=True, health_timeout=60)
    bundles = result.clusters["real-1"].bundles
    assert str(bundles["idle"].state) == "Synced", bundles["idle"].message
    assert str(bundles["stuck"].state) == "Failed" and bundles["stuck"].degraded, bundles["stuck"].message
    assert bundles["stuck"].message == f"Deployment/{base}/stuck: progress deadline exceeded"
    idle = real.get(real_kube, "real-1", f"/apis/apps/v1/namespaces/{web}/deployments/idle")
    assert idle is not None and idle["status"]["observedGeneration"] == idle["metadata"]["generation"]


def test_discovery_of_a_real_api_server_is_read_aggregated_in_two_requests(
    real_kube: kube.ControlPlane,
) -> None:
    """A real kube-apiserver answers `/apis` with aggregated discovery but `/apis/` (a trailing slash) with
    the legacy APIGroupList whatever the Accept header asks: fleet must ask for `/apis`, or every round
    walks every group version (22 more requests on a bare 1.36 API server, more with each CRD group)."""
    from fleet.clients import kube as client_mod

    path = real_kube.kubeconfig(["real-1"])
    config = client_mod.parse_kubeconfig([(str(path), path.read_bytes())])
    client = client_mod.Client(
        cluster="real-1", context=config.context("real-1"), settings=client_mod.Settings()
    )

    async def discover() -> Any:
        try:
            return await client.types()
        finally:
            await client.aclose()

    types = anyio.run(discover)
    assert ("apps/v1", "Deployment") in types.types and ("v1", "ConfigMap") in types.types
    assert client.stats.requests == 2
