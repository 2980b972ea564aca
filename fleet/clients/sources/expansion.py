"""`expand`: the sources step of a revision, for every placed bundle with ``spec.source`` or
``spec.decrypt``: plan the jobs (in a worker thread), run those not cached (bounded by the cache's
runner), and assemble each cluster's `model.Expansion`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType

import anyio

from fleet.clients.sources import planning, process, running, work
from fleet.core import model

# ----------------------------------------------------------------------------------------------------------
# The entry point.


async def expand(
    repo: model.Repo,
    placed: model.PlacementResult,
    snapshot: model.Snapshot,
    *,
    settings: work.Settings | None = None,
    cache: work.Cache | None = None,
) -> dict[str, model.Expansion]:
    """The expansions of every placed bundle that has a source or decrypts files (see the module
    docstring). Never raises for bad content: every failure is in the expansions' `errors`."""
    settings = settings or work.Settings()
    cache = (
        cache if cache is not None else work.Cache(runner=process.Runner(concurrency=settings.concurrency))
    )
    names = [
        b
        for b in sorted(placed.bundles)
        if b in repo.bundles and repo.bundles[b].sourced and placed.bundles[b]
    ]
    if not names:
        cache.bundles.clear()
        return {}
    ctx = work.Context(repo, snapshot, settings, cache, placed)
    if any(repo.bundles[b].source is not None and repo.bundles[b].source.helm is not None for b in names):  # type: ignore[union-attr]
        ctx.helm = await running.helm_program(ctx)
    plans: dict[str, work.Plan] = await anyio.to_thread.run_sync(
        functools.partial(planning.plan_all, ctx, names)
    )
    needs: dict[bytes, tuple[str, str, bytes]] = {}
    for p in plans.values():
        needs.update(p.needs)
    if needs:
        failures = await running.decrypt_all(ctx, needs)
        again = [b for b, p in plans.items() if p.needs]
        replanned = await anyio.to_thread.run_sync(
            functools.partial(planning.plan_all, ctx, again, failures=failures)
        )
        plans.update(replanned)
    jobs: dict[str, work.Job] = {}
    for p in plans.values():
        for key, job in p.jobs.items():
            if key not in cache.renders:
                jobs[key] = job
    outcomes: dict[str, model.SourceRender | work.Failure] = {}
    if jobs:
        async with anyio.create_task_group() as tg:
            for job in jobs.values():
                tg.start_soon(running.run_job, ctx, job, outcomes)
    return await anyio.to_thread.run_sync(functools.partial(_assemble, ctx, names, plans, outcomes))


def _assemble(
    ctx: work.Context,
    names: list[str],
    plans: Mapping[str, work.Plan],
    outcomes: Mapping[str, model.SourceRender | work.Failure],
) -> dict[str, model.Expansion]:
    cache = ctx.cache
    if len(cache.renders) > cache.max_entries:
        used = {k for p in plans.values() for k in p.assignment.values() if isinstance(k, str)}
        cache.renders = {k: v for k, v in cache.renders.items() if k in used}
    for key, outcome in outcomes.items():
        if not (isinstance(outcome, work.Failure) and outcome.transient):
            cache.renders[key] = outcome
    if len(cache.plaintext) > cache.max_entries:  # decrypted files of old revisions: decrypt again if needed
        cache.plaintext.clear()
        cache.secrets.clear()
    out: dict[str, model.Expansion] = {}
    kept: dict[str, tuple[str, model.Expansion, frozenset[str]]] = {}
    for b in names:
        plan = plans[b]
        if plan.reused is not None:
            out[b] = plan.reused
            kept[b] = cache.bundles[b]
            continue
        renders: dict[str, model.SourceRender] = {}
        problems: dict[str, model.Problem] = {}
        transient = False
        for c, assigned in plan.assignment.items():
            found: model.SourceRender | work.Failure | None
            if isinstance(assigned, work.Failure):
                found = assigned
            else:
                found = plan.direct.get(assigned) or outcomes.get(assigned) or cache.renders.get(assigned)
                if assigned not in outcomes and found is not None:
                    cache.hits += 1
            if found is None:  # pragma: no cover - every job has an outcome
                found = work.Failure(
                    ctx.repo.bundles[b].path, 1, "internal error: the source was not rendered"
                )
            if isinstance(found, work.Failure):
                transient = transient or found.transient
                problems[c] = model.Problem(found.path, found.line, found.message, bundle=b, cluster=c)
            else:
                renders[c] = found
        key = work.job_key(
            sorted((c, r.key) for c, r in renders.items()),
            sorted((c, p.path, p.line, p.message) for c, p in problems.items()),
        )
        expansion = model.Expansion(
            bundle=b, key=key, renders=MappingProxyType(renders), errors=MappingProxyType(problems)
        )
        out[b] = expansion
        if not transient:
            kept[b] = (plan.stamp, expansion, frozenset(plan.read))
    cache.bundles = kept
    return out
