"""One round of one cluster: read, plan, write in order, judge health.

Owns: `reconcile_cluster` (never raises for cluster problems: they are in its `ClusterResult`; every
round has a deadline, `round_limit`: on expiry it stops where it is, the cluster is Unreachable and its
slot is free; a paused cluster is never written, Paused), reading and planning (`reading.observe`,
`plan.plan_cluster`), and executing in the order docs/reconcile.md asks (bundle namespaces, inventory
unions, applies in dependsOn waves, all applies of the cluster before any prune, prunes only for bundles
whose apply fully succeeded, exact inventories, health), with a span per bundle that a round changed.

Given the cluster's watch cache (`fleet.cluster.cache`, `fleet serve`), a round reads what it holds fresh
instead of the server, and plans again from the server before any decision that deletes, forgets,
refuses or reports a conflict (`_read_and_plan`; docs/reconcile.md, "Reading from the watch caches").
Given the cluster's memory of its rounds too (`fleet.cluster.scope.Memory`), such a round plans and
executes only the bundles that can have work and reports the others as the rounds before left them
(`ClusterResult.planned` names those it planned; docs/reconcile.md, "What a round plans").

Failure rules: anything unknown stops deletes. A failed discovery, inventory read or list (an answer that
cannot be read included: `kube` never returns it as empty) fails the whole cluster for the round before
any write; a suspended bundle is never written (Suspended), nor one `fleet.cluster.gate.left_alone`
names (Pending: held at an older revision where another writer of the source is already ahead). Inventories are written as the claim's
source's, over the resourceVersion they were read at (a replica's under its fence); the writes go
through the round's `fleet.cluster.gate.Gate`.

Does not: fan out over the fleet (`fleet.cluster.reconcile`), read the repository, place or render
(callers pass `plan.Target`s), talk HTTP itself (`kube`), or decide ownership (`plan`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace

import anyio
from opentelemetry import trace

from fleet.clients import kube
from fleet.cluster import apply, reading, scope
from fleet.cluster import cache as cache_mod
from fleet.cluster import gate as gate_mod
from fleet.cluster.results import BundleResult, ClusterResult, Options, summary, unreached
from fleet.core import errors, health, model, plan

log = logging.getLogger("fleet.reconcile")
_TRACER = trace.get_tracer("fleet.reconcile")


def with_protected(
    targets: Mapping[str, plan.Target],
    protected: Mapping[str, str | plan.Target],
    inventories: Iterable[str],
) -> dict[str, plan.Target]:
    """`targets` plus a protecting target for each protected bundle with an inventory on the cluster (a
    message stands for a bundle in error)."""
    out = dict(targets)
    for b in inventories:
        if b in protected and b not in out:
            p = protected[b]
            out[b] = p if isinstance(p, plan.Target) else plan.Target(b, error=p)
    return out


# ----------------------------------------------------------------------------------------------------------
# One cluster


def round_limit(targets: Mapping[str, plan.Target], options: Options) -> float | None:
    """Seconds one round of a cluster may take: `cluster_deadline` plus `health_timeout` for each health
    wait the round may do (one per dependsOn wave, one more when waiting for health)."""
    if options.cluster_deadline is None:
        return None
    waits = _dependency_waves(targets) + (1 if options.wait else 0)
    return options.cluster_deadline + waits * options.health_timeout


def _dependency_waves(targets: Mapping[str, plan.Target]) -> int:
    """How many waves after the first the dependsOn order of `targets` has (cycles end the count)."""
    remaining = {b: set(t.depends_on) & set(targets) for b, t in targets.items()}
    waves = 0
    while remaining:
        ready = {b for b, deps in remaining.items() if not deps & set(remaining)}
        if not ready:
            break
        for b in ready:
            del remaining[b]
        waves += 1
    return max(0, waves - 1)


async def reconcile_cluster(
    client: kube.Client,
    cluster: model.Cluster,
    targets: Mapping[str, plan.Target],
    *,
    options: Options,
    protected: Mapping[str, str | plan.Target] | None = None,
    cache: cache_mod.ObjectCache | None = None,
    memory: scope.Memory | None = None,
) -> ClusterResult:
    """One full round on one cluster. Never raises for cluster problems: they are in the result. With the
    cluster's watch `cache`, what it holds fresh is read from it instead of the server (`_read_and_plan`
    says which decisions still need the server); with the cluster's `memory` of its earlier rounds too,
    only the bundles that can have work are planned (`fleet.cluster.scope`), the others reported as
    they were."""
    started = time.monotonic()
    before = client.stats.requests
    if cluster.paused and memory is not None:
        memory.forget()
    if cluster.paused:
        bundles = {b: BundleResult(b, model.State.PAUSED, message="cluster paused") for b in targets}
        return ClusterResult(
            cluster.name,
            model.State.PAUSED,
            bundles=bundles,
            message="nothing written",
            planned=tuple(sorted(targets)),
        )
    result: ClusterResult | None = None
    fenced = False
    limit = round_limit(targets, options)
    try:
        with anyio.fail_after(limit), _forgotten_on_cancel(memory):
            result = await _round(
                client,
                cluster,
                targets,
                options=options,
                protected=protected or {},
                cache=cache,
                memory=memory,
            )
    except TimeoutError:
        msg = (
            f"cluster {cluster.name}: unreachable: the round did not finish within {limit:g}s (the round "
            "timeout); stopped where it was, nothing pruned after that, the next round goes on"
        )
        result = unreached(cluster.name, targets, model.State.UNREACHABLE, msg)
    except errors.Unreachable as e:
        result = unreached(cluster.name, targets, model.State.UNREACHABLE, str(e))
    except errors.FleetError as e:
        fenced = isinstance(e, apply.NotOwner | apply.Fenced)
        result = unreached(cluster.name, targets, model.State.FAILED, str(e), retriable=e.retriable)
    except ExceptionGroup as group:  # from a task group of the round (cancellation is not caught)
        err = kube.fleet_error(group)
        fenced = isinstance(err, apply.NotOwner | apply.Fenced)
        if err is None:
            log.exception("cluster %s: internal error", cluster.name)
            msg = f"cluster {cluster.name}: internal error: {type(group.exceptions[0]).__name__}"
            result = unreached(cluster.name, targets, model.State.FAILED, msg)
        else:
            state = model.State.UNREACHABLE if isinstance(err, errors.Unreachable) else model.State.FAILED
            result = unreached(cluster.name, targets, state, str(err), retriable=err.retriable)
    except Exception as e:  # a bug must not take the other clusters down with this one
        log.exception("cluster %s: internal error", cluster.name)
        msg = f"cluster {cluster.name}: internal error: {type(e).__name__}"
        result = unreached(cluster.name, targets, model.State.FAILED, msg)
    if memory is not None and result.message:
        memory.forget()  # a round that stopped: what it left is not known, the next one plans everything
    return ClusterResult(
        result.cluster,
        result.state,
        bundles=result.bundles,
        removed=result.removed,
        message=result.message,
        warnings=client.warnings,
        requests=client.stats.requests - before,
        seconds=time.monotonic() - started,
        fenced=fenced,
        planned=result.planned,
    )


@contextlib.contextmanager
def _forgotten_on_cancel(memory: scope.Memory | None) -> Iterator[None]:
    """A round cancelled from outside (a replica's deadline) left the cluster in a state not known."""
    try:
        yield
    except BaseException:
        if memory is not None:
            memory.forget()
        raise


async def _round(
    client: kube.Client,
    cluster: model.Cluster,
    targets: Mapping[str, plan.Target],
    *,
    options: Options,
    protected: Mapping[str, str | plan.Target],
    cache: cache_mod.ObjectCache | None = None,
    memory: scope.Memory | None = None,
) -> ClusterResult:
    instance = options.instance
    source = options.source
    # The mark, before the read: a change after it is seen by the next round (one reading the server
    # takes it in the cluster's watch cache too).
    marks = cache if cache is not None or memory is None else memory.watched
    mark = marks.changes if marks is not None else None
    seen, all_targets, cplan, scoped = await _read_and_plan(
        client, targets, options, protected, cache, memory
    )
    ahead = gate_mod.superseded(seen, options)
    if ahead is not None:  # an older replica of this source: write nothing, say who is ahead
        msg = f"cluster {cluster.name}: {ahead.superseded_message()}"
        return unreached(cluster.name, targets, model.State.FAILED, msg)
    gate = gate_mod.Gate(client, seen, options)
    results: dict[str, BundleResult] = {}
    running = {b: p for b, p in cplan.bundles.items() if p.outcome is plan.Outcome.RUN}
    removed = {b: p for b, p in cplan.bundles.items() if p.outcome is plan.Outcome.REMOVED}
    left = gate_mod.left_alone(seen, cplan, options)  # held at an older revision, already ahead here
    for b, why in left.items():
        del running[b]
        results[b] = BundleResult(b, model.State.PENDING, message=why, left=True)
    for b, p in cplan.bundles.items():
        if p.outcome is plan.Outcome.SUSPENDED:
            results[b] = BundleResult(b, model.State.SUSPENDED, message=p.message)
        elif p.outcome in (plan.Outcome.FAILED, plan.Outcome.REFUSED):
            results[b] = BundleResult(b, model.State.FAILED, message=p.message)
        elif p.outcome is plan.Outcome.CONFLICT:
            clash = model.Change(_inventory_ref(instance, b), model.Action.CONFLICT, p.message)
            results[b] = BundleResult(b, model.State.FAILED, model.ChangeSet((clash,)), p.message)

    # Inventories are written over the resourceVersion they were read at, as this source's (an inventory
    # no source wrote keeps none when the caller names none).
    versions = {b: inv.resource_version for b, inv in seen.inventories.items()}

    def source_of(b: str) -> str | None:
        if source is not None or b not in seen.inventories:
            return source
        return seen.inventories[b].source

    created: set[str] = set()

    async def write_inventory(b: str, refs: frozenset[model.ObjectRef]) -> None:
        await gate()
        try:
            await _write_inventory(b, refs)
        except kube.ConflictError as e:  # a 409 on fleet's own inventory: another writer since it was read
            name = model.inventory_name(instance=instance, bundle=b)
            raise apply.InventoryRaced(
                f"ConfigMap/{model.INVENTORY_NAMESPACE}/{name}: changed by another writer during this round; "
                f"not overwritten, retried ({e})"
            ) from e

    async def _write_inventory(b: str, refs: frozenset[model.ObjectRef]) -> None:
        if options.fence is not None and b not in created:  # a replica: under its fence, over what it read
            found = seen.inventories.get(b)
            if found is not None:
                found = replace(found, resource_version=versions.get(b))
            try:
                version = await apply.write_fenced_inventory(
                    client, b, refs, instance=instance, source=source_of(b), fence=gate.fence(), found=found
                )
            except apply.Fenced as e:
                gate.fenced(e)
                raise
            if found is None:
                created.add(b)
            else:
                versions[b] = version
            return
        if b not in seen.inventories and b not in created:  # a create: it cannot overwrite anyone's
            await apply.create_inventory(client, b, refs, instance=instance, source=source_of(b))
            created.add(b)
            return
        versions[b] = await apply.write_inventory(
            client,
            b,
            refs,
            instance=instance,
            source=source_of(b),
            resource_version=versions.get(b),
            fence=gate.fence() if options.fence is not None else None,
        )

    # 1. Namespaces fleet needs: fleet-system for inventories, bundle namespaces.
    inventory_writes = {
        b: p.inventory_before
        for b, p in running.items()
        if p.inventory_before
        and (
            b not in seen.inventories
            or seen.inventories[b].refs != p.inventory_before
            or seen.inventories[b].source != source_of(b)  # written by an earlier fleet: now this source's
        )
    }
    if inventory_writes:
        await gate()
    # 2. Inventory unions, before any object is written.
    for b, refs in sorted(inventory_writes.items()):
        await write_inventory(b, refs)

    # 3. Applies, in dependsOn waves.
    applied: dict[str, apply.Applied] = {}
    healthy: dict[str, tuple[health.Status, tuple[str, ...]]] = {}
    seen_health = health.Memory() if options.health_memory is None else options.health_memory

    async def run_bundle(b: str) -> None:
        p = running[b]
        for dep in p.depends_on:
            dep_plan = cplan.bundles.get(dep)
            if dep_plan is None or dep_plan.outcome is plan.Outcome.SUSPENDED or dep in left:
                continue  # not placed here (placement reports that), or suspended: left as it is
            if dep in applied and dep not in healthy:
                await bundle_health(dep, wait=True)
            if dep not in applied or not applied[dep].ok or healthy[dep][0] is not health.Status.HEALTHY:
                results[b] = BundleResult(
                    b, model.State.PENDING, message=f"bundle {b}: waiting for {dep} to be healthy"
                )
                return
        if p.namespace:
            try:
                if p.namespace not in seen.namespaces:
                    await gate()
                await apply.ensure_namespace(client, p.namespace, instance=instance, existing=seen.namespaces)
                seen.namespaces.add(p.namespace)
            except errors.ClusterError as e:
                if isinstance(e, errors.Unreachable):
                    raise
                failed = model.Change(
                    _ns_ref(p.namespace), model.Action.FAILED, str(e), retriable=e.retriable
                )
                applied[b] = apply.Applied(model.ChangeSet((failed,)))
                return
        if _has_work(p):
            await gate()
            with _TRACER.start_as_current_span(f"apply {b}", attributes=_span_attrs(cluster.name, b)) as span:
                result = await apply.apply_bundle(
                    client, p, live=seen.live, crd_timeout=options.crd_timeout, claim=options.claim
                )
                _record(span, result.changes)
        else:  # nothing to write: no span, so a trace shows only the bundles a round changed
            result = await apply.apply_bundle(
                client, p, live=seen.live, crd_timeout=options.crd_timeout, claim=options.claim
            )
        applied[b] = result

    async def bundle_health(b: str, *, wait: bool) -> None:
        if b in healthy:
            return
        result = applied.get(b)
        if result is None:
            return
        objects = {
            plan.key(s.ref): result.objects[plan.key(s.ref)]
            for s in running[b].steps
            if plan.key(s.ref) in result.objects
        }
        started = time.time_ns()
        healthy[b] = await reading.wait_health(
            client,
            objects,
            instance=instance,
            wait=wait,
            within=options.health_timeout,
            interval=options.health_interval,
            memory=seen_health,
        )
        # A span only where there was something to see: the bundle changed, or it is not healthy yet.
        if _has_work(running[b]) or healthy[b][0] is not health.Status.HEALTHY:
            span = _TRACER.start_span(
                f"health {b}", attributes=_span_attrs(cluster.name, b), start_time=started
            )
            span.set_attribute("fleet.health", str(healthy[b][0]))
            if healthy[b][0] is health.Status.FAILED:
                span.set_status(trace.Status(trace.StatusCode.ERROR, "unhealthy"))
            span.end()

    for wave in cplan.waves:
        todo = [b for b in wave if b in running and b not in results]
        if len(todo) == 1:  # most rounds on the watch cache: one bundle, no task for it
            await run_bundle(todo[0])
            continue
        async with anyio.create_task_group() as tg:
            for b in todo:
                tg.start_soon(run_bundle, b)

    # 4. Prunes: only once every bundle's applies are done; only where the apply fully succeeded.
    pruned: dict[str, model.ChangeSet] = {}
    keep: dict[str, frozenset[model.ObjectRef]] = {}
    for b, p in sorted(running.items()):
        if b in applied and applied[b].ok:
            pruned[b], keep[b] = await _prune(client, cluster.name, p, gate)
    for b, p in sorted(removed.items()):
        pruned[b], keep[b] = await _prune(client, cluster.name, p, gate)

    # 5. Exact inventories after a successful apply and prune.
    for b, p in sorted(running.items()):
        if b not in pruned:
            continue
        final = p.desired_refs | keep[b]
        current = (
            p.inventory_before
            if b in inventory_writes
            else (seen.inventories[b].refs if b in seen.inventories else None)
        )
        if final != current:
            if final:
                await write_inventory(b, final)
            elif b in seen.inventories:
                await gate.before_delete()
                await apply.delete_inventory(client, b, instance=instance, resource_version=versions.get(b))
    for b in sorted(removed):
        if keep[b]:
            if keep[b] != seen.inventories[b].refs:
                await write_inventory(b, keep[b])
        else:
            await gate.before_delete()
            await apply.delete_inventory(client, b, instance=instance, resource_version=versions.get(b))

    # 6. Health.
    judged = [b for b in running if b in applied and applied[b].ok]
    if len(judged) == 1 and not options.wait:  # read from the apply's answers: nothing to wait for
        await bundle_health(judged[0], wait=False)
    else:
        async with anyio.create_task_group() as tg:
            for b in judged:
                tg.start_soon(functools.partial(bundle_health, b, wait=options.wait))

    for b, p in running.items():
        if b in results:
            continue
        a = applied.get(b)
        changes = (a.changes if a else model.ChangeSet()) + pruned.get(b, model.ChangeSet())
        count = len(p.desired_refs)
        desired_set = all_targets[b].desired
        hash_ = desired_set.hash if desired_set is not None else None
        if a is None:
            results[b] = BundleResult(b, model.State.FAILED, changes, "not applied", count, hash_)
            continue
        bad = [
            c.message or f"{c.ref}: {c.action}"
            for c in changes.changes
            if c.action in (model.Action.FAILED, model.Action.CONFLICT)
        ]
        if bad:
            state = model.State.UNREACHABLE if all("unreachable" in m for m in bad) else model.State.FAILED
            retriable = state is model.State.FAILED and all(
                c.retriable
                for c in changes.changes
                if c.action in (model.Action.FAILED, model.Action.CONFLICT)
            )
            results[b] = BundleResult(b, state, changes, summary(bad), count, hash_, retriable=retriable)
            continue
        status, messages = healthy.get(b, (health.Status.HEALTHY, ()))
        if status is health.Status.HEALTHY:
            results[b] = BundleResult(b, model.State.SYNCED, changes, "", count, hash_)
        elif status is health.Status.FAILED:
            results[b] = BundleResult(
                b, model.State.FAILED, changes, summary(messages), count, hash_, degraded=True
            )
        else:
            results[b] = BundleResult(b, model.State.PROGRESSING, changes, summary(messages), count, hash_)
    removed_results = {}
    for b in removed:
        changes = pruned.get(b, model.ChangeSet())
        bad = [c.message for c in changes.changes if c.action is model.Action.FAILED]
        state = model.State.FAILED if bad else model.State.SYNCED
        removed_results[b] = BundleResult(
            b, state, changes, summary(bad) or removed[b].message, len(keep.get(b, ()))
        )
    if memory is not None:
        written = {k: _version(obj) for a in applied.values() for k, obj in a.objects.items()}
        for b, version in versions.items():
            if version is not None:
                written[_cm_key(model.inventory_name(instance=instance, bundle=b))] = version
        memory.established(
            cache=marks,
            mark=mark,
            types=seen.types,
            kinds=seen.kinds,
            scoped=scoped is not None,
            instance=instance,
            targets=targets,
            protected=all_targets.keys() - targets.keys(),
            cplan=cplan,
            results=results,
            server=None if seen.cached else seen,
            written=written,
        )
    for b in all_targets:
        if b not in cplan.bundles:  # not planned: what the rounds before left it at
            carried = memory.carried(b) if memory is not None else None
            if carried is None:
                raise RuntimeError(f"bundle {b}: neither planned nor known from an earlier round")
            results[b] = carried
    placed = {b: r for b, r in results.items() if b in targets or r.state is not model.State.SUSPENDED}
    states = [r.state for r in placed.values()] + [r.state for r in removed_results.values()]
    return ClusterResult(
        cluster.name,
        model.worst_state(states),
        bundles=placed,
        removed=removed_results,
        planned=tuple(sorted(cplan.bundles)),
    )


async def _read_and_plan(
    client: kube.Client,
    targets: Mapping[str, plan.Target],
    options: Options,
    protected: Mapping[str, str | plan.Target],
    cache: cache_mod.ObjectCache | None,
    memory: scope.Memory | None,
) -> tuple[reading.Observed, dict[str, plan.Target], plan.ClusterPlan, frozenset[str] | None]:
    """Read the cluster (from `cache` where fresh) and plan. A plan made on cached data that would delete,
    forget, refuse, conflict, back off or fail on what it read is made again from the server: only
    writes (server-side applies, whose answer is the truth) and "nothing to do" are decided on the
    cache (docs/reconcile.md, "Reading from the watch caches"). With `memory`, a round on the cache plans
    only the bundles `scope.Memory.scope` names (returned; None: every bundle), and every bundle again
    from the server when that is needed."""
    scoped = None
    if memory is not None:
        scoped = memory.scope(targets, cache, instance=options.instance, source=options.source)
    while True:
        doubts = cache.doubts if cache is not None else 0
        seen = await reading.observe(
            client, targets, instance=options.instance, source=options.source, cache=cache, only=scoped
        )
        if scoped is not None and memory is not None and not memory.fits(seen.types):
            scoped = None  # the cluster's types changed since (a CRD): read for every bundle
            continue
        all_targets = with_protected(targets, protected, seen.inventories)
        only = None if scoped is None else scoped | (all_targets.keys() - targets.keys())
        cplan = plan.plan_cluster(
            all_targets,
            instance=options.instance,
            inventories=seen.inventories,
            broken_inventories=seen.broken_inventories,
            live=seen.live,
            known=seen.known,
            foreign=seen.foreign,
            source=options.source,
            only=only,
        )
        if not seen.cached:
            if cache is not None:
                cache.trust_again(doubts=doubts)
            return seen, all_targets, cplan, scoped
        if not _needs_server(seen, cplan, options):
            return seen, all_targets, cplan, scoped
        cache, scoped = None, None  # once more, from the server, for every bundle


def _needs_server(seen: reading.Observed, cplan: plan.ClusterPlan, options: Options) -> bool:
    """Whether a plan made on cached data takes a decision that must be judged on the server's answer."""
    if seen.broken_inventories or seen.foreign or gate_mod.superseded(seen, options) is not None:
        return True
    for p in cplan.bundles.values():
        if p.outcome in (plan.Outcome.REMOVED, plan.Outcome.REFUSED, plan.Outcome.CONFLICT):
            return True
        if p.prune or any(step.op is plan.Op.CONFLICT for step in p.steps):
            return True
    return False


def _span_attrs(cluster: str, bundle: str) -> dict[str, str]:
    return {"fleet.cluster": cluster, "fleet.bundle": bundle}


def _record(span: trace.Span, changes: model.ChangeSet) -> None:
    """Counts only on spans: never object bodies, messages from the server or Secret data."""
    for action in model.Action:
        n = changes.count(action)
        if n:
            span.set_attribute(f"fleet.objects.{action.value}", n)
    if changes.failed:
        span.set_status(trace.Status(trace.StatusCode.ERROR, "objects failed or conflicted"))


def _has_work(bundle_plan: plan.BundlePlan) -> bool:
    """Whether applying this bundle writes anything (a round over unchanged bundles emits no spans)."""
    return any(step.op is not plan.Op.UNCHANGED for step in bundle_plan.steps)


async def _prune(
    client: kube.Client, cluster: str, bundle_plan: plan.BundlePlan, gate: gate_mod.Gate
) -> tuple[model.ChangeSet, frozenset[model.ObjectRef]]:
    if not bundle_plan.prune:
        return await apply.prune_bundle(client, bundle_plan)
    if any(s.op is not plan.PruneOp.KEEP for s in bundle_plan.prune):  # a delete, or one dropped from fleet
        await gate.before_delete()
    if any(s.op is plan.PruneOp.DELETE for s in bundle_plan.prune):
        await gate.before_prune(bundle_plan.bundle)
    with _TRACER.start_as_current_span(
        f"prune {bundle_plan.bundle}", attributes=_span_attrs(cluster, bundle_plan.bundle)
    ) as span:
        changes, keep = await apply.prune_bundle(client, bundle_plan)
        _record(span, changes)
        return changes, keep


def _version(obj: Mapping[str, object]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""


def _cm_key(name: str) -> plan.Key:
    return ("", "ConfigMap", model.INVENTORY_NAMESPACE, name)


def _ns_ref(name: str) -> model.ObjectRef:
    return model.ObjectRef("", "v1", "Namespace", "", name)


def _inventory_ref(instance: str, bundle: str) -> model.ObjectRef:
    name = model.inventory_name(instance=instance, bundle=bundle)
    return model.ObjectRef("", "v1", "ConfigMap", model.INVENTORY_NAMESPACE, name)
