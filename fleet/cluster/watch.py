"""Watching what fleet applied on a cluster, and repairing drift as it happens.

Owns: `ClusterWatch`, one per cluster, run as a long-lived task (`await watch.run()`, cancelled to
stop). Inside its own anyio task group it keeps:

- one list-then-watch loop per (cluster, kind) fleet has applied there (`set_kinds`: streams of kinds
  no longer wanted are cancelled through their own cancel scope, new ones started; tasks reconciled
  like resources). Each loop lists the kind with label selector ``fleet.dev/owner=<instance>`` (pages
  of `Settings.page_size`), then watches from the list's resourceVersion with ``allowWatchBookmarks``
  and a jittered ``timeoutSeconds`` (the server closes the stream; the loop reopens from the last
  resourceVersion, which bookmarks advance). An in-stream ERROR 410 or an HTTP 410 relists (once) and
  compares the fresh list with the cache, so a change made while the stream was down is still seen
  (a vanished object reads as DELETED); a list is read whole or not at all (an unreadable page, a
  paging loop: an error, never "everything deleted"); a 410 on a list's continue token, or a watch
  too old again right after a relist, backs off before listing again (every 410 is counted); a stream
  silent for longer than ``timeoutSeconds`` + margin (a half-open connection, a hung server) is
  dropped and reopened; errors and streams that close at once back off (capped, jittered, reset by a
  stream that works);
- a bounded cache of only what drift needs: per object its identity, resourceVersion and the
  `drift.fingerprint` of the values of the fields fleet sets (no object bodies). Events older than what
  the cache holds (replays after a reconnect, fleet's own writes already seen in its apply answer) are
  ignored;
- drift detection on every event (`drift.judge` against the desired objects, read through the
  `desired` callable at event time, so a new revision applies without restarting streams), a coalescing
  repair queue (a burst within `Settings.coalesce` seconds is one batch), `repair.repair_objects` of
  exactly the drifted objects (one `apply <bundle>` span per bundle repaired, under the span
  `around_repair` opens: docs/tracing.md), and a `drift.FightGuard` per cluster that backs off and
  reports objects another writer keeps changing back;
- with an `ObjectCache` (`cache=`, the engine's), the objects themselves for rounds to read instead of
  the server (`fleet.cluster.cache`): every list and event is handed to it, each stream's opening and
  closing too (a closed stream is a gap: not an answer), and ConfigMaps (inventories, the revision
  record) and Namespaces (every one: that stream has no label selector) are watched whatever fleet
  applies;
- `on_change(cluster)`, called for every new event on a watched object, status changes included (the
  engine uses it to look at health at once while a rollout waits for this cluster);
- health (open streams, time of the last event in RFC 3339, reconnects, relists, 410s) reported through
  `on_health(cluster, streams=, last_event_at=, reconnects=, relists=, expired=)` (the signature of
  `Engine.watch_update`), at most once per `Settings.health_interval` seconds and only when it changed
  (events within one second, a stream reopened at its timeout: no report).

Does not: full reconciles, inventories or prunes (the engine's rounds; a repair that fails is reported
through `on_repair` for the engine to follow with a round), decide drift (`drift`), or talk to kr8s
(`kube`, whose `Client.stream` opens the streams).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import orjson
from opentelemetry import trace

from fleet.clients import kube
from fleet.cluster import apply, repair
from fleet.cluster import cache as cache_mod
from fleet.core import backoff as backoff_rule
from fleet.core import drift, errors, inventory, model, plan

log = logging.getLogger("fleet.watch")
_TRACER = trace.get_tracer("fleet.watch")

DesiredSource = Callable[[], Mapping[model.ObjectRef, Mapping[str, Any]]]
Kind = tuple[str, str]  # (apiVersion, kind)
# With an `ObjectCache`, these are watched whatever fleet applies: inventories and the revision record are
# ConfigMaps, and a round needs every namespace (not only fleet's: no label selector on that stream).
CACHE_KINDS: frozenset[Kind] = frozenset({("v1", "ConfigMap"), ("v1", "Namespace")})


@dataclass(frozen=True)
class Settings:
    """Watch and repair knobs. Defaults suit a controller; tests shorten the times."""

    timeout_seconds: int = 300  # asked of the server per stream, jittered up to +20%
    read_margin: float = 30.0  # silence tolerated beyond timeoutSeconds before a stream is declared dead
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    page_size: int = 500
    max_cached: int = 50_000  # objects per cluster whose identity/RV/fingerprint are kept
    coalesce: float = 0.05  # a burst of drift within this many seconds is repaired as one batch
    repair_concurrency: int = 8
    repair_retries: int = 5  # a repair that fails is retried this many times (backing off), then left
    fight_limit: int = 5  # more than this many repairs of one object within fight_window: a fight
    fight_window: float = 60.0
    fight_backoff: float = 10.0  # first backoff of a fight, doubling
    fight_backoff_cap: float = 600.0
    health_interval: float = 1.0  # health reports at most this often


@dataclass(frozen=True)
class Health:
    streams: int = 0
    last_event_at: str | None = None
    reconnects: int = 0
    relists: int = 0
    expired: int = 0  # 410 Gone answers: a watch too old, or a list's continue token expired

    def fields(self) -> dict[str, Any]:
        """Keyword arguments of `Engine.watch_update`."""
        return {
            "streams": self.streams,
            "last_event_at": self.last_event_at,
            "reconnects": self.reconnects,
            "relists": self.relists,
            "expired": self.expired,
        }


@dataclass(frozen=True)
class RepairBatch:
    """One coalesced repair on one cluster, as reported to `on_repair`."""

    cluster: str
    refs: tuple[model.ObjectRef, ...]
    changes: model.ChangeSet
    fights: tuple[drift.Fight, ...] = ()
    seconds: float = 0.0

    @property
    def failed(self) -> tuple[model.Change, ...]:
        return tuple(c for c in self.changes.changes if c.action is model.Action.FAILED)


@dataclass(slots=True)
class _Entry:
    rv: str
    fp: bytes
    in_sync: bool


class _Outcome(enum.Enum):
    EXPIRED = "expired"  # closed by the server at the timeoutSeconds we asked for
    CLOSED = "closed"  # closed early after delivering events
    EMPTY = "empty"  # closed early without a single event
    SILENT = "silent"  # nothing for longer than timeoutSeconds + margin: dead connection


class _Expired(Exception):
    """The resourceVersion we resume from is gone from the server's history: relist."""


