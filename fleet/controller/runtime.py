"""What the controller knows about each cluster, and the decisions it takes from it, as plain values and
pure functions (no I/O, no clock or randomness except what is passed in): tested in-process.

Owns: `ClusterRuntime` (the mutable record of one registered cluster: state, revision, bundles, failures,
what it was last handed) with `BundleStatus`, `WatchStatus`, `Request` (why a worker should run) and
`StoreHealth`, and each one's part of the status document (docs/operations.md); the decisions:
`record_round` (a round's result -> the cluster's record: the one status rollup of a cluster, over
`model.worst_state`), `cluster_state`, `idle_delay` and `idle_reason` (when a worker looks again, and
why: retry backoff, re-check, resync), `may_use_cache` (whether a round may read the watch cache),
`waits` (a wait for a retry, shown in the status), `changed` (does a revision change what a cluster is
handed), `hold_newest` and `mark_protected`.
Does not: run anything (`fleet.controller.engine` is the loop that calls these), store (the engine saves
the records with `fleet.clients.statedb`), or decide rollouts (`fleet.controller.rollouts`).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from opentelemetry import trace

from fleet.clients import kube, statedb
from fleet.cluster import reconcile
from fleet.cluster import scope as round_scope
from fleet.cluster import watch as watching
from fleet.controller import rollouts
from fleet.core import backoff, health, inventory, model
from fleet.core import history as hist


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_after(seconds: float) -> str:
    """The time `seconds` since the epoch, rounded up to the second (a time never shown early)."""
    return dt.datetime.fromtimestamp(math.ceil(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# States whose message is not an error: nothing to report in lastError.
QUIET = frozenset({model.State.SYNCED, model.State.PAUSED, model.State.SUSPENDED})


@dataclass
class BundleStatus:
    state: model.State
    revision: str | None = None
    objects: int = 0
    last_error: str | None = None
    hash: str | None = None
    since: str | None = None  # when it came to hold `revision` (fleet status --revision)

    def document(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "revision": self.revision,
            "objects": self.objects,
            "lastError": self.last_error,
        }


@dataclass
class WatchStatus:
    streams: int = 0
    last_event_at: str | None = None
    reconnects: int = 0
    relists: int = 0
    expired: int = 0  # 410 Gone answers (metrics only: the status document's shape is fixed)

    def document(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "lastEventAt": self.last_event_at,
            "reconnects": self.reconnects,
            "relists": self.relists,
        }


@dataclass
class Request:
    """Why a cluster worker should run a round; several requests coalesce into one round."""

    reasons: set[str] = field(default_factory=set)
    revision_context: trace.SpanContext | None = None  # the revision trace this round belongs to


@dataclass
class ClusterRuntime:
    """The engine's mutable record of one registered cluster."""

    name: str
    cluster: model.Cluster | None  # None: never had a good registration
    state: model.State = model.State.PENDING
    revision: str | None = None
    last_sync_at: str | None = None
    last_error: str | None = None
    trace_id: str | None = None
    bundles: dict[str, BundleStatus] = field(default_factory=dict)
    watch: WatchStatus = field(default_factory=WatchStatus)
    broken: str | None = None  # the cluster file is broken at this revision
    attempted: bool = False
    failures: int = 0
    pending: Request | None = None
    wake: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope | None = None
    client: kube.Client | None = None
    client_context: str | None = None
    signature: dict[str, str] = field(default_factory=dict)  # bundle -> hash or error, last reconciled
    watcher: watching.ClusterWatch | None = None
    watch_scope: anyio.CancelScope | None = None
    fights: tuple[str, ...] = ()  # messages of fights with another writer, from the watch
    warnings: tuple[str, ...] = ()  # risky settings of its kubeconfig context (insecure-skip-tls-verify)
    # What the last round handed this cluster: per bundle the revision it holds under its rollout, and the
    # objects drift repair keeps it at (the cluster's own revisions, not necessarily the newest).
    holds: dict[str, rollouts.Hold] = field(default_factory=dict)
    objects: Mapping[model.ObjectRef, Mapping[str, Any]] = field(default_factory=dict)
    # The claim of the revision those objects were handed under (that round's claim): drift repair is
    # judged against the revision record with it, not with the engine's newest claim, which it adopts for
    # every cluster at once, before each cluster's next round (docs/reconcile.md, "Replicas of one source").
    claim: inventory.Claim | None = None
    # The bundles of `holds` held at an older revision until their rollout reaches the cluster, each with
    # the newer revisions taken in since (`Workers._held_back`): left as they are, by rounds and repairs,
    # where another writer of the source is already at one of them.
    held: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    waiting: bool = False  # every bundle not Synced is only waiting for its turn in a rollout
    retry_at: str | None = None  # while its worker waits to retry a failed round: when at the latest
    probing: bool = False  # a health probe for a rollout runs (see Engine._probe)
    # What fleet's apply answers carried into generations not yet observed, for the rounds' and probes'
    # health (health.Memory: an old ProgressDeadlineExceeded is not a verdict on a new generation).
    health_memory: health.Memory = field(default_factory=health.Memory)
    # What its rounds established, so that a round on its watch cache plans only the bundles that can
    # have work (fleet.cluster.scope).
    rounds: round_scope.Memory = field(default_factory=round_scope.Memory)
    probe_again: bool = False
    in_round: bool = False  # its worker runs a round now (from its start to the rollouts told)
    look_again: bool = False  # a watched object changed during that round: look after it (`_watch_change`)

    def document(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "labels": dict(self.cluster.labels) if self.cluster is not None else {},
            "revision": self.revision,
            "lastSyncAt": self.last_sync_at,
            "lastError": self._shown_error(),
            "traceId": self.trace_id,
            "warnings": list(self.warnings),
            "watch": self.watch.document(),
            "bundles": {b: s.document() for b, s in sorted(self.bundles.items())},
        }

    def _shown_error(self) -> str | None:
        """The error of its last round (or its fights with another writer); after a failed round whose
        retry the worker waits for, said so with when (the rollout's ``retrying``, docs/rollouts.md)."""
        error = self.last_error or ("; ".join(self.fights) if self.fights else None)
        if error and self.retry_at and self.state in (model.State.FAILED, model.State.UNREACHABLE):
            return f"retrying at {self.retry_at} (failure {self.failures} in a row): {error}"
        return error


