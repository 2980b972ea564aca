"""Benchmark: the watch layer over 100 simulated clusters, 20 managed objects each.

Run: ``.venv/bin/python -m benchmarks.bench_watch`` (or ``python -m benchmarks`` for every benchmark).
Options through the environment: ``BENCH_WATCH_CLUSTERS`` (100), ``BENCH_WATCH_EDITS`` (200),
``BENCH_WATCH_IDLE`` (seconds of the idle window, 70: more than the sim's 60 s bookmark interval),
``BENCH_WATCH_TLS=1`` (``fleet sim --tls``: HTTPS with a CA in the kubeconfig, as real kubeconfigs have;
results in ``watch-tls.json``).

The simulated clusters run in their own process (``fleet sim --clusters 100 --kubeconfig-out F``). This
process applies 20 objects per cluster as fleet does (16 ConfigMaps, 2 Secrets, 2 Deployments:
``plan.marked``, server-side apply), then runs one `watch.ClusterWatch` per cluster with the default
settings (3 kinds: 3 streams per cluster, 300 in all). Measured:

- drift repair latency: another writer changes a field fleet sets (a merge patch as field manager
  ``bench-editor``), one edit at a time on a random cluster and object; from just before the edit is sent
  to the moment fleet's repair apply has returned (the value is restored on the server). Targets: p50
  under 200 ms, p99 under 1 s;
- memory per watched cluster: growth of this process's RSS from before the first client was made to
  when every stream is open (kube client, discovery, caches and streams included). Target under 250 KB;
- idle CPU of the open streams: this process's CPU time over an idle window (bookmarks and health
  reports only), as a percentage of one core. Target under 3%. The sim's own CPU over the same window is
  reported too.

Writes ``benchmarks/results/watch.json`` and prints a table.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import random
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import yaml

from fleet.clients import kube
from fleet.cluster import apply, watch
from fleet.core import drift, model, plan

CLUSTERS = int(os.environ.get("BENCH_WATCH_CLUSTERS", "100"))
EDITS = int(os.environ.get("BENCH_WATCH_EDITS", "200"))
IDLE_SECONDS = float(os.environ.get("BENCH_WATCH_IDLE", "70"))
TLS = os.environ.get("BENCH_WATCH_TLS", "") not in ("", "0")
NS = "bench"
INSTANCE = "fleet"
TARGETS = {"p50_ms": 200.0, "p99_ms": 1000.0, "kb_per_cluster": 250.0, "idle_cpu_percent": 3.0}
RESULTS = Path(__file__).resolve().parent / "results" / ("watch-tls.json" if TLS else "watch.json")


def objects() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(16):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"config-{i}", "namespace": NS},
                "data": {"mode": "safe", "index": str(i), "payload": "x" * 200},
            }
        )
    for i in range(2):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"secret-{i}", "namespace": NS},
                "stringData": {"token": f"bench-token-{i}"},
            }
        )
    for i in range(2):
        labels = {"app": f"web-{i}"}
        out.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"web-{i}", "namespace": NS, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
                    },
                },
            }
        )
    return out


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def editor_tls(kubeconfig: Path) -> ssl.SSLContext | bool:
    """The other writer trusts the sim's CA (one CA for every cluster) when it serves TLS."""
    doc = yaml.safe_load(kubeconfig.read_text())
    data = doc["clusters"][0]["cluster"].get("certificate-authority-data")
    if not data:
        return True
    return ssl.create_default_context(cadata=base64.b64decode(data).decode())


async def start_sim(tmp: Path) -> tuple[anyio.abc.Process, Path]:
    kubeconfig = tmp / "kubeconfig"
    cmd = [
        sys.executable,
        "-m",
        "fleet.cli",
        "sim",
        "--clusters",
        str(CLUSTERS),
        "--kubeconfig-out",
        str(kubeconfig),
        *(["--tls"] if TLS else []),
    ]
    proc = await anyio.open_process(cmd, stderr=None)
    assert proc.stdout is not None
    buffer = b""
    with anyio.fail_after(120):
        while b"\n" not in buffer:
            buffer += await proc.stdout.receive()
    assert buffer.startswith(b"ready"), buffer
    return proc, kubeconfig


