"""The controller's durable state: an embedded SQLite database under ``--state-dir``.

Owns: what must survive a restart of `fleet serve` — the newest fetched revision and its problems, the
last applied revision, hash and state of every (cluster, bundle) target, each cluster's last state, a
bounded history of syncs, and the rollouts of every bundle (the newest `ROLLOUTS_PER_BUNDLE`, stored as
`fleet.rollouts` hands them over). Writes are transactions in WAL mode, so a SIGKILL leaves either the old or the
new row, never half of one. Does not: decide anything, or touch the event loop: every method is blocking
and the engine calls it through `anyio.to_thread.run_sync` with a limiter of one (one writer at a time).

The schema version is kept in ``PRAGMA user_version``; an older database is migrated in place on open,
a newer one is refused (a downgrade must not silently drop state).

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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fleet import errors

SCHEMA_VERSION = 2
ROLLOUTS_PER_BUNDLE = 20
HISTORY_PER_CLUSTER = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sha TEXT, message TEXT, author TEXT, committed_at TEXT, fetched_at TEXT,
    problems TEXT NOT NULL DEFAULT '[]',
    fetch_error TEXT, fetch_error_at TEXT
);
CREATE TABLE IF NOT EXISTS target (
    cluster TEXT NOT NULL, bundle TEXT NOT NULL,
    revision TEXT, hash TEXT, state TEXT NOT NULL, objects INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, updated_at TEXT,
    PRIMARY KEY (cluster, bundle)
);
CREATE TABLE IF NOT EXISTS cluster (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL, revision TEXT, last_sync_at TEXT, last_error TEXT, trace_id TEXT
);
CREATE TABLE IF NOT EXISTS sync (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster TEXT NOT NULL, revision TEXT, started_at TEXT, finished_at TEXT, state TEXT NOT NULL,
    changes TEXT NOT NULL DEFAULT '{}', error TEXT, trace_id TEXT
);
CREATE INDEX IF NOT EXISTS sync_by_cluster ON sync (cluster, seq);
CREATE TABLE IF NOT EXISTS rollout (
    bundle TEXT NOT NULL, revision TEXT NOT NULL, started_at REAL NOT NULL,
    doc TEXT NOT NULL, terminal INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL,
    PRIMARY KEY (bundle, revision)
);
CREATE INDEX IF NOT EXISTS rollout_by_bundle ON rollout (bundle, started_at);
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


@dataclass(frozen=True)
class ClusterRow:
    name: str
    state: str
    revision: str | None = None
    last_sync_at: str | None = None
    last_error: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True)
class SyncRow:
    seq: int
    cluster: str
    revision: str | None
    started_at: str | None
    finished_at: str | None
    state: str
    changes: Mapping[str, int]
    error: str | None
    trace_id: str | None


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
            # Idempotent DDL (CREATE ... IF NOT EXISTS); executescript commits on its own.
            db.executescript(_SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")

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
                " fetch_error, fetch_error_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET sha=excluded.sha, message=excluded.message,"
                " author=excluded.author, committed_at=excluded.committed_at, fetched_at=excluded.fetched_at,"
                " problems=excluded.problems, fetch_error=excluded.fetch_error,"
                " fetch_error_at=excluded.fetch_error_at",
                (
                    row.sha,
                    row.message,
                    row.author,
                    row.committed_at,
                    row.fetched_at,
                    json.dumps(list(row.problems)),
                    row.fetch_error,
                    row.fetch_error_at,
                ),
            )

    def record_cluster(
        self, cluster: ClusterRow, targets: tuple[TargetRow, ...] = (), *, drop_other_targets: bool = False
    ) -> None:
        """Write a cluster's row and its target rows in one transaction.

        With `drop_other_targets`, target rows of this cluster not in `targets` are removed (bundles no
        longer placed there).
        """
        with self._tx() as db:
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
                sql = "DELETE FROM target WHERE cluster = ?" + (
                    f" AND bundle NOT IN ({marks})" if keep else ""
                )
                db.execute(sql, (cluster.name, *keep))
            for t in targets:
                db.execute(
                    "INSERT INTO target (cluster, bundle, revision, hash, state, objects, last_error,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(cluster, bundle) DO UPDATE SET"
                    " revision=excluded.revision, hash=excluded.hash, state=excluded.state,"
                    " objects=excluded.objects, last_error=excluded.last_error, updated_at=excluded.updated_at",
                    (t.cluster, t.bundle, t.revision, t.hash, t.state, t.objects, t.last_error, t.updated_at),
                )

    def record_sync(
        self,
        *,
        cluster: str,
        revision: str | None,
        started_at: str | None,
        finished_at: str | None,
        state: str,
        changes: Mapping[str, int],
        error: str | None,
        trace_id: str | None,
    ) -> None:
        """Append one sync to the history, keeping the newest `HISTORY_PER_CLUSTER` per cluster."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO sync (cluster, revision, started_at, finished_at, state, changes, error, trace_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cluster,
                    revision,
                    started_at,
                    finished_at,
                    state,
                    json.dumps(dict(changes)),
                    error,
                    trace_id,
                ),
            )
            db.execute(
                "DELETE FROM sync WHERE cluster = ? AND seq <= (SELECT seq FROM sync WHERE cluster = ?"
                " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (cluster, cluster, HISTORY_PER_CLUSTER),
            )

    def record_rollouts(self, rows: tuple[RolloutRow, ...]) -> None:
        """Write rollouts (the stored form of `fleet.core.rollout.dump`, plus what the controller keeps
        beside it) in one transaction, keeping the newest `ROLLOUTS_PER_BUNDLE` of each bundle."""
        with self._tx() as db:
            for row in rows:
                db.execute(
                    "INSERT INTO rollout (bundle, revision, started_at, doc, terminal, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(bundle, revision) DO UPDATE SET"
                    " doc=excluded.doc, terminal=excluded.terminal, updated_at=excluded.updated_at",
                    (
                        row.bundle,
                        row.revision,
                        row.started_at,
                        json.dumps(dict(row.doc)),
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
            "SELECT sha, message, author, committed_at, fetched_at, problems, fetch_error, fetch_error_at"
            " FROM revision WHERE id = 1"
        ).fetchone()
        targets = self._db.execute(
            "SELECT cluster, bundle, state, revision, hash, objects, last_error, updated_at FROM target"
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
            )
            if rev
            else RevisionRow()
        )
        return Saved(
            revision=revision,
            targets={(t[0], t[1]): TargetRow(*t) for t in targets},
            clusters={c[0]: ClusterRow(*c) for c in clusters},
        )

    def history(self, cluster: str, *, limit: int = 20) -> list[SyncRow]:
        with self._lock:
            rows = self._guard(
                lambda: self._db.execute(
                    "SELECT seq, cluster, revision, started_at, finished_at, state, changes, error, trace_id"
                    " FROM sync WHERE cluster = ? ORDER BY seq DESC LIMIT ?",
                    (cluster, limit),
                ).fetchall()
            )
        return [
            SyncRow(
                seq=r[0],
                cluster=r[1],
                revision=r[2],
                started_at=r[3],
                finished_at=r[4],
                state=r[5],
                changes=json.loads(r[6] or "{}"),
                error=r[7],
                trace_id=r[8],
            )
            for r in rows
        ]
