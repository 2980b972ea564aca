"""The simulated cluster's own controllers: namespace content and garbage collection.

Owns: `install(cluster)`, which registers on a `fleet.sim.store.Cluster` the namespace content a real
cluster adds (ServiceAccount `default` and ConfigMap `kube-root-ca.crt` in every namespace; off with
`Settings.namespace_defaults=False`) and the garbage collector:
- background cascade: once an owner is gone, dependents whose every owner is gone are deleted;
- `Foreground`: the owner (finalizer `foregroundDeletion`) stays until its dependents are gone, which
  are deleted first; then the finalizer is removed and the owner disappears;
- `Orphan`: dependents lose their ownerReference to the owner, then finalizer `orphan` is removed.
Each step runs on the event loop after the response of the request that triggered it (as in a real
cluster), through the cluster's in-process write methods, so watchers see every change and the request
journal does not (it records client requests only). The namespace controller lives in the store.

Does not: simulate workload status, kubelets or CRD establishment.
"""

from __future__ import annotations

from typing import Any

from fleet.sim import status, store, types

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"


def install(cluster: store.Cluster) -> None:
    cluster.hooks.append(_on_event)
    cluster.finalizer_hooks.append(_on_deleting)
    if cluster.settings.namespace_defaults:
        cluster.hooks.append(_on_namespace)
        ns_type = cluster.registry.get("", "v1", "namespaces")
        assert ns_type is not None
        for stored in list(cluster.state(ns_type).objects.values()):
            _populate(cluster, stored.obj["metadata"]["name"])


# ----- namespace content a real cluster adds (service account and root CA controllers) -------------

ROOT_CA_NAME = "kube-root-ca.crt"
ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such "
    "as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions "
    "of Kubernetes clusters."
)
# Not a real CA: a placeholder with the shape of one (the simulated API server is not a TLS CA).
ROOT_CA_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    + "\n".join(["ZmxlZXQgc2ltIHBsYWNlaG9sZGVyIGNlcnRpZmljYXRlIGF1dGhvcml0eSBkYXRh"] * 4)
    + "\n-----END CERTIFICATE-----\n"
)
SYSTEM_MANAGER = "kube-controller-manager"


def _on_namespace(cluster: store.Cluster, event: store.Event) -> None:
    if event.type == store.ADDED and event.new is not None and event.new.obj.get("kind") == "Namespace":
        cluster._schedule(_populate, cluster, event.name)


def _populate(cluster: store.Cluster, ns: str) -> None:
    from fleet.sim import api

    if cluster.namespace_phase(ns) != "Active":
        return
    wanted = [
        ("serviceaccounts", {"metadata": {"name": "default"}}),
        (
            "configmaps",
            {
                "metadata": {
                    "name": ROOT_CA_NAME,
                    "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION},
                },
                "data": {"ca.crt": ROOT_CA_PEM},
            },
        ),
    ]
    for plural, obj in wanted:
        rtype = cluster.registry.get("", "v1", plural)
        if rtype is None or cluster.find(rtype, ns, obj["metadata"]["name"]) is not None:
            continue

        def prepare(o: dict[str, Any], rtype: types.ResourceType = rtype) -> dict[str, Any]:
            o = api.apply_defaults(rtype, o)
            return api.record_update(rtype, None, o, manager=SYSTEM_MANAGER, subresource=None)

        try:
            cluster.create(rtype, ns, obj, manager=SYSTEM_MANAGER, prepare=prepare)
        except status.ApiError:
            pass


def _owner_uids(obj: dict[str, Any]) -> list[str]:
    return [ref.get("uid", "") for ref in obj.get("metadata", {}).get("ownerReferences") or []]


def _dependents(
    cluster: store.Cluster, owner: dict[str, Any], owner_ns: str
) -> list[tuple[types.ResourceType, store.Stored]]:
    uid = owner["metadata"].get("uid")
    out = []
    for ts in list(cluster.types.values()):
        for stored in list(ts.objects.values()):
            if uid in _owner_uids(stored.obj):
                ns = stored.obj["metadata"].get("namespace", "")
                if owner_ns and ns != owner_ns:
                    continue  # a namespaced owner only owns objects in its namespace
                out.append((ts.rtype, stored))
    return out


