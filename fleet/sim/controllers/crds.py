"""The CRD controllers of a simulated cluster: establishing, serving and finalizing CustomResourceDefinitions.

Owns: `install(cluster)` and `CrdController`. A created or changed CRD gets `acceptedNames`,
`storedVersions` and the `NamesAccepted` and `Established` conditions (after
`Settings.crd_establish_delay`), and from that moment its kinds are in the cluster's type registry, so
discovery (legacy and aggregated, whose ETag changes) and `/openapi/v3` list them and the custom
resource URLs answer; before it they are 404, as on a real server. A deleted CRD gets the finalizer
`customresourcecleanup.apiextensions.k8s.io` and the `Terminating` condition; creates of its resources
are then 403; its resources are deleted, its watches closed, its kinds leave the registry, and the
finalizer is removed so the CRD goes.

Does not: default, validate or prune CRDs and custom resources, or build their type-table entries
(`fleet.sim.kinds.customresources`, pure); write anything but through `fleet.sim.controllers.updates`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from fleet.sim import status
from fleet.sim.controllers import updates
from fleet.sim.kinds import customresources, types
from fleet.sim.storage import objects, store

FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
MANAGER = "kube-apiserver"


def _condition_true(obj: dict[str, Any], ctype: str) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return bool(cond.get("status") == "True")
    return False


@dataclass
class _Served:
    uid: str
    signature: bytes
    rtypes: list[types.ResourceType] = field(default_factory=list)


class CrdController:
    """Establishes, serves and finalizes the CRDs of one cluster; reacts to events, no polling."""

    def __init__(self, cluster: store.Cluster) -> None:
        self.cluster = cluster
        self.served: dict[str, _Served] = {}  # CRD name -> what is in the registry for it
        self.terminating: dict[tuple[str, str], str] = {}  # (group, plural) -> CRD name being deleted
        self._terminating_kinds: dict[tuple[str, str], str] = {}  # (group, kind) -> CRD name
        self._pending: set[str] = set()
        self._timers: dict[str, Any] = {}

    # hooks

    def on_event(self, cluster: store.Cluster, event: objects.Event) -> None:
        obj = event.new.obj if event.new is not None else None
        if obj is None:
            return
        api_version = obj.get("apiVersion", "")
        if obj.get("kind") == customresources.KIND and api_version == f"{customresources.GROUP}/v1":
            self._queue(event.name)
        elif event.type == objects.DELETED and self._terminating_kinds:
            group = api_version.rpartition("/")[0]
            crd = self._terminating_kinds.get((group, obj.get("kind", "")))
            if crd is not None:
                self._queue(crd)

    def admit(self, rtype: types.ResourceType, namespace: str, name: str) -> None:
        if rtype.custom and rtype.key in self.terminating:
            raise status.forbidden(
                rtype, name, "create not allowed while custom resource definition is terminating"
            )

    def deletion_finalizers(self, rtype: types.ResourceType, stored: objects.Stored) -> list[str]:
        return [FINALIZER] if customresources.is_definition(rtype) else []

    # work

    def _queue(self, name: str) -> None:
        if name in self._pending:
            return
        self._pending.add(name)
        updates.run_soon(self._sync, name)

    def _crd_type(self) -> types.ResourceType:
        rtype = self.cluster.registry.get(customresources.GROUP, "v1", customresources.PLURAL)
        assert rtype is not None
        return rtype

    def _sync(self, name: str) -> None:
        self._pending.discard(name)
        crd_type = self._crd_type()
        stored = self.cluster.find(crd_type, "", name)
        if stored is None:
            self._unserve(name)
            return
        obj = stored.obj
        if obj["metadata"].get("deletionTimestamp"):
            self._terminate(crd_type, stored)
            return
        served = self.served.get(name)
        signature = orjson.dumps(obj.get("spec"), option=orjson.OPT_SORT_KEYS)
        uid = obj["metadata"].get("uid", "")
        if served is not None and served.uid == uid and served.signature == signature:
            return
        delay = self.cluster.settings.crd_establish_delay
        if served is None and delay > 0 and not _condition_true(obj, "Established"):
            # Names are accepted at once; the kinds are served only once Established.
            updates.write_status(
                self.cluster, crd_type, stored, self._status(obj, established=False), manager=MANAGER
            )
            if name not in self._timers:
                self._timers[name] = updates.run_later(delay, self._establish_later, name, uid)
            return
        self._establish(crd_type, stored, signature)

    def _establish_later(self, name: str, uid: str) -> None:
        self._timers.pop(name, None)
        crd_type = self._crd_type()
        stored = self.cluster.find(crd_type, "", name)
        if stored is None or stored.obj["metadata"].get("uid") != uid:
            return
        if stored.obj["metadata"].get("deletionTimestamp"):
            self._terminate(crd_type, stored)
            return
        signature = orjson.dumps(stored.obj.get("spec"), option=orjson.OPT_SORT_KEYS)
        self._establish(crd_type, stored, signature)

    def _establish(self, crd_type: types.ResourceType, stored: objects.Stored, signature: bytes) -> None:
        obj = stored.obj
        name = obj["metadata"]["name"]
        registry = self.cluster.registry
        new_types = [
            t
            for t in customresources.resource_types(obj)
            if (existing := registry.get(t.group, t.version, t.plural)) is None or existing.custom
        ]  # never shadow a built-in kind
        self._unregister(name, keep_watches={t.key for t in new_types})
        for rtype in new_types:
            registry.add(rtype)
        if new_types:
            ts = self.cluster.types.get(new_types[0].key)
            if ts is not None:
                ts.rtype = new_types[0]  # a recreated CRD: the stored state serves the new entry
        self.served[name] = _Served(obj["metadata"].get("uid", ""), signature, new_types)
        updates.write_status(
            self.cluster, crd_type, stored, self._status(obj, established=True), manager=MANAGER
        )

    def _status(self, obj: dict[str, Any], *, established: bool) -> dict[str, Any]:
        spec = obj["spec"]
        names = spec["names"]
        old = obj.get("status") or {}
        now = objects.now()
        conditions = list(old.get("conditions") or [])
        conditions = updates.set_condition(
            conditions, "NamesAccepted", "True", "NoConflicts", "no conflicts found", now=now
        )
        if established:
            conditions = updates.set_condition(
                conditions,
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
                now=now,
            )
        accepted: dict[str, Any] = {"plural": names["plural"], "singular": names.get("singular", "")}
        if names.get("shortNames"):
            accepted["shortNames"] = list(names["shortNames"])
        accepted["kind"] = names["kind"]
        accepted["listKind"] = names.get("listKind", names["kind"] + "List")
        if names.get("categories"):
            accepted["categories"] = list(names["categories"])
        stored_versions = list(old.get("storedVersions") or [])
        for version in spec["versions"]:
            if version.get("storage") and version["name"] not in stored_versions:
                stored_versions.append(version["name"])
        return {"conditions": conditions, "acceptedNames": accepted, "storedVersions": stored_versions}

    def _unregister(self, name: str, *, keep_watches: set[tuple[str, str]] | None = None) -> None:
        """Take a CRD's entries out of the registry and close their watches (except `keep_watches`)."""
        served = self.served.get(name)
        if served is None:
            return
        registry = self.cluster.registry
        for rtype in served.rtypes:
            if registry.get(rtype.group, rtype.version, rtype.plural) is rtype:
                registry.remove(rtype.group, rtype.version, rtype.plural)
            ts = self.cluster.types.get(rtype.key)
            if ts is not None and rtype.key not in (keep_watches or set()):
                for watcher in list(ts.watchers):
                    self.cluster.unwatch(watcher)

    def _unserve(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        self._unregister(name)
        self.served.pop(name, None)
        for key, crd in list(self.terminating.items()):
            if crd == name:
                del self.terminating[key]
        for gk, crd in list(self._terminating_kinds.items()):
            if crd == name:
                del self._terminating_kinds[gk]

    def _terminate(self, crd_type: types.ResourceType, stored: objects.Stored) -> None:
        obj = stored.obj
        name = obj["metadata"]["name"]
        if FINALIZER not in (obj["metadata"].get("finalizers") or []):
            return
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        key = (spec.get("group", ""), names.get("plural", ""))
        self.terminating[key] = name
        self._terminating_kinds[(key[0], names.get("kind", ""))] = name
        in_progress = any(
            c.get("type") == "Terminating" and c.get("reason") == "InstanceDeletionInProgress"
            for c in (obj.get("status") or {}).get("conditions") or []
        )
        if not in_progress:  # the DELETE said "pending"; the finalizer controller says it has begun
            new_status = dict(obj.get("status") or {})
            new_status["conditions"] = updates.set_condition(
                list(new_status.get("conditions") or []),
                "Terminating",
                "True",
                "InstanceDeletionInProgress",
                "CustomResource deletion is in progress",
                now=objects.now(),
            )
            updates.write_status(self.cluster, crd_type, stored, new_status, manager=MANAGER)
            stored = self.cluster.find(crd_type, "", name) or stored
        left = 0
        ts = self.cluster.types.get(key)
        if ts is not None:
            for skey in list(ts.sorted_keys()):
                item = ts.objects.get(skey)
                if item is None:
                    continue
                meta = item.obj["metadata"]
                if not meta.get("deletionTimestamp"):
                    try:
                        self.cluster.delete(ts.rtype, meta.get("namespace", ""), meta["name"])
                    except status.ApiError:
                        pass
                if skey in ts.objects:
                    left += 1
        if left:
            return  # the DELETED events of the rest bring us back here
        self._unserve(name)

        def drop(meta: dict[str, Any]) -> None:
            meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
            if not meta["finalizers"]:
                del meta["finalizers"]

        updates.update_metadata(self.cluster, crd_type, stored, drop, manager=MANAGER)


def install(cluster: store.Cluster) -> CrdController:
    """Attach the CRD controllers to a cluster (hooks on its events; nothing runs while idle)."""
    controller = CrdController(cluster)
    cluster.hooks.append(controller.on_event)
    cluster.create_admission.append(controller.admit)
    cluster.deletion_finalizers.append(controller.deletion_finalizers)
    return controller
