"""Inventories: which objects fleet applied for one bundle on one cluster, which source wrote them, and
the revision record of a source on a cluster (pure).

Owns: the shape of the inventory ConfigMap ``<instance>-inventory-<bundle>`` in namespace
``fleet-system`` (docs/reconcile.md), encoding a set of `model.ObjectRef`s into it and decoding it back,
the label selector that finds every inventory of an instance on a cluster, and which inventories are this
source's (`split`). An inventory that cannot be decoded raises `InventoryError`: it is never read as empty
(an unknown inventory must never lead to a prune, and must never be overwritten as if empty).

Also the revision record ``<instance>-revision-<digest of the source>``: the `Claim` (source, revision,
when that revision was first seen, who wrote it) of the newest revision of one source written to the
cluster, and the order of two claims (`Claim.newer_than`), so that an older replica of a controller backs
off instead of fighting a newer one, and whether a claim holds one's own revision written by another writer
(`Claim.by_another`: a bundle one's rollout still holds at an older revision is left as it is there;
docs/reconcile.md, "Replicas of one source: the newer revision wins"). The same claim as every applied
object carries it in the annotation ``fleet.dev/claim`` (`Claim.mark`, read back by `claim_of`; the newest
of several: `newest`): a round's write carries its writer's claim, so the record is written only before a
delete (docs/reconcile.md, "The claim on every object").

Does not: read or write clusters (`apply` does), decide what to prune (`plan`), or work out a source's
identity from a repository location (`source.identity`).

Layout::

    metadata.labels:  fleet.dev/owner=<instance>, fleet.dev/inventory=true
    data.bundle:      <bundle>
    data.objects:     JSON list of [group, version, kind, namespace, name], sorted
    data.source:      the source that wrote it (absent: written by an earlier fleet, adopted by whoever
                      reads it)
    data.fence:       <shard lease>@<epoch> of the replica that wrote it (absent: no replica did);
                      `fleet.core.fencing` judges it

    revision record, metadata.labels: fleet.dev/owner=<instance>, fleet.dev/revision-record=true
    data: source, revision, observedAt, committedAt, writer
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.core import errors, fencing, model

LABEL_INVENTORY = "fleet.dev/inventory"
LABEL_RECORD = "fleet.dev/revision-record"
FORMAT = "fleet.dev/inventory-v1"
RECORD_FORMAT = "fleet.dev/revision-record-v1"


class InventoryError(errors.ClusterError):
    """An inventory ConfigMap exists but cannot be read: its bundle is left alone."""

    retriable = False


@dataclass(frozen=True)
class Inventory:
    bundle: str
    refs: frozenset[model.ObjectRef]
    resource_version: str | None = None  # of the ConfigMap it was read from; None: not on the cluster
    source: str | None = None  # the source that wrote it; None: an earlier fleet wrote it (no source field)
    name: str = ""  # of its ConfigMap
    fence: fencing.Fence | None = None  # of the replica that wrote it; None: no replica did

    def union(self, refs: Iterable[model.ObjectRef]) -> frozenset[model.ObjectRef]:
        return self.refs | frozenset(refs)

    @property
    def where(self) -> str:
        return f"ConfigMap/{model.INVENTORY_NAMESPACE}/{self.name}"


def selector(*, instance: str) -> str:
    """Label selector of every inventory ConfigMap of `instance`."""
    return f"{model.LABEL_OWNER}={instance},{LABEL_INVENTORY}=true"


def encode(
    bundle: str,
    refs: Iterable[model.ObjectRef],
    *,
    instance: str,
    source: str | None = None,
    resource_version: str | None = None,
    fence: fencing.Fence | None = None,
) -> dict[str, Any]:
    """The ConfigMap (an apply configuration) holding `refs` for `bundle`, written by `source` (under
    `fence`, when a replica holding a shard lease writes it).

    With `resource_version`, the apply is refused (409) when the ConfigMap changed since it was read."""
    rows = sorted({(r.group, r.version, r.kind, r.namespace, r.name) for r in refs})
    meta: dict[str, Any] = {
        "name": model.inventory_name(instance=instance, bundle=bundle),
        "namespace": model.INVENTORY_NAMESPACE,
        "labels": {model.LABEL_OWNER: instance, LABEL_INVENTORY: "true"},
        "annotations": {"fleet.dev/format": FORMAT},
    }
    if resource_version:
        meta["resourceVersion"] = resource_version
    data = {"bundle": bundle, "objects": json.dumps([list(r) for r in rows], separators=(",", ":"))}
    if source is not None:
        data["source"] = source
    if fence is not None:
        data["fence"] = str(fence)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def decode(configmap: Mapping[str, Any], *, instance: str) -> Inventory:
    """Read an inventory ConfigMap; raise `InventoryError` naming it when it is not readable."""
    meta = configmap.get("metadata") or {}
    name = str(meta.get("name", ""))
    where = f"ConfigMap/{model.INVENTORY_NAMESPACE}/{name}"
    data = configmap.get("data")
    if not isinstance(data, dict):
        raise InventoryError(f"{where}: inventory without data (unreadable, not empty)")
    bundle = data.get("bundle")
    prefix = f"{instance}-inventory-"
    if not isinstance(bundle, str) or not bundle:
        if not name.startswith(prefix):
            raise InventoryError(f"{where}: inventory without data.bundle")
        bundle = name[len(prefix) :]
    if name != model.inventory_name(instance=instance, bundle=bundle):
        raise InventoryError(f"{where}: inventory names bundle {bundle!r} but is not called after it")
    source = data.get("source")
    if source is not None and (not isinstance(source, str) or not source):
        raise InventoryError(f"{where}: data.source is empty")
    fence = None
    if "fence" in data:
        try:
            fence = fencing.Fence.parse(data["fence"])
        except ValueError as e:
            raise InventoryError(f"{where}: data.fence: {e} (unreadable, never taken as unfenced)") from None
    if "objects" not in data:
        raise InventoryError(f"{where}: inventory without data.objects (unreadable, not empty)")
    raw = data["objects"]
    try:
        rows = json.loads(raw)
    except (TypeError, ValueError):
        raise InventoryError(f"{where}: data.objects is not JSON") from None
    if not isinstance(rows, list):
        raise InventoryError(f"{where}: data.objects is not a list")
    refs = set()
    for row in rows:
        if not (isinstance(row, list) and len(row) == 5 and all(isinstance(x, str) for x in row)):
            raise InventoryError(f"{where}: data.objects holds an entry that is not 5 strings")
        group, version, kind, namespace, obj_name = row
        if not version or not kind or not obj_name:
            raise InventoryError(f"{where}: data.objects holds an entry without version, kind or name")
        refs.add(model.ObjectRef(group, version, kind, namespace, obj_name))
    rv = meta.get("resourceVersion")
    return Inventory(
        bundle=bundle,
        refs=frozenset(refs),
        resource_version=str(rv) if rv else None,
        source=source,
        name=name,
        fence=fence,
    )


def decode_all(
    configmaps: Iterable[Mapping[str, Any]], *, instance: str
) -> tuple[dict[str, Inventory], dict[str, str]]:
    """Inventories by bundle, and errors by bundle for those that cannot be read."""
    found: dict[str, Inventory] = {}
    broken: dict[str, str] = {}
    prefix = f"{instance}-inventory-"
    for cm in configmaps:
        try:
            inv = decode(cm, instance=instance)
        except InventoryError as e:
            name = str((cm.get("metadata") or {}).get("name", ""))
            bundle = name[len(prefix) :] if name.startswith(prefix) else name
            broken[bundle] = str(e)
            continue
        found[inv.bundle] = inv
    return found, broken


def split(
    inventories: Mapping[str, Inventory], *, source: str | None
) -> tuple[dict[str, Inventory], dict[str, Inventory]]:
    """(this source's inventories, those another source wrote). An inventory without a source field was
    written by an earlier fleet: it is adopted as this source's. `source` None (a caller that names no
    source): every inventory is taken as its own, as earlier fleets did."""
    ours: dict[str, Inventory] = {}
    foreign: dict[str, Inventory] = {}
    for b, inv in inventories.items():
        if source is None or inv.source is None or inv.source == source:
            ours[b] = inv
        else:
            foreign[b] = inv
    return ours, foreign


def same(refs: Iterable[model.ObjectRef], inventory: Inventory | None) -> bool:
    """Whether writing `refs` would change nothing."""
    wanted = frozenset(refs)
    if inventory is None or inventory.resource_version is None:
        return False
    return wanted == inventory.refs


# ----------------------------------------------------------------------------------------------------------
# Revision records: which revision of a source last wrote to a cluster.


@functools.lru_cache(maxsize=1024)  # a round compares the claim of every object it read: few distinct texts
def _instant(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def now_rfc3339() -> str:
    """The current time as RFC 3339 UTC with milliseconds (what `Claim.observed_at` holds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Claim:
    """Who writes to a cluster: a source, at a revision, first seen by its writer at `observed_at`.

    `revision` is "" for a work tree. `observed_at` (RFC 3339) orders two revisions of one source: the
    revision whose branch position was seen later is the newer one (a revert commit, or a force-push back
    to an older commit, is seen later than what it replaces). `fleet sync` claims the time it runs.
    `committed_at` and `writer` ("fleet serve on HOST", "fleet sync on HOST") are for people."""

    source: str
    revision: str
    observed_at: str
    committed_at: str | None = None
    writer: str = ""

    def newer_than(self, other: Claim) -> bool:
        """Whether this claim (found on a cluster) is of a newer revision than `other` (one's own)."""
        if self.revision == other.revision:
            return False
        mine, theirs = _instant(self.observed_at), _instant(other.observed_at)
        if mine != theirs:
            return mine > theirs
        return self.revision > other.revision  # the same instant: any order both sides agree on

    def by_another(self, mine: Claim) -> bool:
        """Whether this claim (found on a cluster) holds `mine`'s revision written by another writer: the
        same revision first seen at another instant (another replica of the source, or a person's `fleet
        sync`). A controller's own claim keeps its instant across restarts; its writer string (host-based,
        the same for two processes on one host) does not tell writers apart, so it is not compared."""
        return self.revision == mine.revision and _instant(self.observed_at) != _instant(mine.observed_at)

    def mark(self) -> str:
        """This claim as the `fleet.dev/claim` annotation every object a round applies carries:
        ``<observedAt> <revision or -> <source digest> <writer>`` (`claim_of` reads it back)."""
        return _mark(self.observed_at, self.revision, self.source, self.writer)

    def ahead_message(self) -> str:
        """What a controller reports for a bundle its rollout still holds at an older revision on a
        cluster this claim (`by_another`) shows already written at the controller's newest revision."""
        return left_message(
            self.revision,
            f"{self.writer or 'another controller'}, revision seen at {self.observed_at}",
        )

    def superseded_message(self) -> str:
        """What a controller holding an older revision reports when it finds this claim."""
        revision = self.revision or "(a work tree)"
        who = self.writer or "another controller"
        return (
            f"superseded by revision {revision} written by another controller ({who}, revision seen at "
            f"{self.observed_at}): this controller holds an older revision of the same source and writes "
            "nothing until it catches up"
        )


@functools.lru_cache(maxsize=256)
def _digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:10]


