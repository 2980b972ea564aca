"""`fleet serve` against two real API servers (tests/support/kube.py): convergence, drift repair through
the real watch, rollouts of waves judged by the real deployment controller, and a prune RBAC forbids.

Each test runs its own `fleet serve` process (its own instance, state directory and namespaces: the
clusters live for the whole session). People act as they would: with the real kubectl, and through
fleet's HTTP API.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import kube, real, serve
from tests.support.reconcile import GitOpsRepo, configmap

pytestmark = [pytest.mark.real, pytest.mark.slow]

BOTH = ["real-1", "real-2"]
ALL_AT_ONCE = {"waves": [{"name": "all", "maxConcurrency": "100%"}]}


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:6]


@contextmanager
def serving(
    plane: kube.ControlPlane, tmp_path: Path, repo: GitOpsRepo, instance: str, *, user: str = "admin"
) -> Iterator[serve.ServeProcess]:
    with serve.serving(
        repo=repo.root,
        kubeconfig=plane.kubeconfig(BOTH, user=user),
        state_dir=tmp_path / "state",
        log=tmp_path / "serve.log",
        args=["--interval", "1s", "--instance", instance, "--health-timeout", "30s"],
    ) as fleet:
        yield fleet


def synced_at(sha: str) -> Callable[[dict[str, Any]], bool]:
    def check(doc: dict[str, Any]) -> bool:
        cs = doc.get("clusters") or {}
        return set(cs) == set(BOTH) and all(
            c["state"] == "Synced" and c["revision"] == sha for c in cs.values()
        )

    return check


def watching_all(doc: dict[str, Any]) -> bool:
    return all((doc["clusters"][c].get("watch") or {}).get("streams", 0) >= 1 for c in BOTH)


def test_fleet_serve_converges_on_two_real_clusters_and_repairs_kubectl_edits_and_deletes_through_the_watch(
    real_kube: kube.ControlPlane, tmp_path: Path, suffix: str
) -> None:
    instance, ns = f"s{suffix}", f"apps-{suffix}"
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("real-1", labels={"env": "prod"})
    repo.cluster("real-2", labels={"env": "dev"})
    repo.bundle(
        "settings",
        [configmap("settings", colour="blue"), configmap("extra")],
        namespace=ns,
        selector={},
        rollout=ALL_AT_ONCE,
    )
    repo.bundle("prod", [configmap("prod-only")], namespace=ns, selector={"env": "prod"}, rollout=ALL_AT_ONCE)
    first = repo.commit("first")
    with serving(real_kube, tmp_path, repo, instance) as fleet:
        doc = fleet.wait_for(synced_at(first), timeout=90, what="both real clusters Synced")
        assert set(doc["clusters"]["real-1"]["bundles"]) == {"settings", "prod"}
        assert set(doc["clusters"]["real-2"]["bundles"]) == {"settings"}
        assert set(real.objects(real_kube, "real-1", ns)) == {"settings", "extra", "prod-only"}
        assert set(real.objects(real_kube, "real-2", ns)) == {"settings", "extra"}
        fleet.wait_for(watching_all, what="watch streams open on both clusters")

        # A person edits an owned object with kubectl edit (the editor is sed) and deletes another one.
        edited = real.kubectl(
            real_kube,
            "real-1",
            "-n",
            ns,
            "edit",
            "configmap",
            "settings",
            env={"KUBE_EDITOR": "sed -i s/colour:\\ blue/colour:\\ edited/"},
        )
        assert "edited" in edited.stdout
        real.kubectl(real_kube, "real-2", "-n", ns, "delete", "configmap", "extra")
        real.eventually(
            lambda: (
                real.objects(real_kube, "real-1", ns)["settings"]["data"] == {"colour": "blue"}
                and "extra" in real.objects(real_kube, "real-2", ns)
            ),
            timeout=30,
            what="fleet to restore the edited object and recreate the deleted one",
        )
        real.eventually(
            lambda: fleet.metric("fleet_drift_repairs_total") >= 2,
            timeout=15,
            what="two drift repairs counted",
        )

        # A new commit is picked up by polling: a change, and a removed manifest pruned.
        repo.bundle(
            "settings",
            [configmap("settings", colour="green")],
            namespace=ns,
            selector={},
            rollout=ALL_AT_ONCE,
        )
        second = repo.commit("green, extra removed")
        fleet.wait_for(synced_at(second), timeout=60, what="the second commit Synced")
    for cluster in BOTH:
        live = real.objects(real_kube, cluster, ns)
        assert live["settings"]["data"] == {"colour": "green"}
        assert "extra" not in live
        assert real.inventory(real_kube, cluster, instance=instance, bundle="settings") == {
            f"ConfigMap/{ns}/settings"
        }


def deployment(image: str, *, replicas: int = 0, deadline: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": image}]},
        },
    }
    if deadline is not None:
        spec["progressDeadlineSeconds"] = deadline
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": spec}


CANARY_THEN_APPROVAL = {
    "waves": [
        {"name": "canary", "placement": {"clusters": ["real-1"]}},
        {"name": "rest", "approval": "before"},
    ],
    "progressDeadline": "60s",
}


def rollout_state(sha: str, *states: str) -> Callable[[dict[str, Any]], bool]:
    def check(doc: dict[str, Any]) -> bool:
        r = (doc.get("rollouts") or {}).get("web")
        return r is not None and r["revision"] == sha and r["state"] in states

    return check


def test_a_rollout_moves_wave_by_wave_on_real_clusters_and_halts_when_the_deployment_controller_says_so(
    real_kube: kube.ControlPlane, tmp_path: Path, suffix: str
) -> None:
    """Deployments of 0 replicas turn healthy once the real deployment controller observed them; one that
    needs a Pod (none ever runs here) fails at its progressDeadlineSeconds, which halts the rollout."""
    instance, ns = f"r{suffix}", f"web-{suffix}"
    repo = GitOpsRepo(tmp_path / "repo")
    for c in BOTH:
        repo.cluster(c)

    def web(image: str, **kw: Any) -> str:
        repo.bundle(
            "web",
            [deployment(image, **kw), configmap("web", image=image)],
            namespace=ns,
            selector={},
            rollout=CANARY_THEN_APPROVAL,
        )
        return repo.commit(image)

    def image_on(cluster: str) -> str | None:
        found = real.get(real_kube, cluster, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
        return None if found is None else str(found["spec"]["template"]["spec"]["containers"][0]["image"])

    def approve(fleet: serve.ServeProcess) -> None:
        resp = fleet.post("/api/v1/rollouts/web/approve", params={"actor": "ada", "reason": "canary is fine"})
        assert resp.status_code == 202, resp.text

    first = web("web:1")
    with serving(real_kube, tmp_path, repo, instance) as fleet:
        doc = fleet.wait_for(rollout_state(first, "WaitingApproval"), timeout=90, what="the canary done")
        assert doc["rollouts"]["web"]["waves"][0]["clusters"] == {"real-1": "Done"}
        assert (image_on("real-1"), image_on("real-2")) == ("web:1", None)  # the rest waits for a person
        approve(fleet)
        fleet.wait_for(rollout_state(first, "Completed"), timeout=60, what="the first rollout completed")
        assert image_on("real-2") == "web:1"
        held = real.get(real_kube, "real-2", f"/apis/apps/v1/namespaces/{ns}/deployments/web")
        assert held is not None

        bad = web("web:2", replicas=1, deadline=2)
        doc = fleet.wait_for(rollout_state(bad, "Halted"), timeout=90, what="the bad revision halted")
        r = doc["rollouts"]["web"]
        assert r["wave"] == "canary" and "real-1: degraded" in r["reason"], r
        assert r["waves"][0]["failed"]["real-1"]["reason"] == "degraded"
        assert set(r["waves"][1]["clusters"].values()) == {"Pending"}
        assert image_on("real-1") == "web:2"
        assert doc["clusters"]["real-2"]["bundles"]["web"]["revision"] == first

        fixed = web("web:3")  # a fix forward supersedes the halted rollout and starts at the canary again
        fleet.wait_for(rollout_state(fixed, "WaitingApproval"), timeout=90, what="the fix past the canary")
        assert image_on("real-2") == "web:1"
        approve(fleet)
        fleet.wait_for(rollout_state(fixed, "Completed"), timeout=60, what="the fix completed")
        done = fleet.wait_for(synced_at(fixed), timeout=30, what="both clusters Synced at the fix")
    assert (image_on("real-1"), image_on("real-2")) == ("web:3", "web:3")
    # real-2 never saw web:2: its Deployment went from the first revision straight to the fix.
    now = real.get(real_kube, "real-2", f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert now is not None and now["metadata"]["generation"] == held["metadata"]["generation"] + 1
    assert done["rollouts"]["web"]["actions"][-1]["actor"] == "ada"


def test_under_fleet_serve_a_prune_rbac_forbids_fails_the_bundle_and_stays_in_the_inventory(
    real_kube: kube.ControlPlane, tmp_path: Path, suffix: str
) -> None:
    instance, ns = f"l{suffix}", f"lim-{suffix}"
    repo = GitOpsRepo(tmp_path / "repo")
    for c in BOTH:
        repo.cluster(c)
    repo.bundle("web", [configmap("keep"), configmap("drop")], namespace=ns, selector={}, rollout=ALL_AT_ONCE)
    first = repo.commit("first")
    both = {f"ConfigMap/{ns}/keep", f"ConfigMap/{ns}/drop"}
    with serving(real_kube, tmp_path, repo, instance, user=kube.LIMITED_USER) as fleet:
        fleet.wait_for(synced_at(first), timeout=90, what="Synced as the limited user")
        repo.bundle("web", [configmap("keep")], namespace=ns, selector={}, rollout=ALL_AT_ONCE)
        second = repo.commit("drop one")

        def refused(doc: dict[str, Any]) -> bool:
            r = (doc.get("rollouts") or {}).get("web") or {}
            return r.get("revision") == second and all(doc["clusters"][c]["state"] == "Failed" for c in BOTH)

        doc = fleet.wait_for(refused, timeout=60, what="the prune refused on both clusters")
        # Not fully held, the second commit is not the clusters' revision (docs/operations.md).
        assert [doc["clusters"][c]["revision"] for c in BOTH] == [first, first]
        for cluster in BOTH:
            bundle = doc["clusters"][cluster]["bundles"]["web"]
            assert bundle["state"] == "Failed"
            assert 'User "limited" cannot delete resource "configmaps"' in (bundle["lastError"] or ""), bundle
            assert set(real.objects(real_kube, cluster, ns)) == {"keep", "drop"}
            assert real.inventory(real_kube, cluster, instance=instance, bundle="web") == both
