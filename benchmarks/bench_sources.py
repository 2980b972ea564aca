"""Benchmark: 200 Helm bundles across 1,000 clusters through the render pipeline (parse, placement, the
sources step with the real Helm 4, render), cold, after a commit that touches no chart, and after a commit
that changes one chart; with the number of renderer processes started.

Run: ``.venv/bin/python -m benchmarks.bench_sources`` (``--quick``: 100 clusters). Helm is
tests/tools/bin/helm (``make tools``), or the program named by FLEET_BENCH_HELM. Writes
``benchmarks/results/sources.json`` (``sources-quick.json`` with ``--quick``).

The fleet: 1,000 clusters (labels env, region); 200 bundles, each with its own chart (5 templates, a
vendored dependency): 150 take ``values-${cluster.labels.env}.yaml`` (three renders each, one per env),
49 use no cluster variable (one render), 1 sets ``${cluster.name}`` (one render per cluster). Target: the
one-chart change re-renders only that chart (per env here: 3 processes) and completes in under a second
plus that chart's own render time; the no-change commit starts no process.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import anyio

from fleet.clients import sources
from fleet.core import model, placement, render, repository

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
ENVS = ("prod", "staging", "dev")
REGIONS = ("eu", "us", "ap")
N_BUNDLES = 200
N_PER_ENV = 150
N_PER_CLUSTER = 1


def helm_program() -> str:
    wanted = os.environ.get("FLEET_BENCH_HELM") or str(ROOT / "tests" / "tools" / "bin" / "helm")
    if not Path(wanted).is_file():
        sys.exit(f"{wanted}: no helm program; build it with `make tools` or set FLEET_BENCH_HELM")
    return wanted


def chart(b: str, version: str = "1.0.0") -> dict[str, str]:
    base = f"bundles/{b}/chart"
    files = {
        f"{base}/Chart.yaml": f"apiVersion: v2\nname: {b}\nversion: {version}\n"
        "dependencies: [{name: sidecar, version: 0.1.0}]\n",
        f"{base}/values.yaml": 'replicas: 1\nimage: {repository: example/app, tag: "1.0"}\nenv: none\n',
        f"{base}/charts/sidecar/Chart.yaml": "apiVersion: v2\nname: sidecar\nversion: 0.1.0\n",
        f"{base}/charts/sidecar/templates/cm.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}-sidecar}\ndata: {a: b}\n"
        ),
        f"{base}/templates/sa.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: {{ .Release.Name }}}\n",
        f"{base}/templates/svc.yaml": (
            "apiVersion: v1\nkind: Service\nmetadata: {name: {{ .Release.Name }}}\n"
            "spec: {selector: {app: {{ .Release.Name }}}, ports: [{port: 80}]}\n"
        ),
        f"{base}/templates/cm.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}-config}\n"
            "data: {env: {{ .Values.env | quote }}, version: " + repr(version) + "}\n"
        ),
        f"{base}/templates/deploy.yaml": (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: {{ .Release.Name }}}\n"
            "spec:\n  replicas: {{ .Values.replicas }}\n  selector: {matchLabels: {app: {{ .Release.Name }}}}\n"
            "  template:\n    metadata: {labels: {app: {{ .Release.Name }}}}\n"
            '    spec: {containers: [{name: app, image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"}]}\n'
        ),
        f"{base}/templates/pdb.yaml": (
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: {{ .Release.Name }}}\n"
            "spec: {maxUnavailable: 1, selector: {matchLabels: {app: {{ .Release.Name }}}}}\n"
        ),
    }
    return files


def fleet(n_clusters: int) -> dict[str, str]:
    files: dict[str, str] = {}
    for i in range(n_clusters):
        env, region = ENVS[i % 3], REGIONS[(i // 3) % 3]
        files[f"clusters/c{i}.yaml"] = (
            f"apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c{i}\n"
            f"  labels: {{env: {env}, region: {region}}}\n"
        )
    for n in range(N_BUNDLES):
        b = f"app-{n:03d}"
        if n < N_PER_ENV:
            helm = '{chart: chart, values: [values.yaml, "values-${cluster.labels.env}.yaml"]}'
            for env in ENVS:
                files[f"bundles/{b}/values-{env}.yaml"] = f"env: {env}\nreplicas: {1 + ENVS.index(env)}\n"
        elif n < N_BUNDLES - N_PER_CLUSTER:
            helm = '{chart: chart, values: [values.yaml], set: {image.tag: "2.0"}}'
        else:
            helm = '{chart: chart, values: [values.yaml], set: {env: "${cluster.name}"}}'
        files[f"bundles/{b}/values.yaml"] = "replicas: 2\n"
        files[f"bundles/{b}/bundle.yaml"] = (
            f"apiVersion: fleet.dev/v1alpha1\nkind: Bundle\nmetadata: {{name: {b}}}\nspec:\n"
            f"  namespace: {b}\n  source:\n    helm: {helm}\n  placement: {{clusterSelector: {{}}}}\n"
        )
        files.update(chart(b))
    return files


class Pipeline:
    """The engine's render pipeline with its caches: parse, place, expand, render."""

    def __init__(self, helm: str) -> None:
        self.settings = sources.Settings(helm_binary=helm, concurrency=2)
        self.parse = repository.ParseCache()
        self.place = placement.PlacementCache()
        self.sources = sources.Cache(runner=sources.process.Runner(concurrency=2))
        self.render = render.RenderCache()

    def run(self, files: dict[str, str], revision: str) -> tuple[float, int, int, int]:
        """(seconds, renderer processes started, pairs rendered, pairs in error)."""
        before = sum(self.sources.runner.started.values())
        started = time.perf_counter()
        snap = model.Snapshot(revision=revision, files={k: v.encode() for k, v in files.items()})
        repo = repository.parse(snap, cache=self.parse)
        placed = placement.place(repo, cache=self.place)
        expanded = anyio.run(
            functools.partial(sources.expand, repo, placed, snap, settings=self.settings, cache=self.sources)
        )
        desired, errors = render.render_all(
            repo, placed, revision=revision, cache=self.render, expanded=expanded
        )
        elapsed = time.perf_counter() - started
        return elapsed, sum(self.sources.runner.started.values()) - before, len(desired), len(errors)


