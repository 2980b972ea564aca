"""fleet sim: simulated Kubernetes API servers for fleet's tests, demo and benchmarks.

Layered, imports only downward (checked by import-linter; docs/sim.md, "Code map")::

    testing              the in-process API: serving() / running() a Sim in a thread, SimHandle
     |
    server               the `fleet sim` process: clusters behind one socket, TLS, faults, journal, admin
     |
    rest                 one cluster's REST surface: routing (path -> verb), requests (bodies, options),
     |                   reads (get, list, watch), writes (create, update, delete), patches (4 types,
     |                   server-side apply), tables (kubectl's Tables), discovery (discovery, OpenAPI)
     |   controllers     what runs in a cluster after a write: crds, gc, namespaces, workloads, updates
     |  /
    preparation          what every write gets, whoever writes: defaults by kind, managedFields
     |
    storage              a cluster's state: store (Cluster), objects, strategy, watches, selectors
     |   merging         the pure engines: ssa (apply, update), structured, managedfields, fieldsets, smp
     |  /
    kinds                the kinds served: types, schemas, structure, defaults, validation, allocation,
     |                   customresources (CRDs and custom resources from their schemas)
    status               Kubernetes Status errors

`rest` and `controllers` never import each other, nor do `storage` and `merging`. Nothing of fleet
outside this package imports it except the `fleet sim` command (`fleet.cli.sim`).
"""
