"""Benchmark of `fleet serve`: commit-to-Synced latency through the signed webhook, idle CPU and RSS of
the whole controller, and the cost of tracing, with tracing off and on side by side in the same run.

Setup: one `fleet sim --clusters 2N` in its own process (waits for its ``ready`` line) and two `fleet
serve` processes, each in its own process (``--listen 127.0.0.1:0``, the URL read from its log,
``--interval 1h`` so only the webhook triggers fetches, ``--webhook-secret-file``, its own state dir):
"off" without tracing, "on" with ``--otlp-endpoint`` pointing at a real OTLP/HTTP receiver running in this
process (`tests.support.otlp`). Each follows its own git repository (pygit2) with N cluster files (off:
``sim-001`` ... ``sim-N``, on: the next N) and 10 bundles placed on every cluster (bundle ``b00``: a
Deployment, a Service and a ConfigMap, so the sim's workload status simulation is on the path;
``b01``-``b09``: two ConfigMaps and a Service each). Both controllers run side by side for the whole run
and their commits alternate (off, on, on, off, off, on, ...), so a change in the machine's load (other
work on it) hits both alike; while one converges, the other is idle.

1. first convergence: start to every cluster Synced at HEAD in the status API (one controller at a time);
2. commits: a one-line change in bundle ``b01`` (placed on every cluster) is committed, the signed
   webhook (``X-Hub-Signature-256``) announces it, and the status API is polled every 50 ms until every
   cluster reports Synced at that revision. Measured from just before the commit (so commit, webhook,
   fetch, parse, placement, render, the reconcile rounds and the status API are all inside). Also when
   the status first shows the new revision (fetch + parse + placement + render), and the controller's CPU
   seconds per commit (``/proc/<pid>/stat`` utime+stime), also net of the 50 ms status polling (polls x
   the measured CPU of one status GET);
3. idle: 2 s after the last convergence, both controllers' and the sim's CPU over the same ``IDLE_S``
   seconds (``/proc/<pid>/stat``), nothing polling the API meanwhile; RSS from ``/proc/<pid>/status``
   (VmRSS, VmHWM).

The machine's load average (before, after) and its total busy CPU during the idle window are recorded,
since other work on the machine distorts every number here.

Run: ``.venv/bin/python -m benchmarks bench_serve`` (full: 100 clusters per controller, 20 commits per
mode, 20 s idle; about 3-5 minutes) or ``.venv/bin/python -m benchmarks bench_serve --quick`` (10
clusters, 4 commits per mode, 3 s idle; under a minute). ``FLEET_BENCH_SERVE_QUICK=1`` is the same as
``--quick``. Knobs: FLEET_BENCH_SERVE_CLUSTERS (per controller), FLEET_BENCH_SERVE_COMMITS (per mode),
FLEET_BENCH_SERVE_IDLE (seconds), FLEET_BENCH_SERVE_CONCURRENCY (``--concurrency`` of serve; default:
serve's own), FLEET_BENCH_SERVE_PROFILE=DIR (py-spy samples both controllers during the commits; the
binary from FLEET_BENCH_SERVE_PYSPY or PATH), FLEET_BENCH_SERVE_KEEP=1 (keep the repositories, state
dirs and the sim's and controllers' logs, and print where). Writes ``benchmarks/results/serve.json``
(default run only; ``serve-quick.json``, ``serve-custom.json`` or ``serve-profiled.json`` otherwise) and
prints a table, with the previous run's numbers from that file next to this run's.

Owns: the benchmark's repositories, processes, measurements and result file. Does not: assert anything
(a missed target is reported, not raised) or change how `fleet serve` or `fleet sim` behave.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pygit2
import yaml

from fleet.controller import webhook

QUICK = "--quick" in sys.argv or os.environ.get("FLEET_BENCH_SERVE_QUICK", "") == "1"
CLUSTERS = int(os.environ.get("FLEET_BENCH_SERVE_CLUSTERS", "10" if QUICK else "100"))
COMMITS = int(os.environ.get("FLEET_BENCH_SERVE_COMMITS", "4" if QUICK else "20"))  # per mode
IDLE_S = float(os.environ.get("FLEET_BENCH_SERVE_IDLE", "3" if QUICK else "20"))
CONCURRENCY = os.environ.get("FLEET_BENCH_SERVE_CONCURRENCY", "")
KEEP = os.environ.get("FLEET_BENCH_SERVE_KEEP", "") == "1"  # keep the work dir (repos, state, logs)
PROFILE_DIR = os.environ.get("FLEET_BENCH_SERVE_PROFILE", "")  # py-spy profiles of the commit loops here
PYSPY = os.environ.get("FLEET_BENCH_SERVE_PYSPY", "") or shutil.which("py-spy") or "py-spy"
BUNDLES = 10
CHANGED_BUNDLE = "b01"
POLL_S = 0.05
GAP_S = 1.1  # between commits: over serve's webhook rate limit (one fetch per second)
SETTLE_S = 2.0
COMMIT_TIMEOUT_S = 120.0
CONVERGE_TIMEOUT_S = 600.0
SECRET = b"bench-serve-webhook-secret"
RESULTS = Path(__file__).resolve().parent / "results"
CUSTOM = any(os.environ.get(f"FLEET_BENCH_SERVE_{k}") for k in ("CLUSTERS", "COMMITS", "IDLE", "CONCURRENCY"))
# Only the default runs replace the reference files; knobs or profiling (which slows the controller) write
# beside them.
RESULT_FILE = RESULTS / (
    "serve-profiled.json"
    if PROFILE_DIR
    else "serve-custom.json"
    if CUSTOM
    else "serve-quick.json"
    if QUICK
    else "serve.json"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")

TARGETS = {
    "commit_p50_s": 5.0,
    "commit_p99_s": 5.0,
    "idle_cpu_percent": 5.0,
    "rss_mb": 250.0,
    "tracing_overhead_percent": 10.0,
}


# -- the repository -------------------------------------------------------------------------------------


def _names(mode: str) -> list[str]:
    first = 1 if mode == "off" else CLUSTERS + 1
    return [f"sim-{i:03d}" for i in range(first, first + CLUSTERS)]


def _bundle_yaml(name: str) -> str:
    return f"""apiVersion: fleet.dev/v1alpha1