class _ContinueExpired(_Expired):
    """A 410 on the continue token of a (re)list: list again, after a backoff."""


class _StreamError(errors.ClusterError):
    """An in-stream ERROR event other than 410."""


_SECOND: tuple[int, str] = (-1, "")  # the last second formatted, shared by every cluster's watch


def _rfc3339(seconds: float) -> str:
    """RFC 3339 UTC to the second; the streams of many clusters ask for the same second (a bookmark each
    per minute, events of one commit): formatted once per second."""
    global _SECOND
    second = int(seconds)
    if second != _SECOND[0]:
        _SECOND = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _SECOND[1]


def _newer(rv: str, than: str) -> bool:
    """Whether `rv` comes after `than` (resourceVersions compare as integers when both are)."""
    try:
        return int(rv) > int(than)
    except ValueError:
        return rv != than


def backoff(failures: int, *, base: float, cap: float) -> float:
    """Capped exponential backoff with jitter (half to full): `fleet.core.backoff.delay`."""
    return backoff_rule.delay(failures, base=base, cap=cap)


HealthCallback = Callable[..., None]
RepairCallback = Callable[[RepairBatch], Awaitable[None] | None]
AroundRepair = Callable[[tuple[model.ObjectRef, ...]], contextlib.AbstractContextManager[Any]]


