"""The garbage collector of a simulated cluster: ownerReferences cascades, as kube-controller-manager's.

Owns: `install(cluster)` and `GarbageCollector`, which keeps an index from owner uid to dependents
(built from committed events, only for objects that have ownerReferences) and acts like the real
garbage collector (pkg/controller/garbagecollector `attemptToDeleteItem`):
- a dependent whose owners are all gone (deleted, or never existed: the uid in the reference does not
  match a live object of that kind and name) is deleted with propagation Background; one with a live
  owner left loses only its references to missing owners;
- an owner being deleted with `propagationPolicy=Foreground` (finalizer `foregroundDeletion`) has its
  dependents deleted first and keeps its finalizer until no dependent with `blockOwnerDeletion: true`
  is left; then the finalizer is removed and the owner goes;
- an owner deleted with `propagationPolicy=Orphan` (finalizer `orphan`) has its references removed
  from every dependent, then the finalizer is removed.
Every step runs on the event loop after the response of the request that triggered it (a batch per
loop turn), through the store's in-process write methods as manager `kube-controller-manager`, so
watchers see every change and the request journal does not. Lookups are dictionary hits: deleting an
object costs the same whatever the number of other objects. Idle, nothing runs.

Does not: delete namespace content (the namespace controller in `fleet.sim.storage.store` does), or handle
owner references across namespaces differently from a dangling reference (as the real one does).
"""

from __future__ import annotations

from typing import Any

from fleet.sim import status
from fleet.sim.controllers import updates
from fleet.sim.kinds import types
from fleet.sim.storage import objects, store

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
MANAGER = "kube-controller-manager"

Loc = tuple[tuple[str, str], str, str]  # (type key (group, plural), namespace, name)
_UNRESOLVED = object()


def _owner_uids(obj: dict[str, Any]) -> tuple[str, ...]:
    refs = obj["metadata"].get("ownerReferences") or ()
    return tuple(str(ref.get("uid", "")) for ref in refs if isinstance(ref, dict))


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


