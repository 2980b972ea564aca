"""Executing a plan on one cluster: server-side applies, inventories, namespaces and prunes.

Owns: the writes of one round, each returning a `model.ChangeSet` (per object: created, configured,
unchanged, deleted, skipped, conflict, failed):

- `ensure_namespace`: a plain create labelled ``fleet.dev/owner`` when missing (bundle namespaces and
  ``fleet-system``); never updated, never pruned, never in an inventory;
- `create_inventory` / `write_inventory` / `delete_inventory`: the inventory ConfigMap of a bundle (a
  plain create when there was none, so two writers cannot both create it; then server-side applies over
  the resourceVersion it was read at: an inventory changed by someone else meanwhile is a conflict, never
  overwritten); `write_fenced_inventory`: the same under a replica's shard lease, refused (`Fenced`) when
  a newer owner of the shard wrote the inventory (`fleet.core.fencing`); `check_fence`: that fence read
  again right before a prune; `NotOwner`: a replica past its renew deadline writes nothing;
- `read_record` / `write_record`: the revision record of a source (`inventory.Claim`; written before a
  round's first delete, `fleet.cluster.gate`): created when missing (a plain create, so two writers
  cannot both create it), else written over the resourceVersion it was read at;
- `apply_bundle`: one bundle's steps in phases (CRDs, then Namespaces, then the rest, each phase's objects
  concurrently within the client's in-flight limit), waiting for written CRDs to be Established and
  rediscovering until their kinds are served (a real API server lists them a moment later) before the
  objects that need them; each object written carries the round's claim (`fleet.dev/claim`,
  `inventory.marked`); objects the plan found unchanged send nothing;
- `prune_bundle`: the plan's deletions in reverse order; an owned Namespace only when it holds nothing
  but objects pruned with it; each delete under preconditions (the uid and resourceVersion the plan read,
  else `read_version` first), so one that lands after anyone wrote the object deletes nothing (409: not
  pruned this round, reported); a refused delete stays in the inventory and is reported.
  `delete_inventory`: only at the version the round read or wrote.

Does not: decide anything about ownership (`plan` did), or read the live state (`reconcile` does).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from fleet.clients import kube
from fleet.core import errors, fencing, health, model, plan
from fleet.core import inventory as inventory_mod

CONFIGMAP = kube.ResourceType("", "v1", "ConfigMap", "configmaps", True, ("create", "get", "list", "patch"))
NAMESPACE = kube.NAMESPACES


def resolve(types: kube.TypeTable, ref: model.ObjectRef) -> kube.ResourceType | None:
    """The served type of `ref`: its own version, else any served version of the same group and kind."""
    rt = types.of(ref)
    if rt is not None:
        return rt
    for candidate in types.types.values():
        if candidate.group == ref.group and candidate.kind == ref.kind:
            return candidate
    return None


def secret_values(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """Values of a Secret manifest (data and stringData), to keep out of any message."""
    if obj.get("kind") != "Secret":
        return ()
    out = []
    for section in ("data", "stringData"):
        for value in (obj.get(section) or {}).values():
            if isinstance(value, str):
                out.append(value)
                if section == "data":
                    try:
                        out.append(base64.b64decode(value).decode("utf-8"))
                    except (ValueError, UnicodeDecodeError):
                        pass
    return tuple(out)


@dataclass
class Applied:
    """What `apply_bundle` did: the change set and the objects as they are now (for health)."""

    changes: model.ChangeSet = field(default_factory=model.ChangeSet)
    objects: dict[plan.Key, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.changes.failed


async def ensure_namespace(
    client: kube.Client, name: str, *, instance: str, existing: Iterable[str] = ()
) -> model.Change | None:
    """Create namespace `name` when missing (plain create, labelled as ours; never updated)."""
    if name in set(existing):
        return None
    created = await client.create_namespace(name, instance=instance)
    ref = model.ObjectRef("", "v1", "Namespace", "", name)
    return model.Change(ref, model.Action.CREATED if created else model.Action.UNCHANGED, "bundle namespace")


async def write_inventory(
    client: kube.Client,
    bundle: str,
    refs: Iterable[model.ObjectRef],
    *,
    instance: str,
    source: str | None = None,
    resource_version: str | None = None,
    fence: fencing.Fence | None = None,
) -> str | None:
    """Write a bundle's inventory as `source`'s (under `fence`); with `resource_version`, only over that
    version (a 409 `kube.ConflictError` when it changed since it was read). Returns the new
    resourceVersion."""
    body = inventory_mod.encode(
        bundle, refs, instance=instance, source=source, resource_version=resource_version, fence=fence
    )
    doc, _ = await client.apply(CONFIGMAP, body, force=True)
    rv = (doc.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


class InventoryRaced(errors.ClusterError):
    """An inventory appeared between this round's read and its create, or changed before its write over
    the version read (another source, or a replica): nothing of it is overwritten; the next round reads
    who wrote it."""

    retriable = True


async def create_inventory(
    client: kube.Client,
    bundle: str,
    refs: Iterable[model.ObjectRef],
    *,
    instance: str,
    source: str | None = None,
    fence: fencing.Fence | None = None,
) -> None:
    """Create a bundle's inventory that did not exist when the round read the cluster; `InventoryRaced`
    when it exists now."""
    body = inventory_mod.encode(bundle, refs, instance=instance, source=source, fence=fence)
    if not await client.create(CONFIGMAP, body):
        where = f"ConfigMap/{model.INVENTORY_NAMESPACE}/{body['metadata']['name']}"
        raise InventoryRaced(
            f"{where}: created by another writer during this round; not overwritten, retried"
        )


class Fenced(errors.Conflict):
    """A newer owner of the cluster's shard wrote a bundle's inventory: this replica writes and prunes
    nothing of that bundle there. `above`: the epoch a replica that still holds the lease lifts its own
    over (the lease was created again; `fleet.core.fencing`)."""

    retriable = True

    def __init__(self, message: str, *, above: int) -> None:
        super().__init__(message)
        self.above = above


async def write_fenced_inventory(
    client: kube.Client,
    bundle: str,
    refs: Iterable[model.ObjectRef],
    *,
    instance: str,
    source: str | None,
    fence: fencing.Fence | None,
    found: inventory_mod.Inventory | None,
) -> str | None:
    """Write a bundle's inventory under `fence` (None: a writer without a lease, which keeps the fence it
    found) over the inventory this round `found` (None: there was none; created). `Fenced` when `found`
    carries a newer epoch of the same lease: nothing is sent. A 409 (`kube.ConflictError`, or
    `InventoryRaced` for a create) when anyone wrote it since it was read: the compare-and-swap that keeps
    a stale owner from ever writing after a newer one. Returns the new resourceVersion (None for a create).
    """
    name = model.inventory_name(instance=instance, bundle=bundle)
    where = f"ConfigMap/{model.INVENTORY_NAMESPACE}/{name}"
    judgement = fencing.judge(found.fence if found is not None else None, fence, where=where)
    if judgement.verdict is fencing.Verdict.STALE:
        raise Fenced(judgement.message or where, above=judgement.above)
    if found is None or found.resource_version is None:
        await create_inventory(client, bundle, refs, instance=instance, source=source, fence=judgement.fence)
        return None
    return await write_inventory(
        client,
        bundle,
        refs,
        instance=instance,
        source=source,
        resource_version=found.resource_version,
        fence=judgement.fence,
    )


# This replica may not write to the cluster now (docs/scaling.md): raised by a round's gate, or by the
# cluster's client itself right before a write (`kube.Transport.may_write`). The round writes nothing more.
NotOwner = kube.NotOwner


async def check_fence(client: kube.Client, bundle: str, *, instance: str, fence: fencing.Fence) -> None:
    """Right before pruning `bundle`: its inventory as it is now carries no newer owner's fence (`Fenced`
    otherwise; an unreadable inventory raises, it is never taken as free). A newer owner that wrote it
    after this round read the cluster is seen here, not after a delete."""
    name = model.inventory_name(instance=instance, bundle=bundle)
    where = f"ConfigMap/{model.INVENTORY_NAMESPACE}/{name}"
    doc = await client.get(CONFIGMAP, namespace=model.INVENTORY_NAMESPACE, name=name)
    if doc is None:
        return
    found = inventory_mod.decode(doc, instance=instance)
    judgement = fencing.judge(found.fence, fence, where=where)
    if judgement.verdict is fencing.Verdict.STALE:
        raise Fenced(judgement.message or where, above=judgement.above)


class RecordRaced(errors.ClusterError):
    """The revision record changed between this round's read and its write: another controller of the same
    source wrote it. Nothing of this round was written; the next round reads it again."""

    retriable = True


async def read_record(
    client: kube.Client, *, instance: str, source: str
) -> tuple[inventory_mod.Claim | None, str | None]:
    """The revision record of `source` and its resourceVersion; (None, None) when there is none. Raises
    `inventory.InventoryError` when it cannot be read (never taken as missing)."""
    name = inventory_mod.record_name(instance=instance, source=source)
    doc = await client.get(CONFIGMAP, namespace=model.INVENTORY_NAMESPACE, name=name)
    if doc is None:
        return None, None
    rv = (doc.get("metadata") or {}).get("resourceVersion")
    return inventory_mod.decode_record(doc, source=source), str(rv) if rv else None


async def write_record(
    client: kube.Client, claim: inventory_mod.Claim, *, instance: str, resource_version: str | None
) -> None:
    """Record `claim` as the newest revision of its source on this cluster: a create when there was no
    record (`resource_version` None), else an apply over that version. Raises `RecordRaced` when another
    writer got there first with another revision; a writer that recorded this same revision meanwhile (a
    replica of the same source at the same commit) is no race: the record says what this round would."""
    body = inventory_mod.encode_record(claim, instance=instance, resource_version=resource_version)
    where = f"ConfigMap/{model.INVENTORY_NAMESPACE}/{body['metadata']['name']}"
    raced = f"{where}: written by another controller of the same source during this round; retried"
    if resource_version is None:
        if not await client.create(CONFIGMAP, body):
            await _raced(client, claim, instance=instance, message=raced)
        return
    try:
        await client.apply(CONFIGMAP, body, force=True)
    except kube.ConflictError:
        await _raced(client, claim, instance=instance, message=raced)


async def _raced(client: kube.Client, claim: inventory_mod.Claim, *, instance: str, message: str) -> None:
    """Another writer changed the record since it was read: `RecordRaced` unless it now holds `claim`'s
    revision."""
    found, _ = await read_record(client, instance=instance, source=claim.source)
    if found is None or found.revision != claim.revision:
        raise RecordRaced(message)


async def delete_inventory(
    client: kube.Client, bundle: str, *, instance: str, resource_version: str | None
) -> None:
    """Delete a bundle's inventory only at the `resource_version` this round read or wrote it at (a
    precondition of the delete): `InventoryRaced` when anyone wrote it since (a 409, nothing deleted), or
    when that version is unknown (nothing sent). Already gone is done."""
    name = model.inventory_name(instance=instance, bundle=bundle)
    where = f"ConfigMap/{model.INVENTORY_NAMESPACE}/{name}"
    if resource_version is None:
        raise InventoryRaced(f"{where}: not deleted: the version this round read it at is unknown; retried")
    try:
        await client.delete(
            CONFIGMAP,
            namespace=model.INVENTORY_NAMESPACE,
            name=name,
            uid=None,
            resource_version=resource_version,
        )
    except kube.ConflictError as e:
        raise InventoryRaced(
            f"{where}: changed by another writer during this round; not deleted, retried ({e})"
        ) from e


def _served_kinds(crd: Mapping[str, Any]) -> set[tuple[str, str]]:
    """The (apiVersion, kind) pairs a CustomResourceDefinition makes the cluster serve."""
    spec = crd.get("spec") or {}
    group, kind = spec.get("group"), (spec.get("names") or {}).get("kind")
    if not isinstance(group, str) or not isinstance(kind, str):
        return set()
    versions = [v for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("served")]
    return {(f"{group}/{v.get('name')}", kind) for v in versions}


async def _wait_established(
    client: kube.Client, crds: Iterable[model.ObjectRef], *, within: float, interval: float = 0.1
) -> list[tuple[model.ObjectRef, str]]:
    """Wait for CRDs to be Established and their kinds served by discovery; (ref, message) for those that
    are not in time. A real API server lists a new kind a moment after Established (docs/real-cluster.md):
    discovery is read again until it does, so resources of the kind can be applied right after."""
    types = await client.types()
    pending = list(crds)
    unserved: dict[model.ObjectRef, set[tuple[str, str]]] = {}
    with anyio.move_on_after(within):
        while pending:
            still = []
            for ref in pending:
                rt = resolve(types, ref)
                obj = await client.get(rt, namespace=None, name=ref.name) if rt else None
                if obj is None or health.assess(obj).status is not health.Status.HEALTHY:
                    still.append(ref)
                else:
                    unserved[ref] = _served_kinds(obj)
            pending = still
            if pending:
                await anyio.sleep(interval)
        while unserved:
            served = set((await client.types(refresh=True)).types)
            unserved = {ref: kinds - served for ref, kinds in unserved.items() if kinds - served}
            if unserved:
                await anyio.sleep(interval)
    problems = [(ref, f"{ref}: not Established after {within:g}s") for ref in pending]
    for ref, kinds in sorted(unserved.items()):
        missing = ", ".join(f"{kind} {api_version}" for api_version, kind in sorted(kinds))
        problems.append((ref, f"{ref}: Established, but {missing} not served after {within:g}s"))
    return problems


async def _apply_step(
    client: kube.Client,
    types: kube.TypeTable,
    step: plan.ObjectStep,
    *,
    live: Mapping[plan.Key, Mapping[str, Any]],
    out: dict[plan.Key, Mapping[str, Any]],
    claim: inventory_mod.Claim | None = None,
) -> model.Change:
    ref = step.ref
    k = plan.key(ref)
    if step.op is plan.Op.CONFLICT:
        return model.Change(ref, model.Action.CONFLICT, step.message)
    if step.op is plan.Op.UNCHANGED:
        if k in live:
            out[k] = live[k]
        return model.Change(ref, model.Action.UNCHANGED)
    rt = resolve(types, ref)
    if rt is None:
        return model.Change(ref, model.Action.FAILED, kube.no_match_message(ref, types))
    try:
        body = inventory_mod.marked(step.obj, claim)
        obj, created = await client.apply(rt, body, force=step.force, secrets=secret_values(step.obj))
    except NotOwner:
        raise  # nothing sent, and nothing more of the round is: it stops (its result says fenced)
    except kube.ConflictError as e:
        return model.Change(ref, model.Action.CONFLICT, str(e))
    except errors.ClusterError as e:
        return model.Change(ref, model.Action.FAILED, str(e), retriable=e.retriable)
    out[k] = obj
    before = (live.get(k) or {}).get("metadata", {}).get("resourceVersion")
    after = (obj.get("metadata") or {}).get("resourceVersion")
    if created:
        return model.Change(ref, model.Action.CREATED, step.message)
    if before is not None and before == after:
        return model.Change(ref, model.Action.UNCHANGED, step.message)
    return model.Change(ref, model.Action.CONFIGURED, step.message)


def writers(client: kube.Client) -> int:
    """How many of a phase's writes are under way at once: the client's in-flight limit, twice over (a
    write waiting out a retry's backoff holds no slot of the client, so another one takes it), rather
    than one task per object (what each costs in CPU, for nothing: the client sends 4 at a time)."""
    return 2 * max(1, client.settings.max_in_flight)


async def apply_bundle(
    client: kube.Client,
    bundle_plan: plan.BundlePlan,
    *,
    live: Mapping[plan.Key, Mapping[str, Any]],
    crd_timeout: float = 60.0,
    claim: inventory_mod.Claim | None = None,
) -> Applied:
    """Apply one bundle's steps, phase by phase, each object carrying `claim` in `fleet.dev/claim` (the
    round's writer; docs/reconcile.md, "The claim on every object"). Never raises for an object: failures
    are changes."""
    result = Applied()
    phases: dict[int, list[plan.ObjectStep]] = {}
    for step in bundle_plan.steps:
        phases.setdefault(plan.phase(step.ref), []).append(step)
    for number in sorted(phases):
        steps = phases[number]
        types = await client.types()
        changes: list[model.Change | None] = [None] * len(steps)

        writes: list[tuple[int, plan.ObjectStep]] = []
        for i, step in enumerate(steps):
            if step.op is plan.Op.UNCHANGED or step.op is plan.Op.CONFLICT:
                changes[i] = await _apply_step(
                    client, types, step, live=live, out=result.objects, claim=claim
                )
            else:  # only writes run concurrently (an unchanged object sends nothing)
                writes.append((i, step))
        pending = iter(writes)

        async def writer(
            pending: Iterator[tuple[int, plan.ObjectStep]],
            types: kube.TypeTable,
            changes: list[model.Change | None],
        ) -> None:
            for i, step in pending:  # the writers share the phase's writes, each taking the next
                changes[i] = await _apply_step(
                    client, types, step, live=live, out=result.objects, claim=claim
                )

        if len(writes) == 1:  # one write (most commits): no task for it
            await writer(pending, types, changes)
        elif writes:
            async with anyio.create_task_group() as tg:
                for _ in range(min(len(writes), writers(client))):
                    tg.start_soon(writer, pending, types, changes)
        done = [c for c in changes if c is not None]
        result.changes = result.changes + model.ChangeSet(tuple(done))
        if number == 0:
            written = [c.ref for c in done if c.action in (model.Action.CREATED, model.Action.CONFIGURED)]
            if written:
                problems = await _wait_established(client, written, within=crd_timeout)
                await client.types(refresh=True)
                if problems:
                    failed = tuple(model.Change(r, model.Action.FAILED, m) for r, m in problems)
                    result.changes = result.changes + model.ChangeSet(failed)
    return result


async def _namespace_contents(
    client: kube.Client, types: kube.TypeTable, namespace: str
) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []

    async def one(rt: kube.ResourceType) -> None:
        found.extend(await client.list(rt, namespace=namespace))

    with kube.unwrap_group():
        async with anyio.create_task_group() as tg:
            for rt in types.namespaced_listable():
                tg.start_soon(one, rt)
    return found


class VersionUnknown(errors.ClusterError):
    """An object the cluster answers without its uid or resourceVersion: it cannot be deleted under
    preconditions, so it is not deleted."""

    retriable = True


async def read_version(
    client: kube.Client, rt: kube.ResourceType, ref: model.ObjectRef
) -> tuple[str, str] | None:
    """(uid, resourceVersion) of the object as it is now; None when it is gone; `VersionUnknown` when the
    answer lacks either."""
    doc = await client.get(rt, namespace=ref.namespace or None, name=ref.name)
    if doc is None:
        return None
    meta = doc.get("metadata") or {}
    uid, rv = meta.get("uid"), meta.get("resourceVersion")
    if not uid or not rv:
        raise VersionUnknown(f"{ref}: the cluster answers it without its uid or resourceVersion")
    return str(uid), str(rv)


async def prune_bundle(
    client: kube.Client, bundle_plan: plan.BundlePlan
) -> tuple[model.ChangeSet, frozenset[model.ObjectRef]]:
    """Run the plan's prune steps; return the changes and the refs that must stay in the inventory.

    Each delete carries preconditions: the uid and resourceVersion of the object as the plan read it
    (read here first when the plan has none). A delete the server refuses with 409 (the object changed
    since it was read: another writer, or a newer owner of the shard; a delete held on the wire that lands
    after them) deleted nothing: the object stays in the inventory, the pair is Failed (retriable) and
    the next round plans again from a fresh read."""
    types = await client.types()
    keep: set[model.ObjectRef] = set(bundle_plan.keep)
    changes: list[model.Change] = []
    deleted: list[model.ObjectRef] = []
    by_phase: dict[int, list[plan.PruneStep]] = {}
    for step in bundle_plan.prune:
        if step.op is plan.PruneOp.DELETE:
            by_phase.setdefault(plan.phase(step.ref), []).append(step)
        else:
            changes.append(model.Change(step.ref, model.Action.SKIPPED, step.message))

    async def delete(step: plan.PruneStep) -> None:
        ref = step.ref
        rt = resolve(types, ref)
        if rt is None:
            keep.add(ref)
            changes.append(model.Change(ref, model.Action.SKIPPED, kube.no_match_message(ref, types)))
            return
        uid, rv = step.uid, step.resource_version
        if uid is None or rv is None:  # never deleted without preconditions: read its version first
            try:
                read = await read_version(client, rt, ref)
            except errors.ClusterError as e:
                keep.add(ref)
                failed = model.Change(
                    ref, model.Action.FAILED, f"{ref}: not pruned: {e}", retriable=e.retriable
                )
                changes.append(failed)
                return
            if read is None:
                deleted.append(ref)
                changes.append(model.Change(ref, model.Action.DELETED, "already gone"))
                return
            uid, rv = read
        if plan.phase(ref) == 1:
            if types.unavailable:  # what it holds of an unavailable group cannot be listed: unknown
                keep.add(ref)
                broken = ", ".join(sorted(types.unavailable))
                message = f"{ref}: not pruned: its content cannot be listed whole ({broken} unavailable)"
                changes.append(model.Change(ref, model.Action.SKIPPED, message))
                return
            try:
                contents = await _namespace_contents(client, types, ref.name)
            except errors.ClusterError as e:
                keep.add(ref)
                failed = model.Change(
                    ref, model.Action.FAILED, f"{ref}: not pruned: {e}", retriable=e.retriable
                )
                changes.append(failed)
                return
            ok, holding = plan.namespace_prunable(ref.name, contents=contents, pruned=deleted)
            if not ok:
                keep.add(ref)
                names = ", ".join(str(h) for h in holding[:3]) + (" ..." if len(holding) > 3 else "")
                changes.append(
                    model.Change(ref, model.Action.SKIPPED, f"{ref}: not pruned, it holds {names}")
                )
                return
        try:
            gone = await client.delete(
                rt, namespace=ref.namespace or None, name=ref.name, uid=uid, resource_version=rv
            )
        except kube.ConflictError as e:  # the preconditions: someone wrote it since it was read
            keep.add(ref)
            message = (
                f"{ref}: not pruned: changed since it was read (at resourceVersion {rv}); kept in the "
                f"inventory, the next round plans again from a fresh read ({e})"
            )
            changes.append(model.Change(ref, model.Action.FAILED, message, retriable=True))
            return
        except errors.ClusterError as e:
            keep.add(ref)
            failed = model.Change(
                ref, model.Action.FAILED, f"{ref}: delete failed: {e}", retriable=e.retriable
            )
            changes.append(failed)
            return
        deleted.append(ref)
        changes.append(model.Change(ref, model.Action.DELETED, "" if gone else "already gone"))

    for number in sorted(by_phase, reverse=True):
        async with anyio.create_task_group() as tg:
            for step in by_phase[number]:
                tg.start_soon(delete, step)
    # In the plan's order, not the order the answers came in: the same round reports the same way.
    position = {step.ref: i for i, step in enumerate(bundle_plan.prune)}
    changes.sort(key=lambda c: position.get(c.ref, len(position)))
    return model.ChangeSet(tuple(changes)), frozenset(keep)
