"""`fleet sync --workers N` end to end: the real CLI in a subprocess, its workers real forked processes,
against `fleet sim` over HTTP, on real git repositories (pygit2)."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from fleet.core import model, partition
from fleet.sim import testing
from tests.support.reconcile import FLEET, GitOpsRepo, configmap, live_objects, run_fleet

CLUSTERS = ["dev-1", "dev-2", "edge-1", "prod-1", "prod-2"]
VOLATILE_META = ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation")


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    r = GitOpsRepo(tmp_path / "repo")
    for name in CLUSTERS:
        r.cluster(name, labels={"env": name.split("-")[0]})
    r.bundle("web", WEB, namespace="web", selector={"env": "prod"})
    r.bundle("db", [configmap(f"db-{i}") for i in range(5)], namespace="db", selector={"env": "dev"})
    r.bundle("base", [configmap("shared"), configmap("other")], namespace="base", selector={})
    r.commit("first")
    return r


WEB = [configmap(f"web-{i}", i=str(i)) for i in range(12)]


def _sim() -> Any:
    return testing.serving(names=CLUSTERS)


def _state(sim: testing.SimHandle) -> dict[str, dict[str, Any]]:
    """Every cluster's objects in fleet's namespaces and its inventories, without what a server assigns
    (uids, versions, times) or the moment a sync claimed its revision."""
    out: dict[str, dict[str, Any]] = {}
    for cluster in CLUSTERS:
        for ns in ("web", "db", "base", model.INVENTORY_NAMESPACE):
            for name, obj in live_objects(sim, cluster, namespace=ns).items():
                body = copy.deepcopy(obj)
                for key in VOLATILE_META:
                    body["metadata"].pop(key, None)
                claim = (body["metadata"].get("annotations") or {}).get(model.ANNOTATION_CLAIM)
                if claim is not None:  # the instant of the claim is the sync's own
                    body["metadata"]["annotations"][model.ANNOTATION_CLAIM] = (
                        "<time> " + claim.split(" ", 1)[1]
                    )
                if ns == model.INVENTORY_NAMESPACE:
                    for key in list(body.get("data", {})):
                        if "observed" in key.lower():
                            body["data"][key] = "<time>"
                out.setdefault(cluster, {})[f"{ns}/{name}"] = body
    return out


def _report(stdout: str) -> dict[str, Any]:
    doc = json.loads(stdout)
    for cluster in doc["clusters"].values():
        cluster.pop("seconds")
    return dict(doc)


def _progress(stderr: str) -> set[str]:
    """The progress lines, without their counter (workers finish clusters in their own order)."""
    return {re.sub(r"^\[\d+/\d+\] ", "", line) for line in stderr.splitlines() if line.startswith("[")}


def _sync(
    repo: GitOpsRepo, sim: testing.SimHandle, workers: int, rev: str
) -> subprocess.CompletedProcess[str]:
    return run_fleet(
        "sync", str(repo.root), "--rev", rev, "--kubeconfig", str(sim.kubeconfig), "--no-wait", "--format", "json",
        "--workers", str(workers),
    )  # fmt: skip


def _groups(repo: GitOpsRepo, workers: int) -> tuple[tuple[str, ...], ...]:
    """The clusters of each worker, as `fleet sync --workers` splits the repository's HEAD."""
    import anyio

    from fleet.cli import sync
    from tests.support.reconcile import sync_request

    request = sync_request(repo.root, Path(os.devnull), instance="fleet")
    parsed, targets, _ = anyio.run(sync.prepare, request)
    work = {n: partition.cluster_work(targets[n], paused=c.paused) for n, c in parsed.clusters.items()}
    return partition.split(work, workers)


