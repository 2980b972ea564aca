"""Which clusters this `fleet serve` process may write to, and until when (docs/scaling.md).

Owns: `Ownership`, the engine's one question about replicas, asked before every round, watch and Event
write: a single replica (no management cluster) owns every cluster for ever; a replica of several owns
the clusters of the shards it holds (`fleet.core.sharding.shard_of`) and has renewed within the renew
deadline (`fleet.controller.replicas.Replica.writable`), until that deadline (on the event loop's clock,
`time.monotonic`, so it is a cancel scope's deadline as it is); the fence its round writes under; and the
replica's part of the status document; `on_fenced`, a round's report of a higher fence of a lease it
holds. `moved`: the clusters a change of writable shards gives and takes.

Does not: keep leases (`fleet.controller.replicas`), decide (`fleet.core.coordination`), or cancel
anything itself (the engine does, `fleet.controller.engine`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from fleet.controller import replicas
from fleet.core import fencing, sharding


class Ownership:
    """Ownership of clusters for one process; `replica` None: the only one, owning everything."""

    def __init__(self, replica: replicas.Replica | None = None) -> None:
        self.replica = replica

    @property
    def enabled(self) -> bool:
        return self.replica is not None

    def shard(self, cluster: str) -> int | None:
        if self.replica is None:
            return None
        return sharding.shard_of(cluster, shards=self.replica.shards)

    def owns(self, cluster: str) -> bool:
        """Whether this process may write to `cluster` now."""
        if self.replica is None:
            return True
        return sharding.shard_of(cluster, shards=self.replica.shards) in self.replica.writable()

    def owned(self, clusters: Iterable[str]) -> set[str]:
        """Of `clusters`, those this process may write to now (`owns` of each, the writable shards asked
        once for all of them)."""
        replica = self.replica
        if replica is None:
            return set(clusters)
        held = replica.writable()
        return {c for c in clusters if sharding.shard_of(c, shards=replica.shards) in held}

    def deadline(self, cluster: str) -> float:
        """When (monotonic clock) writes to `cluster` must have stopped: infinity for a single replica,
        minus infinity when it may not write now."""
        if self.replica is None:
            return math.inf
        until = self.replica.deadline(sharding.shard_of(cluster, shards=self.replica.shards))
        return -math.inf if until is None else until

    def fence(self, cluster: str) -> Callable[[], fencing.Fence | None] | None:
        """What a round on `cluster` asks before each write (`fleet.cluster.reconcile.Options.fence`);
        None for a single replica."""
        replica = self.replica
        if replica is None:
            return None
        shard = sharding.shard_of(cluster, shards=replica.shards)
        return lambda: replica.fence(shard)

    def on_fenced(self, cluster: str) -> Callable[[int], None] | None:
        """What a round on `cluster` calls when it met a fence of a higher epoch of its shard's lease
        (`Replica.raise_epoch`); None for a single replica."""
        replica = self.replica
        if replica is None:
            return None
        shard = sharding.shard_of(cluster, shards=replica.shards)
        return lambda above: replica.raise_epoch(shard, above)

    def document(self, clusters: Iterable[str]) -> dict[str, Any] | None:
        """This replica's part of the status document (None for a single replica)."""
        replica = self.replica
        if replica is None:
            return None
        held = replica.writable()
        return {
            "id": replica.config.me,
            "shardCount": replica.shards,
            "shards": sorted(held),
            "coordinating": replica.coordinating(),
            "clusters": sorted(c for c in clusters if sharding.shard_of(c, shards=replica.shards) in held),
        }


def moved(
    clusters: Iterable[str], *, before: frozenset[int], after: frozenset[int], shards: int
) -> tuple[list[str], list[str]]:
    """The clusters a change of writable shards from `before` to `after` gives (first) and takes."""
    gained, lost = [], []
    for name in sorted(clusters):
        s = sharding.shard_of(name, shards=shards)
        if s in after and s not in before:
            gained.append(name)
        elif s in before and s not in after:
            lost.append(name)
    return gained, lost
