"""Drift repair: server-side apply of the given objects only, after reading each live one.

Owns: `repair` / `repair_objects` (field manager ``fleet``): forced only when the live owner label is this
instance; a gone object is created (no other manager can hold its fields, so no force is needed); an
object without our owner label or owned by another instance is never written (CONFLICT). Secret values
never reach a message. Given the controller's `inventory.Claim`, it first reads the source's revision
record (one GET per batch): a newer revision of the same source there (another replica ahead of this
one) makes every object of the batch SKIPPED, never written back to the older revision; so does such a
claim on the live object (`fleet.dev/claim`), for that object; every object written carries the claim.
The objects of bundles held back at an older revision (`held`) are SKIPPED where the record, or the live
object's claim or `fleet.dev/revision`, shows a revision the controller took in after the one the bundle
is held at (its claim's, or one a newer commit superseded) written by another writer (docs/reconcile.md,
"Replicas of one source: the newer revision wins"). Given `may_write` (a replica's ownership of the
cluster), it asks it right before each write: False makes the object SKIPPED, not written
(docs/scaling.md, "Fenced writes").
Does not: decide what is drift (`fleet.core.drift`, pure), watch (`fleet.cluster.watch`), inventories,
prune or full reconciles (`fleet.cluster.reconcile`: a repair that fails, e.g. because a namespace is
gone, is for the engine's next full round).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from fleet.clients import kube
from fleet.cluster import apply, gate
from fleet.core import drift, errors, inventory, model, plan

# ----------------------------------------------------------------------------------------------------------
# Repair (I/O)


@dataclass
class Repaired:
    """What `repair_objects` did: per-object changes, and the objects as the server answered."""

    changes: model.ChangeSet = field(default_factory=model.ChangeSet)
    objects: dict[plan.Key, Mapping[str, Any]] = field(default_factory=dict)


async def _repair_one(
    client: kube.Client,
    types: kube.TypeTable,
    ref: model.ObjectRef,
    obj: Mapping[str, Any],
    *,
    instance: str,
    out: dict[plan.Key, Mapping[str, Any]],
    may_write: Callable[[], bool] | None = None,
    ahead: Mapping[str, str] | None = None,
    claim: inventory.Claim | None = None,
    record: inventory.Claim | None = None,
) -> model.Change:
    def refused() -> model.Change | None:
        """Asked right before each write (a replica: docs/scaling.md, "Fencing"): a replica that may not
        write to the cluster now (its shard's lease lost, or not renewed within the renew deadline, e.g.
        after a stall) writes nothing, whatever its cancel scopes have not caught up with yet."""
        if may_write is None or may_write():
            return None
        return model.Change(
            ref, model.Action.SKIPPED, f"{ref}: not repaired: this replica may not write to the cluster now"
        )

    if drift.labels_of(obj).get(model.LABEL_OWNER) != instance:
        return model.Change(
            ref, model.Action.FAILED, f"{ref}: not repaired: the desired object lacks fleet's owner label"
        )
    rt = apply.resolve(types, ref)
    if rt is None:
        return model.Change(ref, model.Action.FAILED, kube.no_match_message(ref, types))
    secrets = apply.secret_values(obj)
    namespace = ref.namespace or None
    try:
        live = await client.get(rt, namespace=namespace, name=ref.name)
        if live is None:
            if (stop := refused()) is not None:
                return stop
            doc, _created = await client.apply(rt, inventory.marked(obj, claim), force=False, secrets=secrets)
            out[plan.key(ref)] = doc
            return model.Change(ref, model.Action.CREATED, f"{ref}: recreated after it was deleted")
        meta = live.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return model.Change(ref, model.Action.SKIPPED, f"{ref}: being deleted; recreated once it is gone")
        owner = drift.labels_of(live).get(model.LABEL_OWNER)
        if owner != instance:
            why = f"owned by fleet instance {owner!r}" if owner else f"no longer labelled {model.LABEL_OWNER}"
            return model.Change(ref, model.Action.CONFLICT, f"{ref}: {why}; not written")
        if claim is not None:
            # another writer at a newer revision: the live claim, unless the record holds a later one of
            # this revision (claims of older commits stay on objects they did not change since)
            newer = inventory.newest((inventory.claim_of(live, source=claim.source), record), than=claim)
            if newer is not None:
                why = f"{ref}: not repaired: {newer.superseded_message()}"
                return model.Change(ref, model.Action.SKIPPED, why)
            found = gate.ahead_on(live, ahead, source=claim.source) if ahead else None
            if found is not None:  # held back, and another writer is at a newer revision of ours
                why = inventory.left_message(found[0], f"the live object carries it in {found[1]}")
                return model.Change(ref, model.Action.SKIPPED, f"{ref}: not repaired: {why}")
        if (stop := refused()) is not None:
            return stop
        doc, _created = await client.apply(rt, inventory.marked(obj, claim), force=True, secrets=secrets)
    except kube.NotOwner:  # the client's own check, right before sending (`kube.Transport.may_write`)
        return model.Change(
            ref, model.Action.SKIPPED, f"{ref}: not repaired: this replica may not write to the cluster now"
        )
    except kube.ConflictError as e:
        return model.Change(ref, model.Action.CONFLICT, str(e))
    except errors.ClusterError as e:
        return model.Change(ref, model.Action.FAILED, str(e))
    out[plan.key(ref)] = doc
    before = meta.get("resourceVersion")
    after = (doc.get("metadata") or {}).get("resourceVersion")
    if before is not None and before == after:
        return model.Change(ref, model.Action.UNCHANGED, f"{ref}: already as desired")
    return model.Change(ref, model.Action.CONFIGURED, f"{ref}: drift repaired")


async def repair_objects(
    client: kube.Client,
    objects: Mapping[model.ObjectRef, Mapping[str, Any]],
    *,
    instance: str,
    concurrency: int = 8,
    claim: inventory.Claim | None = None,
    held: Mapping[str, Mapping[str, str]] | None = None,
    may_write: Callable[[], bool] | None = None,
) -> Repaired:
    """`repair`, also returning the objects as the server answered (to learn their normalised form).
    The objects of `held` bundles (held back at an older revision until the controller's rollout reaches
    the cluster; each with the revisions the controller took in after it and its own claims' instants)
    are left as they are where another writer of the source is already at one of those revisions: the
    revision record holds it written by another writer, or the live object carries it in
    `fleet.dev/revision`."""
    result = Repaired()
    if not objects:
        return result
    try:
        types = await client.types()
        record = None
        if claim is not None:
            record, _ = await apply.read_record(client, instance=instance, source=claim.source)
    except errors.ClusterError as e:
        failed = tuple(model.Change(ref, model.Action.FAILED, f"{ref}: {e}") for ref in objects)
        result.changes = model.ChangeSet(failed)
        return result
    if record is not None and claim is not None and record.newer_than(claim):
        why = record.superseded_message()
        skipped = tuple(
            model.Change(ref, model.Action.SKIPPED, f"{ref}: not repaired: {why}") for ref in objects
        )
        result.changes = model.ChangeSet(skipped)
        return result
    order = list(objects.items())
    changes: list[model.Change | None] = [None] * len(order)
    limiter = anyio.CapacityLimiter(max(1, concurrency))
    back = held if held and claim is not None else {}

    async def one(i: int, ref: model.ObjectRef, obj: Mapping[str, Any]) -> None:
        ahead = back.get(drift.labels_of(obj).get(model.LABEL_BUNDLE) or "") or {}
        if ahead and record is not None and inventory.written_by_another(record, ahead):
            why = f"{ref}: not repaired: {record.ahead_message()}"
            changes[i] = model.Change(ref, model.Action.SKIPPED, why)
            return
        async with limiter:
            changes[i] = await _repair_one(
                client,
                types,
                ref,
                obj,
                instance=instance,
                out=result.objects,
                may_write=may_write,
                ahead=ahead,
                claim=claim,
                record=record,
            )

    async with anyio.create_task_group() as tg:
        for i, (ref, obj) in enumerate(order):
            tg.start_soon(one, i, ref, obj)
    result.changes = model.ChangeSet(tuple(c for c in changes if c is not None))
    return result


async def repair(
    client: kube.Client, objects: Mapping[model.ObjectRef, Mapping[str, Any]], *, instance: str
) -> model.ChangeSet:
    """Server-side apply of `objects` only (ref -> the object as fleet applies it, see
    `desired_objects`); never writes an object that is not labelled as this instance's."""
    return (await repair_objects(client, objects, instance=instance)).changes