class GarbageCollector:
    """The garbage collector of one cluster (see the module docstring)."""

    def __init__(self, cluster: store.Cluster) -> None:
        self.cluster = cluster
        self.dependents: dict[str, set[Loc]] = {}  # owner uid -> dependents
        self.refs: dict[Loc, tuple[str, ...]] = {}  # dependent -> the owner uids it references
        self.owners: dict[str, Loc] = {}  # owners being deleted with Foreground or Orphan
        self._gone: set[str] = set()
        self._foreground: set[str] = set()
        self._orphan: set[str] = set()
        self._check: set[Loc] = set()
        self._scheduled = False

    # ----- reacting to events -------------------------------------------------------------------

    def _loc(self, obj: dict[str, Any], ns: str, name: str) -> Loc | None:
        rtype = self.cluster.registry.by_kind(_group(obj.get("apiVersion", "")), obj.get("kind", ""))
        return None if rtype is None else (rtype.key, ns, name)

    def on_event(self, cluster: store.Cluster, event: objects.Event) -> None:
        if event.new is None:
            return
        obj = event.new.obj
        meta = obj["metadata"]
        uid = meta.get("uid", "")
        deleted = event.type == objects.DELETED
        has_refs = bool(meta.get("ownerReferences")) or (
            event.prev is not None and bool(event.prev.obj["metadata"].get("ownerReferences"))
        )
        if has_refs:
            loc = self._loc(obj, event.ns, event.name)
            if loc is not None:
                self._index(loc, () if deleted else _owner_uids(obj), waking=deleted)
        if deleted:
            self.owners.pop(uid, None)
            if uid in self.dependents:
                self._gone.add(uid)
                self._wake()
            return
        if meta.get("deletionTimestamp"):
            finalizers = meta.get("finalizers") or ()
            if FOREGROUND in finalizers or ORPHAN in finalizers:
                loc = self._loc(obj, event.ns, event.name)
                if loc is not None:
                    self.owners[uid] = loc
                    (self._foreground if FOREGROUND in finalizers else self._orphan).add(uid)
                    self._wake()

    def _index(self, loc: Loc, uids: tuple[str, ...], *, waking: bool) -> None:
        old = self.refs.get(loc, ())
        if uids == old:
            return
        for uid in set(old) - set(uids):
            deps = self.dependents.get(uid)
            if deps is not None:
                deps.discard(loc)
                if not deps:
                    del self.dependents[uid]
            if waking and uid in self.owners:
                self._foreground.add(uid)  # a dependent of a foreground deletion went away
                self._wake()
        added = set(uids) - set(old)
        for uid in added:
            self.dependents.setdefault(uid, set()).add(loc)
        if uids:
            self.refs[loc] = uids
        else:
            self.refs.pop(loc, None)
        if added:
            self._check.add(loc)  # a reference to an owner that may not exist
            self._wake()

    def _wake(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            updates.run_soon(self._run)

    # ----- acting (one batch per loop turn) -------------------------------------------------------

    def _run(self) -> None:
        self._scheduled = False
        gone, self._gone = self._gone, set()
        foreground, self._foreground = self._foreground, set()
        orphan, self._orphan = self._orphan, set()
        for uid in gone:
            self._check.update(self.dependents.get(uid, ()))
        for uid in orphan:
            self._orphan_dependents(uid)
        for uid in foreground:
            self._foreground_step(uid)
        check, self._check = self._check, set()
        for loc in sorted(check):
            self._attempt(loc)

    def _find(self, loc: Loc) -> tuple[types.ResourceType, objects.Stored] | None:
        ts = self.cluster.types.get(loc[0])
        if ts is None:
            return None
        stored = self.cluster.find(ts.rtype, loc[1], loc[2])
        return None if stored is None else (ts.rtype, stored)

    def _owner(self, ref: dict[str, Any], namespace: str) -> Any:
        """The live owner a reference names, None when missing, `_UNRESOLVED` for an unknown kind."""
        rtype = self.cluster.registry.by_kind(
            _group(str(ref.get("apiVersion", ""))), str(ref.get("kind", ""))
        )
        if rtype is None or (rtype.namespaced and not namespace):
            return _UNRESOLVED
        stored = self.cluster.find(rtype, namespace if rtype.namespaced else "", str(ref.get("name", "")))
        if stored is None or stored.obj["metadata"].get("uid") != ref.get("uid"):
            return None
        return stored

    def _attempt(self, loc: Loc) -> None:
        """attemptToDeleteItem: delete a dependent without live owners; unlink missing ones."""
        found = self._find(loc)
        if found is None:
            return
        rtype, stored = found
        meta = stored.obj["metadata"]
        if meta.get("deletionTimestamp"):
            return
        solid, missing, waiting = [], [], []
        for ref in meta.get("ownerReferences") or []:
            owner = self._owner(ref, loc[1])
            if owner is None:
                missing.append(ref.get("uid"))
            elif owner is _UNRESOLVED:
                solid.append(ref.get("uid"))
            elif owner.obj["metadata"].get("deletionTimestamp") and FOREGROUND in (
                owner.obj["metadata"].get("finalizers") or ()
            ):
                waiting.append(ref.get("uid"))
            else:
                solid.append(ref.get("uid"))
        if solid:
            drop = set(missing) | set(waiting)
            if drop:
                self._unlink(rtype, stored, drop)
            return
        if not missing and not waiting:
            return
        # Dependents of a foreground deletion that have dependents of their own go in the foreground too.
        policy = "Foreground" if waiting and self.dependents.get(meta.get("uid", "")) else None
        try:
            self.cluster.delete(rtype, loc[1], loc[2], propagation=policy)
        except status.ApiError:
            pass

    def _unlink(self, rtype: types.ResourceType, stored: objects.Stored, uids: set[Any]) -> None:
        def edit(meta: dict[str, Any]) -> None:
            refs = [r for r in meta.get("ownerReferences") or [] if r.get("uid") not in uids]
            if refs:
                meta["ownerReferences"] = refs
            else:
                meta.pop("ownerReferences", None)

        try:
            updates.update_metadata(self.cluster, rtype, stored, edit, manager=MANAGER)
        except status.ApiError:
            pass

    def _remove_finalizer(self, rtype: types.ResourceType, stored: objects.Stored, name: str) -> None:
        def edit(meta: dict[str, Any]) -> None:
            meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != name]
            if not meta["finalizers"]:
                del meta["finalizers"]

        updates.update_metadata(self.cluster, rtype, stored, edit, manager=MANAGER)

    def _deleting_owner(self, uid: str, finalizer: str) -> tuple[types.ResourceType, objects.Stored] | None:
        loc = self.owners.get(uid)
        found = self._find(loc) if loc is not None else None
        if found is None:
            self.owners.pop(uid, None)
            return None
        meta = found[1].obj["metadata"]
        if (
            meta.get("uid") != uid
            or not meta.get("deletionTimestamp")
            or finalizer not in (meta.get("finalizers") or ())
        ):
            return None
        return found

    def _foreground_step(self, uid: str) -> None:
        found = self._deleting_owner(uid, FOREGROUND)
        if found is None:
            return
        blocked = False
        for dep in sorted(self.dependents.get(uid, ())):
            dep_found = self._find(dep)
            if dep_found is None:
                continue
            dmeta = dep_found[1].obj["metadata"]
            if not dmeta.get("deletionTimestamp"):
                self._check.add(dep)
            for ref in dmeta.get("ownerReferences") or []:
                if ref.get("uid") == uid and ref.get("blockOwnerDeletion"):
                    blocked = True
        if not blocked:
            self._remove_finalizer(found[0], found[1], FOREGROUND)

    def _orphan_dependents(self, uid: str) -> None:
        found = self._deleting_owner(uid, ORPHAN)
        if found is None:
            return
        for dep in sorted(self.dependents.get(uid, ())):
            dep_found = self._find(dep)
            if dep_found is not None:
                self._unlink(dep_found[0], dep_found[1], {uid})
        refreshed = self.cluster.find(
            found[0], found[1].obj["metadata"].get("namespace", ""), found[1].obj["metadata"]["name"]
        )
        if refreshed is not None:
            self._remove_finalizer(found[0], refreshed, ORPHAN)


def install(cluster: store.Cluster) -> GarbageCollector:
    """Attach the garbage collector to a cluster (a hook on its events; nothing runs while idle)."""
    collector = GarbageCollector(cluster)
    cluster.hooks.append(collector.on_event)
    return collector
