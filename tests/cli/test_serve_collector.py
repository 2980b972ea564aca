"""fleet serve's cycle collector (`fleet.cli.serve.lean_collector`): left as it is until the engine is
ready, then what the process holds is frozen out of its reach and it collects less often (what comes in
the next seconds, the watch caches, frozen too)
(docs/benchmarks.md, "1,000 clusters with two replicas")."""

from __future__ import annotations

import gc

import anyio

from fleet.cli import serve


def test_the_collector_is_made_lean_once_the_engine_is_ready_and_not_before() -> None:
    thresholds = gc.get_threshold()
    gc.unfreeze()

    async def main() -> None:
        with anyio.move_on_after(0.2):  # never ready: it waits and changes nothing
            await serve.lean_collector(lambda: False, poll=0.01, settle=0.0)
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == thresholds
        held = [[i] for i in range(100)]  # what the process holds when it is ready
        await serve.lean_collector(lambda: True, poll=0.01, settle=0.0)
        assert gc.get_freeze_count() >= len(held)
        assert gc.get_threshold() == serve.SERVE_GC_THRESHOLDS

    try:
        anyio.run(main)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_the_collector_is_lean_as_soon_as_the_engine_is_ready_and_what_comes_in_the_settle_is_frozen_too() -> (
    None
):
    thresholds = gc.get_threshold()
    gc.unfreeze()

    async def main() -> None:
        held = [[i] for i in range(100)]  # what the process holds when it is ready
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve.lean_collector(lambda: True, poll=0.01, settle=0.3))
            await anyio.sleep(0.1)  # ready, the settle not over: a commit here runs with the lean collector
            assert gc.get_threshold() == serve.SERVE_GC_THRESHOLDS
            assert not _collectable(held)
            listed = [[i] for i in range(100)]  # what came during the settle (the watch caches' lists)
            assert _collectable(listed)
        assert not _collectable(listed)  # frozen too, once the settle is over

    try:
        anyio.run(main)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _collectable(objects: list[list[int]]) -> bool:
    """Whether any of `objects` is still in the collector's reach (not frozen)."""
    ids = {id(o) for o in objects}
    return any(id(o) in ids for o in gc.get_objects())
