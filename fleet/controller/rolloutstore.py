"""How the rollouts' conductor stores its rollouts and shows them (docs/rollouts.md, "Restarts").

Owns: `Storing`, the base of `fleet.controller.rollouts.Conductor` that keeps the latest rollout of every
bundle (`latest`) and the hashes of what its revision renders per cluster (`hashes`); recording each
change (`_set`: which changes decide something, the spans' transitions, the `Observer`'s word); storing
what changed through `fleet.clients.statedb` in one transaction per write (`flush`), one write for every
caller that waited meanwhile, and what decides nothing yet at most `store_delay` later (`_store_later`);
each rollout's stored form (`_row`); the rollout metrics; the rollouts' documents for the API, built once
per change.

Does not: decide anything (`fleet.core.rollout`, driven by the Conductor), say when a write must happen
before the clusters are woken (the Conductor's `tick`), or follow a coordinator
(`fleet.controller.rollouts`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any, Protocol

import anyio

from fleet.clients import statedb
from fleet.controller import rolloutspans
from fleet.controller.metrics import Metrics
from fleet.core import errors
from fleet.core import history as hist
from fleet.core import rollout as ro

# Runs one blocking write of the state database off the loop; reports (never raises) its failures.
SaveFn = Callable[[Callable[[], None]], Awaitable[None]]


class Observer(Protocol):
    """What records rollouts' changes for people (`fleet.controller.audit.Recorder`): told of every change and action
    as it happens; what it makes of them is stored with the rollout rows in one transaction."""

    def rollout_changed(self, old: ro.Rollout | None, new: ro.Rollout) -> None: ...

    def acted(self, r: ro.Rollout, record: ro.ActionRecord) -> None: ...

    @property
    def pending(self) -> bool: ...

    def take(self) -> tuple[tuple[hist.Entry, ...], tuple[statedb.Message, ...]]: ...

    def unsaved(
        self, entries: Iterable[hist.Entry] = (), messages: Iterable[statedb.Message] = ()
    ) -> None: ...

    def stored(self) -> None: ...


class Storing(rolloutspans.Spans):
    """The latest rollouts and their writes. Not thread-safe: the engine's event loop calls it."""

    def __init__(
        self,
        *,
        store: statedb.StateStore,
        metrics: Metrics,
        save: SaveFn,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
        store_delay: float = 1.0,
    ) -> None:
        super().__init__()
        self.store = store
        self._observer = observer
        self.metrics = metrics
        self.latest: dict[str, ro.Rollout] = {}
        self.hashes: dict[str, dict[str, str]] = {}  # bundle -> cluster -> hash at the rollout's revision
        # bundle -> the revisions whose rollout this process saw rolled back (what it sent there may still
        # be on a cluster it has not written back yet: never another writer's; `Workers._held_back`)
        self.rolled_back: dict[str, set[str]] = {}
        self._save = save
        self._clock = clock
        self._dirty: dict[tuple[str, str], ro.Rollout] = {}
        self._store_delay = store_delay
        self._version = 0  # counts changes; `_stored` is the count the last write began at
        self._stored = 0
        self._writing = anyio.Lock()
        self._decided = False  # a change since the last write decides something (see the module)
        self._deferred = anyio.Event()  # changes wait for the next write (`_store_later`)
        self._docs: dict[str, tuple[ro.Rollout, dict[str, Any]]] = {}  # bundle -> (rollout, its document)
        self._checked: dict[str, str] = {}  # bundle -> newest revision the coordinator took in for it

    # -- writes ------------------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Store every rollout that changed before this call (one transaction). A caller that waits for
        another's write finds its changes stored by the write that follows, made once for every caller
        that waited meanwhile."""
        wanted = self._version
        async with self._writing:
            if self._stored >= wanted:
                return  # stored by the write this caller waited for
            observer = self._observer
            self._stored, self._decided = self._version, False
            if not self._dirty and (observer is None or not observer.pending):
                return
            await self._write(observer)

    async def _write(self, observer: Observer | None) -> None:
        dirty, self._dirty = self._dirty, {}
        rows = tuple(self._row(r) for r in dirty.values())
        entries, messages = observer.take() if observer is not None else ((), ())

        def write() -> None:
            try:
                self.store.record_rollouts(rows, history=entries, outbox=messages)
            except errors.StateError:
                if observer is not None:
                    observer.unsaved(entries, messages)
                raise

        await self._save(write)
        if observer is not None and messages:
            observer.stored()
        self._update_metrics()

    def rows(self) -> tuple[statedb.RolloutRow, ...]:
        """Every bundle's latest rollout as stored (to save everything again after failed writes)."""
        return tuple(self._row(r) for r in self.latest.values())

    async def _store_later(self) -> None:
        """Changes that decide nothing are stored together, `store_delay` after the first of them."""
        while True:
            await self._deferred.wait()
            await anyio.sleep(self._store_delay)
            self._deferred = anyio.Event()
            await self.flush()

    # -- status --------------------------------------------------------------------------------------------------

    def documents(self) -> dict[str, dict[str, Any]]:
        """Every bundle's latest rollout as the API shows it. Built once per change of the rollout (a
        soaking one each time: it says the soak's time left): callers must not change them."""
        return {b: self._document(r) for b, r in sorted(self.latest.items())}

    def document(self, bundle: str, *, revision: str | None = None) -> dict[str, Any] | None:
        r = self.latest.get(bundle)
        if revision is not None and (r is None or not r.revision.startswith(revision)):
            row = self.store.rollout(bundle, revision)
            r = ro.load(row.doc["rollout"]) if row is not None else None
            return ro.document(r, now=self._clock()) if r is not None else None
        return self._document(r) if r is not None else None

    def _document(self, r: ro.Rollout) -> dict[str, Any]:
        built = self._docs.get(r.bundle)
        if built is not None and built[0] is r:
            return built[1]
        doc = ro.document(r, now=self._clock())
        if r.phase is not ro.Phase.SOAKING:
            self._docs[r.bundle] = (r, doc)
        return doc

    # -- internals ---------------------------------------------------------------------------------------------

    def _set(self, r: ro.Rollout) -> None:
        old = self.latest.get(r.bundle)
        self._version += 1
        if (
            old is None
            or old.revision != r.revision
            or replace(old, members=r.members, updated_at=r.updated_at) != r
        ):
            self._decided = True  # more than what rounds observed of its clusters: stored before going on
        if old is not None and old.revision == r.revision:
            self._trace_transitions(old, r)
        if self._observer is not None:
            self._observer.rollout_changed(old if old is not None and old.revision == r.revision else None, r)
        self.latest[r.bundle] = r
        if r.phase is ro.Phase.ROLLED_BACK:
            self.rolled_back.setdefault(r.bundle, set()).add(r.revision)
        self._dirty[(r.bundle, r.revision)] = r
        if r.terminal:
            self._end_span(r.bundle, str(r.phase))

    def _row(self, r: ro.Rollout) -> statedb.RolloutRow:
        doc: dict[str, Any] = {"rollout": ro.dump(r)}
        if self.latest.get(r.bundle) is r:
            doc["hashes"] = self.hashes.get(r.bundle, {})
            if r.bundle in self._checked:
                doc["checked"] = self._checked[r.bundle]
            span = self._span_ids(r.bundle)
            if span is not None:
                doc["span"] = span
        return statedb.RolloutRow(
            bundle=r.bundle,
            revision=r.revision,
            started_at=r.started_at,
            doc=doc,
            terminal=r.terminal,
            updated_at=r.updated_at,
        )

    def _update_metrics(self) -> None:
        counts = {str(p): 0 for p in ro.Phase}
        for r in self.latest.values():
            counts[str(r.phase)] += 1
        for phase, n in counts.items():
            self.metrics.rollouts.labels(state=phase).set(n)
        for b, r in self.latest.items():
            for cluster_phase, n in r.members.phases().items():
                self.metrics.rollout_clusters.labels(bundle=b, state=str(cluster_phase)).set(n)
