"""Benchmark of `fleet sync --workers`: a cold sync of many clusters over 2 processes, side by side with
the same sync in one process and with kubectl's 8 parallel `apply --server-side`, in the same run.

Setup (as `bench_sync`, whose helpers it uses): `fleet sim --clusters N` in its own process, a fresh one
per scenario run so every run starts from empty clusters; a git repository (pygit2) with N cluster files
and one bundle of M ConfigMaps (plus its namespace) placed on every cluster.

- `fleet_cold_workers_2`: `fleet sync --no-wait --workers 2` (the real CLI, a subprocess; defaults
  otherwise: 16 clusters at once, shared by the workers, 4 requests in flight each);
- `fleet_cold_workers_1`: the same with `--workers 1` (one process, what `fleet sync` does by default);
- `kubectl_ssa_8_parallel`: `kubectl apply --server-side -f <the objects>` per cluster, 8 at a time (the
  real kubectl binary of the virtualenv, each with its own --cache-dir).

Reported per scenario (median run, and every run's wall time): wall time, the client's CPU time (fleet:
the `fleet sync` process and its workers; kubectl: every kubectl process), requests the sim journaled and
how many changed state, the sim process's CPU during the run and the time it spent runnable but waiting
for a CPU (`sim wait s`, /proc/PID/schedstat: how much the rest of the machine held the run back), and
that the run succeeded. fleet's modules are byte-compiled first (`bench_sync.compile_fleet`), as an
installed fleet's are. The scenarios
run FLEET_BENCH_SYNC_WORKERS_REPEAT times (3), interleaved, so a burst of load on the shared machine hits
each alike. Target: the 2-worker cold sync at least 2x faster than kubectl.

Run: ``.venv/bin/python -m benchmarks bench_sync_workers`` (in ``make bench``). Knobs:
FLEET_BENCH_SYNC_CLUSTERS (50) and FLEET_BENCH_SYNC_OBJECTS (100) as bench_sync,
FLEET_BENCH_SYNC_WORKERS_REPEAT (3). Writes ``benchmarks/results/sync-workers.json`` and prints a table.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import bench_sync

REPEAT = int(os.environ.get("FLEET_BENCH_SYNC_WORKERS_REPEAT", "3"))
SCENARIOS = ("fleet_cold_workers_2", "fleet_cold_workers_1", "kubectl_ssa_8_parallel")
TIMEOUT = 600.0  # one scenario run, at most


def _measured(argv: list[str], env: dict[str, str]) -> tuple[float, int, float]:
    """Run a process to its end: (wall seconds, exit code, CPU seconds of it and of the children it
    waited for: a `fleet sync`'s workers). Killed past TIMEOUT."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    timer = threading.Timer(TIMEOUT, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.monotonic() - started
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    errors = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if code != 0:
        sys.stderr.write(errors[-2000:])
    return wall, code, usage.ru_utime + usage.ru_stime


def _cpu_wait(sim: bench_sync.Sim) -> float:
    """Seconds the sim process has spent runnable but waiting for a CPU (/proc/PID/schedstat): how much
    the rest of the machine held this run back."""
    return int(Path(f"/proc/{sim.proc.pid}/schedstat").read_text().split()[1]) / 1e9


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}


def _fleet(repo: Path, sim: bench_sync.Sim, workers: int) -> dict[str, Any]:
    marks = sim.journal_marks()
    sim_cpu, sim_wait = sim.cpu_seconds(), _cpu_wait(sim)
    argv = [
        sys.executable, "-m", "fleet.cli", "sync", str(repo), "--kubeconfig", str(sim.kubeconfig),
        "--no-wait", "--format", "json", "--workers", str(workers),
    ]  # fmt: skip
    wall, code, cpu = _measured(argv, _env())
    return _row(sim, marks, sim.cpu_seconds() - sim_cpu, _cpu_wait(sim) - sim_wait, wall, code, cpu)


