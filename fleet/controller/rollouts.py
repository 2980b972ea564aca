"""The controller's rollouts (docs/rollouts.md): `fleet.core.rollout` driven by the engine's events.

Owns: `Conductor`; starting a rollout when a revision changes a bundle's rendered objects (superseding the
one in progress), joins and leaves; turning the results of cluster rounds into the state machine's
observations; people's actions; the soak and deadline timer; which revision of a bundle each cluster must
hold now (`hold`) and whether only until its rollout reaches it (`on_its_way`); storing every change BEFORE any cluster is woken to act on it (so a crash never sends
a cluster its revision without the rollout knowing: a cluster put in flight is held at what it had until
its rollout is stored; a write the database refuses is reported by the engine's `save` and the rollout
goes on from memory, saved again on recovery); which writes wait: a change that decides something
(clusters put in flight, a rollout's state, wave, approvals, actions, a new rollout) is stored before
`tick` returns. Its bases keep the rest: the latest rollouts, their writes through
`fleet.clients.statedb` (one for every caller that waited meanwhile; what decides nothing yet at most
`store_delay` later), the rollout metrics and documents (`fleet.controller.rolloutstore.Storing`); the
`rollout <bundle>` spans (`fleet.controller.rolloutspans.Spans`).

With a management cluster (docs/scaling.md, "State of record") only the replica holding the coordinator
lease decides (`deciding`); the others follow: they take the coordinator's rollouts in as they are stored
(`adopt`), leave a bundle alone while the coordinator has not yet taken in the revision they enforce
(but on a cluster the revision renders the very objects the coordinator's rollout sends: docs/scaling.md,
"A commit that leaves a bundle as it is"), report what their rounds observed (`reports`, carried to the
coordinator by their shards' status summaries) and hand people's actions on (`forward`, once checked that
they apply).

Does not: decide anything itself (every decision is a pure function of `fleet.core.rollout`), render or
place (the engine hands it the newest revision's targets and wave membership), or talk to clusters (it
asks the engine to wake a cluster through the `wake` callback).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from opentelemetry import trace
from opentelemetry.trace import Link

from fleet.clients import statedb
from fleet.controller import rolloutstore
from fleet.controller.metrics import Metrics
from fleet.controller.rolloutstore import Observer, SaveFn
from fleet.core import errors, model, summaries
from fleet.core import rollout as ro

__all__ = ["LEAVE", "NEWEST", "Conductor", "Hold", "Observed", "Observer", "SaveFn"]

log = logging.getLogger("fleet.rollouts")
tracer = trace.get_tracer("fleet.rollouts")


@dataclass(frozen=True)
class Hold:
    """Which revision of a bundle a cluster must hold now.

    `NEWEST`: what the newest revision renders (the rollout's revision, or one rendering the same);
    `revision`: that older revision's render; `LEAVE`: leave the bundle on that cluster as it is (no apply,
    no prune): the cluster's turn has not come and fleet cannot tell what it holds, or it held nothing."""

    kind: str
    revision: str | None = None


NEWEST = Hold("newest")
LEAVE = Hold("leave")


@dataclass(frozen=True)
class Observed:
    """What one round saw of one bundle on one cluster it reconciled to the rollout's revision."""

    state: model.State
    degraded: bool = False  # FAILED because an object is unhealthy for good (not an apply failure)
    message: str = ""
    retriable: bool = False  # FAILED only by errors a retry can fix (the cluster stays in flight)


HeldFn = Callable[[str, str], "tuple[str | None, str | None]"]  # (cluster, bundle) -> (revision, hash)
WakeFn = Callable[[str, "trace.SpanContext | None"], None]
# Hands a person's action on to the coordinator: (bundle, revision of its rollout, action, actor, reason,
# wave, cluster).
ForwardFn = Callable[[str, str, ro.Action, str, str, "str | None", "str | None"], Awaitable[None]]