@functools.lru_cache(maxsize=64)
def _mark(observed_at: str, revision: str, source: str, writer: str) -> str:
    return f"{observed_at} {revision or '-'} {_digest(source)} {writer}".rstrip()


@functools.lru_cache(maxsize=4096)
def _parse_mark(text: str, source: str) -> Claim | None:
    parts = text.split(" ", 3)
    if len(parts) < 3 or parts[2] != _digest(source):
        return None
    try:
        _instant(parts[0])
    except ValueError:
        return None
    revision = "" if parts[1] == "-" else parts[1]
    return Claim(source, revision, parts[0], writer=parts[3] if len(parts) > 3 else "")


def claim_of(obj: Mapping[str, Any] | None, *, source: str) -> Claim | None:
    """The claim an object carries in `fleet.dev/claim` (`Claim.mark`) when it is `source`'s; None when
    it carries none, one of another source, or one that cannot be read (a person's edit): such an object
    is never taken as written by a newer revision (unknown is never newer)."""
    if obj is None:
        return None
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(model.ANNOTATION_CLAIM)
    if not isinstance(text, str):
        return None
    return _parse_mark(text, source)


def marked(obj: Mapping[str, Any], claim: Claim | None) -> Mapping[str, Any]:
    """`obj` carrying `claim` in `fleet.dev/claim` (a copy of its top level and metadata; `obj` itself
    unchanged). None: `obj` as it is."""
    if claim is None:
        return obj
    meta = dict(obj.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), model.ANNOTATION_CLAIM: claim.mark()}
    return {**obj, "metadata": meta}


