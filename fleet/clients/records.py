"""The state of record in the management cluster: reading and writing fleet's record ConfigMaps.

Owns: the requests about the records of `fleet.core.records` in namespace ``fleet-system`` of the
management cluster, through one `kube.Client` (the management client, with the replica's User-Agent):
installing them on start (`install`: the namespace when missing, the instance's marker, and a migration of
every record written at an older schema, each rewritten over the resourceVersion read); rollouts (list,
watch from a list's resourceVersion, write over a resourceVersion, labelled with their writer, and written again over the version found when
this very replica wrote it last; delete beyond the kept ones); people's action requests (ask, list, done);
this replica's history segments (`append`: a batch of entries added to its newest segment over its
resourceVersion, a new segment when it is full; `history`: every replica's segments merged; `prune`:
segments past the retention deleted whole); requests handed on (`hand_on`, `requests`, `handled`: a
reconcile for a shard's owner; `announce_fetch`: the instance's fetch request); status summaries (`summaries`,
`summaries_at` and `watch_summaries`: listed, and watched from the list's resourceVersion; `write_summary`: over the
resourceVersion of the summary found, and not at all when a newer owner of the shard wrote it; written
again, over the version this replica wrote last without reading it first, read only when that is refused).

Every write is a compare-and-swap: a create fails when the record exists, an update or delete carries the
resourceVersion read; a 409 comes back as `Conflict` (another replica wrote it; read again), never as a
silent overwrite. Failures to talk to the management cluster, or answers that cannot be read, raise
`errors.StateError` subclasses naming the record (so the engine reports "cannot save" and goes on, as with
its SQLite database); a record that cannot be decoded raises `records.RecordError`, never reads as absent.

Does not: decide what the records hold (the controller's Conductor, Recorder and summaries do, through
the pure codecs of `fleet.core.records`), hold a lease, or keep time.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from fleet.clients import kube
from fleet.core import errors
from fleet.core import history as hist
from fleet.core import records as rec
from fleet.core import summaries as sm

log = logging.getLogger("fleet.records")

CONFIGMAPS = kube.ResourceType(
    group="",
    version="v1",
    kind="ConfigMap",
    plural="configmaps",
    namespaced=True,
    verbs=("create", "delete", "get", "list", "update", "watch"),
)


class Unavailable(errors.StateError):
    """The management cluster could not be asked (unreachable, refused, an unreadable answer)."""

    retriable = True


class Conflict(errors.StateError):
    """A record changed since it was read (another replica wrote it): read it again."""

    retriable = True


class Expired(errors.StateError):
    """A watch's resourceVersion is too old for the server (410): list the records again."""

    retriable = True


class Fenced(errors.StateError):
    """A status summary was written by a newer owner of its shard: this replica writes nothing over it."""

    retriable = False


@dataclass(frozen=True)
class Installed:
    """What `install` found and did."""

    schema_found: int | None  # the marker's schema before (None: a first install)
    migrated: tuple[str, ...] = ()  # records rewritten at the current schema