class Conductor(rolloutstore.Storing):
    """One per engine. Not thread-safe: the engine's event loop calls it."""

    def __init__(
        self,
        *,
        store: statedb.StateStore,
        metrics: Metrics,
        wake: WakeFn,
        save: SaveFn,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
        store_delay: float = 1.0,
    ) -> None:
        super().__init__(
            store=store, metrics=metrics, save=save, observer=observer, clock=clock, store_delay=store_delay
        )
        self._wake = wake
        self._changed = anyio.Event()
        self._starting: set[tuple[str, str]] = set()  # (bundle, cluster) put in flight, not stored yet
        self._contexts: dict[str, trace.SpanContext] = {}  # bundle -> the revision trace it belongs to
        # A management cluster's coordinator decides; the other replicas follow (see the module).
        self.deciding: Callable[[], bool] = lambda: True
        self.forward: ForwardFn | None = None
        self.reports: dict[
            str, dict[str, summaries.Observation]
        ] = {}  # cluster -> bundle -> what a round saw
        self._revision: str | None = None  # the newest revision this replica took in
        self._placed: Mapping[str, Mapping[str, str]] = {}  # what it renders: bundle -> cluster -> hash
        self._awaiting: dict[str, str] = {}  # bundle -> revision its coordinator has not taken in yet
        self._last_begin: dict[str, Any] | None = None  # the arguments of the last `begin`

    # -- start-up -----------------------------------------------------------------------------------

    def restore(self) -> None:
        """Load the newest rollout of every bundle (blocking; at start-up). A database that cannot be read
        loses them: every bundle starts a new rollout with its next revision (said loudly)."""
        try:
            stored = self.store.latest_rollouts()
        except errors.StateError as e:
            log.error("rollouts: cannot read them from the state database (%s); starting without them", e)
            return
        for bundle, row in stored.items():
            try:
                r = ro.load(row.doc["rollout"])
            except (KeyError, TypeError, ValueError) as e:
                log.error(
                    "bundle %s: stored rollout of %s unreadable, ignored: %s", bundle, row.revision[:12], e
                )
                continue
            self.latest[bundle] = r
            self.hashes[bundle] = dict(row.doc.get("hashes") or {})
            if not r.terminal:
                self._continue_span(r, row.doc.get("span"))
        self._update_metrics()

    def needed_revisions(self) -> set[str]:
        """Older revisions some cluster must hold now: the engine keeps their renders at hand."""
        out: set[str] = set()
        for r in self.latest.values():
            for name in r.members:
                if ro.governs(r, name):
                    t = ro.target(r, name)
                    if t is not None and t != r.revision:
                        out.add(t)
        return out

    # -- what each cluster holds -----------------------------------------------------------------------

    def hold(self, bundle: str, cluster: str, *, revision: str | None = None) -> Hold:
        """Which revision of `bundle` `cluster` must hold now. `revision`: the one whose render a round
        would apply for NEWEST (the engine's newest). The engine takes a revision in before its rollouts
        do (`begin`): until they have, NEWEST stands for the newest revision they took in (held as that
        older revision; LEAVE when they took in none), never for one no rollout has decided about."""
        held = self._hold(bundle, cluster)
        if held != NEWEST or revision is None or revision == self._revision:
            return held
        return Hold("revision", self._revision) if self._revision else LEAVE

    def _hold(self, bundle: str, cluster: str) -> Hold:
        r = self.latest.get(bundle)
        following = self._following(bundle, cluster, r)
        if r is None:
            return LEAVE if following else NEWEST
        if ro.governs(r, cluster):
            t = ro.target(r, cluster)
            if (bundle, cluster) in self._starting:  # in flight, but not stored yet: what it had
                t = r.members[cluster].from_revision
            if t is None or (t == r.revision and following):
                return LEAVE  # the coordinator's revision is not the one this replica enforces (yet)
            return NEWEST if t == r.revision else Hold("revision", t)
        if following:
            return LEAVE
        if r.phase is ro.Phase.COMPLETED:
            return NEWEST
        return LEAVE  # placed after the rollout ended without completing: it gets the next revision

    def on_its_way(self, bundle: str, cluster: str, *, revision: str | None) -> bool:
        """Whether this controller's rollouts are still to send `cluster` what `revision` (the engine's
        newest) renders of `bundle`: not sent yet (a decision not stored yet has sent nothing) by a rollout
        that still may (not ended, the cluster not skipped), or the rollouts have not taken `revision` in
        yet. A cluster held at an older revision on its way is left as it is where another writer of the
        source is already at `revision` (`fleet.cluster.gate.left_alone`); one sent it and rolled back, one
        skipped and one whose rollout ended (rolled back, aborted) are not: no rollout of this controller
        will reach them, and what they hold is written as before."""
        if revision != self._revision and self._hold(bundle, cluster) == NEWEST:
            return True  # taken in by `begin` next: held at what the rollouts took in until then
        r = self.latest.get(bundle)
        if r is None or not ro.governs(r, cluster):
            return False
        m = r.members[cluster]
        if (bundle, cluster) in self._starting:
            return True
        return not m.moved and not r.terminal and m.phase is not ro.ClusterPhase.SKIPPED

    def _following(self, bundle: str, cluster: str, r: ro.Rollout | None) -> bool:
        """A follower whose coordinator has not (yet) taken in the revision this replica enforces for
        `bundle`: what that revision renders must not be applied on the follower's word alone. Where it
        renders on `cluster` the very objects the coordinator's rollout sends there (the hash its record
        keeps for the cluster), applying them is the coordinator's word: a revision that leaves a bundle as
        it is needs no rewrite of its record (docs/scaling.md, "A commit that leaves a bundle as it is")."""
        if self.deciding():
            return False
        if r is not None and self._renders_as_sent(bundle, cluster):
            return False
        if bundle in self._awaiting:
            return True
        if r is None or self._revision is None or r.revision == self._revision:
            return False
        return self._checked.get(bundle) != self._revision

    def _renders_as_sent(self, bundle: str, cluster: str) -> bool:
        """Whether the newest revision taken in renders on `cluster` what the latest rollout of `bundle`
        sends it (the same hash; a cluster the rollout keeps no hash of is not)."""
        h = self._placed.get(bundle, {}).get(cluster)
        return h is not None and self.hashes.get(bundle, {}).get(cluster) == h

    def waiting(self, bundle: str, cluster: str) -> str:
        """Why a bundle is left as it is on a cluster (for its status)."""
        r = self.latest.get(bundle)
        if r is None:
            return ""
        m = r.members.get(cluster)
        if m is not None and m.phase is ro.ClusterPhase.PENDING:
            return (
                f"waiting for its turn in the rollout of {r.revision[:12]} (wave {r.spec.waves[m.wave].name})"
            )
        return f"left as it is: the rollout of {r.revision[:12]} is {r.phase} (fleet rollout status {bundle})"

    # -- a new revision ----------------------------------------------------------------------------------

    async def begin(
        self,
        *,
        revision: str,
        author: str | None,
        repo: model.Repo,
        placed: Mapping[str, Mapping[str, str]],
        waves: Mapping[str, ro.Membership],
        held: HeldFn,
        paused: Collection[str],
        context: trace.SpanContext | None,
    ) -> None:
        """Start, continue or supersede each bundle's rollout for `revision`.

        `placed[bundle][cluster]` is the hash the revision renders for each pair it applies (pairs in
        error left out); `held(cluster, bundle)` what a cluster holds of a bundle (revision, hash)."""
        now = self._clock()
        self._revision, self._placed = revision, placed
        self._last_begin = {
            "revision": revision, "author": author, "repo": repo, "placed": placed, "waves": waves,
            "held": held, "paused": paused, "context": context,
        }  # fmt: skip
        if not self.deciding():
            # A follower: the coordinator starts the rollouts; until it has taken this revision in, the
            # bundles it may change are left as they are (`hold`), then `adopt` takes its rollouts in.
            for b, bundle in sorted(repo.bundles.items()):
                r = self.latest.get(b)
                if not bundle.suspend and placed.get(b) and (r is None or r.revision != revision):
                    if r is not None and all(self._renders_as_sent(b, c) for c in placed[b]):
                        self._awaiting.pop(b, None)  # nothing to wait for (`_following`)
                    elif self._checked.get(b) != revision:
                        self._awaiting[b] = revision
            return
        for name in sorted(set(self.latest) - set(repo.bundles) - set(repo.broken_bundles)):
            self._end_span(name, "the bundle was removed")  # pruned everywhere by the engine, no strategy
        for b, bundle in sorted(repo.bundles.items()):
            if bundle.suspend:
                continue
            hashes = {c: h for c, h in (placed.get(b) or {}).items() if c not in paused}
            r = self.latest.get(b)
            if r is not None and r.revision == revision:
                continue  # seen already (a restart re-reads its revision)
            known = self.hashes.get(b, {})
            if r is not None and all(known.get(c, h) == h for c, h in hashes.items()):
                # The revision changes nothing here: the rollout stays, and its record is not written again
                # to say so (310 KiB at 1,000 clusters): a follower sees it from the record's hashes
                # (`_following`). Written, at once, when a cluster joins or leaves or gets its hash.
                self._checked[b] = revision  # said in the record when it is written (older followers)
                size = len(known)
                new = self._membership_changes(r, b, hashes, held=held, now=now)
                if new is not r or len(self.hashes[b]) != size:
                    self._set(new)
                    self._decided = True
                continue
            membership = waves.get(b) or ro.Membership(
                waves=tuple((w.name, ()) for w in bundle.rollout.waves), errors={}
            )
            members = [(w, tuple(c for c in cs if c in hashes)) for w, cs in membership.waves]
            from_revisions: dict[str, str | None] = {}
            unchanged: set[str] = set()
            for c, h in hashes.items():
                holds_rev, holds_hash = held(c, b)
                if r is not None and ro.governs(r, c):
                    holds_rev = ro.target(r, c)
                from_revisions[c] = holds_rev
                if holds_hash == h:
                    unchanged.add(c)
            if r is not None and not r.terminal:
                self._set(ro.supersede(r, by=revision, now=now))
                self._end_span(b, f"superseded by {revision[:12]}")
            new = ro.start(
                bundle=b,
                revision=revision,
                spec=bundle.rollout,
                waves=members,
                from_revisions=from_revisions,
                unchanged=unchanged,
                now=now,
                author=author,
            )
            self.hashes[b] = dict(hashes)
            if context is not None:
                self._contexts[b] = context
            self._open_span(new, context=context, links=[], event="started")
            self._set(new)
            log.info(
                "bundle %s: rollout of %s started (%d clusters, %d unchanged, waves %s)",
                b,
                revision[:12],
                len(hashes),
                len(unchanged),
                ", ".join(f"{w}={len(cs)}" for w, cs in members),
            )
        await self.tick()

    def _membership_changes(
        self, r: ro.Rollout, bundle: str, hashes: Mapping[str, str], *, held: HeldFn, now: float
    ) -> ro.Rollout:
        known = self.hashes.setdefault(bundle, {})
        for c in sorted(hashes):
            if not ro.governs(r, c) and not r.terminal:
                r = ro.joined(r, c, from_revision=held(c, bundle)[0], now=now)
            known.setdefault(c, hashes[c])
        for c in sorted(r.members):
            if c not in hashes and ro.governs(r, c):
                r = ro.left(r, c, now=now)
        return r

    async def reassigned(self, placed: Mapping[str, Mapping[str, str]], *, held: HeldFn) -> None:
        """Replicas (docs/scaling.md): the clusters this replica owns changed. Each rollout in progress
        governs the owned clusters of `placed` (bundle -> cluster -> hash; one gained joins its last wave)
        and no longer the others (their new owner's rollouts govern them)."""
        if not self.deciding():
            return  # a follower: the coordinator's rollouts govern the whole fleet
        now = self._clock()
        for b, r in list(self.latest.items()):
            if not r.terminal:
                new = self._membership_changes(r, b, placed.get(b) or {}, held=held, now=now)
                if new is not r:
                    self._set(new)
        await self.tick()

    # -- observations from rounds --------------------------------------------------------------------------

    async def observed(
        self,
        cluster: str,
        results: Mapping[str, Observed],
        *,
        holds: Mapping[str, Hold],
        handed: Mapping[str, str] | None = None,
        unreachable: str = "",
    ) -> None:
        """A round on `cluster` finished: feed what it saw of each bundle it reconciled at a rollout's
        revision to that rollout (`ro.observe_round` decides; a round that could not reach the cluster
        counts with its own message), then act on what changed. A follower reports it for the
        coordinator. `handed`: what the round handed the cluster (bundle -> rendered hash, taken with
        `holds` when it began); a bundle whose rollout renders something else there (a newer rollout
        started while the round ran) is no word on that rollout."""
        if handed is not None:
            holds = {
                b: h for b, h in holds.items() if h != NEWEST or self._renders(b, cluster, handed.get(b))
            }
        now = self._clock()
        if not self.deciding():
            self._report(cluster, results, holds=holds, unreachable=unreachable, now=now)
            return
        if self._observe(cluster, results, holds=holds, unreachable=unreachable, now=now):
            await self.tick()

    async def observed_many(self, rounds: Mapping[str, tuple[Mapping[str, Observed], str]]) -> None:
        """The coordinator takes in other replicas' rounds (cluster -> (results, unreachable), each at the
        rollouts' revision, `NEWEST`): each fed as `observed` feeds one, then one tick for them all (one
        decision and one write of each rollout changed, however many clusters)."""
        if not self.deciding():
            return
        now = self._clock()
        changed = False
        for cluster, (results, unreachable) in rounds.items():
            holds = dict.fromkeys(results, NEWEST)
            changed = (
                self._observe(cluster, results, holds=holds, unreachable=unreachable, now=now) or changed
            )
        if changed:
            await self.tick()

    def _observe(
        self,
        cluster: str,
        results: Mapping[str, Observed],
        *,
        holds: Mapping[str, Hold],
        unreachable: str,
        now: float,
    ) -> bool:
        """Feed one round to the rollouts (no tick); whether any changed."""
        changed = False
        for b, r in list(self.latest.items()):
            if holds.get(b) != NEWEST:
                continue  # the round applied another revision of the bundle there (or none)
            seen = results.get(b)
            if unreachable and (seen is None or seen.state is model.State.UNREACHABLE):
                seen = Observed(model.State.UNREACHABLE, message=unreachable)  # the round's own message
            elif seen is None:
                continue
            new = ro.observe_round(
                r,
                cluster,
                state=seen.state,
                degraded=seen.degraded,
                retriable=seen.retriable,
                message=seen.message,
                now=now,
            )
            if new is not r:
                self._set(new)
                changed = True
        return changed

    def _renders(self, bundle: str, cluster: str, handed: str | None) -> bool:
        """Whether the latest rollout of `bundle` renders `handed` on `cluster` (True when it keeps no hash
        of it: nothing to tell them apart)."""
        known = self.hashes.get(bundle, {}).get(cluster)
        return known is None or known == handed

    def awaiting_health(self, cluster: str) -> list[str]:
        """Bundles whose rollout waits for this cluster's health at its revision (sent and applied)."""
        out = []
        for b, r in self.latest.items():
            m = r.members.get(cluster)
            if r.terminal or m is None or m.wave != r.wave:
                continue
            phase, applied = m.phase, m.applied_at is not None
            if phase is ro.ClusterPhase.PROGRESSING and self._reported_healthy(b, cluster, r):
                phase, applied = ro.ClusterPhase.HEALTHY, True
            if not applied:
                continue
            soaking = phase is ro.ClusterPhase.HEALTHY and r.spec.waves[m.wave].soak > 0
            if phase is ro.ClusterPhase.PROGRESSING or soaking:
                out.append(b)
        return sorted(out)

    def in_flight(self, cluster: str) -> bool:
        """True while some rollout waits for this cluster's health (a change on it may advance one)."""
        for b, r in self.latest.items():
            m = r.members.get(cluster)
            if r.terminal or m is None or m.wave != r.wave:
                continue
            phase = m.phase
            if phase is ro.ClusterPhase.PROGRESSING and self._reported_healthy(b, cluster, r):
                phase = ro.ClusterPhase.HEALTHY
            if phase is ro.ClusterPhase.PROGRESSING:
                return True
            if phase is ro.ClusterPhase.HEALTHY and r.spec.waves[m.wave].soak > 0:
                return True  # a soak restarts when it degrades
        return False

    def _reported_healthy(self, bundle: str, cluster: str, r: ro.Rollout) -> bool:
        """A follower's round saw `bundle` healthy on `cluster` at `r`'s revision and reported it for the
        coordinator (`reports`): the coordinator's copy still says in flight until that report reaches it
        (a period later, with the shard's summary), but the follower waits no more for that health than
        the coordinator does for its own clusters'. Without it each of the follower's rounds was followed by
        a second, whole round (its own apply seen coming back on the watch: `in_flight`, not
        `awaiting_health` since not applied in the coordinator's copy: a round), one per cluster and commit."""
        if self.deciding():
            return False
        seen = self.reports.get(cluster, {}).get(bundle)
        return (
            seen is not None
            and seen.revision == r.revision
            and seen.state == model.State.SYNCED.value
            and not seen.degraded
        )

    # -- people's actions -----------------------------------------------------------------------------------

    async def act(
        self,
        bundle: str,
        action: ro.Action,
        *,
        actor: str,
        reason: str = "",
        wave: str | None = None,
        cluster: str | None = None,
    ) -> ro.Rollout:
        """A person's action; KeyError when the bundle has no rollout, `ro.NotApplicable` (409) when the
        action does not apply. Stored, then acted on (clusters woken)."""
        r = self.latest.get(bundle)
        if r is None:
            raise KeyError(f"bundle {bundle}: no rollout")
        now = self._clock()
        if not self.deciding():
            ro.act(r, action, actor=actor, reason=reason, now=now, wave=wave, cluster=cluster)  # 409 here
            if self.forward is None:
                raise errors.StateError(f"bundle {bundle}: this replica does not decide rollouts")
            await self.forward(bundle, r.revision, action, actor, reason, wave, cluster)
            log.info("bundle %s: rollout %s by %s handed to the coordinator", bundle, action, actor)
            return r
        before = {c: self._held_as(bundle, c) for c in r.members}
        new = ro.act(r, action, actor=actor, reason=reason, now=now, wave=wave, cluster=cluster)
        span = self._spans.get(bundle)
        if span is not None:
            span.add_event(
                f"action {action}",
                {"actor": actor, "reason": reason, "wave": wave or "", "cluster": cluster or ""},
            )
        self._set(new)
        if self._observer is not None and new.actions:
            self._observer.acted(new, new.actions[-1])
        with tracer.start_as_current_span(
            f"rollout {action} {bundle}",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            links=[Link(span.get_span_context())] if span is not None else [],
            attributes={"fleet.bundle": bundle, "fleet.revision": r.revision, "fleet.actor": actor},
        ):
            pass
        log.info("bundle %s: rollout %s by %s%s", bundle, action, actor, f" ({reason})" if reason else "")
        await self.tick()
        for c, h in before.items():
            if self._held_as(bundle, c) != h:
                self._wake(c, self._contexts.get(bundle))
        return self.latest[bundle]

    def _held_as(self, bundle: str, cluster: str) -> tuple[Hold, bool]:
        """What a round of `cluster` holds `bundle` at, and whether that is only until the rollout reaches
        it (`on_its_way`): a change of either needs a round (a rollback, an abort or a skip of a cluster
        left to another writer meanwhile writes what it holds again)."""
        return self.hold(bundle, cluster), self.on_its_way(bundle, cluster, revision=self._revision)

    # -- the clock ------------------------------------------------------------------------------------------------

    async def tick(self) -> None:
        """Advance every rollout now; store what changed; then wake the clusters to send a revision to, and
        every cluster of a rollout that rolled back on its own (`onFailure: rollback`): the ones it moved
        go back to what they held, the others are no longer held only until it reaches them."""
        if not self.deciding():
            self._changed.set()
            return
        now = self._clock()
        starts: list[tuple[str, str]] = []
        back: list[tuple[str, str]] = []
        for b, r in list(self.latest.items()):
            if r.terminal:
                continue
            step = ro.advance(r, now=now)
            if step.rollout is not r and step.rollout != r:
                self._set(step.rollout)
                if step.rollout.phase is ro.Phase.ROLLED_BACK:
                    back.extend((b, c) for c in step.rollout.members if ro.governs(step.rollout, c))
            starts.extend((b, c) for c in step.start)
            self._announce_waves(step)
        if starts or self._decided:
            self._starting.update(starts)
            try:
                await self.flush()
            finally:
                self._starting.difference_update(starts)
        elif self._dirty:
            self._deferred.set()
        for b, c in (*starts, *back):
            self._wake(c, self._contexts.get(b))
        self._changed.set()

    async def run(self) -> None:
        """The soak and deadline timer, and the writes of what waits for the next (`_store_later`); runs
        until cancelled, then stores what was waiting."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._store_later)
                await self._timer()
        finally:
            if self._dirty and self.deciding():
                with anyio.CancelScope(shield=True):
                    await self.flush()

    async def _timer(self) -> None:
        """Sleeps until the next time a rollout must be looked at, or until something changed."""
        while True:
            wakes = [w for w in (ro.next_wake(r) for r in self.latest.values()) if w is not None]
            delay = max(0.0, min(wakes) - self._clock()) if wakes else None
            self._changed = anyio.Event()
            if delay is None:
                await self._changed.wait()
            else:
                with anyio.move_on_after(delay + 0.01):
                    await self._changed.wait()
                if self._clock() >= min(wakes):
                    await self.tick()

    # -- following the coordinator ------------------------------------------------------------------------------

    def adopt(self, stored: Mapping[str, statedb.RolloutRow]) -> list[str]:
        """Take in the coordinator's rollouts as stored (the newest of each bundle); wake the clusters whose
        hold changed. Returns the bundles taken in (an unreadable stored form is logged and skipped: the
        rollout known before stays)."""
        taken = []
        for bundle, row in sorted(stored.items()):
            try:
                r = ro.load(row.doc["rollout"])
            except (KeyError, TypeError, ValueError) as e:
                log.error(
                    "bundle %s: stored rollout of %s unreadable, not taken in: %s",
                    bundle,
                    row.revision[:12],
                    e,
                )
                continue
            hashes = dict(row.doc.get("hashes") or {})
            checked = row.doc.get("checked")
            same = self.latest.get(bundle) == r and self.hashes.get(bundle) == hashes
            if same and bundle not in self._awaiting and checked in (None, self._checked.get(bundle)):
                continue  # nothing a hold depends on changes
            # Every hold as the clusters' last rounds had it, before anything it depends on changes: the
            # end of the wait for the coordinator changes holds too, even when its rollout stays the same
            # (docs/benchmarks.md, "Two replicas' start").
            clusters = self._members(bundle, r) | set(hashes) | set(self.hashes.get(bundle, {}))
            before = {c: self.hold(bundle, c) for c in clusters}
            if self._awaiting.get(bundle) in (r.revision, checked):
                self._awaiting.pop(bundle, None)
            if isinstance(checked, str):
                self._checked[bundle] = checked
            if not same:
                self.latest[bundle] = r
                self.hashes[bundle] = hashes
                taken.append(bundle)
                if not self.deciding():
                    self._end_span(bundle, "followed: the coordinator traces this rollout")
            for c, h in sorted(before.items()):
                if self.hold(bundle, c) != h:
                    self._wake(c, self._contexts.get(bundle))
        for bundle in list(self._awaiting):
            if bundle not in stored:
                continue
        if taken:
            self._update_metrics()
            self._changed.set()
        return taken

    async def take_over(self) -> None:
        """This replica has just become the coordinator (its rollouts adopted from the records): take in
        the newest revision it enforces as the coordinator would have, then act on what is due."""
        self._awaiting.clear()
        if self._last_begin is not None:
            await self.begin(**self._last_begin)
        else:
            await self.tick()

    def _members(self, bundle: str, r: ro.Rollout) -> set[str]:
        old = self.latest.get(bundle)
        return set(r.members) | (set(old.members) if old is not None else set())

    def _report(
        self,
        cluster: str,
        results: Mapping[str, Observed],
        *,
        holds: Mapping[str, Hold],
        unreachable: str,
        now: float,
    ) -> None:
        """A follower's round: what it saw of each bundle it applied at a rollout's revision, for the
        coordinator (carried by the shard's status summary)."""
        per = self.reports.setdefault(cluster, {})
        for b, r in self.latest.items():
            m = r.members.get(cluster)
            if r.terminal or m is None or holds.get(b) != NEWEST:
                continue
            seen = results.get(b)
            if seen is None and not unreachable:
                continue
            per[b] = summaries.Observation(
                revision=r.revision,
                state=(seen.state if seen is not None else model.State.UNREACHABLE).value,
                at=now,
                degraded=seen.degraded if seen is not None else False,
                retriable=seen.retriable if seen is not None else False,
                message=seen.message if seen is not None else "",
                unreachable=unreachable,
            )
        if not per:
            self.reports.pop(cluster, None)
