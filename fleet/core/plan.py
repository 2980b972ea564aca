"""Deciding what to do on one cluster (pure): desired vs live vs inventory -> actions.

Owns the ownership and pruning rules of docs/reconcile.md as pure functions over data:

- per desired object: create (absent), configure (ours and drifted or changed; forced), unchanged (ours
  and already as desired: no request at all), adopt (present without our owner label, and the manifest or
  the bundle asks for adoption; forced), conflict (present without our owner label and no adoption, owned
  by another fleet instance, or declared by two bundles on the cluster): never written;
- per inventory entry no longer desired: delete only when the live object still carries our owner label
  and this bundle's label and is not annotated ``fleet.dev/prune: disabled``; forget it when it is gone or
  no longer ours; keep it in the inventory when its state is unknown (kind not served, list failed);
- per bundle: refused when it renders to nothing while its inventory is not empty (unless allowEmpty),
  suspended, failed (render/placement error: no apply and no prune), or a prune of a bundle that is no
  longer placed here (removed from the repo, or the cluster stopped matching);
- several sources under one instance: an inventory another source wrote (``foreign``) is never pruned
  from nor rewritten; its bundle is a conflict here (whether this source places it or not), an object it
  lists (or one labelled for its bundle) is a conflict for this source's bundles, and an entry of this
  source's inventories that it lists too is kept, never deleted;
- apply order (CRDs, Namespaces, the rest; render's order within each), prune order (the reverse), and
  waves of bundles by ``dependsOn``.

"Is the live object already as desired?" is `matches`: every field fleet sets has that value live
(server defaults and fields of other managers are ignored; Secret ``stringData`` is compared with
``data``), and the live ``fleet.dev/hash`` annotation equals the hash of the desired object, so a field
removed from a manifest is noticed too. The revision annotation is not part of either: a commit that
does not change an object's content does not touch it.

Does not: talk to clusters (`apply` executes plans), or wait for health (`reconcile`).
"""

from __future__ import annotations

import enum
import hashlib
import json
import weakref
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.core import inventory as inventory_mod
from fleet.core import model, secrets

ANNOTATION_HASH = "fleet.dev/hash"
ANNOTATION_BUNDLE_NAMESPACE = "fleet.dev/bundle-namespace"
PRUNE_DISABLED = "disabled"
CRD_GROUP = "apiextensions.k8s.io"

Key = tuple[str, str, str, str]  # (group, kind, namespace, name): an object whatever version it is read at


def key(ref: model.ObjectRef) -> Key:
    return (ref.group, ref.kind, ref.namespace, ref.name)


def key_of(obj: Mapping[str, Any]) -> Key:
    return key(model.ObjectRef.of(obj))


class Op(enum.StrEnum):
    CREATE = "create"
    CONFIGURE = "configure"
    ADOPT = "adopt"
    UNCHANGED = "unchanged"
    CONFLICT = "conflict"


class PruneOp(enum.StrEnum):
    DELETE = "delete"  # delete it
    FORGET = "forget"  # drop it from the inventory, leave the cluster alone
    KEEP = "keep"  # state unknown: leave it on the cluster and in the inventory


class Outcome(enum.StrEnum):
    RUN = "run"  # apply (and prune when everything applied)
    SUSPENDED = "suspended"
    FAILED = "failed"  # render/placement/inventory error: nothing written, nothing pruned
    REFUSED = "refused"  # renders to nothing while its inventory is not empty
    REMOVED = "removed"  # no longer placed here: prune everything it left
    CONFLICT = "conflict"  # its inventory here was written by another source: nothing written or pruned


@dataclass(frozen=True)
class ObjectStep:
    ref: model.ObjectRef
    op: Op
    obj: Mapping[str, Any]  # what to apply: the desired object with fleet's marks and hash
    force: bool = False
    message: str = ""


@dataclass(frozen=True)
class PruneStep:
    ref: model.ObjectRef
    op: PruneOp
    message: str = ""
    # For DELETE: the object as the plan read it (uid, resourceVersion), sent as the delete's
    # preconditions so that it deletes nothing when anyone wrote the object since (docs/reconcile.md).
    uid: str | None = None
    resource_version: str | None = None


