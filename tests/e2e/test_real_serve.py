"""`fleet serve` against two real API servers (tests/support/kube.py): convergence, drift repair through
the real watch, rollouts of waves judged by the real deployment controller, and a prune RBAC forbids.

Each test runs its own `fleet serve` process (its own instance, state directory and namespaces: the
clusters live for the whole session). People act as they would: with the real kubectl, and through
fleet's HTTP API.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fleet.core import health
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


def test_a_rollout_moves_wave_by_wave_on_real_clusters_and_halts_on_what_the_real_server_refuses_or_reports(
    real_kube: kube.ControlPlane, tmp_path: Path, suffix: str
) -> None:
    """Deployments of 0 replicas turn healthy once the real deployment controller observed them. A
    revision the API server refuses (an invalid ConfigMap key: 422) halts after the canary and the fix
    forward supersedes it; a Deployment that needs a Pod (none ever runs here) fails at its
    progressDeadlineSeconds, which halts the rollout after the canary too, and its fix forward completes."""
    instance, ns = f"r{suffix}", f"web-{suffix}"
    repo = GitOpsRepo(tmp_path / "repo")
    for c in BOTH:
        repo.cluster(c)

    def web(image: str, *extra: dict[str, Any], **kw: Any) -> str:
        objects = [deployment(image, **kw), configmap("web", image=image), *extra]
        repo.bundle("web", objects, namespace=ns, selector={}, rollout=CANARY_THEN_APPROVAL)
        return repo.commit(image)

    def image_on(cluster: str) -> str | None:
        found = real.get(real_kube, cluster, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
        return None if found is None else str(found["spec"]["template"]["spec"]["containers"][0]["image"])

    def generation(cluster: str) -> int:
        found = real.get(real_kube, cluster, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
        assert found is not None
        return int(found["metadata"]["generation"])

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
        held = generation("real-2")

        refused = web(
            "web:2",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "bad"},
                "data": {"not a key!": "x"},
            },
        )
        doc = fleet.wait_for(rollout_state(refused, "Halted"), timeout=90, what="the refused revision halted")
        r = doc["rollouts"]["web"]
        assert r["wave"] == "canary" and r["waves"][0]["failed"]["real-1"]["reason"] == "apply", r
        assert (
            "Invalid" in r["waves"][0]["failed"]["real-1"]["message"]
            or "invalid" in r["waves"][0]["failed"]["real-1"]["message"]
        ), r
        assert set(r["waves"][1]["clusters"].values()) == {"Pending"}
        assert (image_on("real-2"), generation("real-2")) == ("web:1", held)  # real-2 untouched
        assert "bad" not in real.objects(real_kube, "real-2", ns)

        fixed = web("web:3")  # a fix forward supersedes the halted rollout and starts at the canary again
        fleet.wait_for(rollout_state(fixed, "WaitingApproval"), timeout=90, what="the fix past the canary")
        assert image_on("real-2") == "web:1"
        approve(fleet)
        fleet.wait_for(rollout_state(fixed, "Completed"), timeout=60, what="the fix completed")
        done = fleet.wait_for(synced_at(fixed), timeout=30, what="both clusters Synced at the fix")
        assert (image_on("real-1"), image_on("real-2")) == ("web:3", "web:3")
        assert generation("real-2") == held + 1  # real-2 went from the first revision straight to the fix
        assert done["rollouts"]["web"]["actions"][-1]["actor"] == "ada"

        stuck = web("web:4", replicas=1, deadline=2)
        doc = fleet.wait_for(rollout_state(stuck, "Halted"), timeout=90, what="the stuck revision halted")
        r = doc["rollouts"]["web"]
        assert r["wave"] == "canary" and "real-1: degraded" in r["reason"], r
        assert r["waves"][0]["failed"]["real-1"] == {
            "reason": "degraded",
            "message": f"Deployment/{ns}/web: progress deadline exceeded",
        }
        assert set(r["waves"][1]["clusters"].values()) == {"Pending"}
        assert (image_on("real-1"), image_on("real-2")) == ("web:4", "web:3")
        assert generation("real-2") == held + 1

        # The fix forward changes template and replicas of the Deployment past its deadline: the real
        # deployment controller first reports it with the old ProgressDeadlineExceeded, which is no
        # verdict on the fix (docs/real-cluster.md): it completes.
        last = web("web:5")
        fleet.wait_for(
            rollout_state(last, "WaitingApproval", "Halted"), timeout=90, what="the canary of web:5"
        )
        approve(fleet)
        doc = fleet.wait_for(rollout_state(last, "Completed", "Halted"), timeout=60, what="web:5 done")
        assert doc["rollouts"]["web"]["state"] == "Completed", doc["rollouts"]["web"]
        fleet.wait_for(synced_at(last), timeout=30, what="both clusters Synced at web:5")
    assert (image_on("real-1"), image_on("real-2")) == ("web:5", "web:5")


def test_a_deployment_past_its_deadline_changed_in_template_and_replicas_reports_the_old_deadline_first_and_fleet_waits(
    real_kube: kube.ControlPlane, suffix: str
) -> None:
    """What the real deployment controller does, which the sim does not (docs/real-cluster.md): a change of
    template and replicas together is first handled as a scaling, whose status update reports the new
    generation as observed while Progressing still says ProgressDeadlineExceeded from the old template; the
    new rollout's condition follows. Judged alone that first status is Failed; judged with what the apply
    answer carried (health.Memory, as fleet does), no status of the fix is."""
    ns = f"pde-{suffix}"
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    with real_kube.client("real-1") as api:
        assert (
            api.post(
                "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            ).status_code
            == 201
        )
        assert api.post(path, json=deployment("web:1", replicas=1, deadline=1)).status_code == 201

        def progressing() -> str | None:
            status = api.get(f"{path}/web").json().get("status") or {}
            return next(
                (c.get("reason") for c in status.get("conditions") or [] if c["type"] == "Progressing"), None
            )

        real.eventually(
            lambda: progressing() == "ProgressDeadlineExceeded", timeout=60, what="the deadline exceeded"
        )
        seen: list[tuple[int, int, str | None]] = []
        alone: list[health.Status] = []
        judged: list[health.Status] = []
        memory = health.Memory()
        listed = api.get(path).json()["metadata"]["resourceVersion"]
        changed = api.patch(
            f"{path}/web",
            params={"fieldManager": "test", "force": "true"},
            content=json.dumps(deployment("web:2", replicas=0)),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        assert changed.status_code == 200, changed.text
        memory.note([changed.json()], now=time.time())
        params = {
            "watch": "1",
            "resourceVersion": listed,
            "timeoutSeconds": "30",
            "fieldSelector": "metadata.name=web",
        }
        with api.stream("GET", path, params=params) as events:
            for line in events.iter_lines():
                obj = json.loads(line)["object"]
                status = obj.get("status") or {}
                reason = next(
                    (c.get("reason") for c in status.get("conditions") or [] if c["type"] == "Progressing"),
                    None,
                )
                seen.append((obj["metadata"]["generation"], status.get("observedGeneration", 0), reason))
                alone.append(health.assess(obj).status)
                judged.append(memory.assess(obj, now=time.time()).status)
                if reason == "NewReplicaSetAvailable":
                    break
        api.delete(f"/api/v1/namespaces/{ns}")
    observed = [s for s in seen if s[1] == s[0]]  # the statuses of the new generation, in order
    assert observed[0] == (2, 2, "ProgressDeadlineExceeded"), seen
    assert observed[-1] == (2, 2, "NewReplicaSetAvailable"), seen
    assert alone[seen.index(observed[0])] is health.Status.FAILED
    assert health.Status.FAILED not in judged[seen.index(observed[0]) :], (seen, judged)
    assert judged[-1] is health.Status.HEALTHY


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
