"""Benchmark: CEL placement against label selectors, `fleet validate` over 2,000 clusters (20 and 200 bundles).

Run: ``.venv/bin/python -m benchmarks bench_cel`` (``--quick``: the 20-bundle scenarios only). Writes
``benchmarks/results/cel.json`` and prints a table.

Two work trees on disk hold the same 2,000 clusters (labels env/region, a ``legacy`` label on every 25th
cluster whose name also starts with ``legacy-``, a ``gpu`` label on every 7th; facts tier/nodes/zones/k8s)
and the same bundles (a ConfigMap, a Deployment and a Service each), placed either by ``cel`` or by the
equivalent ``clusterSelector``, in five shapes cycled over the bundles:

| CEL | label selector |
|---|---|
| ``cluster.labels.env == 'prod'`` | ``matchLabels: {env: prod}`` |
| ``cluster.labels.env == 'prod' && cluster.labels.region in ['eu', 'us']`` | plus ``region In [eu, us]`` |
| ``cluster.labels.region != 'ap' && !('legacy' in cluster.labels)`` | ``region NotIn [ap]``, ``legacy DoesNotExist`` |
| ``'gpu' in cluster.labels && cluster.labels.env == 'dev'`` | ``gpu Exists``, ``env=dev`` |
| ``cluster.labels.env == 'staging' && !cluster.name.startsWith('legacy-')`` | ``env=staging``, ``legacy DoesNotExist`` |

(values vary with the bundle, and each expression ends with ``|| cluster.labels.env == 'unused-<i>'``,
true of no cluster, so every bundle has its own expression). The last shape reads the cluster's name, so
no two clusters share an evaluation; the others read labels only, so clusters with the same labels do.
`fleet plan --format json` of both trees is compared first: the same pairs, or the benchmark fails.

Each scenario runs `fleet validate DIR` (the real CLI, a fresh process: parse, placement, render of every
placed pair) ``REPEAT`` times, interleaved CEL / selectors, and reports the median wall time and the
median CPU time of the child (on a shared machine the CPU time is the steadier). In-process, it also
times `fleet.core.placement.place` alone for each tree (the CEL cost without parsing and rendering), and the
moderate two-macro expression of issue 13 over the clusters.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from fleet.cli import common
from fleet.core import cel, model, placement

RESULTS = Path(__file__).resolve().parent / "results"
CLUSTERS = int(os.environ.get("FLEET_BENCH_CEL_CLUSTERS", "2000"))
REPEAT = int(os.environ.get("FLEET_BENCH_CEL_REPEAT", "3"))
ENVS = ("prod", "staging", "dev")
REGIONS = ("eu", "us", "ap")
MODERATE = (
    "cluster.facts.zones.exists(z, z.startsWith('eu-')) && cluster.facts.addons.all(a, a != 'legacy') "
    "&& cluster.name != ''"
)


def cluster_file(i: int) -> tuple[str, str]:
    env, region = ENVS[i % 3], REGIONS[(i // 3) % 3]
    legacy = i % 25 == 0
    name = f"{'legacy' if legacy else region}-{env}-{i:04d}"
    labels = {"env": env, "region": region}
    if legacy:
        labels["legacy"] = "true"
    if i % 7 == 0:
        labels["gpu"] = "a100"
    zones = [f"{region}-{j}" for j in range(1 + i % 3)]
    addons = ["dns", "metrics", "legacy" if i % 11 == 0 else "ingress"]
    text = (
        "apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n"
        f"  name: {name}\n  labels:\n"
        + "".join(f"    {k}: {v!r}\n" for k, v in labels.items())
        + f"spec:\n  facts:\n    tier: {1 + i % 4}\n    nodes: {3 + i % 60}\n"
        f"    zones: {json.dumps(zones)}\n    addons: {json.dumps(addons)}\n    k8s: '1.{28 + i % 4}.2'\n"
    )
    return name, text


def placements(i: int) -> tuple[str, str]:
    """(CEL, equivalent label selector) for bundle `i`, as `spec.placement` YAML. Every expression ends
    with ``|| cluster.labels.env == 'unused-<i>'`` (no cluster has that label value): each bundle has its
    own expression, so no two bundles share a compiled program or its remembered results."""
    by_cel, by_selector = _shape(i)
    head, expression = by_cel.split(" ", 1)
    return f"{head} \"({expression.strip(chr(34))}) || cluster.labels.env == 'unused-{i}'\"", by_selector


def _shape(i: int) -> tuple[str, str]:
    env = ENVS[i % 3]
    shape = i % 5
    if shape == 0:
        return (
            f"cel: \"cluster.labels.env == '{env}'\"",
            f"clusterSelector:\n      matchLabels: {{env: {env}}}",
        )
    if shape == 1:
        regions = ["eu", "us"] if i % 2 else ["us", "ap"]
        return (
            f"cel: \"cluster.labels.env == '{env}' && cluster.labels.region in {regions}\"",
            f"clusterSelector:\n      matchLabels: {{env: {env}}}\n"
            f"      matchExpressions: [{{key: region, operator: In, values: {json.dumps(regions)}}}]",
        )
    if shape == 2:
        skip = REGIONS[i % 3]
        return (
            f"cel: \"cluster.labels.region != '{skip}' && !('legacy' in cluster.labels)\"",
            "clusterSelector:\n      matchExpressions:\n"
            f"        - {{key: region, operator: NotIn, values: [{skip}]}}\n"
            "        - {key: legacy, operator: DoesNotExist}",
        )
    if shape == 3:
        return (
            f"cel: \"'gpu' in cluster.labels && cluster.labels.env == '{env}'\"",
            f"clusterSelector:\n      matchLabels: {{env: {env}}}\n"
            "      matchExpressions: [{key: gpu, operator: Exists}]",
        )
    return (
        f"cel: \"cluster.labels.env == '{env}' && !cluster.name.startsWith('legacy-')\"",
        f"clusterSelector:\n      matchLabels: {{env: {env}}}\n"
        "      matchExpressions: [{key: legacy, operator: DoesNotExist}]",
    )


def bundle_files(i: int, spec: str) -> dict[str, str]:
    b = f"b{i:03d}"
    manifests = (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {b}\ndata:\n  owner: team-{i % 9}\n---\n"
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {b}\nspec:\n  replicas: 2\n"
        f"  selector:\n    matchLabels: {{app: {b}}}\n  template:\n    metadata:\n      labels: {{app: {b}}}\n"
        f"    spec:\n      containers:\n        - name: {b}\n          image: example.com/{b}:1.0\n---\n"
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {b}\nspec:\n  selector: {{app: {b}}}\n"
        "  ports: [{port: 80, targetPort: 8080}]\n"
    )
    head = f"apiVersion: fleet.dev/v1alpha1\nkind: Bundle\nmetadata:\n  name: {b}\nspec:\n"
    return {
        f"bundles/{b}/bundle.yaml": f"{head}  namespace: {b}\n  placement:\n    {spec}\n",
        f"bundles/{b}/all.yaml": manifests,
    }


def make_tree(root: Path, n_bundles: int, *, use_cel: bool) -> Path:
    files: dict[str, str] = {}
    for i in range(CLUSTERS):
        name, text = cluster_file(i)
        files[f"clusters/{name}.yaml"] = text
    for i in range(n_bundles):
        by_cel, by_selector = placements(i)
        files.update(bundle_files(i, by_cel if use_cel else by_selector))
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def fleet(*args: str) -> tuple[float, float, int, str]:
    """Run the fleet CLI; (wall s, CPU s of the child, exit code, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args], capture_output=True, text=True, timeout=1800
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
    return wall, cpu, proc.returncode, proc.stdout


