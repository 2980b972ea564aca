"""Benchmark: what the simulated cluster's own controllers (CRDs, garbage collector, workload status) cost.

Run: ``.venv/bin/python -m benchmarks bench_sim_controllers``.

Measures, against a real in-process `fleet sim` (`fleet.sim.testing.serving`, over HTTP where a request is
involved):
- idle: process CPU (``time.process_time``) over 5 s with 200 clusters, each holding a CRD, a Deployment
  and a Job whose status the controllers already wrote (nothing is due, so nothing may run);
- garbage collection at scale: wall time until the server answers again after one DELETE collection of
  1,000 ConfigMaps in a cluster that holds 5,000 others (each deletion is an event the collector sees);
- per-commit overhead: in-process CPU of 20,000 ConfigMap creates with and without the controllers'
  hooks (median of 3 rounds).
Results go to ``benchmarks/results/sim_controllers.json`` and are printed.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from fleet.sim import testing
from fleet.sim.controllers import crds, gc, workloads
from fleet.sim.storage import store

RESULTS = Path(__file__).resolve().parent / "results" / "sim_controllers.json"
CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}
DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "m", "image": "nginx"}]},
        },
    },
}

JOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "once"},
    "spec": {
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "busybox"}]}}
    },
}


def idle_cpu(clusters: int = 200, window: float = 5.0) -> dict[str, Any]:
    settings = store.Settings(workload_delay=0.05)
    with testing.serving(clusters=clusters, settings=settings) as sim:
        with httpx.Client(timeout=30.0) as client:
            for name in sim.names:
                base = sim.url(name)
                client.post(f"{base}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=CRD)
                client.post(f"{base}/apis/apps/v1/namespaces/default/deployments", json=DEPLOYMENT)
                client.post(f"{base}/apis/batch/v1/namespaces/default/jobs", json=JOB)
        time.sleep(1.0)  # every status written
        start_cpu, start = time.process_time(), time.monotonic()
        time.sleep(window)
        cpu = time.process_time() - start_cpu
        wall = time.monotonic() - start
    return {
        "clusters": clusters,
        "window_s": round(wall, 2),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
    }


def gc_stall(others: int = 5000, deleted: int = 1000) -> dict[str, Any]:
    with testing.serving(names=["c1"], settings=store.Settings(workload_status=False)) as sim:
        cluster = sim.cluster("c1")

        def fill() -> None:
            cm = cluster.registry.get("", "v1", "configmaps")
            assert cm is not None
            for i in range(others):
                cluster.create(cm, "kube-system", {"metadata": {"name": f"keep-{i}"}}, manager="bench")
            for i in range(deleted):
                cluster.create(cm, "default", {"metadata": {"name": f"gone-{i}"}}, manager="bench")

        sim.call_sync(fill, timeout=300)
        with httpx.Client(base_url=sim.url("c1"), timeout=120.0) as client:
            start = time.monotonic()
            client.delete("/api/v1/namespaces/default/configmaps")
            client.get("/version")
            elapsed = time.monotonic() - start
    return {"other_objects": others, "deleted": deleted, "seconds_until_answering_again": round(elapsed, 3)}


def commit_overhead(creates: int = 20000, rounds: int = 3) -> dict[str, Any]:
    def run(hooks: bool) -> float:
        cluster = store.Cluster("bench")
        if hooks:
            crds.install(cluster)
            gc.install(cluster)
            workloads.install(cluster)
        cm = cluster.registry.get("", "v1", "configmaps")
        assert cm is not None
        objs = [{"metadata": {"name": f"n{i}"}, "data": {"a": "b"}} for i in range(creates)]
        start = time.process_time()
        for obj in objs:
            cluster.create(cm, "default", obj, manager="bench")
        return time.process_time() - start

    without = statistics.median(run(False) for _ in range(rounds))
    with_hooks = statistics.median(run(True) for _ in range(rounds))
    return {
        "creates": creates,
        "cpu_s_without_hooks": round(without, 3),
        "cpu_s_with_hooks": round(with_hooks, 3),
        "overhead_us_per_commit": round((with_hooks - without) / creates * 1e6, 2),
    }


def main() -> None:
    result = {
        "benchmark": "bench_sim_controllers",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "idle": idle_cpu(),
        "gc_after_delete_collection": gc_stall(),
        "hook_overhead": commit_overhead(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
