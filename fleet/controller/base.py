"""What every part of the engine shares: `Settings` (everything `fleet serve` decides from its options),
`Caches` (placement and render results kept across revisions), and `EngineBase`: the engine's state,
declared once (the revision enforced, the clusters' records, the limits, the state store's health), and
waking a cluster's worker (`_wake`: requests coalesce into one round).

The engine is layered like the package: `EngineBase` < `Persistence` (the state database) < `Watches`
(watch streams, drift repairs, health probes) < `Workers` (one round per cluster) < `Revisions` (fetching
and taking in revisions) < `Engine` (`fleet.controller.engine`: the loop, and the API the HTTP layer uses).
Each part calls only what lies below it.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from opentelemetry import trace

from fleet.clients import kube, source, statedb
from fleet.clients import source as git_source
from fleet.clients import sources as sources_mod
from fleet.cluster import watch as watching
from fleet.controller import audit, notify, rollouts, runtime, shards, shared
from fleet.controller import events as cluster_events
from fleet.controller.metrics import Metrics
from fleet.core import (
    inventory,
    model,
    pipeline,
    placement,
    render,
    repository,
)

log = logging.getLogger("fleet.engine")


@dataclass(frozen=True)
class Settings:
    """Everything `fleet serve` decides from its options (no credentials in here: only where they are)."""

    repo: str
    state_dir: Path
    branch: str = "main"
    rev: str | None = None  # pinned revision: never follow the branch
    path: str = ""
    instance: str = model.DEFAULT_INSTANCE
    interval: float = 30.0  # poll period
    resync_interval: float = 300.0  # full reconcile of an idle cluster
    concurrency: int = 8  # clusters in flight
    allow_empty_repo: bool = False
    credentials: source.Credentials | None = None
    retry_base: float = 2.0
    retry_cap: float = 120.0
    recheck_interval: float = 2.0  # while objects become healthy
    health_timeout: float = 120.0
    round_timeout: float = 600.0  # one cluster's round, health waits excluded (`reconcile.round_limit`)
    fetch_min_gap: float = 1.0  # webhook rate limit: at most one fetch per this many seconds
    grace_period: float = 20.0  # SIGTERM: in-flight rounds may finish within this
    watch: bool = True  # keep watch streams open and repair drift at once
    # Rounds read what the watch streams hold fresh instead of the server (docs/reconcile.md, "Reading from
    # the watch caches"); off: every round reads the server (a hidden switch, FLEET_WATCH_CACHE=0).
    watch_cache: bool = True
    watch_settings: watching.Settings = field(default_factory=watching.Settings)
    sources: sources_mod.Settings = field(default_factory=sources_mod.Settings)  # renderers (docs/sources.md)
    # History, Kubernetes Events and notifications (docs/notifications.md).
    history: audit.Settings = field(default_factory=audit.Settings)
    kube_events: bool = True
    events_settings: cluster_events.Settings = field(default_factory=cluster_events.Settings)
    notify: notify.Settings = field(default_factory=notify.Settings)


# How many of the revisions taken in are remembered with their claims (`EngineBase.adopted`).
ADOPTED = 16
# The claim of a revision whose first sighting is unknown (read back from the mirror): older than any.
LONG_AGO = "1970-01-01T00:00:00Z"


@dataclass
class Caches:
    """Placement and render results kept across revisions, so a one-bundle change recomputes one bundle.

    Not thread-safe: only the fetch loop uses them, one revision at a time."""

    parse: repository.ParseCache = field(default_factory=repository.ParseCache)
    placement: placement.PlacementCache = field(default_factory=placement.PlacementCache)
    render: render.RenderCache = field(default_factory=render.RenderCache)
    sources: sources_mod.Cache = field(default_factory=sources_mod.Cache)


def _content_failure(e: Exception, *, sha: str) -> str:
    """The status message for an unexpected error while parsing, placing or rendering a revision (a bug):
    the revision is refused as a whole and the last good one stays enforced. The exception's text is not
    shown (it may quote the content, a Secret's value say): its type and where it was raised are, and the
    log gets the traceback's frames."""
    frames = traceback.extract_tb(e.__traceback__)
    package = str(Path(__file__).resolve().parents[1])
    ours = [f for f in frames if str(Path(f.filename).resolve()).startswith(package)] or frames
    where = f" at {Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else ""
    log.error(
        "revision %s: internal error %s%s while processing its content (the last good revision is kept)\n%s",
        sha[:7],
        type(e).__name__,
        where,
        "".join(traceback.format_list(frames)).rstrip(),
    )
    return (
        f"internal error {type(e).__name__}{where} while reading this revision: refused as a whole, the last "
        "good revision stays enforced (a bug in fleet: the controller log has the details)"
    )


class EngineBase:
    """The engine's state, declared once for all its parts (set in `Engine.__init__`)."""

    settings: Settings
    kubeconfig: kube.Kubeconfig
    kube_settings: kube.Settings
    store: statedb.StateStore
    metrics: Metrics
    source: git_source.Source
    follow: git_source.Follow
    _pinned: str | None
    _from_mirror: bool
    _nothing_enforced: str | None
    _refused: tuple[str, str] | None
    _fetch_message: str | None
    clusters: dict[str, runtime.ClusterRuntime]
    desired: pipeline.Desired | None
    revision: statedb.RevisionRow
    revision_context: trace.SpanContext | None
    fetch_error: str | None
    fetch_error_at: str | None
    fetched_once: bool
    _fetch_wake: anyio.Event
    _last_trigger: float
    _limiter: anyio.CapacityLimiter
    _tg: anyio.abc.TaskGroup | None
    _db_limiter: anyio.CapacityLimiter
    _in_flight: int
    _stopping: bool
    _forgotten: list[str]
    _idle: anyio.Event
    _caches: Caches
    _tls: kube.TlsDefaults
    source_id: str | None
    claim: inventory.Claim | None
    # The claims of the revisions taken in since the start, oldest first (the last one is `claim`; at most
    # `ADOPTED`): which revisions are newer than the one a rollout holds a cluster at (`Workers._held_back`).
    adopted: list[inventory.Claim]
    store_health: runtime.StoreHealth
    _renders: dict[str, pipeline.Desired]
    _batch: set[str] | None
    _probes: anyio.CapacityLimiter
    audit: audit.Recorder
    rollouts: rollouts.Conductor
    _restored_seen: tuple[str | None, str | None]
    ownership: shards.Ownership  # which clusters this process may write to (replicas: docs/scaling.md)
    shared: shared.Shared | None  # the state of record in a management cluster (`Engine.share`)
    _rounds: dict[str, anyio.CancelScope]  # the rounds in flight, cancelled at their cluster's deadline
    _round_ended: anyio.Event  # set when one of `_rounds` ends
    _stopped: set[str]  # clusters whose round stopped when this replica could not write: again once it can

    def _placed(self, desired: pipeline.Desired) -> dict[str, dict[str, str]]:
        """bundle -> cluster -> rendered hash of the pairs `desired` applies on the clusters this process
        owns (all of them for a single replica, or with the state of record: the coordinator's rollouts
        govern the whole fleet): what its rollouts govern (docs/scaling.md)."""
        hashes = desired.hashes()
        if not self.ownership.enabled or self.shared is not None:
            return hashes
        return {b: {c: h for c, h in per.items() if self.ownership.owns(c)} for b, per in hashes.items()}

    def _wake(
        self,
        rt: runtime.ClusterRuntime,
        *,
        reason: str,
        context: trace.SpanContext | None = None,
    ) -> None:
        if rt.pending is None:
            rt.pending = runtime.Request()
        rt.pending.reasons.add(reason)
        if context is not None:
            rt.pending.revision_context = context
        rt.wake.set()

    def _queue_depth(self) -> float:
        """The clusters waiting for a round: `fleet_queue_depth`, counted when it is scraped (counted at
        every wake, it cost a pass over every cluster per wake: quadratic in the clusters per commit)."""
        return float(sum(1 for r in list(self.clusters.values()) if r.pending is not None))
