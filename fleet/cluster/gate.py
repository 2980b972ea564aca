"""The gate of a round's writes: what a round of one cluster does before each write.

Owns: `Gate`, called before each write of a round: its first call makes sure ``fleet-system`` exists and
records the round's claim in the source's revision record (compare-and-swap over the version the round
read: `apply.RecordRaced` when another controller of the source wrote it meanwhile); every call asks a
replica's fence (`Options.fence`; `apply.NotOwner` once this replica may not write to the cluster), and
`Gate.before_prune` reads the bundle's inventory again right before a prune (`apply.check_fence`: a
newer owner's fence stops it, `apply.Fenced`). `superseded`: whether the record the round read holds a
newer revision of the same source (the round then writes nothing); `left_alone`: which bundles the
controller's rollout holds at an older revision are left as they are because another writer of the source
has already put the cluster at a revision the controller took in after that one (docs/reconcile.md,
"Replicas of one source: the newer revision wins").

Does not: plan, apply or prune (`fleet.cluster.rounds`, `fleet.cluster.apply`), or decide ownership
(`fleet.core.plan`, `fleet.core.fencing`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from fleet.clients import kube
from fleet.cluster import apply, reading, results
from fleet.core import fencing, inventory, model, plan


def superseded(seen: reading.Observed, options: results.Options) -> bool:
    claim = options.claim
    return (
        claim is not None
        and options.yield_to_newer
        and seen.record is not None
        and seen.record.newer_than(claim)
    )


def left_alone(seen: reading.Observed, cplan: plan.ClusterPlan, options: results.Options) -> dict[str, str]:
    """The bundles of `options.held` (held by this controller's rollout at an older revision until it
    reaches the cluster) that another writer of the source has already put at one of the revisions this
    controller took in after that one (its claim's, or one a newer commit superseded) on this cluster,
    with why; the round leaves them as they are (docs/reconcile.md, "Replicas of one source: the newer
    revision wins"). The cluster shows it by its revision record (such a revision written by another
    writer, `inventory.written_by_another`) or by an object of the bundle there carrying such a revision
    in `fleet.dev/revision` (another writer's apply of it)."""
    if options.claim is None or not options.held:
        return {}
    record = seen.record
    out: dict[str, str] = {}
    for b, ahead in sorted(options.held.items()):
        p = cplan.bundles.get(b)
        if p is None or p.outcome is not plan.Outcome.RUN or not ahead:
            continue
        if record is not None and inventory.written_by_another(record, ahead):
            out[b] = record.ahead_message()
            continue
        for ref in (*(s.ref for s in p.steps), *(s.ref for s in p.prune)):
            revision = revision_of(seen.live.get(plan.key(ref)))
            if revision and revision in ahead:
                out[b] = inventory.left_message(
                    revision, f"the live {ref} carries it in {model.ANNOTATION_REVISION}"
                )
                break
    return out


def revision_of(obj: Mapping[str, Any] | None) -> str | None:
    """The `fleet.dev/revision` annotation of an object (None: no object, or none there)."""
    if obj is None:
        return None
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(model.ANNOTATION_REVISION)
    return value if isinstance(value, str) else None


class Gate:
    """Called before each write of a round: the first call makes sure ``fleet-system`` exists and records
    the round's claim in the source's revision record (unless the record already holds its revision),
    over the version read at the start of the round (`apply.RecordRaced` when another controller of the
    source wrote it meanwhile: the round then writes nothing more)."""

    def __init__(self, client: kube.Client, seen: reading.Observed, options: results.Options) -> None:
        self._client = client
        self._seen = seen
        self._options = options
        self._lock = anyio.Lock()
        self._done = False

    def fence(self) -> fencing.Fence | None:
        """The fence of this round's writes now (None: no replicas); `apply.NotOwner` when this replica may
        not write to the cluster any more."""
        if self._options.fence is None:
            return None
        fence = self._options.fence()
        if fence is None:
            raise apply.NotOwner(
                f"cluster {self._client.cluster}: this replica no longer holds the cluster's shard lease "
                "(or has not renewed it within the renew deadline): it writes nothing more here"
            )
        return fence

    async def before_prune(self, bundle: str) -> None:
        """A replica reads the bundle's inventory again right before deleting anything of it: a newer
        owner's fence there stops the prune (`apply.Fenced`)."""
        fence = self.fence()
        if fence is not None:
            try:
                await apply.check_fence(self._client, bundle, instance=self._options.instance, fence=fence)
            except apply.Fenced as e:
                self.fenced(e)
                raise

    def fenced(self, e: apply.Fenced) -> None:
        """Report a fence of a higher epoch of this round's lease (`results.Options.on_fenced`)."""
        if self._options.on_fenced is not None:
            self._options.on_fenced(e.above)

    async def __call__(self) -> None:
        self.fence()  # a replica that may not write any more stops before this write
        if self._done:
            return
        async with self._lock:
            if self._done:
                return
            seen, instance = self._seen, self._options.instance
            await apply.ensure_namespace(
                self._client, model.INVENTORY_NAMESPACE, instance=instance, existing=seen.namespaces
            )
            seen.namespaces.add(model.INVENTORY_NAMESPACE)
            claim = self._options.claim
            if claim is not None and (seen.record is None or seen.record.revision != claim.revision):
                await apply.write_record(
                    self._client, claim, instance=instance, resource_version=seen.record_version
                )
            self._done = True