def placement_only(tree: Path) -> tuple[float, int, int]:
    """In-process: `placement.place` alone (after parsing; programs compiled cold). (CPU s, pairs, errors)."""
    repo = anyio.run(lambda: common.load_repository(str(tree), rev=None, say=None))
    started = time.process_time()
    result = placement.place(repo)
    spent = time.process_time() - started
    return spent, sum(len(v) for v in result.bundles.values()), sum(len(v) for v in result.errors.values())


def moderate_over_clusters(tree: Path) -> dict[str, Any]:
    """Issue 13's moderate expression (two macros, reads the name) over every cluster, three times."""
    repo = anyio.run(lambda: common.load_repository(str(tree), rev=None, say=None))
    bundle = model.Bundle(
        name="zonal", path="bundles/zonal/bundle.yaml", placement=model.Placement(cel=MODERATE)
    )
    runs = []
    for _ in range(3):
        started = time.process_time()
        result = placement.place(model.Repo(revision=None, clusters=repo.clusters, bundles={"zonal": bundle}))
        runs.append((time.process_time() - started, result.bundles["zonal"], result.errors))
    costs = [cel.run(cel.compile(MODERATE), {"cluster": c.activation()}).cost for c in repo.clusters.values()]
    return {
        "cpu_s": [round(r[0], 3) for r in runs],
        "placed": len(runs[0][1]),
        "errors": len(runs[0][2].get("zonal", {})),
        "identical_runs": all(r[1:] == runs[0][1:] for r in runs),
        "steps_per_cluster_median": sorted(costs)[len(costs) // 2],
    }


def scenario(work: Path, n_bundles: int) -> dict[str, Any]:
    cel_tree = make_tree(work / f"cel-{n_bundles}", n_bundles, use_cel=True)
    sel_tree = make_tree(work / f"selectors-{n_bundles}", n_bundles, use_cel=False)
    plans = [json.loads(fleet("plan", str(t), "--format", "json")[3]) for t in (cel_tree, sel_tree)]
    if plans[0]["bundles"] != plans[1]["bundles"] or plans[0]["errors"] or plans[1]["errors"]:
        raise SystemExit("bench_cel: the CEL and selector trees do not place the same pairs")
    pairs = sum(len(v) for v in plans[0]["bundles"].values())
    runs: dict[str, list[tuple[float, float]]] = {"cel": [], "selectors": []}
    for _ in range(REPEAT):  # interleaved, so a burst of load on the machine hits both
        for key, tree in (("cel", cel_tree), ("selectors", sel_tree)):
            wall, cpu, code, _ = fleet("validate", str(tree))
            if code != 0:
                raise SystemExit(f"bench_cel: fleet validate {tree} exited {code}")
            runs[key].append((wall, cpu))
    out: dict[str, Any] = {"bundles": n_bundles, "clusters": CLUSTERS, "pairs": pairs}
    for key, tree in (("cel", cel_tree), ("selectors", sel_tree)):
        walls = sorted(w for w, _ in runs[key])
        cpus = sorted(c for _, c in runs[key])
        wall, cpu = walls[len(walls) // 2], cpus[len(cpus) // 2]  # each the median of its own
        place_cpu, placed, errs = placement_only(tree)
        out[key] = {
            "validate_wall_s": round(wall, 2),
            "validate_cpu_s": round(cpu, 2),
            "validate_walls_s": [round(w, 2) for w, _ in runs[key]],
            "validate_cpus_s": [round(c, 2) for _, c in runs[key]],
            "placement_cpu_s": round(place_cpu, 3),
            "placed": placed,
            "errors": errs,
        }
    out["cel_over_selectors"] = round(out["cel"]["validate_wall_s"] / out["selectors"]["validate_wall_s"], 2)
    return out


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = (20,) if quick else (20, 200)
    out: dict[str, Any] = {"clusters": CLUSTERS, "repeat": REPEAT, "machine_cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="fleet-bench-cel-") as tmp:
        work = Path(tmp)
        for n in sizes:
            out[f"bundles_{n}"] = scenario(work, n)
        out["moderate_expression"] = moderate_over_clusters(work / "cel-20")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cel.json").write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"bench_cel: {CLUSTERS} clusters, fleet validate, median of {REPEAT} runs (CEL and selectors interleaved)"
    )
    print(f"{'scenario':<26}{'pairs':>8}{'wall s':>9}{'CPU s':>8}{'place CPU s':>13}   runs (wall s)")
    for n in sizes:
        s = out[f"bundles_{n}"]
        for key in ("cel", "selectors"):
            r = s[key]
            print(
                f"{f'{n} bundles, {key}':<26}{s['pairs']:>8}{r['validate_wall_s']:>9}{r['validate_cpu_s']:>8}"
                f"{r['placement_cpu_s']:>13}   {', '.join(str(w) for w in r['validate_walls_s'])}"
            )
        print(f"{'':<26}CEL / selectors (validate wall): {s['cel_over_selectors']}x")
    m = out["moderate_expression"]
    print(
        f"moderate two-macro expression over {CLUSTERS} clusters: {m['placed']} placed, {m['errors']} errors, "
        f"identical over 3 runs: {m['identical_runs']}, placement CPU s {m['cpu_s']}, "
        f"median cost {m['steps_per_cluster_median']} steps"
    )


if __name__ == "__main__":
    main()
