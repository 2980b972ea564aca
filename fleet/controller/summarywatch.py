"""Every replica's watch of the shards' status summaries (docs/scaling.md, "State of record", "Status").

Owns: `SummaryWatch`, one task beside `Shared`'s period. It lists the instance's summaries (at start, once
every `RELIST` seconds, and at once after any gap: a stream that fails, or a resourceVersion too old for
the server, 410), and between lists watches them from the list's resourceVersion, taking in each change
(the summary's whole new version) as it is written: a burst at most once per `gap` seconds, the newest
version of each summary (`fleet.controller.coalesce`), then the whole fleet merged again
(`fleet.core.summaries.merge_status`, handed to `on_merged`). So a replica's status shows another
replica's clusters as soon as their owner wrote them, not at its next period's list. A stream that the
server ends is opened again from the last resourceVersion it brought.

`live` says a stream goes on from a list (every change reaches this replica); while it does not, `Shared`
lists the summaries itself each period (`relist`). A summary that cannot be decoded is never taken as "no
status": a list that meets one fails (the error names the ConfigMap and field); a watch that brings one
keeps the version known before and reports it (`problem`) until a readable version or a list replaces it.
A deleted summary leaves its shard without one: its clusters are shown as unknown, never as gone
(`Shared.whole_fleet`).

Does not: write summaries or decide what they hold (`Shared`), decode them (`fleet.core.summaries`, through
`Records.take_summary`, which keeps unchanged clusters' documents as the objects read before).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio

from fleet.clients import records as records_client
from fleet.controller import coalesce
from fleet.core import errors, summaries
from fleet.core import records as rec

log = logging.getLogger("fleet.shared")

RELIST = 60.0  # while a watch is live, the summaries are still listed this often (a check, not a need)
STREAM_SECONDS = 300  # asked of the server per stream at most (it ends the stream then; opened again)
GAP = 0.1  # a burst of changes is taken in at most this often

Merge = Callable[[Iterable[summaries.Summary]], summaries.Merged]


class SummaryWatch:
    """See the module. `run` until cancelled; `relist` from `Shared` while not `live`."""

    def __init__(
        self,
        records: records_client.Records,
        *,
        merge: Merge,
        on_merged: Callable[[summaries.Merged], object],
        period: float,
        relist_every: float = RELIST,
        gap: float = GAP,
        stream_seconds: int = STREAM_SECONDS,
    ) -> None:
        self.records = records
        self._merge = merge
        self._on_merged = on_merged
        self.period = period
        self.relist_every = relist_every
        self.stream_seconds = stream_seconds
        self.live = False  # a stream goes on from a list: every change of the summaries reaches this replica
        self.events = 0  # changes taken in (for tests)
        self.lists = 0  # lists made (for tests)
        self.known: dict[str, summaries.Summary] = {}  # name -> the summary as last read
        self.unreadable: dict[str, str] = {}  # name -> why the version a watch brought cannot be read
        self._version = ""  # where the stream goes on from ("": list first)
        self._listed_at = 0.0  # monotonic time of the last list
        self._changes = coalesce.Coalescer(self._take_in, gap=gap)  # what the stream brings, by name

    @property
    def problem(self) -> str | None:
        return "; ".join(v for _, v in sorted(self.unreadable.items())) or None

    async def relist(self) -> summaries.Merged:
        """List every summary and merge them (`on_merged`); the watch goes on from this list. Raises
        `errors.StateError` (a RecordError naming an unreadable summary) and keeps what it knew then."""
        found, version = await self.records.summaries_at()
        self.lists += 1
        self.known = {s.meta.name: s for s in found}
        self.unreadable = {}
        self._changes.drop()
        self._version, self._listed_at = version, time.monotonic()
        merged = self._merge(found)
        self._on_merged(merged)
        return merged

    async def run(self) -> None:
        await self._changes.run(self._watch)

    async def _watch(self) -> None:
        failures = 0
        while True:
            due = self._listed_at + self.relist_every - time.monotonic()
            if not self._version or due <= 0:
                self.live = False
                try:
                    await self.relist()
                except errors.StateError as e:
                    failures += 1
                    log.info("state of record: %s; listing the status summaries again later", e)
                    await anyio.sleep(min(self.period * failures, 30.0))
                    continue
                due = self.relist_every
            self.live = True
            try:
                await self.records.watch_summaries(
                    self._version, lasting=max(1, min(self.stream_seconds, int(due))), on_event=self._event
                )
                failures = 0
            except records_client.Expired as e:
                log.info("state of record: %s; listing the status summaries again", e)
                self.live, self._version = False, ""
            except errors.StateError as e:
                failures += 1
                log.info("state of record: %s; listing the status summaries again", e)
                self.live, self._version = False, ""
                await anyio.sleep(min(self.period * (failures - 1), 30.0))

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        version = self._changes.put(kind, obj)
        if version:
            self._version = version

    def _take_in(self, pending: dict[str, coalesce.Change]) -> None:
        if pending:
            self.take(pending.items())

    def take(self, changes: Iterable[tuple[str, coalesce.Change]]) -> None:
        """Take the summaries' new versions in (see the module) and merge the whole fleet again."""
        for name, (kind, obj) in changes:
            self.events += 1
            if kind == "DELETED":
                self.known.pop(name, None)
                self.unreadable.pop(name, None)
                self.records.forget_summary(name)
                continue
            try:
                s = self.records.take_summary(obj)
            except rec.RecordError as e:
                self.unreadable[name] = str(e)
                log.warning("state of record: %s", e)
                continue
            self.known[name] = s
            self.unreadable.pop(name, None)
        self._on_merged(self._merge(self.known.values()))
