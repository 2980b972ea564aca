"""The state of record in a management cluster, for the controller (docs/scaling.md, "State of record").

Owns: `ManagedStore`, the engine's state store when replicas share a fleet: the embedded SQLite database
(`fleet.clients.statedb`) keeps what is this process's own (the revision row, its clusters' rows, the
notification outbox), and rollouts and history go to the management cluster through
`fleet.clients.records` instead, behind the same blocking methods (called from worker threads, they run
their requests on the event loop through `anyio.from_thread`; history entries are handed to
`fleet.controller.historywriter` and appended in batches, not waited for); the rollouts last read are kept in memory
(read at start by `start`, kept fresh by `Shared`), so the few reads made on the event loop or at
construction never send a request. Rollouts are written by the coordinator only, each only when it
changed, and a read never sets back what this replica wrote while it was under way (docs/scaling.md, "Who
writes what, and compare-and-swap"). `Shared`, one task beside the engine's (the history writer runs in it): every period it reads the
rollouts (a follower takes them in, `rollouts.Conductor.adopt`; a replica that has just become the
coordinator takes them in and then over, `Conductor.take_over`), lets the coordinator take people's
actions asked of other replicas, writes the status summary of every shard this replica may write to
(its clusters' status and what its rounds observed for the coordinator's rollouts), lists every shard's
summary while their watch is down (`fleet.controller.summarywatch`: otherwise each is taken in as it is
written), feeds the coordinator what the other replicas observed (a period's lot at once), runs the reconciles other replicas
handed on for its shards and fetches when another replica announced a push; `hand_on` and
`announce_fetch`, the other end of those; `whole_fleet`, the status document of the whole fleet from the
summaries, and `elsewhere`, the clusters of other replicas as their summaries tell (the shards without
one reported as errors, their clusters shown as unknown, never as gone).

Does not: hold leases or say which shards this replica may write to (`Owner`: the replica's lease loop),
decide rollouts (`rollouts.Conductor`, `fleet.core.rollout`), or encode records (`fleet.core.records`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.from_thread

from fleet.clients import records as records_client
from fleet.clients import statedb
from fleet.controller import following, historywriter, replicas, rollouts, summarywatch
from fleet.core import errors, model, sharding, summaries
from fleet.core import history as hist
from fleet.core import records as rec
from fleet.core import rollout as ro

log = logging.getLogger("fleet.shared")

SUMMARY_REFRESH = 30.0  # a summary is written when its clusters change, and at least this often


class Owner(Protocol):
    """What this replica may do now (its lease loop answers)."""

    @property
    def me(self) -> str: ...

    @property
    def shards(self) -> int: ...

    def shard_of(self, cluster: str) -> int: ...

    def writable(self) -> frozenset[int]: ...

    def coordinating(self) -> bool: ...

    def epoch(self, shard: int) -> int | None: ...


class ReplicaOwner:
    """`Owner` answered by a replica's lease loop (`fleet.controller.replicas.Replica`)."""

    def __init__(self, replica: replicas.Replica) -> None:
        self.replica = replica

    @property
    def me(self) -> str:
        return self.replica.config.me

    @property
    def shards(self) -> int:
        return self.replica.config.shards

    def shard_of(self, cluster: str) -> int:
        return sharding.shard_of(cluster, shards=self.replica.config.shards)

    def writable(self) -> frozenset[int]:
        return self.replica.writable()

    def coordinating(self) -> bool:
        return self.replica.coordinating()

    def epoch(self, shard: int) -> int | None:
        fence = self.replica.fence(shard)
        return fence.epoch if fence is not None else None


def _row(r: rec.Rollout) -> statedb.RolloutRow:
    return statedb.RolloutRow(
        bundle=r.bundle,
        revision=r.revision,
        started_at=r.started_at,
        doc=r.doc,
        terminal=r.terminal,
        updated_at=r.updated_at,
    )


