"""The Kubernetes Event writer (fleet.controller.events) against `fleet sim`: never in the reconcile's way."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest

from fleet.clients import kube
from fleet.cluster import apply
from fleet.controller.events import EventWriter, Settings
from fleet.controller.metrics import Metrics
from fleet.core import clusterevents as ce
from fleet.sim import testing
from tests.support import faultproxy

EVENTS = "/apis/events.k8s.io/v1/namespaces/fleet-system/events"


def occurrence(
    cluster: str, *, at: float, note: str = "revision abc: bundle web: 1 created"
) -> ce.Occurrence:
    return ce.Occurrence(
        cluster=cluster,
        regarding=ce.inventory("web", instance="fleet"),
        reason="Applied",
        action="Apply",
        type="Normal",
        note=note,
        at=at,
    )


async def writer(sim: testing.SimHandle, metrics: Metrics, settings: Settings) -> EventWriter:
    kubeconfig = await kube.load_kubeconfig(str(sim.kubeconfig))
    return EventWriter(
        instance="fleet",
        kubeconfig=kubeconfig,
        kube_settings=kube.Settings(),
        context_of=lambda c: c,
        metrics=metrics,
        settings=settings,
    )


def sample(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("fleet_kube_events_total", {"result": result})
    return value or 0.0


async def events_on(sim: testing.SimHandle, cluster: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(sim.url(cluster) + EVENTS)
        resp.raise_for_status()
        items: list[dict[str, Any]] = resp.json()["items"]
        return items


async def until(check: Callable[[], Awaitable[bool]], *, within: float) -> None:
    """Poll the cluster (or the metrics) until `check` holds: they are outside this event loop."""
    with anyio.fail_after(within):
        while True:
            if await check():
                return
            await anyio.sleep(0.02)


def namespace(sim: testing.SimHandle, *clusters: str) -> None:
    for c in clusters:
        httpx.post(sim.url(c) + "/api/v1/namespaces", json={"metadata": {"name": "fleet-system"}}, timeout=10)


async def _true(value: bool) -> bool:
    return value


async def _some(items: Awaitable[list[dict[str, Any]]]) -> bool:
    return bool(await items)


def test_an_event_goes_out_on_the_connection_the_rounds_client_left_idle_and_leaves_it_open(
    fleet_sim: testing.SimHandle,
) -> None:
    # A commit's round writes, then its Event follows: on a connection of its own, each cluster's first
    # commit after a start (or after the keep-alive) paid a second TCP and TLS handshake.
    namespace(fleet_sim, "sim-001")
    metrics = Metrics()
    with faultproxy.serving(fleet_sim.kubeconfig_dict, clusters=["sim-001"]) as proxy:
        kc = kube.parse_kubeconfig([(str(proxy.kubeconfig), proxy.kubeconfig.read_bytes())])
        rounds = kube.Client(cluster="sim-001", context=kc.context("sim-001"), settings=kube.Settings())

        async def main() -> None:
            w = EventWriter(
                instance="fleet",
                kubeconfig=kc,
                kube_settings=kube.Settings(),
                context_of=lambda c: c,
                connection_of=lambda c: rounds if c == "sim-001" else None,
                metrics=metrics,
                settings=Settings(update_every=0.5),
            )
            try:
                await rounds.get(apply.CONFIGMAP, namespace="default", name="nothing-here")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(w.run)
                    w.emit(occurrence("sim-001", at=1.0))
                    await until(lambda: _true(sample(metrics, "created") >= 1), within=10)
                    tg.cancel_scope.cancel()  # the writer closes its clients: not the rounds' connections
                await rounds.get(apply.CONFIGMAP, namespace="default", name="nothing-here")
            finally:
                await rounds.aclose()

        anyio.run(main)
        hits = [(h.method, h.path, h.peer) for h in proxy.hits]
    assert [(m, "events" in p) for m, p, _ in hits] == [("GET", False), ("POST", True), ("GET", False)]
    peers = {peer for _, _, peer in hits}
    assert None not in peers
    assert len(peers) == 1, f"the Event or the next request came on a new connection: {hits}"


def test_emitting_never_waits_and_a_full_queue_drops_the_oldest(fleet_sim: testing.SimHandle) -> None:
    namespace(fleet_sim, "sim-001")
    metrics = Metrics()

    async def main() -> None:
        w = await writer(fleet_sim, metrics, Settings(queue=10, update_every=0.5))
        began = time.perf_counter()
        for i in range(5_000):
            w.emit(occurrence("sim-001", at=1000.0 + i, note=f"revision {i}: bundle web: 1 created"))
        assert time.perf_counter() - began < 0.5  # no I/O on the caller's path
        assert sample(metrics, "dropped") == 4_990
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await until(lambda: _true(sample(metrics, "created") >= 10), within=20)
            tg.cancel_scope.cancel()
        notes = sorted(e["note"] for e in await events_on(fleet_sim, "sim-001"))
        assert notes == sorted(f"revision {i}: bundle web: 1 created" for i in range(4_990, 5_000))

    anyio.run(main)


@pytest.mark.slow  # waits out the event writes' deadline
def test_a_cluster_whose_event_writes_hang_holds_up_no_other_and_each_write_gives_up_in_time(
    fleet_sim: testing.SimHandle,
) -> None:
    namespace(fleet_sim, "sim-001", "sim-002")
    fleet_sim.faults_sync("sim-001", {"hang": True, "method": "POST", "path": "events"})
    metrics = Metrics()

    async def main() -> None:
        w = await writer(fleet_sim, metrics, Settings(timeout=2.0, update_every=0.5))
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            began = time.monotonic()
            w.emit(occurrence("sim-001", at=1.0))
            w.emit(occurrence("sim-002", at=1.0))
            await until(lambda: _some(events_on(fleet_sim, "sim-002")), within=10)
            assert time.monotonic() - began < 1.5  # not behind sim-001's hanging write
            await until(lambda: _true(sample(metrics, "failed") >= 1), within=10)
            assert 1.9 < time.monotonic() - began < 6  # sim-001's write gave up after its deadline
            tg.cancel_scope.cancel()

    anyio.run(main)
    fleet_sim.clear_faults_sync("sim-001")


def test_a_repeating_occurrence_is_one_event_whose_series_is_brought_up_to_date(
    fleet_sim: testing.SimHandle,
) -> None:
    namespace(fleet_sim, "sim-002")
    metrics = Metrics()

    async def main() -> None:
        w = await writer(fleet_sim, metrics, Settings(update_every=0.5))
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            for i in range(200):  # a drift fight: the same repair again and again
                w.emit(occurrence("sim-002", at=1000.0 + i * 0.1))
                await anyio.sleep(0.005)
            with anyio.fail_after(10):
                while True:
                    items = await events_on(fleet_sim, "sim-002")
                    if items and (items[0].get("series") or {}).get("count") == 200:
                        break
                    await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
        assert len(items) == 1
        assert items[0]["series"]["lastObservedTime"] == ce.micro_time(1000.0 + 199 * 0.1)
        # One create and a few updates, never one write per occurrence.
        assert sample(metrics, "created") == 1 and 1 <= sample(metrics, "updated") <= 6

    anyio.run(main)


def test_an_event_of_a_cluster_this_replica_may_not_write_to_now_is_not_sent_and_counted_failed(
    fleet_sim: testing.SimHandle,
) -> None:
    # Its client was made while the replica owned the cluster; the ownership is asked again right before
    # each write (docs/scaling.md "Fenced writes").
    namespace(fleet_sim, "sim-001")
    metrics = Metrics()
    owns = [True]

    async def main() -> None:
        kubeconfig = await kube.load_kubeconfig(str(fleet_sim.kubeconfig))
        w = EventWriter(
            instance="fleet",
            kubeconfig=kubeconfig,
            kube_settings=kube.Settings(),
            context_of=lambda c: c,
            metrics=metrics,
            settings=Settings(update_every=0.0),
            may_write=lambda c: owns[0],
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            w.emit(occurrence("sim-001", at=1000.0))
            await until(lambda: _some(events_on(fleet_sim, "sim-001")), within=10)
            owns[0] = False
            w.emit(occurrence("sim-001", at=1001.0, note="revision def: bundle web: 1 configured"))
            await until(lambda: _true(sample(metrics, "failed") == 1), within=10)
            tg.cancel_scope.cancel()
        items = await events_on(fleet_sim, "sim-001")
        assert [i["note"] for i in items] == ["revision abc: bundle web: 1 created"]

    anyio.run(main)
