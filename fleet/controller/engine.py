"""The long-running controller behind `fleet serve`: `Engine`, the loop, and the API the HTTP layer uses.

Owns: building the engine's parts and its state, restoring what the previous process knew (state
database, rollouts, history), running the fetch loop, the rollouts' conductor and one worker per cluster in
one task group until cancelled, a graceful stop (in-flight rounds get `grace_period`), and the small
API of `fleet.controller.server` (status document, reconcile requests, fetch triggers and pushes, history,
revisions, rollouts and a person's actions on them; with replicas, what another replica owns is answered
from the state of record or handed on to its owner through it, `fleet.controller.shared`).

The work itself is in the engine's parts, each calling only what lies below it (`fleet.controller.base`
draws them): `revisions` (fetch and take in each revision once: parse, sources, the pipeline
`fleet.core.pipeline`, the empty-revision refusal, the claim, rollouts begun, registry, wake-ups),
`workers` (one round per cluster: `fleet.cluster.reconcile.reconcile_cluster`, then
`fleet.controller.runtime.record_round`), `watches` (watch streams, drift repairs, probes) and
`persistence` (the state database, a cache whose failures never end the controller). The decisions about a
cluster's record are pure functions in `fleet.controller.runtime`.

With a management cluster (docs/scaling.md) the engine runs its replica's lease loop
(`fleet.controller.replicas`: on a thread of its own, with a heartbeat from this loop) beside the rest and asks `fleet.controller.shards.Ownership` which clusters
it may write to: rounds and watches run only on those, each under a cancel scope whose deadline is the
renew deadline of the cluster's shard (moved on after every renewal, `_ticked`); a shard gained wakes its
clusters, a shard lost stops their rounds and watches, a shard handed over is drained first
(`_drain_shard`); `stop` hands every shard over before the rounds' grace period.

Does not: talk HTTP to users (`fleet.controller.server`), decide ownership or what to write on a cluster
(`fleet.cluster.reconcile` and below), or read git itself (`fleet.clients.source`). The behaviour for
users is in docs/operations.md and docs/reconcile.md.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import anyio
from opentelemetry import trace

from fleet.clients import kube, source, statedb
from fleet.clients import sources as sources_mod
from fleet.controller import audit, notify, replicas, revisions, rollouts, runtime, shards, shared
from fleet.controller import events as cluster_events
from fleet.controller.base import Caches, Settings
from fleet.controller.metrics import Metrics
from fleet.core import (
    errors,
    inventory,
    model,
    pipeline,
)
from fleet.core import history as hist
from fleet.core import rollout as ro

log = logging.getLogger("fleet.engine")
tracer = trace.get_tracer("fleet.engine")


class Engine(revisions.Revisions):
    """The controller. `run()` until cancelled; the HTTP layer calls the small synchronous API."""

    def __init__(
        self,
        settings: Settings,
        *,
        kubeconfig: kube.Kubeconfig,
        kube_settings: kube.Settings,
        store: statedb.StateStore,
        metrics: Metrics | None = None,
        replica: replicas.Replica | None = None,
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
        self.metrics.queue_depth.set_function(self._queue_depth)
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
        self.adopted: list[inventory.Claim] = []
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
                connection_of=self._round_client,
                may_write=lambda cluster: self.ownership.owns(cluster),
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
        self.shared: shared.Shared | None = None  # the state of record in a management cluster (`share`)
        self.ownership = shards.Ownership(replica)
        self._rounds: dict[str, anyio.CancelScope] = {}
        self._round_ended = anyio.Event()
        self._stopped: set[str] = set()
        self._owned: frozenset[int] = frozenset()
        self._holders: dict[int, str | None] = {}  # shard -> its holder, as last reported in the metrics
        self._replica_done = anyio.Event()
        if replica is not None:
            replica.attach(
                before_release=self._drain_shard, on_change=self._shards_changed, on_tick=self._ticked
            )
            for shard in range(replica.shards):
                self.metrics.shard_owned.labels(shard=str(shard), replica=replica.config.me).set(0)
        self._restore()
        self.rollouts.restore()
        self.audit.restore()
        if store.set_aside is not None:
            self._announce_set_aside(store.set_aside)
        # When the revision enforced before the restart was first seen (its claim's instant; a state from
        # before that was kept: the shown revision's fetch): it stays that old across a restart.
        rev = self.revision
        self._restored_seen = (
            (rev.claimed_sha, rev.claimed_at) if rev.claimed_at else (rev.sha, rev.fetched_at)
        )

    # -- the API the HTTP layer uses -----------------------------------------------------------------------

    @property
    def registry(self) -> Any:
        return self.metrics.registry

    @property
    def ready(self) -> bool:
        """The repo was read and every registered cluster had a first reconcile attempt."""
        return self.fetched_once and all(
            rt.attempted for rt in self.clusters.values() if self.ownership.owns(rt.name)
        )

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
        owned = self.ownership.owned(self.clusters) if self.shared is None else set()
        replica = self.ownership.document(self.clusters)
        doc = {
            **({"replica": replica} if replica is not None else {}),
            "revision": rev.sha,
            "message": rev.message,
            "author": rev.author,
            "committedAt": rev.committed_at,
            "fetchedAt": rev.fetched_at,
            "errors": errors_,
            "stateStore": self.store_health.document(),
            # A replica shows the clusters it owns; a single replica owns them all. With the state of
            # record, the whole fleet's view below replaces them.
            "clusters": {}
            if self.shared is not None
            else {name: rt.document() for name, rt in sorted(self.clusters.items()) if name in owned},
            "rollouts": self.rollouts.documents(),
        }
        if self.shared is not None:  # every shard's clusters, from their summaries
            # Only the documents the whole fleet's view takes from this replica: built for every cluster
            # twice per GET, they were most of its cost at 1,000 clusters (docs/benchmarks.md).
            need = self.shared.known_needed(self.clusters)
            known = {name: self.clusters[name].document() for name in sorted(need)}
            doc = self.shared.whole_fleet(doc, known=known)
        return doc

    def share(self, sh: shared.Shared) -> None:
        """Keep the state of record in a management cluster (docs/scaling.md): `sh` runs beside the loop,
        the conductor decides only while this replica coordinates, the status shows the whole fleet."""
        sh.attach(
            self.rollouts, documents=self._summary_documents, wake=self._handed_on,
            fetch=lambda reason: self.trigger_fetch(reason=reason),
        )  # fmt: skip
        self.shared = sh

    def _summary_documents(self, wanted: Callable[[str], bool]) -> dict[str, dict[str, Any]]:
        """The status documents of the clusters `wanted` (those of the shards whose summaries are written
        now), each bundle with the time it came to hold its revision (`since`, for
        `GET /api/v1/revisions/SHA` on other replicas)."""
        out = {}
        for name, rt in self.clusters.items():
            if not wanted(name):
                continue
            doc = rt.document()
            for b, st in rt.bundles.items():
                doc["bundles"][b]["since"] = st.since
            out[name] = doc
        return out

    async def request_reconcile(self, *, cluster: str | None, bundle: str | None) -> dict[str, Any]:
        """``POST /api/v1/reconcile``: `queued`, the clusters woken here; with replicas, `handedOn`: the
        others, recorded in the management cluster for their shards' owners (cluster -> shard and owner).
        KeyError for an unknown cluster or bundle; `errors.StateError` when a request cannot be recorded."""
        if cluster is not None and cluster not in self.clusters:
            raise KeyError(f"cluster {cluster}: not registered")
        if bundle is not None and self.desired is not None and bundle not in self.desired.repo.bundles:
            raise KeyError(f"bundle {bundle}: not in the current revision")
        names = [cluster] if cluster else sorted(self.clusters)
        if bundle is not None:
            names = [n for n in names if self._places(n, bundle)]
        mine = [n for n in names if self.ownership.owns(n)]
        for n in mine:
            self._wake(self.clusters[n], reason="requested")
        if self.shared is None:
            return {"queued": mine}
        others = [n for n in names if n not in mine]
        return {
            "queued": mine,
            "handedOn": await self.shared.hand_on(others, bundle=bundle) if others else {},
        }

    def _round_client(self, cluster: str) -> kube.Client | None:
        """The client of a cluster's rounds and watches, whose connections its Events go out on: a round's
        Event reuses the connection the round's writes left idle, no handshake of its own."""
        rt = self.clusters.get(cluster)
        return rt.client if rt is not None else None

    def _places(self, name: str, bundle: str) -> bool:
        """Whether `bundle` is on cluster `name`: it reported the bundle, or the revision places it there;
        with no revision read yet, another replica's cluster may have it (its owner decides)."""
        if bundle in self.clusters[name].bundles:
            return True
        if self.desired is not None:
            return bundle in self.desired.targets.get(name, {})
        return self.shared is not None and not self.ownership.owns(name)

    def _handed_on(self, clusters: tuple[str, ...], bundle: str | None, reason: str) -> None:
        """A reconcile another replica recorded for this one's clusters (`request_reconcile` there)."""
        for n in clusters:
            rt = self.clusters.get(n)
            if rt is not None and (bundle is None or self._places(n, bundle)) and self.ownership.owns(n):
                self._wake(rt, reason="requested")
        log.info("reconcile of %s: %s", ", ".join(clusters), reason)

    async def push(self, *, reason: str) -> dict[str, Any]:
        """A push announced to this process (``POST /api/v1/webhook``): fetch now; with replicas, tell every
        other replica to fetch too (through the management cluster: each fetches within a retry period)."""
        accepted = self.trigger_fetch(reason=reason)
        doc: dict[str, Any] = {"fetch": "started" if accepted else "already pending"}
        if self.shared is not None:
            try:
                await self.shared.announce_fetch(reason)
            except errors.StateError as e:
                log.warning("push not announced to the other replicas: %s", e)
                doc["replicas"] = f"not told (they fetch at their next interval): {e}"
            else:
                doc["replicas"] = "told to fetch through the management cluster"
        return doc

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

        def read() -> dict[str, Any]:  # thousands of rows: read and shaped off the event loop
            entries = self.store.query_history(wider)
            return {"entries": [e.document() for e in entries[: q.limit]], "more": len(entries) > q.limit}

        return await anyio.to_thread.run_sync(read)

    async def revision_document(self, revision: str) -> dict[str, Any] | None:
        """``GET /api/v1/revisions/SHA``: which clusters hold a revision (a full or abbreviated id), for
        which bundles and since when; where it has not arrived (what those pairs hold instead); its rollouts
        and its history. With replicas, every cluster of the fleet (the others' from their shard's status
        summary), `unknown`: the clusters no summary holds, each with why (never left out), and `errors`
        when the state of record could not be read or written last period. None when
        fleet knows nothing of it; ValueError when the abbreviation is ambiguous."""
        prefix = hist.check_revision(revision)
        views, unknown = self._bundle_views()
        known = {v["revision"] for per in views.values() for v in per.values() if v.get("revision")}
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
        for name, per in sorted(views.items()):
            for b, v in sorted(per.items()):
                if v.get("revision") == full:
                    holders.setdefault(name, {})[b] = {"state": v.get("state"), "since": v.get("since")}
                elif v.get("state") != model.State.SUSPENDED.value:
                    elsewhere.setdefault(name, {})[b] = {
                        "state": v.get("state"),
                        "revision": v.get("revision"),
                    }
        rollouts_ = {b: str(r.phase) for b, r in sorted(self.rollouts.latest.items()) if r.revision == full}
        touched = {e.bundle for e in found} | set(rollouts_)
        doc = {
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
        if self.shared is not None:  # every shard's clusters; those no summary holds are named
            doc["unknown"] = unknown
            mine = self.shared.owner.writable()
            doc["shards"] = {"missing": [s for s in self.shared.merged.missing if s not in mine]}
            if self.shared.problem:  # the summaries may be older than they look
                doc["errors"] = [{"path": "management cluster", "line": None, "message": self.shared.problem}]
        return doc

    def _bundle_views(self) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, str]]:
        """cluster -> bundle -> {state, revision, since} of every cluster this process can answer for: its
        own as it knows them, with replicas the others from their shard's status summary; and the clusters
        no summary holds (cluster -> why their status is unknown)."""
        views = {
            name: {b: {"state": st.state.value, "revision": st.revision, "since": st.since}
                   for b, st in rt.bundles.items()}
            for name, rt in self.clusters.items() if self.ownership.owns(name)
        }  # fmt: skip
        if self.shared is None:
            return views, {}
        docs, unknown = self.shared.elsewhere(self.clusters)
        for name, d in docs.items():
            bundles = d.get("bundles")
            if isinstance(bundles, dict):
                views[name] = {b: dict(v) for b, v in bundles.items() if isinstance(v, dict)}
        return views, unknown

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
                if self.shared is not None:
                    tg.start_soon(self.shared.run)
                if self.ownership.replica is not None:
                    tg.start_soon(self._run_replica, self.ownership.replica)
        finally:
            self._tg = None
            with anyio.CancelScope(shield=True):
                for rt in self.clusters.values():
                    if rt.client is not None:
                        await rt.client.aclose()
                        rt.client = None

    async def stop(self, *, grace: float | None = None) -> None:
        """Stop taking new work and give in-flight rounds `grace` seconds to finish. A replica first hands
        its shards over: each shard's rounds end (or are cancelled) before its lease is released."""
        self._stopping = True
        deadline = time.monotonic() + (self.settings.grace_period if grace is None else grace)
        replica = self.ownership.replica
        if replica is not None:
            replica.stop()
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                await self._replica_done.wait()
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            while self._in_flight:
                self._idle = anyio.Event()
                await self._idle.wait()

    # -- replicas (docs/scaling.md) ---------------------------------------------------------------------------

    async def _run_replica(self, replica: replicas.Replica) -> None:
        try:
            await replica.run()
        finally:
            self._replica_done.set()

    def _shards_changed(self, owned: frozenset[int]) -> None:
        """The shards this replica may write to changed: wake the clusters gained, stop the rounds and
        watches of the clusters lost."""
        replica = self.ownership.replica
        assert replica is not None
        gained, lost = shards.moved(self.clusters, before=self._owned, after=owned, shards=replica.shards)
        for shard in owned ^ self._owned:
            self.metrics.shard_owned.labels(shard=str(shard), replica=replica.config.me).set(
                1 if shard in owned else 0
            )
        log.info(
            "replica %s: owns %d shards (%d clusters gained, %d lost)",
            replica.config.me,
            len(owned),
            len(gained),
            len(lost),
        )
        self._owned = owned
        for name in lost:
            self._let_go(name)
            self.metrics.forget_cluster(name)  # its new owner reports it now
        if self._tg is not None and self.desired is not None and self.shared is None:
            self._tg.start_soon(
                functools.partial(self.rollouts.reassigned, self._placed(self.desired), held=self._held)
            )
        for name in gained:
            self._stopped.discard(name)
            self._wake(self.clusters[name], reason="shard")

    def _let_go(self, name: str) -> None:
        scope = self._rounds.get(name)
        if scope is not None:
            scope.deadline = -math.inf
        rt = self.clusters.get(name)
        if rt is not None:
            self._stop_watch(rt)

    def _ticked(self) -> None:
        """After a tick of the lease loop: every round and watch of this replica runs until its shard's
        renew deadline as it is now (later after a renewal; at once when the shard is not writable); a
        cluster whose round stopped while this replica could not write (a renewal landed late, the shard
        kept) is woken once it can again; the metrics say who holds every shard."""
        replica = self.ownership.replica
        if replica is not None:
            holders = replica.holders()
            self.metrics.holders(holders, before=self._holders)
            self._holders = holders
        for name, scope in self._rounds.items():
            scope.deadline = self.ownership.deadline(name)
        for name in [n for n in self._stopped if self.ownership.owns(n)]:
            self._stopped.discard(name)  # its shard was renewed late, after its round had stopped
            if name in self.clusters:
                self._wake(self.clusters[name], reason="shard")
        for name, rt in self.clusters.items():
            if rt.watch_scope is None:
                continue
            until = self.ownership.deadline(name)
            if until == -math.inf or rt.watch_scope.cancel_called:
                self._stop_watch(rt)  # stopped at its deadline: the next round of an owner starts it again
                if until != -math.inf:
                    self._wake(rt, reason="shard")
            else:
                rt.watch_scope.deadline = until

    async def _drain_shard(self, shard: int) -> None:
        """Before this replica releases `shard` (no longer writable): its clusters' rounds in flight end
        (they stop at their next write, `fleet.cluster.reconcile.Options.fence`; cancelled at the latest
        at the deadline) and their watches stop. Several shards may be drained at once."""
        replica = self.ownership.replica
        assert replica is not None
        mine = [n for n in self.clusters if self.ownership.shard(n) == shard]
        for name in mine:
            self._let_go(name)
        with anyio.move_on_after(self.settings.grace_period):
            while any(n in self._rounds for n in mine):
                if self._round_ended.is_set():  # a fresh one, unless other drains wait on it unset
                    self._round_ended = anyio.Event()
                await self._round_ended.wait()

    # -- cluster workers -------------------------------------------------------------------------------------

    # -- the state database: a cache whose failures never end the controller ----------------------------------
