"""`fleet diff`: what a sync would change, from a server-side dry run, as unified diffs.

Owns: per cluster, the same read and plan as a sync (`reading.observe`, `plan.plan_cluster`), then a
``dryRun=All`` server-side apply of every object the plan would write (never of unchanged ones, so the
answer agrees with what `fleet sync` would send), and a unified diff of the live object against the
dry-run result, both cleaned of what always differs (managedFields, resourceVersion, generation, uid,
creationTimestamp, status, fleet's revision and hash annotations). Objects whose namespace does not exist
yet are shown as new without asking the server (a dry run would fail with "namespace not found"). Objects
that a sync would prune are shown as removed. Secret values are never shown: each becomes
``<redacted>`` (``<redacted: changed>`` on the new side when it differs).

Every cluster is compared within the round deadline (`fleet diff --round-timeout`): a cluster too slow
to answer is an error in time, and frees its slot.

Does not: write anything, or wait for health.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import yaml

from fleet.clients import kube
from fleet.cluster import apply, reading, reconcile
from fleet.core import errors, model, pipeline, plan

_DROP_META = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "selfLink")
_DROP_ANNOTATIONS = (
    model.ANNOTATION_REVISION,
    model.ANNOTATION_CLAIM,
    plan.ANNOTATION_HASH,
    "kubectl.kubernetes.io/last-applied-configuration",
)


@dataclass(frozen=True)
class ObjectDiff:
    ref: model.ObjectRef
    bundle: str
    kind: str  # "new", "changed", "removed", "conflict", "error"
    text: str  # the unified diff (or the message for conflict/error)


@dataclass(frozen=True)
class ClusterDiff:
    cluster: str
    diffs: tuple[ObjectDiff, ...] = ()
    error: str | None = None
    state: model.State | None = None

    @property
    def changed(self) -> bool:
        return any(d.kind in ("new", "changed", "removed") for d in self.diffs)

    @property
    def failed(self) -> bool:
        return self.error is not None or any(d.kind in ("conflict", "error") for d in self.diffs)


def clean(obj: Mapping[str, Any] | None, *, other: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`obj` without the fields that always differ, Secret values redacted."""
    if not obj:
        return {}
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (out.get("metadata") or {}).items() if k not in _DROP_META}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _DROP_ANNOTATIONS}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    if out.get("kind") == "Secret":
        theirs = (other or {}).get("data") or {}
        for section in ("data", "stringData"):
            values = out.get(section)
            if isinstance(values, Mapping):
                out[section] = {
                    k: "<redacted: changed>"
                    if other is not None and section == "data" and theirs.get(k) != v
                    else "<redacted>"
                    for k, v in values.items()
                }
    return out


def _yaml(obj: Mapping[str, Any]) -> list[str]:
    if not obj:
        return []
    text = yaml.safe_dump(dict(obj), sort_keys=True, default_flow_style=False)
    return text.splitlines(keepends=True)


