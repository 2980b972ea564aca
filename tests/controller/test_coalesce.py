"""The coalescing the state of record's watches share (fleet.controller.coalesce): a burst of watch events
is taken in as the newest change of each name, at most once per gap; other events only move the version.
In-process: the watch is a coroutine that puts events as a stream would."""

from __future__ import annotations

import time
from typing import Any

import anyio

from fleet.controller import coalesce


class _Done(Exception):
    pass


def event(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


def test_a_burst_is_taken_in_once_as_the_newest_change_of_each_name_and_the_next_not_before_the_gap() -> None:
    bursts: list[tuple[float, dict[str, coalesce.Change]]] = []
    versions: list[str] = []

    async def main() -> None:
        taken = anyio.Event()

        def take(pending: dict[str, coalesce.Change]) -> None:
            bursts.append((time.monotonic(), pending))
            taken.set()

        c = coalesce.Coalescer(take, gap=0.3)

        async def watch() -> None:
            nonlocal taken
            for kind, name, version in [
                ("ADDED", "a", "1"),
                ("MODIFIED", "a", "2"),
                ("ADDED", "b", "3"),
                ("BOOKMARK", "", "4"),
                ("DELETED", "a", "5"),
            ]:
                versions.append(c.put(kind, event(name, version)))
            versions.append(c.put("BOOKMARK", {"metadata": {}}))
            await taken.wait()
            taken = anyio.Event()
            c.put("MODIFIED", event("b", "6"))
            c.put("MODIFIED", event("c", "7"))
            await taken.wait()
            raise _Done()

        try:
            with anyio.fail_after(10):
                await c.run(watch)
        except* _Done:
            pass

    anyio.run(main)

    assert versions == ["1", "2", "3", "4", "5", ""]
    assert [{n: (k, o["metadata"]["resourceVersion"]) for n, (k, o) in p.items()} for _, p in bursts] == [
        {"a": ("DELETED", "5"), "b": ("ADDED", "3")},
        {"b": ("MODIFIED", "6"), "c": ("MODIFIED", "7")},
    ]
    assert bursts[1][0] - bursts[0][0] >= 0.3


def test_changes_dropped_before_they_are_taken_in_come_as_an_empty_burst() -> None:
    bursts: list[dict[str, coalesce.Change]] = []

    async def main() -> None:
        taken = anyio.Event()

        def take(pending: dict[str, coalesce.Change]) -> None:
            bursts.append(pending)
            taken.set()

        c = coalesce.Coalescer(take, gap=0.0)

        async def watch() -> None:
            c.put("ADDED", event("a", "1"))
            c.drop()
            await taken.wait()
            raise _Done()

        try:
            with anyio.fail_after(10):
                await c.run(watch)
        except* _Done:
            pass

    anyio.run(main)

    assert bursts == [{}]