@dataclass
class StoreHealth:
    """Whether the state database takes writes; `stateStore` in the status document."""

    error: str | None = None
    since: str | None = None
    set_aside: statedb.SetAside | None = None
    behind: bool = False  # a write failed since everything was last saved: save it all on recovery

    def document(self) -> dict[str, Any]:
        aside = self.set_aside
        return {
            "saving": self.error is None,
            "lastError": self.error,
            "failingSince": self.since,
            "setAside": None
            if aside is None
            else {"path": str(aside.path), "at": aside.at, "reason": aside.reason},
        }


def cluster_state(
    result_state: model.State, message: str, bundle_states: Iterable[model.State]
) -> model.State:
    """The one status rollup of a cluster after a round: Paused or Unreachable as the round says, Failed
    when the round itself failed with a message, else its worst bundle state (`model.worst_state`,
    Suspended bundles left out)."""
    if result_state is model.State.PAUSED:
        return model.State.PAUSED
    if result_state is model.State.UNREACHABLE:
        return model.State.UNREACHABLE
    if message and result_state is model.State.FAILED:
        return model.State.FAILED
    return model.worst_state([s for s in bundle_states if s is not model.State.SUSPENDED])


def record_round(
    rt: ClusterRuntime,
    result: reconcile.ClusterResult,
    *,
    signature: dict[str, str],
    revision: str | None,
    trace_id: str | None,
    protected: Mapping[str, str],
    holds: Mapping[str, rollouts.Hold],
    now: str,
    waiting_reason: Callable[[str], str],
    rolled_back: Callable[[str], bool],
) -> list[hist.Pair]:
    """A round's result -> the cluster's record (pure: `now` is the time of the round's end).

    Per bundle: a bundle left as it is until its turn in a rollout is Pending at what it held, with
    `waiting_reason` (or the round's why, for one it left because another writer is ahead there); a Synced one holds the revision it was handed (the newest, or the older one its
    rollout keeps); a protected (broken) bundle keeps its last good state, Failed with why. Then the
    cluster's state (`cluster_state`), last error, the revision it holds (only when all of it is Synced
    at the newest), its failures in a row (retry backoff) and what it was handed (`signature`; not after
    an unreachable round, which handed nothing). Returns what the round did to each bundle, for the
    history (`rolled_back`: whether the bundle's latest rollout was rolled back)."""
    rt.attempted = True
    rt.last_sync_at = now
    pairs: list[hist.Pair] = []
    rt.trace_id = trace_id or rt.trace_id
    bundles: dict[str, BundleStatus] = {}
    waiting: list[str] = []
    for b, br in result.bundles.items():
        previous = rt.bundles.get(b)
        hold = holds.get(b, rollouts.NEWEST)
        if (hold == rollouts.LEAVE and br.state is model.State.SUSPENDED) or br.left:
            # Left as it is until its turn in the bundle's rollout (`left`: held at an older revision where
            # another writer of the source is already at the newest): Pending, at what it held.
            waiting.append(b)
            bundles[b] = BundleStatus(
                state=model.State.PENDING,
                revision=previous.revision if previous else None,
                objects=previous.objects if previous else 0,
                last_error=br.message if br.left else waiting_reason(b),
                hash=previous.hash if previous else None,
                since=previous.since if previous else None,
            )
            continue
        synced = br.state is model.State.SYNCED
        held = revision if hold == rollouts.NEWEST else hold.revision
        now_holds = held if synced else (previous.revision if previous else None)
        bundles[b] = BundleStatus(
            state=br.state,
            revision=now_holds,
            objects=br.objects,
            last_error=(br.message or None) if br.state not in QUIET else None,
            hash=br.hash,
            since=previous.since
            if previous is not None and previous.revision == now_holds
            else (rt.last_sync_at if now_holds else None),
        )
        pairs.append(pair_of(b, br, previous, to_revision=held, hold=hold, rolled_back=rolled_back(b)))
    for b, br in result.removed.items():
        previous = rt.bundles.get(b)
        pairs.append(
            hist.Pair(
                bundle=b,
                state=br.state.value,
                objects=hist.counts(c.action.value for c in br.changes.changes),
                to_revision=revision,
                from_revision=previous.revision if previous else None,
                removed=True,
            )
        )
    for b in protected:  # broken bundles keep their last good state, and say why
        previous = rt.bundles.get(b)
        if previous is not None:
            bundles[b] = BundleStatus(
                state=model.State.FAILED,
                revision=previous.revision,
                objects=previous.objects,
                last_error=protected[b],
                hash=previous.hash,
                since=previous.since,
            )
    rt.bundles = bundles
    rt.state = cluster_state(result.state, result.message, [s.state for s in bundles.values()])
    errors_ = [s.last_error for b, s in bundles.items() if s.last_error and b not in waiting]
    rt.last_error = (
        None if rt.state is model.State.PAUSED else (result.message or (errors_[0] if errors_ else None))
    )
    rt.waiting = bool(waiting) and all(
        s.state in (model.State.SYNCED, model.State.SUSPENDED) for b, s in bundles.items() if b not in waiting
    )
    newest = all(h == rollouts.NEWEST for h in holds.values())
    if rt.state is model.State.SYNCED and not errors_ and newest:
        rt.revision = revision
    if rt.state in (model.State.FAILED, model.State.UNREACHABLE):
        rt.failures += 1
    else:
        rt.failures = 0
    if rt.state is model.State.SYNCED or rt.state is model.State.PAUSED:
        rt.signature = signature
    elif result.state is not model.State.UNREACHABLE:
        # Progressing or some pairs failed: this revision's desired state was handed to the cluster;
        # the worker re-checks soon, and a failed pair keeps retrying with backoff.
        rt.signature = signature
    return pairs