def unified(ref: model.ObjectRef, live: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str:
    before = clean(live)
    after = clean(new, other=live or {}) if new is not None else {}
    lines = difflib.unified_diff(_yaml(before), _yaml(after), fromfile=f"live/{ref}", tofile=f"desired/{ref}")
    return "".join(lines)


async def diff_cluster(
    client: kube.Client,
    cluster: model.Cluster,
    targets: Mapping[str, plan.Target],
    *,
    instance: str,
    protected: Mapping[str, str | plan.Target] | None = None,
    source: str | None = None,
) -> ClusterDiff:
    if cluster.paused:
        return ClusterDiff(cluster.name, state=model.State.PAUSED)
    try:
        seen = await reading.observe(client, targets, instance=instance, source=source)
    except errors.FleetError as e:
        return ClusterDiff(cluster.name, error=str(e))
    all_targets = reconcile.with_protected(targets, protected or {}, seen.inventories)
    cplan = plan.plan_cluster(
        all_targets,
        instance=instance,
        inventories=seen.inventories,
        broken_inventories=seen.broken_inventories,
        live=seen.live,
        known=seen.known,
        foreign=seen.foreign,
        source=source,
    )
    out: list[ObjectDiff] = []

    async def one(bundle: str, step: plan.ObjectStep) -> None:
        ref = step.ref
        live = seen.live.get(plan.key(ref))
        rt = apply.resolve(seen.types, ref)
        if rt is None:
            if step.op is plan.Op.CREATE and plan.key(ref)[:2] in _crd_defined(cplan):
                out.append(ObjectDiff(ref, bundle, "new", unified(ref, None, step.obj)))
            else:
                out.append(ObjectDiff(ref, bundle, "error", kube.no_match_message(ref, seen.types)))
            return
        if rt.namespaced and ref.namespace not in seen.namespaces:
            out.append(ObjectDiff(ref, bundle, "new", unified(ref, None, step.obj)))
            return
        try:
            result, _ = await client.apply(
                rt, step.obj, force=step.force, dry_run=True, secrets=apply.secret_values(step.obj)
            )
        except kube.ConflictError as e:
            out.append(ObjectDiff(ref, bundle, "conflict", str(e)))
            return
        except errors.ClusterError as e:
            out.append(ObjectDiff(ref, bundle, "error", str(e)))
            return
        text = unified(ref, live, result)
        if text:
            out.append(ObjectDiff(ref, bundle, "new" if live is None else "changed", text))

    try:
        async with anyio.create_task_group() as tg:
            for name, bp in sorted(cplan.bundles.items()):
                if bp.outcome in (plan.Outcome.FAILED, plan.Outcome.REFUSED):
                    out.append(ObjectDiff(_bundle_ref(name), name, "error", bp.message))
                    continue
                if bp.outcome is plan.Outcome.CONFLICT:
                    out.append(ObjectDiff(_bundle_ref(name), name, "conflict", bp.message))
                    continue
                for step in bp.steps:
                    if step.op is plan.Op.CONFLICT:
                        out.append(ObjectDiff(step.ref, name, "conflict", step.message))
                    elif step.op is not plan.Op.UNCHANGED:
                        tg.start_soon(one, name, step)
                for pstep in bp.prune:
                    if pstep.op is plan.PruneOp.DELETE:
                        live = seen.live.get(plan.key(pstep.ref))
                        out.append(ObjectDiff(pstep.ref, name, "removed", unified(pstep.ref, live, None)))
    except errors.Unreachable as e:  # pragma: no cover - per-object errors are caught above
        return ClusterDiff(cluster.name, error=str(e))
    order = {"error": 0, "conflict": 1}
    out.sort(key=lambda d: (d.bundle, order.get(d.kind, 2), d.ref))
    return ClusterDiff(cluster.name, tuple(out))


def _crd_defined(cplan: plan.ClusterPlan) -> set[tuple[str, str]]:
    objects = [s.obj for bp in cplan.bundles.values() for s in bp.steps]
    return plan.crd_kinds(objects)


def _bundle_ref(name: str) -> model.ObjectRef:
    return model.ObjectRef(model.API_GROUP, "v1alpha1", "Bundle", "", name)


@dataclass(frozen=True)
class FleetDiff:
    clusters: Mapping[str, ClusterDiff] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(c.changed for c in self.clusters.values())

    @property
    def failed(self) -> bool:
        return any(c.failed for c in self.clusters.values())


async def diff_fleet(
    repo: model.Repo,
    targets: Mapping[str, Mapping[str, plan.Target]],
    *,
    clients: kube.Clients,
    instance: str,
    concurrency: int = 16,
    deadline: float | None = 600.0,
    source: str | None = None,
) -> FleetDiff:
    limiter = anyio.CapacityLimiter(max(1, concurrency))
    results: dict[str, ClusterDiff] = {}
    protected = pipeline.all_protected(repo)

    async def one(name: str) -> None:
        cluster = repo.clusters[name]
        async with limiter:
            client = clients.client(name, context=cluster.context or name)
            with anyio.move_on_after(deadline) as scope:  # a slow cluster frees its slot in time
                results[name] = await diff_cluster(
                    client,
                    cluster,
                    targets.get(name, {}),
                    instance=instance,
                    protected=protected,
                    source=source,
                )
            if scope.cancelled_caught:
                results[name] = ClusterDiff(
                    name, error=f"unreachable: not compared within {deadline:g}s (the round timeout)"
                )

    async with anyio.create_task_group() as tg:
        for name in sorted(repo.clusters):
            tg.start_soon(one, name)
    return FleetDiff(dict(sorted(results.items())))