kind: Bundle
metadata:
  name: {name}
spec:
  namespace: bench-{name}
  placement:
    clusterSelector:
      matchLabels:
        env: bench
  rollout:  # all at once, as before rollouts existed: this benchmark measures a commit's fan-out
    waves: [{{name: all, maxConcurrency: "100%"}}]
"""


def _deployment_bundle() -> str:
    return """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: nginx:1.27
          ports:
            - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
    - port: 80
      targetPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  listen: "80"
  workers: "4"
"""


def _configmap_bundle(name: str, generation: int) -> str:
    return f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  bundle: {name}
  colour: blue
  generation: "{generation}"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: extra
data:
  payload: "{"x" * 200}"
---
apiVersion: v1
kind: Service
metadata:
  name: svc
spec:
  selector:
    app: {name}
  ports:
    - port: 8080
      targetPort: 8080
"""


class Repo:
    """The benchmark's git repository (pygit2), committed like a user would."""

    def __init__(self, root: Path, *, names: list[str]) -> None:
        self.root = root
        self.generation = 0
        self.repo = pygit2.init_repository(str(root), initial_head="main")
        for name in names:
            self._write(
                f"clusters/{name}.yaml",
                f"apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n"
                f"  labels:\n    env: bench\n",
            )
        for i in range(BUNDLES):
            b = f"b{i:02d}"
            self._write(f"bundles/{b}/bundle.yaml", _bundle_yaml(b))
            body = _deployment_bundle() if i == 0 else _configmap_bundle(b, 0)
            self._write(f"bundles/{b}/manifests/objects.yaml", body)
        self.commit("bench: initial")

    def _write(self, path: str, text: str) -> None:
        full = self.root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text)

    def change_one_line(self) -> None:
        """Rewrite the one `generation:` line of bundle b01's ConfigMap."""
        self.generation += 1
        path = self.root / "bundles" / CHANGED_BUNDLE / "manifests" / "objects.yaml"
        text, count = re.subn(
            r'(?m)^  generation: "\d+"$', f'  generation: "{self.generation}"', path.read_text()
        )
        assert count == 1, "the generation line is missing"
        path.write_text(text)

    def commit(self, message: str) -> str:
        index = self.repo.index
        index.add_all()
        index.write()
        sig = pygit2.Signature("bench", "bench@example.com")
        parents = [] if self.repo.head_is_unborn else [self.repo.head.target]
        return str(self.repo.create_commit("HEAD", sig, sig, message, index.write_tree(), parents))


