"""Workload status simulation over raw HTTP and with the real kubectl: rollouts become available after the
delay, Jobs complete, annotations keep one unavailable, and the controller never loops."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fleet.core import health
from fleet.sim import testing
from fleet.sim.storage import store
from tests.sim.kubectl_runner import Runner, eventually

DELAY = 0.2
SETTINGS = store.Settings(workload_delay=DELAY, nodes=4)
APPS = "/apis/apps/v1/namespaces/default"
JOBS = "/apis/batch/v1/namespaces/default/jobs"


def template(name: str, image: str = "nginx:1.27") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": image}]},
    }


def workload(kind: str, name: str, *, replicas: int | None = 2, **annotations: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": template(name)}
    if replicas is not None:
        spec["replicas"] = replicas
    if kind == "StatefulSet":
        spec["serviceName"] = name
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}


def job(name: str, **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "busybox"}]}
            }
        },
    }


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["c1"], settings=SETTINGS) as handle:
        yield handle


@pytest.fixture
def client(sim: testing.SimHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url("c1"), timeout=10.0) as c:
        yield c


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in (obj.get("status") or {}).get("conditions") or []}


def observed(client: httpx.Client, path: str, generation: int) -> dict[str, Any]:
    """The object once its status reports `generation` (the controller's write landed)."""
    eventually(
        lambda: client.get(path).json().get("status", {}).get("observedGeneration") == generation,
        what=f"observedGeneration {generation}",
    )
    body: dict[str, Any] = client.get(path).json()
    return body


def test_a_deployment_becomes_available_after_the_delay(client: httpx.Client, sim: testing.SimHandle) -> None:
    made = client.post(f"{APPS}/deployments", json=workload("Deployment", "web"))
    assert made.status_code == 201 and made.json()["status"] == {}
    assert health.assess(made.json()).status is health.Status.PROGRESSING
    since = sim.journal_sync("c1")[-1]["seq"]
    live = observed(client, f"{APPS}/deployments/web", 1)
    st = live["status"]
    assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"], st["availableReplicas"]) == (
        2,
        2,
        2,
        2,
    )
    assert conditions(live) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }
    progressing = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert (
        progressing["message"].startswith('ReplicaSet "web-')
        and "successfully progressed" in progressing["message"]
    )
    managers = {
        (m["manager"], m["operation"], m.get("subresource")) for m in live["metadata"]["managedFields"]
    }
    assert ("kube-controller-manager", "Update", "status") in managers
    assert health.assess(live).status is health.Status.HEALTHY
    # Only client requests are journaled: the controller's status write is not among them.
    assert all(e["method"] == "GET" for e in sim.journal_sync("c1", since=since))


def test_a_new_spec_is_not_ready_again_until_the_delay_passes(client: httpx.Client) -> None:
    client.post(f"{APPS}/deployments", json=workload("Deployment", "web"))
    observed(client, f"{APPS}/deployments/web", 1)
    listed = client.get(f"{APPS}/deployments").json()["metadata"]["resourceVersion"]
    changed = client.patch(
        f"{APPS}/deployments/web",
        content=json.dumps({"spec": {"replicas": 5}}),
        headers={"Content-Type": "application/merge-patch+json"},
    ).json()
    assert changed["metadata"]["generation"] == 2 and changed["status"]["observedGeneration"] == 1
    assert health.assess(changed).status is health.Status.PROGRESSING
    # Other replicas: first handled as a scaling (the new generation observed, the old counts), then rolled out.
    statuses = []
    params = {
        "watch": "1",
        "resourceVersion": listed,
        "timeoutSeconds": "10",
        "fieldSelector": "metadata.name=web",
    }
    with client.stream("GET", f"{APPS}/deployments", params=params) as events:
        for line in events.iter_lines():
            statuses.append(json.loads(line)["object"])
            if statuses[-1]["status"].get("availableReplicas") == 5:
                break
    scaled, live = statuses[1:] if len(statuses) == 3 else (None, statuses[-1])
    assert scaled is not None, statuses
    assert (scaled["status"]["observedGeneration"], scaled["status"]["availableReplicas"]) == (2, 2)
    assert health.assess(scaled) == health.Health(health.Status.PROGRESSING, "2 of 5 replicas updated")
    assert health.assess(live).status is health.Status.HEALTHY