async def setup_cluster(client: kube.Client, desired: Mapping[model.ObjectRef, Mapping[str, Any]]) -> None:
    await client.create(apply.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    types = await client.types()
    for ref, obj in desired.items():
        rt = apply.resolve(types, ref)
        assert rt is not None
        await client.apply(rt, obj, force=True)


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-watch-") as tmpdir:
        proc, kubeconfig = await start_sim(Path(tmpdir))
        try:
            return await measure(proc, kubeconfig)
        finally:
            proc.terminate()
            with anyio.move_on_after(10):
                await proc.wait()


async def measure(proc: anyio.abc.Process, kubeconfig: Path) -> dict[str, Any]:
    kc = await kube.load_kubeconfig(str(kubeconfig))
    names = sorted(kc.contexts)[:CLUSTERS]
    desired_by = {}
    for name in names:
        target = plan.Target("bench", desired=model.DesiredSet("bench", name, tuple(objects()), "h"))
        desired_by[name] = drift.desired_objects({"bench": target}, instance=INSTANCE)
    gc.collect()
    rss_before = rss_kb()
    settings = kube.Settings()
    clients = {n: kube.Client(cluster=n, context=kc.context(n), settings=settings) for n in names}
    limiter = anyio.CapacityLimiter(10)
    t0 = time.perf_counter()

    async def setup(name: str) -> None:
        async with limiter:
            await setup_cluster(clients[name], desired_by[name])

    async with anyio.create_task_group() as tg:
        for n in names:
            tg.start_soon(setup, n)
    setup_seconds = time.perf_counter() - t0
    gc.collect()
    rss_setup = rss_kb()

    restored: dict[tuple[str, model.ObjectRef], float] = {}
    waiters: dict[tuple[str, model.ObjectRef], anyio.Event] = {}

    def on_repair(batch: watch.RepairBatch) -> None:
        now = time.perf_counter()
        for change in batch.changes.changes:
            if change.action in (model.Action.CONFIGURED, model.Action.CREATED):
                key = (batch.cluster, change.ref)
                restored[key] = now
                if key in waiters:
                    waiters[key].set()

    health: dict[str, dict[str, Any]] = {}

    def on_health(cluster: str, **fields: Any) -> None:
        health[cluster] = fields

    watches = {
        n: watch.ClusterWatch(
            clients[n],
            instance=INSTANCE,
            desired=lambda n=n: desired_by[n],  # type: ignore[misc]
            on_health=on_health,
            on_repair=on_repair,
            kinds=drift.kinds(desired_by[n]),
        )
        for n in names
    }
    result: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        for w in watches.values():
            tg.start_soon(w.run)
        t1 = time.perf_counter()
        with anyio.fail_after(120):
            while True:
                if sum(w.health.streams for w in watches.values()) >= 3 * len(names):
                    break
                await anyio.sleep(0.1)
        open_seconds = time.perf_counter() - t1
        await anyio.sleep(2.0)
        gc.collect()
        rss_open = rss_kb()
        repairs_at_start = sum(w.repairs for w in watches.values())

        # Idle: nothing changes; only bookmarks and health reports.
        self_cpu0, sim_cpu0, wall0 = time.process_time(), cpu_seconds(proc.pid), time.perf_counter()
        await anyio.sleep(IDLE_SECONDS)
        wall = time.perf_counter() - wall0
        idle_cpu = 100.0 * (time.process_time() - self_cpu0) / wall
        sim_idle_cpu = 100.0 * (cpu_seconds(proc.pid) - sim_cpu0) / wall

        # Drift: one edit at a time by another writer, timed until fleet's repair has returned.
        rng = random.Random(7)
        latencies: list[float] = []
        configmaps = [r for r in desired_by[names[0]] if r.kind == "ConfigMap"]
        async with httpx.AsyncClient(timeout=10, verify=editor_tls(kubeconfig)) as editor:
            for i in range(EDITS):
                name = rng.choice(names)
                ref = rng.choice(configmaps)
                server = kc.context(name).server
                url = f"{server}/api/v1/namespaces/{NS}/configmaps/{ref.name}"
                key = (name, ref)
                waiters[key] = anyio.Event()
                restored.pop(key, None)
                started = time.perf_counter()
                resp = await editor.patch(
                    url,
                    params={"fieldManager": "bench-editor"},
                    headers={"Content-Type": "application/merge-patch+json"},
                    content=json.dumps({"data": {"mode": f"edited-{i}"}}).encode(),
                )
                assert resp.status_code == 200, resp.text
                with anyio.fail_after(10):
                    await waiters[key].wait()
                latencies.append((restored[key] - started) * 1000.0)
                del waiters[key]
                await anyio.sleep(0.02)
        check = await clients[names[0]].get(
            kube.ResourceType("", "v1", "ConfigMap", "configmaps", True), namespace=NS, name="config-0"
        )
        assert check is not None and check["data"]["mode"] == "safe"
        reconnects = sum(w.health.reconnects for w in watches.values())
        relists = sum(w.health.relists for w in watches.values())
        tg.cancel_scope.cancel()
    for c in clients.values():
        await c.aclose()
    kb = (rss_open - rss_before) / len(names)
    kb_watch = (rss_open - rss_setup) / len(names)
    result = {
        "clusters": len(names),
        "objects_per_cluster": len(objects()),
        "streams": 3 * len(names),
        "setup_seconds": round(setup_seconds, 2),
        "streams_open_seconds": round(open_seconds, 2),
        "repairs_at_start": repairs_at_start,
        "edits": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "rss_before_kb": rss_before,
        "rss_open_kb": rss_open,
        "rss_setup_kb": rss_setup,
        "kb_per_cluster": round(kb, 1),
        "kb_per_cluster_watch_only": round(kb_watch, 1),
        "tls": TLS,
        "idle_seconds": round(wall, 1),
        "idle_cpu_percent": round(idle_cpu, 3),
        "sim_idle_cpu_percent": round(sim_idle_cpu, 3),
        "reconnects": reconnects,
        "relists": relists,
        "targets": TARGETS,
    }
    return result


def main() -> None:
    result = anyio.run(run)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        (
            "drift repair p50",
            f"{result['p50_ms']} ms",
            f"< {TARGETS['p50_ms']:g} ms",
            result["p50_ms"] < TARGETS["p50_ms"],
        ),
        (
            "drift repair p99",
            f"{result['p99_ms']} ms",
            f"< {TARGETS['p99_ms']:g} ms",
            result["p99_ms"] < TARGETS["p99_ms"],
        ),
        (
            "memory per watched cluster",
            f"{result['kb_per_cluster']} KB",
            f"< {TARGETS['kb_per_cluster']:g} KB",
            result["kb_per_cluster"] < TARGETS["kb_per_cluster"],
        ),
        (
            "idle CPU (watching process)",
            f"{result['idle_cpu_percent']} %",
            f"< {TARGETS['idle_cpu_percent']:g} %",
            result["idle_cpu_percent"] < TARGETS["idle_cpu_percent"],
        ),
    ]
    print(
        f"watch: {result['clusters']} clusters x {result['objects_per_cluster']} objects, "
        f"{result['streams']} streams (open in {result['streams_open_seconds']} s), {result['edits']} edits"
    )
    print(f"{'measure':<30} {'value':>12}  {'target':<10} verdict")
    for label, value, target, ok in rows:
        print(f"{label:<30} {value:>12}  {target:<10} {'OK' if ok else 'OVER TARGET'}")
    print(
        f"(memory of the watch layer alone, clients already open: {result['kb_per_cluster_watch_only']} KB "
        f"per cluster; TLS: {result['tls']})"
    )
    print(
        f"(max {result['max_ms']} ms; sim idle CPU {result['sim_idle_cpu_percent']} %; "
        f"reconnects {result['reconnects']}, relists {result['relists']}, repairs at start "
        f"{result['repairs_at_start']}; results in {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS})"
    )


if __name__ == "__main__":
    main()