@dataclass(frozen=True)
class Target:
    """What the repository wants of one bundle on one cluster (input to `plan_cluster`).

    `desired` None with `error` set: the pair failed to place or render (nothing applied or pruned).
    """

    bundle: str
    desired: model.DesiredSet | None = None
    error: str | None = None
    suspended: bool = False
    prune: bool = True
    allow_empty: bool = False
    adopt: bool = False
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class BundlePlan:
    bundle: str
    outcome: Outcome
    steps: tuple[ObjectStep, ...] = ()  # in apply order
    prune: tuple[PruneStep, ...] = ()  # in delete order
    inventory_before: frozenset[model.ObjectRef] = frozenset()  # written before any apply
    keep: frozenset[model.ObjectRef] = frozenset()  # stay in the inventory after a successful round
    namespace: str | None = None  # bundle namespace to create when missing (not owned)
    depends_on: tuple[str, ...] = ()
    message: str = ""
    prune_enabled: bool = True

    @property
    def desired_refs(self) -> frozenset[model.ObjectRef]:
        return frozenset(s.ref for s in self.steps if s.op is not Op.CONFLICT)

    @property
    def writes(self) -> tuple[ObjectStep, ...]:
        return tuple(s for s in self.steps if s.op in (Op.CREATE, Op.CONFIGURE, Op.ADOPT))

    @property
    def conflicts(self) -> tuple[ObjectStep, ...]:
        return tuple(s for s in self.steps if s.op is Op.CONFLICT)


@dataclass(frozen=True)
class ClusterPlan:
    bundles: Mapping[str, BundlePlan]
    waves: tuple[tuple[str, ...], ...] = ()  # bundle names by dependsOn, each wave after the previous
    errors: Mapping[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# Comparing


def object_hash(obj: Mapping[str, Any]) -> str:
    """Hash of an object's content, without fleet's revision and hash annotations."""
    meta = dict(obj.get("metadata") or {})
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k not in (model.ANNOTATION_REVISION, model.ANNOTATION_CLAIM, ANNOTATION_HASH)
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    body = {**obj, "metadata": meta}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:20]