def test_the_controller_writes_each_status_once_and_never_loops(client: httpx.Client) -> None:
    client.post(f"{APPS}/deployments", json=workload("Deployment", "web"))
    live = observed(client, f"{APPS}/deployments/web", 1)
    rv = live["metadata"]["resourceVersion"]
    events = []
    with client.stream(
        "GET", f"{APPS}/deployments", params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"}
    ) as stream:
        events = [json.loads(line) for line in stream.iter_lines() if line]
    assert events == []  # nothing happened in a second, five times the delay
    label = client.patch(
        f"{APPS}/deployments/web",
        content=json.dumps({"metadata": {"labels": {"team": "a"}}}),
        headers={"Content-Type": "application/merge-patch+json"},
    ).json()
    time.sleep(3 * DELAY)
    after = client.get(f"{APPS}/deployments/web").json()
    assert after["metadata"]["resourceVersion"] == label["metadata"]["resourceVersion"]


def test_statefulsets_daemonsets_and_replicasets_report_ready_replicas(client: httpx.Client) -> None:
    for kind in ("StatefulSet", "DaemonSet", "ReplicaSet"):
        replicas = None if kind == "DaemonSet" else 3
        r = client.post(f"{APPS}/{kind.lower()}s", json=workload(kind, kind.lower(), replicas=replicas))
        assert r.status_code == 201, r.text
    sts = observed(client, f"{APPS}/statefulsets/statefulset", 1)["status"]
    assert (sts["replicas"], sts["readyReplicas"], sts["updatedReplicas"], sts["availableReplicas"]) == (
        3,
        3,
        3,
        3,
    )
    assert sts["currentRevision"] == sts["updateRevision"]
    ds = observed(client, f"{APPS}/daemonsets/daemonset", 1)["status"]
    assert ds["desiredNumberScheduled"] == 4  # Settings.nodes
    assert (ds["numberReady"], ds["updatedNumberScheduled"], ds["numberAvailable"]) == (4, 4, 4)
    rs = observed(client, f"{APPS}/replicasets/replicaset", 1)["status"]
    assert (rs["replicas"], rs["readyReplicas"], rs["availableReplicas"]) == (3, 3, 3)
    for kind in ("statefulsets/statefulset", "daemonsets/daemonset", "replicasets/replicaset"):
        assert health.assess(client.get(f"{APPS}/{kind}").json()).status is health.Status.HEALTHY


def test_a_job_completes_after_the_delay(client: httpx.Client) -> None:
    made = client.post(JOBS, json=job("once")).json()
    assert health.assess(made).status is health.Status.PROGRESSING
    eventually(lambda: "Complete" in conditions(client.get(f"{JOBS}/once").json()), what="Complete")
    live = client.get(f"{JOBS}/once").json()
    assert conditions(live)["Complete"] == ("True", "CompletionsReached")
    assert live["status"]["succeeded"] == 1 and live["status"]["completionTime"]
    assert health.assess(live).status is health.Status.HEALTHY