def _kubectl(sim: bench_sync.Sim, workdir: Path) -> dict[str, Any]:
    kubectl = shutil.which("kubectl", path=str(bench_sync.VENV_BIN)) or "kubectl"
    manifest = workdir / "objects.yaml"
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": bench_sync.NAMESPACE}}
    manifest.write_text(yaml.safe_dump_all([ns, *bench_sync._objects()]))
    marks = sim.journal_marks()
    run = time.monotonic_ns()

    def one(name: str) -> tuple[int, float]:
        cache = workdir / f"kubectl-cache-{run}-{name}"
        argv = [
            kubectl, "--kubeconfig", str(sim.kubeconfig), "--context", name, "--cache-dir", str(cache),
            "apply", "--server-side", "-f", str(manifest),
        ]  # fmt: skip
        _, code, cpu = _measured(argv, _env())
        return code, cpu

    started = time.monotonic()
    sim_cpu, sim_wait = sim.cpu_seconds(), _cpu_wait(sim)
    with concurrent.futures.ThreadPoolExecutor(bench_sync.KUBECTL_PARALLEL) as pool:
        results = list(pool.map(one, sim.servers))
    wall = time.monotonic() - started
    code = max(c for c, _ in results)
    sim_cpu, sim_wait = sim.cpu_seconds() - sim_cpu, _cpu_wait(sim) - sim_wait
    return _row(sim, marks, sim_cpu, sim_wait, wall, code, sum(cpu for _, cpu in results))


def _row(
    sim: bench_sync.Sim,
    marks: dict[str, int],
    sim_cpu: float,
    sim_wait: float,
    wall: float,
    code: int,
    cpu: float,
) -> dict[str, Any]:
    total, mutated, patches = sim.count(marks)
    return {
        "wall_s": round(wall, 3),
        "exit": code,
        "client_cpu_s": round(cpu, 2),
        "requests": total,
        "writes": mutated,
        "patches": patches,
        "sim_cpu_s": round(sim_cpu, 2),
        "sim_cpu_wait_s": round(sim_wait, 2),
    }


def main() -> None:
    bench_sync.compile_fleet()
    load_start = os.getloadavg()
    out: dict[str, Any] = {
        "clusters": bench_sync.CLUSTERS,
        "objects_per_cluster": bench_sync.OBJECTS,
        "machine_cpus": os.cpu_count(),
        "repeat": REPEAT,
    }
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="fleet-bench-sync-workers-") as tmp:
        work = Path(tmp)
        repo = bench_sync._make_repo(work / "repo")
        for _ in range(REPEAT):
            for key in SCENARIOS:
                sim = bench_sync.Sim(work)
                try:
                    if key == "kubectl_ssa_8_parallel":
                        runs[key].append(_kubectl(sim, work))
                    else:
                        runs[key].append(_fleet(repo, sim, int(key.rsplit("_", 1)[1])))
                finally:
                    sim.stop()
    for key, results in runs.items():
        ordered = sorted(results, key=lambda r: r["wall_s"])
        out[key] = {
            **ordered[len(ordered) // 2],
            "walls_s": [r["wall_s"] for r in results],
            "all_succeeded": all(r["exit"] == 0 for r in results),
        }
    two, one, kubectl = (out[k] for k in SCENARIOS)
    out["workers_2_speedup_vs_kubectl"] = round(kubectl["wall_s"] / two["wall_s"], 2)
    out["workers_1_speedup_vs_kubectl"] = round(kubectl["wall_s"] / one["wall_s"], 2)
    out["workers_2_speedup_vs_workers_1"] = round(one["wall_s"] / two["wall_s"], 2)
    out["target_2x_kubectl_met"] = out["workers_2_speedup_vs_kubectl"] >= 2.0
    out["load_average_start"] = [round(x, 2) for x in load_start]
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    bench_sync.RESULTS.mkdir(exist_ok=True)
    (bench_sync.RESULTS / "sync-workers.json").write_text(json.dumps(out, indent=2) + "\n")

    print(
        f"{bench_sync.CLUSTERS} clusters x {bench_sync.OBJECTS} objects, cold (sim in its own process), "
        f"median of {REPEAT} runs; load average {out['load_average_start']} -> {out['load_average_end']}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{'scenario':<24}{'wall s':>8}{'client CPU s':>14}{'requests':>10}{'writes':>8}{'sim CPU s':>11}"
        f"{'sim wait s':>12}{'ok':>5}"
    )
    for key in SCENARIOS:
        r = out[key]
        print(
            f"{key:<24}{r['wall_s']:>8}{r['client_cpu_s']:>14}{r['requests']:>10}{r['writes']:>8}"
            f"{r['sim_cpu_s']:>11}{r['sim_cpu_wait_s']:>12}{'yes' if r['all_succeeded'] else 'NO':>5}"
            f"   runs: {', '.join(str(w) for w in r['walls_s'])}"
        )
    print(
        f"--workers 2 vs kubectl: {out['workers_2_speedup_vs_kubectl']}x faster (target 2x: "
        f"{'met' if out['target_2x_kubectl_met'] else 'not met'}); --workers 1 vs kubectl: "
        f"{out['workers_1_speedup_vs_kubectl']}x; --workers 2 vs --workers 1: {out['workers_2_speedup_vs_workers_1']}x"
    )


if __name__ == "__main__":
    main()
