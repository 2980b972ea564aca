"""Every replica watches the shards' status summaries (fleet.controller.summarywatch): what one replica writes
of its clusters is in the other's status as it is written, not at its next list; a gap in the stream (a 410)
is mended by a list. In-process, two replicas over real HTTP against `fleet sim` as the management cluster."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.core import records as rec
from fleet.sim import testing
from tests.support.inprocess import (
    REV,
    Owner,
    Replica,
    close,
    management_sim,
    replica,
    two_clusters_on_two_shards,
    until,
)

__all__ = ["management_sim"]  # the fixture `sim`

pytestmark = pytest.mark.slow  # seconds of real time: the replicas' own tasks


def doc(state: str) -> dict[str, Any]:
    return {"state": state, "revision": REV, "bundles": {"web": {"state": state, "revision": REV}}}


def shown(r: Replica, cluster: str, known: dict[str, dict[str, Any]]) -> str | None:
    """The state of `cluster` in `r`'s status document (`GET /api/v1/status`)."""
    whole = r.shared.whole_fleet({"errors": [], "clusters": {}}, known=known)
    return whole["clusters"].get(cluster, {}).get("state")


def test_a_summary_one_replica_writes_is_in_the_other_replicas_status_as_it_is_written_not_at_its_next_list(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    # Each replica listed every summary once per retry period (2 s by default): another replica's clusters
    # showed in its status up to a period after their owner wrote them. Here the period is a minute: only
    # a watch brings the summary in time.
    c1, c2 = two_clusters_on_two_shards()
    known = {c1: doc("Pending"), c2: doc("Pending")}

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1}), coordinator=False), period=60.0)
        state = {"now": "Synced"}
        a.shared._documents = lambda _wanted: {c1: doc(state["now"])}
        b.shared._documents = lambda _wanted: {c2: doc("Synced")}
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(b.shared.run)  # writes and lists now, then once a minute
                await until(lambda: 1 in b.shared.merged.writers, within=10, what="b's first period")
                assert 0 in b.shared.merged.missing  # a has written nothing yet
                await a.shared.step()  # a writes shard 0's summary: c1 Synced
                took = await until(
                    lambda: shown(b, c1, known) == "Synced", within=10, what="a's summary in b's status"
                )
                print(f"a's summary written -> in b's status: {took:.2f}s")
                assert 0 not in b.shared.merged.missing
                state["now"] = "Failed"  # and a change of it, as it is written
                await a.shared.step()
                await until(
                    lambda: shown(b, c1, known) == "Failed", within=10, what="a's change in b's status"
                )
                assert b.shared.problem is None
                tg.cancel_scope.cancel()
        finally:
            await close(a, b)

    anyio.run(main)


def test_a_summary_written_while_the_watch_was_down_and_the_history_compacted_is_listed_again_after_the_410(
    sim: testing.SimHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleet.shared")
    c1, c2 = two_clusters_on_two_shards()
    known = {c1: doc("Pending"), c2: doc("Pending")}

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        # b coordinates: it opens no watch of the rollouts, so the faults below meet its summaries' stream.
        b = await replica(sim, tmp_path, Owner("b", frozenset({1}), coordinator=True), period=60.0)
        a.shared._documents = lambda _wanted: {c1: doc("Synced")}
        b.shared._documents = lambda _wanted: {c2: doc("Synced")}
        watch = b.shared.summary_watch
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(b.shared.run)
                await until(lambda: watch.live and 1 in b.shared.merged.writers, within=10, what="b watches")
                lists = watch.lists
                # b's stream closes; the next one reaches the server only 1.5 s later. Meanwhile a writes its
                # summary and the server forgets the history b's stream would go on from: a 410.
                await sim.faults("mgmt", {"latencyMs": 1500, "watch": True, "count": 1})
                await sim.faults("mgmt", {"dropWatches": True, "count": 0})
                await a.shared.step()
                await sim.compact("mgmt")
                await until(
                    lambda: shown(b, c1, known) == "Synced", within=10, what="a's summary after the 410"
                )
                assert watch.lists == lists + 1  # one list, at once: not the period's (a minute)
                assert "too old (410); listing the status summaries again" in caplog.text
                await until(lambda: watch.live, within=10, what="b watches again")
                tg.cancel_scope.cancel()
        finally:
            await close(a, b)

    anyio.run(main)


def test_a_summary_the_watch_brings_that_cannot_be_read_is_reported_by_name_and_the_version_before_kept(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    c1, c2 = two_clusters_on_two_shards()
    known = {c1: doc("Pending"), c2: doc("Pending")}

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1}), coordinator=False), period=0.2)
        a.shared._documents = lambda _wanted: {c1: doc("Synced")}
        b.shared._documents = lambda _wanted: {c2: doc("Synced")}
        watch = b.shared.summary_watch
        try:
            await a.shared.step()
            async with anyio.create_task_group() as tg:
                tg.start_soon(b.shared.run)
                await until(
                    lambda: watch.live and shown(b, c1, known) == "Synced", within=10, what="b watches"
                )
                # Shard 0's summary is rewritten with a broken field (by hand, say).
                name = rec.name_for(rec.STATUS, instance="fleet", shard=0)
                path = f"/api/v1/namespaces/{rec.NAMESPACE}/configmaps/{name}"
                client = a.store.records.client
                _, found = await client.request("GET", path, what=name)
                found["data"]["clusters.json"] = "{not json"
                await client.request("PUT", path, what=name, body=found)
                await until(lambda: "clusters.json" in (b.shared.problem or ""), within=10, what="reported")
                assert f"ConfigMap/{rec.NAMESPACE}/{name}" in (b.shared.problem or "")
                assert shown(b, c1, known) == "Synced"  # never taken as "no status"
                whole = b.shared.whole_fleet({"errors": [], "clusters": {}}, known=known)
                assert any("clusters.json" in e["message"] for e in whole["errors"])
                tg.cancel_scope.cancel()
        finally:
            await close(a, b)

    anyio.run(main)