def pair_of(
    bundle: str,
    br: reconcile.BundleResult,
    previous: BundleStatus | None,
    *,
    to_revision: str | None,
    hold: rollouts.Hold,
    rolled_back: bool,
) -> hist.Pair:
    """What a round did to one bundle on a cluster, for the history."""
    return hist.Pair(
        bundle=bundle,
        state=br.state.value,
        objects=hist.counts(c.action.value for c in br.changes.changes),
        to_revision=to_revision,
        from_revision=previous.revision if previous else None,
        message=br.message,
        failed_before=(previous.last_error or "")
        if previous and previous.state is model.State.FAILED
        else None,
        rollback=hold.kind == "revision" and rolled_back,
    )


def idle_delay(
    rt: ClusterRuntime,
    *,
    retry_base: float,
    retry_cap: float,
    recheck_interval: float,
    resync_interval: float,
    rng: Callable[[], float] = random.random,
) -> float:
    """How long a cluster's worker waits for a wake-up before it runs a round anyway: at once when a round
    is pending; after failures, the retry backoff (`fleet.core.backoff`; the first retry waits twice
    `retry_base`); while objects become healthy (and not just waiting for a rollout's turn), the re-check
    interval; else the resync interval. The waits are jittered by `rng` (0 <= rng() < 1)."""
    if rt.pending is not None:
        return 0.0
    if rt.state in (model.State.FAILED, model.State.UNREACHABLE) and rt.failures:
        return backoff.delay(rt.failures + 1, base=retry_base, cap=retry_cap, max_doublings=10, rng=rng)
    if rt.state in (model.State.PROGRESSING, model.State.PENDING) and rt.attempted and not rt.waiting:
        return jitter(recheck_interval, rng=rng)
    return jitter(resync_interval, rng=rng)


