"""A replica's history appends to the management cluster, batched (docs/scaling.md, "State of record").

Owns: `HistoryWriter`, the entries a replica's rounds, drift repairs and rollouts recorded but that are not
yet in its history segments (`fleet.clients.records.Records.append`): taken from any worker thread without
waiting (`add`), written by one task on the event loop (`run`), every entry waiting at that moment in one
append, at most one append a second (a segment is a ConfigMap rewritten whole: one append per round rewrote a segment of up to 500
entries for each of a commit's rounds, and each round's worker waited for it, one at a time, behind the
state database's single writer); `flush`, the entries waiting written now (a history query asked of this
replica sees every entry it recorded). A failed append keeps its entries, in order, and says why
(`problem`, shown by the status through `Shared`); they are written again at the next wake or retry.
Once `run` has ended (a shutdown), entries still coming (the rollouts' last store, which runs beside the
writer's own end) are written by `add` itself, as before there was a writer, not left to no one.

Does not: encode segments or choose them (`fleet.clients.records`, `fleet.core.records`), or decide what
an entry says (`fleet.controller.audit`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import anyio
import anyio.from_thread

from fleet.clients import records as records_client
from fleet.core import errors
from fleet.core import history as hist

log = logging.getLogger("fleet.shared")

BATCH = 100  # entries per append at most (a segment holds 500, `fleet.core.records.SEGMENT_ENTRIES`)
# Seconds between two appends at least: each rewrites the segment whole (up to 256 KiB), so the entries of
# a commit's rounds go in a few appends, not one per answer (as the rollouts' own writes wait for what
# decides nothing yet: docs/rollouts.md, "Restarts").
GAP = 1.0


class HistoryWriter:
    """See the module. `add` from worker threads of the event loop `run` and `flush` run on."""

    def __init__(self, records: records_client.Records) -> None:
        self.records = records
        self.problem: str | None = None  # why the last append failed (None: it did not)
        self._lock = threading.Lock()  # guards `_pending`, taken by worker threads and the loop
        self._pending: list[hist.Entry] = []
        self._wake: anyio.Event | None = None  # set by `run` while it waits
        self._writing = anyio.Lock()
        self._stopped = False  # `run` has ended (shutting down): what comes now is written at once
        self.retry = 5.0  # how long such a late write may take (`run`'s retry)
        self.appends = 0  # appends sent (for tests and benchmarks)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def add(self, entries: Iterable[hist.Entry]) -> None:
        """Keep `entries` for the next append (from a worker thread: never waits for the write). Once `run`
        has ended (a shutdown: the rollouts' last store, a round or repair ending meanwhile), they are
        written before this returns, nothing waiting for a writer that is gone."""
        batch = tuple(entries)
        if not batch:
            return
        with self._lock:
            first = not self._pending
            self._pending.extend(batch)
        if self._stopped:
            try:
                anyio.from_thread.run(self._last_flush)
            except RuntimeError:  # on the event loop itself, which cannot wait here: kept waiting
                log.error("state of record: %d history entries not written at exit", self.pending)
            return
        wake = self._wake
        if first and wake is not None:
            try:
                anyio.from_thread.run_sync(wake.set)
            except RuntimeError:  # called on the event loop itself
                wake.set()

    async def flush(self) -> None:
        """Append every entry waiting now (several appends when more than `BATCH`), in order. Raises
        `errors.StateError` when an append fails: its entries and those after stay waiting."""
        async with self._writing:
            while True:
                with self._lock:
                    batch = tuple(self._pending[:BATCH])
                if not batch:
                    return
                try:
                    await self.records.append(batch)
                except errors.StateError as e:
                    self.problem = f"history: {self.pending} entries not written yet: {e}"
                    raise
                self.appends += 1
                with self._lock:
                    del self._pending[: len(batch)]
                self.problem = None

    async def run(self, *, retry: float, gap: float = GAP) -> None:
        """Write what is added: at most one append every `gap` seconds (what comes meanwhile goes in the
        next one); after a failure, again `retry` seconds later. Until cancelled; then what is waiting is
        written, for at most `retry` seconds more."""
        try:
            while True:
                self._wake = anyio.Event()
                if self.pending == 0:
                    await self._wake.wait()
                self._wake = None
                try:
                    await self.flush()
                except errors.StateError as e:
                    log.warning("state of record: %s", self.problem or e)
                    await anyio.sleep(retry)
                else:
                    await anyio.sleep(gap)
        finally:
            self._wake, self.retry = None, retry
            await self._last_flush()
            self._stopped = True

    async def _last_flush(self) -> None:
        """What waits, written at the end (at most `retry` seconds, shielded from the shutdown's cancel)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.retry) as scope:
            try:
                await self.flush()
            except errors.StateError as e:
                log.error("state of record: history entries not written at exit: %s", e)
        if scope.cancelled_caught:
            log.error("state of record: %d history entries not written at exit (timed out)", self.pending)
