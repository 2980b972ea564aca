"""Per-cluster operations: what fleet does to one cluster through its client.

Owns: executing a plan (`apply`: server-side apply, prune, inventories), one reconcile round of a cluster
(`rounds`, the gate of its writes `gate`, its options and results `results`, the bundles it plans
`scope`) and of the fleet (`reconcile`), dry-run diffs (`diff`), list-then-watch streams (`watch`) and
what they hold for rounds to read (`cache`), drift repair (`drift`), and every bundle's rollout run in the
foreground for `fleet sync --waves` (`waves`).
Does not: choose revisions, schedule clusters or keep status across rounds (fleet.controller; it holds
each cluster's `scope.Memory` too).
Imports fleet.clients and fleet.core only.
"""
