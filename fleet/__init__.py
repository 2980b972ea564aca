"""fleet: a multi-cluster GitOps fleet manager.

One Git repository is the single source of truth for a fleet of Kubernetes clusters. The package is
layered, one subpackage per layer, imports only downward (checked by `lint-imports`, pyproject.toml; no
import cycle and no module over 800 lines, tests/test_architecture.py); docs/architecture.md follows one
commit from the webhook to a cluster::

    cli          the `fleet` program (typer): a module per command (validate, plan, render, sync, diff,
     |           serve, status, demo, rollout, history, sim); common (option checks, reading a local
     |           repository), rendering (the renderer options, the sources step), outcomes (what plan and
     |           render print from), statusview (the text tables of status and rollout status),
     |           serveapi (the client of `fleet serve`'s API for status, history and rollout),
     |           syncworkers (the processes of `fleet sync --workers`), replication (`fleet serve`'s
     |           replica options)
    controller   `fleet serve`: engine (the loop and its API) over its parts (base, persistence, watches,
     |           workers, revisions), runtime (each cluster's record and the pure decisions about it),
     |           rollouts + rolloutstore (their records) + rolloutspans (their spans), server + webhook
     |           + ui (HTTP API, status page), metrics, telemetry, audit + events + notify (history,
     |           Kubernetes Events, notifications), replicas (a replica's lease loop), shards (which
     |           clusters this process owns), shared (the state store when replicas share a fleet: the
     |           management cluster's records), following (a follower's watch of the coordinator's
     |           rollout records), summarywatch (every replica's watch of the shards' status
     |           summaries), coalesce (the newest event per name those two watches take in),
     |           historywriter (a replica's history appends, batched)
    cluster      one cluster: reading (observe), rounds (one round) + gate (before each write) + results
     |           (its options and results) + scope (the bundles it plans), reconcile (the fleet; the
     |           names callers use), apply (SSA, prune, inventories), diff, watch (streams), cache (what
     |           they hold), repair (drift), waves (`fleet sync --waves`)
    clients      I/O: kube (the only module importing kr8s), source (git through pygit2), sources (the
     |           Kustomize, Helm and SOPS programs), statedb (SQLite), tls, management (the Lease client
     |           of the management cluster replicas coordinate through), records (the record ConfigMaps
     |           kept there)
    core         pure, no I/O: model, errors, yamlsafe, repository, selectors, cel, placement, validation,
                 render, pipeline (the one pipeline of every command), plan, inventory, health, drift,
                 rollout, backoff, secrets, values, durations, history, notices, clusterevents, partition
                 (`fleet sync --workers`' split), and the coordination of replicas: sharding (shards,
                 assignment), leases, coordination (the decisions of one replica, tick by tick), fencing
                 (the epoch on inventories), records (the state of record's documents), summaries
                 (the shards' status summaries among them)

`fleet.sim` is a Kubernetes-API-compatible server used by the tests, the demo and the benchmarks; fleet's
own layers never import it (only the `fleet sim` command starts it). `fleet.demo` holds the demo
repository's content.
"""

__version__ = "0.1.0"
