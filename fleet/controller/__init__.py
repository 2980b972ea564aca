"""`fleet serve`: the controller process.

Owns: the engine (revisions, per-cluster workers, limits, backoff, status: `engine`), the rollouts'
Conductor (`rollouts`), the HTTP API and status page (`server`, `ui`), webhook verification (`webhook`),
Prometheus metrics (`metrics`), OpenTelemetry setup (`telemetry`), and the audit trail: history,
Kubernetes Events and notifications (`audit`, `events`, `notify`).
Does not: parse flags or print (fleet.cli). Imports fleet.cluster, fleet.clients and fleet.core only.
"""
