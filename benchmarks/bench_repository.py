"""Benchmark: read and validate a large GitOps repository through a bare mirror, cold and warm.

Run: ``.venv/bin/python -m benchmarks.bench_repository`` (or ``python -m benchmarks`` for every benchmark).

The repository: 1,000 cluster files and 200 bundles holding 5,000 manifests (25 files per bundle, a mix of
Deployments, Services and ConfigMaps of realistic size; some bundles use ``spec.paths``, overrides,
``dependsOn`` and CEL). Cold: clone into an empty mirror, resolve HEAD, read the tree, parse and validate.
Warm: the upstream gets a new commit changing one manifest; fetch, resolve, read the tree, parse and
validate again, plus the changed paths; once from scratch (as ``fleet validate --rev`` does) and once with
the `repository.ParseCache` a long-running controller keeps (only changed files are re-parsed). Target:
warm under 2 s.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pygit2
import pygit2.enums

from fleet.clients import source
from fleet.core import repository

T = TypeVar("T")

N_CLUSTERS = 1000
N_BUNDLES = 200
N_PER_BUNDLE = 25
WARM_ROUNDS = 5
TARGET_WARM_S = 2.0

ENVS = ("prod", "staging", "dev")
REGIONS = ("eu", "us", "ap")


def cluster_file(i: int) -> str:
    env, region = ENVS[i % 3], REGIONS[(i // 3) % 3]
    return (
        "apiVersion: fleet.dev/v1alpha1\n"
        "kind: Cluster\n"
        "metadata:\n"
        f"  name: {region}-{env}-{i}\n"
        f"  labels: {{env: {env}, region: {region}, tier: 't{i % 4}'}}\n"
        f"  annotations: {{fleet.dev/location: dc-{i % 17}}}\n"
        "spec:\n"
        f"  facts: {{tier: {i % 4}, nodes: {10 + i % 90}, k8sVersion: '1.3{i % 5}.1'}}\n"
    )


def bundle_file(b: int) -> str:
    spec = f"  namespace: app-{b}\n"
    if b % 10 == 0:
        spec += "  placement:\n    cel: \"cluster.labels.env == 'prod' && cluster.facts.tier < 2\"\n"
    else:
        spec += (
            "  placement:\n    clusterSelector:\n"
            f"      matchLabels: {{env: {ENVS[b % 3]}}}\n"
            "      matchExpressions: [{key: region, operator: In, values: [eu, us]}]\n"
        )
    if b % 5 == 0:
        spec += (
            "  overrides:\n    - placement: {clusterSelector: {matchLabels: {region: eu}}}\n"
            "      patches:\n        - target: {kind: Deployment, name: web-0}\n"
            "          merge: {spec: {replicas: 5}}\n"
        )
    if b % 7 == 0 and b > 0:
        spec += f"  dependsOn: [bundle-{b - 1}]\n"
    if b % 4 == 0:
        spec += "  paths: [manifests/]\n"
    return f"apiVersion: fleet.dev/v1alpha1\nkind: Bundle\nmetadata:\n  name: bundle-{b}\nspec:\n{spec}"


def manifest(b: int, m: int, *, version: int = 1) -> str:
    if m % 3 == 0:
        return (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"
            f"  name: web-{m}\n  labels: {{app: web-{m}, bundle: b{b}}}\n"
            "spec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web-" + str(m) + "}\n"
            "  template:\n    metadata:\n      labels: {app: web-" + str(m) + "}\n"
            "    spec:\n      containers:\n        - name: web\n"
            f"          image: registry.example.com/web:{version}.{m}\n"
            "          ports: [{containerPort: 8080, name: http}]\n"
            "          env:\n            - {name: CLUSTER, value: '${cluster.name}'}\n"
            "            - {name: LOG_LEVEL, value: info}\n"
            "          resources:\n            requests: {cpu: 100m, memory: 128Mi}\n"
            "            limits: {cpu: 500m, memory: 256Mi}\n"
            "          readinessProbe:\n            httpGet: {path: /healthz, port: http}\n"
        )
    if m % 3 == 1:
        return (
            "apiVersion: v1\nkind: Service\nmetadata:\n"
            f"  name: svc-{m}\n  labels: {{app: web-{m}}}\n"
            f"spec:\n  selector: {{app: web-{m}}}\n  ports:\n    - {{name: http, port: 80, targetPort: http}}\n"
        )
    data = "".join(f"  key-{k}: value-{k}-{version}\n" for k in range(10))
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg-{m}\ndata:\n{data}"


def files(*, version: int = 1) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i in range(N_CLUSTERS):
        env, region = ENVS[i % 3], REGIONS[(i // 3) % 3]
        out[f"clusters/{region}-{env}-{i}.yaml"] = cluster_file(i).encode()
    for b in range(N_BUNDLES):
        out[f"bundles/bundle-{b}/bundle.yaml"] = bundle_file(b).encode()
        folder = "manifests/" if b % 4 == 0 else ""
        for m in range(N_PER_BUNDLE):
            out[f"bundles/bundle-{b}/{folder}m{m:02}.yaml"] = manifest(b, m, version=version).encode()
    return out


def _write_level(repo: pygit2.Repository, entries: dict[str, pygit2.Oid]) -> pygit2.Oid:
    builder = repo.TreeBuilder()
    folders: dict[str, dict[str, pygit2.Oid]] = {}
    for path, oid in entries.items():
        head, sep, rest = path.partition("/")
        if sep:
            folders.setdefault(head, {})[rest] = oid
        else:
            builder.insert(head, oid, pygit2.enums.FileMode.BLOB)
    for name, sub in folders.items():
        builder.insert(name, _write_level(repo, sub), pygit2.enums.FileMode.TREE)
    return builder.write()


def commit(repo: pygit2.Repository, content: dict[str, bytes], message: str) -> str:
    tree = _write_level(repo, {p: repo.create_blob(data) for p, data in content.items()})
    ref = "refs/heads/main"
    parents = [repo.references[ref].target] if ref in repo.references else []
    sig = pygit2.Signature("bench", "bench@example.com")
    return str(repo.create_commit(ref, sig, sig, message, tree, parents))


def _run(fn: Callable[..., Awaitable[T]], *args: Any) -> tuple[T, float]:
    start = time.perf_counter()
    result = anyio.run(fn, *args)
    return result, time.perf_counter() - start


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-repo-") as tmp:
        root = Path(tmp)
        upstream = pygit2.init_repository(str(root / "upstream"), bare=True, initial_head="main")
        content = files()
        _, t_gen = _timed(lambda: commit(upstream, content, "initial"))
        total = sum(len(v) for v in content.values())
        print(
            f"repository: {N_CLUSTERS} clusters, {N_BUNDLES} bundles, {N_BUNDLES * N_PER_BUNDLE} manifests, "
            f"{len(content)} files, {total / 1e6:.1f} MB (generated in {t_gen:.2f} s)"
        )

        src = source.Source(root / "upstream", state_dir=root / "state")
        _, t_fetch = _run(src.fetch)
        sha, t_resolve = _run(src.resolve, "HEAD")
        snap, t_read = _run(src.snapshot, sha)
        cache = repository.ParseCache()
        repo, t_parse = _timed(lambda: repository.parse(snap, cache=cache))
        assert not repo.errors, repo.errors[:3]
        objects = sum(len(b.manifests) for b in repo.bundles.values())
        assert (len(repo.clusters), len(repo.bundles), objects) == (
            N_CLUSTERS,
            N_BUNDLES,
            N_BUNDLES * N_PER_BUNDLE,
        )
        cold = t_fetch + t_resolve + t_read + t_parse
        print(
            f"cold (clone): fetch {t_fetch:.3f} s, resolve {t_resolve:.3f} s, read tree {t_read:.3f} s, "
            f"parse+validate {t_parse:.3f} s, total {cold:.3f} s"
        )

        warm: list[float] = []
        parts: list[tuple[float, float, float, float]] = []
        cached: list[float] = []
        for round_ in range(WARM_ROUNDS):
            changed = dict(content)
            b = (round_ * 37) % N_BUNDLES
            folder = "manifests/" if b % 4 == 0 else ""
            changed[f"bundles/bundle-{b}/{folder}m02.yaml"] = manifest(b, 2, version=round_ + 2).encode()
            commit(upstream, changed, f"change {round_}")
            content = changed
            _, t_fetch = _run(src.fetch)
            new_sha, t_resolve = _run(src.resolve, "HEAD")
            paths, _ = _run(src.changed_paths, sha, new_sha)
            assert len(paths) == 1, paths
            snap, t_read = _run(src.snapshot, new_sha)
            repo, t_parse = _timed(lambda: repository.parse(snap))  # noqa: B023 (called at once)
            assert not repo.errors
            again, t_cached = _timed(lambda: repository.parse(snap, cache=cache))  # noqa: B023
            assert again == repo and cache.misses == 1 + len(content) + round_, cache.misses
            sha = new_sha
            warm.append(t_fetch + t_resolve + t_read + t_parse)
            parts.append((t_fetch, t_resolve, t_read, t_parse))
            cached.append(t_fetch + t_resolve + t_read + t_cached)
        med = statistics.median(warm)
        i = warm.index(sorted(warm)[len(warm) // 2])
        f, r, rd, p = parts[i]
        verdict = "OK" if med < TARGET_WARM_S else "OVER TARGET"
        print(
            f"warm (new commit, {WARM_ROUNDS} rounds, median): fetch {f:.3f} s, resolve {r:.3f} s, "
            f"read tree {rd:.3f} s, parse+validate {p:.3f} s, total {med:.3f} s "
            f"(min {min(warm):.3f}, max {max(warm):.3f}; target < {TARGET_WARM_S} s: {verdict})"
        )
        print(
            f"warm with ParseCache (the controller's path, median): total {statistics.median(cached):.3f} s "
            f"(min {min(cached):.3f}, max {max(cached):.3f})"
        )


if __name__ == "__main__":
    main()
