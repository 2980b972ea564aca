"""Health of a Deployment past its progress deadline and fixed forward, on a real API server.

The real deployment controller handles a change of a Deployment's template and replicas first as a
scaling: its first status of the new generation still says ProgressDeadlineExceeded from the old template,
and the new rollout's condition follows some milliseconds later (docs/real-cluster.md; the controller's
own behaviour is pinned in tests/e2e/test_real_serve.py). fleet must not take that first status for a
verdict on the fix. To look at fleet exactly in that window, these tests run on the `quiet` cluster,
which has no deployment controller: the test writes the statuses the controller writes, through the real
status subresource, at the moment fleet's apply of the new generation is stored, and holds the window open
for seconds.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import kube, real, serve
from tests.support.reconcile import GitOpsRepo, configmap, sync_in_process

pytestmark = [pytest.mark.real, pytest.mark.slow]

WINDOW = 3.0  # seconds the test holds the controller's first status of the new generation


@pytest.fixture
def quiet(real_kube: kube.ControlPlane) -> kube.Cluster:
    return real_kube.cluster_with(kube.QUIET, controllers=kube.QUIET_CONTROLLERS)


def deployment(image: str, *, replicas: int, deadline: int | None = None) -> dict[str, Any]:
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


def stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exceeded(replica_set: str) -> dict[str, Any]:
    now = stamp()
    return {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": f'ReplicaSet "{replica_set}" has timed out progressing.',
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def available(replica_set: str) -> dict[str, Any]:
    now = stamp()
    return {
        "type": "Progressing",
        "status": "True",
        "reason": "NewReplicaSetAvailable",
        "message": f'ReplicaSet "{replica_set}" has successfully progressed.',
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


class Controller:
    """Writes a Deployment's status as the deployment controller would (the cluster has none)."""

    def __init__(self, plane: kube.ControlPlane, cluster: str, namespace: str) -> None:
        self.plane, self.cluster = plane, cluster
        self.path = f"/apis/apps/v1/namespaces/{namespace}/deployments/web"

    def get(self) -> dict[str, Any] | None:
        return real.get(self.plane, self.cluster, self.path)

    def write(self, observed: int, condition: dict[str, Any]) -> None:
        """Status observing generation `observed`, with this Progressing condition, no Pod available."""
        with self.plane.client(self.cluster) as api:
            for _ in range(20):
                obj = api.get(self.path).json()
                obj["status"] = {
                    "observedGeneration": observed,
                    "replicas": 0,
                    "updatedReplicas": 0,
                    "availableReplicas": 0,
                    "conditions": [condition],
                }
                resp = api.put(f"{self.path}/status", json=obj)
                if resp.status_code != 409:  # a write of fleet's in between: read it again
                    assert resp.status_code == 200, resp.text
                    return
            raise AssertionError(f"status of {self.path} not written: {resp.text}")

    def exceed(self) -> dict[str, Any]:
        """The deadline exceeded for the current generation; the condition written."""
        obj = self.get()
        assert obj is not None
        condition = exceeded("web-old")
        self.write(obj["metadata"]["generation"], condition)
        return condition

    @contextmanager
    def fix_forward_window(self, old: dict[str, Any], generation: int) -> Iterator[threading.Event]:
        """In a thread: once fleet's write of `generation` is stored, the controller's first status of it
        with the `old` condition, held `WINDOW` seconds, then the new rollout completed (0 replicas).
        The event is set when the window opened."""
        opened, stop = threading.Event(), threading.Event()
        failures: list[BaseException] = []

        def run() -> None:
            try:
                while not stop.is_set():
                    obj = self.get()
                    if obj is not None and obj["metadata"]["generation"] >= generation:
                        break
                    time.sleep(0.02)
                else:
                    return
                self.write(generation, old)
                opened.set()
                if stop.wait(WINDOW):
                    return
                self.write(generation, available("web-new"))
            except BaseException as e:  # reported by the test's thread
                failures.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield opened
        finally:
            stop.set()
            thread.join(timeout=30)
        if failures:
            raise failures[0]


def test_fleet_sync_waits_through_the_old_deadline_exceeded_a_fix_forward_is_first_reported_with(
    real_kube: kube.ControlPlane, quiet: kube.Cluster, tmp_path: Path
) -> None:
    instance, ns = f"h{uuid.uuid4().hex[:6]}", f"health-{uuid.uuid4().hex[:6]}"
    kubeconfig = real_kube.kubeconfig([quiet.name])
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster(quiet.name)
    repo.bundle("web", [deployment("web:1", replicas=1, deadline=5)], namespace=ns, selector={})
    repo.commit("stuck")
    assert sync_in_process(repo.root, kubeconfig, instance=instance).ok
    controller = Controller(real_kube, quiet.name, ns)
    old = controller.exceed()
    stuck = sync_in_process(repo.root, kubeconfig, instance=instance, wait=True, health_timeout=30)
    bundle = stuck.clusters[quiet.name].bundles["web"]
    assert (str(bundle.state), bundle.message) == (
        "Failed",
        f"Deployment/{ns}/web: progress deadline exceeded",
    )

    repo.bundle("web", [deployment("web:2", replicas=0)], namespace=ns, selector={})
    repo.commit("fix forward: a new template and 0 replicas")
    with controller.fix_forward_window(old, generation=2) as opened:
        started = time.monotonic()
        result = sync_in_process(repo.root, kubeconfig, instance=instance, wait=True, health_timeout=30)
    assert opened.is_set()
    bundle = result.clusters[quiet.name].bundles["web"]
    assert (str(bundle.state), bundle.message) == ("Synced", ""), bundle.message
    assert time.monotonic() - started >= WINDOW  # it waited for the new rollout's status


