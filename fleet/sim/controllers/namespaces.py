"""The namespace content a real cluster adds: the service account and root CA controllers.

Owns: `install(cluster)`, after which every active namespace (the default ones and each new one) gets
ServiceAccount `default` and ConfigMap `kube-root-ca.crt` (the serving CA with `--tls`, else a
placeholder), created as `kube-controller-manager` (off with `Settings.namespace_defaults=False`). Each
step runs on the event loop after the response of the request that triggered it, through the cluster's
in-process write methods, so watchers see every change and the request journal does not.

Does not: delete namespace content (the namespace controller lives in `fleet.sim.storage.store`),
collect garbage (`fleet.sim.controllers.gc`), establish CRDs (`fleet.sim.controllers.crds`) or simulate
workload status (`fleet.sim.controllers.workloads`).
"""

from __future__ import annotations

from typing import Any

from fleet.sim import preparation, status
from fleet.sim.kinds import types
from fleet.sim.storage import objects, store


def install(cluster: store.Cluster) -> None:
    """Populate the existing namespaces and every new one (unless `Settings.namespace_defaults` is off)."""
    if not cluster.settings.namespace_defaults:
        return
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
# Without --tls there is no CA: a placeholder with the shape of one.
ROOT_CA_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    + "\n".join(["ZmxlZXQgc2ltIHBsYWNlaG9sZGVyIGNlcnRpZmljYXRlIGF1dGhvcml0eSBkYXRh"] * 4)
    + "\n-----END CERTIFICATE-----\n"
)
SYSTEM_MANAGER = "kube-controller-manager"


def _on_namespace(cluster: store.Cluster, event: objects.Event) -> None:
    if event.type == objects.ADDED and event.new is not None and event.new.obj.get("kind") == "Namespace":
        cluster.schedule(_populate, cluster, event.name)


def _populate(cluster: store.Cluster, ns: str) -> None:
    if cluster.namespace_phase(ns) != "Active":
        return
    wanted: list[tuple[str, dict[str, Any]]] = [
        ("serviceaccounts", {"metadata": {"name": "default"}}),
        (
            "configmaps",
            {
                "metadata": {
                    "name": ROOT_CA_NAME,
                    "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION},
                },
                "data": {"ca.crt": cluster.ca_pem.decode() if cluster.ca_pem else ROOT_CA_PEM},
            },
        ),
    ]
    for plural, obj in wanted:
        rtype = cluster.registry.get("", "v1", plural)
        if rtype is None or cluster.find(rtype, ns, obj["metadata"]["name"]) is not None:
            continue

        def prepare(o: dict[str, Any], rtype: types.ResourceType = rtype) -> dict[str, Any]:
            o = preparation.apply_defaults(rtype, o)
            return preparation.record_update(rtype, None, o, manager=SYSTEM_MANAGER, subresource=None)

        try:
            cluster.create(rtype, ns, obj, manager=SYSTEM_MANAGER, prepare=prepare)
        except status.ApiError:
            pass