class Records:
    """The records of one instance, written by one replica (`writer`), through `client`."""

    def __init__(self, client: kube.Client, *, instance: str, writer: str) -> None:
        self.client = client
        self.instance = instance
        self.writer = writer
        self._segment: rec.Segment | None = None  # this replica's newest history segment, as last written
        self._decoded: dict[tuple[str, str], rec.Segment] = {}  # (name, resourceVersion) -> segment
        self._summaries: dict[str, sm.Summary] = {}  # a summary's name -> as last read (a list or a watch)
        self._summary_versions: dict[str, str] = {}  # a summary's name -> the version this replica wrote last

    # -- requests --------------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, *, what: str, **kw: Any) -> tuple[int, Any]:
        try:
            return await self.client.request(method, path, what=what, **kw)
        except errors.ClusterError as e:
            raise Unavailable(f"management cluster: {e}") from e

    async def _list(self, kind: str, *, writer: str | None = None) -> list[dict[str, Any]]:
        return (await self._list_at(kind, writer=writer))[0]

    async def _list_at(self, kind: str, *, writer: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """(the records of a kind, the list's resourceVersion)."""
        labels = rec.selector(instance=self.instance, kind=kind)
        if writer is not None:
            labels += f",{rec.LABEL_WRITER}={writer}"
        what = f"management cluster: list {kind} records of instance {self.instance} in {rec.NAMESPACE}"
        try:
            return await self.client.list_pages(
                CONFIGMAPS,
                CONFIGMAPS.collection_path(rec.NAMESPACE),
                what=what,
                params={"labelSelector": labels, "limit": str(self.client.settings.page_size)},
            )
        except errors.ClusterError as e:
            raise Unavailable(str(e)) from e

    async def _get(self, name: str) -> dict[str, Any] | None:
        status, doc = await self._call(
            "GET",
            CONFIGMAPS.object_path(rec.NAMESPACE, name),
            what=rec.where(name),
            accept=(404,),
            check=kube.is_object,
        )
        return doc if status == 200 else None

    async def _put(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create `obj` (no resourceVersion) or replace it over its resourceVersion; `Conflict` on 409 (it
        exists already, or changed since) or 404 (it was deleted since)."""
        name = obj["metadata"]["name"]
        version = obj["metadata"].get("resourceVersion")
        if version:
            method, path = "PUT", CONFIGMAPS.object_path(rec.NAMESPACE, name)
        else:
            method, path = "POST", CONFIGMAPS.collection_path(rec.NAMESPACE)
        status, doc = await self._call(
            method,
            path,
            what=rec.where(name),
            params={"fieldManager": "fleet"},
            body=dict(obj),
            accept=(404, 409),
            check=kube.is_object,
        )
        if status in (404, 409):
            gone = "was deleted" if status == 404 else ("exists already" if not version else "changed")
            raise Conflict(f"{rec.where(name)}: {gone} since it was read (another replica wrote it)")
        if (doc.get("metadata") or {}).get("name") != name:
            raise Unavailable(f"{rec.where(name)}: the answer to a write is not that record")
        return dict(doc)

    async def _delete(self, meta: rec.Meta) -> bool:
        """Delete a record if it is still at the version read; False when it changed or is gone."""
        if not meta.version:
            raise ValueError(f"{rec.where(meta.name)}: a delete must carry the resourceVersion it read")
        status, _ = await self._call(
            "DELETE",
            CONFIGMAPS.object_path(rec.NAMESPACE, meta.name),
            what=rec.where(meta.name),
            body={
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"resourceVersion": meta.version},
            },
            accept=(404, 409),
        )
        return status not in (404, 409)

    # -- installing ------------------------------------------------------------------------------------

    async def install(self) -> Installed:
        """Create namespace ``fleet-system`` when missing and the instance's marker; when the marker says
        an older schema, rewrite every record at the current one (each over the version read) before the
        marker. A marker or record of a newer schema raises `RecordError`: an older fleet must not run."""
        try:
            await self.client.create_namespace(rec.NAMESPACE, instance=self.instance)
        except errors.ClusterError as e:
            raise Unavailable(f"management cluster: {e}") from e
        name = rec.name_for(rec.MARKER, instance=self.instance)
        found = await self._get(name)
        if found is None:
            try:
                await self._put(rec.encode_marker(instance=self.instance, replica=self.writer))
            except Conflict:
                pass  # another replica installed it at the same moment
            return Installed(schema_found=None)
        before = rec.schema_of(found)
        if before > rec.SCHEMA:
            raise rec.RecordError(
                f"{rec.where(name)}: written by a newer fleet (schema {before}, this fleet knows {rec.SCHEMA});"
                " an older fleet must not run on these records (upgrade this replica)"
            )
        if before == rec.SCHEMA:
            return Installed(schema_found=before)
        migrated = []
        for kind, decode, encode in _CODECS:
            for item in await self._list(kind):
                if rec.schema_of(item) == rec.SCHEMA:
                    continue
                value = decode(self, item)
                try:
                    await self._put(encode(self, value))
                except Conflict:
                    continue  # another replica rewrote it first
                migrated.append(item["metadata"]["name"])
        version = str(found["metadata"].get("resourceVersion") or "")
        try:
            await self._put(rec.encode_marker(instance=self.instance, replica=self.writer, version=version))
        except Conflict:
            pass  # another replica finished the migration first
        log.info("records of instance %s migrated from schema %d to %d: %d rewritten", self.instance, before,
                 rec.SCHEMA, len(migrated))  # fmt: skip
        return Installed(schema_found=before, migrated=tuple(migrated))

    # -- rollouts --------------------------------------------------------------------------------------

    async def rollouts(self) -> list[rec.Rollout]:
        """Every stored rollout of the instance (RecordError naming any unreadable one)."""
        return (await self.rollouts_at())[0]

    async def rollouts_at(self) -> tuple[list[rec.Rollout], str]:
        """Every stored rollout, and the list's resourceVersion (`watch_rollouts` goes on from it)."""
        items, version = await self._list_at(rec.ROLLOUT)
        return [rec.decode_rollout(item) for item in items], version

    async def watch_rollouts(
        self, version: str, *, lasting: int, on_event: Callable[[str, dict[str, Any]], None]
    ) -> None:
        """Watch the rollout records from `version` until the server ends the stream (`lasting` seconds
        asked of it; a stream silent 30 s longer is dropped): `on_event(type, object)` for each event, its
        object the record's whole new version (ADDED, MODIFIED), its last one (DELETED), or only the
        resourceVersion reached (BOOKMARK). Raises `Expired` on a 410 (list again) and `Unavailable` when
        the stream cannot be opened or read, or brings what is not an event."""
        await self._watch(rec.ROLLOUT, version, lasting=lasting, on_event=on_event)

    async def _watch(
        self, kind: str, version: str, *, lasting: int, on_event: Callable[[str, dict[str, Any]], None]
    ) -> None:
        what = f"management cluster: watch {kind} records of instance {self.instance} in {rec.NAMESPACE}"
        params = {
            "watch": "true",
            "labelSelector": rec.selector(instance=self.instance, kind=kind),
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(lasting),
        }
        try:
            async with self.client.stream(
                CONFIGMAPS.collection_path(rec.NAMESPACE), what=what, params=params, read_timeout=lasting + 30
            ) as stream:
                if stream.status == 410:
                    raise Expired(f"{what}: resourceVersion {version} is too old (410)")
                if stream.status >= 300:
                    message, _ = await stream.error()
                    raise Unavailable(f"{what}: {message or f'HTTP {stream.status}'}")
                async for line in stream.lines():
                    try:
                        event = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        raise Unavailable(f"{what}: a watch event is not JSON") from None
                    obj = event.get("object") if isinstance(event, dict) else None
                    if not isinstance(obj, dict):
                        raise Unavailable(f"{what}: a watch event is not an object")
                    kind = str(event.get("type"))
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise Expired(f"{what}: resourceVersion {version} is too old (410)")
                        raise Unavailable(f"{what}: watch error {obj.get('code')}: {obj.get('message')}")
                    on_event(kind, obj)
        except errors.ClusterError as e:
            raise Unavailable(str(e)) from e

    async def write_rollout(self, r: rec.Rollout) -> rec.Rollout:
        """Create the rollout's record, or replace it over `r.meta.version`, as written by this replica
        (label ``fleet.dev/writer``); the record as written.

        A rollout has one writer, the coordinator. When the version read is stale but the record found
        was written by this very replica (a write whose answer was lost, a read older than a write), this
        replica's rollout is the newer: it is written again over the version found. A record another
        replica wrote (another coordinator), or one deleted meanwhile, is a `Conflict`: never overwritten."""
        r = replace(r, writer=self.writer)
        try:
            return rec.decode_rollout(await self._put(rec.encode_rollout(r, instance=self.instance)))
        except Conflict as e:
            name = rec.name_for(rec.ROLLOUT, instance=self.instance, bundle=r.bundle, revision=r.revision)
            found = await self._get(name)
            if found is None:
                raise
            have = rec.decode_rollout(found)
            if have.writer != self.writer:
                raise Conflict(f"{e} (its writer: {have.writer or 'unknown'})") from None
            log.info("%s: written by this replica at a version it had not seen; written again over it",
                     rec.where(name))  # fmt: skip
            again = replace(r, meta=have.meta)
            return rec.decode_rollout(await self._put(rec.encode_rollout(again, instance=self.instance)))

    async def forget_rollouts(self, rollouts: Iterable[rec.Rollout]) -> int:
        """Delete rollouts (each over the version read); how many went."""
        return sum([await self._delete(r.meta) for r in rollouts])

    # -- people's actions ------------------------------------------------------------------------------

    async def ask(self, a: rec.ActionRequest) -> rec.ActionRequest:
        """Record a person's action for the coordinator (a fresh token when `a` has none)."""
        if not a.token:
            a = replace(a, token=secrets.token_hex(5))
        return rec.decode_action(await self._put(rec.encode_action(a, instance=self.instance)))

    async def actions(self) -> list[rec.ActionRequest]:
        """Every action waiting for the coordinator, oldest first."""
        out = [rec.decode_action(item) for item in await self._list(rec.ACTION)]
        return sorted(out, key=lambda a: (a.at, a.token))

    async def done(self, a: rec.ActionRequest) -> bool:
        """The coordinator took (or refused) the action: its record goes."""
        return await self._delete(a.meta)

    # -- requests handed on ----------------------------------------------------------------------------

    async def hand_on(self, r: rec.Request) -> rec.Request:
        """Record a reconcile for the owner of `r.shard`: one record per shard and asking replica (its
        token is this replica), so requests made before the owner took the last one are merged into it
        (their clusters together; a bundle only when both asked the same) and never pile up."""
        r = replace(r, token=r.token or self.writer)
        name = rec.name_for(rec.REQUEST, instance=self.instance, shard=r.shard, token=r.token)
        for _ in range(3):
            found = await self._get(name)
            ask = r
            if found is not None:
                have = rec.decode_request(found)
                ask = replace(
                    r,
                    clusters=tuple(sorted(set(have.clusters) | set(r.clusters))),
                    bundle=r.bundle if have.bundle == r.bundle else None,
                    meta=have.meta,
                )
            try:
                return rec.decode_request(await self._put(rec.encode_request(ask, instance=self.instance)))
            except Conflict:
                continue  # taken by the owner, or merged by this replica's other call, meanwhile: again
        raise Conflict(f"{rec.where(name)}: changed under every attempt")

    async def announce_fetch(self, r: rec.Request) -> rec.Request:
        """Rewrite the instance's fetch request (every replica fetches when it changes); a write that
        meets another replica's at the same moment is that replica's announcement, as good as this one."""
        name = rec.name_for(rec.REQUEST, instance=self.instance)
        for _ in range(3):
            found = await self._get(name)
            version = str((found or {}).get("metadata", {}).get("resourceVersion") or "")
            try:
                written = await self._put(
                    rec.encode_request(replace(r, meta=rec.Meta(name, version)), instance=self.instance)
                )
            except Conflict:
                continue
            return rec.decode_request(written)
        raise Conflict(f"{rec.where(name)}: changed under every attempt")

    async def requests(self) -> list[rec.Request]:
        """Every request handed on (reconciles oldest first, the fetch request among them)."""
        out = [rec.decode_request(item) for item in await self._list(rec.REQUEST)]
        return sorted(out, key=lambda r: (r.at, r.token))

    async def handled(self, r: rec.Request) -> bool:
        """The owner woke the request's clusters: its record goes."""
        return await self._delete(r.meta)

    # -- history ---------------------------------------------------------------------------------------

    async def _segments(self, *, writer: str | None = None) -> list[rec.Segment]:
        out = []
        for item in await self._list(rec.HISTORY, writer=writer):
            meta = item.get("metadata") or {}
            key = (str(meta.get("name")), str(meta.get("resourceVersion") or ""))
            seg = self._decoded.get(key) if key[1] else None
            if seg is None:
                seg = rec.decode_segment(item, instance=self.instance)
                if key[1]:
                    self._decoded[key] = seg
            out.append(seg)
        live = {(s.meta.name, s.meta.version) for s in out}
        if writer is None:
            for key in [k for k in self._decoded if k not in live]:
                del self._decoded[key]
        return out

    async def append(self, entries: Iterable[hist.Entry]) -> None:
        """Add entries to this replica's history (its newest segment, or a new one when that is full)."""
        batch = tuple(entries)
        if not batch:
            return
        for _ in range(3):
            seg = self._segment
            if seg is None:
                mine = await self._segments(writer=self.writer)
                seg = max(mine, key=lambda s: s.number, default=None) or rec.Segment(
                    writer=self.writer, number=0
                )
            if seg.meta.version and not rec.fits(seg, batch):
                seg = rec.Segment(writer=self.writer, number=seg.number + 1)
            grown = rec.grown(seg, batch)
            try:
                written = await self._put(rec.encode_segment(grown, instance=self.instance))
            except Conflict:
                self._segment = None  # pruned or written meanwhile: read it again
                continue
            self._segment = replace(grown, meta=rec.Meta(grown.meta.name or written["metadata"]["name"],
                                                         str(written["metadata"].get("resourceVersion") or "")))  # fmt: skip
            return
        raise Conflict(f"{rec.where(rec.name_for(rec.HISTORY, instance=self.instance, writer=self.writer))}: "
                       "history segment changed under every attempt")  # fmt: skip

    async def history(self, q: hist.Query) -> list[hist.Entry]:
        """Entries of every replica's segments matching `q`, newest first."""
        return rec.merge_history(await self._segments(), q)

    async def bounds(self) -> tuple[int, float | None]:
        segments = await self._segments()
        times = [e.at for s in segments for e in s.entries]
        return len(times), min(times, default=None)

    async def prune(self, *, before: float) -> int:
        """Delete every segment (of any replica) whose entries are all older than `before`; how many
        entries went."""
        gone = 0
        for s in await self._segments():
            if rec.expired(s, before=before) and await self._delete(s.meta):
                gone += len(s.entries)
                if self._segment is not None and self._segment.meta.name == s.meta.name:
                    self._segment = None
        return gone

    # -- status summaries ------------------------------------------------------------------------------

    async def summaries(self) -> list[sm.Summary]:
        """Every shard's summary (see `summaries_at`)."""
        return (await self.summaries_at())[0]

    async def summaries_at(self) -> tuple[list[sm.Summary], str]:
        """Every shard's summary, and the list's resourceVersion (`watch_summaries` goes on from it). Those
        unchanged since last read (by a list or `take_summary`) are not decoded again; of one read again,
        the documents of the clusters that did not change are the objects read before. RecordError naming
        any unreadable one."""
        items, version = await self._list_at(rec.STATUS)
        out = [self._summary(item) for item in items]
        self._summaries = {s.meta.name: s for s in out if s.meta.version}
        return out, version

    async def watch_summaries(
        self, version: str, *, lasting: int, on_event: Callable[[str, dict[str, Any]], None]
    ) -> None:
        """Watch the status summaries from `version`, as `watch_rollouts` does the rollouts."""
        await self._watch(rec.STATUS, version, lasting=lasting, on_event=on_event)

    def take_summary(self, obj: Mapping[str, Any]) -> sm.Summary:
        """A summary's new version as a watch brought it, decoded as `summaries_at` does and kept for the
        next read. RecordError naming the ConfigMap and field when it cannot be read."""
        s = self._summary(obj)
        if s.meta.version:
            self._summaries[s.meta.name] = s
        return s

    def forget_summary(self, name: str) -> None:
        """A summary is gone (a watch told)."""
        self._summaries.pop(name, None)

    def _summary(self, item: Mapping[str, Any]) -> sm.Summary:
        meta = item.get("metadata") or {}
        name, version = str(meta.get("name")), str(meta.get("resourceVersion") or "")
        old = self._summaries.get(name)
        if old is not None and version and old.meta.version == version:
            return old
        s = sm.decode_summary(item)
        if old is not None:
            # A summary is rewritten whenever one of its clusters changes: the others' documents are kept
            # as the objects read before, so what the status shows of them is not made again
            # (`fleet.controller.shared.Shared.whole_fleet`).
            prior = old.clusters
            s = replace(
                s, clusters={n: prior[n] if prior.get(n) == doc else doc for n, doc in s.clusters.items()}
            )
        return s

    async def write_summary(self, s: sm.Summary) -> sm.Summary:
        """Write a shard's summary over the one in place; `Fenced` when a newer owner of the shard wrote
        that one, `Conflict` when it changed between the read and the write. Written again by this
        replica, it goes over the version this replica last wrote, without reading it first: any other
        write since (a newer owner's) changed that version, so the write is refused (409) and the summary
        is then read, checked and written as the first time."""
        name = rec.name_for(rec.STATUS, instance=self.instance, shard=s.shard)
        mine = self._summary_versions.get(name)
        if mine is not None:
            try:
                return await self._put_summary(s, name=name, version=mine)
            except Conflict:
                self._summary_versions.pop(name, None)
        found = await self._get(name)
        existing = sm.decode_summary(found) if found is not None else None
        if sm.fenced(existing, shards=s.shards, epoch=s.epoch):
            assert existing is not None
            raise Fenced(
                f"{rec.where(name)}: written by {existing.writer} at epoch {existing.epoch}, newer than this "
                f"replica's {s.epoch}; not overwritten"
            )
        return await self._put_summary(s, name=name, version=existing.meta.version if existing else "")

    async def _put_summary(self, s: sm.Summary, *, name: str, version: str) -> sm.Summary:
        written = await self._put(
            sm.encode_summary(replace(s, meta=rec.Meta(name, version)), instance=self.instance)
        )
        meta = written.get("metadata") or {}
        now = str(meta.get("resourceVersion") or "")
        if now:
            self._summary_versions[name] = now
        return replace(s, meta=rec.Meta(name, now))


def _rollout_codec(store: Records, item: Mapping[str, Any]) -> Any:
    return rec.decode_rollout(item)


def _encode_rollout(store: Records, value: Any) -> dict[str, Any]:
    return rec.encode_rollout(value, instance=store.instance)


def _decode_segment(store: Records, item: Mapping[str, Any]) -> Any:
    return rec.decode_segment(item, instance=store.instance)


def _encode_segment(store: Records, value: Any) -> dict[str, Any]:
    return rec.encode_segment(value, instance=store.instance)


def _decode_summary(store: Records, item: Mapping[str, Any]) -> Any:
    return sm.decode_summary(item)


def _encode_summary(store: Records, value: Any) -> dict[str, Any]:
    return sm.encode_summary(value, instance=store.instance)


def _decode_action(store: Records, item: Mapping[str, Any]) -> Any:
    return rec.decode_action(item)


def _encode_action(store: Records, value: Any) -> dict[str, Any]:
    obj = rec.encode_action(value, instance=store.instance)
    obj["metadata"]["resourceVersion"] = value.meta.version
    return obj


def _decode_request(store: Records, item: Mapping[str, Any]) -> Any:
    return rec.decode_request(item)


def _encode_request(store: Records, value: Any) -> dict[str, Any]:
    return rec.encode_request(value, instance=store.instance)


# What `install` rewrites when the schema moved: each kind read at its old schema, written at the current.
_CODECS = (
    (rec.ROLLOUT, _rollout_codec, _encode_rollout),
    (rec.ACTION, _decode_action, _encode_action),
    (rec.HISTORY, _decode_segment, _encode_segment),
    (rec.STATUS, _decode_summary, _encode_summary),
    (rec.REQUEST, _decode_request, _encode_request),
)
