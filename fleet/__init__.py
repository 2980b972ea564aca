"""fleet: a multi-cluster GitOps fleet manager.

One Git repository is the single source of truth for a fleet of Kubernetes clusters. This package is
layered, pure layers at the bottom, I/O at the edges, imports only downward::

    cli, commands.*      the `fleet` program (typer): builds settings, calls one layer, prints
     |
    server  ui           HTTP API of `fleet serve` (aiohttp) and the status page's assets
     |
    engine               the controller: revisions, per-cluster workers, limits, backoff, status, traces
     |      \
    state   metrics   telemetry   webhook   statusview
     |
    reconcile  watch     one round on a cluster; list-then-watch streams and drift repair
     |         drift
    apply  diff          executing a plan (server-side apply, prune, inventories); dry-run diffs
     |
    kube                 the only module importing kr8s: a client per cluster, SSA, streams, errors
    source               pygit2, off the event loop
    ---------------------------------- pure ----------------------------------
    plan  inventory  health   desired vs live vs inventory -> actions; inventory codec; object health
    render                    bundle x cluster -> objects and a stable hash
    placement  cel  selectors label selectors and CEL -> which cluster gets which bundle
    repository  yamlsafe      repository files -> validated clusters and bundles; the limited YAML loader
    model  errors             frozen values flowing between layers; one FleetError tree

`fleet.sim` is a Kubernetes-API-compatible server used by the tests, the demo and the benchmarks; fleet's
own layers never import it. `fleet.demo` holds the demo repository's content.
"""

__version__ = "0.1.0"
