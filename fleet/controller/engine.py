"""The long-running controller behind `fleet serve`.

Owns: following a branch (or a pinned revision) by polling with jitter or when the webhook asks; parsing,
placing, running the sources step (`fleet.clients.sources`: Kustomize, Helm, SOPS, cached by content across
revisions) and rendering each new revision once; deciding which clusters a revision changes (their
rendered hashes); one worker task per registered cluster with a coalescing wake-up (repeated requests
while a round runs give one more round, not many), a global limit on clusters in flight, retries with
capped jittered backoff, quick re-checks while objects become healthy, and a periodic full resync; the
in-memory status (docs/operations.md) and its durable copy in `fleet.clients.statedb`; the span tree of
docs/tracing.md (`revision <sha>` root with fetch/parse/placement children, one `cluster <name>` child per
cluster the revision changes, and `drift <cluster>` traces linked to their revision); metrics.

Does not: talk HTTP to users (`fleet.controller.server`), decide ownership or what to write on a cluster
(`fleet.cluster.reconcile` and below), or read git itself (`fleet.clients.source`).

Workers are reconciled like resources: the registered clusters are the desired set of worker keys; a
cluster added to the repo gets a worker without a restart, a removed one has its worker cancelled and is
no longer managed (its objects stay). A revision that breaks a cluster file freezes that cluster at its
last good registration (no writes, Failed); a broken bundle keeps its last good state everywhere
(`reconcile.protected_bundles`) and turns Failed with the error; a revision with no cluster or no bundle
at all is refused as a whole unless `allow_empty_repo`, and so is a revision whose parsing, placement or
rendering raises an unexpected error (a bug: its type and place are in status, the traceback in the log;
the controller keeps running and the last good revision stays enforced). A failing fetch keeps the last
good revision, reports the error and its age, and retries with backoff. Following a branch means
``refs/heads/<branch>`` only (`source.Follow`); each accepted revision is recorded in the mirror
(`source.Source.keep`), so that after a restart with the remote unreachable (or its tip refused) that
revision is enforced, and status says so; with none recorded, status says plainly that nothing is
enforced. A tip over a content limit (`max_files`, `max_total_bytes`) is reported as that, never as a
failed fetch.

Each revision it adopts is its claim on the clusters (`inventory.Claim`: this source's identity, the
revision, and when this controller first saw its branch there, kept across a restart through the state's
revision row): rounds and drift repairs back off when a cluster's revision record holds a newer revision
of the same source (another replica ahead of this one), see docs/reconcile.md.

The state database is a cache (docs/operations.md): a write that fails (a full disk, an I/O error)
never ends the controller; reconciling goes on, the status's `stateStore` and the `fleet_state_saving`
metric say that state is not being saved, every fetch interval tries again, and once a write succeeds
everything known is saved again. A damaged database is set aside and rebuilt (`state.StateStore`), and
said loudly: an ERROR line and `stateStore.setAside`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from fleet.clients import kube, source, statedb
from fleet.clients import sources as sources_mod
from fleet.cluster import reading, reconcile
from fleet.cluster import watch as watching
from fleet.controller import audit, notify, rollouts, runtime, telemetry
from fleet.controller import events as cluster_events
from fleet.controller.metrics import Metrics
from fleet.core import (
    backoff,
    drift,
    errors,
    health,
    inventory,
    model,
    pipeline,
    placement,
    plan,
    render,
    repository,
)
from fleet.core import history as hist
from fleet.core import rollout as ro

log = logging.getLogger("fleet.engine")
tracer = trace.get_tracer("fleet.engine")


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
    watch_settings: watching.Settings = field(default_factory=watching.Settings)
    sources: sources_mod.Settings = field(default_factory=sources_mod.Settings)  # renderers (docs/sources.md)
    # History, Kubernetes Events and notifications (docs/notifications.md).
    history: audit.Settings = field(default_factory=audit.Settings)
    kube_events: bool = True
    events_settings: cluster_events.Settings = field(default_factory=cluster_events.Settings)
    notify: notify.Settings = field(default_factory=notify.Settings)


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


class Engine:
    """The controller. `run()` until cancelled; the HTTP layer calls the small synchronous API."""

    def __init__(
        self,
        settings: Settings,
        *,
        kubeconfig: kube.Kubeconfig,
        kube_settings: kube.Settings,
        store: statedb.StateStore,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.kubeconfig = kubeconfig
        self.kube_settings = kube_settings
        self.store = store
        self.metrics = metrics or Metrics()
        self.source = source.Source(
            settings.repo, state_dir=settings.state_dir, credentials=settings.credentials
        )
        self.follow = source.Follow(branch=settings.branch, rev=settings.rev)
        self._pinned: str | None = None  # a pinned --rev, once resolved and fetched
        self._from_mirror = False  # enforcing the mirror's last good revision: the remote was not read
        self._nothing_enforced: str | None = None  # why nothing at all is enforced (no last good revision)
        self._refused: tuple[str, str] | None = None  # (sha, message): the tip is over a content limit
        self._fetch_message: str | None = None  # why the last fetch failed
        self.clusters: dict[str, runtime.ClusterRuntime] = {}
        self.desired: pipeline.Desired | None = None
        self.revision: statedb.RevisionRow = statedb.RevisionRow()
        self.revision_context: trace.SpanContext | None = None
        self.fetch_error: str | None = None
        self.fetch_error_at: str | None = None
        self.fetched_once = False
        self._fetch_wake = anyio.Event()
        self._last_trigger = 0.0
        self._limiter = anyio.CapacityLimiter(max(1, settings.concurrency))
        self._tg: anyio.abc.TaskGroup | None = None
        self._db_limiter = anyio.CapacityLimiter(1)
        self._in_flight = 0
        self._stopping = False
        self._forgotten: list[str] = []
        self._idle = anyio.Event()
        self._caches = Caches(
            sources=sources_mod.Cache(
                runner=sources_mod.process.Runner(concurrency=settings.sources.concurrency)
            )
        )
        self._tls = kube.TlsDefaults()  # one certificate bundle for every cluster client
        self.source_id: str | None = None  # this source's identity (`source.identity`), worked out once
        self.claim: inventory.Claim | None = None  # of the revision `desired` was built from
        self.store_health = runtime.StoreHealth()
        self.metrics.state_saving.set(1)
        self._renders: dict[str, pipeline.Desired] = {}  # older revisions some cluster still holds, by SHA
        self._batch: set[str] | None = None  # clusters rollouts started while a revision is taken in
        self._probes = anyio.CapacityLimiter(16)  # health probes for rollouts, beside the rounds
        self.audit = audit.Recorder(
            store=store,
            metrics=self.metrics,
            settings=settings.history,
            events=cluster_events.EventWriter(
                instance=settings.instance,
                kubeconfig=kubeconfig,
                kube_settings=kube_settings,
                context_of=self._context_of,
                metrics=self.metrics,
                tls=self._tls,
                settings=settings.events_settings,
            )
            if settings.kube_events
            else None,
            notifier=notify.Notifier(store=store, settings=settings.notify, metrics=self.metrics),
            db_limiter=self._db_limiter,
        )
        self.rollouts = rollouts.Conductor(
            store=store, metrics=self.metrics, wake=self._rollout_wake, save=self._save, observer=self.audit
        )
        self.metrics.rounds_in_flight.set_function(lambda: self._in_flight)
        self._restore()
        self.rollouts.restore()
        self.audit.restore()
        if store.set_aside is not None:
            self._announce_set_aside(store.set_aside)
        # When the revision restored from the state was first seen: it stays that old across a restart.
        self._restored_seen = (self.revision.sha, self.revision.fetched_at)

    # -- the API the HTTP layer uses -----------------------------------------------------------------------

    @property
    def registry(self) -> Any:
        return self.metrics.registry

    @property
    def ready(self) -> bool:
        """The repo was read and every registered cluster had a first reconcile attempt."""
        return self.fetched_once and all(rt.attempted for rt in self.clusters.values())

    def status_document(self) -> dict[str, Any]:
        rev = self.revision
        errors_ = [
            {"path": p.get("path"), "line": p.get("line"), "message": p.get("message")} for p in rev.problems
        ]
        if self.fetch_error:
            errors_.append(
                {"path": source.redact(self.settings.repo), "line": None, "message": self.fetch_error}
            )
        if self._refused is not None:
            errors_.append({"path": self.settings.path or ".", "line": None, "message": self._refused[1]})
        if self.desired is None and self._nothing_enforced is not None:
            errors_.append(
                {
                    "path": source.redact(self.settings.repo),
                    "line": None,
                    "message": f"nothing is enforced: {self._nothing_enforced}",
                }
            )
        return {
            "revision": rev.sha,
            "message": rev.message,
            "author": rev.author,
            "committedAt": rev.committed_at,
            "fetchedAt": rev.fetched_at,
            "errors": errors_,
            "stateStore": self.store_health.document(),
            "clusters": {name: rt.document() for name, rt in sorted(self.clusters.items())},
            "rollouts": self.rollouts.documents(),
        }

    def request_reconcile(self, *, cluster: str | None, bundle: str | None) -> list[str]:
        if cluster is not None and cluster not in self.clusters:
            raise KeyError(f"cluster {cluster}: not registered")
        if bundle is not None and self.desired is not None and bundle not in self.desired.repo.bundles:
            raise KeyError(f"bundle {bundle}: not in the current revision")
        names = [cluster] if cluster else sorted(self.clusters)
        if bundle is not None:
            names = [n for n in names if bundle in self.clusters[n].bundles]
        for n in names:
            self._wake(self.clusters[n], reason="requested")
        return names

    def trigger_fetch(self, *, reason: str) -> bool:
        now = time.monotonic()
        if self._fetch_wake.is_set() or now - self._last_trigger < self.settings.fetch_min_gap:
            log.info("fetch already pending (%s)", reason)
            self._fetch_wake.set()
            return False
        self._last_trigger = now
        log.info("fetch requested: %s", reason)
        self._fetch_wake.set()
        return True

    async def history(self, q: hist.Query) -> dict[str, Any]:
        """``GET /api/v1/history``: entries newest first; `more` when the limit cut some off. Raises
        `errors.StateError` when the database cannot be read (503)."""
        wider = hist.Query(
            cluster=q.cluster, bundle=q.bundle, since=q.since, revision=q.revision, limit=q.limit + 1
        )
        entries = await anyio.to_thread.run_sync(self.store.query_history, wider)
        return {"entries": [e.document() for e in entries[: q.limit]], "more": len(entries) > q.limit}

    async def revision_document(self, revision: str) -> dict[str, Any] | None:
        """``GET /api/v1/revisions/SHA``: which clusters hold a revision (a full or abbreviated id), for
        which bundles and since when; where it has not arrived (what those pairs hold instead); its rollouts
        and its history. None when fleet knows nothing of it; ValueError when the abbreviation is ambiguous."""
        prefix = hist.check_revision(revision)
        known = {s.revision for rt in self.clusters.values() for s in rt.bundles.values() if s.revision}
        known |= {r.revision for r in self.rollouts.latest.values()}
        if self.revision.sha:
            known.add(self.revision.sha)
        matches = sorted(k for k in known if k.startswith(prefix))
        if len(matches) > 1:
            raise ValueError(f"revision {revision!r} is ambiguous: {', '.join(m[:12] for m in matches)}")
        full = matches[0] if matches else prefix
        found = await anyio.to_thread.run_sync(
            self.store.query_history, hist.Query(revision=full, limit=hist.MAX_LIMIT)
        )
        if not matches and not found:
            return None
        full = matches[0] if matches else (found[0].to_revision or found[0].from_revision or full)
        holders: dict[str, dict[str, Any]] = {}
        elsewhere: dict[str, dict[str, Any]] = {}
        for name, rt in sorted(self.clusters.items()):
            for b, st in sorted(rt.bundles.items()):
                if st.revision == full:
                    holders.setdefault(name, {})[b] = {"state": st.state.value, "since": st.since}
                elif st.state is not model.State.SUSPENDED:
                    elsewhere.setdefault(name, {})[b] = {"state": st.state.value, "revision": st.revision}
        rollouts_ = {b: str(r.phase) for b, r in sorted(self.rollouts.latest.items()) if r.revision == full}
        touched = {e.bundle for e in found} | set(rollouts_)
        return {
            "revision": full,
            "newest": full == self.revision.sha,
            "holders": holders,
            # Only the bundles this revision changed: where its change has not arrived.
            "elsewhere": {
                c: {b: v for b, v in per.items() if b in touched}
                for c, per in elsewhere.items()
                if any(b in touched for b in per)
            },
            "rollouts": rollouts_,
            "history": [e.document() for e in found[:500]],
        }

    def rollout_documents(self) -> dict[str, Any]:
        return self.rollouts.documents()

    def rollout_document(self, bundle: str, *, revision: str | None) -> dict[str, Any] | None:
        return self.rollouts.document(bundle, revision=revision)

    async def rollout_action(
        self, bundle: str, action: str, *, actor: str, reason: str, wave: str | None, cluster: str | None
    ) -> dict[str, Any]:
        """A person's action (docs/rollouts.md); KeyError (404) or `ro.NotApplicable` (a ValueError, 409)."""
        done = await self.rollouts.act(
            bundle, ro.Action(action), actor=actor, reason=reason, wave=wave, cluster=cluster
        )
        return ro.document(done, now=time.time())

    def watch_update(
        self,
        cluster: str,
        *,
        streams: int,
        last_event_at: str | None,
        reconnects: int,
        relists: int,
        expired: int = 0,
    ) -> None:
        """The watch layer reports its health per cluster (at most about once a second)."""
        rt = self.clusters.get(cluster)
        if rt is None:
            return
        w = rt.watch
        if reconnects > w.reconnects:
            self.metrics.watch_reconnects.labels(cluster=cluster).inc(reconnects - w.reconnects)
        if relists > w.relists:
            self.metrics.watch_relists.labels(cluster=cluster).inc(relists - w.relists)
        if expired > w.expired:
            self.metrics.watch_expired.labels(cluster=cluster).inc(expired - w.expired)
        w.streams, w.last_event_at, w.reconnects, w.relists = streams, last_event_at, reconnects, relists
        w.expired = expired
        self.metrics.watch_streams.labels(cluster=cluster).set(streams)

    def _repaired(self, batch: watching.RepairBatch) -> Awaitable[None] | None:
        """A coalesced drift repair finished on a cluster (called by its watch): metrics, a round when the
        repair could not do it all, and its history entries (stored before the watch goes on)."""
        rt = self.clusters.get(batch.cluster)
        if rt is None:
            return None
        wrote = batch.changes.count(model.Action.CREATED) + batch.changes.count(model.Action.CONFIGURED)
        if wrote:
            self.metrics.drift_repairs.labels(cluster=batch.cluster).inc(wrote)
        for c in batch.changes.changes:
            self.metrics.objects.labels(cluster=batch.cluster, action=c.action.value).inc()
        rt.fights = tuple(f.message for f in (rt.watcher.active_fights() if rt.watcher else ()))
        if batch.failed or batch.changes.count(model.Action.CONFLICT):
            self._wake(rt, reason="drift")  # a full round sorts out what a targeted repair could not
        log.info(
            "cluster %s: drift repaired (%s)",
            batch.cluster,
            ", ".join(f"{a.value} {batch.changes.count(a)}" for a in model.Action if batch.changes.count(a)),
        )
        bundle_of = {
            c.ref: str(
                ((rt.objects.get(c.ref) or {}).get("metadata") or {})
                .get("labels", {})
                .get(model.LABEL_BUNDLE, "")
            )
            for c in batch.changes.changes
        }
        entries = self.audit.repaired(
            rt.name,
            batch.changes.changes,
            bundle_of={ref: b for ref, b in bundle_of.items() if b},
            revisions={b: s.revision for b, s in rt.bundles.items()},
            trace_id=rt.trace_id,
        )
        if not entries:
            return None

        def write() -> None:
            try:
                self.store.record_history(entries)
            except errors.StateError:
                self.audit.unsaved(entries)
                raise

        return self._save(write)

    def _context_of(self, cluster: str) -> str | None:
        """The kubeconfig context of a registered cluster (for the Event writer's own clients)."""
        rt = self.clusters.get(cluster)
        if rt is None or rt.cluster is None:
            return None
        return rt.cluster.context or rt.cluster.name

    @contextlib.contextmanager
    def _drift_span(self, rt: runtime.ClusterRuntime, refs: tuple[model.ObjectRef, ...]) -> Iterator[None]:
        """The `drift <cluster>` trace around one repair batch, linked to the revision it restores."""
        links = [Link(self.revision_context)] if self.revision_context is not None else []
        with tracer.start_as_current_span(
            f"drift {rt.name}",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            links=links,
            attributes={
                "fleet.cluster": rt.name,
                "fleet.revision": self.revision.sha or "",
                "fleet.objects": len(refs),
                "fleet.refs": [str(r) for r in refs[:50]],
            },
        ) as span:
            yield
            rt.trace_id = telemetry.trace_id_hex(span) or rt.trace_id

    def _start_watch(self, rt: runtime.ClusterRuntime) -> None:
        """One watch per registered, unpaused cluster, in the engine's task group under its own scope."""
        if not self.settings.watch or self._tg is None or rt.cluster is None or rt.client is None:
            return
        if rt.watcher is not None and rt.watcher.client is rt.client:
            return
        self._stop_watch(rt)
        watcher = watching.ClusterWatch(
            rt.client,
            instance=self.settings.instance,
            desired=lambda: rt.objects,
            on_change=self._watch_change,
            settings=self.settings.watch_settings,
            on_health=self.watch_update,
            on_repair=self._repaired,
            around_repair=functools.partial(self._drift_span, rt),
            claim=lambda: self.claim,
        )
        scope = anyio.CancelScope()
        rt.watcher, rt.watch_scope = watcher, scope

        async def run() -> None:
            with scope:
                await watcher.run()

        self._tg.start_soon(run)

    def _watch_change(self, cluster: str) -> None:
        """Something changed on a watched object: while a rollout waits for this cluster's health, look at
        it now instead of at the next re-check (wake-ups coalesce: a burst of events while a round runs
        gives one more round)."""
        rt = self.clusters.get(cluster)
        if rt is None or not self.rollouts.in_flight(cluster):
            return
        if rt.client is None or self._tg is None or not self.rollouts.awaiting_health(cluster):
            self._wake(rt, reason="health")  # not applied yet: the round that applies reports it
            return
        if rt.probing:
            rt.probe_again = True  # one more look once the running one ends: events coalesce
            return
        rt.probing = True
        self._tg.start_soon(self._probe, rt)

    async def _probe(self, rt: runtime.ClusterRuntime) -> None:
        """Look at the live health of the bundles a rollout waits for on this cluster (one list per kind,
        no round: a wave of many clusters must not queue its health behind whole rounds), and hand it to
        the rollouts. A cluster that cannot be read gets a round instead."""
        try:
            while True:
                rt.probe_again = False
                client = rt.client
                if client is None:
                    return
                seen: dict[str, rollouts.Observed] = {}
                for b in self.rollouts.awaiting_health(rt.name):
                    objects = {
                        ref: obj
                        for ref, obj in rt.objects.items()
                        if ((obj.get("metadata") or {}).get("labels") or {}).get(model.LABEL_BUNDLE) == b
                    }
                    if not objects:
                        continue
                    try:
                        async with self._probes:
                            with anyio.fail_after(self.kube_settings.request_timeout * 2 + 5):
                                status, messages = await reading.probe_health(
                                    client, objects, instance=self.settings.instance
                                )
                    except (errors.ClusterError, TimeoutError):
                        self._wake(rt, reason="health")
                        return
                    state = {
                        health.Status.HEALTHY: model.State.SYNCED,
                        health.Status.FAILED: model.State.FAILED,
                    }.get(status, model.State.PROGRESSING)
                    seen[b] = rollouts.Observed(
                        state=state, degraded=state is model.State.FAILED, message="; ".join(messages[:3])
                    )
                if seen:
                    await self.rollouts.observed(rt.name, seen, holds=rt.holds)
                if not rt.probe_again:
                    return
        finally:
            rt.probing = False

    def _rollout_wake(self, cluster: str, context: trace.SpanContext | None) -> None:
        """A rollout sends this cluster a revision (or takes one back): a round now."""
        if self._batch is not None:  # a new revision is being taken in: one wake per cluster at its end
            self._batch.add(cluster)
            return
        rt = self.clusters.get(cluster)
        if rt is not None:
            self._wake(rt, reason="rollout", context=context)

    def _stop_watch(self, rt: runtime.ClusterRuntime) -> None:
        if rt.watch_scope is not None:
            rt.watch_scope.cancel()
        rt.watcher, rt.watch_scope = None, None
        rt.watch.streams = 0

    # -- start-up ------------------------------------------------------------------------------------------

    def _restore(self) -> None:
        """Load what the previous process knew, so status and change detection continue across a restart."""
        try:
            saved = self.store.load()
        except errors.StateError as e:
            if e.corrupt:
                self.store.rebuild(str(e))  # raises StateError when even that fails: serve cannot start
            else:
                self._mark_unsaved(e)
            return
        self.revision = saved.revision
        self.fetch_error = saved.revision.fetch_error
        self.fetch_error_at = saved.revision.fetch_error_at
        for name, row in saved.clusters.items():
            rt = runtime.ClusterRuntime(name=name, cluster=None)
            rt.state = model.State(row.state)
            rt.revision = row.revision
            rt.last_sync_at = row.last_sync_at
            rt.last_error = row.last_error
            rt.trace_id = row.trace_id
            self.clusters[name] = rt
        for (cluster, bundle), t in saved.targets.items():
            owner = self.clusters.get(cluster)
            if owner is None:
                continue
            owner.bundles[bundle] = runtime.BundleStatus(
                state=model.State(t.state),
                revision=t.revision,
                objects=t.objects,
                last_error=t.last_error,
                hash=t.hash,
                since=t.since,
            )
            if t.hash:
                owner.signature[bundle] = t.hash

    # -- the main loop -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled (the caller cancels on SIGTERM after `stop()`)."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._fetch_loop)
                tg.start_soon(self.rollouts.run)
                tg.start_soon(self.audit.run)
        finally:
            self._tg = None
            with anyio.CancelScope(shield=True):
                for rt in self.clusters.values():
                    if rt.client is not None:
                        await rt.client.aclose()
                        rt.client = None

    async def stop(self, *, grace: float | None = None) -> None:
        """Stop taking new work and give in-flight rounds `grace` seconds to finish."""
        self._stopping = True
        deadline = time.monotonic() + (self.settings.grace_period if grace is None else grace)
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            while self._in_flight:
                self._idle = anyio.Event()
                await self._idle.wait()

    async def _fetch_loop(self) -> None:
        failures = 0
        while not self._stopping:
            ok = await self._fetch_once()
            if self.desired is None and not self._stopping:
                await self._enforce_last_good()
            if self.store_health.behind:  # writes of the state database failed: try again
                await self._save_everything()
            failures = 0 if ok else failures + 1
            delay = (
                runtime.jitter(self.settings.interval)
                if ok
                # the engine's first retry waits twice `retry_base` (docs/operations.md)
                else backoff.delay(
                    failures + 1, base=self.settings.retry_base, cap=self.settings.retry_cap, max_doublings=10
                )
            )
            with anyio.move_on_after(delay):
                await self._fetch_wake.wait()
            self._fetch_wake = anyio.Event()

    async def _fetch_once(self) -> bool:
        """Fetch, and act on a new revision. False when the fetch or read failed (last good kept)."""
        started_ns = time.time_ns()
        try:
            if self.settings.rev is None:
                sha = await self.source.fetch_tip(self.follow)
            else:  # pinned: resolved and fetched once
                self._pinned = self._pinned or await self.source.fetch_tip(self.follow)
                sha = self._pinned
        except errors.FleetError as e:
            self._fetch_failed(str(e))
            return False
        fetched_ns = time.time_ns()
        if sha == self.revision.sha and self.desired is not None:
            self.metrics.fetches.labels(result="unchanged").inc()
            self._clear_fetch_error()
            self._refused = None
            return True
        if self._refused is not None and self._refused[0] == sha:
            self.metrics.fetches.labels(result="refused").inc()
            self._clear_fetch_error()
            return True
        try:
            snapshot = await self.source.snapshot(sha, subpath=self.settings.path)
        except errors.InputError as e:  # over a content limit, or no --path folder at this revision
            self._content_refused(sha, e)
            return True
        except errors.FleetError as e:  # the mirror cannot be read
            self._fetch_failed(str(e))
            return False
        self.metrics.fetches.labels(result="new").inc()
        await self._new_revision(snapshot, started_ns=started_ns, fetched_ns=fetched_ns)
        return True

    def _content_refused(self, sha: str, error: errors.InputError) -> None:
        """The tip was fetched but its content is refused as a whole (docs/operations.md): not a fetch
        failure. The last good revision stays enforced; the same tip is not read again."""
        self.metrics.fetches.labels(result="refused").inc()
        self._clear_fetch_error()
        detail = error.args[0] if error.args else str(error)
        if not detail.startswith("revision "):
            detail = f"revision {sha[:12]}: {detail}"
        message = f"{detail} (not applied; the last good revision stays enforced)"
        if self._refused != (sha, message):
            log.error("%s", message)
        self._refused = (sha, message)

    async def _enforce_last_good(self) -> None:
        """Nothing is enforced yet in this process (a restart) and the followed revision cannot be used:
        enforce the last good revision the mirror holds, or say plainly that nothing is enforced."""
        try:
            sha = await self.source.last_good(self.follow)
            snapshot = None if sha is None else await self.source.snapshot(sha, subpath=self.settings.path)
            why = f"the local mirror holds no last good revision of {self.follow}"
        except errors.FleetError as e:
            snapshot, why = None, str(e)
        if snapshot is None:
            if self._nothing_enforced != why:
                log.error("nothing is enforced: %s", why)
                for rt in self.clusters.values():  # restored from the state database: not reconciled now
                    rt.state = model.State.PENDING
                    rt.last_error = f"not reconciled since the restart: nothing is enforced ({why})"
            self._nothing_enforced = why
            self._refresh_fetch_error()
            return
        self._nothing_enforced = None
        now = time.time_ns()
        await self._new_revision(snapshot, started_ns=now, fetched_ns=now, from_mirror=True)
        log.warning(
            "enforcing the last good revision %s from the local mirror", (snapshot.revision or "")[:12]
        )
        self._refresh_fetch_error()

    def _clear_fetch_error(self) -> None:
        if self.fetch_error is not None:
            log.info("repository reachable again")
        self.fetch_error = None
        self.fetch_error_at = None
        self._fetch_message = None
        self._from_mirror = False

    def _fetch_failed(self, message: str) -> None:
        self.metrics.fetches.labels(result="error").inc()
        if self.fetch_error is None:
            self.fetch_error_at = runtime.now_rfc3339()
        self._fetch_message = message
        self._refresh_fetch_error()
        log.warning("%s", self.fetch_error)
        self.fetched_once = self.fetched_once or self.desired is not None

    def _refresh_fetch_error(self) -> None:
        """The status line of a failing fetch: what fails since when, and what is enforced meanwhile."""
        message = self._fetch_message
        if message is None or self.fetch_error_at is None:
            return
        since = self.fetch_error_at
        if self.desired is None:
            self.fetch_error = f"fetch failed (since {since}): {message}"
        elif self._from_mirror:
            rev = self.revision
            self.fetch_error = (
                f"fetch failed (last good revision kept, since {since}): {message}; enforcing the last good "
                f"revision {(rev.sha or '')[:12]} from the local mirror (committed {rev.committed_at}, "
                f"fetched {rev.fetched_at or 'before the restart'})"
            )
        else:
            self.fetch_error = f"fetch failed (last good revision kept, since {since}): {message}"

    async def _new_revision(
        self, snapshot: model.Snapshot, *, started_ns: int, fetched_ns: int, from_mirror: bool = False
    ) -> None:
        """Parse, place and render a revision and hand it to the workers; `from_mirror`: the last good
        revision read back from the mirror after a restart (the remote was not read)."""
        sha = snapshot.revision or ""
        fetched_at = self.revision.fetched_at if from_mirror and self.revision.sha == sha else None
        root = tracer.start_span(
            f"revision {sha[:7]}",
            kind=SpanKind.INTERNAL,
            start_time=started_ns,
            attributes={"fleet.revision": sha},
        )
        ctx = trace.set_span_in_context(root)
        tracer.start_span("fetch", context=ctx, start_time=started_ns).end(end_time=fetched_ns)
        try:
            try:
                with tracer.start_as_current_span("parse", context=ctx) as span:
                    repo = await repository.parse_in_thread(snapshot, cache=self._caches.parse)
                    span.set_attribute("fleet.files", len(snapshot.files))
                    span.set_attribute("fleet.problems", len(repo.problems))
                with tracer.start_as_current_span("placement", context=ctx) as span:
                    placed = await anyio.to_thread.run_sync(
                        functools.partial(placement.place, repo, cache=self._caches.placement)
                    )
                    expanded = await self._expand(repo, placed, snapshot)
                    desired = await anyio.to_thread.run_sync(
                        functools.partial(
                            pipeline.place_and_render,
                            repo,
                            revision=snapshot.revision,
                            instance=self.settings.instance,
                            placement_cache=self._caches.placement,
                            render_cache=self._caches.render,
                            placed=placed,
                            expanded=expanded,
                        )
                    )
                    span.set_attribute("fleet.bundles", len(desired.repo.bundles))
                    span.set_attribute("fleet.clusters", len(desired.repo.clusters))
                refused = self._refusal(desired)
                problems = tuple(
                    {"path": p.path, "line": p.line, "message": p.message}
                    for p in desired.problems
                    if p.severity is model.Severity.ERROR
                )
            except Exception as e:  # no revision's content may ever end the controller
                refused, problems = _content_failure(e, sha=sha), ()
            if refused:
                problems = ({"path": self.settings.path or ".", "line": 1, "message": refused}, *problems)
                root.set_status(Status(StatusCode.ERROR, refused))
                self._set_revision(snapshot, problems)
                if not from_mirror:
                    self._clear_fetch_error()
                self.fetched_once = True
                log.error("revision %s refused: %s", sha[:7], refused)
                await self._persist_revision()
                return
            claim = await self._claim(snapshot, from_mirror=from_mirror)
            previous = self.desired
            self.desired, self.claim = desired, claim  # together: a round reads both at once
            if previous is not None and previous.repo.revision:
                self._renders.setdefault(previous.repo.revision, previous)  # clusters may still hold it
            self._set_revision(
                snapshot, problems, fetched_at=fetched_at if from_mirror else runtime.now_rfc3339()
            )
            if from_mirror:
                self._from_mirror = True
            else:
                self._clear_fetch_error()
                self._refused = None
                await self._keep(sha)
            self.revision_context = root.get_span_context()
            self.audit.commit(sha, author=snapshot.author, subject=self.revision.message)
            self._update_registry(desired)
            self._batch = set()
            await self.rollouts.begin(
                revision=sha,
                author=snapshot.author,
                repo=desired.repo,
                placed=desired.hashes(),
                waves=desired.waves,
                held=self._held,
                paused={n for n, c in desired.repo.clusters.items() if c.paused},
                context=self.revision_context,
            )
            await self._load_renders(keep=desired)
            started, self._batch = self._batch, None
            changed = self._wake_changed(desired, sha=sha, started=started)
            forgotten, self._forgotten = self._forgotten, []
            for name in forgotten:
                await self._save(functools.partial(self.store.forget_cluster, name))
            root.set_attribute("fleet.clusters_selected", len(changed))
            root.set_attribute("fleet.bundles", len(desired.repo.bundles))
            self.fetched_once = True
            await self._persist_revision()
            log.info(
                "revision %s: %d clusters, %d bundles, %d clusters to reconcile",
                sha[:7],
                len(desired.repo.clusters),
                len(desired.repo.bundles),
                len(changed),
            )
        finally:
            root.end()

    async def _expand(
        self, repo: model.Repo, placed: model.PlacementResult, snapshot: model.Snapshot
    ) -> dict[str, model.Expansion]:
        """The sources step (Kustomize, Helm, SOPS: docs/sources.md), in a span of its own when it has
        anything to render; renderer processes started are counted in the metrics."""
        if not any(b.sourced for b in repo.bundles.values()):
            return {}
        cache = self._caches.sources
        before = dict(cache.runner.started)
        with tracer.start_as_current_span("sources") as span:
            expanded = await sources_mod.expand(
                repo, placed, snapshot, settings=self.settings.sources, cache=cache
            )
            started = {t: n - before.get(t, 0) for t, n in cache.runner.started.items()}
            for tool, n in started.items():
                if n:
                    self.metrics.renderer_processes.labels(tool=tool).inc(n)
            span.set_attribute("fleet.renderer_processes", sum(started.values()))
            span.set_attribute("fleet.bundles_expanded", len(expanded))
        return expanded

    async def _keep(self, sha: str) -> None:
        """Record an accepted revision in the mirror: after a restart without the remote, it is enforced."""
        try:
            await self.source.keep(self.follow, sha)
        except errors.FleetError as e:
            log.warning("cannot record the last good revision %s: %s", sha[:12], e)

    async def _claim(self, snapshot: model.Snapshot, *, from_mirror: bool = False) -> inventory.Claim:
        """This controller's claim for a revision it adopts (see the module docstring). A revision read
        back from the mirror (the remote unreachable after a restart) counts as seen when the state says
        it was first fetched, else as seen long ago: it never overrides what another replica recorded."""
        if self.source_id is None:
            self.source_id = await anyio.to_thread.run_sync(
                functools.partial(source.identity, self.settings.repo, subpath=self.settings.path)
            )
        sha = snapshot.revision or ""
        restored_sha, restored_at = self._restored_seen
        if sha and sha == restored_sha and restored_at:
            seen = restored_at
        elif from_mirror:
            seen = LONG_AGO
        else:
            seen = inventory.now_rfc3339()
        return inventory.Claim(
            source=self.source_id,
            revision=sha,
            observed_at=seen,
            committed_at=snapshot.committed_at,
            writer=f"fleet serve on {socket.gethostname()}",
        )

    def _refusal(self, desired: pipeline.Desired) -> str | None:
        if self.settings.allow_empty_repo:
            return None
        empty = pipeline.emptiness(desired.repo)
        return (
            f"{empty} at this revision: refused as a whole (a broken checkout looks like this)"
            if empty
            else None
        )

    def _set_revision(
        self, snapshot: model.Snapshot, problems: tuple[dict[str, Any], ...], *, fetched_at: str | None = ""
    ) -> None:
        self.revision = statedb.RevisionRow(
            sha=snapshot.revision,
            message=(snapshot.message or "").splitlines()[0] if snapshot.message else None,
            author=snapshot.author,
            committed_at=snapshot.committed_at,
            fetched_at=runtime.now_rfc3339() if fetched_at == "" else fetched_at,
            problems=problems,
        )
        self.metrics.revision_timestamp.set(time.time())

    def _revision_row(self) -> statedb.RevisionRow:
        return statedb.RevisionRow(
            **{
                **self.revision.__dict__,
                "fetch_error": self.fetch_error,
                "fetch_error_at": self.fetch_error_at,
            }
        )

    async def _persist_revision(self) -> None:
        await self._save(functools.partial(self.store.record_revision, self._revision_row()))

    def _held(self, cluster: str, bundle: str) -> tuple[str | None, str | None]:
        """What a cluster holds of a bundle: the revision it was last Synced at there (None: unknown or
        nothing) and the hash last handed to it."""
        rt = self.clusters.get(cluster)
        if rt is None:
            return None, None
        status = rt.bundles.get(bundle)
        return (status.revision if status is not None else None), rt.signature.get(bundle)

    async def _load_renders(self, *, keep: pipeline.Desired) -> None:
        """Have the render of every older revision a cluster still holds at hand (the previous revision's is
        kept from memory; others, after a restart, come from the mirror: parse, place and render at that
        revision), and drop those no longer needed."""
        needed = self.rollouts.needed_revisions() - {keep.repo.revision}
        for sha in sorted(needed - set(self._renders)):
            try:
                snapshot = await self.source.snapshot(sha, subpath=self.settings.path)
                repo = await repository.parse_in_thread(snapshot)
                self._renders[sha] = await anyio.to_thread.run_sync(
                    functools.partial(
                        pipeline.place_and_render, repo, revision=sha, instance=self.settings.instance
                    )
                )
            except errors.FleetError as e:
                log.error(
                    "revision %s: cannot render it for the clusters that still hold it: %s", sha[:12], e
                )
        for sha in set(self._renders) - needed:
            del self._renders[sha]

    def _composite(
        self, rt: runtime.ClusterRuntime, desired: pipeline.Desired
    ) -> tuple[dict[str, plan.Target], dict[str, rollouts.Hold]]:
        """This cluster's targets under the rollouts: per bundle the newest revision's, an older revision's
        the cluster still holds, or one that leaves the bundle as it is there."""
        targets: dict[str, plan.Target] = {}
        holds: dict[str, rollouts.Hold] = {}
        for b, t in desired.targets.get(rt.name, {}).items():
            hold = rollouts.NEWEST if t.desired is None or t.suspended else self.rollouts.hold(b, rt.name)
            if hold.kind == "revision":
                old = self._renders.get(hold.revision or "")
                older = old.targets.get(rt.name, {}).get(b) if old is not None else None
                if older is not None and older.desired is not None:
                    targets[b] = older
                else:
                    hold = rollouts.LEAVE
            if hold == rollouts.NEWEST:
                targets[b] = t
            elif hold == rollouts.LEAVE:
                targets[b] = plan.Target(b, suspended=True)
            holds[b] = hold
        return targets, holds

    def _update_registry(self, desired: pipeline.Desired) -> None:
        """Start, stop and update cluster workers for this revision."""
        repo = desired.repo
        wanted = set(repo.clusters) | set(repo.broken_clusters)
        for name in sorted(set(self.clusters) - wanted):
            rt = self.clusters.pop(name)
            if rt.scope is not None:
                rt.scope.cancel()
            self._stop_watch(rt)
            self.metrics.forget_cluster(name)
            self._forgotten.append(name)
            log.info("cluster %s: removed from the repository, no longer managed (its objects stay)", name)
        for name in sorted(wanted):
            if name not in self.clusters:
                self.clusters[name] = runtime.ClusterRuntime(name=name, cluster=None)
            rt = self.clusters[name]
            if name in repo.broken_clusters:
                problems = repo.broken_clusters[name]
                rt.broken = str(problems[0]) if problems else "broken cluster file"
                self._stop_watch(rt)
                rt.state = model.State.FAILED
                rt.last_error = f"cluster {name}: registration frozen at its last good version: {rt.broken}"
                rt.attempted = True
            else:
                rt.broken = None
                rt.cluster = repo.clusters[name]
            runtime.mark_protected(rt, desired.protected)

    def _wake_changed(self, desired: pipeline.Desired, *, sha: str, started: set[str]) -> list[str]:
        """Wake the clusters whose targets this revision changes under the rollouts (a bundle merely left
        as it is until its turn is no change), and those a rollout started; start workers."""
        changed: list[str] = []
        for name in sorted(set(desired.repo.clusters) | set(desired.repo.broken_clusters)):
            rt = self.clusters[name]
            targets, holds = self._composite(rt, desired)
            sig = pipeline.signature(targets, desired.protected)
            moved = runtime.changed(rt, sig)
            if rt.scope is None and rt.cluster is not None and self._tg is not None:
                self._tg.start_soon(self._worker, rt)
            if rt.broken is None and (moved or name in started):
                changed.append(name)
                self._wake(rt, reason="revision", context=self.revision_context)
            elif rt.broken is None and not rt.attempted:
                self._wake(rt, reason="start")
            elif rt.broken is None:
                runtime.hold_newest(rt, sha=sha, holds=holds, now=runtime.now_rfc3339())
        return changed

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
        self.metrics.queue_depth.set(sum(1 for r in self.clusters.values() if r.pending is not None))

    # -- cluster workers -------------------------------------------------------------------------------------

    async def _worker(self, rt: runtime.ClusterRuntime) -> None:
        with anyio.CancelScope() as scope:
            rt.scope = scope
            try:
                while not self._stopping:
                    delay = self._idle_delay(rt)
                    with anyio.move_on_after(delay):
                        await rt.wake.wait()
                    rt.wake = anyio.Event()
                    if self._stopping:
                        return
                    request = rt.pending or runtime.Request(reasons={"resync"})
                    rt.pending = None
                    self.metrics.queue_depth.set(
                        sum(1 for r in self.clusters.values() if r.pending is not None)
                    )
                    if rt.broken is not None or rt.cluster is None or self.desired is None:
                        continue
                    async with self._limiter:
                        self._in_flight += 1
                        try:
                            await self._round(rt, request)
                        finally:
                            self._in_flight -= 1
                            if not self._in_flight:
                                self._idle.set()
            finally:
                rt.scope = None

    def _idle_delay(self, rt: runtime.ClusterRuntime) -> float:
        s = self.settings
        return runtime.idle_delay(
            rt,
            retry_base=s.retry_base,
            retry_cap=s.retry_cap,
            recheck_interval=s.recheck_interval,
            resync_interval=s.resync_interval,
        )

    def _client(self, rt: runtime.ClusterRuntime, cluster: model.Cluster) -> kube.Client:
        context = cluster.context or cluster.name
        if rt.client is None or rt.client_context != context:
            self._stop_watch(rt)
            rt.client = kube.Client(
                cluster=cluster.name,
                context=self.kubeconfig.context(context),
                settings=self.kube_settings,
                tls=self._tls,
            )
            rt.client_context = context
        return rt.client

    async def _round(self, rt: runtime.ClusterRuntime, request: runtime.Request) -> None:
        desired = self.desired
        cluster = rt.cluster
        assert desired is not None and cluster is not None
        targets, holds = self._composite(rt, desired)
        sig = pipeline.signature(targets, desired.protected)
        rt.objects = drift.desired_objects(targets, instance=self.settings.instance)
        rt.holds = dict(holds)
        revision = self.revision.sha
        claim = self.claim
        links = []
        if request.revision_context is not None:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(request.revision_context))
            name = f"cluster {rt.name}"
        else:
            parent = trace.set_span_in_context(trace.INVALID_SPAN)  # a trace of its own
            name = f"drift {rt.name}" if "drift" in request.reasons else f"cluster {rt.name}"
            if self.revision_context is not None:
                links = [Link(self.revision_context)]
        started = time.monotonic()
        with tracer.start_as_current_span(
            name,
            context=parent,
            links=links,
            attributes={
                "fleet.cluster": rt.name,
                "fleet.revision": revision or "",
                "fleet.reason": ",".join(sorted(request.reasons)),
            },
        ) as span:
            options = reconcile.Options(
                instance=self.settings.instance,
                wait=False,
                health_timeout=self.settings.health_timeout,
                cluster_deadline=self.settings.round_timeout,
                claim=claim,
            )
            result = await reconcile.reconcile_cluster(
                self._client(rt, cluster), cluster, targets, options=options, protected=desired.shield
            )
            changes = result.changes
            for action in model.Action:
                span.set_attribute(f"fleet.objects.{action.value}", changes.count(action))
            span.set_attribute("fleet.state", result.state.value)
            if result.state in (model.State.FAILED, model.State.UNREACHABLE):
                span.set_status(Status(StatusCode.ERROR, result.message or result.state.value))
                if result.message:
                    span.add_event("error", {"message": result.message})
            trace_id = telemetry.trace_id_hex(span)
        pairs = self._record(
            rt, result, signature=sig, revision=revision, trace_id=trace_id, desired=desired, holds=holds
        )
        entries = self.audit.round(
            rt.name,
            pairs,
            trace_id=trace_id,
            rollback_actor=lambda b: hist.rollback_actor(self.rollouts.latest.get(b)),
        )
        if cluster.paused or result.state is model.State.PAUSED:
            self._stop_watch(rt)
        elif result.state is not model.State.UNREACHABLE:
            self._start_watch(rt)
            if rt.watcher is not None:
                rt.watcher.set_kinds(drift.kinds(rt.objects))
        await self.rollouts.observed(
            rt.name,
            {
                b: rollouts.Observed(state=br.state, degraded=br.degraded, message=br.message)
                for b, br in result.bundles.items()
            },
            holds=holds,
            unreachable=result.message if result.state is model.State.UNREACHABLE else "",
        )
        seconds = time.monotonic() - started
        self.metrics.reconciles.labels(cluster=rt.name, state=rt.state.value).inc()
        exemplar = {"trace_id": trace_id} if trace_id else None
        self.metrics.reconcile_seconds.labels(cluster=rt.name).observe(seconds, exemplar=exemplar)
        for c in changes.changes:
            self.metrics.objects.labels(cluster=rt.name, action=c.action.value).inc()
        self.metrics.set_cluster_state(rt.name, rt.state)
        await self._persist_cluster(rt, history=entries)

    def _record(
        self,
        rt: runtime.ClusterRuntime,
        result: reconcile.ClusterResult,
        *,
        signature: dict[str, str],
        revision: str | None,
        trace_id: str | None,
        desired: pipeline.Desired,
        holds: Mapping[str, rollouts.Hold],
    ) -> list[hist.Pair]:
        """Take a round's result into the cluster's status (`runtime.record_round`); what it did to each
        bundle, for the history."""
        if result.warnings != rt.warnings:
            for w in result.warnings:
                log.warning("cluster %s: %s", rt.name, w)
            rt.warnings = tuple(result.warnings)

        def rolled_back(bundle: str) -> bool:
            r = self.rollouts.latest.get(bundle)
            return r is not None and r.phase is ro.Phase.ROLLED_BACK

        pairs = runtime.record_round(
            rt,
            result,
            signature=signature,
            revision=revision,
            trace_id=trace_id,
            protected=desired.protected,
            holds=holds,
            now=runtime.now_rfc3339(),
            waiting_reason=lambda bundle: self.rollouts.waiting(bundle, rt.name),
            rolled_back=rolled_back,
        )
        log.info(
            "cluster %s: %s (%s)",
            rt.name,
            rt.state.value,
            ", ".join(f"{a.value} {result.changes.count(a)}" for a in model.Action if result.changes.count(a))
            or "no changes",
        )
        return pairs

    def _cluster_rows(
        self, rt: runtime.ClusterRuntime
    ) -> tuple[statedb.ClusterRow, tuple[statedb.TargetRow, ...]]:
        row = statedb.ClusterRow(
            name=rt.name,
            state=rt.state.value,
            revision=rt.revision,
            last_sync_at=rt.last_sync_at,
            last_error=rt.last_error,
            trace_id=rt.trace_id,
        )
        targets = tuple(
            statedb.TargetRow(
                cluster=rt.name,
                bundle=b,
                state=s.state.value,
                revision=s.revision,
                hash=rt.signature.get(b),
                objects=s.objects,
                last_error=s.last_error,
                updated_at=rt.last_sync_at,
                since=s.since,
            )
            for b, s in sorted(rt.bundles.items())
        )
        return row, targets

    async def _persist_cluster(
        self, rt: runtime.ClusterRuntime, *, history: tuple[hist.Entry, ...] = ()
    ) -> None:
        row, targets = self._cluster_rows(rt)

        def write() -> None:
            try:
                self.store.record_cluster(row, targets, drop_other_targets=True, history=history)
            except errors.StateError:
                self.audit.unsaved(history)
                raise

        await self._save(write)

    # -- the state database: a cache whose failures never end the controller ----------------------------------

    async def _save(self, write: Callable[[], None]) -> None:
        """Run one write of the state database off the loop, shielded from cancellation."""
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(write, limiter=self._db_limiter)
            except errors.StateError as e:
                if not e.corrupt:
                    self._mark_unsaved(e)
                    return
                try:
                    aside = await anyio.to_thread.run_sync(
                        self.store.rebuild, str(e), limiter=self._db_limiter
                    )
                except errors.StateError as again:
                    self._mark_unsaved(again)
                    return
                self._announce_set_aside(aside)
                self.store_health.behind = True
            if self.store_health.behind:
                await self._save_everything()

    async def _save_everything(self) -> None:
        """After failed writes (or a rebuild): save the revision and every cluster's rows as they are now."""
        revision = self._revision_row()
        rows = [self._cluster_rows(rt) for rt in self.clusters.values()]
        rollout_rows = self.rollouts.rows()
        entries, messages = self.audit.take_unsaved()

        def write_all() -> None:
            self.store.record_revision(revision)
            for row, targets in rows:
                self.store.record_cluster(row, targets, drop_other_targets=True)
            try:
                self.store.record_rollouts(rollout_rows, history=entries, outbox=messages)
            except errors.StateError:
                self.audit.unsaved(entries, messages)
                raise

        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(write_all, limiter=self._db_limiter)
            except errors.StateError as e:
                self._mark_unsaved(e)
                return
        if messages:
            self.audit.stored()
        health = self.store_health
        if health.error is not None:
            log.info("state database: saving again (it failed from %s to now)", health.since)
        health.error, health.since, health.behind = None, None, False
        self.metrics.state_saving.set(1)

    def _mark_unsaved(self, e: errors.StateError) -> None:
        health = self.store_health
        health.behind = True
        health.since = health.since or runtime.now_rfc3339()
        health.error = str(e)
        self.metrics.state_saving.set(0)
        self.metrics.state_errors.inc()
        log.error("state database: cannot save (%s); reconciling goes on, state is kept in memory", e)

    def _announce_set_aside(self, aside: statedb.SetAside) -> None:
        self.store_health.set_aside = aside
        self.metrics.state_set_aside.inc()
        log.error(
            "state database was damaged (%s): set aside as %s and rebuilt empty; it is a cache: every "
            "cluster is checked again, nothing on the clusters is lost",
            aside.reason,
            aside.path,
        )
