"""Benchmark of `fleet sim`: idle cost of many clusters with open watches, and request throughput.

What it measures (all against the real `fleet sim` CLI process, from separate client processes that use
aiohttp so the client is not the bottleneck):
- idle: 200 clusters, each with 5 open watches (allowWatchBookmarks, as controllers open them): the
  server's CPU (percent of one core, from /proc utime+stime) over a quiet window, and its RSS;
- throughput across 50 clusters: small ConfigMap creates (POST), gets, server-side apply creates and
  server-side apply updates (each changes a value, so none is a no-op), each for a fixed duration at a
  fixed client concurrency; requests/s as the client counted them, and the server's CPU meanwhile (also
  per request: on a busy 2-core machine req/s depends on what else runs, CPU per request much less);
- the server's CPU per server-side apply with no watch open (the applies run once before the watches
  are opened, then again with them), and per watch event delivered: the extra CPU of an apply update
  with the watches open (each update reaches the WATCHES_PER_CLUSTER watches of its cluster), divided by
  the events delivered.

Run: ``.venv/bin/python -m benchmarks bench_sim`` (or ``make bench``). Writes
``benchmarks/results/sim.json`` and prints a table. Knobs: FLEET_BENCH_SIM_CLUSTERS (200),
FLEET_BENCH_SIM_IDLE_SECONDS (10), FLEET_BENCH_SIM_LOAD_SECONDS (5).

CPU time on a shared machine varies by tens of percent from run to run; for comparing two versions of
the sim, ``.venv/bin/python -m benchmarks.bench_sim instructions [N]`` counts the instructions the sim
executes (valgrind's callgrind, instrumenting only while the requests run; about two minutes, not part of
``make bench``): one cluster, N (100) sequential requests of each kind from one keep-alive connection:
gets, server-side apply creates and updates of a small ConfigMap, ``events.k8s.io/v1`` Event creates, and
the apply updates again with 4 watches open on the ConfigMaps (the difference, divided by 4, is the
cost of one watch event delivered). Prints instructions per request; writes
``benchmarks/results/sim-instructions.json``.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

CLUSTERS = int(os.environ.get("FLEET_BENCH_SIM_CLUSTERS", "200"))
WATCHES_PER_CLUSTER = 5
LOAD_CLUSTERS = 50
IDLE_SECONDS = float(os.environ.get("FLEET_BENCH_SIM_IDLE_SECONDS", "10"))
LOAD_SECONDS = float(os.environ.get("FLEET_BENCH_SIM_LOAD_SECONDS", "5"))
CONCURRENCY = 64
RESULTS = Path(__file__).resolve().parent / "results"
CM = "/api/v1/namespaces/default/configmaps"
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _servers(kubeconfig: Path) -> list[str]:
    doc = yaml.safe_load(kubeconfig.read_text())
    return [c["cluster"]["server"] for c in doc["clusters"]]


# ----- client processes -------------------------------------------------------------------------


async def _hold_watches(kubeconfig: Path) -> None:
    import aiohttp

    urls = _servers(kubeconfig)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        opened = 0
        ready = asyncio.Event()
        total = len(urls) * WATCHES_PER_CLUSTER

        async def one(url: str) -> None:
            nonlocal opened
            params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "3600"}
            async with session.get(url + CM, params=params) as resp:
                opened += 1
                if opened == total:
                    ready.set()
                async for _ in resp.content:
                    pass

        tasks = [asyncio.create_task(one(u)) for u in urls for _ in range(WATCHES_PER_CLUSTER)]
        await asyncio.wait_for(ready.wait(), 120)
        print(f"watching {opened}", flush=True)
        await asyncio.gather(*tasks)


async def _load(kubeconfig: Path, op: str, seconds: float) -> dict[str, Any]:
    import aiohttp

    urls = _servers(kubeconfig)[:LOAD_CLUSTERS]
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=30)
    # Names and values unique to this run: a later load of the same op creates and changes, never repeats.
    counter = itertools.count(os.getpid() * 1_000_000)
    done = 0
    errors = 0
    apply_headers = {"Content-Type": "application/apply-patch+yaml"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if op in ("get", "apply-update"):
            for i, url in enumerate(urls):
                body = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "target"},
                    "data": {"n": "0"},
                }
                async with session.post(url + CM, json=body) as r:
                    assert r.status in (201, 409), await r.text()
                del i

        async def request() -> int:
            n = next(counter)
            url = urls[n % len(urls)]
            if op == "create":
                body = {"metadata": {"name": f"c{n}"}, "data": {"k": "v"}}
                async with session.post(url + CM, json=body) as r:
                    await r.read()
                    return r.status
            if op == "get":
                async with session.get(url + CM + "/target") as r:
                    await r.read()
                    return r.status
            name = f"a{n}" if op == "apply-create" else "target"
            doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"n": str(n)}}
            async with session.patch(
                url + CM + "/" + name,
                data=json.dumps(doc),
                headers=apply_headers,
                params={"fieldManager": "bench", "force": "true"},
            ) as r:
                await r.read()
                return r.status

        deadline = time.monotonic() + seconds
        started = time.monotonic()

        async def worker() -> None:
            nonlocal done, errors
            while time.monotonic() < deadline:
                code = await request()
                if code >= 300:
                    errors += 1
                done += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.monotonic() - started
    return {"op": op, "requests": done, "errors": errors, "seconds": elapsed, "per_second": done / elapsed}


# ----- orchestration ----------------------------------------------------------------------------


def _measure_idle(pid: int) -> tuple[float, float]:
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    time.sleep(IDLE_SECONDS)
    cpu1, t1 = _cpu_seconds(pid), time.monotonic()
    return 100.0 * (cpu1 - cpu0) / (t1 - t0), _rss_mb(pid)


def _run_load(pid: int, kubeconfig: Path, op: str) -> dict[str, Any]:
    """One load of `op` in a client process; its result with the server's CPU meanwhile."""
    cpu0 = _cpu_seconds(pid)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_sim", "load", str(kubeconfig), op, str(LOAD_SECONDS)],
        capture_output=True,
        text=True,
        timeout=LOAD_SECONDS + 120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load {op} failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    used = _cpu_seconds(pid) - cpu0
    result["server_cpu_percent"] = round(100.0 * used / result["seconds"], 1)
    # CPU per request is what one core can sustain (1000 / ms per request), whatever else runs.
    result["server_cpu_ms_per_request"] = round(1000.0 * used / max(result["requests"], 1), 3)
    result["per_second"] = round(result["per_second"], 1)
    result["seconds"] = round(result["seconds"], 2)
    return result


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    out: dict[str, Any] = {
        "clusters": CLUSTERS,
        "watches": CLUSTERS * WATCHES_PER_CLUSTER,
        "load_clusters": LOAD_CLUSTERS,
        "concurrency": CONCURRENCY,
        "cpus": os.cpu_count(),
        "command": "python -m benchmarks bench_sim",
    }
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet.cli",
                "sim",
                "--clusters",
                str(CLUSTERS),
                "--kubeconfig-out",
                str(kubeconfig),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        watchers: subprocess.Popen[str] | None = None
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert line.startswith("ready "), line
            out["rss_mb_started"] = round(_rss_mb(server.pid), 1)
            quiet = [_run_load(server.pid, kubeconfig, op) for op in ("apply-create", "apply-update")]
            out["load_without_watches"] = quiet
            watchers = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.bench_sim", "watch", str(kubeconfig)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert watchers.stdout is not None
            assert watchers.stdout.readline().startswith("watching ")
            time.sleep(2.0)
            idle_cpu, rss = _measure_idle(server.pid)
            out["idle_cpu_percent_of_one_core"] = round(idle_cpu, 2)
            out["rss_mb_with_watches"] = round(rss, 1)
            loads = [
                _run_load(server.pid, kubeconfig, op)
                for op in ("create", "get", "apply-create", "apply-update")
            ]
            out["load"] = loads
            # Each apply update with the watches open reaches the WATCHES_PER_CLUSTER watches of its cluster.
            extra = loads[-1]["server_cpu_ms_per_request"] - quiet[-1]["server_cpu_ms_per_request"]
            out["server_cpu_ms_per_watch_event"] = round(extra / WATCHES_PER_CLUSTER, 4)
            out["rss_mb_after_load"] = round(_rss_mb(server.pid), 1)
        finally:
            if watchers is not None:
                watchers.terminate()
                watchers.wait(30)
            server.terminate()
            server.wait(30)
    (RESULTS / "sim.json").write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"fleet sim: {CLUSTERS} clusters, {CLUSTERS * WATCHES_PER_CLUSTER} open watches, {os.cpu_count()} CPUs"
    )
    print(
        f"  idle CPU          {out['idle_cpu_percent_of_one_core']:>8} % of one core (over {IDLE_SECONDS:.0f} s)"
    )
    print(
        f"  RSS               {out['rss_mb_with_watches']:>8} MB (after load: {out['rss_mb_after_load']} MB)"
    )
    print(f"  {'operation':<28}{'req/s':>10}{'errors':>8}{'server CPU %':>14}{'server ms/req':>15}")
    rows = [(r, " (no watch open)") for r in out["load_without_watches"]] + [(r, "") for r in out["load"]]
    for r, note in rows:
        print(
            f"  {r['op'] + note:<28}{r['per_second']:>10}{r['errors']:>8}{r['server_cpu_percent']:>14}"
            f"{r['server_cpu_ms_per_request']:>15}"
        )
    print(f"  server CPU per watch event delivered: {out['server_cpu_ms_per_watch_event']} ms")
    print(f"  results: {RESULTS / 'sim.json'}")


