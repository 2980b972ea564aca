"""fleet: a multi-cluster GitOps fleet manager.

One Git repository is the single source of truth for a fleet of Kubernetes clusters. This package is
layered, pure layers at the bottom, I/O at the edges, imports only downward::

    cli  (typer: builds settings, calls one of the layers below, nothing else)
     |
    server (HTTP API, status page)   engine (scheduler: queues, limits, backoff)   sim (simulated clusters)
     |                                 |
    apply (executes a plan)   watch (list-then-watch, drift)   telemetry (OpenTelemetry setup)
     |
    kube (the only module importing kr8s: a client per cluster, SSA, errors)   source (pygit2, threads)
     |
    ---------------------------------- pure ----------------------------------
    plan (desired vs live vs inventory -> actions)   render (bundle x cluster -> objects, hash)
    placement (selectors, CEL -> targets)   repository (files -> clusters and bundles, validation)
    model (frozen dataclasses flowing between layers)   errors (one FleetError tree)

`fleet.sim` is a Kubernetes-API-compatible server used by the tests, the demo and the benchmarks; fleet's
own layers never import it.
"""

__version__ = "0.1.0"
