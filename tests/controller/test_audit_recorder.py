"""The audit recorder (fleet.controller.audit): retention, and what a failed database write must not lose."""

from __future__ import annotations

from pathlib import Path

import anyio

from fleet.clients import statedb
from fleet.controller import audit
from fleet.controller.metrics import Metrics
from fleet.core import history as hist


def test_history_older_than_the_retention_is_deleted_batch_by_batch_and_counted(tmp_path: Path) -> None:
    store = statedb.StateStore(tmp_path / "state.db")
    old = tuple(hist.Entry(at=float(i), cluster="eu-1", bundle="web", outcome="Synced") for i in range(12))
    new = tuple(hist.Entry(at=950.0 + i, cluster="eu-1", bundle="web", outcome="Synced") for i in range(3))
    store.record_history(old + new)
    metrics = Metrics()
    recorder = audit.Recorder(
        store=store,
        metrics=metrics,
        settings=audit.Settings(retention=100.0, prune_batch=5),
        clock=lambda: 1000.0,
    )
    assert anyio.run(recorder.prune_once) == 12
    assert [e.at for e in store.query_history(hist.Query())] == [952.0, 951.0, 950.0]
    assert metrics.registry.get_sample_value("fleet_history_pruned_total") == 12
    assert anyio.run(recorder.prune_once) == 0


def test_entries_and_messages_a_failed_write_held_are_kept_for_the_next_save(tmp_path: Path) -> None:
    recorder = audit.Recorder(store=statedb.StateStore(tmp_path / "state.db"), metrics=Metrics())
    entry = hist.Entry(at=1.0, cluster="eu-1", bundle="web", outcome="Synced")
    message = statedb.Message(receiver="github", kind="started:pending", body=b"{}")
    recorder.unsaved((entry,), (message,))
    assert recorder.take() == ((entry,), (message,))  # the conductor's next store carries them
    assert recorder.take_unsaved() == ((), ())
    recorder.unsaved((entry,))
    assert recorder.take_unsaved() == ((entry,), ())
