"""The controller's SQLite state survives restarts and never holds half a write."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fleet.clients import statedb
from fleet.core import errors
from fleet.core import history as hist
from tests.support import disk


def make(tmp_path: Path) -> statedb.StateStore:
    return statedb.StateStore(tmp_path / "state" / "fleet.db")


def test_a_revision_written_is_read_back_after_reopening(tmp_path: Path) -> None:
    store = make(tmp_path)
    row = statedb.RevisionRow(
        sha="a" * 40,
        message="bump web",
        author="Ada",
        committed_at="2026-11-26T10:00:00Z",
        fetched_at="2026-11-26T10:00:05Z",
        problems=({"path": "bundles/web/x.yaml", "line": 3, "message": "bad"},),
        claimed_sha="b" * 40,
        claimed_at="2026-11-26T09:00:05.123Z",
    )
    store.record_revision(row)
    store.close()
    assert make(tmp_path).load().revision == row


def test_a_version_3_database_gains_the_claimed_revision_and_keeps_its_revision(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fleet.db"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE revision (id INTEGER PRIMARY KEY CHECK (id = 1), sha TEXT, message TEXT, author TEXT,
                committed_at TEXT, fetched_at TEXT, problems TEXT NOT NULL DEFAULT '[]', fetch_error TEXT,
                fetch_error_at TEXT);
            INSERT INTO revision (id, sha, fetched_at) VALUES (1, 'r1', '2026-01-01T00:00:00Z');
            PRAGMA user_version=3;
            """
        )
    store = statedb.StateStore(path)
    rev = store.load().revision
    assert (rev.sha, rev.fetched_at, rev.claimed_sha, rev.claimed_at) == (
        "r1",
        "2026-01-01T00:00:00Z",
        None,
        None,
    )
    store.record_revision(
        statedb.RevisionRow(sha="r2", claimed_sha="r1", claimed_at="2026-01-01T00:00:00.5Z")
    )
    assert store.load().revision.claimed_at == "2026-01-01T00:00:00.5Z"


def test_cluster_and_target_rows_round_trip_and_stale_targets_are_dropped(tmp_path: Path) -> None:
    store = make(tmp_path)
    c = statedb.ClusterRow(
        name="eu-1", state="Synced", revision="b" * 40, last_sync_at="2026-11-26T10:00:00Z"
    )
    web = statedb.TargetRow(
        cluster="eu-1", bundle="web", state="Synced", revision="b" * 40, hash="h1", objects=3
    )
    db = statedb.TargetRow(cluster="eu-1", bundle="db", state="Failed", last_error="boom")
    store.record_cluster(c, (web, db))
    store.record_cluster(c, (web,), drop_other_targets=True)
    saved = make(tmp_path).load()
    assert saved.clusters == {"eu-1": c}
    assert saved.targets == {("eu-1", "web"): web}


