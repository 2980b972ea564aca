"""The controller's durable state: an embedded SQLite database under ``--state-dir``.

Owns: what must survive a restart of `fleet serve` — the newest fetched revision and its problems, the
last applied revision, hash, state and holding time of every (cluster, bundle) target, each cluster's
last state, the history of every change fleet made (`fleet.core.history` entries: indexed by cluster,
bundle, time and revision, pruned in batches by age), and the notification outbox (messages not yet
delivered, per receiver, in order), and the rollouts of every bundle (the newest `ROLLOUTS_PER_BUNDLE`,
stored as `fleet.controller.rollouts` hands them over). Writes are transactions in WAL mode, so a SIGKILL leaves either the
old or the new row, never half of one. Does not: decide anything (what to record, what to send, when to
retry), or touch the event loop: every method is blocking and the engine calls it through
`anyio.to_thread.run_sync` with a limiter of one (one writer at a time).

The schema version is kept in ``PRAGMA user_version``; an older database is migrated in place on open,
a newer one is refused (a downgrade must not silently drop state). Version 3 folded the old bounded
``sync`` table (one row per round) into ``history`` (one row per change): its rounds that wrote objects
became history entries, the rest was dropped. Version 4 added the revision enforced and its claim's
instant (``claimed_sha``, ``claimed_at``; empty in a migrated database until the next revision).

Failures (docs/operations.md): every SQLite error becomes `errors.StateError`. A damaged file (SQLite's
CORRUPT or NOTADB, or a failing ``PRAGMA quick_check`` on open) is `corrupt`: the store is a rebuildable
cache, so on open, or later through `rebuild()`, the damaged file (and its WAL and shared-memory files)
is renamed ``state.db.corrupt-<UTC timestamp>`` and a new empty database takes its place; `set_aside`
says what was moved where and why. Anything else (a full disk, an I/O error) is for the caller to
report and retry; the database itself stays as it was.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from fleet.core import errors
from fleet.core import history as hist

SCHEMA_VERSION = 4
ROLLOUTS_PER_BUNDLE = 20
OUTBOX_PER_RECEIVER = 10_000  # undelivered messages kept per receiver; older ones are dropped

_SCHEMA = """
CREATE TABLE IF NOT EXISTS revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sha TEXT, message TEXT, author TEXT, committed_at TEXT, fetched_at TEXT,
    problems TEXT NOT NULL DEFAULT '[]',
    fetch_error TEXT, fetch_error_at TEXT,
    claimed_sha TEXT, claimed_at TEXT
);
CREATE TABLE IF NOT EXISTS target (
    cluster TEXT NOT NULL, bundle TEXT NOT NULL,
    revision TEXT, hash TEXT, state TEXT NOT NULL, objects INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, updated_at TEXT, since TEXT,
    PRIMARY KEY (cluster, bundle)
);
CREATE TABLE IF NOT EXISTS cluster (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL, revision TEXT, last_sync_at TEXT, last_error TEXT, trace_id TEXT
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL, cluster TEXT NOT NULL DEFAULT '', bundle TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL, from_revision TEXT, to_revision TEXT, objects TEXT NOT NULL DEFAULT '{}',
    trace_id TEXT, actor TEXT, reason TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS rollout (
    bundle TEXT NOT NULL, revision TEXT NOT NULL, started_at REAL NOT NULL,
    doc TEXT NOT NULL, terminal INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL,
    PRIMARY KEY (bundle, revision)
);
CREATE INDEX IF NOT EXISTS rollout_by_bundle ON rollout (bundle, started_at);
CREATE INDEX IF NOT EXISTS history_by_time ON history (at);
CREATE INDEX IF NOT EXISTS history_by_cluster ON history (cluster, at);
CREATE INDEX IF NOT EXISTS history_by_pair ON history (cluster, bundle, at);
CREATE INDEX IF NOT EXISTS history_by_bundle ON history (bundle, at);
CREATE INDEX IF NOT EXISTS history_by_to ON history (to_revision);
CREATE INDEX IF NOT EXISTS history_by_from ON history (from_revision);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver TEXT NOT NULL, created_at REAL NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL DEFAULT '',
    body BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0, last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_by_receiver ON outbox (receiver, seq);
CREATE INDEX IF NOT EXISTS target_by_revision ON target (revision);
"""

# Version 1 and 2 kept one `sync` row per round; the rounds that wrote objects become history entries.
_FOLD_SYNC = """
INSERT INTO history (at, cluster, bundle, outcome, to_revision, objects, trace_id, message)
SELECT CAST(strftime('%s', COALESCE(finished_at, started_at)) AS REAL), cluster, '',
       CASE WHEN state = 'Failed' THEN 'Failed' ELSE 'Synced' END, revision, changes, trace_id,
       COALESCE(error, '')
FROM sync
WHERE COALESCE(finished_at, started_at) IS NOT NULL
  AND COALESCE(json_extract(changes, '$.created'), 0) + COALESCE(json_extract(changes, '$.configured'), 0)
      + COALESCE(json_extract(changes, '$.deleted'), 0) > 0
ORDER BY seq
"""


@dataclass(frozen=True)
class RevisionRow:
    sha: str | None = None
    message: str | None = None
    author: str | None = None
    committed_at: str | None = None
    fetched_at: str | None = None
    problems: tuple[dict[str, Any], ...] = ()
    fetch_error: str | None = None
    fetch_error_at: str | None = None
    # The revision enforced (its claim is on the objects it wrote and in revision records) and when its claim says it was
    # first seen: kept while a newer tip is refused, the claim's instant again after a restart.
    claimed_sha: str | None = None
    claimed_at: str | None = None


@dataclass(frozen=True)
class TargetRow:
    cluster: str
    bundle: str
    state: str
    revision: str | None = None
    hash: str | None = None
    objects: int = 0
    last_error: str | None = None
    updated_at: str | None = None
    since: str | None = None  # when the target came to hold `revision`


@dataclass(frozen=True)
class ClusterRow:
    name: str
    state: str
    revision: str | None = None
    last_sync_at: str | None = None
    last_error: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True)
class ClusterRound:
    """What one round of a cluster leaves in the database: its row, its target rows, its history."""

    cluster: ClusterRow
    targets: tuple[TargetRow, ...] = ()
    history: tuple[hist.Entry, ...] = ()


@dataclass(frozen=True)
class Message:
    """One notification for one receiver, as the outbox keeps it (`fleet.controller.notify` renders and sends it):
    the body is the final payload, without credentials (those are added as headers when sending)."""

    receiver: str
    kind: str
    body: bytes
    path: str = ""  # below the receiver's base URL (a commit status: the commit's statuses path)
    created_at: float = 0.0
    seq: int = 0
    attempts: int = 0
    next_at: float = 0.0
    last_error: str | None = None


@dataclass(frozen=True)
class SetAside:
    """A damaged database file moved out of the way."""

    path: Path  # where it is now
    at: str  # when (RFC 3339, UTC)
    reason: str  # what SQLite said


_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
T = TypeVar("T")


def _is_corrupt(e: sqlite3.Error) -> bool:
    return getattr(e, "sqlite_errorcode", None) in _CORRUPT_CODES or "malformed" in str(e)


class _Corrupt(Exception):
    """Raised inside `StateStore._open` when ``PRAGMA quick_check`` finds damage."""


@dataclass(frozen=True)
class RolloutRow:
    bundle: str
    revision: str
    started_at: float
    doc: Mapping[str, Any]
    terminal: bool
    updated_at: float


def _rollout_row(r: tuple[Any, ...]) -> RolloutRow:
    return RolloutRow(
        bundle=r[0],
        revision=r[1],
        started_at=r[2],
        doc=json.loads(r[3]),
        terminal=bool(r[4]),
        updated_at=r[5],
    )


@dataclass(frozen=True)
class Saved:
    """Everything loaded at start-up."""

    revision: RevisionRow
    targets: Mapping[tuple[str, str], TargetRow] = field(default_factory=dict)
    clusters: Mapping[str, ClusterRow] = field(default_factory=dict)


class StateStore:
    """One SQLite database file; blocking methods, safe to call from worker threads (serialised)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set_aside: SetAside | None = None
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise errors.StateError(f"{path.parent}: cannot create the state directory: {e.strerror}") from e
        try:
            self._db = self._open()
        except (_Corrupt, sqlite3.DatabaseError) as e:
            if isinstance(e, sqlite3.DatabaseError) and not _is_corrupt(e):
                raise errors.StateError(f"{path}: cannot open the state database: {e}") from e
            self._move_aside(str(e))
            try:
                self._db = self._open()
            except (_Corrupt, sqlite3.DatabaseError) as again:
                raise errors.StateError(f"{path}: cannot create a new state database: {again}") from again

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            found = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
            if found != ["ok"]:
                raise _Corrupt("; ".join(str(f) for f in found[:3]) or "quick_check failed")
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, reason: str) -> None:
        """Rename the damaged file (and its -wal and -shm files) to ``<name>.corrupt-<timestamp>``."""
        stamp = dt.datetime.now(dt.UTC)
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp.strftime('%Y%m%dT%H%M%S.%fZ')}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = self.path.with_name(self.path.name + suffix)
                if src.exists():
                    src.rename(target.with_name(target.name + suffix))
        except OSError as e:
            raise errors.StateError(
                f"{self.path}: damaged ({reason}) and cannot be set aside: {e.strerror}"
            ) from e
        self.set_aside = SetAside(path=target, at=stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), reason=reason)

    def rebuild(self, reason: str) -> SetAside:
        """The database turned out damaged while in use: set it aside and start a new, empty one."""
        with self._lock:
            self._db.close()
            self._move_aside(reason)
            try:
                self._db = self._open()
            except (_Corrupt, sqlite3.DatabaseError) as e:
                raise errors.StateError(f"{self.path}: cannot create a new state database: {e}") from e
        assert self.set_aside is not None
        return self.set_aside

    def _guard(self, fn: Callable[[], T]) -> T:
        """Run `fn`, turning SQLite's errors into `errors.StateError` (corrupt or not)."""
        try:
            return fn()
        except sqlite3.Error as e:
            raise errors.StateError(f"{self.path}: {e}", corrupt=_is_corrupt(e)) from e

    def _migrate(self, db: sqlite3.Connection) -> None:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise errors.FleetError(
                f"{self.path}: state database schema {version} is newer than this fleet ({SCHEMA_VERSION}); "
                "refusing to downgrade it"
            )
        if version < SCHEMA_VERSION:
            # Idempotent DDL (CREATE ... IF NOT EXISTS) and the steps from older versions, in one transaction.
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                columns = {row[1] for row in db.execute("PRAGMA table_info(target)")}
                if "since" not in columns:
                    db.execute("ALTER TABLE target ADD COLUMN since TEXT")
                columns = {row[1] for row in db.execute("PRAGMA table_info(revision)")}
                for column in ("claimed_sha", "claimed_at"):
                    if column not in columns:
                        db.execute(f"ALTER TABLE revision ADD COLUMN {column} TEXT")
                if db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sync'"
                ).fetchone():
                    db.execute(_FOLD_SYNC)
                    db.execute("DROP TABLE sync")
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; on any failure (a failed COMMIT too: a full disk) it is rolled back, so
        the next one starts clean, and SQLite's error is raised as `errors.StateError`."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as e:
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # nothing more can be done here; the next BEGIN tells
                if isinstance(e, sqlite3.Error):
                    raise errors.StateError(f"{self.path}: {e}", corrupt=_is_corrupt(e)) from e
                raise

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass  # closing what cannot be written: nothing more to lose

    # -- writes ------------------------------------------------------------------------------------------

    def record_revision(self, row: RevisionRow) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO revision (id, sha, message, author, committed_at, fetched_at, problems,"
                " fetch_error, fetch_error_at, claimed_sha, claimed_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET sha=excluded.sha, message=excluded.message,"
                " author=excluded.author, committed_at=excluded.committed_at, fetched_at=excluded.fetched_at,"
                " problems=excluded.problems, fetch_error=excluded.fetch_error,"
                " fetch_error_at=excluded.fetch_error_at, claimed_sha=excluded.claimed_sha,"
                " claimed_at=excluded.claimed_at",
                (
                    row.sha,
                    row.message,
                    row.author,
                    row.committed_at,
                    row.fetched_at,
                    json.dumps(list(row.problems)),
                    row.fetch_error,
                    row.fetch_error_at,
                    row.claimed_sha,
                    row.claimed_at,
                ),
            )

    def record_cluster(
        self,
        cluster: ClusterRow,
        targets: tuple[TargetRow, ...] = (),
        *,
        drop_other_targets: bool = False,
        history: tuple[hist.Entry, ...] = (),
    ) -> None:
        """Write a cluster's row, its target rows and the history entries of its round in one transaction.

        With `drop_other_targets`, target rows of this cluster not in `targets` are removed (bundles no
        longer placed there).
        """
        with self._tx() as db:
            _write_cluster(db, cluster, targets, drop_other_targets=drop_other_targets, history=history)

    def record_clusters(self, rounds: Sequence[ClusterRound]) -> None:
        """`record_cluster` (its target rows not in the round dropped) for several rounds, in order, in one
        transaction: all of them or none."""
        with self._tx() as db:
            for r in rounds:
                _write_cluster(db, r.cluster, r.targets, drop_other_targets=True, history=r.history)

    # -- history -------------------------------------------------------------------------------------------

    def record_history(self, entries: tuple[hist.Entry, ...]) -> None:
        """Append entries (a drift repair, a person's action, a rollout's halt) in one transaction."""
        if entries:
            with self._tx() as db:
                _insert_history(db, entries)

    def query_history(self, q: hist.Query) -> list[hist.Entry]:
        """Entries matching every filter of `q`, newest first (each filter has its index)."""
        where: list[str] = []
        args: list[Any] = []
        if q.cluster is not None:
            where.append("cluster = ?")
            args.append(q.cluster)
        if q.bundle is not None:
            where.append("bundle = ?")
            args.append(q.bundle)
        if q.since is not None:
            where.append("at >= ?")
            args.append(q.since)
        if q.revision is not None:
            low, high = _prefix_range(q.revision)
            where.append(
                "seq IN (SELECT seq FROM history WHERE to_revision >= ? AND to_revision < ?"
                " UNION SELECT seq FROM history WHERE from_revision >= ? AND from_revision < ?)"
            )
            args += [low, high, low, high]
        sql = f"SELECT {_HISTORY_COLUMNS} FROM history"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at DESC, seq DESC LIMIT ?"
        args.append(q.limit)
        with self._lock:
            rows = self._guard(lambda: self._db.execute(sql, args).fetchall())
        return [_entry(r) for r in rows]

    def prune_history(self, *, before: float, batch: int = 5_000) -> int:
        """Delete up to `batch` entries older than `before` (one short transaction); how many went. The
        caller repeats while it returns `batch`, yielding between calls so writers are never held long."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM history WHERE seq IN (SELECT seq FROM history WHERE at < ? ORDER BY at LIMIT ?)",
                (before, batch),
            )
            return cur.rowcount

    def history_bounds(self) -> tuple[int, float | None]:
        """How many entries there are, and the time of the oldest (None: none)."""
        with self._lock:
            n, oldest = self._guard(
                lambda: self._db.execute("SELECT COUNT(*), MIN(at) FROM history").fetchone()
            )
        return int(n), oldest

    # -- the notification outbox ---------------------------------------------------------------------------

    def enqueue(self, messages: tuple[Message, ...]) -> int:
        """Add messages at the end of their receivers' queues; keeps the newest `OUTBOX_PER_RECEIVER` of a
        receiver (the oldest undelivered ones beyond it are dropped). Returns how many were dropped."""
        if not messages:
            return 0
        with self._tx() as db:
            return _insert_outbox(db, messages)

    def outbox_head(self, receiver: str) -> Message | None:
        """The oldest undelivered message of a receiver (delivery keeps each receiver's order)."""
        with self._lock:
            row = self._guard(
                lambda: self._db.execute(
                    "SELECT seq, receiver, created_at, kind, path, body, attempts, next_at, last_error"
                    " FROM outbox WHERE receiver = ? ORDER BY seq LIMIT 1",
                    (receiver,),
                ).fetchone()
            )
        if row is None:
            return None
        return Message(
            seq=row[0],
            receiver=row[1],
            created_at=row[2],
            kind=row[3],
            path=row[4],
            body=bytes(row[5]),
            attempts=row[6],
            next_at=row[7],
            last_error=row[8],
        )

    def outbox_delivered(self, seq: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def outbox_retry(self, seq: int, *, attempts: int, next_at: float, error: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET attempts = ?, next_at = ?, last_error = ? WHERE seq = ?",
                (attempts, next_at, error, seq),
            )

    def outbox_reset_waits(self) -> None:
        """A new process: every undelivered message may be tried at once (its attempts are kept)."""
        with self._tx() as db:
            db.execute("UPDATE outbox SET next_at = 0 WHERE next_at > 0")

    def outbox_counts(self) -> dict[str, int]:
        """Undelivered messages per receiver."""
        with self._lock:
            rows = self._guard(
                lambda: self._db.execute("SELECT receiver, COUNT(*) FROM outbox GROUP BY receiver").fetchall()
            )
        return {r[0]: int(r[1]) for r in rows}

    def outbox_forget(self, *, keep: tuple[str, ...]) -> dict[str, int]:
        """Drop the messages of receivers no longer configured; how many went, per receiver."""
        gone = {r: n for r, n in self.outbox_counts().items() if r not in keep}
        if gone:
            with self._tx() as db:
                for r in gone:
                    db.execute("DELETE FROM outbox WHERE receiver = ?", (r,))
        return gone

    def record_rollouts(
        self,
        rows: tuple[RolloutRow, ...],
        *,
        history: tuple[hist.Entry, ...] = (),
        outbox: tuple[Message, ...] = (),
    ) -> None:
        """Write rollouts (the stored form of `fleet.core.rollout.dump`, plus what the controller keeps
        beside it) in one transaction, keeping the newest `ROLLOUTS_PER_BUNDLE` of each bundle; with the
        history entries and the notifications their changes caused (so none is lost or told twice)."""
        with self._tx() as db:
            _insert_history(db, history)
            _insert_outbox(db, outbox)
            for row in rows:
                db.execute(
                    "INSERT INTO rollout (bundle, revision, started_at, doc, terminal, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(bundle, revision) DO UPDATE SET"
                    " doc=excluded.doc, terminal=excluded.terminal, updated_at=excluded.updated_at",
                    (
                        row.bundle,
                        row.revision,
                        row.started_at,
                        orjson.dumps(row.doc).decode(),  # a rollout of 1,000 clusters: 0.3 MB
                        int(row.terminal),
                        row.updated_at,
                    ),
                )
            for bundle in {row.bundle for row in rows}:
                db.execute(
                    "DELETE FROM rollout WHERE bundle = ? AND started_at < (SELECT started_at FROM rollout"
                    " WHERE bundle = ? ORDER BY started_at DESC LIMIT 1 OFFSET ?)",
                    (bundle, bundle, ROLLOUTS_PER_BUNDLE - 1),
                )

    def rollout_phases(self) -> list[tuple[str, str, str, str]]:
        """(bundle, revision, phase, reason) of every stored rollout, oldest first."""
        with self._lock:
            rows = self._guard(
                lambda: self._db.execute(
                    "SELECT bundle, revision, json_extract(doc, '$.rollout.phase'),"
                    " json_extract(doc, '$.rollout.reason') FROM rollout ORDER BY started_at"
                ).fetchall()
            )
        return [(r[0], r[1], str(r[2] or ""), str(r[3] or "")) for r in rows]

    def latest_rollouts(self) -> dict[str, RolloutRow]:
        """The newest rollout of every bundle."""
        with self._lock:
            rows = self._guard(
                lambda: self._db.execute(
                    "SELECT bundle, revision, started_at, doc, terminal, updated_at FROM rollout r"
                    " WHERE started_at = (SELECT MAX(started_at) FROM rollout WHERE bundle = r.bundle)"
                ).fetchall()
            )
        return {r[0]: _rollout_row(r) for r in rows}

    def rollout(self, bundle: str, revision: str) -> RolloutRow | None:
        """One stored rollout of `bundle`, by its revision (a full SHA or a unique prefix)."""
        with self._lock:
            rows = self._guard(
                lambda: self._db.execute(
                    "SELECT bundle, revision, started_at, doc, terminal, updated_at FROM rollout"
                    " WHERE bundle = ? AND revision LIKE ? ORDER BY started_at DESC LIMIT 2",
                    (bundle, revision.replace("%", "").replace("_", "") + "%"),
                ).fetchall()
            )
        return _rollout_row(rows[0]) if len(rows) == 1 else None

    def forget_cluster(self, name: str) -> None:
        """A cluster whose file left the repo: it is no longer managed, its rows go (its history stays)."""
        with self._tx() as db:
            db.execute("DELETE FROM target WHERE cluster = ?", (name,))
            db.execute("DELETE FROM cluster WHERE name = ?", (name,))

    # -- reads -------------------------------------------------------------------------------------------

    def load(self) -> Saved:
        with self._lock:
            return self._guard(self._load)

    def _load(self) -> Saved:
        rev = self._db.execute(
            "SELECT sha, message, author, committed_at, fetched_at, problems, fetch_error, fetch_error_at,"
            " claimed_sha, claimed_at FROM revision WHERE id = 1"
        ).fetchone()
        targets = self._db.execute(
            "SELECT cluster, bundle, state, revision, hash, objects, last_error, updated_at, since FROM target"
        ).fetchall()
        clusters = self._db.execute(
            "SELECT name, state, revision, last_sync_at, last_error, trace_id FROM cluster"
        ).fetchall()
        revision = (
            RevisionRow(
                sha=rev[0],
                message=rev[1],
                author=rev[2],
                committed_at=rev[3],
                fetched_at=rev[4],
                problems=tuple(json.loads(rev[5] or "[]")),
                fetch_error=rev[6],
                fetch_error_at=rev[7],
                claimed_sha=rev[8],
                claimed_at=rev[9],
            )
            if rev
            else RevisionRow()
        )
        return Saved(
            revision=revision,
            targets={(t[0], t[1]): TargetRow(*t) for t in targets},
            clusters={c[0]: ClusterRow(*c) for c in clusters},
        )


_HISTORY_COLUMNS = (
    "seq, at, cluster, bundle, outcome, from_revision, to_revision, objects, trace_id, actor, reason, message"
)


def _write_cluster(
    db: sqlite3.Connection,
    cluster: ClusterRow,
    targets: tuple[TargetRow, ...],
    *,
    drop_other_targets: bool,
    history: tuple[hist.Entry, ...],
) -> None:
    db.execute(
        "INSERT INTO cluster (name, state, revision, last_sync_at, last_error, trace_id)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET state=excluded.state,"
        " revision=excluded.revision, last_sync_at=excluded.last_sync_at,"
        " last_error=excluded.last_error, trace_id=excluded.trace_id",
        (
            cluster.name,
            cluster.state,
            cluster.revision,
            cluster.last_sync_at,
            cluster.last_error,
            cluster.trace_id,
        ),
    )
    if drop_other_targets:
        keep = [t.bundle for t in targets]
        marks = ",".join("?" for _ in keep)
        sql = "DELETE FROM target WHERE cluster = ?" + (f" AND bundle NOT IN ({marks})" if keep else "")
        db.execute(sql, (cluster.name, *keep))
    db.executemany(
        "INSERT INTO target (cluster, bundle, revision, hash, state, objects, last_error,"
        " updated_at, since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(cluster, bundle) DO"
        " UPDATE SET revision=excluded.revision, hash=excluded.hash, state=excluded.state,"
        " objects=excluded.objects, last_error=excluded.last_error, updated_at=excluded.updated_at,"
        " since=excluded.since",
        [
            (t.cluster, t.bundle, t.revision, t.hash, t.state, t.objects, t.last_error, t.updated_at, t.since)
            for t in targets
        ],
    )
    _insert_history(db, history)


def _insert_history(db: sqlite3.Connection, entries: tuple[hist.Entry, ...]) -> None:
    db.executemany(
        "INSERT INTO history (at, cluster, bundle, outcome, from_revision, to_revision, objects, trace_id,"
        " actor, reason, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                e.at,
                e.cluster,
                e.bundle,
                e.outcome,
                e.from_revision,
                e.to_revision,
                json.dumps(dict(e.objects), sort_keys=True),
                e.trace_id,
                e.actor,
                e.reason,
                e.message,
            )
            for e in entries
        ],
    )


