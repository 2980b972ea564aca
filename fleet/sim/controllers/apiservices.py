"""The aggregator's controllers of a simulated cluster: APIService registration and availability.

Owns: `install(cluster)` and `ApiServiceController`. At start every group version the cluster serves
gets its local APIService (`v1.apps`, automanaged `onstart`), as kube-apiserver registers them; a CRD's
group version gets one (automanaged `true`) while it is served. Each APIService's `Available` condition
is kept as the real availability controller keeps it (`fleet.sim.kinds.apiservices.availability`: a
local one is available, one backed by a Service never is, since no aggregated API server runs here),
re-judged when an APIService, a Service or an EndpointSlice changes; and the registry's aggregated group
versions (`types.Registry.set_aggregated`) follow, so discovery lists them and a group version whose
APIService is unavailable fails discovery (`Stale`) and answers 503, as on a real server.

Does not: judge or validate an APIService (`fleet.sim.kinds.apiservices`, pure), answer requests
(`fleet.sim.rest`), or write anything but through `fleet.sim.controllers.updates`.
"""

from __future__ import annotations

from typing import Any

from fleet.sim import preparation, status
from fleet.sim.controllers import updates
from fleet.sim.kinds import apiservices, types
from fleet.sim.storage import objects, selectors, store

WATCHED = {
    (apiservices.GROUP, apiservices.KIND),
    ("", "Service"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
}


class ApiServiceController:
    """Registers local APIServices and keeps every APIService's availability; reacts to events only."""

    def __init__(self, cluster: store.Cluster) -> None:
        self.cluster = cluster
        self._pending = False

    def _type(self, group: str, version: str, plural: str) -> types.ResourceType:
        rtype = self.cluster.registry.get(group, version, plural)
        assert rtype is not None
        return rtype

    @property
    def rtype(self) -> types.ResourceType:
        return self._type(apiservices.GROUP, apiservices.VERSION, apiservices.PLURAL)

    def on_event(self, cluster: store.Cluster, event: objects.Event) -> None:
        stored = event.new if event.new is not None else event.prev
        obj = stored.obj if stored is not None else {}
        group = str(obj.get("apiVersion", "")).rpartition("/")[0]
        if (group, obj.get("kind")) in WATCHED and not self._pending:
            self._pending = True
            updates.run_soon(self.sync)

    def register_local(self) -> None:
        """The local APIServices of the group versions the cluster serves (at start, as kube-apiserver)."""
        served = {(t.group, t.version) for t in self.cluster.registry.all() if not t.custom}
        for group, version in sorted(served):
            if (group, version) in apiservices.LOCAL_PRIORITIES:
                self._create(apiservices.local_apiservice(group, version))

    def _create(self, obj: dict[str, Any]) -> None:
        rtype = self.rtype

        def prepare(o: dict[str, Any]) -> dict[str, Any]:
            o = preparation.apply_defaults(rtype, o)
            o = preparation.record_update(rtype, None, o, manager=apiservices.MANAGER, subresource=None)
            o["status"] = _available_status(o, None, [], [])
            return o

        try:
            self.cluster.create(rtype, "", obj, manager=apiservices.MANAGER, prepare=prepare)
        except status.ApiError:
            pass  # there already (or being deleted): nothing to register

    def sync(self) -> None:
        self._pending = False
        self._register_crd_groups()
        rtype = self.rtype
        aggregated: dict[tuple[str, str], types.Aggregated] = {}
        for stored in list(self.cluster.state(rtype).objects.values()):
            obj = stored.obj
            if not obj["metadata"].get("deletionTimestamp"):
                service, slices = self._backend(obj)
                wanted = _available_status(obj, service, slices, _conditions(obj))
                if wanted != obj.get("status"):
                    stored = updates.write_status(
                        self.cluster, rtype, stored, wanted, manager=apiservices.MANAGER
                    ).stored
            if (obj["metadata"].get("labels") or {}).get(apiservices.AUTOMANAGED):
                continue  # the cluster's own group versions: served, not aggregated
            spec = stored.obj.get("spec") or {}
            key = (str(spec.get("group") or ""), str(spec.get("version") or ""))
            aggregated[key] = types.Aggregated(
                key[0],
                key[1],
                int(spec.get("groupPriorityMinimum") or 0),
                int(spec.get("versionPriority") or 0),
                _is_available(stored.obj),
            )
        self.cluster.registry.set_aggregated(aggregated)

    def _backend(self, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        ref = (obj.get("spec") or {}).get("service")
        if not isinstance(ref, dict):
            return None, []
        ns, name = str(ref.get("namespace") or ""), str(ref.get("name") or "")
        found = self.cluster.find(self._type("", "v1", "services"), ns, name)
        slice_type = self.cluster.registry.get("discovery.k8s.io", "v1", "endpointslices")
        if found is None or slice_type is None:
            return (found.obj if found else None), []
        owned = selectors.parse_labels(f"kubernetes.io/service-name={name}")
        listed = self.cluster.list(slice_type, ns, labels=owned)
        return found.obj, [s.obj for s in listed.items]

    def _register_crd_groups(self) -> None:
        """One automanaged APIService per group version a CRD serves, gone when it is no longer served."""
        registry = self.cluster.registry
        served = {(t.group, t.version) for t in registry.all() if t.custom}
        rtype = self.rtype
        for stored in list(self.cluster.state(rtype).objects.values()):
            obj = stored.obj
            if (obj["metadata"].get("labels") or {}).get(apiservices.AUTOMANAGED) != "true":
                continue
            spec = obj.get("spec") or {}
            key = (str(spec.get("group") or ""), str(spec.get("version") or ""))
            if key in served:
                served.discard(key)
            elif not obj["metadata"].get("deletionTimestamp"):
                self.cluster.delete(rtype, "", obj["metadata"]["name"])
        for group, version in sorted(served):
            self._create(apiservices.local_apiservice(group, version, crd=True))


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    found = (obj.get("status") or {}).get("conditions")
    return found if isinstance(found, list) else []


def _available_status(
    obj: dict[str, Any],
    service: dict[str, Any] | None,
    slices: list[dict[str, Any]],
    conditions: list[dict[str, Any]],
) -> dict[str, Any]:
    cstatus, reason, message = apiservices.availability(obj, service, slices)
    return {
        "conditions": updates.set_condition(
            conditions, "Available", cstatus, reason, message, now=objects.now()
        )
    }


def _is_available(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in _conditions(obj))


def install(cluster: store.Cluster) -> ApiServiceController:
    """Register the cluster's local APIServices and keep every APIService's availability."""
    controller = ApiServiceController(cluster)
    controller.register_local()
    cluster.hooks.append(controller.on_event)
    return controller