class ClusterWatch:
    """Watches one cluster's fleet-owned objects of the kinds given to `set_kinds`; repairs drift.

    `desired()` returns the objects fleet applies on this cluster now (ref -> object as applied, see
    `drift.desired_objects`); it is called per event, so return a mapping built once per revision.
    `on_health(cluster, **Health.fields())` and `on_repair(RepairBatch)` are optional callbacks;
    `around_repair(refs)` an optional context manager entered around each repair batch (a trace span).
    `claim()` returns the controller's current `inventory.Claim` (None: none): a repair writes nothing
    while the cluster's revision record holds a newer revision of the same source, nor over an object
    carrying one in `fleet.dev/claim`, and each object it writes carries it; `held()` the bundles
    held back at an older revision, each with the newer revisions of this controller's
    (`repair.repair_objects`: left as they are where another writer of the source is at one of them).
    """

    def __init__(
        self,
        client: kube.Client,
        *,
        instance: str,
        desired: DesiredSource,
        settings: Settings | None = None,
        on_health: HealthCallback | None = None,
        on_repair: RepairCallback | None = None,
        around_repair: AroundRepair | None = None,
        kinds: Iterable[Kind] = (),
        claim: Callable[[], inventory.Claim | None] | None = None,
        held: Callable[[], Mapping[str, Mapping[str, str]]] | None = None,
        on_change: Callable[[str], None] | None = None,
        cache: cache_mod.ObjectCache | None = None,
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.cluster = client.cluster
        self.instance = instance
        self.settings = settings or Settings()
        self.guard = drift.FightGuard(
            limit=self.settings.fight_limit,
            window=self.settings.fight_window,
            backoff=self.settings.fight_backoff,
            cap=self.settings.fight_backoff_cap,
        )
        self.repairs = 0  # repair requests that wrote (created or configured)
        self.events = 0  # watch events received (bookmarks included)
        self.fights: dict[model.ObjectRef, drift.Fight] = {}  # the latest fight per object
        self._desired_fn = desired
        self._desired_src: Mapping[model.ObjectRef, Mapping[str, Any]] | None = None
        self._index = drift.DesiredIndex({})
        self._on_health = on_health
        self._on_repair = on_repair
        self._around_repair = around_repair
        self._claim = claim
        self._held = held
        self._may_write = may_write  # asked right before each repair's write (a replica's ownership)
        self._on_change = on_change
        self._kinds: set[Kind] = set(kinds)
        self._scopes: dict[Kind, anyio.CancelScope] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._cache: dict[Kind, dict[plan.Key, _Entry]] = {}
        self._cached = 0
        self._accepted: dict[plan.Key, tuple[bytes, bytes]] = {}  # desired fp -> server's form of it
        self._writers: dict[plan.Key, str] = {}
        self._pending: dict[plan.Key, float] = {}
        self._failures: dict[plan.Key, int] = {}
        self._resume: dict[Kind, str] = {}  # last resourceVersion seen per kind
        self._wake = anyio.Event()
        self._health_wake = anyio.Event()
        self._streams = 0
        self._last_event = 0.0
        self._reported: Health | None = None
        self._reconnects = 0
        self._relists = 0
        self._expired = 0

    # -- the API the engine uses ---------------------------------------------------------------------

    @property
    def health(self) -> Health:
        return Health(
            streams=self._streams,
            last_event_at=_rfc3339(self._last_event) if self._last_event else None,
            reconnects=self._reconnects,
            relists=self._relists,
            expired=self._expired,
        )

    @property
    def kinds(self) -> frozenset[Kind]:
        return frozenset(self._kinds)

    def active_fights(self) -> tuple[drift.Fight, ...]:
        """Fights still going on (backed off, or within a window of the last repair)."""
        now = time.monotonic()
        return tuple(f for r, f in sorted(self.fights.items()) if self.guard.fighting(plan.key(r), now))

    def set_kinds(self, kinds: Iterable[Kind]) -> None:
        """Watch exactly these (apiVersion, kind) pairs: start new streams, cancel dropped ones."""
        self._kinds = set(kinds) | (CACHE_KINDS if self.cache is not None else set())
        if self._tg is None:
            return
        for kind in sorted(set(self._scopes) - self._kinds):
            self._scopes.pop(kind).cancel()
            self._resume.pop(kind, None)
            dropped = self._cache.pop(kind, {})
            self._cached -= len(dropped)
            if self.cache is not None:
                self.cache.dropped(*kind)
        for kind in sorted(self._kinds - set(self._scopes)):
            scope = anyio.CancelScope()
            self._scopes[kind] = scope
            self._tg.start_soon(self._run_kind, kind, scope)

    async def run(self) -> None:
        """Run until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._repairer)
                tg.start_soon(self._reporter)
                self.set_kinds(self._kinds)
                await anyio.sleep_forever()
        finally:
            self._tg = None
            self._scopes.clear()
            self._streams = 0
            if self._on_health is not None:
                with contextlib.suppress(Exception):
                    self._on_health(self.cluster, **self.health.fields())

    # -- desired state -------------------------------------------------------------------------------

    def _wanted(self, k: plan.Key) -> drift.Wanted | None:
        current = self._desired_fn()
        if current is not self._desired_src:
            self._desired_src = current
            self._index = drift.DesiredIndex(current)
        return self._index.get(k)

    def _accepted_for(self, k: plan.Key, wanted: drift.Wanted) -> tuple[bytes, ...]:
        found = self._accepted.get(k)
        return (found[1],) if found is not None and found[0] == wanted.fingerprint else ()

    # -- one (cluster, kind) stream ------------------------------------------------------------------

    async def _resolve(self, kind: Kind) -> kube.ResourceType | None:
        api_version, name = kind
        group, _, version = api_version.rpartition("/")
        ref = model.ObjectRef(group, version, name, "", "")
        rt = apply.resolve(await self.client.types(), ref)
        if rt is None:
            rt = apply.resolve(await self.client.types(refresh=True), ref)
        return rt

    async def _run_kind(self, kind: Kind, scope: anyio.CancelScope) -> None:
        with scope:
            failures = 0
            expired = 0  # 410s in a row: a relist whose watch is at once too old again backs off
            rv: str | None = None
            listed = False
            rt: kube.ResourceType | None = None
            while True:
                try:
                    if rt is None:
                        rt = await self._resolve(kind)
                        if rt is None:
                            raise errors.ClusterError(
                                f"cluster {self.cluster}: kind {kind[1]} ({kind[0]}) is not served; "
                                "not watched until it is"
                            )
                    if rv is None:
                        self._resume.pop(kind, None)
                        if listed:
                            self._relists += 1
                            self._touch()
                        rv = await self._list(kind, rt)
                        listed = True
                    rv, outcome = await self._watch(kind, rt, rv)
                    if outcome in (_Outcome.EXPIRED, _Outcome.CLOSED):
                        expired = 0
                    if outcome is _Outcome.EXPIRED:
                        continue  # the server closed it at the deadline we asked for: reopen
                    if outcome is _Outcome.CLOSED:
                        failures = 0  # closed early, but it delivered: reopen at once
                        self._reconnects += 1
                        self._touch()
                        continue
                    failures += 1  # closed at once without a single event, or silent too long
                except _Expired as e:
                    rv = None
                    expired += 1
                    self._expired += 1
                    self._touch()
                    # A stream's first 410 relists at once; a 410 on a list's continue token, or a watch
                    # too old again right after a relist, backs off (capped, jittered) before listing.
                    if isinstance(e, _ContinueExpired):
                        listed = True  # the list starts again: that is a relist, counted
                        wait = backoff(
                            expired, base=self.settings.backoff_base, cap=self.settings.backoff_cap
                        )
                    else:
                        wait = backoff(
                            expired - 1, base=self.settings.backoff_base, cap=self.settings.backoff_cap
                        )
                    log.info(
                        "cluster %s: %s of %s expired (410); listing again in %.1fs",
                        self.cluster,
                        "a list page" if isinstance(e, _ContinueExpired) else "the watch",
                        kind[1],
                        wait,
                    )
                    await anyio.sleep(wait)
                    continue
                except errors.FleetError as e:
                    failures += 1
                    log.info("cluster %s: watch of %s: %s", self.cluster, kind[1], e)
                    if rv is not None:
                        rv = self._resume.get(kind, rv)
                except Exception:  # a bug must not end the watch of the cluster: log it and go on
                    failures += 1
                    log.exception("cluster %s: watch of %s failed", self.cluster, kind[1])
                self._reconnects += 1
                self._touch()
                await anyio.sleep(
                    backoff(failures, base=self.settings.backoff_base, cap=self.settings.backoff_cap)
                )

    def _selector(self, kind: Kind) -> dict[str, str]:
        """fleet's own objects; with a cache, every Namespace (a round needs to know which exist)."""
        if self.cache is not None and kind == ("v1", "Namespace"):
            return {}
        return {"labelSelector": f"{model.LABEL_OWNER}={self.instance}"}

    async def _list(self, kind: Kind, rt: kube.ResourceType) -> str:
        """List the kind (our objects only), bring the cache up to date, return the list's RV.

        An unreadable or endless list raises (`kube.Client.list_pages`): it is never read as "nothing
        there", which would report every cached object as deleted. A 410 on a continue token raises
        `_ContinueExpired` (the caller backs off before listing again)."""
        params = {**self._selector(kind), "limit": str(self.settings.page_size)}
        what = f"cluster {self.cluster}: list {rt.plural}"
        try:
            items, rv = await self.client.list_pages(rt, rt.collection_path(None), what=what, params=params)
        except kube.ContinueExpired:
            raise _ContinueExpired() from None
        if self.cache is not None:
            self.cache.listed(rt.api_version, rt.kind, items)
        cache = self._cache.setdefault(kind, {})
        seen: set[plan.Key] = set()
        for item in items:
            seen.add(plan.key_of(item))
            self._observe(kind, "MODIFIED", item)
        for k in [k for k in cache if k not in seen]:
            entry = cache[k]
            self._forget(kind, k)
            wanted = self._wanted(k)
            if wanted is not None and drift.judge("DELETED", {}, wanted) is drift.Verdict.DELETED:
                log.info(
                    "cluster %s: %s is gone (seen on relist after %s)", self.cluster, wanted.ref, entry.rv
                )
                self._queue(k)
        self._touch()
        return rv

    async def _watch(self, kind: Kind, rt: kube.ResourceType, rv: str) -> tuple[str, _Outcome]:
        """One watch stream from `rv`; returns (the last RV seen, how it ended)."""
        s = self.settings
        timeout = int(s.timeout_seconds * random.uniform(1.0, 1.2))
        params = {
            "watch": "true",
            **self._selector(kind),
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        what = f"cluster {self.cluster}: watch {rt.plural}"
        started = time.monotonic()
        events = 0
        opened = False
        try:
            with anyio.move_on_after(timeout + s.read_margin) as deadline:
                async with self.client.stream(
                    rt.collection_path(None), what=what, params=params, read_timeout=timeout + s.read_margin
                ) as stream:
                    if stream.status == 410:
                        raise _Expired()
                    if stream.status >= 300:
                        message, _ = await stream.error()
                        raise errors.ClusterError(f"{what}: {message or f'HTTP {stream.status}'}")
                    opened = True
                    if self.cache is not None:
                        self.cache.opened(rt.api_version, rt.kind)
                    self._streams += 1
                    self._touch()
                    async for line in stream.lines():
                        event = orjson.loads(line)
                        if not isinstance(event, dict) or not isinstance(event.get("object", {}), dict):
                            raise errors.ClusterError(f"{what}: a watch event is not an object")
                        rv = self._event(kind, event, rv)
                        self._resume[kind] = rv  # kept if the stream breaks: resume from here
                        events += 1
        except orjson.JSONDecodeError:
            raise errors.ClusterError(f"{what}: a watch event is not JSON") from None
        finally:
            if opened:
                if self.cache is not None:
                    self.cache.closed(rt.api_version, rt.kind)
                self._streams -= 1
                self._touch()
        if deadline.cancelled_caught:
            log.info("cluster %s: watch of %s silent for too long; reopening", self.cluster, rt.plural)
            return rv, _Outcome.SILENT
        lasted = time.monotonic() - started
        if lasted >= timeout - 1:
            return rv, _Outcome.EXPIRED
        log.info("cluster %s: watch of %s closed after %.1fs; reopening", self.cluster, rt.plural, lasted)
        return rv, _Outcome.CLOSED if events else _Outcome.EMPTY

    def _event(self, kind: Kind, event: Mapping[str, Any], rv: str) -> str:
        kind_of = event.get("type")
        obj = event.get("object") or {}
        self._last_event = time.time()
        self.events += 1
        self._touch()
        if kind_of == "ERROR":
            code = obj.get("code") if isinstance(obj, Mapping) else None
            if code == 410:
                raise _Expired()
            message = obj.get("message") if isinstance(obj, Mapping) else None
            raise _StreamError(f"cluster {self.cluster}: watch error {code}: {message}")
        new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or "") or rv
        if kind_of == "BOOKMARK":
            return new_rv
        if kind_of in ("ADDED", "MODIFIED", "DELETED"):
            if self.cache is not None:
                self.cache.event(str(kind_of), obj)
            self._observe(kind, str(kind_of), obj)
        return new_rv

    # -- cache and drift -----------------------------------------------------------------------------

    def _forget(self, kind: Kind, k: plan.Key) -> None:
        if self._cache.get(kind, {}).pop(k, None) is not None:
            self._cached -= 1

    def _observe(self, kind: Kind, event: str, obj: Mapping[str, Any]) -> None:
        k = plan.key_of(obj)
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        cache = self._cache.setdefault(kind, {})
        entry = cache.get(k)
        if entry is not None and rv and not _newer(rv, entry.rv):
            return  # a replay of what we know, or our own write already seen in its apply answer
        if self._on_change is not None:
            self._on_change(self.cluster)  # status too: a rollout waits for health it can see here
        wanted = self._wanted(k)
        if event == "DELETED":
            self._forget(kind, k)
            verdict = drift.judge(event, obj, wanted)
        else:
            fp = drift.fingerprint(wanted.shape, obj) if wanted is not None else b""
            if entry is not None and entry.fp == fp and entry.in_sync:
                entry.rv = rv
                return  # nothing fleet sets changed (status, someone else's label, ...)
            verdict = drift.judge(
                event,
                obj,
                wanted,
                live_fingerprint=fp,
                accepted=self._accepted_for(k, wanted) if wanted is not None else (),
            )
            in_sync = verdict is not drift.Verdict.DRIFTED
            if entry is not None:
                entry.rv, entry.fp, entry.in_sync = rv, fp, in_sync
            elif self._cached < self.settings.max_cached:
                cache[k] = _Entry(rv, fp, in_sync)
                self._cached += 1
        if verdict in (drift.Verdict.DRIFTED, drift.Verdict.DELETED):
            writer = drift.last_writer(obj)
            if writer:
                self._writers[k] = writer
            ref = wanted.ref if wanted is not None else model.ObjectRef.of(obj)
            log.info("cluster %s: %s %s (%s)", self.cluster, ref, verdict.value, event)
            self._queue(k)

    def _queue(self, k: plan.Key, *, delay: float = 0.0) -> None:
        now = time.monotonic()
        due = max(now + delay, self.guard.next_allowed(k, now))
        current = self._pending.get(k)
        self._pending[k] = due if current is None else min(current, due)
        self._wake.set()

    # -- repairs -------------------------------------------------------------------------------------

    async def _repairer(self) -> None:
        while True:
            if not self._pending:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            first = min(self._pending.values())
            now = time.monotonic()
            if first > now:
                with anyio.move_on_after(first - now):
                    await self._wake.wait()
                self._wake = anyio.Event()
                continue
            await anyio.sleep(self.settings.coalesce)  # let the rest of a burst arrive
            now = time.monotonic()
            due = [k for k, t in self._pending.items() if t <= now]
            for k in due:
                del self._pending[k]
            try:
                await self._repair(due)
            except Exception:  # a bug must not end the watch of the cluster: log it, retry later
                log.exception("cluster %s: drift repair failed", self.cluster)
                for k in due:
                    self._queue(k, delay=self.settings.backoff_cap)

    def _trace_applies(
        self, changes: model.ChangeSet, wanted: Mapping[plan.Key, drift.Wanted], started_ns: int
    ) -> None:
        """One `apply <bundle>` span per bundle of a repair batch, child of the current (drift) span, from
        the batch's start to now: the objects of one batch are repaired concurrently. Counts only."""
        by_bundle: dict[str, list[model.Change]] = {}
        for change in changes.changes:
            w = wanted.get(plan.key(change.ref))
            by_bundle.setdefault(w.bundle if w is not None else "", []).append(change)
        for bundle, mine in sorted(by_bundle.items()):
            span = _TRACER.start_span(
                f"apply {bundle}",
                attributes={"fleet.cluster": self.cluster, "fleet.bundle": bundle},
                start_time=started_ns,
            )
            done = model.ChangeSet(tuple(mine))
            for action in model.Action:
                if n := done.count(action):
                    span.set_attribute(f"fleet.objects.{action.value}", n)
            if done.failed:
                span.set_status(trace.Status(trace.StatusCode.ERROR, "objects failed or conflicted"))
            span.end()

    async def _repair(self, keys: list[plan.Key]) -> None:
        started = time.monotonic()
        objects: dict[model.ObjectRef, Mapping[str, Any]] = {}
        wanted_by_key: dict[plan.Key, drift.Wanted] = {}
        for k in keys:
            wanted = self._wanted(k)
            if wanted is None:
                continue  # no longer desired (a new revision): the engine's round prunes it
            allowed = self.guard.next_allowed(k, started)
            if allowed > started:
                self._pending[k] = allowed
                continue
            objects[wanted.ref] = wanted.obj
            wanted_by_key[k] = wanted
        if not objects:
            return
        refs = tuple(sorted(objects))
        around = self._around_repair(refs) if self._around_repair is not None else contextlib.nullcontext()
        with around:
            started_ns = time.time_ns()
            result = await repair.repair_objects(
                self.client,
                objects,
                instance=self.instance,
                concurrency=self.settings.repair_concurrency,
                claim=self._claim() if self._claim is not None else None,
                held=self._held() if self._held is not None else None,
                may_write=self._may_write,
            )
            self._trace_applies(result.changes, wanted_by_key, started_ns)
        now = time.monotonic()
        fights: list[drift.Fight] = []
        for change in result.changes.changes:
            k = plan.key(change.ref)
            wanted = wanted_by_key.get(k)
            doc = result.objects.get(k)
            if wanted is not None and doc is not None:
                self._learn(k, wanted, doc)
            if change.action in (model.Action.CREATED, model.Action.CONFIGURED):
                self.repairs += 1
                self._failures.pop(k, None)
                fight = self.guard.record(k, now, ref=change.ref, writer=self._writers.get(k, ""))
                if fight is not None:
                    self.fights[change.ref] = fight
                    fights.append(fight)
                    log.warning("cluster %s: %s", self.cluster, fight.message)
            elif change.action is model.Action.FAILED:
                failures = self._failures.get(k, 0) + 1
                self._failures[k] = failures
                if failures <= self.settings.repair_retries:
                    self._queue(
                        k,
                        delay=backoff(
                            failures, base=self.settings.backoff_base, cap=self.settings.backoff_cap
                        ),
                    )
                else:
                    self._failures.pop(k, None)
                log.warning("cluster %s: repair failed: %s", self.cluster, change.message)
            else:
                self._failures.pop(k, None)
        batch = RepairBatch(
            cluster=self.cluster,
            refs=refs,
            changes=result.changes,
            fights=tuple(fights),
            seconds=now - started,
        )
        if self._on_repair is not None:
            try:
                maybe = self._on_repair(batch)
                if maybe is not None:
                    await maybe
            except Exception:
                log.exception("cluster %s: on_repair callback failed", self.cluster)

    def _learn(self, k: plan.Key, wanted: drift.Wanted, doc: Mapping[str, Any]) -> None:
        """Remember the apply answer: its RV (so our own event is not news) and the server's form."""
        fp = drift.fingerprint(wanted.shape, doc)
        if fp != wanted.fingerprint:
            self._accepted[k] = (wanted.fingerprint, fp)
        rv = str((doc.get("metadata") or {}).get("resourceVersion") or "")
        kind = (str(doc.get("apiVersion") or wanted.ref.api_version), str(doc.get("kind") or wanted.ref.kind))
        cache = self._cache.get(kind)
        if cache is None:
            for candidate, entries in self._cache.items():
                if candidate[1] == wanted.ref.kind and k in entries:
                    cache = entries
                    break
        if cache is None:
            return
        entry = cache.get(k)
        if entry is None:
            if self._cached >= self.settings.max_cached:
                return
            cache[k] = _Entry(rv, fp, True)
            self._cached += 1
        elif not rv or _newer(rv, entry.rv):
            entry.rv, entry.fp, entry.in_sync = rv, fp, True

    # -- health --------------------------------------------------------------------------------------

    def _touch(self) -> None:
        self._health_wake.set()

    async def _reporter(self) -> None:
        if self._on_health is None:
            return
        while True:
            await self._health_wake.wait()
            self._health_wake = anyio.Event()
            health = self.health
            if health == self._reported:
                continue  # woken, but nothing it says changed
            self._reported = health
            try:
                self._on_health(self.cluster, **health.fields())
            except Exception:
                log.exception("cluster %s: on_health callback failed", self.cluster)
            await anyio.sleep(self.settings.health_interval)
