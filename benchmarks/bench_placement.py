"""Benchmark: placement and render of 200 bundles over 1,000 clusters, cold and after a one-bundle change.

Run: ``.venv/bin/python -m benchmarks.bench_placement`` (or ``python -m benchmarks`` for every benchmark).

The fleet: 1,000 clusters (labels env/region/tier, facts tier/k8s/nodes); 200 bundles of 10 manifests
each: 150 placed by label selectors only, 50 by CEL (40 over labels and facts, 10 that also read the
cluster's name, which defeats result sharing). 30 bundles substitute ``${cluster.name}`` (one render per
cluster) and 30 have a region override (one render per region). Targets: under 10 s cold and under 0.5 s
after one bundle changes (placement cached per bundle, identical renders shared).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fleet.core import model, placement, render

N_CLUSTERS = 1000
N_SELECTOR = 150
N_CEL = 50
N_MANIFESTS = 10

ENVS = ("prod", "staging", "dev")
REGIONS = ("eu", "us", "ap")
VERSIONS = ("1.29.4", "1.30.2", "v1.31.0", "1.32")


def clusters() -> list[model.Cluster]:
    out = []
    for i in range(N_CLUSTERS):
        env, region = ENVS[i % 3], REGIONS[(i // 3) % 3]
        out.append(
            model.Cluster(
                name=f"{'legacy' if i % 50 == 0 else region}-{env}-{i}",
                labels={"env": env, "region": region, "example.com/tier": str(1 + i % 4)},
                facts={"tier": 1 + i % 4, "k8s": VERSIONS[i % 4], "nodes": 3 + i % 60},
                context=f"c{i}",
            )
        )
    return out


def manifests(b: str, *, substitute: bool) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for j in range(N_MANIFESTS - 2):
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{b}-cm-{j}"},
                "data": {"k": f"v{j}", "where": "${cluster.name}" if substitute and j == 0 else "static"},
            }
        )
    objs.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": b},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": b}},
                "template": {
                    "metadata": {"labels": {"app": b}},
                    "spec": {
                        "containers": [
                            {"name": b, "image": f"example.com/{b}:1.0", "ports": [{"containerPort": 8080}]}
                        ]
                    },
                },
            },
        }
    )
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": b},
            "spec": {"selector": {"app": b}, "ports": [{"port": 80, "targetPort": 8080}]},
        }
    )
    return objs


CEL_SHARED = (
    "has(cluster.facts.tier) && cluster.facts.tier <= {n} && cluster.labels.env == 'prod'",
    "semver(cluster.facts.k8s).isGreaterThan('1.29') && cluster.labels.region in ['eu', 'us']",
    "cluster.facts.nodes > {n} && cluster.labels['example.com/tier'] != '4'",
    "cluster.labels.region.upperAscii() == 'EU' || cluster.facts.tier == {n}",
)
CEL_NAME = (
    "!cluster.name.startsWith('legacy-') && cluster.name.split('-')[1] == 'prod' && cluster.facts.tier >= {n}"
)


def bundles() -> list[model.Bundle]:
    out = []
    for i in range(N_SELECTOR + N_CEL):
        name = f"b{i:03d}"
        if i < N_SELECTOR:
            sel = model.LabelSelector(
                match_labels=(("env", ENVS[i % 3]),) if i % 2 == 0 else (),
                match_expressions=(
                    model.Requirement("region", model.Operator.IN, REGIONS[: 1 + i % 3]),
                    model.Requirement("example.com/tier", model.Operator.NOT_IN, (str(1 + i % 4),)),
                ),
            )
            spec = model.Placement(cluster_selector=sel)
        elif i < N_SELECTOR + 40:
            spec = model.Placement(cel=CEL_SHARED[i % 4].format(n=1 + i % 3))
        else:
            spec = model.Placement(cel=CEL_NAME.format(n=1 + i % 3))
        overrides: tuple[model.Override, ...] = ()
        if 30 <= i < 60:
            overrides = (
                model.Override(
                    placement=model.Placement(
                        cluster_selector=model.LabelSelector(match_labels=(("region", "eu"),))
                    ),
                    patches=(
                        model.Patch(
                            target=model.PatchTarget(kind="Deployment", name=name),
                            merge={"spec": {"replicas": 5}},
                        ),
                    ),
                ),
            )
        out.append(
            model.Bundle(
                name=name,
                path=f"bundles/{name}/bundle.yaml",
                namespace=name,
                placement=spec,
                overrides=overrides,
                manifests=tuple(
                    model.Manifest(path=f"bundles/{name}/all.yaml", line=1 + 20 * k, index=k, obj=o)
                    for k, o in enumerate(manifests(name, substitute=i < 30))
                ),
            )
        )
    return out


def run_once(
    repo: model.Repo, pcache: placement.PlacementCache, rcache: render.RenderCache
) -> tuple[float, float, int, int]:
    t0 = time.perf_counter()
    placed = placement.place(repo, cache=pcache)
    t1 = time.perf_counter()
    desired, failed = render.render_all(repo, placed, revision=repo.revision, cache=rcache)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(desired), len(failed)


def main() -> None:
    cs = clusters()
    bs = bundles()
    repo = model.Repo(revision="a" * 40, clusters={c.name: c for c in cs}, bundles={b.name: b for b in bs})
    pcache, rcache = placement.PlacementCache(), render.RenderCache()
    p_cold, r_cold, pairs, failed = run_once(repo, pcache, rcache)
    renders_cold = rcache.misses
    print(f"bench_placement: {N_CLUSTERS} clusters, {len(bs)} bundles x {N_MANIFESTS} manifests")
    print(
        f"  cold:        placement {p_cold:6.2f} s  render {r_cold:6.2f} s  total {p_cold + r_cold:6.2f} s  "
        f"({pairs} pairs placed, {failed} in error, {renders_cold} distinct renders)"
    )

    # One bundle changes (a new image in b005) in a new commit.
    changed = bs[5]
    new_objs = [dict(m.obj) for m in changed.manifests]
    deploy = next(o for o in new_objs if o["kind"] == "Deployment")
    deploy["spec"] = {**deploy["spec"], "replicas": 3}
    changed = dataclasses.replace(
        changed,
        manifests=tuple(
            dataclasses.replace(m, obj=o) for m, o in zip(changed.manifests, new_objs, strict=True)
        ),
    )
    repo2 = dataclasses.replace(repo, revision="b" * 40, bundles={**repo.bundles, changed.name: changed})
    hits, misses = pcache.hits, rcache.misses
    p_inc, r_inc, pairs2, _ = run_once(repo2, pcache, rcache)
    print(
        f"  incremental: placement {p_inc:6.2f} s  render {r_inc:6.2f} s  total {p_inc + r_inc:6.2f} s  "
        f"({pcache.hits - hits} placements reused, {rcache.misses - misses} renders recomputed, {pairs2} pairs)"
    )
    ok = p_cold + r_cold < 10 and p_inc + r_inc < 0.5
    print(f"  targets (cold < 10 s, incremental < 0.5 s): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
