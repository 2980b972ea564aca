"""A replica's history writer at a shutdown (fleet/controller/historywriter.py): entries recorded after
its task ended (the rollouts' last store runs in its own task beside the writer's end, when `fleet serve`
cancels the engine) are written, not left waiting for a writer that is gone. Over real HTTP against the
sim's management cluster."""

from __future__ import annotations

from pathlib import Path

import anyio

from fleet.clients import statedb
from fleet.core import history as hist
from fleet.sim import testing
from tests.support.inprocess import REV, Owner, close, management_sim, replica

__all__ = ["management_sim"]  # the fixture `sim`


def test_an_entry_recorded_after_the_history_writer_stopped_is_written_not_lost(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: a.store.history.run(retry=2.0))
                await anyio.sleep(0.05)
                tg.cancel_scope.cancel()  # the shutdown: the writer's task ends first
            late = hist.Entry(at=1.0, cluster="", bundle="web", outcome="Halted", to_revision=REV)
            with anyio.CancelScope(shield=True):  # as the rollouts' last store runs, from a worker thread
                await anyio.to_thread.run_sync(a.store.record_history, (late,))
            assert a.store.history.pending == 0
            segments = await a.store.records._segments()
            assert [[e.outcome for e in s.entries] for s in segments] == [["Halted"]]
        finally:
            await close(a)

    anyio.run(main)


def test_a_replicas_rounds_saved_together_put_their_history_in_the_management_cluster(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    """`fleet serve` saves the rounds that end while the database writes together
    (`Persistence._persist_cluster` -> `record_clusters`): with replicas their history is the fleet's, in
    the management cluster, not in this replica's own database where no history query looks."""

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        try:
            rounds = tuple(
                statedb.ClusterRound(
                    statedb.ClusterRow(name=c, state="Synced"),
                    (statedb.TargetRow(cluster=c, bundle="web", state="Synced", revision=REV),),
                    (hist.Entry(at=1.0, cluster=c, bundle="web", outcome="Synced", to_revision=REV),),
                )
                for c in ("c1", "c2")
            )
            await anyio.to_thread.run_sync(a.store.record_clusters, rounds)
            assert set(a.store.load().clusters) == {"c1", "c2"}  # the replica's own rows, in its database
            got = await anyio.to_thread.run_sync(a.store.query_history, hist.Query(limit=10))
            assert sorted(e.cluster for e in got) == ["c1", "c2"]
        finally:
            await close(a)

    anyio.run(main)
