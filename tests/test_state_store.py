"""The controller's SQLite state survives restarts and never holds half a write."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fleet import errors, state
from tests.support import disk


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
    with pytest.raises(errors.StateError) as caught:
        store.record_cluster(state.ClusterRow(name="eu-1", state="Failed"), (bad_target,))
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError) and not caught.value.corrupt
    assert store.load().clusters["eu-1"] == good


def filled(store: state.StateStore, *, clusters: int = 3) -> None:
    for i in range(clusters):
        store.record_cluster(
            state.ClusterRow(name=f"c{i}", state="Synced", revision="a" * 40),
            (state.TargetRow(cluster=f"c{i}", bundle="web", state="Synced", hash="h"),),
        )
        for _ in range(50):
            store.record_sync(
                cluster=f"c{i}",
                revision="a" * 40,
                started_at=None,
                finished_at="2026-11-26T10:00:00Z",
                state="Synced",
                changes={"created": 1},
                error=None,
                trace_id=None,
            )


@pytest.mark.parametrize(
    ("offset", "what"),
    [(4096, "a table page"), (0, "the header")],
    ids=["table-page", "header"],
)
def test_a_damaged_database_is_set_aside_with_a_timestamp_and_a_new_one_is_built(
    tmp_path: Path, offset: int, what: str
) -> None:
    path = tmp_path / "state" / "state.db"
    store = state.StateStore(path)
    filled(store)
    store.close()
    with path.open("r+b") as f:  # really damage the file: random bytes over one page
        f.seek(offset)
        f.write(bytes((i * 151 + 7) % 256 for i in range(4096)))
    damaged = path.read_bytes()

    store = state.StateStore(path)

    aside = store.set_aside
    assert aside is not None, what
    assert aside.path.name.startswith("state.db.corrupt-") and aside.path.parent == path.parent
    assert aside.path.read_bytes() == damaged  # kept as it was, for a post-mortem
    assert "malformed" in aside.reason or "not a database" in aside.reason
    assert aside.at.endswith("Z")
    assert store.load() == state.Saved(revision=state.RevisionRow())  # rebuilt from nothing: a cache
    filled(store, clusters=1)
    store.close()
    assert state.StateStore(path).set_aside is None  # the new file is sound


def test_rebuild_sets_the_open_database_aside_and_continues_with_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.db"
    store = state.StateStore(path)
    filled(store, clusters=1)
    aside = store.rebuild("database disk image is malformed")
    assert aside.path.exists() and store.set_aside == aside
    assert store.load().clusters == {}
    filled(store, clusters=1)
    assert set(store.load().clusters) == {"c0"}


def test_a_full_disk_is_a_state_error_and_writes_succeed_again_once_space_is_freed(tmp_path: Path) -> None:
    """A real full disk: an 8 MiB tmpfs (`tests.support.disk`) filled by a file."""
    with disk.small_filesystem(tmp_path / "small", size="8m") as mount:
        store = state.StateStore(mount / "state.db")
        filled(store, clusters=1)
        filler = disk.fill(mount)
        with pytest.raises(errors.StateError, match="full") as caught:
            for i in range(200):  # the WAL may still have room for a few
                filled(store, clusters=i % 3 + 1)
        assert not caught.value.corrupt
        filler.unlink()
        filled(store, clusters=2)  # no transaction left open by the failed one
        assert set(store.load().clusters) == {"c0", "c1"}
        store.close()
