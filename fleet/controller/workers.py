"""The cluster workers: one task per registered cluster, under the global limit on clusters in flight.

Owns: the worker loop (wait for a wake-up or the idle delay, then one round, with every wake that came
while it waited for a turn under the limit; then a look at the cluster's health when a watched object
changed during the round and a rollout still waits for it), a client per
cluster, and one round: the cluster's targets under the rollouts (`_composite`: the newest revision's, an
older one it still holds, or left as it is; `_held_back`: the held ones another writer of the source may
already have moved ahead), `fleet.cluster.reconcile.reconcile_cluster` in a `cluster <name>` span
(given the cluster's `fleet.cluster.scope.Memory`, `ClusterRuntime.rounds`: a round on the watch cache
plans only the bundles that can have work), the result taken into the cluster's record
(`fleet.controller.runtime.record_round`), the watch started or stopped, the rollouts told what was observed, metrics, history and the state saved.
Does not: decide what a round does on the cluster (`fleet.cluster.reconcile`), or when to retry
(`fleet.controller.runtime.idle_delay`).
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from collections.abc import Mapping

import anyio
from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode

from fleet.clients import kube
from fleet.cluster import reconcile
from fleet.controller import rollouts, runtime, telemetry, watches
from fleet.core import (
    drift,
    model,
    pipeline,
    plan,
)
from fleet.core import history as hist
from fleet.core import rollout as ro

log = logging.getLogger("fleet.engine")
tracer = trace.get_tracer("fleet.engine")


class Workers(watches.Watches):
    """The engine's part described above."""

    def _composite(
        self, rt: runtime.ClusterRuntime, desired: pipeline.Desired
    ) -> tuple[dict[str, plan.Target], dict[str, rollouts.Hold]]:
        """This cluster's targets under the rollouts: per bundle the newest revision's, an older revision's
        the cluster still holds, or one that leaves the bundle as it is there."""
        targets: dict[str, plan.Target] = {}
        holds: dict[str, rollouts.Hold] = {}
        revision = desired.repo.revision or ""
        for b, t in desired.targets.get(rt.name, {}).items():
            if t.desired is None or t.suspended:
                hold = rollouts.NEWEST
            else:
                hold = self.rollouts.hold(b, rt.name, revision=revision)
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

    def _held_back(
        self, rt: runtime.ClusterRuntime, holds: Mapping[str, rollouts.Hold]
    ) -> dict[str, dict[str, str]]:
        """The bundles this controller's own rollout holds on the cluster at an older revision than its
        claim's until it sends the claim's revision there (`Conductor.on_its_way`: not one it sent and
        rolled back, skipped, or whose rollout ended), each with the revisions taken in after the one it
        holds (the claim's, and any a newer commit superseded meanwhile; not one its rollout rolled back)
        and when this controller's claim of each was first seen: left as they are (no apply, prune or repair) where another writer of the
        source is already at one of them (docs/reconcile.md, "Replicas of one source: the newer revision
        wins"). None with a management cluster: one rollout for all replicas."""
        claim = self.claim
        if claim is None or self.ownership.replica is not None:
            return {}
        adopted = self.adopted or [claim]
        newer: dict[str | None, dict[str, str]] = {}
        out: dict[str, dict[str, str]] = {}
        for b, h in holds.items():
            if h.kind != "revision" or not self.rollouts.on_its_way(b, rt.name, revision=claim.revision):
                continue
            if h.revision not in newer:  # after its last taking in (all remembered: taken in before them)
                last = max((i for i, c in enumerate(adopted) if c.revision == h.revision), default=-1)
                newer[h.revision] = {
                    c.revision: c.observed_at for c in adopted[last + 1 :] if c.revision != h.revision
                }
            bad = self.rollouts.rolled_back.get(b)  # what it sent there may be its own, not written back yet
            out[b] = (
                {r: at for r, at in newer[h.revision].items() if r not in bad} if bad else newer[h.revision]
            )
        return out

    async def _worker(self, rt: runtime.ClusterRuntime) -> None:
        with anyio.CancelScope() as scope:
            rt.scope = scope
            try:
                while not self._stopping:
                    delay, why = self._idle_delay(rt), runtime.idle_reason(rt)
                    runtime.waits(rt, delay=delay, reason=why, now=time.time())
                    with anyio.move_on_after(delay):
                        await rt.wake.wait()
                    rt.wake = anyio.Event()
                    rt.retry_at = None  # the retry (or an earlier round) is due now
                    if self._stopping:
                        return
                    idle = why if rt.pending is None else None  # nothing asked for it: the idle delay's round
                    if rt.broken is not None or rt.cluster is None or self.desired is None:
                        rt.pending = None
                        continue
                    if not self.ownership.owns(rt.name):  # another replica's (docs/scaling.md)
                        rt.pending = None
                        continue
                    async with self._limiter:
                        # What woke the cluster while it waited for its turn goes in this round, not in one
                        # more after it (at 1,000 clusters a wake waits seconds for a turn: a follower's
                        # clusters woken by two of the coordinator's record writes each had two rounds).
                        rt.wake = anyio.Event()
                        request = rt.pending or runtime.Request()
                        rt.pending = None
                        if idle is not None:
                            request.reasons.add(idle)
                        if self._stopping:
                            return
                        if rt.broken is not None or rt.cluster is None or not self.ownership.owns(rt.name):
                            continue
                        self._in_flight += 1
                        rt.in_round = True
                        try:
                            await self._round(rt, request)
                        finally:
                            rt.in_round = False
                            self._in_flight -= 1
                            if not self._in_flight:
                                self._idle.set()
                    if rt.look_again:  # a watched object changed during the round
                        rt.look_again = False
                        self._watch_change(rt.name)
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
            if self.ownership.replica is not None:  # every write, asked right before it is sent (a stall)
                rt.client.may_write = functools.partial(self.ownership.owns, cluster.name)
            rt.client_context = context
        return rt.client

    async def _round(self, rt: runtime.ClusterRuntime, request: runtime.Request) -> None:
        desired = self.desired
        cluster = rt.cluster
        assert desired is not None and cluster is not None
        targets, holds = self._composite(rt, desired)
        sig = pipeline.signature(targets, desired.protected)
        claim = self.claim
        # Together: the watch repairs these objects under this claim until the cluster's next round (the
        # revision's own, made once when it was taken in, when no rollout holds any bundle back here).
        newest, made = desired.targets.get(rt.name, {}), desired.objects.get(rt.name)
        if (
            made is not None
            and len(targets) == len(newest)
            and all(targets[b] is t for b, t in newest.items())
        ):
            rt.objects = made
        else:
            rt.objects = drift.desired_objects(targets, instance=self.settings.instance)
        rt.claim = claim
        rt.holds = dict(holds)
        rt.held = self._held_back(rt, holds)
        revision = self.revision.sha
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
                held=rt.held,
                health_memory=rt.health_memory,
                fence=self.ownership.fence(rt.name),
                on_fenced=self.ownership.on_fenced(rt.name),
            )
            client = self._client(rt, cluster)
            watched = rt.watcher.cache if rt.watcher is not None else None
            cache = watched if runtime.may_use_cache(rt, request) else None
            rt.rounds.watched = watched
            rt.rounds.keeps_reads = self.settings.watch and self.settings.watch_cache
            # A replica's writes end at its renew deadline (moved on by each renewal, `Engine._ticked`).
            with anyio.CancelScope(deadline=self.ownership.deadline(rt.name)) as scope:
                self._rounds[rt.name] = scope
                try:
                    result = await reconcile.reconcile_cluster(
                        client,
                        cluster,
                        targets,
                        options=options,
                        protected=desired.shield,
                        cache=cache,
                        memory=rt.rounds,
                    )
                finally:
                    self._rounds.pop(rt.name, None)
                    self._round_ended.set()
            fenced = not scope.cancelled_caught and result.fenced
            if scope.cancelled_caught or fenced or not self.ownership.owns(rt.name):
                span.set_attribute("fleet.state", "handed over")
                why = result.message if fenced else "this replica may not write to it now"
                log.info("cluster %s: round stopped: %s", rt.name, why)
                self._stopped.add(rt.name)  # a late renewal keeps the shard: `Engine._ticked` wakes it
                return
            changes = result.changes
            counts = collections.Counter(c.action for c in changes.changes)
            for action in model.Action:
                span.set_attribute(f"fleet.objects.{action.value}", counts[action])
            span.set_attribute("fleet.state", result.state.value)
            span.set_attribute("fleet.bundles.planned", len(result.planned))
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
                b: rollouts.Observed(
                    state=br.state, degraded=br.degraded, message=br.message, retriable=br.retriable
                )
                for b, br in result.bundles.items()
            },
            holds=holds,
            handed=sig,
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
        counts = collections.Counter(c.action for c in result.changes.changes)
        log.info(
            "cluster %s: %s (%s)",
            rt.name,
            rt.state.value,
            ", ".join(f"{a.value} {counts[a]}" for a in model.Action if counts[a]) or "no changes",
        )
        return pairs
