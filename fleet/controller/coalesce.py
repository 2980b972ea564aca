"""The coalescing of a watch's events by name, shared by the state of record's watches (docs/scaling.md,
"State of record"): `fleet.controller.following` (the rollout records) and `fleet.controller.summarywatch`
(the shards' status summaries).

Owns: `Coalescer`. `put` keeps each watch event's object (ADDED, MODIFIED, DELETED) as the newest change
of its name, replacing one not taken in yet, and gives the object's resourceVersion back (every event,
BOOKMARK included, moves the stream's version); `run` runs the watch and, beside it, hands what came to
`take` as one burst, at most once per `gap` seconds (a record rewritten many times a second is taken in
once, at its newest version); `drop` forgets what waits (a list has replaced it).

Does not: open or restart streams, decode the objects or decide what a change means (the watches' `take`),
or keep the stream's version (the watches do, from what `put` gives back).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

Change = tuple[str, dict[str, Any]]  # (the watch event's type, the object)


class Coalescer:
    """See the module. `take` gets the burst: name -> its newest change (possibly empty after `drop`)."""

    def __init__(self, take: Callable[[dict[str, Change]], object], *, gap: float) -> None:
        self._take = take
        self.gap = gap
        self._pending: dict[str, Change] = {}  # name -> (type, object), newest
        self._arrived: anyio.Event | None = None

    def put(self, kind: str, obj: dict[str, Any]) -> str:
        """Keep `obj` as its name's newest change (ADDED, MODIFIED, DELETED; other events are not changes)
        and return its resourceVersion ("" when it has none)."""
        meta = obj.get("metadata") or {}
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._pending[str(meta.get("name") or "")] = (kind, obj)
            if self._arrived is not None:
                self._arrived.set()
        return str(meta.get("resourceVersion") or "")

    def drop(self) -> None:
        """Forget the changes not taken in yet."""
        self._pending = {}

    async def run(self, watch: Callable[[], Awaitable[None]]) -> None:
        """Run `watch` (it `put`s what its streams bring) and take the changes in beside it, until
        cancelled or `watch` fails."""
        self._arrived = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._take_in)
            await watch()

    async def _take_in(self) -> None:
        while True:
            assert self._arrived is not None
            await self._arrived.wait()
            self._arrived = anyio.Event()
            pending, self._pending = self._pending, {}
            self._take(pending)
            await anyio.sleep(self.gap)