def rollout_state(sha: str, *states: str) -> Callable[[dict[str, Any]], bool]:
    def check(doc: dict[str, Any]) -> bool:
        r = (doc.get("rollouts") or {}).get("web")
        return r is not None and r["revision"] == sha and r["state"] in states

    return check


def test_under_fleet_serve_a_fix_forward_first_reported_with_the_old_deadline_exceeded_completes_its_rollout(
    real_kube: kube.ControlPlane, quiet: kube.Cluster, tmp_path: Path
) -> None:
    """The rollout's health probe runs on the very watch event of that first status: the window."""
    instance, ns = f"h{uuid.uuid4().hex[:6]}", f"health-{uuid.uuid4().hex[:6]}"
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster(quiet.name)
    rollout = {"waves": [{"name": "all"}], "progressDeadline": "60s"}

    def web(image: str, **kw: Any) -> str:
        objects = [deployment(image, **kw), configmap("web", image=image)]
        repo.bundle("web", objects, namespace=ns, selector={}, rollout=rollout)
        return repo.commit(image)

    controller = Controller(real_kube, quiet.name, ns)
    stuck = web("web:1", replicas=1, deadline=5)
    with serve.serving(
        repo=repo.root,
        kubeconfig=real_kube.kubeconfig([quiet.name]),
        state_dir=tmp_path / "state",
        log=tmp_path / "serve.log",
        args=["--interval", "1s", "--instance", instance, "--health-timeout", "30s"],
    ) as fleet:
        real.eventually(lambda: controller.get() is not None, timeout=60, what="the Deployment applied")
        old = controller.exceed()
        doc = fleet.wait_for(rollout_state(stuck, "Halted"), timeout=60, what="the stuck revision halted")
        assert doc["rollouts"]["web"]["waves"][0]["failed"][quiet.name] == {
            "reason": "degraded",
            "message": f"Deployment/{ns}/web: progress deadline exceeded",
        }

        with controller.fix_forward_window(old, generation=2) as opened:
            fixed = web("web:2", replicas=0)
            assert opened.wait(60), "fleet did not apply the fix"
            time.sleep(WINDOW - 0.5)
            assert fleet.status()["rollouts"]["web"]["state"] == "Progressing"
            doc = fleet.wait_for(
                rollout_state(fixed, "Completed", "Halted"), timeout=60, what="the fix forward done"
            )
        r = doc["rollouts"]["web"]
        assert r["state"] == "Completed", r


def test_a_stuck_deployment_scaled_down_keeps_its_old_deadline_exceeded_which_fails_the_sync_after_its_deadline(
    real_kube: kube.ControlPlane, tmp_path: Path
) -> None:
    """With the real deployment controller: a scaling without a new template starts no new rollout, so the
    old ProgressDeadlineExceeded stays, the very condition fleet's apply answer carried. It is a verdict
    again once progressDeadlineSeconds have passed since fleet saw it: the sync fails as degraded at
    once after that, not at its health timeout."""
    instance, ns = f"h{uuid.uuid4().hex[:6]}", f"health-{uuid.uuid4().hex[:6]}"
    kubeconfig = real_kube.kubeconfig(["real-1"])
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("real-1")
    repo.bundle("web", [deployment("web:1", replicas=2, deadline=2)], namespace=ns, selector={})
    repo.commit("stuck")
    stuck = sync_in_process(repo.root, kubeconfig, instance=instance, wait=True, health_timeout=60)
    assert str(stuck.clusters["real-1"].bundles["web"].state) == "Failed"
    before = real.get(real_kube, "real-1", f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert before is not None
    old = next(c for c in before["status"]["conditions"] if c["type"] == "Progressing")

    repo.bundle("web", [deployment("web:1", replicas=1, deadline=2)], namespace=ns, selector={})
    repo.commit("scaled down")
    started = time.monotonic()
    result = sync_in_process(repo.root, kubeconfig, instance=instance, wait=True, health_timeout=60)
    took = time.monotonic() - started
    bundle = result.clusters["real-1"].bundles["web"]
    assert (str(bundle.state), bundle.message) == (
        "Failed",
        f"Deployment/{ns}/web: progress deadline exceeded",
    )
    assert took < 30, took
    after = real.get(real_kube, "real-1", f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert after is not None and after["status"]["observedGeneration"] == 2
    assert next(c for c in after["status"]["conditions"] if c["type"] == "Progressing") == old