# -- processes -------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    """The environment of child processes: no KUBECONFIG, no OTEL_* (tracing only from --otlp-endpoint)."""
    return {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("OTEL_")}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    return sum(parts) - idle, sum(parts)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Sim:
    """`fleet sim --clusters N --kubeconfig-out F` in its own process."""

    def __init__(self, workdir: Path) -> None:
        self.kubeconfig = workdir / "kubeconfig"
        self.log = workdir / "sim.log"
        started = time.monotonic()
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fleet.cli",
                    "sim",
                    "--clusters",
                    str(2 * CLUSTERS),
                    "--kubeconfig-out",
                    str(self.kubeconfig),
                ],
                stdout=subprocess.PIPE,
                stderr=sink,
                env=_env(),
                text=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"fleet sim did not start: {line!r}\n{self.log.read_text()[-2000:]}")
        self.start_s = time.monotonic() - started
        doc = yaml.safe_load(self.kubeconfig.read_text())
        self.servers = {c["name"]: c["cluster"]["server"] for c in doc["clusters"]}
        self.admin = next(iter(self.servers.values())).split("/clusters/")[0]

    def journal(self, name: str, since: int = 0) -> list[dict[str, Any]]:
        resp = httpx.get(
            f"{self.admin}/_sim/clusters/{name}/journal", params={"since": str(since)}, timeout=30
        )
        resp.raise_for_status()
        return list(resp.json()["requests"])

    def marks(self) -> dict[str, int]:
        """The last journal sequence number of every cluster."""
        out = {}
        for name in self.servers:
            entries = self.journal(name)
            out[name] = entries[-1]["seq"] if entries else 0
        return out

    def count(self, marks: dict[str, int], names: list[str]) -> tuple[int, int]:
        """(requests, state-changing requests) these clusters journaled since `marks`."""
        total = mutated = 0
        for name in names:
            entries = self.journal(name, marks.get(name, 0))
            total += len(entries)
            mutated += sum(1 for e in entries if e.get("mutated"))
        return total, mutated

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Serve:
    """`fleet serve` in its own process; the URL comes from its log (stderr)."""

    def __init__(self, *, repo: Path, sim: Sim, workdir: Path, tag: str, otlp_url: str | None) -> None:
        secret_file = workdir / "webhook-secret"
        secret_file.write_bytes(SECRET + b"\n")
        self.log = workdir / f"serve-{tag}.log"
        argv = [
            sys.executable,
            "-m",
            "fleet.cli",
            "serve",
            "--repo",
            str(repo),
            "--kubeconfig",
            str(sim.kubeconfig),
            "--state-dir",
            str(workdir / f"state-{tag}"),
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "1h",
            "--webhook-secret-file",
            str(secret_file),
        ]
        if CONCURRENCY:
            argv += ["--concurrency", CONCURRENCY]
        if otlp_url:
            argv += ["--otlp-endpoint", otlp_url]
        self.started = time.monotonic()
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(argv, stdout=sink, stderr=sink, env=_env())
        self.pid = self.proc.pid
        self.url = self._wait_listening()
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def logs(self, tail: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = re.search(r"listening on (http://\S+)", self.log.read_text(errors="replace"))
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"fleet serve exited {self.proc.returncode}:\n{self.logs()}")
            time.sleep(0.05)
        raise RuntimeError(f"fleet serve did not listen within 60 s:\n{self.logs()}")

    def status(self) -> dict[str, Any]:
        resp = self.client.get("/api/v1/status")
        if resp.status_code != 200:
            raise RuntimeError(f"GET /api/v1/status answered {resp.status_code}:\n{self.logs()}")
        doc: dict[str, Any] = resp.json()
        return doc

    def webhook(self) -> int:
        body = json.dumps({"ref": "refs/heads/main"}).encode()
        headers = {
            "X-Hub-Signature-256": webhook.sign_github(body=body, secret=SECRET),
            "X-GitHub-Event": "push",
            "Content-Type": "application/json",
        }
        return self.client.post("/api/v1/webhook", content=body, headers=headers).status_code

    def wait_synced(self, sha: str, *, timeout: float, t0: float) -> dict[str, Any]:
        """Poll the status every POLL_S until every cluster is Synced at `sha`; times from `t0`."""
        seen: float | None = None
        polls = 0
        deadline = t0 + timeout
        next_poll = time.perf_counter()
        doc: dict[str, Any] = {}
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fleet serve exited {self.proc.returncode}:\n{self.logs()}")
            doc = self.status()
            polls += 1
            now = time.perf_counter()
            if seen is None and doc.get("revision") == sha:
                seen = now - t0
            clusters = doc.get("clusters") or {}
            if len(clusters) == CLUSTERS and all(
                c.get("state") == "Synced" and c.get("revision") == sha for c in clusters.values()
            ):
                return {"synced_s": now - t0, "revision_seen_s": seen, "polls": polls}
            next_poll += POLL_S
            time.sleep(max(0.0, next_poll - time.perf_counter()))
        states: dict[str, int] = {}
        for c in (doc.get("clusters") or {}).values():
            key = f"{c.get('state')}@{'new' if c.get('revision') == sha else 'old'}"
            states[key] = states.get(key, 0) + 1
        raise TimeoutError(
            f"not every cluster Synced at {sha[:7]} within {timeout:.0f} s: {states}, "
            f"errors {doc.get('errors')}\n{self.logs()}"
        )

    def stop(self) -> int:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9


