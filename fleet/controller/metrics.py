"""Prometheus metrics of the controller, in a registry of its own (no module-level singletons).

Owns: the metric families and their names; `Metrics` is created by the engine and read by the HTTP layer
(`GET /metrics`). Where a trace is active, duration observations carry its trace id as an exemplar
(visible in the OpenMetrics format). Label values are cluster and bundle names, states and actions only:
never URLs, tokens or object content.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fleet.core import model


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconciles = Counter(
            "fleet_reconciles", "Cluster reconciles by result state.", ["cluster", "state"], registry=r
        )
        self.reconcile_seconds = Histogram(
            "fleet_reconcile_duration_seconds",
            "Wall time of one cluster reconcile.",
            ["cluster"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.objects = Counter(
            "fleet_objects",
            "Objects handled by apply and prune, by action.",
            ["cluster", "action"],
            registry=r,
        )
        self.drift_repairs = Counter(
            "fleet_drift_repairs",
            "Objects re-applied after drift was seen on a watch.",
            ["cluster"],
            registry=r,
        )
        self.watch_reconnects = Counter(
            "fleet_watch_reconnects",
            "Watch streams reopened after an error or close.",
            ["cluster"],
            registry=r,
        )
        self.watch_relists = Counter(
            "fleet_watch_relists", "Full relists after 410 Gone or a reconnect.", ["cluster"], registry=r
        )
        self.watch_expired = Counter(
            "fleet_watch_expired",
            "410 Gone answers to watches and to list continue tokens (each relist after one backs off).",
            ["cluster"],
            registry=r,
        )
        self.watch_streams = Gauge("fleet_watch_streams", "Open watch streams.", ["cluster"], registry=r)
        self.queue_depth = Gauge("fleet_queue_depth", "Clusters waiting for a reconcile.", registry=r)
        self.shard_owned = Gauge(
            "fleet_shard_owned",
            "1 for each shard this replica holds and may write to, 0 for the others (replicas only).",
            ["shard", "replica"],
            registry=r,
        )
        self.shard_holder = Gauge(
            "fleet_shard_holder",
            "1 for the replica holding each shard's lease, as this replica last read the leases (replicas only).",
            ["shard", "replica"],
            registry=r,
        )
        self.shards_unheld = Gauge(
            "fleet_shards_unheld",
            "Shards no live lease holds, as this replica last read the leases (replicas only).",
            registry=r,
        )
        self.rollouts = Gauge(
            "fleet_rollouts", "The latest rollout of each bundle, counted by state.", ["state"], registry=r
        )
        self.rollout_clusters = Gauge(
            "fleet_rollout_clusters",
            "Clusters of each bundle's latest rollout, by their state in it.",
            ["bundle", "state"],
            registry=r,
        )
        self.rounds_in_flight = Gauge(
            "fleet_rounds_in_flight", "Cluster rounds running now (at most --concurrency).", registry=r
        )
        self.cluster_state = Gauge(
            "fleet_cluster_state",
            "1 for the state each cluster is in, 0 for the others.",
            ["cluster", "state"],
            registry=r,
        )
        self.fetches = Counter("fleet_fetches", "Repository fetches by result.", ["result"], registry=r)
        self.revision_timestamp = Gauge(
            "fleet_revision_fetched_timestamp_seconds", "When the newest revision was fetched.", registry=r
        )
        self.state_saving = Gauge(
            "fleet_state_saving", "1 while the state database takes writes, 0 while they fail.", registry=r
        )
        self.state_errors = Counter(
            "fleet_state_save_errors", "Writes of the state database that failed.", registry=r
        )
        self.state_set_aside = Counter(
            "fleet_state_set_aside", "Damaged state databases set aside and rebuilt.", registry=r
        )
        self.http_connections = Gauge(
            "fleet_http_connections", "Open connections to the HTTP API.", registry=r
        )
        self.http_refused = Counter(
            "fleet_http_connections_refused",
            "Connections to the HTTP API closed at once: over the cap, or accept failed for want of resources.",
            ["reason"],
            registry=r,
        )
        self.http_timeouts = Counter(
            "fleet_http_timeouts",
            "Connections to the HTTP API closed because a request head or body did not arrive in time.",
            ["kind"],
            registry=r,
        )
        self.renderer_processes = Counter(
            "fleet_renderer_processes",
            "Renderer processes started (kustomize, helm, sops): a revision that changes no source starts none.",
            ["tool"],
            registry=r,
        )
        self.webhooks_refused = Counter(
            "fleet_webhooks_refused",
            "Webhook calls refused: missing or invalid signature, body too large or too slow.",
            ["reason"],
            registry=r,
        )
        self.history_entries = Counter(
            "fleet_history_entries", "Changes recorded in the history, by outcome.", ["outcome"], registry=r
        )
        self.history_pruned = Counter(
            "fleet_history_pruned",
            "History entries deleted by the retention (--history-retention).",
            registry=r,
        )
        self.events = Counter(
            "fleet_kube_events",
            "Kubernetes Events fleet wrote on clusters, by result: created, updated (a series), failed, dropped.",
            ["result"],
            registry=r,
        )
        self.notifications = Counter(
            "fleet_notifications",
            "Notification deliveries by receiver (github, gitlab, or webhook-<hash of its URL>) and result: delivered, retried, dropped.",
            ["receiver", "result"],
            registry=r,
        )
        self.notifications_pending = Gauge(
            "fleet_notifications_pending",
            "Undelivered notifications in the outbox.",
            ["receiver"],
            registry=r,
        )

    def set_cluster_state(self, cluster: str, state: model.State) -> None:
        for s in model.State:
            if s is model.State.SUSPENDED:
                continue
            self.cluster_state.labels(cluster=cluster, state=s.value).set(1 if s is state else 0)

    def forget_cluster(self, cluster: str) -> None:
        for s in model.State:
            if s is model.State.SUSPENDED:
                continue
            try:
                self.cluster_state.remove(cluster, s.value)
            except KeyError:
                pass
        try:
            self.watch_streams.remove(cluster)
        except KeyError:
            pass

    def holders(self, now: dict[int, str | None], *, before: dict[int, str | None]) -> None:
        """`fleet_shard_holder` and `fleet_shards_unheld` from who holds each shard `now` (`before`: as
        last reported, whose series go when the holder changed)."""
        for shard, who in now.items():
            old = before.get(shard)
            if old is not None and old != who:
                try:
                    self.shard_holder.remove(str(shard), old)
                except KeyError:
                    pass
            if who is not None:
                self.shard_holder.labels(shard=str(shard), replica=who).set(1)
        self.shards_unheld.set(sum(1 for who in now.values() if who is None))
