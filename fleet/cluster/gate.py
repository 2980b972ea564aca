"""The gate of a round's writes: what a round of one cluster does before each write.

Owns: `Gate`, called before each write of a round: its first call makes sure ``fleet-system`` exists;
`Gate.before_delete`, before the round's first delete (or object dropped from fleet), records the
round's claim in the source's revision record (compare-and-swap over the version the round read:
`apply.RecordRaced` when another controller of the source wrote it meanwhile); the round's other writes
carry the claim themselves (`fleet.dev/claim` on every applied object: docs/reconcile.md, "The claim on
every object"), so a commit that changes objects costs no record write. Every call asks a replica's fence
(`Options.fence`; `apply.NotOwner` once this replica may not write to the cluster any more), and
`Gate.before_prune` reads the bundle's inventory again right before a prune (`apply.check_fence`: a newer
owner's fence stops it, `apply.Fenced`). `superseded`: the claim of a newer revision of the same source the
cluster shows, in its record or on an object the round read (the round then writes nothing); `left_alone`:
which bundles the controller's rollout holds at an older revision are left as they are because another
writer of the source has already put the cluster at a revision the controller took in after that one
(`ahead_on` judges one object; docs/reconcile.md, "Replicas of one source: the newer revision wins").

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


def superseded(seen: reading.Observed, options: results.Options) -> inventory.Claim | None:
    """The cluster's newest claim of the round's source, when it is of a newer revision (None: none, or
    the newest holds the round's revision, so the round may write): the claim seen latest among its
    revision record's and those the objects the round read carry in `fleet.dev/claim` (`inventory.newest`:
    claims of older revisions left on unchanged objects are not another writer ahead). The round then
    writes nothing."""
    claim = options.claim
    if claim is None or not options.yield_to_newer:
        return None
    own = claim.mark()
    found: list[inventory.Claim | None] = [seen.record]
    for obj in seen.live.values():
        text = ((obj.get("metadata") or {}).get("annotations") or {}).get(model.ANNOTATION_CLAIM)
        if text is not None and text != own:  # most objects: the round's own claim, or none
            found.append(inventory.claim_of(obj, source=claim.source))
    return inventory.newest(found, than=claim)


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
            why = ahead_on(seen.live.get(plan.key(ref)), ahead, source=options.claim.source)
            if why is not None:
                out[b] = inventory.left_message(why[0], f"the live {ref} carries it in {why[1]}")
                break
    return out


def ahead_on(
    obj: Mapping[str, Any] | None, ahead: Mapping[str, str], *, source: str
) -> tuple[str, str] | None:
    """(revision, annotation) when the live `obj` shows one of the revisions of `ahead` (revision -> the
    instant this controller's own claim of it was seen) written by another writer of the source: its
    `fleet.dev/claim` holds such a revision seen at another instant, or its `fleet.dev/revision` such a
    revision. None: it does not."""
    found = inventory.claim_of(obj, source=source)
    if found is not None and inventory.written_by_another(found, ahead):
        return found.revision, model.ANNOTATION_CLAIM
    revision = revision_of(obj)
    if revision and revision in ahead:
        return revision, model.ANNOTATION_REVISION
    return None


def revision_of(obj: Mapping[str, Any] | None) -> str | None:
    """The `fleet.dev/revision` annotation of an object (None: no object, or none there)."""
    if obj is None:
        return None
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(model.ANNOTATION_REVISION)
    return value if isinstance(value, str) else None


class Gate:
    """Called before each write of a round: the first call makes sure ``fleet-system`` exists (and, for a
    person's `fleet sync` over a record of another revision, or its `fleet sync --rev`, records its claim); `before_delete` records the round's
    claim in the source's revision record (unless the record already holds its revision), over the
    version read at the start of the round (`apply.RecordRaced` when another controller of the source
    wrote it meanwhile: the round then writes nothing more)."""

    def __init__(self, client: kube.Client, seen: reading.Observed, options: results.Options) -> None:
        self._client = client
        self._seen = seen
        self._options = options
        self._lock = anyio.Lock()
        self._done = False
        self._recorded = False

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
            claim, record = self._options.claim, seen.record
            if claim is not None and not self._options.yield_to_newer:
                if (record is not None and record.revision != claim.revision) or (
                    self._options.record_first and (record is None or record.by_another(claim))
                ):  # a person's `fleet sync` over a record of another revision: the record says who wrote
                    # last, as its objects do (a rollback's record left behind would keep the controller
                    # superseded after a sync at its revision handed the cluster back); `fleet sync --rev`
                    # always (an object it wrote that someone deletes takes its claim along)
                    await self._record(claim)
            self._done = True

    async def _record(self, claim: inventory.Claim) -> None:
        await apply.write_record(
            self._client, claim, instance=self._options.instance, resource_version=self._seen.record_version
        )
        self._recorded = True

    async def before_delete(self) -> None:
        """Before the round's first delete (a prune, an inventory deleted): the round's claim in the
        source's revision record (unless it already holds its revision), over the version the round read
        (`apply.RecordRaced` when another controller of the source wrote it meanwhile: the round then
        deletes nothing). A delete leaves no object to carry the claim, so the record carries it: a
        controller at an older revision must not put back what a newer one removed."""
        await self()
        if self._recorded:
            return
        async with self._lock:
            if self._recorded:
                return
            seen, claim = self._seen, self._options.claim
            if claim is not None and (seen.record is None or seen.record.revision != claim.revision):
                await self._record(claim)
            self._recorded = True
