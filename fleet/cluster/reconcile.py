"""Reconciling clusters: the fleet, with bounded concurrency, and the names callers use.

Owns: `reconcile_fleet` (every cluster of a revision, each in its own task under a global
`CapacityLimiter`, so an unreachable cluster never delays the others beyond its own round's deadline) and
`fleet_result` (a revision's `FleetResult` from its clusters' results: broken cluster files are Failed
clusters, broken bundles and the revision's errors named, never ok).

What `fleet sync`, `fleet diff`, `fleet sync --waves` and the engine use is re-exported here: the options
and results (`fleet.cluster.results`), one round of one cluster (`reconcile_cluster`, `round_limit`,
`with_protected`: `fleet.cluster.rounds`, whose docstring says what a round owns, in what order it writes
and its failure rules; the gate of its writes, with the revision record and a replica's fence, is
`fleet.cluster.gate`). Several controllers on one cluster and replicas: docs/reconcile.md and
docs/scaling.md.

Does not: read the repository, place or render (callers pass `plan.Target`s), or do anything to one
cluster itself (`fleet.cluster.rounds`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import anyio

from fleet.clients import kube
from fleet.cluster.results import BundleResult, ClusterResult, FleetResult, Options
from fleet.cluster.rounds import reconcile_cluster, round_limit, with_protected
from fleet.core import model, pipeline, plan

__all__ = [
    "BundleResult",
    "ClusterResult",
    "FleetResult",
    "Options",
    "fleet_result",
    "reconcile_cluster",
    "reconcile_fleet",
    "round_limit",
    "with_protected",
]


# ----------------------------------------------------------------------------------------------------------
# The fleet


async def reconcile_fleet(
    repo: model.Repo,
    targets: Mapping[str, Mapping[str, plan.Target]],
    *,
    clients: kube.Clients,
    options: Options,
    on_done: Callable[[ClusterResult], Awaitable[None] | None] | None = None,
    protected: Mapping[str, str | plan.Target] | None = None,
) -> FleetResult:
    """Reconcile every cluster of `repo` (those in `targets`), `options.concurrency` at a time.

    `protected` (default: `pipeline.all_protected(repo)`) is given by a caller that passes only some of
    the revision's clusters (a `fleet sync --workers` process)."""
    limiter = anyio.CapacityLimiter(max(1, options.concurrency))
    results: dict[str, ClusterResult] = {}
    shield = pipeline.all_protected(repo) if protected is None else protected

    async def one(name: str) -> None:
        cluster = repo.clusters[name]
        async with limiter:
            client = clients.client(name, context=cluster.context or name)
            result = await reconcile_cluster(
                client, cluster, targets.get(name, {}), options=options, protected=shield
            )
        results[name] = result
        if on_done is not None:
            maybe = on_done(result)
            if maybe is not None:
                await maybe

    async with anyio.create_task_group() as tg:
        for name in sorted(repo.clusters):
            tg.start_soon(one, name)
    return fleet_result(repo, results, wait=options.wait)


def fleet_result(repo: model.Repo, results: Mapping[str, ClusterResult], *, wait: bool) -> FleetResult:
    """The `FleetResult` of a revision from its clusters' results: broken cluster files are Failed
    clusters, broken bundles and the revision's errors are named (never ok)."""
    results = dict(results)
    for name, problems in sorted(repo.broken_clusters.items()):
        first = str(problems[0]) if problems else "broken cluster file"
        results[name] = ClusterResult(
            name, model.State.FAILED, message=f"cluster {name}: not written: {first}"
        )
    return FleetResult(
        repo.revision,
        dict(sorted(results.items())),
        wait=wait,
        broken_bundles=pipeline.protected_bundles(repo),
        errors=tuple(p for p in repo.problems if p.severity is model.Severity.ERROR),
    )