def main(argv: list[str]) -> int:
    n_clusters = 100 if "--quick" in argv else 1000
    helm = helm_program()
    files = fleet(n_clusters)
    p = Pipeline(helm)
    rows = []
    cold = p.run(files, "1" * 40)
    rows.append(("cold", *cold))
    if cold[3]:
        print(f"unexpected render errors: {cold[3]}", file=sys.stderr)
        return 1
    same = p.run({**files, "README.md": "touched\n"}, "2" * 40)
    rows.append(("no-change commit", *same))
    changed_files = {**files, **chart("app-007", version="1.0.1")}
    # That chart's own render time: its three renders (one per env) in a pipeline of its own, warmed up
    # with the old chart (so the helm version check and the cluster files are not counted).
    alone = Pipeline(helm)
    mine = ("clusters/", "bundles/app-007/")
    alone.run({k: v for k, v in files.items() if k.startswith(mine)}, "3" * 40)
    chart_time = alone.run({k: v for k, v in changed_files.items() if k.startswith(mine)}, "5" * 40)
    changed = p.run(changed_files, "4" * 40)
    rows.append(("one chart changed (per env)", *changed))
    rows.append(("  that chart alone", *chart_time))
    print(
        f"{n_clusters} clusters, {N_BUNDLES} Helm bundles ({N_PER_ENV} per env, {N_PER_CLUSTER} per cluster)"
    )
    print(f"{'step':<30} {'seconds':>8} {'processes':>10} {'pairs':>8} {'errors':>7}")
    for name, secs, procs, pairs, errs in rows:
        print(f"{name:<30} {secs:>8.2f} {procs:>10} {pairs:>8} {errs:>7}")
    ok = same[1] == 0 and changed[1] == 3 and changed[0] < 1.0 + chart_time[0]
    print(
        "target: no-change commit starts 0 processes, the one-chart change 3 and takes under 1 s + that "
        f"chart's own render time ({1.0 + chart_time[0]:.2f} s): {'met' if ok else 'MISSED'}"
    )
    RESULTS.mkdir(exist_ok=True)
    name = "sources-quick.json" if "--quick" in argv else "sources.json"
    (RESULTS / name).write_text(
        json.dumps(
            {
                "clusters": n_clusters,
                "bundles": N_BUNDLES,
                "steps": [
                    {
                        "step": step,
                        "seconds": round(secs, 3),
                        "processes": procs,
                        "pairs": pairs,
                        "errors": errs,
                    }
                    for step, secs, procs, pairs, errs in rows
                ],
                "target_met": ok,
            },
            indent=2,
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
