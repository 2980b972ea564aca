"""fleet: a multi-cluster GitOps fleet manager.

One Git repository is the single source of truth for a fleet of Kubernetes clusters. The package is
layered, one subpackage per layer, imports only downward (checked by `lint-imports`, pyproject.toml)::

    cli          the `fleet` program (typer): one module per command; builds settings, calls one layer, prints
     |
    controller   `fleet serve`: engine (revisions, per-cluster workers, limits, backoff, status), rollouts'
     |           Conductor, HTTP API and webhook, status page (ui), metrics, telemetry, the audit trail
     |           (audit: history, Kubernetes Events, notifications)
    cluster      per-cluster operations: apply (SSA, prune, inventories), reconcile (one round), diff,
     |           watch (list-then-watch streams), drift (repair), waves (`fleet sync --waves`)
    clients      I/O: kube (the only module importing kr8s), source (git through pygit2), sources (the
     |           Kustomize, Helm and SOPS programs), statedb (SQLite), tls
    core         pure, no I/O: model, errors, yamlsafe, repository, selectors, cel, placement, render,
                 plan, inventory, health, rollout, durations, history, notices, clusterevents

`fleet.sim` is a Kubernetes-API-compatible server used by the tests, the demo and the benchmarks; fleet's
own layers never import it (only the `fleet sim` command starts it). `fleet.demo` holds the demo
repository's content.
"""

__version__ = "0.1.0"
