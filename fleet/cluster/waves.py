"""`fleet sync --waves`: every bundle's rollout run in the foreground (docs/rollouts.md).

Owns: `run`, which drives `fleet.core.rollout` for each bundle of one revision against the clusters: the
same waves, concurrency, failure budgets, soak and progress deadlines as `fleet serve`, each cluster
reconciled with the bundles whose turn has come (the others left as they are there), health re-read
until each cluster in flight is healthy, failed or past its deadline (a round failed only by errors a
retry can fix, `BundleResult.retriable`, is retried with backoff until then); and it stops at the first halt, or
at a wave that waits for a person's approval (nobody can approve a foreground run).
Does not: store rollouts (nothing of them outlives the run), place or render (targets and waves come in),
or print (the command does).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import anyio

from fleet.clients import kube
from fleet.cluster import reconcile
from fleet.core import backoff, model, pipeline, plan
from fleet.core import rollout as ro


@dataclass(frozen=True)
class WavesResult:
    fleet: reconcile.FleetResult
    rollouts: Mapping[str, ro.Rollout]
    stopped: str | None  # why the run stopped before every rollout completed; None: all completed

    @property
    def ok(self) -> bool:
        return self.stopped is None and self.fleet.ok


def _cluster_targets(
    targets: Mapping[str, plan.Target], sent: set[str], rolled: set[str]
) -> dict[str, plan.Target]:
    """A cluster's targets: what it was sent; bundles that roll out but whose turn has not come are left
    as they are (a suspended target: no apply, no prune); the rest (errors, suspended) as they are."""
    out: dict[str, plan.Target] = {}
    for b, t in targets.items():
        out[b] = t if b in sent or b not in rolled else plan.Target(b, suspended=True)
    return out


RETRY_CAP = 30.0  # seconds at most between two rounds of a cluster whose failure is retried


def _retried(result: reconcile.ClusterResult, sent: set[str]) -> bool:
    """Whether a round failed some bundle it was sent in a way a retry can fix (it is retried)."""
    return any(
        (br := result.bundles.get(b)) is not None and br.state is model.State.FAILED and br.retriable
        for b in sent
    )


async def run(
    repo: model.Repo,
    targets: Mapping[str, Mapping[str, plan.Target]],
    waves: Mapping[str, ro.Membership],
    *,
    clients: kube.Clients,
    options: reconcile.Options,
    clock: Callable[[], float] = time.time,
    on_done: Callable[[reconcile.ClusterResult], Awaitable[None] | None] | None = None,
) -> WavesResult:
    now = clock()
    paused = {c for c, cl in repo.clusters.items() if cl.paused}
    rollouts: dict[str, ro.Rollout] = {}
    for b, bundle in sorted(repo.bundles.items()):
        if bundle.suspend:
            continue
        members = {
            c for c, ts in targets.items() if b in ts and ts[b].desired is not None and c not in paused
        }
        membership = waves.get(b)
        listed = membership.waves if membership else tuple((w.name, ()) for w in bundle.rollout.waves)
        rollouts[b] = ro.start(
            bundle=b,
            revision=repo.revision or "worktree",
            spec=bundle.rollout,
            waves=[(name, tuple(c for c in cs if c in members)) for name, cs in listed],
            from_revisions={},
            now=now,
        )
    rolled = set(rollouts)
    sent: dict[str, set[str]] = {}
    results: dict[str, reconcile.ClusterResult] = {}
    protected = pipeline.all_protected(repo)
    limiter = anyio.CapacityLimiter(max(1, options.concurrency))
    round_options = dataclasses.replace(options, wait=False)
    stopped: str | None = None
    retries = 0  # rounds in a row that some cluster in flight failed in a way a retry can fix

    async def one(name: str) -> None:
        cluster = repo.clusters[name]
        async with limiter:
            client = clients.client(name, context=cluster.context or name)
            result = await reconcile.reconcile_cluster(
                client,
                cluster,
                _cluster_targets(targets.get(name, {}), sent.get(name, set()), rolled),
                options=round_options,
                protected=protected,
            )
        results[name] = result
        at = clock()
        for b in sent.get(name, set()):
            seen = result.bundles.get(b)
            state = seen.state if seen is not None else result.state
            rollouts[b] = ro.observe_round(
                rollouts[b],
                name,
                state=state,
                degraded=bool(seen and seen.degraded),
                retriable=bool(seen and seen.retriable),
                message=(seen.message if seen is not None else result.message),
                now=at,
            )

    while True:
        now = clock()
        for b, r in list(rollouts.items()):
            step = ro.advance(r, now=now)
            rollouts[b] = step.rollout
            for c in step.start:
                sent.setdefault(c, set()).add(b)
        halted = [r for r in rollouts.values() if r.phase in (ro.Phase.HALTED, ro.Phase.ROLLED_BACK)]
        if halted:
            stopped = "; ".join(f"rollout of {r.bundle} {r.phase}: {r.reason}" for r in halted)
            break
        if all(r.terminal for r in rollouts.values()):
            break
        in_flight = {
            c
            for r in rollouts.values()
            for c, m in r.members.items()
            if m.phase is ro.ClusterPhase.PROGRESSING
            or (m.phase is ro.ClusterPhase.HEALTHY and r.phase is ro.Phase.SOAKING)
        }
        if not in_flight:
            waiting = [r for r in rollouts.values() if r.phase is ro.Phase.WAITING_APPROVAL]
            if waiting:
                stopped = "; ".join(
                    f"rollout of {r.bundle}: {r.reason} (a foreground run cannot be approved: "
                    f"use fleet serve and fleet rollout approve, or fleet sync without --waves)"
                    for r in waiting
                )
                break
            wakes = [w for w in (ro.next_wake(r) for r in rollouts.values()) if w is not None]
            await anyio.sleep(max(0.05, min(wakes) - clock()) if wakes else options.health_interval)
            continue
        async with anyio.create_task_group() as tg:
            for c in sorted(in_flight):
                tg.start_soon(one, c)
        if any(_retried(results[c], sent.get(c, set())) for c in in_flight if c in results):
            retries += 1  # retried with the controller's backoff, until the cluster's progress deadline
            await anyio.sleep(backoff.delay(retries, base=options.health_interval, cap=RETRY_CAP))
        elif any(results[c].state is model.State.PROGRESSING for c in in_flight if c in results):
            retries = 0
            await anyio.sleep(options.health_interval)
        else:
            retries = 0

    # Every cluster once more with everything it was sent, so the result says where each one stands;
    # clusters never reached are reconciled with their rolled bundles left as they are.
    async with anyio.create_task_group() as tg:
        for name in sorted(repo.clusters):
            tg.start_soon(one, name)
    if on_done is not None:
        for name in sorted(results):
            maybe = on_done(results[name])
            if maybe is not None:
                await maybe
    for name, problems in sorted(repo.broken_clusters.items()):
        first = str(problems[0]) if problems else "broken cluster file"
        results[name] = reconcile.ClusterResult(
            name, model.State.FAILED, message=f"cluster {name}: not written: {first}"
        )
    fleet = reconcile.FleetResult(
        repo.revision,
        dict(sorted(results.items())),
        wait=False,
        broken_bundles=pipeline.protected_bundles(repo),
        errors=tuple(p for p in repo.problems if p.severity is model.Severity.ERROR),
    )
    return WavesResult(fleet=fleet, rollouts=rollouts, stopped=stopped)
