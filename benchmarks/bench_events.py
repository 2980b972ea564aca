"""Benchmark: the CPU of one Kubernetes Event written by `fleet.controller.events.EventWriter`.

Run: ``.venv/bin/python -m benchmarks bench_events`` (``--quick``: 50 clusters). Knob:
``BENCH_EVENTS_CLUSTERS`` (250). The simulated clusters run in this process's `fleet.sim.testing` thread;
what is measured is the CPU of the writer's own thread (`time.thread_time`), not the sim's: N Events, one
per cluster (what a commit that changes every cluster emits), written by one `EventWriter`, four rounds:
the first opens each cluster's Event client, the next two reuse its connection, the last comes after
aiohttp's 15 s keep-alive has closed it (commits further apart than that: every Event opens a connection).

Owns: the benchmark's clusters, writer and printout. Does not: assert anything, or write a result file.
"""

from __future__ import annotations

import os
import sys
import time

import anyio
import httpx

from fleet.clients import kube
from fleet.controller.events import EventWriter, Settings
from fleet.controller.metrics import Metrics
from fleet.core import clusterevents as ce
from fleet.sim import testing

QUICK = "--quick" in sys.argv
CLUSTERS = int(os.environ.get("BENCH_EVENTS_CLUSTERS", "50" if QUICK else "250"))
KEEP_ALIVE_S = 15.0  # aiohttp's default keep-alive of an idle connection


def created(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("fleet_kube_events_total", {"result": "created"}) or 0.0


async def run(sim: testing.SimHandle) -> None:
    kubeconfig = await kube.load_kubeconfig(str(sim.kubeconfig))
    metrics = Metrics()
    writer = EventWriter(
        instance="fleet",
        kubeconfig=kubeconfig,
        kube_settings=kube.Settings(),
        context_of=lambda c: c,
        metrics=metrics,
        settings=Settings(),
    )
    rounds = ("first (clients made)", "warm connection", "warm connection", "after the keep-alive")
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        for i, what in enumerate(rounds):
            if i == len(rounds) - 1:
                await anyio.sleep(KEEP_ALIVE_S + 1)
            began = time.thread_time()
            for c in sim.names:
                writer.emit(
                    ce.Occurrence(
                        cluster=c,
                        regarding=ce.inventory("web", instance="fleet"),
                        reason="Applied",
                        action="Apply",
                        type="Normal",
                        note=f"revision {i}: bundle web: 1 configured",
                        at=1000.0 * (i + 1),
                    )
                )
            with anyio.fail_after(120):
                # A counter to poll, nothing to wait on (100 wake-ups a second: a few ms of CPU, both sides).
                while created(metrics) < CLUSTERS * (i + 1):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            per = 1000 * (time.thread_time() - began) / CLUSTERS
            print(f"{CLUSTERS} Events, {what}: {per:.3f} ms of the writer's CPU per Event", flush=True)
        tg.cancel_scope.cancel()


def main() -> int:
    with testing.serving(clusters=CLUSTERS) as sim:
        with httpx.Client(timeout=10) as client:
            for c in sim.names:
                client.post(sim.url(c) + "/api/v1/namespaces", json={"metadata": {"name": "fleet-system"}})
        anyio.run(run, sim)
    return 0


if __name__ == "__main__":
    sys.exit(main())
