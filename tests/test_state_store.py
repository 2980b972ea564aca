"""The controller's SQLite state survives restarts and never holds half a write."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fleet import errors, state


def make(tmp_path: Path) -> state.StateStore:
    return state.StateStore(tmp_path / "state" / "fleet.db")


def test_a_revision_written_is_read_back_after_reopening(tmp_path: Path) -> None:
    store = make(tmp_path)
    row = state.RevisionRow(
        sha="a" * 40,
        message="bump web",
        author="Ada",
        committed_at="2026-11-26T10:00:00Z",
        fetched_at="2026-11-26T10:00:05Z",
        problems=({"path": "bundles/web/x.yaml", "line": 3, "message": "bad"},),
    )
    store.record_revision(row)
    store.close()
    assert make(tmp_path).load().revision == row


def test_cluster_and_target_rows_round_trip_and_stale_targets_are_dropped(tmp_path: Path) -> None:
    store = make(tmp_path)
    c = state.ClusterRow(name="eu-1", state="Synced", revision="b" * 40, last_sync_at="2026-11-26T10:00:00Z")
    web = state.TargetRow(
        cluster="eu-1", bundle="web", state="Synced", revision="b" * 40, hash="h1", objects=3
    )
    db = state.TargetRow(cluster="eu-1", bundle="db", state="Failed", last_error="boom")
    store.record_cluster(c, (web, db))
    store.record_cluster(c, (web,), drop_other_targets=True)
    saved = make(tmp_path).load()
    assert saved.clusters == {"eu-1": c}
    assert saved.targets == {("eu-1", "web"): web}


def test_forgetting_a_cluster_removes_its_rows(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.record_cluster(
        state.ClusterRow(name="gone", state="Synced"),
        (state.TargetRow(cluster="gone", bundle="b", state="Synced"),),
    )
    store.forget_cluster("gone")
    saved = store.load()
    assert saved.clusters == {} and saved.targets == {}


def test_sync_history_keeps_only_the_newest_entries_per_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "HISTORY_PER_CLUSTER", 3)
    store = make(tmp_path)
    for i in range(5):
        store.record_sync(
            cluster="eu-1",
            revision=f"r{i}",
            started_at=None,
            finished_at=None,
            state="Synced",
            changes={"created": i},
            error=None,
            trace_id=None,
        )
    history = store.history("eu-1", limit=10)
    assert [h.revision for h in history] == ["r4", "r3", "r2"]
    assert history[0].changes == {"created": 4}


def test_a_database_from_a_newer_fleet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fleet.db"
    make(tmp_path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={state.SCHEMA_VERSION + 1}")
    with pytest.raises(errors.FleetError, match="newer than this fleet"):
        state.StateStore(path)


def test_a_failed_transaction_leaves_the_previous_row(tmp_path: Path) -> None:
    store = make(tmp_path)
    good = state.ClusterRow(name="eu-1", state="Synced")
    store.record_cluster(good)
    bad_target = state.TargetRow(cluster="eu-1", bundle="web", state=None)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.record_cluster(state.ClusterRow(name="eu-1", state="Failed"), (bad_target,))
    assert store.load().clusters["eu-1"] == good