def _alive(cluster: store.Cluster, uid: str) -> bool:
    for ts in cluster.types.values():
        for stored in ts.objects.values():
            if stored.obj["metadata"].get("uid") == uid:
                return not stored.obj["metadata"].get("deletionTimestamp") or FOREGROUND in (
                    stored.obj["metadata"].get("finalizers") or []
                )
    return False


def _on_event(cluster: store.Cluster, event: store.Event) -> None:
    if event.type != store.DELETED or event.prev is None:
        return
    owner = event.prev.obj
    if not owner["metadata"].get("uid"):
        return
    cluster._schedule(_collect, cluster, owner, event.ns)
    # A dependent of a foreground-deleting owner went away: the owner may be finished now.
    for uid in _owner_uids(owner):
        cluster._schedule(_finish_foreground, cluster, uid)


def _collect(cluster: store.Cluster, owner: dict[str, Any], owner_ns: str) -> None:
    """Background cascade: delete dependents that have no live owner left."""
    for rtype, stored in _dependents(cluster, owner, owner_ns):
        meta = stored.obj["metadata"]
        if any(_alive(cluster, uid) for uid in _owner_uids(stored.obj)):
            continue
        try:
            cluster.delete(rtype, meta.get("namespace", ""), meta["name"], propagation="Background")
        except status.ApiError:
            pass


def _on_deleting(cluster: store.Cluster, event: store.Event) -> None:
    assert event.new is not None
    finalizers = event.new.obj["metadata"].get("finalizers") or []
    if FOREGROUND in finalizers:
        cluster._schedule(_foreground, cluster, event.new.obj, event.ns)
    if ORPHAN in finalizers:
        cluster._schedule(_orphan, cluster, event.new.obj, event.ns)


def _foreground(cluster: store.Cluster, owner: dict[str, Any], owner_ns: str) -> None:
    for rtype, stored in _dependents(cluster, owner, owner_ns):
        meta = stored.obj["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        try:
            cluster.delete(rtype, meta.get("namespace", ""), meta["name"], propagation="Foreground")
        except status.ApiError:
            pass
    _finish_foreground(cluster, owner["metadata"].get("uid", ""))


def _find(cluster: store.Cluster, uid: str) -> tuple[types.ResourceType, store.Stored] | None:
    for ts in cluster.types.values():
        for stored in ts.objects.values():
            if stored.obj["metadata"].get("uid") == uid:
                return ts.rtype, stored
    return None


def _remove_finalizer(
    cluster: store.Cluster, rtype: types.ResourceType, stored: store.Stored, name: str
) -> None:
    new = stored.copy()
    new["metadata"]["finalizers"] = [f for f in new["metadata"].get("finalizers") or [] if f != name]
    if not new["metadata"]["finalizers"]:
        del new["metadata"]["finalizers"]
    cluster.commit_update(rtype, stored, new)


def _finish_foreground(cluster: store.Cluster, uid: str) -> None:
    found = _find(cluster, uid)
    if found is None:
        return
    rtype, stored = found
    meta = stored.obj["metadata"]
    if not meta.get("deletionTimestamp") or FOREGROUND not in (meta.get("finalizers") or []):
        return
    for _, dep in _dependents(cluster, stored.obj, meta.get("namespace", "")):
        for ref in dep.obj["metadata"].get("ownerReferences") or []:
            if ref.get("uid") == uid and ref.get("blockOwnerDeletion"):
                return  # still waiting for a blocking dependent
    _remove_finalizer(cluster, rtype, stored, FOREGROUND)


def _orphan(cluster: store.Cluster, owner: dict[str, Any], owner_ns: str) -> None:
    uid = owner["metadata"].get("uid")
    for rtype, stored in _dependents(cluster, owner, owner_ns):
        new = stored.copy()
        refs = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences", None)
        cluster.commit_update(rtype, stored, new)
    found = _find(cluster, uid or "")
    if found is not None:
        _remove_finalizer(cluster, found[0], found[1], ORPHAN)