class ManagedStore(statedb.StateStore):
    """The state store of a replica (see the module). Blocking methods, as `StateStore`'s; those that
    reach the management cluster must be called from a worker thread of the engine's event loop."""

    def __init__(
        self, path: Path, *, records: records_client.Records, keep: int = statedb.ROLLOUTS_PER_BUNDLE
    ) -> None:
        super().__init__(path)
        self.records = records
        self.keep = keep
        self.rollouts: dict[tuple[str, str], rec.Rollout] = {}  # as last read or written
        self.conflicted = False  # a rollout write met another replica's: read them again before deciding
        # Rollouts are written by the coordinator only (`Shared.attach` asks its Conductor): a follower's
        # copies of them, saved again after a failed write, are not written back.
        self.deciding: Callable[[], bool] = lambda: True
        # rollout -> how many times this replica changed its copy other than by a list: its own writes and
        # deletes, the versions a watch brought (`learn`, `forget`)
        self._changes: dict[tuple[str, str], int] = {}
        self.listed = ""  # the resourceVersion of the last list of the rollouts (a watch goes on from it)
        # History entries go to the management cluster batched, without the caller waiting (`Shared.run`
        # writes them; a query here writes what waits first).
        self.history = historywriter.HistoryWriter(records)

    async def start(self) -> records_client.Installed:
        """Install (and migrate) the records, and read the rollouts (on the event loop, before the engine)."""
        installed = await self.records.install()
        await self.read_rollouts()
        return installed

    async def read_rollouts(self) -> dict[str, rec.Rollout]:
        """Read every rollout; the newest of each bundle. Raises (StateError) when they cannot be read.

        A rollout this replica wrote (or deleted) while the list was under way keeps what it wrote: the
        list may have been read before that write and answered after it, and its older version would make
        the next write a conflict with this replica's own (docs/benchmarks.md, "Two replicas at 1,000
        clusters")."""
        before = dict(self._changes)
        found, version = await self.records.rollouts_at()
        fresh = {(r.bundle, r.revision): r for r in found}
        for key, n in self._changes.items():
            if before.get(key) != n:
                if key in self.rollouts:
                    fresh[key] = self.rollouts[key]
                else:
                    fresh.pop(key, None)
        self.rollouts = fresh
        self._changes = {k: n for k, n in self._changes.items() if k in fresh}  # of the records there
        self.listed = version
        return rec.latest(fresh.values())

    def learn(self, r: rec.Rollout) -> None:
        """A rollout's newer version (a watch brought it)."""
        key = (r.bundle, r.revision)
        self.rollouts[key] = r
        self._changes[key] = self._changes.get(key, 0) + 1

    def forget(self, bundle: str, revision: str) -> None:
        """A rollout's record is gone (a watch told)."""
        key = (bundle, revision)
        self.rollouts.pop(key, None)
        self._changes[key] = self._changes.get(key, 0) + 1

    # -- rollouts --------------------------------------------------------------------------------------

    def record_rollouts(
        self,
        rows: tuple[statedb.RolloutRow, ...],
        *,
        history: tuple[hist.Entry, ...] = (),
        outbox: tuple[statedb.Message, ...] = (),
    ) -> None:
        if outbox:
            self.enqueue(outbox)
        if rows:
            anyio.from_thread.run(self._write_rollouts, rows)
        self.history.add(history)  # after the rows: a failed write hands the entries back to the caller

    async def _write_rollouts(self, rows: tuple[statedb.RolloutRow, ...]) -> None:
        """Write the coordinator's rollouts that changed (every row, each over the version last read or
        written: a conflict on one does not keep the others from being written); the first failure is
        raised after. A replica that does not decide writes none."""
        if not self.deciding():
            return
        failed: errors.StateError | None = None
        for row in rows:
            key = (row.bundle, row.revision)
            known = self.rollouts.get(key)
            if known is not None and (known.doc, known.terminal, known.updated_at, known.started_at) == (
                row.doc, row.terminal, row.updated_at, row.started_at
            ):  # fmt: skip
                continue  # stored as it is (saving everything again after a failed write)
            r = rec.Rollout(
                bundle=row.bundle,
                revision=row.revision,
                started_at=row.started_at,
                updated_at=row.updated_at,
                terminal=row.terminal,
                doc=row.doc,
                meta=known.meta if known is not None else rec.Meta(""),
            )
            try:
                self.rollouts[key] = await self.records.write_rollout(r)
            except records_client.Conflict as e:
                self.conflicted = True  # another replica wrote it: read the records again before deciding
                failed = failed or e
                continue
            except errors.StateError as e:
                failed = failed or e
                continue
            self._changes[key] = self._changes.get(key, 0) + 1
        if failed is not None:
            raise failed
        old = rec.beyond_kept(self.rollouts.values(), keep=self.keep)
        if old:
            await self.records.forget_rollouts(old)
            for r in old:
                key = (r.bundle, r.revision)
                self.rollouts.pop(key, None)
                self._changes[key] = self._changes.get(key, 0) + 1

    def latest_rollouts(self) -> dict[str, statedb.RolloutRow]:
        return {b: _row(r) for b, r in rec.latest(self.rollouts.values()).items()}

    def rollout(self, bundle: str, revision: str) -> statedb.RolloutRow | None:
        found = [r for (b, rev), r in self.rollouts.items() if b == bundle and rev.startswith(revision)]
        return _row(found[0]) if len(found) == 1 else None

    def rollout_phases(self) -> list[tuple[str, str, str, str]]:
        out = []
        for r in sorted(self.rollouts.values(), key=lambda r: r.started_at):
            inner = r.doc.get("rollout") or {}
            out.append((r.bundle, r.revision, str(inner.get("phase") or ""), str(inner.get("reason") or "")))
        return out

    # -- history ---------------------------------------------------------------------------------------

    def record_cluster(
        self,
        cluster: statedb.ClusterRow,
        targets: tuple[statedb.TargetRow, ...] = (),
        *,
        drop_other_targets: bool = False,
        history: tuple[hist.Entry, ...] = (),
    ) -> None:
        super().record_cluster(cluster, targets, drop_other_targets=drop_other_targets)
        self.history.add(history)

    def record_clusters(self, rounds: Sequence[statedb.ClusterRound]) -> None:
        # The rows in this replica's database; the history, the fleet's, to the management cluster.
        super().record_clusters(tuple(replace(r, history=()) for r in rounds))
        self.history.add(e for r in rounds for e in r.history)

    def record_history(self, entries: tuple[hist.Entry, ...]) -> None:
        self.history.add(entries)

    def query_history(self, q: hist.Query) -> list[hist.Entry]:
        return anyio.from_thread.run(self._query_history, q)

    async def _query_history(self, q: hist.Query) -> list[hist.Entry]:
        await self.history.flush()  # what this replica recorded is in the answer
        return await self.records.history(q)

    def prune_history(self, *, before: float, batch: int = 5_000) -> int:
        # Segments go whole; one call deletes every expired one (less than `batch` tells the caller so).
        return min(anyio.from_thread.run(lambda: self.records.prune(before=before)), batch - 1)

    def history_bounds(self) -> tuple[int, float | None]:
        return anyio.from_thread.run(self._history_bounds)

    async def _history_bounds(self) -> tuple[int, float | None]:
        await self.history.flush()
        return await self.records.bounds()


