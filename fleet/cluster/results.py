"""What a round of a cluster is asked to do and what it reports: `Options`, and the result objects
(`BundleResult`, `ClusterResult`, `FleetResult`) that `fleet sync`, `fleet diff` and the long-running engine
report from; `unreached`, the result of a round that stopped early, and `summary` of its problems.

Callers use them through `fleet.cluster.reconcile`. A `FleetResult` of a revision with errors (a broken
bundle, even one placed nowhere yet) is never ok: it names them (`broken_bundles`, `errors`).

Does not: read, decide or write anything (`fleet.cluster.rounds`, `fleet.cluster.reconcile`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from fleet.core import fencing, health, model, plan
from fleet.core import inventory as inventory_mod


@dataclass(frozen=True)
class Options:
    instance: str = model.DEFAULT_INSTANCE
    concurrency: int = 16  # clusters in flight
    wait: bool = True  # wait for health
    health_timeout: float = 300.0
    health_interval: float = 1.0
    crd_timeout: float = 60.0
    # The whole round of one cluster, health waits excluded (they have `health_timeout` each): on expiry
    # the round stops where it is and the cluster is Unreachable. None: no deadline (tests only).
    cluster_deadline: float | None = 600.0
    # Who writes: the source (named in inventories) and the revision, seen when (each applied object's
    # `fleet.dev/claim`, and the revision record before a delete).
    # None: no source is named, every inventory of the instance is taken as this caller's (earlier fleets).
    claim: inventory_mod.Claim | None = None
    yield_to_newer: bool = True  # back off when the record or an object holds a newer claim of the source
    # A person's `fleet sync --rev` (the emergency rollback): its claim in the revision record before its
    # first write, not only on the objects it writes, so that a controller at another revision stays
    # backed off on the cluster whatever of those objects someone deletes (docs/reconcile.md).
    record_first: bool = False
    # Bundles this controller's rollout holds at an older revision until it reaches the cluster, each with
    # the revisions the controller took in after that one (the claim's among them) and when its own claim
    # of each was first seen: left as they are on a cluster another writer of the source has already put
    # at one of them (`fleet.cluster.gate.left_alone`; `fleet serve` without a management cluster).
    held: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # What apply answers carried into a generation not yet observed (health.Memory), kept across rounds by
    # `fleet serve` per cluster; None: one for this round.
    health_memory: health.Memory | None = None
    # Replicas (docs/scaling.md): asked before every write, the fence this round writes under; None from it
    # means this replica may not write to the cluster now (the round stops). None: no replicas, no fence.
    fence: Callable[[], fencing.Fence | None] | None = None
    # Called with the epoch of a fence of the same lease higher than this round's (`apply.Fenced`): the
    # replica lifts its epoch above it when it still holds the lease (its Lease was created again).
    on_fenced: Callable[[int], None] | None = None

    @property
    def source(self) -> str | None:
        return self.claim.source if self.claim is not None else None


@dataclass(frozen=True)
class BundleResult:
    bundle: str
    state: model.State
    changes: model.ChangeSet = field(default_factory=model.ChangeSet)
    message: str = ""
    objects: int = 0
    hash: str | None = None
    degraded: bool = False  # FAILED because an applied object is unhealthy for good, not a failed write
    # FAILED only by errors a retry can fix (every failed change, or the error that stopped the round):
    # a rollout keeps the cluster in flight and retries it until its deadline (docs/rollouts.md)
    retriable: bool = False
    # PENDING, left as it is: held at an older revision on a cluster another writer of the source has put
    # at a newer revision of this controller's (`Options.held`); nothing of it written or pruned
    left: bool = False

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(
            c.message or f"{c.ref}: {c.action}"
            for c in self.changes.changes
            if c.action in (model.Action.FAILED, model.Action.CONFLICT)
        )


@dataclass(frozen=True)
class ClusterResult:
    cluster: str
    state: model.State
    bundles: Mapping[str, BundleResult] = field(default_factory=dict)  # placed (or in error) here
    removed: Mapping[str, BundleResult] = field(default_factory=dict)  # no longer placed: pruned
    message: str = ""
    warnings: tuple[str, ...] = ()
    requests: int = 0
    seconds: float = 0.0
    # A replica's round stopped by its fence (`apply.NotOwner`, `apply.Fenced`): nothing about the cluster
    # itself, so no verdict for a rollout; the replica goes on once it may write again.
    fenced: bool = False
    # The bundles this round planned (and executed), or stopped on; the others of `bundles` are what the
    # rounds before established, carried over unchanged (`fleet.cluster.scope`: `fleet serve` on its cache).
    planned: tuple[str, ...] = ()

    @functools.cached_property
    def changes(self) -> model.ChangeSet:
        """Every bundle's changes, in one set (made once: callers count it by action)."""
        return model.ChangeSet(
            tuple(c for b in (*self.bundles.values(), *self.removed.values()) for c in b.changes.changes)
        )

    def ok(self, *, wait: bool = True) -> bool:
        """Every placed pair applied (and healthy when waiting); paused and suspended are fine."""
        if self.state is model.State.PAUSED:
            return True
        if self.message and self.state in (model.State.FAILED, model.State.UNREACHABLE):
            return False
        good = {model.State.SYNCED, model.State.SUSPENDED} | (
            {model.State.PROGRESSING} if not wait else set()
        )
        if any(b.state not in good for b in self.bundles.values()):
            return False
        return all(b.state is model.State.SYNCED for b in self.removed.values())


@dataclass(frozen=True)
class FleetResult:
    revision: str | None
    clusters: Mapping[str, ClusterResult]
    wait: bool = True
    # Bundles broken at this revision (name -> why): nothing of them was applied anywhere.
    broken_bundles: Mapping[str, str] = field(default_factory=dict)
    # The revision's errors (PATH:LINE), whatever they break: a broken input is never a success.
    errors: tuple[model.Problem, ...] = ()

    @property
    def ok(self) -> bool:
        if self.errors or self.broken_bundles:
            return False
        return all(c.ok(wait=self.wait) for c in self.clusters.values())

    @property
    def changes(self) -> model.ChangeSet:
        out = model.ChangeSet()
        for c in self.clusters.values():
            out = out + c.changes
        return out


def unreached(
    cluster: str,
    targets: Mapping[str, plan.Target],
    state: model.State,
    message: str,
    *,
    retriable: bool = False,
) -> ClusterResult:
    """Every bundle of a round that stopped early: `state` (`retriable`: by an error a retry can fix)."""
    retriable = retriable and state is model.State.FAILED
    bundles = {
        b: BundleResult(b, model.State.SUSPENDED, message=message)
        if t.suspended
        else BundleResult(b, state, message=message, retriable=retriable)
        for b, t in targets.items()
    }
    return ClusterResult(cluster, state, bundles=bundles, message=message, planned=tuple(sorted(targets)))


def summary(problems: Iterable[str], *, limit: int = 3) -> str:
    items = list(problems)
    text = "; ".join(items[:limit])
    return text + (f" (and {len(items) - limit} more)" if len(items) > limit else "")
