"""When the Conductor (fleet.controller.rollouts) stores its rollouts (docs/rollouts.md, "Restarts"): a cluster
put in flight is held at what it had until its rollout is stored; what rounds observe that decides nothing
yet waits for one later write; decisions made while a write runs are stored by one write after it. In
process, over a real SQLite state store; `save` is the engine's seam that runs each write."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from fleet.clients import statedb
from fleet.controller import rollouts
from fleet.controller.metrics import Metrics
from fleet.core import model
from fleet.core import rollout as ro
from tests.support import placement_builders as pb

OLD, NEW = "a" * 40, "b" * 40
SYNCED = {"web": rollouts.Observed(state=model.State.SYNCED)}
NEWEST = {"web": rollouts.NEWEST}


class Writes:
    """The engine's `save`, counting the writes; `hold()` makes the next ones wait until `release()`."""

    def __init__(self) -> None:
        self.count = 0
        self.waiting = anyio.Event()
        self._gate: anyio.Event | None = None
        self._written = anyio.Event()

    def hold(self) -> None:
        self._gate = anyio.Event()

    def release(self) -> None:
        assert self._gate is not None
        self._gate.set()
        self._gate = None

    async def save(self, write: Callable[[], None]) -> None:
        self.count += 1
        gate = self._gate
        if gate is not None:
            self.waiting.set()
            await gate.wait()
        await anyio.to_thread.run_sync(write)
        self._written.set()
        self._written = anyio.Event()

    async def next(self) -> None:
        """Until the next write has been made."""
        await self._written.wait()


def conductor(tmp: Path, **kw: Any) -> tuple[rollouts.Conductor, statedb.StateStore, Writes, list[str]]:
    store = statedb.StateStore(tmp / "state.db")
    writes, woken = Writes(), []
    c = rollouts.Conductor(
        store=store, metrics=Metrics(), wake=lambda n, _ctx: woken.append(n), save=writes.save, **kw
    )
    return c, store, writes, woken


async def begin(c: rollouts.Conductor, clusters: list[str], *, concurrency: model.Count) -> None:
    spec = model.RolloutSpec(waves=(model.WaveSpec(name="all", max_concurrency=concurrency),))
    web = model.Bundle(**{**pb.bundle("web").__dict__, "rollout": spec})
    await c.begin(
        revision=NEW,
        author=None,
        repo=pb.repo([pb.cluster(n) for n in clusters], [web], revision=NEW),
        placed={"web": {n: f"h-{n}" for n in clusters}},
        waves={"web": ro.Membership(waves=(("all", tuple(clusters)),), errors={})},
        held=lambda cluster, bundle: (OLD, "h0"),
        paused=(),
        context=None,
    )


def stored_phases(store: statedb.StateStore) -> dict[str, str]:
    doc = store.latest_rollouts()["web"].doc["rollout"]
    return {name: m["phase"] for name, m in doc["members"].items()}


def test_a_cluster_put_in_flight_is_held_at_what_it_had_until_its_rollout_is_stored(tmp_path: Path) -> None:
    async def main() -> None:
        c, store, writes, woken = conductor(tmp_path)
        await begin(c, ["c1", "c2"], concurrency=model.Count(1))
        assert woken == ["c1"] and c.hold("web", "c2") == rollouts.Hold("revision", OLD)
        writes.hold()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: c.observed("c1", SYNCED, holds=NEWEST))  # c2's turn: stored, then sent
            await writes.waiting.wait()
            assert c.latest["web"].members["c2"].phase is ro.ClusterPhase.PROGRESSING  # decided
            assert stored_phases(store)["c2"] == "Pending"  # not stored yet
            # A round of c2 now (a drift, a resync) applies what it had, not the new revision.
            assert c.hold("web", "c2") == rollouts.Hold("revision", OLD)
            assert woken == ["c1"]
            writes.release()
        assert stored_phases(store)["c2"] == "Progressing"
        assert c.hold("web", "c2") == rollouts.NEWEST and woken == ["c1", "c2"]

    anyio.run(main)


def test_what_rounds_observe_of_a_wave_in_flight_is_stored_by_one_write_later(tmp_path: Path) -> None:
    clusters = [f"c{i:02d}" for i in range(20)]

    async def main() -> None:
        c, store, writes, woken = conductor(tmp_path, store_delay=0.3)
        await begin(c, clusters, concurrency=model.Count(100, percent=True))
        assert sorted(woken) == clusters and writes.count == 1
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.run)
            for name in clusters[:-1]:
                await c.observed(name, SYNCED, holds=NEWEST)
            assert writes.count == 1  # healthy clusters in a wave still in flight decide nothing yet
            assert c.documents()["web"]["waves"][0]["clusters"]["c00"] == "Healthy"
            assert set(stored_phases(store).values()) == {"Progressing"}
            with anyio.fail_after(5):
                await writes.next()
            assert writes.count == 2
            assert sorted(n for n, p in stored_phases(store).items() if p == "Healthy") == clusters[:-1]
            # The last one completes the rollout: a decision, stored before `observed` returns.
            await c.observed(clusters[-1], SYNCED, holds=NEWEST)
            assert writes.count == 3
            assert store.latest_rollouts()["web"].doc["rollout"]["phase"] == "Completed"
            assert c.documents()["web"]["state"] == "Completed"
            tg.cancel_scope.cancel()

    anyio.run(main)


def test_clusters_put_in_flight_while_a_write_runs_are_stored_together_by_the_next_one(
    tmp_path: Path,
) -> None:
    clusters = [f"c{i}" for i in range(6)]

    async def main() -> None:
        c, store, writes, woken = conductor(tmp_path)
        await begin(c, clusters, concurrency=model.Count(3))
        assert woken == ["c0", "c1", "c2"] and writes.count == 1
        writes.hold()
        async with anyio.create_task_group() as tg:
            # Each round frees a place in flight: c3, c4, c5 start. c3's write runs first, ...
            tg.start_soon(lambda: c.observed("c0", SYNCED, holds=NEWEST))
            await writes.waiting.wait()
            for name in ("c1", "c2"):  # ... the other two rounds' decisions wait for it
                tg.start_soon(lambda name=name: c.observed(name, SYNCED, holds=NEWEST))
            await anyio.sleep(0.2)
            assert writes.count == 2 and woken == ["c0", "c1", "c2"]
            writes.release()
        assert writes.count == 3  # one more write for both
        assert woken[3:] == ["c3", "c4", "c5"]
        assert [stored_phases(store)[n] for n in ("c3", "c4", "c5")] == ["Progressing"] * 3

    anyio.run(main)


def test_observations_waiting_for_a_write_are_stored_when_the_conductor_stops(tmp_path: Path) -> None:
    async def main() -> None:
        c, store, _, _ = conductor(tmp_path, store_delay=3600.0)
        await begin(c, ["c1", "c2"], concurrency=model.Count(2))
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.run)
            await c.observed("c1", SYNCED, holds=NEWEST)
            assert stored_phases(store)["c1"] == "Progressing"
            tg.cancel_scope.cancel()
        assert stored_phases(store)["c1"] == "Healthy"

    anyio.run(main)