async def open_store(path: Path, *, records: records_client.Records) -> ManagedStore:
    """A replica's state store: its SQLite database opened off the loop, the records installed (and
    migrated) in the management cluster and the rollouts read. Raises `errors.StateError` naming what
    failed: a replica that cannot read the state of record does not start."""
    store = await anyio.to_thread.run_sync(lambda: ManagedStore(path, records=records))
    try:
        installed = await store.start()
    except BaseException:
        store.close()
        raise
    if installed.schema_found is None:
        log.info("state of record installed in the management cluster (schema %d)", rec.SCHEMA)
    elif installed.migrated:
        log.info(
            "state of record migrated to schema %d: %d records rewritten", rec.SCHEMA, len(installed.migrated)
        )
    return store


def _public(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A cluster's document from a summary as the status document shows it (a bundle's `since` is kept
    in summaries for `GET /api/v1/revisions/SHA` only)."""
    out = dict(doc)
    bundles = doc.get("bundles")
    if isinstance(bundles, Mapping):
        out["bundles"] = {b: {k: v for k, v in d.items() if k != "since"} for b, d in bundles.items()}
    return out


def _no_summary(shard: int) -> str:
    return (
        f"status unknown: shard {shard} has no status summary in the management cluster yet (its owner "
        "has not written one)"
    )


class Engine(Protocol):
    """What `Shared` needs of the engine."""

    rollouts: rollouts.Conductor
    store: statedb.StateStore

    def cluster_documents(self) -> dict[str, dict[str, Any]]: ...


class Shared:
    """The replica's side of the state of record (see the module). `run` until cancelled."""

    def __init__(
        self,
        store: ManagedStore,
        *,
        owner: Owner,
        period: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.records = store.records
        self.owner = owner
        self.period = period
        self._clock = clock
        self.merged = summaries.Merged(
            clusters={}, observed={}, missing=tuple(range(owner.shards)), writers={}
        )
        self.problem: str | None = None  # why the records could not be read or written last time
        self._written: dict[int, tuple[object, float]] = {}  # shard -> (what was written, when)
        self._fed: dict[tuple[str, str], float] = {}  # (cluster, bundle) -> time of the observation fed
        self._coordinating = False
        self._conductor: rollouts.Conductor | None = None
        self._documents: Callable[[Callable[[str], bool]], Mapping[str, Mapping[str, Any]]] = lambda _: {}
        self._wake: Callable[[tuple[str, ...], str | None, str], None] | None = None
        self._fetch: Callable[[str], object] | None = None
        self._fetch_seen: str | None = None  # the version of the fetch request last seen (None: not read yet)
        self.watch: following.RolloutWatch | None = None  # a follower's watch of the rollouts (`attach`)
        self._listed_at = 0.0  # when the rollouts were last listed
        # cluster -> (its summary document's bundles, the document as the status shows it): read-only, shared
        # by the status documents (they are only encoded)
        self._shown: dict[str, tuple[object, dict[str, Any]]] = {}
        # Every shard's summary, watched: `merged` follows each summary as it is written (`run` starts it;
        # while it is not live, each period lists them).
        self.summary_watch = summarywatch.SummaryWatch(
            self.records,
            merge=lambda found: summaries.merge_status(found, shards=owner.shards, shard_of=owner.shard_of),
            on_merged=self._merged,
            period=period,
        )

    def _merged(self, merged: summaries.Merged) -> None:
        self.merged = merged

    def attach(
        self,
        conductor: rollouts.Conductor,
        *,
        documents: Callable[[Callable[[str], bool]], Mapping[str, Mapping[str, Any]]],
        wake: Callable[[tuple[str, ...], str | None, str], None] | None = None,
        fetch: Callable[[str], object] | None = None,
    ) -> None:
        """Make `conductor` decide only while this replica coordinates, and hand actions on otherwise;
        `documents(wanted)` gives the status documents of this replica's clusters `wanted` (by name); `wake(clusters, bundle,
        reason)` runs a reconcile handed on by another replica, `fetch(reason)` a fetch announced to one."""
        self._conductor = conductor
        self._documents = documents
        self._wake, self._fetch = wake, fetch
        conductor.deciding = lambda: self._coordinating and self.owner.coordinating()
        self.store.deciding = conductor.deciding
        conductor.forward = self.forward
        self.watch = following.RolloutWatch(
            self.store,
            following=lambda: not conductor.deciding(),
            adopt=conductor.adopt,
            row=_row,
            period=self.period,
        )
        self._coordinating = self.owner.coordinating()
        if not self._coordinating:
            conductor.adopt(self.store.latest_rollouts())

    async def forward(
        self,
        bundle: str,
        revision: str,
        action: ro.Action,
        actor: str,
        reason: str,
        wave: str | None,
        cluster: str | None,
    ) -> None:
        await self.records.ask(
            rec.ActionRequest(
                bundle=bundle,
                revision=revision,
                action=str(action),
                actor=actor,
                at=self._clock(),
                replica=self.owner.me,
                token="",
                reason=reason,
                wave=wave,
                cluster=cluster,
            )
        )

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            if self.watch is not None:
                tg.start_soon(self.watch.run)
            tg.start_soon(self.summary_watch.run)
            tg.start_soon(functools.partial(self.store.history.run, retry=self.period))
            while True:
                await self.step()
                await anyio.sleep(self.period)

    async def step(self) -> None:
        """One period's work (see the module); a failure is reported in the status, never fatal."""
        problems = []
        for part in (self._rollouts, self._summaries, self._actions, self._feed, self._requests):
            try:
                await part()
            except errors.StateError as e:
                problems.append(str(e))
                log.warning("state of record: %s", e)
        if self.watch is not None and self.watch.problem:
            problems.append(self.watch.problem)
            self.watch.problem = None
        if self.summary_watch.problem:  # a summary the watch brought cannot be read (the version before kept)
            problems.append(self.summary_watch.problem)
        if self.store.history.problem:  # entries kept and written again (`historywriter`)
            problems.append(self.store.history.problem)
        self.problem = "; ".join(problems) or None

    async def _rollouts(self) -> None:
        conductor = self._conductor
        if conductor is None:
            return
        coordinating = self.owner.coordinating()
        if coordinating and self._coordinating and not self.store.conflicted:
            return  # its own writes: it reads them when it takes over, or after another replica's write
        watch = self.watch
        if (
            not coordinating
            and not self._coordinating
            and watch is not None
            and watch.live
            and self._clock() - self._listed_at < following.RELIST
        ):
            return  # the watch brings every change as it is made
        await self.store.read_rollouts()
        self._listed_at = self._clock()
        coordinating = self.owner.coordinating()
        if not coordinating or not self._coordinating or self.store.conflicted:
            conductor.adopt(self.store.latest_rollouts())
        if coordinating and (not self._coordinating or self.store.conflicted):
            self._coordinating, self.store.conflicted = True, False
            log.info("replica %s: coordinating the rollouts", self.owner.me)
            await conductor.take_over()
        self._coordinating = coordinating

    async def _actions(self) -> None:
        conductor = self._conductor
        if conductor is None or not self._coordinating or not self.owner.coordinating():
            return
        for a in await self.records.actions():
            r = conductor.latest.get(a.bundle)
            if r is None or r.revision != a.revision:
                log.warning(
                    "bundle %s: %s by %s was asked of the rollout of %s, which is no longer the newest; not taken",
                    a.bundle, a.action, a.actor, a.revision[:12],
                )  # fmt: skip
            else:
                try:
                    await conductor.act(
                        a.bundle, ro.Action(a.action), actor=a.actor, reason=a.reason, wave=a.wave,
                        cluster=a.cluster,
                    )  # fmt: skip
                except (KeyError, ValueError) as e:  # NotApplicable is a ValueError
                    log.warning("bundle %s: %s by %s not taken: %s", a.bundle, a.action, a.actor, e)
            await self.records.done(a)

    async def _summaries(self) -> None:
        owner = self.owner
        epochs = {shard: owner.epoch(shard) for shard in sorted(owner.writable())}
        shards = {shard: epoch for shard, epoch in epochs.items() if epoch is not None}
        # One pass over this replica's clusters, documents built only for the shards written now (a pass
        # and a JSON encoding per shard of every cluster's document cost a period 0.2 s at 1,000 clusters).
        mine: dict[int, dict[str, dict[str, Any]]] = {shard: {} for shard in shards}
        for n, d in self._documents(lambda n: owner.shard_of(n) in shards).items():
            shard = owner.shard_of(n)
            if shard in mine:
                mine[shard][n] = dict(d)
        observed: dict[int, dict[str, dict[str, summaries.Observation]]] = {shard: {} for shard in shards}
        for n, per in self._current_reports().items():
            shard = owner.shard_of(n)
            if shard in observed:
                observed[shard][n] = dict(per)
        now = self._clock()
        problems = []
        for shard, epoch in shards.items():
            # What the summary says, but for the watch's counters (they change with every bookmark): the
            # summary is written again when that changed, and at least every SUMMARY_REFRESH seconds.
            key = (
                {n: {k: v for k, v in d.items() if k != "watch"} for n, d in mine[shard].items()},
                observed[shard],
            )
            last = self._written.get(shard)
            if last is not None and last[0] == key and now - last[1] < SUMMARY_REFRESH:
                continue
            summary = summaries.Summary(
                shard=shard, shards=owner.shards, writer=owner.me, epoch=epoch, updated_at=now,
                clusters=mine[shard], observed=observed[shard],
            )  # fmt: skip
            try:
                await self.records.write_summary(summary)
            except records_client.Fenced as e:
                log.warning("state of record: %s", e)
                continue
            except errors.StateError as e:  # this shard's summary (too large, a conflict): the others go on
                problems.append(str(e))
                continue
            self._written[shard] = (key, now)
        if not self.summary_watch.live:
            await self.summary_watch.relist()  # the watch is down (or not started): this period's list
        if problems:
            raise errors.StateError("; ".join(problems))

    def _current_reports(self) -> dict[str, dict[str, summaries.Observation]]:
        """This replica's observations of rollouts still in progress at the revision observed (older ones
        are dropped: the coordinator would not take them)."""
        conductor = self._conductor
        if conductor is None:
            return {}
        for cluster in list(conductor.reports):
            per = conductor.reports[cluster]
            for bundle in list(per):
                r = conductor.latest.get(bundle)
                if r is None or r.terminal or r.revision != per[bundle].revision:
                    del per[bundle]
            if not per:
                del conductor.reports[cluster]
        return conductor.reports

    async def _feed(self) -> None:
        """The coordinator takes in what the other replicas' rounds observed of its rollouts."""
        conductor = self._conductor
        if conductor is None or not self._coordinating or not self.owner.coordinating():
            return
        mine = self.owner.writable()
        rounds: dict[str, tuple[dict[str, rollouts.Observed], str]] = {}
        for cluster, per in sorted(self.merged.observed.items()):
            if self.owner.shard_of(cluster) in mine:
                continue  # its rounds here told the conductor themselves
            results: dict[str, rollouts.Observed] = {}
            unreachable = ""
            for bundle, o in per.items():
                r = conductor.latest.get(bundle)
                if r is None or r.revision != o.revision or o.at <= self._fed.get((cluster, bundle), 0.0):
                    continue
                self._fed[(cluster, bundle)] = o.at
                results[bundle] = rollouts.Observed(
                    state=model.State(o.state),
                    degraded=o.degraded,
                    message=o.message,
                    retriable=o.retriable,
                )
                unreachable = unreachable or o.unreachable
            if results:
                rounds[cluster] = (results, unreachable)
        if rounds:
            await conductor.observed_many(rounds)  # one decision and one write for the period's lot

    # -- requests handed on (docs/scaling.md, "State of record") ------------------------------------------

    async def hand_on(self, clusters: list[str], *, bundle: str | None) -> dict[str, dict[str, Any]]:
        """Record a reconcile of `clusters` (none of them this replica's) for their shards' owners, one
        request per shard; cluster -> {shard, owner: the replica whose summary the shard has, or None}.
        Raises `errors.StateError` when a request cannot be written."""
        per: dict[int, list[str]] = {}
        for name in clusters:
            per.setdefault(self.owner.shard_of(name), []).append(name)
        out: dict[str, dict[str, Any]] = {}
        for shard, names in sorted(per.items()):
            await self.records.hand_on(
                rec.Request(what=rec.RECONCILE, replica=self.owner.me, at=self._clock(), shard=shard,
                            clusters=tuple(names), bundle=bundle, reason=f"requested of replica {self.owner.me}")
            )  # fmt: skip
            for name in names:
                out[name] = {"shard": shard, "owner": self.merged.writers.get(shard)}
        return out

    async def announce_fetch(self, reason: str) -> None:
        """Tell every replica to fetch now (a push announced to this one). Raises `errors.StateError`."""
        written = await self.records.announce_fetch(
            rec.Request(what=rec.FETCH, replica=self.owner.me, at=self._clock(), reason=reason)
        )
        self._fetch_seen = written.meta.version  # this replica fetches already

    async def _requests(self) -> None:
        """Run the reconciles handed on for the shards this replica writes to (each request's record then
        goes), and fetch when another replica announced a push."""
        found = await self.records.requests()
        mine = self.owner.writable()
        for r in found:
            if r.what == rec.FETCH:
                if (
                    self._fetch_seen is not None
                    and r.meta.version != self._fetch_seen
                    and r.replica != self.owner.me
                ):
                    log.info("fetch announced by replica %s (%s)", r.replica, r.reason)
                    if self._fetch is not None:
                        self._fetch(f"announced by replica {r.replica}: {r.reason}")
                self._fetch_seen = r.meta.version
            elif r.shard in mine and r.shard < self.owner.shards and self._wake is not None:
                self._wake(r.clusters, r.bundle, f"handed on by replica {r.replica}")
                await self.records.handled(r)
        if self._fetch_seen is None:
            self._fetch_seen = ""  # read once: a fetch request written from now on is new

    def elsewhere(self, names: Iterable[str]) -> tuple[dict[str, Mapping[str, Any]], dict[str, str]]:
        """Of `names`, the clusters this replica does not write to: their status documents as their
        shard's summary has them, and those no summary holds (cluster -> why its status is unknown)."""
        mine = self.owner.writable()
        docs: dict[str, Mapping[str, Any]] = {}
        unknown: dict[str, str] = {}
        for name in names:
            shard = self.owner.shard_of(name)
            if shard in mine:
                continue
            doc = self.merged.clusters.get(name)
            if doc is not None:
                docs[name] = doc
            elif shard in self.merged.missing:
                unknown[name] = _no_summary(shard)
            else:
                unknown[name] = (
                    f"status unknown: the status summary of shard {shard} (written by "
                    f"{self.merged.writers.get(shard)}) does not hold this cluster yet"
                )
        return docs, unknown

    # -- the status document ---------------------------------------------------------------------------

    def known_needed(self, names: Iterable[str]) -> set[str]:
        """Of `names` (this replica's registered clusters), those whose own documents `whole_fleet` shows:
        the clusters of the shards it writes to, and those no summary holds."""
        owner, mine, merged = self.owner, self.owner.writable(), self.merged.clusters
        return {n for n in names if n not in merged or owner.shard_of(n) in mine}

    def whole_fleet(self, doc: dict[str, Any], *, known: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """`doc` (this replica's status document) showing every cluster: those of the shards this replica
        writes to as it knows them, the others from their shard's summary; a cluster of a shard that has
        no summary keeps what this replica knows of it (`known`) with an error saying its status is
        unknown, and the document's errors name the shards and any failure to read the records."""
        owner = self.owner
        mine = owner.writable()
        clusters: dict[str, Any] = {}
        shown: dict[str, tuple[object, dict[str, Any]]] = {}
        for n, summarised in self.merged.clusters.items():
            # A summary read again unchanged is not decoded again (`Records.summaries`): its clusters'
            # documents are the same objects, and what they show is made once, not at every GET.
            hit, bundles = self._shown.get(n), summarised.get("bundles")
            if hit is None or bundles is None or hit[0] is not bundles:
                hit = (bundles, _public(summarised))
            shown[n] = hit
            clusters[n] = hit[1]
        self._shown = shown
        for name, d in known.items():
            if owner.shard_of(name) in mine:
                clusters[name] = dict(d)
        missing = [s for s in self.merged.missing if s not in mine]
        errs = list(doc.get("errors") or [])
        _, unknown = self.elsewhere(known)
        for name, why in unknown.items():
            clusters[name] = {**known[name], "lastError": why}
        late = sorted(n for n in unknown if owner.shard_of(n) not in missing)
        if late:
            errs.append({"path": rec.where(f"{self.records.instance}-status-<shard>"), "line": None,
                         "message": f"clusters {', '.join(late)}: not in their shard's status summary yet (their "
                         "status is unknown)"})  # fmt: skip
        if missing:
            errs.append(
                {
                    "path": rec.where(f"{self.records.instance}-status-<shard>"),
                    "line": None,
                    "message": f"no status summary for shards {', '.join(map(str, missing))}: their clusters' "
                    "status is unknown",
                }
            )
        if self.problem:
            errs.append({"path": "management cluster", "line": None, "message": self.problem})
        return {
            **doc,
            "errors": errs,
            "clusters": dict(sorted(clusters.items())),
            "shards": {
                "count": owner.shards,
                "missing": missing,
                "writers": {str(k): v for k, v in sorted(self.merged.writers.items())},
            },
        }