# -- measurements ----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); with 20 samples p99 is the largest."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def median(values: list[float]) -> float:
    return percentile(values, 50)


MODES = ("off", "on")


@dataclass
class Run:
    """What one controller (one mode) measured."""

    mode: str
    first_convergence_s: float = 0.0
    commits: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    writes: int = 0
    status_get: dict[str, float] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)
    memory_after_commits: dict[str, float] = field(default_factory=dict)
    spans: int = 0
    span_kinds: dict[str, int] = field(default_factory=dict)
    stop_exit: int = 0


def _profiler(pid: int, tag: str) -> subprocess.Popen[bytes] | None:
    """With FLEET_BENCH_SERVE_PROFILE=DIR: py-spy samples the controller (collapsed stacks) during the commits."""
    if not PROFILE_DIR:
        return None
    Path(PROFILE_DIR).mkdir(parents=True, exist_ok=True)
    target = Path(PROFILE_DIR) / f"serve-{tag}.collapsed"
    return subprocess.Popen(
        [PYSPY, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "-o", str(target)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _status_cost(serve: Serve, samples: int = 40) -> dict[str, float]:
    """Client-side time and controller CPU of one GET /api/v1/status (every cluster and bundle), its size."""
    times = []
    size = 0
    cpu0 = cpu_seconds(serve.pid)
    for _ in range(samples):
        t0 = time.perf_counter()
        resp = serve.client.get("/api/v1/status")
        times.append(time.perf_counter() - t0)
        size = len(resp.content)
    cpu = cpu_seconds(serve.pid) - cpu0
    return {
        "p50_ms": round(1000 * median(times), 2),
        "cpu_ms": round(1000 * cpu / samples, 2),
        "bytes": size,
    }


def _idle(serves: dict[str, Serve], sim: Sim) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """CPU of both controllers and the sim over the same window; nothing talks to them meanwhile."""
    time.sleep(SETTLE_S)
    busy0, total0 = machine_busy()
    c0 = {m: cpu_seconds(s.pid) for m, s in serves.items()}
    s0, w0 = cpu_seconds(sim.proc.pid), time.monotonic()
    time.sleep(IDLE_S)
    c1 = {m: cpu_seconds(s.pid) for m, s in serves.items()}
    s1, w1 = cpu_seconds(sim.proc.pid), time.monotonic()
    busy1, total1 = machine_busy()
    wall = w1 - w0
    out: dict[str, dict[str, Any]] = {}
    for mode, serve in serves.items():
        clusters = (serve.status().get("clusters") or {}).values()
        out[mode] = {
            "cpu_percent": round(100 * (c1[mode] - c0[mode]) / wall, 2),
            "memory_mb": memory_mb(serve.pid),
            "watch_streams": sum(int((c.get("watch") or {}).get("streams") or 0) for c in clusters),
        }
    machine = {
        "seconds": round(wall, 2),
        "sim_cpu_percent": round(100 * (s1 - s0) / wall, 2),
        "sim_memory_mb": memory_mb(sim.proc.pid),
        "machine_busy_percent_of_all_cpus": round(100 * (busy1 - busy0) / max(1, total1 - total0), 1),
    }
    return out, machine


def _commit(run: Run, serve: Serve, repo: Repo) -> None:
    repo.change_one_line()
    cpu0 = cpu_seconds(serve.pid)
    t0 = time.perf_counter()
    sha = repo.commit(f"bench: {CHANGED_BUNDLE} generation {repo.generation}")
    code = serve.webhook()
    if code != 202:
        raise RuntimeError(f"webhook answered {code}:\n{serve.logs()}")
    result = serve.wait_synced(sha, timeout=COMMIT_TIMEOUT_S, t0=t0)
    run.commits.append(
        {
            "sha": sha[:12],
            "synced_s": round(result["synced_s"], 3),
            "revision_seen_s": round(result["revision_seen_s"] or 0.0, 3),
            "polls": result["polls"],
            "controller_cpu_s": round(cpu_seconds(serve.pid) - cpu0, 3),
            "load1": round(os.getloadavg()[0], 2),
        }
    )


def run_all(work: Path, receiver: Any, out: dict[str, Any]) -> dict[str, Run]:
    runs = {m: Run(mode=m) for m in MODES}
    repos = {m: Repo(work / f"repo-{m}", names=_names(m)) for m in MODES}
    sim = Sim(work)
    out["sim_start_s"] = round(sim.start_s, 2)
    serves: dict[str, Serve] = {}
    try:
        for mode in MODES:  # one at a time: a cold start writes every object on every cluster
            serve = Serve(
                repo=repos[mode].root,
                sim=sim,
                workdir=work,
                tag=mode,
                otlp_url=receiver.url if mode == "on" else None,
            )
            serves[mode] = serve
            serve.wait_synced(
                str(repos[mode].repo.head.target), timeout=CONVERGE_TIMEOUT_S, t0=time.perf_counter()
            )
            runs[mode].first_convergence_s = round(time.monotonic() - serve.started, 2)
        time.sleep(SETTLE_S)
        marks = sim.marks()
        profilers = [_profiler(serves[m].pid, m) for m in MODES]
        for i in range(COMMITS):
            order = MODES if i % 2 == 0 else MODES[::-1]
            for mode in order:
                _commit(runs[mode], serves[mode], repos[mode])
                time.sleep(GAP_S)
            print(f"  {i + 1}/{COMMITS} commits per mode", file=sys.stderr, flush=True)
        for profiler in profilers:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=60)
        for mode in MODES:
            runs[mode].requests, runs[mode].writes = sim.count(marks, _names(mode))
            runs[mode].memory_after_commits = memory_mb(serves[mode].pid)
        idle, machine = _idle(serves, sim)
        out["idle_window"] = machine
        for mode in MODES:
            runs[mode].idle = idle[mode]
            runs[mode].status_get = _status_cost(serves[mode])
    finally:
        for mode, serve in serves.items():
            runs[mode].stop_exit = serve.stop()
        sim.stop()
    time.sleep(0.5)  # serve flushes its spans on SIGTERM; the receiver may still be decoding
    received = receiver.snapshot()
    runs["on"].spans = len(received)
    kinds: dict[str, int] = {}
    for span in received:  # "cluster sim-101", "apply b01": counted by their first word
        kind = span.name.split(" ", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    runs["on"].span_kinds = dict(sorted(kinds.items()))
    return runs


def summarise(run: Run, machine: dict[str, Any]) -> dict[str, Any]:
    synced = [c["synced_s"] for c in run.commits]
    seen = [c["revision_seen_s"] for c in run.commits]
    cpu = [c["controller_cpu_s"] for c in run.commits]
    net = [c["controller_cpu_s"] - c["polls"] * run.status_get["cpu_ms"] / 1000 for c in run.commits]
    n = max(1, len(run.commits))
    return {
        "commits": len(run.commits),
        "commit_p50_s": round(median(synced), 3),
        "commit_p99_s": round(percentile(synced, 99), 3),
        "commit_max_s": round(max(synced), 3),
        "commit_min_s": round(min(synced), 3),
        "commit_mean_s": round(sum(synced) / n, 3),
        "revision_seen_p50_s": round(median(seen), 3),
        "controller_cpu_s_per_commit": round(median(cpu), 3),
        "controller_cpu_s_per_commit_net_of_polls": round(median(net), 3),
        "polls_per_commit": round(median([float(c["polls"]) for c in run.commits]), 1),
        "requests_per_commit": round(run.requests / n, 1),
        "writes_per_commit": round(run.writes / n, 1),
        "status_get_p50_ms": run.status_get["p50_ms"],
        "status_get_cpu_ms": run.status_get["cpu_ms"],
        "status_bytes": run.status_get["bytes"],
        "first_convergence_s": run.first_convergence_s,
        "idle_cpu_percent": run.idle["cpu_percent"],
        "sim_idle_cpu_percent": machine["sim_cpu_percent"],
        "idle_machine_busy_percent": machine["machine_busy_percent_of_all_cpus"],
        "watch_streams": run.idle["watch_streams"],
        "rss_mb": max(run.idle["memory_mb"]["VmRSS"], run.memory_after_commits.get("VmRSS", 0.0)),
        "peak_rss_mb": max(run.idle["memory_mb"]["VmHWM"], run.idle["memory_mb"]["VmRSS"]),
        "sim_rss_mb": machine["sim_memory_mb"].get("VmRSS"),
        "spans_exported": run.spans,
        "spans_per_cluster_round": round(run.spans / (CLUSTERS * (len(run.commits) + 1)), 1),
        "span_kinds": run.span_kinds,
        "stop_exit_code": run.stop_exit,
    }


def _previous() -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(RESULT_FILE.read_text())
        return doc
    except (OSError, ValueError):
        return {}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def print_table(out: dict[str, Any], previous: dict[str, Any]) -> None:
    off, on = out["tracing_off"], out["tracing_on"]
    prev_off, prev_on = previous.get("tracing_off") or {}, previous.get("tracing_on") or {}
    print(
        f"fleet serve: {out['clusters']} clusters per controller (sim in its own process, {2 * out['clusters']} "
        f"clusters), {BUNDLES} bundles on every cluster (b00 with a Deployment), {off['commits']} commits per "
        f"mode, alternating; {out['idle_seconds']:g} s idle window"
    )
    print(
        f"load average (1, 5, 15 min) at start {out['load_start']}, at end {out['load_end']}; {out['cpus']} CPUs"
    )
    rows = [
        ("commit -> all Synced p50 (s)", "commit_p50_s", TARGETS["commit_p50_s"]),
        ("commit -> all Synced p99 (s)", "commit_p99_s", TARGETS["commit_p99_s"]),
        ("commit -> all Synced min (s)", "commit_min_s", None),
        ("commit -> revision in status p50 (s)", "revision_seen_p50_s", None),
        ("controller CPU per commit p50 (core-s)", "controller_cpu_s_per_commit", None),
        ("  ... net of status polling (core-s)", "controller_cpu_s_per_commit_net_of_polls", None),
        ("status polls per commit p50", "polls_per_commit", None),
        ("requests to clusters per commit", "requests_per_commit", None),
        ("writes to clusters per commit", "writes_per_commit", None),
        ("GET /api/v1/status p50 (ms)", "status_get_p50_ms", None),
        ("  ... controller CPU per GET (ms)", "status_get_cpu_ms", None),
        ("status document (bytes)", "status_bytes", None),
        ("first convergence (s)", "first_convergence_s", None),
        ("controller idle CPU (% of a core)", "idle_cpu_percent", TARGETS["idle_cpu_percent"]),
        ("sim idle CPU, 2N clusters (% core)", "sim_idle_cpu_percent", None),
        ("machine busy in idle window (% all)", "idle_machine_busy_percent", None),
        ("watch streams open", "watch_streams", None),
        ("controller RSS (MB)", "rss_mb", TARGETS["rss_mb"]),
        ("controller peak RSS (MB)", "peak_rss_mb", None),
        ("sim RSS, 2N clusters (MB)", "sim_rss_mb", None),
        ("spans exported", "spans_exported", None),
        ("spans per cluster round", "spans_per_cluster_round", None),
    ]
    print(f"{'metric':<40}{'off (baseline)':>15}{'on':>10}{'target':>9}{'prev off':>10}{'prev on':>9}")
    for label, key, target in rows:
        print(
            f"{label:<40}{_fmt(off.get(key)):>15}{_fmt(on.get(key)):>10}"
            f"{_fmt(f'<{target:g}' if target else None):>9}{_fmt(prev_off.get(key)):>10}{_fmt(prev_on.get(key)):>9}"
        )
    print(f"spans by name (tracing on): {on['span_kinds']}")
    ov = out["tracing_overhead_percent"]
    print(
        f"tracing overhead: latency p50 {ov['p50']:+g}%, mean {ov['mean']:+g}%; controller CPU per commit "
        f"{ov['cpu_per_commit']:+g}%, net of polling {ov['cpu_per_commit_net']:+g}% "
        f"(target < {TARGETS['tracing_overhead_percent']:g}%)"
    )
    print("verdicts: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in out["verdicts"].items()))


def main() -> None:
    from tests.support import otlp as otlp_support  # the real OTLP/HTTP receiver the tests use

    previous = _previous()
    out: dict[str, Any] = {
        "quick": QUICK,
        "clusters": CLUSTERS,
        "bundles": BUNDLES,
        "deployment_bundle": True,
        "commits_per_mode": COMMITS,
        "idle_seconds": IDLE_S,
        "poll_interval_s": POLL_S,
        "concurrency": CONCURRENCY or "serve default",
        "cpus": os.cpu_count(),
        "load_start": load(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
    }
    with tempfile.TemporaryDirectory(prefix="fleet-bench-serve-") as tmp, otlp_support.running() as receiver:
        work = Path(tempfile.mkdtemp(prefix="fleet-bench-serve-")) if KEEP else Path(tmp)
        if KEEP:
            print(f"  keeping repositories, state and logs in {work}", file=sys.stderr, flush=True)
        runs = run_all(work, receiver, out)
    out["load_end"] = load()
    off = summarise(runs["off"], out["idle_window"])
    on = summarise(runs["on"], out["idle_window"])
    out["tracing_off"], out["tracing_on"] = off, on

    def overhead(key: str) -> float:
        return round(100 * (on[key] / off[key] - 1), 1) if off[key] else 0.0

    out["tracing_overhead_percent"] = {
        "p50": overhead("commit_p50_s"),
        "p99": overhead("commit_p99_s"),
        "mean": overhead("commit_mean_s"),
        "cpu_per_commit": overhead("controller_cpu_s_per_commit"),
        "cpu_per_commit_net": overhead("controller_cpu_s_per_commit_net_of_polls"),
    }
    limit = TARGETS["tracing_overhead_percent"]
    out["verdicts"] = {
        "p50 under 5 s": max(off["commit_p50_s"], on["commit_p50_s"]) < TARGETS["commit_p50_s"],
        "p99 under 5 s": max(off["commit_p99_s"], on["commit_p99_s"]) < TARGETS["commit_p99_s"],
        "idle CPU under 5%": max(off["idle_cpu_percent"], on["idle_cpu_percent"])
        < TARGETS["idle_cpu_percent"],
        "RSS under 250 MB": max(off["rss_mb"], on["rss_mb"]) < TARGETS["rss_mb"],
        "tracing overhead under 10% (p50 latency)": out["tracing_overhead_percent"]["p50"] < limit,
        "tracing overhead under 10% (CPU per commit, net of polling)": out["tracing_overhead_percent"][
            "cpu_per_commit_net"
        ]
        < limit,
        "spans exported with tracing on": on["spans_exported"] > 0,
    }
    out["targets"] = TARGETS
    out["runs"] = {m: r.__dict__ for m, r in runs.items()}
    RESULTS.mkdir(exist_ok=True)
    RESULT_FILE.write_text(json.dumps(out, indent=2) + "\n")
    print_table(out, previous)
    print(f"wrote {RESULT_FILE.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