def newest(claims: Iterable[Claim | None], *, than: Claim) -> Claim | None:
    """The claim of `claims` seen latest (the cluster's newest: its instant, then its revision, as
    `Claim.newer_than` orders them), when it is of a newer revision than `than`; None when there is none
    or it holds `than`'s revision. Not merely any claim newer than `than`: an object keeps the claim of
    the commit that last changed it, so a cluster carries claims of revisions its newest claim has already
    superseded, and they say nothing about who is ahead now (the record, when every round wrote it, held
    only the newest)."""
    out: Claim | None = None
    at: tuple[dt.datetime, str] | None = None
    for c in claims:
        if c is None:
            continue
        key = (_instant(c.observed_at), c.revision)
        if at is None or key > at:
            out, at = c, key
    return out if out is not None and out.newer_than(than) else None


def written_by_another(record: Claim, own: Mapping[str, str]) -> bool:
    """Whether `record` (found on a cluster) holds one of the revisions of `own` (revision -> when this
    controller's own claim of it was first seen) written by another writer: seen at another instant
    (`Claim.by_another` for each of one's own revisions)."""
    at = own.get(record.revision)
    return at is not None and _instant(record.observed_at) != _instant(at)


def left_message(revision: str, who: str) -> str:
    """Why a bundle held at an older revision is left as it is on a cluster that another writer of the
    source (`who`) has already put at `revision`, a revision this controller took in after that one."""
    return (
        f"left as it is: already at revision {revision or '(a work tree)'}, written by another writer of "
        f"this source ({who}); this controller's rollout has not reached this cluster yet and writes "
        "nothing older over it"
    )


