"""`parse`: the files of one revision -> a validated `model.Repo` (clusters, bundles, their manifests).

Owns: the order of the work (cluster files, then bundle folders, then the checks across them: dependsOn
cycles, clusters named in placements), which problem breaks what, and `parse_in_thread`. Does not: read
files (the caller passes a `model.Snapshot`), or hold the rules of each file (clusters, bundles, manifests).
"""

from __future__ import annotations

import functools
import graphlib
from dataclasses import dataclass, field
from types import MappingProxyType

import anyio.to_thread

from fleet.core import model, yamlsafe
from fleet.core.repository import bundle_files, cluster_files, documents, rules


def parse(
    snapshot: model.Snapshot,
    *,
    limits: yamlsafe.Limits = rules.DEFAULT_LIMITS,
    cache: documents.ParseCache | None = None,
) -> model.Repo:
    """Parse and validate one revision (pure). Every problem is collected; nothing raises for bad input.

    `cache` (optional) re-uses the parsed files of the previous call whose content did not change.
    """
    st = documents.State(snapshot=snapshot, limits=limits, cache=cache)
    by_path_problems = _attribute_source_problems(st)

    cluster_rels: list[str] = []
    bundle_folders: dict[str, list[str]] = {}
    for rel in snapshot.files:
        parts = rel.split("/")
        if parts[0] == "clusters":
            if len(parts) == 2:
                cluster_rels.append(rel)
            else:
                st.problems.append(
                    documents.warning(
                        st.shown(rel), "ignored: clusters/ holds one file per cluster, no subfolders"
                    )
                )
        elif parts[0] == "bundles":
            if len(parts) == 2:
                if not parts[1].startswith("."):
                    st.problems.append(
                        documents.warning(st.shown(rel), "ignored: bundles/ holds one folder per bundle")
                    )
            else:
                bundle_folders.setdefault(parts[1], []).append(rel)
    for folder in by_path_problems.bundle_folders:
        bundle_folders.setdefault(folder, [])

    for rel in sorted(cluster_rels):
        cluster_files.parse_cluster(st, rel)
    for stem in by_path_problems.cluster_stems:
        st.broken_clusters.setdefault(stem, [])

    for folder in sorted(bundle_folders):
        bundle_files.parse_bundle(
            st, folder, sorted(bundle_folders[folder]), broken=folder in by_path_problems.bundle_folders
        )

    _check_dependencies(st)
    _check_placement_clusters(st)

    if not cluster_rels and not by_path_problems.cluster_stems:
        st.problems.append(
            documents.warning(st.shown("clusters"), "no cluster file (clusters/NAME.yaml) in this revision")
        )
    if not bundle_folders:
        st.problems.append(
            documents.warning(st.shown("bundles"), "no bundle (bundles/NAME/bundle.yaml) in this revision")
        )

    if cache is not None:
        cache.retain_used()
    problems = sorted(st.problems, key=lambda p: (p.path, p.line))
    broken_clusters: dict[str, list[model.Problem]] = {k: list(v) for k, v in st.broken_clusters.items()}
    broken_bundles: dict[str, list[model.Problem]] = {name: [] for name in st.broken_bundle_names}
    for p in problems:
        if p.severity is not model.Severity.ERROR:
            continue
        if p.cluster is not None and p.cluster in broken_clusters:
            broken_clusters[p.cluster].append(p)
        if p.bundle is not None and p.bundle in broken_bundles:
            broken_bundles[p.bundle].append(p)
    bundles = {k: v for k, v in sorted(st.bundles.items()) if k not in st.broken_bundle_names}
    clusters = {k: v for k, v in sorted(st.clusters.items()) if k not in broken_clusters}
    return model.Repo(
        revision=snapshot.revision,
        clusters=MappingProxyType(clusters),
        bundles=MappingProxyType(bundles),
        problems=tuple(problems),
        broken_clusters=MappingProxyType({k: tuple(v) for k, v in sorted(broken_clusters.items())}),
        broken_bundles=MappingProxyType({k: tuple(v) for k, v in sorted(broken_bundles.items())}),
        message=snapshot.message,
        author=snapshot.author,
        committed_at=snapshot.committed_at,
    )


async def parse_in_thread(
    snapshot: model.Snapshot,
    *,
    limits: yamlsafe.Limits = rules.DEFAULT_LIMITS,
    cache: documents.ParseCache | None = None,
) -> model.Repo:
    """`parse` in a worker thread, for async callers (a large revision takes most of a second)."""
    return await anyio.to_thread.run_sync(functools.partial(parse, snapshot, limits=limits, cache=cache))


@dataclass
class _Attributed:
    cluster_stems: set[str] = field(default_factory=set)
    bundle_folders: set[str] = field(default_factory=set)


def _attribute_source_problems(st: documents.State) -> _Attributed:
    """Problems the source layer found (links, submodules, oversized files) break what holds them."""
    out = _Attributed()
    base = st.snapshot.base
    for p in st.snapshot.problems:
        rel = p.path[len(base) + 1 :] if base and p.path.startswith(base + "/") else p.path
        parts = rel.split("/")
        bundle = cluster = None
        if parts[0] == "clusters" and len(parts) >= 2:
            cluster = rules.stem(parts[1])
            out.cluster_stems.add(cluster)
        elif parts[0] == "bundles" and len(parts) >= 2:
            bundle = parts[1]
            out.bundle_folders.add(bundle)
        st.problems.append(
            model.Problem(p.path, p.line, p.message, p.severity, bundle=bundle, cluster=cluster)
        )
    return out


# -- cross checks ------------------------------------------------------------------------------------------


def _check_dependencies(st: documents.State) -> None:
    """Unknown names and cycles in `dependsOn`, over every bundle that has a bundle.yaml (broken ones too)."""
    known = set(st.bundles) | st.broken_bundle_names
    graph: dict[str, set[str]] = {}
    for name, (d, path, depends) in sorted(st.dependencies.items()):
        deps: set[str] = set()
        for i, dep in enumerate(depends):
            if dep not in known:
                d.error((*path, i), f"spec.dependsOn[{i}] {rules.quote(dep)}: no such bundle")
                st.broken_bundle_names.add(name)
                continue
            deps.add(dep)
        graph[name] = deps
    remaining = dict(graph)
    while True:
        try:
            tuple(graphlib.TopologicalSorter(remaining).static_order())
            return
        except graphlib.CycleError as e:
            cycle: list[str] = list(e.args[1])
            # graphlib gives [a, b, ..., a]; report it starting from the smallest name, once per member.
            members = cycle[:-1]
            start = members.index(min(members))
            ordered = members[start:] + members[:start]
            text = " -> ".join([*ordered, ordered[0]])
            for member in sorted(set(members)):
                if member in st.dependencies:
                    d, path, _ = st.dependencies[member]
                    d.error(path, f"spec.dependsOn: dependency cycle {text}")
                st.broken_bundle_names.add(member)
            remaining = {k: v - set(members) for k, v in remaining.items() if k not in members}


def _check_placement_clusters(st: documents.State) -> None:
    known = set(st.clusters) | set(st.broken_clusters)
    for d, path, name in st.placement_clusters:
        if name not in known:
            d.warning(
                path,
                f"{rules.dotted(path)}: no cluster named {rules.quote(name)} (a cluster file may have been removed)",
            )