def test_one_and_three_workers_give_the_same_objects_inventories_report_and_progress(
    repo: GitOpsRepo,
) -> None:
    first = repo.repo.head.target.hex if hasattr(repo.repo.head.target, "hex") else str(repo.repo.head.target)
    # A second revision: web leaves prod-2 (its objects and inventory pruned there), db is removed.
    repo.bundle("web", WEB, namespace="web", clusters=["prod-1"])
    repo.remove("bundles/db")
    second = repo.commit("second")
    runs: dict[int, list[tuple[subprocess.CompletedProcess[str], dict[str, Any]]]] = {}
    for workers in (1, 3):
        with _sim() as sim:
            runs[workers] = []
            for rev in (first, second):
                done = _sync(repo, sim, workers, rev)
                runs[workers].append((done, _state(sim)))
    for (one, state_one), (three, state_three) in zip(runs[1], runs[3], strict=True):
        assert one.returncode == 0, one.stderr
        assert three.returncode == 0, three.stderr
        assert _report(three.stdout) == _report(one.stdout)
        assert state_three == state_one
        assert _progress(three.stderr) == _progress(one.stderr)
        assert len(_progress(three.stderr)) == len(CLUSTERS)
    after = runs[3][1][1]
    assert not any(k.startswith(("web/web-", "db/db-")) for k in after["prod-2"])
    assert not any(k.startswith("db/db-") for k in after["dev-1"])
    assert "web/web-11" in after["prod-1"]
    assert "web/web-11" in runs[3][0][1]["prod-2"]


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _start_slow_sync(
    repo: GitOpsRepo, sim: testing.SimHandle, workers: int
) -> tuple[subprocess.Popen[str], list[int]]:
    """`fleet sync --workers N` on clusters that answer every request after 1.5 s; the pids of its forked
    workers (N - 1: the `fleet sync` process is the first worker)."""
    for cluster in CLUSTERS:
        sim.faults_sync(cluster, {"latencyMs": 1500})
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    argv = [
        *FLEET,
        "sync",
        str(repo.root),
        "--kubeconfig",
        str(sim.kubeconfig),
        "--no-wait",
        "--format",
        "json",
    ]
    proc = subprocess.Popen(
        [*argv, "--workers", str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = _children(proc.pid)
        if len(children) == workers - 1 and any(sim.journal_sync(c) for c in CLUSTERS):
            return proc, children
        time.sleep(0.05)
    proc.kill()
    proc.communicate()
    raise AssertionError("the workers did not start")


def test_n_workers_are_the_sync_process_itself_and_n_minus_1_forked_ones_each_with_a_share(
    repo: GitOpsRepo,
) -> None:
    with _sim() as sim:
        for cluster in CLUSTERS:
            sim.faults_sync(cluster, {"latencyMs": 1500})
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        proc = subprocess.Popen(
            [
                *FLEET,
                "sync",
                str(repo.root),
                "--kubeconfig",
                str(sim.kubeconfig),
                "--no-wait",
                "--workers",
                "3",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            seen: set[int] = set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(sim.journal_sync(c) for c in CLUSTERS):
                seen.update(_children(proc.pid))
                time.sleep(0.05)
            seen.update(_children(proc.pid))
            reached = all(sim.journal_sync(c) for c in CLUSTERS)
            for cluster in CLUSTERS:
                sim.clear_faults_sync(cluster)
            _, err = proc.communicate(timeout=90)
        finally:
            proc.kill()
    assert reached, "a cluster was never reached"
    assert len(seen) == 2, seen  # every cluster reached with two forked workers: the third is the parent
    assert proc.returncode == 0, err
    assert len(_progress(err)) == len(CLUSTERS)


def test_a_killed_worker_fails_the_run_naming_its_clusters_and_the_others_sync(repo: GitOpsRepo) -> None:
    groups = _groups(repo, 3)
    assert [len(g) for g in groups] == [2, 1, 2]  # (edge-1, prod-1), (prod-2), (dev-1, dev-2): by objects
    with _sim() as sim:
        proc, children = _start_slow_sync(repo, sim, 3)
        try:
            victim = children[0]
            os.kill(victim, signal.SIGKILL)
            for cluster in CLUSTERS:
                sim.clear_faults_sync(cluster)
            out, err = proc.communicate(timeout=90)
        finally:
            proc.kill()
    assert proc.returncode == 1, err
    match = re.search(
        rf"error: sync worker (\d) \(pid {victim}\) was killed by SIGKILL; clusters it did not report: (.+)",
        err,
    )
    assert match, err
    named = tuple(match.group(2).split(", "))
    assert named == groups[int(match.group(1)) - 1]
    report = json.loads(out)
    assert report["ok"] is False
    for cluster in CLUSTERS:
        state = report["clusters"][cluster]
        if cluster in named:
            assert state["state"] == "Failed"
            assert f"(pid {victim}) was killed by SIGKILL" in state["message"]
            assert state["bundles"] and all(b["state"] == "Failed" for b in state["bundles"].values())
        else:
            assert state["state"] == "Synced", (cluster, state)
    assert not any(_alive(p) for p in children)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_stopping_the_parent_stops_every_worker(repo: GitOpsRepo, sig: signal.Signals) -> None:
    with _sim() as sim:
        proc, children = _start_slow_sync(repo, sim, 2)
        try:
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)
            deadline = time.monotonic() + 15
            while any(_alive(p) for p in children) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.kill()
            for p in children:
                if _alive(p):
                    os.kill(p, signal.SIGKILL)
    assert proc.returncode != 0
    assert not any(_alive(p) for p in children), "a worker outlived its sync"
    if sig is signal.SIGTERM:
        assert proc.returncode == 143, err
        assert "interrupted (SIGTERM)" in err
    if sig is signal.SIGINT:  # Ctrl-C, sent to the parent alone (a terminal sends it to the workers too)
        assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_a_bad_input_is_reported_once_and_no_worker_is_left(tmp_path: Path) -> None:
    empty = GitOpsRepo(tmp_path / "empty")
    empty.cluster("dev-1")
    empty.commit("no bundle")
    with _sim() as sim:
        result = run_fleet(
            "sync", str(empty.root), "--kubeconfig", str(sim.kubeconfig), "--workers", "3", timeout=60
        )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "no bundle" in errors[0]
    assert "Traceback" not in result.stderr


def test_workers_must_be_at_least_one_and_do_not_combine_with_waves(repo: GitOpsRepo) -> None:
    zero = run_fleet("sync", str(repo.root), "--workers", "0")
    assert zero.returncode == 2
    assert "--workers" in zero.stderr
    waves = run_fleet("sync", str(repo.root), "--workers", "2", "--waves")
    assert waves.returncode == 2
    assert "--waves" in waves.stderr and "--workers" in waves.stderr
