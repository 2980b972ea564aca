"""The simulated cluster's own controllers: what runs inside a cluster after a write, as on a real one.

`install(cluster)` attaches every controller to a cluster (the server does it for each): the garbage
collector (`gc`), the namespace content a real cluster adds (`namespaces`), the CRD establishing and
finalizing controllers (`crds`), the aggregator's APIService registration and availability
(`apiservices`) and the workload status stand-in (`workloads`). They react to the
store's committed events (no polling: idle, nothing runs) and write through `updates`, which records
their managedFields like any write and runs their steps on the event loop after the triggering
response, so watchers see every change and the request journal does not.
"""

from __future__ import annotations

from fleet.sim.controllers import apiservices, crds, gc, namespaces, workloads
from fleet.sim.storage import store


def install(cluster: store.Cluster) -> None:
    """Attach every controller to `cluster`: garbage collector, namespace content, CRDs, APIServices, workloads."""
    gc.install(cluster)  # the indexed garbage collector (O(1) per event)
    namespaces.install(cluster)
    crds.install(cluster)
    apiservices.install(cluster)
    workloads.install(cluster)