def record_name(*, instance: str, source: str) -> str:
    """Name of the revision record of `source` (a ConfigMap in ``fleet-system``)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:10]
    return f"{instance}-revision-{digest}"


def encode_record(claim: Claim, *, instance: str, resource_version: str | None = None) -> dict[str, Any]:
    """The revision record holding `claim`; with `resource_version`, written only over that version."""
    meta: dict[str, Any] = {
        "name": record_name(instance=instance, source=claim.source),
        "namespace": model.INVENTORY_NAMESPACE,
        "labels": {model.LABEL_OWNER: instance, LABEL_RECORD: "true"},
        "annotations": {"fleet.dev/format": RECORD_FORMAT},
    }
    if resource_version:
        meta["resourceVersion"] = resource_version
    data = {
        "source": claim.source,
        "revision": claim.revision,
        "observedAt": claim.observed_at,
        "writer": claim.writer,
    }
    if claim.committed_at:
        data["committedAt"] = claim.committed_at
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def decode_record(configmap: Mapping[str, Any], *, source: str) -> Claim:
    """Read a revision record; raise `InventoryError` naming it when it is not readable (or names another
    source: a digest collision is never read as ours)."""
    name = str((configmap.get("metadata") or {}).get("name", ""))
    where = f"ConfigMap/{model.INVENTORY_NAMESPACE}/{name}"
    data = configmap.get("data") or {}
    found = data.get("source")
    if found != source:
        raise InventoryError(f"{where}: revision record of source {found!r}, expected {source!r}")
    revision, observed = data.get("revision"), data.get("observedAt")
    if not isinstance(revision, str) or not isinstance(observed, str):
        raise InventoryError(f"{where}: revision record without revision or observedAt")
    try:
        _instant(observed)
    except ValueError:
        raise InventoryError(f"{where}: observedAt {observed!r} is not an RFC 3339 time") from None
    committed = data.get("committedAt")
    return Claim(
        source=source,
        revision=revision,
        observed_at=observed,
        committed_at=committed if isinstance(committed, str) else None,
        writer=str(data.get("writer") or ""),
    )