def waits(rt: ClusterRuntime, *, delay: float, reason: str, now: float) -> None:
    """Its worker waits `delay` seconds from `now` (seconds since the epoch) for `reason` (`idle_reason`):
    after a failed round, the status says when the retry comes at the latest (`retry_at`)."""
    rt.retry_at = rfc3339_after(now + delay) if reason == "retry" else None


def idle_reason(rt: ClusterRuntime) -> str:
    """Why the worker runs a round when its idle delay (`idle_delay`) ends: "retry" after failures,
    "recheck" while objects become healthy, else "resync"."""
    if rt.state in (model.State.FAILED, model.State.UNREACHABLE) and rt.failures:
        return "retry"
    if rt.state in (model.State.PROGRESSING, model.State.PENDING) and rt.attempted and not rt.waiting:
        return "recheck"
    return "resync"


# Rounds that verify from the server whatever the watch caches hold: the periodic resync, a retry after a
# failed round, a person's request.
VERIFY_REASONS = frozenset({"resync", "retry", "requested"})


def may_use_cache(rt: ClusterRuntime, request: Request) -> bool:
    """Whether a round may read what the cluster's watch cache holds fresh (docs/reconcile.md): not to
    verify (`VERIFY_REASONS`), and not after a round that failed (what it met is read again)."""
    if request.reasons & VERIFY_REASONS:
        return False
    return rt.state not in (model.State.FAILED, model.State.UNREACHABLE)


def jitter(seconds: float, *, spread: float = 0.1, rng: Callable[[], float] = random.random) -> float:
    """`seconds`, give or take `spread` (a fraction), at random."""
    return seconds * ((1 - spread) + 2 * spread * rng())


def changed(rt: ClusterRuntime, signature: Mapping[str, str]) -> bool:
    """Whether a revision changes what this cluster is handed: a bundle's hash or error differs from what
    it was last handed (a bundle merely left as it is until its rollout's turn is no change), or a bundle
    it was handed is gone."""
    return any(v != "left" and rt.signature.get(b) != v for b, v in signature.items()) or any(
        b not in signature for b in rt.signature
    )


def hold_newest(rt: ClusterRuntime, *, sha: str, holds: Mapping[str, rollouts.Hold], now: str) -> None:
    """A revision that does not change this cluster's desired state: what was Synced at the newest render
    holds it too (since `now` for a bundle whose revision moves)."""
    for b, status in rt.bundles.items():
        if status.state is model.State.SYNCED and holds.get(b, rollouts.NEWEST) == rollouts.NEWEST:
            if status.revision != sha:
                status.revision, status.since = sha, now
    if rt.state is model.State.SYNCED and all(h == rollouts.NEWEST for h in holds.values()):
        rt.revision = sha


def mark_protected(rt: ClusterRuntime, protected: Mapping[str, str]) -> None:
    """Bundles broken at this revision turn Failed on the cluster, with why (their last good state stays)."""
    for b, message in protected.items():
        if b in rt.bundles:
            rt.bundles[b].state = model.State.FAILED
            rt.bundles[b].last_error = message
