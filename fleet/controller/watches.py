"""The engine's side of the watch streams (`fleet.cluster.watch`): one watch per registered, unpaused
cluster in the engine's task group, their health in the status, the `drift <cluster>` trace around each
repair batch (linked to the revision it restores), a wake-up for a full round when a repair could not do
it, and health probes for rollouts (a cluster in flight is looked at when its objects change).
Does not: judge drift (`fleet.core.drift`) or repair (`fleet.cluster.repair`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Iterator

import anyio
from opentelemetry import trace
from opentelemetry.trace import Link

from fleet.cluster import cache as cache_mod
from fleet.cluster import reading
from fleet.cluster import watch as watching
from fleet.controller import persistence, rollouts, runtime, telemetry
from fleet.core import (
    errors,
    health,
    model,
)

log = logging.getLogger("fleet.engine")
tracer = trace.get_tracer("fleet.engine")


class Watches(persistence.Persistence):
    """The engine's part described above."""

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
        if rt is None or rt.cluster is None or not self.ownership.owns(cluster):
            return None  # unknown, or another replica's now: its Events are that replica's to write
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
        if not self.ownership.owns(rt.name):
            return
        if rt.watcher is not None and rt.watcher.client is rt.client:
            return
        self._stop_watch(rt)
        cache = cache_mod.ObjectCache(max_objects=self.settings.watch_settings.max_cached)
        watcher = watching.ClusterWatch(
            rt.client,
            instance=self.settings.instance,
            desired=lambda: rt.objects,
            on_change=self._watch_change,
            settings=self.settings.watch_settings,
            on_health=self.watch_update,
            on_repair=self._repaired,
            around_repair=functools.partial(self._drift_span, rt),
            claim=lambda: rt.claim,  # the claim its objects were handed under, not the newest
            held=lambda: rt.held,  # and the bundles held back at an older revision by that round
            cache=cache if self.settings.watch_cache else None,
            # A replica: asked right before each repair's write, on the clock, not only through the scope
            # below (after a stall, a woken repair can reach its write before the scope's timer cancels it).
            may_write=None
            if self.ownership.replica is None
            else functools.partial(self.ownership.owns, rt.name),
        )
        if watcher.cache is not None:
            rt.client.on_write = watcher.cache.wrote  # fleet's own writes keep it current too
        # A replica's repairs end at its renew deadline (moved on by each renewal, `Engine._ticked`).
        scope = anyio.CancelScope(deadline=self.ownership.deadline(rt.name))
        rt.watcher, rt.watch_scope = watcher, scope

        async def run() -> None:
            with scope:
                await watcher.run()

        self._tg.start_soon(run)

    def _watch_change(self, cluster: str) -> None:
        """Something changed on a watched object: while a rollout waits for this cluster's health, look at
        it now instead of at the next re-check; during a round of the cluster, once that round has told
        the rollouts what it saw (events coalesce: a burst gives one look at most)."""
        rt = self.clusters.get(cluster)
        if rt is None or not self.rollouts.in_flight(cluster):
            return
        if rt.in_round:
            # Most often its own apply seen coming back: the round reports what it saw, then its worker
            # looks again only if a rollout still waits for this cluster (no second round for nothing).
            rt.look_again = True
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
                                    client,
                                    objects,
                                    instance=self.settings.instance,
                                    memory=rt.health_memory,
                                    cache=rt.watcher.cache if rt.watcher is not None else None,
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
        if rt.client is not None:
            rt.client.on_write = None
        rt.watcher, rt.watch_scope = None, None
        rt.watch.streams = 0