def test_forgetting_a_cluster_removes_its_rows(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.record_cluster(
        statedb.ClusterRow(name="gone", state="Synced"),
        (statedb.TargetRow(cluster="gone", bundle="b", state="Synced"),),
    )
    store.forget_cluster("gone")
    saved = store.load()
    assert saved.clusters == {} and saved.targets == {}


def entry(at: float, cluster: str, bundle: str, to: str, outcome: str = "Synced", **kw: Any) -> hist.Entry:
    return hist.Entry(at=at, cluster=cluster, bundle=bundle, outcome=outcome, to_revision=to, **kw)


def test_history_entries_round_trip_newest_first_with_every_filter(tmp_path: Path) -> None:
    store = make(tmp_path)
    a, b = "a" * 40, "b" * 40
    store.record_history(
        (
            entry(100.0, "eu-1", "web", a, objects={"created": 2}, actor="Ada", trace_id="t1"),
            entry(200.0, "eu-2", "web", a, actor="Ada"),
            entry(300.0, "eu-1", "db", b, outcome="Failed", message="boom"),
            entry(400.0, "eu-1", "web", b, from_revision=a, outcome="DriftRepaired", actor="fleet"),
            entry(500.0, "", "web", b, outcome="pause", actor="grace", reason="friday"),
        )
    )
    store.close()
    store = make(tmp_path)
    every = store.query_history(hist.Query())
    assert [e.at for e in every] == [500.0, 400.0, 300.0, 200.0, 100.0]
    first = every[-1]
    assert (first.cluster, first.bundle, first.outcome, first.objects, first.actor, first.trace_id) == (
        "eu-1",
        "web",
        "Synced",
        {"created": 2},
        "Ada",
        "t1",
    )
    assert [e.at for e in store.query_history(hist.Query(cluster="eu-1"))] == [400.0, 300.0, 100.0]
    assert [e.at for e in store.query_history(hist.Query(cluster="eu-1", bundle="web"))] == [400.0, 100.0]
    assert [e.at for e in store.query_history(hist.Query(bundle="web", since=200.0))] == [500.0, 400.0, 200.0]
    # A revision matches as the revision reached or the one left, by a prefix of its id.
    assert [e.at for e in store.query_history(hist.Query(revision="aaaa"))] == [400.0, 200.0, 100.0]
    assert [e.at for e in store.query_history(hist.Query(revision=b))] == [500.0, 400.0, 300.0]
    assert [e.at for e in store.query_history(hist.Query(limit=2))] == [500.0, 400.0]
    assert store.query_history(hist.Query(cluster="nowhere")) == []


def test_history_is_pruned_by_age_in_batches(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.record_history(tuple(entry(float(i), "eu-1", "web", "a" * 40) for i in range(25)))
    assert store.prune_history(before=20.0, batch=8) == 8
    assert store.prune_history(before=20.0, batch=8) == 8
    assert store.prune_history(before=20.0, batch=8) == 4
    assert store.prune_history(before=20.0, batch=8) == 0
    assert store.history_bounds() == (5, 20.0)


def test_a_round_writes_its_history_with_its_targets_in_one_transaction(tmp_path: Path) -> None:
    store = make(tmp_path)
    bad_target = statedb.TargetRow(cluster="eu-1", bundle="web", state=None)  # type: ignore[arg-type]
    with pytest.raises(errors.StateError):
        store.record_cluster(
            statedb.ClusterRow(name="eu-1", state="Failed"),
            (bad_target,),
            history=(entry(1.0, "eu-1", "web", "a" * 40),),
        )
    assert store.query_history(hist.Query()) == []
    held = statedb.TargetRow(cluster="eu-1", bundle="web", state="Synced", revision="a" * 40, since="T1")
    store.record_cluster(
        statedb.ClusterRow(name="eu-1", state="Synced"),
        (held,),
        history=(entry(1.0, "eu-1", "web", "a" * 40),),
    )
    assert len(store.query_history(hist.Query())) == 1
    assert store.load().targets[("eu-1", "web")].since == "T1"


def test_a_version_1_database_is_migrated_and_its_sync_rows_that_wrote_become_history(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fleet.db"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE target (cluster TEXT NOT NULL, bundle TEXT NOT NULL, revision TEXT, hash TEXT,
                state TEXT NOT NULL, objects INTEGER NOT NULL DEFAULT 0, last_error TEXT, updated_at TEXT,
                PRIMARY KEY (cluster, bundle));
            CREATE TABLE sync (seq INTEGER PRIMARY KEY AUTOINCREMENT, cluster TEXT NOT NULL, revision TEXT,
                started_at TEXT, finished_at TEXT, state TEXT NOT NULL, changes TEXT NOT NULL DEFAULT '{}',
                error TEXT, trace_id TEXT);
            INSERT INTO target VALUES ('eu-1', 'web', 'r1', 'h', 'Synced', 2, NULL, '2026-01-01T00:00:00Z');
            INSERT INTO sync (cluster, revision, finished_at, state, changes, error, trace_id) VALUES
                ('eu-1', 'r1', '2026-01-01T00:00:00Z', 'Synced', '{"created": 2, "unchanged": 1}', NULL, 't'),
                ('eu-1', 'r1', '2026-01-01T00:05:00Z', 'Synced', '{"unchanged": 3}', NULL, 'u'),
                ('eu-1', 'r2', '2026-01-01T00:10:00Z', 'Failed', '{"failed": 1, "configured": 1}', 'boom', 'v');
            PRAGMA user_version=1;
            """
        )
    store = statedb.StateStore(path)
    rows = store.query_history(hist.Query())
    assert [(e.to_revision, e.outcome, e.objects, e.message) for e in rows] == [
        ("r2", "Failed", {"failed": 1, "configured": 1}, "boom"),
        ("r1", "Synced", {"created": 2}, ""),
    ]
    assert rows[1].at == 1767225600.0
    assert store.load().targets[("eu-1", "web")].since is None
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'sync'").fetchone() is None
        assert db.execute("PRAGMA user_version").fetchone() == (statedb.SCHEMA_VERSION,)


def test_the_outbox_keeps_each_receivers_order_and_forgets_receivers_no_longer_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statedb, "OUTBOX_PER_RECEIVER", 3)
    store = make(tmp_path)
    msgs = tuple(statedb.Message(receiver="hook", kind="k", body=str(i).encode()) for i in range(5))
    assert store.enqueue((*msgs, statedb.Message(receiver="github", kind="k", body=b"g", path="/x"))) == 2
    head = store.outbox_head("hook")
    assert head is not None and head.body == b"2"  # the oldest kept: 0 and 1 were dropped over the cap
    store.outbox_retry(head.seq, attempts=1, next_at=50.0, error="HTTP 500")
    store.close()
    store = make(tmp_path)
    again = store.outbox_head("hook")
    assert again is not None and (again.seq, again.attempts, again.next_at, again.last_error) == (
        head.seq,
        1,
        50.0,
        "HTTP 500",
    )
    store.outbox_delivered(again.seq)
    nxt = store.outbox_head("hook")
    assert nxt is not None and nxt.body == b"3"
    assert store.outbox_counts() == {"hook": 2, "github": 1}
    assert store.outbox_forget(keep=("hook",)) == {"github": 1}
    assert store.outbox_head("github") is None


def test_a_database_from_a_newer_fleet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fleet.db"
    make(tmp_path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={statedb.SCHEMA_VERSION + 1}")
    with pytest.raises(errors.FleetError, match="newer than this fleet"):
        statedb.StateStore(path)


def test_a_failed_transaction_leaves_the_previous_row(tmp_path: Path) -> None:
    store = make(tmp_path)
    good = statedb.ClusterRow(name="eu-1", state="Synced")
    store.record_cluster(good)
    bad_target = statedb.TargetRow(cluster="eu-1", bundle="web", state=None)  # type: ignore[arg-type]
    with pytest.raises(errors.StateError) as caught:
        store.record_cluster(statedb.ClusterRow(name="eu-1", state="Failed"), (bad_target,))
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError) and not caught.value.corrupt
    assert store.load().clusters["eu-1"] == good


def filled(store: statedb.StateStore, *, clusters: int = 3) -> None:
    for i in range(clusters):
        store.record_cluster(
            statedb.ClusterRow(name=f"c{i}", state="Synced", revision="a" * 40),
            (statedb.TargetRow(cluster=f"c{i}", bundle="web", state="Synced", hash="h"),),
        )
        store.record_history(
            tuple(
                hist.Entry(at=1.0e9 + n, cluster=f"c{i}", bundle="web", outcome="Synced") for n in range(50)
            )
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
    store = statedb.StateStore(path)
    filled(store)
    store.close()
    with path.open("r+b") as f:  # really damage the file: random bytes over one page
        f.seek(offset)
        f.write(bytes((i * 151 + 7) % 256 for i in range(4096)))
    damaged = path.read_bytes()

    store = statedb.StateStore(path)

    aside = store.set_aside
    assert aside is not None, what
    assert aside.path.name.startswith("state.db.corrupt-") and aside.path.parent == path.parent
    assert aside.path.read_bytes() == damaged  # kept as it was, for a post-mortem
    assert "malformed" in aside.reason or "not a database" in aside.reason
    assert aside.at.endswith("Z")
    assert store.load() == statedb.Saved(revision=statedb.RevisionRow())  # rebuilt from nothing: a cache
    filled(store, clusters=1)
    store.close()
    assert statedb.StateStore(path).set_aside is None  # the new file is sound


def test_rebuild_sets_the_open_database_aside_and_continues_with_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.db"
    store = statedb.StateStore(path)
    filled(store, clusters=1)
    aside = store.rebuild("database disk image is malformed")
    assert aside.path.exists() and store.set_aside == aside
    assert store.load().clusters == {}
    filled(store, clusters=1)
    assert set(store.load().clusters) == {"c0"}


@pytest.mark.slow  # starts processes: mount, umount
def test_a_full_disk_is_a_state_error_and_writes_succeed_again_once_space_is_freed(tmp_path: Path) -> None:
    """A real full disk: an 8 MiB tmpfs (`tests.support.disk`) filled by a file."""
    with disk.small_filesystem(tmp_path / "small", size="8m") as mount:
        store = statedb.StateStore(mount / "state.db")
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
