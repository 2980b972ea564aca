"""The controller's audit trail and loop back to people: history, Kubernetes Events, notifications.

Owns: `Recorder`, one per engine, the single place where what the engine and the rollout conductor saw
becomes (1) history entries (`fleet.core.history`: returned to the caller, which stores them in the same
transaction as the state they explain), (2) Kubernetes Events on the clusters (`fleet.core.clusterevents`,
handed to `fleet.controller.events.EventWriter`, which never blocks), and (3) notices about revisions
(`fleet.core.notices.Tracker`) rendered into outbox messages (`fleet.controller.notify.Notifier`), which the conductor
stores with the rollout change that caused them; the authors and subjects of recent revisions; entries
and messages a failed database write left unsaved (written again on recovery); the retention task that
deletes history older than `--history-retention` in short batches, off the event loop.

Does not: decide what is a change (`fleet.core.history`), what a revision's verdict is
(`fleet.core.notices`), write Events or send notifications itself, or hold a Secret value, token or object
(entries, notes and payloads carry names, revisions, counts and messages only).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import anyio

from fleet.clients import statedb
from fleet.controller.events import EventWriter
from fleet.controller.metrics import Metrics
from fleet.controller.notify import Notifier
from fleet.core import clusterevents as ce
from fleet.core import errors, model, notices
from fleet.core import history as hist
from fleet.core import rollout as ro

log = logging.getLogger("fleet.audit")

DEFAULT_RETENTION = 30 * 86400.0
_AUTHORS = 1_000  # revisions whose author and subject are remembered
_UNSAVED = 10_000  # entries (and as many messages) kept in memory while the database refuses writes


@dataclass(frozen=True)
class Settings:
    instance: str = model.DEFAULT_INSTANCE
    retention: float = DEFAULT_RETENTION  # seconds of history kept
    prune_every: float = 3600.0
    prune_batch: int = 1_000  # one short transaction each (a few tens of ms): writers wait no longer


class Recorder:
    def __init__(
        self,
        *,
        store: statedb.StateStore,
        metrics: Metrics,
        settings: Settings | None = None,
        events: EventWriter | None = None,
        notifier: Notifier | None = None,
        db_limiter: anyio.CapacityLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.events = events
        self.notifier = notifier
        self._metrics = metrics
        self._db_limiter = db_limiter or anyio.CapacityLimiter(1)
        self._clock = clock
        self.tracker = notices.Tracker()
        self._commits: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()
        self._entries: list[hist.Entry] = []  # from the conductor, stored with its next rollout rows
        self._messages: list[statedb.Message] = []
        self._unsaved_entries: deque[hist.Entry] = deque(maxlen=_UNSAVED)
        self._unsaved_messages: deque[statedb.Message] = deque(maxlen=_UNSAVED)

    # -- start-up ---------------------------------------------------------------------------------------

    def restore(self) -> None:
        """The verdicts of the stored rollouts count as told (blocking; at start-up)."""
        try:
            rows = self.store.rollout_phases()
        except errors.StateError as e:
            log.error("notifications: cannot read the stored rollouts (%s): their next change is told", e)
            return
        self.tracker.load(rows)

    # -- revisions --------------------------------------------------------------------------------------

    def commit(self, sha: str, *, author: str | None, subject: str | None) -> None:
        self._commits[sha] = (author, subject)
        self._commits.move_to_end(sha)
        while len(self._commits) > _AUTHORS:
            self._commits.popitem(last=False)
        self.tracker.commit(sha, author=author, subject=subject)

    def author_of(self, sha: str | None) -> str | None:
        return self._commits.get(sha, (None, None))[0] if sha else None

    # -- the engine: rounds and drift repairs -------------------------------------------------------------

    def round(
        self,
        cluster: str,
        pairs: Iterable[hist.Pair],
        *,
        trace_id: str | None,
        rollback_actor: Callable[[str], str] = lambda bundle: hist.FLEET,
    ) -> tuple[hist.Entry, ...]:
        """The entries of one round (for the caller to store with the cluster's rows); their Events sent."""
        entries = tuple(
            hist.of_round(
                cluster,
                pairs,
                at=self._clock(),
                trace_id=trace_id,
                author_of=self.author_of,
                rollback_actor=rollback_actor,
            )
        )
        self._seen(entries)
        return entries

    def repaired(
        self,
        cluster: str,
        changes: Iterable[model.Change],
        *,
        bundle_of: Mapping[model.ObjectRef, str],
        revisions: Mapping[str, str | None],
        trace_id: str | None,
    ) -> tuple[hist.Entry, ...]:
        """A drift repair by a watch: one entry per bundle written back, and its Event."""
        per_bundle: dict[str, list[str]] = {}
        refs: dict[str, list[model.ObjectRef]] = {}
        for c in changes:
            bundle = bundle_of.get(c.ref)
            if bundle is None:
                continue
            per_bundle.setdefault(bundle, []).append(c.action.value)
            if c.action in (model.Action.CREATED, model.Action.CONFIGURED):
                refs.setdefault(bundle, []).append(c.ref)
        entries = tuple(
            hist.of_repair(
                cluster,
                {b: hist.counts(actions) for b, actions in per_bundle.items()},
                revisions=revisions,
                at=self._clock(),
                trace_id=trace_id,
            )
        )
        self._seen(entries, refs=refs)
        return entries

    def _seen(
        self, entries: Iterable[hist.Entry], *, refs: Mapping[str, list[model.ObjectRef]] | None = None
    ) -> None:
        for e in entries:
            self._metrics.history_entries.labels(outcome=e.outcome).inc()
            if self.events is not None:
                occ = ce.of_entry(e, instance=self.settings.instance, refs=(refs or {}).get(e.bundle, ()))
                if occ is not None:
                    self.events.emit(occ)

    # -- the rollout conductor: called as it changes a rollout, stored with its next flush -----------------

    def rollout_changed(self, old: ro.Rollout | None, new: ro.Rollout) -> None:
        now = self._clock()
        entries = hist.of_rollout(old, new, at=now)
        self._entries.extend(entries)
        self._seen(entries)
        if new.phase is ro.Phase.HALTED and (old is None or old.phase is not ro.Phase.HALTED) and self.events:
            for cluster in new.failures:
                self.events.emit(
                    ce.of_halt(
                        cluster,
                        bundle=new.bundle,
                        revision=new.revision,
                        reason=new.reason,
                        instance=self.settings.instance,
                        at=now,
                    )
                )
        self.tracker.note(new)

    def acted(self, r: ro.Rollout, record: ro.ActionRecord) -> None:
        entry = hist.of_action(r, record)
        self._entries.append(entry)
        self._seen((entry,))

    def take(self) -> tuple[tuple[hist.Entry, ...], tuple[statedb.Message, ...]]:
        """What the conductor stores with its next rollout rows (and whatever a failed write left): the
        entries of the changes since the last store, and the notices they make."""
        for notice in self.tracker.tell(at=self._clock()):
            log.info("revision %s: %s (%s)", notice.revision[:12], notice.state, notice.description)
            if self.notifier is not None and self.notifier.enabled:
                self._messages.extend(self.notifier.messages(notice))
        entries = (*self._unsaved_entries, *self._entries)
        messages = (*self._unsaved_messages, *self._messages)
        self._entries, self._messages = [], []
        self._unsaved_entries.clear()
        self._unsaved_messages.clear()
        return entries, messages

    @property
    def pending(self) -> bool:
        return bool(self._entries or self._messages or self.tracker.noted)

    def stored(self) -> None:
        """Messages were stored: delivery looks at them now."""
        if self.notifier is not None:
            self.notifier.wake()

    def unsaved(self, entries: Iterable[hist.Entry] = (), messages: Iterable[statedb.Message] = ()) -> None:
        """A write that held these failed: keep them for the next successful save (called from a worker
        thread; deque appends are atomic)."""
        self._unsaved_entries.extend(entries)
        self._unsaved_messages.extend(messages)

    def take_unsaved(self) -> tuple[tuple[hist.Entry, ...], tuple[statedb.Message, ...]]:
        entries, messages = tuple(self._unsaved_entries), tuple(self._unsaved_messages)
        self._unsaved_entries.clear()
        self._unsaved_messages.clear()
        return entries, messages

    # -- the tasks ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Retention, Event writing and notification delivery, until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._retention)
            if self.events is not None:
                tg.start_soon(self.events.run)
            if self.notifier is not None:
                tg.start_soon(self.notifier.run)

    async def prune_once(self) -> int:
        """Delete history older than the retention, batch by batch (each a short transaction)."""
        before = self._clock() - self.settings.retention
        total = 0
        while True:
            n = await anyio.to_thread.run_sync(
                lambda: self.store.prune_history(before=before, batch=self.settings.prune_batch),
                limiter=self._db_limiter,
            )
            total += n
            if n < self.settings.prune_batch:
                break
            await anyio.sleep(0.01)  # let other writers in between batches
        if total:
            self._metrics.history_pruned.inc(total)
            log.info("history: %d entries older than the retention deleted", total)
        return total

    async def _retention(self) -> None:
        await anyio.sleep(5.0)  # not in the way of the start-up
        while True:
            try:
                await self.prune_once()
            except errors.StateError as e:
                log.error("history: cannot delete old entries: %s", e)
            await anyio.sleep(self.settings.prune_every)