# ----- instructions per request (valgrind) -------------------------------------------------------

CALLGRIND_WATCHES = 4


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, ctype: str
) -> None:
    conn.request(method, path, body=body, headers={"Content-Type": ctype} if body is not None else {})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status >= 300:
        raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")


def _drive(conn: http.client.HTTPConnection, prefix: str, op: str, count: int, tag: str) -> None:
    for i in range(count):
        if op == "get":
            _request(conn, "GET", f"{prefix}{CM}/target", None, "")
            continue
        if op == "event":
            event = {
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"name": f"e{tag}-{i}", "namespace": "default"},
                "eventTime": "2026-12-07T10:00:00.123456Z",
                "reportingController": "fleet.example.com/controller",
                "reportingInstance": "fleet-1",
                "action": "Apply",
                "reason": "Synced",
                "type": "Normal",
                "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "default", "name": "x"},
                "note": "applied revision 1 of bundle b01",
            }
            path = f"{prefix}/apis/events.k8s.io/v1/namespaces/default/events"
            _request(conn, "POST", path, json.dumps(event).encode(), "application/json")
            continue
        name = f"a{tag}-{i}" if op == "apply-create" else "target"
        doc = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"app": "bench"}},
            "data": {"n": f"{tag}-{i}", "config.yaml": "a: 1\nb: 2\n"},
        }
        path = f"{prefix}{CM}/{name}?fieldManager=bench&force=true"
        _request(conn, "PATCH", path, json.dumps(doc).encode(), "application/apply-patch+yaml")


