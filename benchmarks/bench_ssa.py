"""Benchmark: CPU cost of the pure SSA/SMP/defaulting engines of `fleet sim` per call.

Run: ``.venv/bin/python -m benchmarks.bench_ssa`` (or ``python -m benchmarks`` for every benchmark).

Measures process CPU time (``time.process_time``) per call, median of 5 rounds, for: apply that creates
a ConfigMap and a Deployment; a no-op re-apply (the GitOps steady state); a changing apply with a second
manager present (conflict check and pruning); an `update` (non-apply write); a strategic merge patch; and
defaulting plus quantity canonicalisation of a Deployment. Target (docs/sim.md): the server sustains 1,000
applies/s on 2 cores, so an apply of a small object must stay well under 1 ms of CPU. Results are written
to ``benchmarks/results/bench_ssa.json`` and printed as a table.
"""

from __future__ import annotations

import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet.sim.kinds import defaults, structure
from fleet.sim.merging import smp, ssa

ROUNDS = 5
TARGET_US = 1000.0

DEPLOYMENT_CONFIG: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "frontend"}},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "nginx:1.27",
                        "args": ["--port", "8080"],
                        "env": [{"name": "MODE", "value": "prod"}, {"name": "LOG", "value": "info"}],
                        "ports": [{"containerPort": 8080, "name": "http"}],
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "64Mi"},
                            "limits": {"memory": "128Mi"},
                        },
                    }
                ]
            },
        },
    },
}
CONFIGMAP_CONFIG: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "settings", "namespace": "default", "labels": {"app": "web"}},
    "data": {f"key{i}": f"value{i}" for i in range(5)},
}


def _time(fn: Callable[[], object], n: int) -> float:
    """Median CPU microseconds per call over ROUNDS rounds of n calls."""
    rounds = []
    for _ in range(ROUNDS):
        start = time.process_time()
        for _ in range(n):
            fn()
        rounds.append((time.process_time() - start) / n * 1e6)
    return statistics.median(rounds)


def cases() -> list[tuple[str, Callable[[], object], int]]:
    dep = structure.builtin("apps", "v1", "Deployment")
    cm = structure.builtin("", "v1", "ConfigMap")
    now = "2026-01-01T00:00:00Z"
    live_dep = defaults.default(
        ssa.apply(None, DEPLOYMENT_CONFIG, manager="gitops", force=False, structure=dep, now=now),
        group="apps",
        kind="Deployment",
    )
    live_cm = ssa.apply(None, CONFIGMAP_CONFIG, manager="gitops", force=False, structure=cm, now=now)
    scaled = copy.deepcopy(live_dep)
    scaled["spec"]["replicas"] = 5
    co_owned = ssa.update(live_dep, scaled, manager="hpa", structure=dep, now=now)
    changed = copy.deepcopy(DEPLOYMENT_CONFIG)
    del changed["spec"]["replicas"]
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    edited = copy.deepcopy(live_dep)
    edited["metadata"]["annotations"] = {"note": "edited"}
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.29"}]}}}}
    return [
        (
            "apply create ConfigMap",
            lambda: ssa.apply(None, CONFIGMAP_CONFIG, manager="m", force=False, structure=cm, now=now),
            2000,
        ),
        (
            "apply no-op ConfigMap",
            lambda: ssa.apply(
                live_cm, CONFIGMAP_CONFIG, manager="gitops", force=False, structure=cm, now=now
            ),
            2000,
        ),
        (
            "apply create Deployment",
            lambda: ssa.apply(None, DEPLOYMENT_CONFIG, manager="m", force=False, structure=dep, now=now),
            1000,
        ),
        (
            "apply no-op Deployment",
            lambda: ssa.apply(
                live_dep, DEPLOYMENT_CONFIG, manager="gitops", force=False, structure=dep, now=now
            ),
            1000,
        ),
        (
            "apply change Deployment, 2 managers",
            lambda: ssa.apply(co_owned, changed, manager="gitops", force=False, structure=dep, now=now),
            1000,
        ),
        (
            "update Deployment (annotation)",
            lambda: ssa.update(live_dep, edited, manager="kubectl", structure=dep, now=now),
            1000,
        ),
        ("strategic merge patch Deployment", lambda: smp.patch(live_dep, patch, structure=dep), 2000),
        (
            "default Deployment",
            lambda: defaults.default(DEPLOYMENT_CONFIG, group="apps", kind="Deployment"),
            1000,
        ),
    ]


def main() -> None:
    results = []
    for name, fn, n in cases():
        fn()  # warm caches (compiled structures)
        us = _time(fn, n)
        results.append(
            {"case": name, "cpu_us_per_call": round(us, 1), "calls_per_cpu_second": round(1e6 / us)}
        )
    width = max(len(r["case"]) for r in results)
    print(f"{'case':<{width}}  {'CPU µs/call':>12}  {'calls/CPU-s':>12}")
    for r in results:
        print(f"{r['case']:<{width}}  {r['cpu_us_per_call']:>12.1f}  {r['calls_per_cpu_second']:>12,}")
    apply_cases = [r for r in results if r["case"].startswith("apply")]
    worst = max(r["cpu_us_per_call"] for r in apply_cases)
    print(
        f"worst apply: {worst:.1f} µs (target < {TARGET_US:.0f} µs): {'ok' if worst < TARGET_US else 'OVER'}"
    )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    doc = {
        "benchmark": "bench_ssa",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rounds": ROUNDS,
        "target_apply_cpu_us": TARGET_US,
        "results": results,
    }
    (out / "bench_ssa.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