def _insert_outbox(db: sqlite3.Connection, messages: tuple[Message, ...]) -> int:
    """Append messages, then keep the newest `OUTBOX_PER_RECEIVER` of each receiver; how many went."""
    db.executemany(
        "INSERT INTO outbox (receiver, created_at, kind, path, body, next_at) VALUES (?, ?, ?, ?, ?, 0)",
        [(m.receiver, m.created_at, m.kind, m.path, m.body) for m in messages],
    )
    dropped = 0
    for receiver in sorted({m.receiver for m in messages}):
        cur = db.execute(
            "DELETE FROM outbox WHERE receiver = ? AND seq <= (SELECT seq FROM outbox WHERE receiver = ?"
            " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (receiver, receiver, OUTBOX_PER_RECEIVER),
        )
        dropped += max(0, cur.rowcount)
    return dropped


def _entry(r: tuple[Any, ...]) -> hist.Entry:
    try:
        objects = json.loads(r[7] or "{}")
    except ValueError:
        objects = {}
    return hist.Entry(
        seq=r[0],
        at=r[1],
        cluster=r[2],
        bundle=r[3],
        outcome=r[4],
        from_revision=r[5],
        to_revision=r[6],
        objects={k: int(v) for k, v in objects.items() if k in hist.COUNTED and isinstance(v, int)},
        trace_id=r[8],
        actor=r[9],
        reason=r[10] or "",
        message=r[11] or "",
    )


def _prefix_range(prefix: str) -> tuple[str, str]:
    """Commit ids starting with `prefix` (lower-case hex) are those in [prefix, prefix + '~'): an index range."""
    return prefix, prefix + "~"