def _equal_scalar(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return bool(a == b)


def _subset(want: Any, have: Any) -> bool:
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return False
        for k, v in want.items():
            if v is None:
                continue
            if k not in have or not _subset(v, have[k]):
                return False
        return True
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return False
        return all(_subset(w, h) for w, h in zip(want, have, strict=True))
    return _equal_scalar(want, have)


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The desired object as it should read back: marks that do not decide writes dropped, Secret
    `stringData` folded into `data` as the API server does."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(model.ANNOTATION_REVISION, None)
    annotations.pop(model.ANNOTATION_CLAIM, None)
    meta["annotations"] = annotations
    out["metadata"] = meta
    folded = secrets.fold_string_data(out)
    return out if folded is out else dict(folded)


def matches(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """Whether `live` already holds `desired` (see the module docstring)."""
    want_hash = ((desired.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_HASH)
    have_hash = ((live.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_HASH)
    if want_hash is not None and want_hash != have_hash:
        return False
    return _subset(_comparable(desired), live)


def marked(obj: Mapping[str, Any], *, bundle: str, instance: str) -> dict[str, Any]:
    """`obj` with fleet's labels and the content hash annotation (the revision annotation is render's)."""
    meta = dict(obj.get("metadata") or {})
    labels = dict(meta.get("labels") or {})
    labels[model.LABEL_BUNDLE] = bundle
    labels[model.LABEL_OWNER] = instance
    meta["labels"] = labels
    out = {**obj, "metadata": meta}
    annotations = dict(meta.get("annotations") or {})
    annotations[ANNOTATION_HASH] = object_hash(out)
    meta["annotations"] = annotations
    return out


class _Marks:
    """`marked` of one tuple of desired objects, per (bundle, instance). It holds the tuple, so the tuple's
    id, its key in `_SHARED`, stays its own for as long as the marks are kept."""

    __slots__ = ("__weakref__", "by_owner", "objects")

    def __init__(self, objects: tuple[Mapping[str, Any], ...]) -> None:
        self.objects = objects
        self.by_owner: dict[tuple[str, str], tuple[dict[str, Any], ...]] = {}


# The marks of every objects tuple some live DesiredSet holds: clusters of one variant share one render's
# objects (`fleet.core.render.fleetwide`), each with its own DesiredSet. An entry goes when the last
# DesiredSet holding its marks does.
_SHARED: weakref.WeakValueDictionary[int, _Marks] = weakref.WeakValueDictionary()


def marked_objects(desired: model.DesiredSet, *, bundle: str, instance: str) -> tuple[dict[str, Any], ...]:
    """`marked` of each of `desired`'s objects, in order, made once per tuple of objects: once for all the
    clusters that share one render (a cold sync of 50 clusters hashed each object 50 times), and once per
    DesiredSet (a pair keeps its DesiredSet across revisions while what it renders does not change, and
    every round asks for it twice: drift's desired objects and the plan). Shared by those callers: not to
    be changed."""
    marks: _Marks | None = desired.__dict__.get("_marks")
    if marks is None:
        marks = _SHARED.get(id(desired.objects))
        if marks is None or marks.objects is not desired.objects:
            marks = _SHARED[id(desired.objects)] = _Marks(desired.objects)
        desired.__dict__["_marks"] = marks
    done = marks.by_owner.get((bundle, instance))
    if done is None:
        done = marks.by_owner[(bundle, instance)] = tuple(
            marked(o, bundle=bundle, instance=instance) for o in desired.objects
        )
    return done


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def phase(ref: model.ObjectRef) -> int:
    """Apply phase: 0 CRDs, 1 Namespaces, 2 the rest."""
    if ref.group == CRD_GROUP and ref.kind == "CustomResourceDefinition":
        return 0
    if ref.group == "" and ref.kind == "Namespace":
        return 1
    return 2


def apply_order(objects: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(objects, key=lambda o: phase(model.ObjectRef.of(o)))  # stable: render's order kept


def prune_order(refs: Iterable[model.ObjectRef]) -> list[model.ObjectRef]:
    return sorted(refs, key=lambda r: (-phase(r), r.group, r.kind, r.namespace, r.name))


def crd_kinds(objects: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(group, kind) defined by the CustomResourceDefinitions among `objects`."""
    out = set()
    for obj in objects:
        ref = model.ObjectRef.of(obj)
        if phase(ref) == 0:
            spec = obj.get("spec") or {}
            kind = (spec.get("names") or {}).get("kind")
            if spec.get("group") and kind:
                out.add((str(spec["group"]), str(kind)))
    return out


# ----------------------------------------------------------------------------------------------------------
# Planning


def _decide(
    obj: Mapping[str, Any],
    want: dict[str, Any],
    *,
    target: Target,
    instance: str,
    live: Mapping[Key, Mapping[str, Any]],
    claims: Mapping[Key, tuple[str, ...]],
    foreign: Mapping[Key, str],
) -> ObjectStep:
    ref = model.ObjectRef.of(obj)
    k = key(ref)
    others = [b for b in claims.get(k, ()) if b != target.bundle]
    if others:
        names = ", ".join(sorted({target.bundle, *others}))
        return ObjectStep(ref, Op.CONFLICT, want, message=f"{ref}: declared by several bundles ({names})")
    if k in foreign:
        return ObjectStep(ref, Op.CONFLICT, want, message=f"{ref}: conflict: {foreign[k]}; not written")
    current = live.get(k)
    if current is None:
        return ObjectStep(ref, Op.CREATE, want)
    owner = _labels(current).get(model.LABEL_OWNER)
    if owner == instance:
        moved = _labels(current).get(model.LABEL_BUNDLE)
        if moved and moved != target.bundle:
            return ObjectStep(
                ref, Op.CONFIGURE, want, force=True, message=f"{ref}: moved from bundle {moved}"
            )
        if matches(want, current):
            return ObjectStep(ref, Op.UNCHANGED, want)
        return ObjectStep(ref, Op.CONFIGURE, want, force=True)
    if owner:
        return ObjectStep(
            ref, Op.CONFLICT, want, message=f"{ref}: owned by fleet instance {owner!r}; not written"
        )
    adopt = target.adopt or str(_annotations(obj).get(model.ANNOTATION_ADOPT, "")).lower() == "true"
    if adopt:
        return ObjectStep(ref, Op.ADOPT, want, force=True, message=f"{ref}: adopted")
    return ObjectStep(
        ref,
        Op.CONFLICT,
        want,
        message=(
            f"{ref}: exists and is not managed by fleet; not written "
            f'(annotate it {model.ANNOTATION_ADOPT}: "true" or set spec.adopt to take it over)'
        ),
    )


def _prune_steps(
    inv: inventory_mod.Inventory | None,
    *,
    bundle: str,
    instance: str,
    desired_keys: set[Key],
    elsewhere: set[Key],
    live: Mapping[Key, Mapping[str, Any]],
    known: set[tuple[str, str]],
    prune_enabled: bool,
    foreign: Mapping[Key, str],
) -> tuple[PruneStep, ...]:
    if inv is None:
        return ()
    steps = []
    for ref in prune_order(inv.refs):
        k = key(ref)
        if k in desired_keys:
            continue
        if k in foreign:
            steps.append(PruneStep(ref, PruneOp.KEEP, f"{ref}: {foreign[k]}; not deleted"))
            continue
        if k in elsewhere:
            steps.append(PruneStep(ref, PruneOp.FORGET, f"{ref}: moved to another bundle"))
            continue
        if (ref.group, ref.kind) not in known:
            steps.append(PruneStep(ref, PruneOp.KEEP, f"{ref}: kind not served or not listed; kept"))
            continue
        current = live.get(k)
        if current is None:
            steps.append(PruneStep(ref, PruneOp.FORGET, f"{ref}: already gone"))
            continue
        labels = _labels(current)
        if labels.get(model.LABEL_OWNER) != instance or labels.get(model.LABEL_BUNDLE) != bundle:
            steps.append(PruneStep(ref, PruneOp.FORGET, f"{ref}: no longer labelled as ours; left alone"))
            continue
        if _annotations(current).get(model.ANNOTATION_PRUNE) == PRUNE_DISABLED:
            steps.append(
                PruneStep(ref, PruneOp.FORGET, f"{ref}: {model.ANNOTATION_PRUNE}: disabled; left alone")
            )
            continue
        if not prune_enabled:
            steps.append(PruneStep(ref, PruneOp.FORGET, f"{ref}: bundle has prune: false; left alone"))
            continue
        meta = current.get("metadata") or {}
        uid, rv = meta.get("uid"), meta.get("resourceVersion")
        steps.append(
            PruneStep(
                ref,
                PruneOp.DELETE,
                uid=str(uid) if uid else None,
                resource_version=str(rv) if rv else None,
            )
        )
    return tuple(steps)


def _waves(targets: Mapping[str, Target]) -> tuple[tuple[tuple[str, ...], ...], dict[str, str]]:
    """Bundles grouped so that each comes after those it depends on; cycles are errors."""
    remaining = dict(targets)
    done: set[str] = set()
    waves = []
    errors: dict[str, str] = {}
    while remaining:
        ready = sorted(
            b for b, t in remaining.items() if all(d in done or d not in targets for d in t.depends_on)
        )
        if not ready:
            for b in sorted(remaining):
                errors[b] = f"bundle {b}: dependsOn cycle among {', '.join(sorted(remaining))}"
            break
        waves.append(tuple(ready))
        for b in ready:
            done.add(b)
            del remaining[b]
    return tuple(waves), errors


def plan_cluster(
    targets: Mapping[str, Target],
    *,
    instance: str,
    inventories: Mapping[str, inventory_mod.Inventory],
    broken_inventories: Mapping[str, str] | None = None,
    live: Mapping[Key, Mapping[str, Any]],
    known: Iterable[tuple[str, str]],
    foreign: Mapping[str, inventory_mod.Inventory] | None = None,
    source: str | None = None,
    only: Collection[str] | None = None,
) -> ClusterPlan:
    """Plan one round on one cluster.

    `targets`: every bundle of the repository that concerns this cluster (placed, or in error for it);
    bundles found only in `inventories` are no longer placed here and are pruned. `live`: the objects
    read from the cluster (all objects carrying our owner label of the kinds involved, plus whatever
    exists at a desired object's name). `known`: the (group, kind) pairs whose live state was read; an
    inventory entry of another kind is kept, never deleted. `foreign`: inventories of this instance that
    another source wrote (`inventory.split`), `source` this one's name (for messages). `only`: plan those
    bundles of `targets` and no other (every target still counts for the objects two bundles declare and
    for the dependsOn waves; bundles no longer placed, broken or another source's are planned whatever
    `only` says); `live` need hold only what they name.
    """
    broken_inventories = broken_inventories or {}
    foreign = foreign or {}
    foreign_keys = _foreign_keys(foreign, live=live, instance=instance, source=source, ours=inventories)
    known_set = set(known)
    claims: dict[Key, list[str]] = {}
    for t in targets.values():
        if t.desired is not None and not t.suspended and t.error is None:
            for ref in t.desired.refs:  # made once per DesiredSet
                claims.setdefault(key(ref), []).append(t.bundle)
    frozen_claims = {k: tuple(v) for k, v in claims.items()}
    waves, wave_errors = _waves({b: t for b, t in targets.items() if t.desired is not None})
    bundles: dict[str, BundlePlan] = {}
    for name, t in targets.items():
        if only is not None and name not in only:
            continue
        inv = inventories.get(name)
        if name in foreign:
            bundles[name] = _foreign_bundle(name, foreign[name], source=source, instance=instance)
            continue
        if name in broken_inventories:
            bundles[name] = BundlePlan(name, Outcome.FAILED, message=broken_inventories[name])
            continue
        if t.suspended:
            bundles[name] = BundlePlan(name, Outcome.SUSPENDED, message=f"bundle {name}: suspended")
            continue
        if t.error is not None or t.desired is None:
            bundles[name] = BundlePlan(
                name, Outcome.FAILED, message=t.error or f"bundle {name}: not rendered"
            )
            continue
        if name in wave_errors:
            bundles[name] = BundlePlan(name, Outcome.FAILED, message=wave_errors[name])
            continue
        wanted = dict(
            zip(
                map(id, t.desired.objects),
                marked_objects(t.desired, bundle=name, instance=instance),
                strict=True,
            )
        )
        objects = apply_order(t.desired.objects)
        if not objects and inv is not None and inv.refs and not t.allow_empty:
            bundles[name] = BundlePlan(
                name,
                Outcome.REFUSED,
                message=(
                    f"bundle {name}: renders to no object while its inventory on this cluster lists "
                    f"{len(inv.refs)}; refused (set allowEmpty: true to prune them)"
                ),
            )
            continue
        steps = tuple(
            _decide(
                o,
                wanted[id(o)],
                target=t,
                instance=instance,
                live=live,
                claims=frozen_claims,
                foreign=foreign_keys,
            )
            for o in objects
        )
        desired_keys = {key(s.ref) for s in steps}
        elsewhere = {
            key(r) for r in (inv.refs if inv else ()) if any(b != name for b in frozen_claims.get(key(r), ()))
        }  # what another bundle declares, among what this one's inventory lists
        prune = _prune_steps(
            inv,
            bundle=name,
            instance=instance,
            desired_keys=desired_keys,
            elsewhere=elsewhere,
            live=live,
            known=known_set,
            prune_enabled=t.prune,
            foreign=foreign_keys,
        )
        applied = frozenset(s.ref for s in steps if s.op is not Op.CONFLICT)
        namespace = t.desired.namespace
        if namespace and ("", "Namespace", "", namespace) in desired_keys:
            namespace = None
        bundles[name] = BundlePlan(
            name,
            Outcome.RUN,
            steps=steps,
            prune=prune,
            inventory_before=(inv.refs if inv else frozenset()) | applied,
            keep=frozenset(p.ref for p in prune if p.op is PruneOp.KEEP),
            namespace=namespace,
            depends_on=t.depends_on,
            prune_enabled=t.prune,
        )
    all_claimed = set(frozen_claims)
    for name, inv in inventories.items():
        if name in targets:
            continue
        prune = _prune_steps(
            inv,
            bundle=name,
            instance=instance,
            desired_keys=set(),
            elsewhere=all_claimed,
            live=live,
            known=known_set,
            prune_enabled=True,
            foreign=foreign_keys,
        )
        bundles[name] = BundlePlan(
            name,
            Outcome.REMOVED,
            prune=prune,
            inventory_before=inv.refs,
            keep=frozenset(p.ref for p in prune if p.op is PruneOp.KEEP),
            message=f"bundle {name}: no longer placed on this cluster; pruning what it left",
        )
    for name, err in broken_inventories.items():
        if name not in bundles:
            bundles[name] = BundlePlan(name, Outcome.FAILED, message=err)
    for name, inv in foreign.items():
        if name not in bundles:
            bundles[name] = _foreign_bundle(name, inv, source=source, instance=instance)
    return ClusterPlan(bundles=bundles, waves=waves, errors=wave_errors)


def _foreign_bundle(
    name: str, inv: inventory_mod.Inventory, *, source: str | None, instance: str
) -> BundlePlan:
    return BundlePlan(
        name,
        Outcome.CONFLICT,
        message=(
            f"bundle {name}: conflict: its inventory {inv.where} on this cluster was written by source "
            f"{inv.source}, not by this controller's source {source} (both use instance {instance!r}); "
            "nothing of it is written or pruned here. Give each source its own --instance"
        ),
    )


def _foreign_keys(
    foreign: Mapping[str, inventory_mod.Inventory],
    *,
    live: Mapping[Key, Mapping[str, Any]],
    instance: str,
    source: str | None,
    ours: Mapping[str, inventory_mod.Inventory],
) -> dict[Key, str]:
    """Objects another source holds: listed in its inventories, or live and labelled for one of its
    bundles (and in none of this source's inventories) -> why they are not this source's to write."""
    out: dict[Key, str] = {}
    if not foreign:
        return out
    for name, inv in sorted(foreign.items()):
        why = f"bundle {name} of source {inv.source} lists it ({inv.where}; this controller's source is {source})"
        for ref in inv.refs:
            out.setdefault(key(ref), why)
    mine = {key(r) for inv in ours.values() for r in inv.refs}
    for k, obj in live.items():
        labels = _labels(obj)
        bundle = str(labels.get(model.LABEL_BUNDLE) or "")
        if labels.get(model.LABEL_OWNER) == instance and bundle in foreign and k not in mine and k not in out:
            out[k] = (
                f"labelled for bundle {bundle} of source {foreign[bundle].source} "
                f"(this controller's source is {source})"
            )
    return out


def namespace_prunable(
    namespace: str,
    *,
    contents: Iterable[Mapping[str, Any]],
    pruned: Iterable[model.ObjectRef],
) -> tuple[bool, tuple[model.ObjectRef, ...]]:
    """An owned Namespace may be deleted only when it holds nothing but objects pruned with it. Left out:
    what every namespace gets by itself (ServiceAccount ``default``, ConfigMap ``kube-root-ca.crt``),
    Events, and objects owned by another object (garbage-collected with their owner). Returns (prunable,
    the objects that hold it)."""
    gone = {key(r) for r in pruned}
    holding = []
    for obj in contents:
        ref = model.ObjectRef.of(obj)
        if ref.namespace != namespace or key(ref) in gone:
            continue
        if (ref.group, ref.kind, ref.name) in (
            ("", "ServiceAccount", "default"),
            ("", "ConfigMap", "kube-root-ca.crt"),
        ):
            continue
        if ref.kind == "Event" or (obj.get("metadata") or {}).get("ownerReferences"):
            continue
        holding.append(ref)
    return not holding, tuple(sorted(holding))
