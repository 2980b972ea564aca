"""Benchmark against the real API server: `fleet sync` cold and no-change, side by side with `kubectl apply
--server-side`, on real clusters and on `fleet sim` serving the same workload, so the sim's speed can be
judged against the real one.

Setup: the real control plane of tests/support/kube.py (one etcd, one kube-apiserver per cluster with its
kube-controller-manager, TLS and a bearer token; docs/real-cluster.md) with FLEET_BENCH_REAL_CLUSTERS
clusters named real-1 ... real-N, and `fleet sim --tls --names real-1,...` in its own process: the same
cluster names, so one repository (pygit2) with one bundle of FLEET_BENCH_REAL_OBJECTS ConfigMaps (and its
namespace) placed on every cluster is the workload of both. Every run uses a namespace and a fleet
instance of its own, so "cold" always starts from nothing on long-lived clusters.

Scenarios, on each backend (real, then sim), interleaved FLEET_BENCH_REAL_REPEAT times:

- fleet cold: `fleet sync --no-wait` (the real CLI, a subprocess) into an empty namespace;
- fleet no-change: the same again: zero writes;
- kubectl cold: `kubectl apply --server-side -f <the rendered objects>` (the real kubectl of the
  virtualenv), one per cluster, all clusters in parallel, each with a fresh --cache-dir (cold discovery);
- kubectl no-change: the same again with the warm cache: kubectl sends every object again, the server
  finds nothing changed.

Reported per scenario and backend: wall time (median of the runs, and every run), the CPU seconds the
server side used during it (real: every kube-apiserver and etcd; sim: its process), the requests fleet
counted (its JSON report; kubectl's are not counted), and the sim/real wall ratio. The objects are
checked after every cold run (all there, on every cluster).

Where the real binaries are missing (`make tools` builds them), it prints one line saying so and exits 0.

Run: ``.venv/bin/python -m benchmarks bench_real``. Knobs: FLEET_BENCH_REAL_CLUSTERS (2),
FLEET_BENCH_REAL_OBJECTS (100), FLEET_BENCH_REAL_REPEAT (3). Writes ``benchmarks/results/real.json``.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import kube
from tests.support.reconcile import GitOpsRepo

CLUSTERS = int(os.environ.get("FLEET_BENCH_REAL_CLUSTERS", "2"))
OBJECTS = int(os.environ.get("FLEET_BENCH_REAL_OBJECTS", "100"))
REPEAT = int(os.environ.get("FLEET_BENCH_REAL_REPEAT", "3"))
SCENARIOS = ("fleet_cold", "fleet_no_change", "kubectl_cold", "kubectl_no_change")
RESULTS = Path(__file__).resolve().parent / "results"
KUBECTL = str(Path(sys.executable).parent / "kubectl")
NAMES = [f"real-{i}" for i in range(1, CLUSTERS + 1)]


def objects(namespace: str | None = None) -> list[dict[str, Any]]:
    """The workload: OBJECTS ConfigMaps (in `namespace`, or without one for a bundle, which sets it)."""
    where = {"namespace": namespace} if namespace else {}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{i:04d}", **where, "labels": {"app": "bench"}},
            "data": {"index": str(i), "payload": "x" * 200},
        }
        for i in range(OBJECTS)
    ]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@dataclass
class Backend:
    name: str  # "real" or "sim"
    kubeconfig: Path
    server_pids: list[int]
    count: Callable[[str], int]  # ConfigMaps of a namespace on one cluster


@contextmanager
def real_backend(work: Path) -> Iterator[Backend]:
    with kube.control_plane(work / "kube", clusters=CLUSTERS) as plane:
        pids = [c.apiserver.proc.pid for c in plane.clusters(CLUSTERS)]
        assert plane.etcd is not None
        pids.append(plane.etcd.proc.pid)

        def count(namespace: str) -> int:
            total = 0
            for name in NAMES:
                with plane.client(name) as api:
                    resp = api.get(
                        f"/api/v1/namespaces/{namespace}/configmaps", params={"labelSelector": "app=bench"}
                    )
                    resp.raise_for_status()
                    total += len(resp.json()["items"])
            return total

        yield Backend("real", plane.kubeconfig(NAMES, path=work / "kubeconfig-real"), pids, count)


@contextmanager
def sim_backend(work: Path) -> Iterator[Backend]:
    kubeconfig = work / "kubeconfig-sim"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleet.cli",
            "sim",
            "--tls",
            "--names",
            ",".join(NAMES),
            "--kubeconfig-out",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"fleet sim did not start: {line!r}")
        doc = yaml.safe_load(kubeconfig.read_text())
        ca = work / "sim-ca.crt"
        ca.write_bytes(base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]))
        servers = {c["name"]: c["cluster"]["server"] for c in doc["clusters"]}

        def count(namespace: str) -> int:
            total = 0
            with httpx.Client(verify=str(ca), timeout=30) as client:
                for name in NAMES:
                    resp = client.get(
                        f"{servers[name]}/api/v1/namespaces/{namespace}/configmaps",
                        params={"labelSelector": "app=bench"},
                    )
                    resp.raise_for_status()
                    total += len(resp.json()["items"])
            return total

        yield Backend("sim", kubeconfig, [proc.pid], count)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_repo(root: Path, namespace: str) -> Path:
    repo = GitOpsRepo(root)
    for name in NAMES:
        repo.cluster(name, labels={"env": "bench"})
    repo.bundle("bench", objects(), namespace=namespace, selector={"env": "bench"})
    repo.commit("bench")
    return root


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}


def measured(backend: Backend, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    cpu = cpu_seconds(backend.server_pids)
    started = time.monotonic()
    out = run()
    out["wall_s"] = round(time.monotonic() - started, 3)
    out["server_cpu_s"] = round(cpu_seconds(backend.server_pids) - cpu, 2)
    return out


def fleet_sync(backend: Backend, repo: Path, instance: str) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        argv = [sys.executable, "-m", "fleet.cli", "sync", str(repo), "--kubeconfig", str(backend.kubeconfig)]
        argv += ["--instance", instance, "--no-wait", "--format", "json"]
        done = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"fleet sync on {backend.name} exited {done.returncode}: {done.stderr[-2000:]}"
            )
        report = json.loads(done.stdout)
        clusters = report["clusters"].values()
        return {
            "requests": sum(c.get("requests", 0) for c in clusters),
            "written": sum(
                b.get("created", 0) + b.get("configured", 0) for c in clusters for b in c["bundles"].values()
            ),
        }

    return measured(backend, run)


def kubectl(backend: Backend, manifest: Path, cache: Path) -> dict[str, Any]:
    def one(name: str) -> int:
        argv = [
            KUBECTL,
            "--kubeconfig",
            str(backend.kubeconfig),
            "--context",
            name,
            "--cache-dir",
            str(cache / name),
        ]
        argv += ["apply", "--server-side", "-f", str(manifest)]
        done = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"kubectl on {backend.name}/{name} exited {done.returncode}: {done.stderr[-2000:]}"
            )
        return done.stdout.count("serverside-applied")

    def run() -> dict[str, Any]:
        with concurrent.futures.ThreadPoolExecutor(len(NAMES)) as pool:
            applied = sum(pool.map(one, NAMES))
        return {"requests": None, "applied": applied}

    return measured(backend, run)


def one_round(backend: Backend, work: Path, n: int, runs: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    tag = f"{backend.name}{n}-{os.getpid() % 10000}"
    ns = f"bench-fleet-{tag}"
    repo = make_repo(work / f"repo-{tag}", ns)
    mine = runs.setdefault(backend.name, {k: [] for k in SCENARIOS})
    mine["fleet_cold"].append(fleet_sync(backend, repo, f"b{tag}"))
    if backend.count(ns) != OBJECTS * CLUSTERS:
        raise RuntimeError(
            f"fleet cold on {backend.name}: {backend.count(ns)} objects, not {OBJECTS * CLUSTERS}"
        )
    mine["fleet_no_change"].append(fleet_sync(backend, repo, f"b{tag}"))
    ns = f"bench-kubectl-{tag}"
    manifest = work / f"kubectl-{tag}.yaml"
    manifest.write_text(
        yaml.safe_dump_all(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, *objects(ns)]
        )
    )
    cache = work / f"kubectl-cache-{tag}"
    mine["kubectl_cold"].append(kubectl(backend, manifest, cache))
    if backend.count(ns) != OBJECTS * CLUSTERS:
        raise RuntimeError(
            f"kubectl cold on {backend.name}: {backend.count(ns)} objects, not {OBJECTS * CLUSTERS}"
        )
    mine["kubectl_no_change"].append(kubectl(backend, manifest, cache))


def median(results: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(results, key=lambda r: r["wall_s"])
    return {**ordered[len(ordered) // 2], "walls_s": [r["wall_s"] for r in results]}


def main() -> int:
    reason = kube.skip_reason(kube.CONTROL_PLANE)
    if reason:
        print(f"bench_real: skipped: {reason}")
        return 0
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="fleet-bench-real-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        with real_backend(work) as real_be, sim_backend(work) as sim_be:
            ready = time.monotonic() - started
            for n in range(REPEAT):  # interleaved: a burst of load on the shared machine hits both backends
                one_round(real_be, work, n, runs)
                one_round(sim_be, work, n, runs)
    out: dict[str, Any] = {
        "clusters": CLUSTERS,
        "objects_per_cluster": OBJECTS,
        "repeat": REPEAT,
        "machine_cpus": os.cpu_count(),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "backends_ready_s": round(ready, 1),
    }
    for backend in ("real", "sim"):
        out[backend] = {k: median(v) for k, v in runs[backend].items()}
    out["sim_over_real_wall"] = {
        k: round(out["sim"][k]["wall_s"] / out["real"][k]["wall_s"], 2) for k in SCENARIOS
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "real.json").write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"{CLUSTERS} clusters x {OBJECTS} ConfigMaps, real API servers and fleet sim (TLS, same cluster names), "
        f"median of {REPEAT} runs; load average {out['load_average']}"
    )
    print(
        f"{'scenario':<20}{'real s':>9}{'sim s':>9}{'sim/real':>10}{'real srv CPU s':>16}{'sim CPU s':>11}{'fleet req':>11}   runs real | sim"
    )
    for key in SCENARIOS:
        r, s = out["real"][key], out["sim"][key]
        reqs = "" if r["requests"] is None else f"{r['requests']}/{s['requests']}"
        print(
            f"{key:<20}{r['wall_s']:>9}{s['wall_s']:>9}{out['sim_over_real_wall'][key]:>10}{r['server_cpu_s']:>16}{s['server_cpu_s']:>11}{reqs:>11}"
            f"   {', '.join(str(w) for w in r['walls_s'])} | {', '.join(str(w) for w in s['walls_s'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
