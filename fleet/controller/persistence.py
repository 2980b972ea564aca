"""The engine's writes to the state database (docs/operations.md): a cache whose failures never end the
controller.

Owns: saving the revision row and each cluster's rows after its round, off the event loop and shielded
from cancellation (the rounds that end while another write runs are saved together, in one transaction); a failed write keeps reconciling and says so (`stateStore` in the status, the
`fleet_state_saving` metric, an aggregated ERROR), is retried each fetch interval and saves everything on
recovery; a damaged database is set aside and rebuilt, said loudly.
Does not: decide what the records hold (`fleet.controller.runtime`), or read them back (the engine's
start-up does, `Engine._restore`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import anyio
from opentelemetry import trace

from fleet.clients import statedb
from fleet.controller import base, runtime
from fleet.core import (
    errors,
)
from fleet.core import history as hist

log = logging.getLogger("fleet.engine")
tracer = trace.get_tracer("fleet.engine")


class Persistence(base.EngineBase):
    """The engine's part described above."""

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

    # The rounds whose rows wait to be written together (one thread hop and one transaction for all the
    # rounds that ended meanwhile), and whether their write has begun.
    _unsaved_rounds: _Rounds | None = None

    async def _persist_cluster(
        self, rt: runtime.ClusterRuntime, *, history: tuple[hist.Entry, ...] = ()
    ) -> None:
        """Save a round's rows (and its history) and return once they are written (or could not be: the
        state is kept in memory, `_save`). Rounds that end while another write runs are written together
        in one transaction, each as it left its cluster, in the order they ended."""
        row, targets = self._cluster_rows(rt)
        batch = self._unsaved_rounds
        leader = batch is None or batch.begun
        if batch is None or batch.begun:
            batch = self._unsaved_rounds = _Rounds()
        batch.rounds.append(statedb.ClusterRound(row, targets, history))
        if not leader:
            await batch.written.wait()
            return
        with anyio.CancelScope(shield=True):  # the others wait for this write: it happens whatever comes
            try:
                async with self._db_limiter:  # the write before ends first: rounds end meanwhile, and join
                    batch.begun = True
                rounds = tuple(batch.rounds)

                def write() -> None:
                    try:
                        self.store.record_clusters(rounds)
                    except errors.StateError:
                        self.audit.unsaved(tuple(e for r in rounds for e in r.history))
                        raise

                await self._save(write)
            finally:
                batch.begun = True
                batch.written.set()

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


class _Rounds:
    """Rounds' rows saved together (`Persistence._persist_cluster`)."""

    def __init__(self) -> None:
        self.rounds: list[statedb.ClusterRound] = []
        self.begun = False
        self.written = anyio.Event()