def _callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=True, timeout=120)


def _counted(pid: int, out_dir: Path, label: str, work: Any) -> int:
    """Instructions the sim executed during `work()` (instrumentation on only meanwhile)."""
    before = set(out_dir.glob("cg.*.*"))
    _callgrind(pid, "-z")
    _callgrind(pid, "-i", "on")
    work()
    _callgrind(pid, "-i", "off")
    _callgrind(pid, "-d", label)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for dump in set(out_dir.glob("cg.*.*")) - before:
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump for {label}")


def _watch_socket(url: str, stop: threading.Event) -> None:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=600)
    path = f"{parts.path}{CM}?watch=true&resourceVersion=0&timeoutSeconds=3600"
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    with sock:
        while not stop.is_set() and sock.recv(65536):
            pass


def instructions(count: int) -> dict[str, Any]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("bench_sim instructions needs valgrind (callgrind_control)")
    out: dict[str, Any] = {
        "requests_per_kind": count,
        "command": "python -m benchmarks.bench_sim instructions",
    }
    with tempfile.TemporaryDirectory(prefix="bench-sim-ir-") as tmp:
        out_dir = Path(tmp)
        kubeconfig = out_dir / "kubeconfig"
        server = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out_dir}/cg.%p",
                sys.executable,
                "-m",
                "fleet.cli",
                "sim",
                "--clusters",
                "1",
                "--kubeconfig-out",
                str(kubeconfig),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        stop = threading.Event()
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert line.startswith("ready "), line
            url = _servers(kubeconfig)[0]
            parts = urlsplit(url)
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
            prefix = parts.path
            _drive(conn, prefix, "apply-update", 20, "warm")  # creates `target`; every path run once
            _drive(conn, prefix, "apply-create", 20, "warm")
            _drive(conn, prefix, "event", 20, "warm")
            per: dict[str, int] = {}
            for op in ("get", "apply-create", "apply-update", "event"):
                total = _counted(server.pid, out_dir, op, lambda op=op: _drive(conn, prefix, op, count, "m"))
                per[op] = total // count
            threads = [
                threading.Thread(target=_watch_socket, args=(url, stop), daemon=True)
                for _ in range(CALLGRIND_WATCHES)
            ]
            for t in threads:
                t.start()
            time.sleep(5.0)  # the streams are open (valgrind makes the sim slow to answer)
            label = f"apply-update, {CALLGRIND_WATCHES} watches"
            total = _counted(
                server.pid, out_dir, "watched", lambda: _drive(conn, prefix, "apply-update", count, "w")
            )
            per[label] = total // count
            per["per watch event delivered"] = (per[label] - per["apply-update"]) // CALLGRIND_WATCHES
            out["instructions_per_request"] = per
        finally:
            stop.set()
            server.terminate()
            server.wait(120)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sim-instructions.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"fleet sim: instructions executed per request (callgrind), {count} requests of each kind")
    for name, value in out["instructions_per_request"].items():
        print(f"  {name:<32}{value:>12,}")
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["instructions"]:
        instructions(int(sys.argv[2]) if len(sys.argv) > 2 else 100)
    elif sys.argv[1:2] == ["watch"]:
        asyncio.run(_hold_watches(Path(sys.argv[2])))
    elif sys.argv[1:2] == ["load"]:
        print(json.dumps(asyncio.run(_load(Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])))), flush=True)
    else:
        main()
