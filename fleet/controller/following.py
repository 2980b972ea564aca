"""A follower's watch of the coordinator's rollout records (docs/scaling.md, "State of record").

Owns: `RolloutWatch`, one task beside `Shared`'s period. While this replica does not coordinate, it
watches the instance's rollout ConfigMaps from the resourceVersion of the store's last list of them, and
takes in what each change brings (the record's whole new version) at once: the record into the store
(`ManagedStore.learn`, `forget`), the newest rollout of its bundle into the Conductor (`Conductor.adopt`,
which wakes the clusters whose hold changed). A burst of changes is taken in at most once per `gap`
seconds, the newest version of each record (`fleet.controller.coalesce`: the coordinator may rewrite a
record many times a second while a large rollout goes on). So a follower sends its clusters the revision the moment the coordinator
starts them, not at its next period's list. While it coordinates, the records are its own writes: no
stream is open.

A stream that the server ends is opened again from the last resourceVersion it brought; one that fails
or is too old (410) makes the watch not `live` until `Shared` has listed the rollouts again (it does so
at its next period when the watch is not live, and only every `RELIST` seconds while it is); then the
watch goes on from that list. An unreadable record is reported (`problem`, shown as the state of record's
problem) and the rollout known before stays.

Does not: list the records or decide when (`Shared`), decide or write rollouts (the coordinator's
`Conductor`), or read a record's fields (`fleet.core.records`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from fleet.clients import records as records_client
from fleet.clients import statedb
from fleet.controller import coalesce
from fleet.core import errors
from fleet.core import records as rec

log = logging.getLogger("fleet.shared")

RELIST = 60.0  # while a watch is live, the rollouts are still listed this often (a check, not a need)
STREAM_SECONDS = 300  # asked of the server per stream (it ends the stream then; opened again)
GAP = 0.1  # a burst of changes is taken in at most this often


class Store(Protocol):
    """What the watch needs of `shared.ManagedStore`."""

    records: records_client.Records
    rollouts: dict[tuple[str, str], rec.Rollout]
    listed: str

    def learn(self, r: rec.Rollout) -> None: ...

    def forget(self, bundle: str, revision: str) -> None: ...


Adopt = Callable[[dict[str, statedb.RolloutRow]], object]
Row = Callable[[rec.Rollout], statedb.RolloutRow]


class RolloutWatch:
    """See the module. `run` until cancelled; `following()` says whether to watch now."""

    def __init__(
        self,
        store: Store,
        *,
        following: Callable[[], bool],
        adopt: Adopt,
        row: Row,
        period: float,
        gap: float = GAP,
        stream_seconds: int = STREAM_SECONDS,
    ) -> None:
        self.store = store
        self.following = following
        self._adopt = adopt
        self._row = row
        self.period = period
        self.stream_seconds = stream_seconds
        self.live = False  # a stream goes on from a list: every change of the records reaches this replica
        self.problem: str | None = None  # the last record or stream that could not be read
        self.events = 0  # changes taken in (for tests and metrics)
        self._version = ""  # where the stream goes on from ("": wait for a list)
        self._changes = coalesce.Coalescer(self._take_in, gap=gap)  # what the stream brings, by record name

    async def run(self) -> None:
        await self._changes.run(self._watch)

    async def _watch(self) -> None:
        failures = 0
        while True:
            if not self.following():
                # Coordinating: its own writes. Once it follows again, it goes on from a list made then.
                self.live, self._version = False, ""
                self.store.listed = ""
                await anyio.sleep(self.period)
                continue
            if not self._version:
                self.live = False
                if not self.store.listed:
                    await anyio.sleep(self.period / 4)  # `Shared` lists at its next period
                    continue
                self._version = self.store.listed
            self.live = True
            try:
                await self.store.records.watch_rollouts(
                    self._version, lasting=self.stream_seconds, on_event=self._event
                )
                failures = 0
            except _NotFollowing:
                self._version = ""
            except records_client.Expired as e:
                log.info("state of record: %s; listing the rollouts again", e)
                self._restart()
            except errors.StateError as e:
                failures += 1
                log.info("state of record: %s; watching again after the next list", e)
                self._restart()
                await anyio.sleep(min(self.period * failures, 30.0))

    def _restart(self) -> None:
        """Go on only from a list made after now (`Shared` makes it at once: the watch is not live)."""
        self.live, self._version = False, ""
        self.store.listed = ""

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        if not self.following():
            raise _NotFollowing()  # its own writes from now on: the stream closes
        version = self._changes.put(kind, obj)
        if version:
            self._version = version

    def _take_in(self, pending: dict[str, coalesce.Change]) -> None:
        if self.following():
            self.take(pending.values())

    def take(self, changes: Any) -> list[str]:
        """Take the records' new versions in (see the module); the bundles whose newest rollout changed."""
        bundles: set[str] = set()
        for kind, obj in changes:
            try:
                r = rec.decode_rollout(obj)
            except rec.RecordError as e:
                self.problem = str(e)
                log.warning("state of record: %s", e)
                continue
            if kind == "DELETED":
                self.store.forget(r.bundle, r.revision)
            else:
                self.store.learn(r)
                bundles.add(r.bundle)
            self.events += 1
        newest = rec.latest(r for r in self.store.rollouts.values() if r.bundle in bundles)
        if newest:
            started = time.monotonic()
            self._adopt({b: self._row(r) for b, r in newest.items()})
            log.debug(
                "state of record: %s taken in (%.3fs)", ", ".join(sorted(newest)), time.monotonic() - started
            )
        return sorted(newest)


class _NotFollowing(Exception):
    """This replica coordinates now: the stream is closed."""