def test_the_unavailable_annotation_keeps_a_workload_unavailable(client: httpx.Client) -> None:
    client.post(
        f"{APPS}/deployments", json=workload("Deployment", "stuck", **{"sim.fleet.dev/unavailable": "true"})
    )
    client.post(
        f"{APPS}/statefulsets", json=workload("StatefulSet", "db", **{"sim.fleet.dev/unavailable": "true"})
    )
    client.post(JOBS, json=job("slow", **{"sim.fleet.dev/unavailable": "true"}))
    live = observed(client, f"{APPS}/deployments/stuck", 1)
    assert conditions(live)["Available"] == ("False", "MinimumReplicasUnavailable")
    assert live["status"]["unavailableReplicas"] == 2 and "availableReplicas" not in live["status"]
    assert health.assess(live).status is health.Status.PROGRESSING
    db = observed(client, f"{APPS}/statefulsets/db", 1)
    assert db["status"]["readyReplicas" if "readyReplicas" in db["status"] else "availableReplicas"] == 0
    assert health.assess(db).status is health.Status.PROGRESSING
    eventually(lambda: client.get(f"{JOBS}/slow").json()["status"].get("active") == 1, what="active Job")
    assert health.assess(client.get(f"{JOBS}/slow").json()).status is health.Status.PROGRESSING
    # Removing the annotation lets it become available.
    client.patch(
        f"{APPS}/deployments/stuck",
        content=json.dumps({"metadata": {"annotations": {"sim.fleet.dev/unavailable": None}}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    fixed = observed(client, f"{APPS}/deployments/stuck", 2)
    assert conditions(fixed)["Available"] == ("True", "MinimumReplicasAvailable")


def test_the_failed_annotation_fails_a_deployment_and_a_job(client: httpx.Client) -> None:
    client.post(f"{APPS}/deployments", json=workload("Deployment", "bad", **{"sim.fleet.dev/failed": "true"}))
    client.post(JOBS, json=job("bad", **{"sim.fleet.dev/failed": "true"}))
    live = observed(client, f"{APPS}/deployments/bad", 1)
    assert conditions(live)["Progressing"] == ("False", "ProgressDeadlineExceeded")
    assert health.assess(live).status is health.Status.FAILED
    eventually(lambda: "Failed" in conditions(client.get(f"{JOBS}/bad").json()), what="Failed")
    failed = client.get(f"{JOBS}/bad").json()
    assert conditions(failed)["Failed"] == ("True", "BackoffLimitExceeded")
    assert health.assess(failed).status is health.Status.FAILED


def watched(client: httpx.Client, path: str, listed: str, until: str) -> list[dict[str, Any]]:
    """The objects of each watch event of `bad` from `listed` on, until Progressing's reason is `until`."""
    seen: list[dict[str, Any]] = []
    params = {
        "watch": "1",
        "resourceVersion": listed,
        "timeoutSeconds": "10",
        "fieldSelector": "metadata.name=bad",
    }
    with client.stream("GET", path, params=params) as events:
        for line in events.iter_lines():
            seen.append(json.loads(line)["object"])
            if conditions(seen[-1]).get("Progressing", ("", ""))[1] == until:
                break
    return seen


def test_a_deployment_past_its_deadline_changed_in_replicas_is_first_observed_with_the_old_condition(
    client: httpx.Client,
) -> None:
    """As the real deployment controller does (docs/real-cluster.md): a change of replicas (here with the
    template) is first handled as a scaling, whose status observes the new generation with the conditions
    of the old one; the new rollout's status follows after the delay. Health judged alone takes that
    first status for a failure; judged with fleet's apply answer (health.Memory), it does not."""
    bad = workload("Deployment", "bad", replicas=2, **{"sim.fleet.dev/failed": "true"})
    apply = {"fieldManager": "fleet", "force": "true"}
    headers = {"Content-Type": "application/apply-patch+yaml"}
    client.patch(f"{APPS}/deployments/bad", params=apply, content=json.dumps(bad), headers=headers)
    observed(client, f"{APPS}/deployments/bad", 1)
    listed = client.get(f"{APPS}/deployments").json()["metadata"]["resourceVersion"]
    fixed = workload("Deployment", "bad", replicas=0)
    fixed["spec"]["template"] = template("bad", image="nginx:1.28")
    answer = client.patch(
        f"{APPS}/deployments/bad", params=apply, content=json.dumps(fixed), headers=headers
    ).json()
    memory = health.Memory()
    memory.note([answer], now=0.0)
    seen = watched(client, f"{APPS}/deployments", listed, "NewReplicaSetAvailable")
    steps = [
        (o["metadata"]["generation"], o["status"]["observedGeneration"], conditions(o)["Progressing"][1])
        for o in seen
    ]
    assert steps == [
        (2, 1, "ProgressDeadlineExceeded"),  # fleet's apply
        (2, 2, "ProgressDeadlineExceeded"),  # the scaling
        (2, 2, "NewReplicaSetAvailable"),  # the rollout
    ], steps
    window = seen[1]
    assert "updatedReplicas" not in window["status"]  # no ReplicaSet of the new template yet
    assert health.assess(window).status is health.Status.FAILED
    assert memory.assess(window, now=0.1).status is health.Status.PROGRESSING
    assert memory.assess(seen[2], now=0.3).status is health.Status.HEALTHY


def test_a_change_of_a_deployment_that_keeps_its_replicas_is_observed_only_when_rolled_out(
    client: httpx.Client,
) -> None:
    client.post(f"{APPS}/deployments", json=workload("Deployment", "web", replicas=2))
    observed(client, f"{APPS}/deployments/web", 1)
    changed = workload("Deployment", "web", replicas=2)
    changed["spec"]["template"] = template("web", image="nginx:1.28")
    client.put(f"{APPS}/deployments/web", json={**changed, "metadata": {"name": "web"}})
    live = client.get(f"{APPS}/deployments/web").json()
    assert (live["metadata"]["generation"], live["status"]["observedGeneration"]) == (2, 1)
    assert observed(client, f"{APPS}/deployments/web", 2)["status"]["updatedReplicas"] == 2


def test_workload_status_can_be_turned_off() -> None:
    off = store.Settings(workload_status=False)
    with (
        testing.serving(names=["c1"], settings=off) as sim,
        httpx.Client(base_url=sim.url("c1"), timeout=10) as c,
    ):
        c.post(f"{APPS}/deployments", json=workload("Deployment", "web"))
        time.sleep(0.3)
        assert c.get(f"{APPS}/deployments/web").json()["status"] == {}


@pytest.mark.slow  # starts processes: kubectl
def test_kubectl_waits_for_a_deployment_to_become_available(sim: testing.SimHandle, tmp_path: Path) -> None:
    kubectl = Runner(sim, tmp_path / "cache", "c1")
    path = tmp_path / "web.yaml"
    path.write_text(json.dumps(workload("Deployment", "web")))
    kubectl("apply", "-f", str(path))
    out = kubectl("wait", "--for=condition=Available", "deployment/web", "--timeout=20s")
    assert "deployment.apps/web condition met" in out.stdout
    rollout = kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    assert 'deployment "web" successfully rolled out' in rollout.stdout
    others = tmp_path / "others.yaml"
    others.write_text(
        json.dumps(workload("DaemonSet", "agent", replicas=None))
        + "\n---\n"
        + json.dumps(workload("StatefulSet", "db"))
    )
    kubectl("apply", "-f", str(others))
    assert (
        'daemon set "agent" successfully rolled out'
        in kubectl("rollout", "status", "ds/agent", "--timeout=20s").stdout
    )
    assert "roll out complete: 2 new pods" in kubectl("rollout", "status", "sts/db", "--timeout=20s").stdout


def _fleet_sim(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli", "sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline()


@pytest.mark.slow  # starts processes: python -m fleet.cli
@pytest.mark.parametrize(("flag", "expect_status"), [("0.1s", True), ("off", False)])
def test_the_workload_delay_flag_sets_or_turns_off_workload_status(
    tmp_path: Path, flag: str, expect_status: bool
) -> None:
    out = tmp_path / "kc.yaml"
    proc, line = _fleet_sim("--workload-delay", flag, "--kubeconfig-out", str(out))
    try:
        assert line == f"ready {out}\n"
        server = yaml.safe_load(out.read_text())["clusters"][0]["cluster"]["server"]
        with httpx.Client(base_url=server, timeout=10) as c:
            assert c.post(f"{APPS}/deployments", json=workload("Deployment", "web")).status_code == 201
            if expect_status:
                observed(c, f"{APPS}/deployments/web", 1)
            else:
                time.sleep(0.5)  # five times the delay of the other case
                assert c.get(f"{APPS}/deployments/web").json()["status"] == {}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.slow  # starts processes: python -m fleet.cli
def test_a_bad_workload_delay_is_refused_naming_the_flag() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "sim", "--workload-delay", "soon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "--workload-delay: 'soon'" in out.stderr
