"""Benchmark of `fleet serve` at scale: N simulated clusters (1,000 by default), 10 bundles each, one bundle
changed per commit with a single 100 % wave: commit -> every cluster Synced (p50/p99 over the commits),
requests per changed cluster per commit (from the sim's journal), the controller's CPU per commit and its
RSS per 1,000 clusters; with the watch caches (`cache`, the default) and without them (`baseline`, the behaviour before:
``FLEET_WATCH_CACHE=0``) in the same run (docs/reconcile.md, "Reading from the watch caches").

Setup: one `fleet sim --clusters N` in its own process (waits for its ``ready`` line), and for the
two-replica mode the replicas' management cluster in another (`fleet sim --names mgmt`: an API server of
its own, as in a deployment; inside the clusters' sim its Lease renewals waited behind 1,000 clusters'
requests on that one event loop, and the replicas lost their leases); the repository of
`benchmarks.bench_serve` (pygit2; bundle ``b00`` a Deployment, a Service and a ConfigMap, ``b01``-``b09``
two ConfigMaps and a Service each, every bundle on every cluster, ``rollout.waves: [{maxConcurrency:
100%}]``). A `fleet sync --no-wait` first writes every cluster once, so that every mode starts on
converged clusters. The modes run one after the other on the same clusters, each with a `fleet serve` of its own
(``--interval 1h``: only the signed webhook triggers fetches; its own state dir): first convergence, then
``COMMITS`` commits each changing one line of bundle ``b01`` (so every cluster changes), announced by the
webhook, the status API polled every ``POLL_S`` (2 s above 200 clusters: a status document of 1,000
clusters cost the controller 0.1-0.2 s of CPU, 0.02 s now, which would distort what is measured) until
every cluster is Synced at that commit. "commit -> Synced" is the wall-clock time of the last cluster's apply of the
changed object in the sim's journal (a ConfigMap is Synced once applied), minus the time just before the
commit; the status poll confirms it (its own time is reported too, coarser by up to ``POLL_S``). The
controller's CPU per commit is net of the polling (polls x the CPU of one status GET). After each
commit the sim's journal of every cluster is read (watch streams left out: they are opened once, not per
commit) and split into reads, writes and Kubernetes Events (fleet's courtesy reports, written by their own
clients). RSS is the controller's VmRSS after its commits, also scaled to 1,000 clusters.

Run: ``.venv/bin/python -m benchmarks bench_scale`` (1,000 clusters, 5 commits per mode) or ``--quick``
(50 clusters, 3 commits per mode). Knobs: FLEET_BENCH_SCALE_CLUSTERS, FLEET_BENCH_SCALE_COMMITS,
FLEET_BENCH_SCALE_MODES (``cache,baseline``), FLEET_BENCH_SCALE_CONCURRENCY (``--concurrency`` of serve),
FLEET_BENCH_SCALE_KEEP=1 (keep the work dir and print it). Writes ``benchmarks/results/scale.json``
(``scale-quick.json``, ``scale-<N>.json`` for other cluster counts) and prints a table.

Owns: the benchmark's processes, measurements and result file. Does not: assert anything (a missed target
is reported, not raised) or change how `fleet serve` or `fleet sim` behave.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.bench_serve import SECRET, Repo, cpu_seconds, load, memory_mb, percentile
from fleet.controller import webhook

QUICK = "--quick" in sys.argv
CLUSTERS = int(os.environ.get("FLEET_BENCH_SCALE_CLUSTERS", "50" if QUICK else "1000"))
COMMITS = int(os.environ.get("FLEET_BENCH_SCALE_COMMITS", "3" if QUICK else "5"))
# "-2r": two replicas sharing the clusters (docs/scaling.md), when this fleet serve has --management-kubeconfig.
REPLICAS_BUILT = importlib.util.find_spec("fleet.cli.replication") is not None
DEFAULT_MODES = "cache,baseline,cache-2r" if REPLICAS_BUILT else "cache,baseline"
MODES = [m for m in os.environ.get("FLEET_BENCH_SCALE_MODES", DEFAULT_MODES).split(",") if m]
CONCURRENCY = os.environ.get("FLEET_BENCH_SCALE_CONCURRENCY", "")
KEEP = os.environ.get("FLEET_BENCH_SCALE_KEEP", "") == "1"
# A status document of 1,000 clusters cost the controller ~0.1-0.2 s of CPU (a third of its CPU when polled
# every 0.5 s; 0.02 s since the rollouts' documents are built once per change): the status is polled
# sparsely, and the time of every cluster's apply comes from the journal.
POLL_S = 2.0 if CLUSTERS > 200 else 0.1
SETTLE_S = 3.0  # after every cluster is Synced: the rounds that follow a commit (rollout looks) finish
GAP_S = 1.1  # serve's webhook rate limit: one fetch per second
CONVERGE_TIMEOUT_S = 3600.0
COMMIT_TIMEOUT_S = 600.0
RESULTS = Path(__file__).resolve().parent / "results"
RESULT_FILE = RESULTS / (
    "scale-quick.json"
    if QUICK and CLUSTERS == 50
    else "scale.json"
    if CLUSTERS == 1000
    else f"scale-{CLUSTERS}.json"
)
CHANGED_PATH = "/api/v1/namespaces/bench-b01/configmaps/settings"  # what each commit changes
TARGETS = {"requests_per_changed_cluster": 1.0, "commit_p99_s_two_replicas": 5.0}


def _env(mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("OTEL_")}
    env["OTEL_SDK_DISABLED"] = "true"
    if mode == "baseline":
        env["FLEET_WATCH_CACHE"] = "0"
    return env


class Sim:
    """`fleet sim --names ... --kubeconfig-out F` in its own process: the N clusters, or (`management`) the
    replicas' management cluster alone."""

    def __init__(self, workdir: Path, *, management: bool = False) -> None:
        tag = "mgmt" if management else "sim"
        self.kubeconfig = workdir / ("kubeconfig-mgmt" if management else "kubeconfig")
        self.log = workdir / f"{tag}.log"
        started = time.monotonic()
        which = ["--names", "mgmt"] if management else ["--clusters", str(CLUSTERS)]
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fleet.cli", "sim", *which, "--kubeconfig-out", str(self.kubeconfig)],
                stdout=subprocess.PIPE,
                stderr=sink,
                env=_env("sim"),
                text=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"fleet sim did not start: {line!r}\n{self.log.read_text()[-2000:]}")
        self.start_s = time.monotonic() - started
        doc = yaml.safe_load(self.kubeconfig.read_text())
        self.names = [c["name"] for c in doc["clusters"]]
        self.admin = doc["clusters"][0]["cluster"]["server"].split("/clusters/")[0]
        self.http = httpx.Client(timeout=60)

    def journal(self, name: str, since: int = 0) -> list[dict[str, Any]]:
        resp = self.http.get(f"{self.admin}/_sim/clusters/{name}/journal", params={"since": str(since)})
        resp.raise_for_status()
        return list(resp.json()["requests"])

    def marks(self) -> dict[str, int]:
        out = {}
        for name in self.names:
            entries = self.journal(name)
            out[name] = entries[-1]["seq"] if entries else 0
        return out

    def requests_since(self, marks: dict[str, int], *, path: str) -> tuple[dict[str, int], list[float]]:
        """Requests every cluster journaled since `marks`, by what they were: read, write, event; watch
        streams (opened once, not per commit) counted apart; and per cluster the wall-clock time of the
        first write to `path` (the changed object), when there was one."""
        out = {"read": 0, "write": 0, "event": 0, "watch": 0, "clusters_written": 0}
        applied: list[float] = []
        for name in self.names:
            wrote = False
            entries = self.journal(name, marks.get(name, 0))
            times = [e["time"] for e in entries if e["method"] == "PATCH" and e["path"] == path]
            if times:
                applied.append(min(times))
            for e in entries:
                if "watch=true" in str(e.get("query") or ""):
                    out["watch"] += 1
                elif "/events" in str(e["path"]):
                    out["event"] += 1
                elif e["method"] == "GET":
                    out["read"] += 1
                else:
                    out["write"] += 1
                    wrote = True
            out["clusters_written"] += wrote
        return out, applied

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Serve:
    """`fleet serve` in its own process (one mode); the URL comes from its log."""

    def __init__(self, *, repo: Path, sim: Sim, workdir: Path, mode: str, tag: str, args: list[str]) -> None:
        secret_file = workdir / "webhook-secret"
        secret_file.write_bytes(SECRET + b"\n")
        self.log = workdir / f"serve-{tag}.log"
        argv = [sys.executable, "-m", "fleet.cli", "serve", "--repo", str(repo)]
        argv += ["--kubeconfig", str(sim.kubeconfig), "--state-dir", str(workdir / f"state-{tag}")]
        argv += ["--listen", "127.0.0.1:0", "--interval", "1h", "--webhook-secret-file", str(secret_file)]
        argv += args
        if CONCURRENCY:
            argv += ["--concurrency", CONCURRENCY]
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(argv, stdout=sink, stderr=sink, env=_env(mode))
        self.pid = self.proc.pid
        deadline = time.monotonic() + 120
        url = ""
        while not url and time.monotonic() < deadline:
            m = re.search(r"listening on (http://\S+)", self.log.read_text(errors="replace"))
            if m:
                url = m.group(1)
            elif self.proc.poll() is not None:
                raise RuntimeError(f"fleet serve exited {self.proc.returncode}:\n{self.logs()}")
            else:
                time.sleep(0.05)
        if not url:
            raise RuntimeError(f"fleet serve did not listen:\n{self.logs()}")
        self.client = httpx.Client(base_url=url, timeout=60)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def webhook(self) -> None:
        body = json.dumps({"ref": "refs/heads/main"}).encode()
        headers = {
            "X-Hub-Signature-256": webhook.sign_github(body=body, secret=SECRET),
            "X-GitHub-Event": "push",
            "Content-Type": "application/json",
        }
        self.client.post("/api/v1/webhook", content=body, headers=headers)

    def synced(self, sha: str) -> tuple[set[str], dict[str, int]]:
        """The clusters this process reports Synced at `sha` (a replica: those it owns), and a count of
        every state it reports."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"fleet serve exited {self.proc.returncode}:\n{self.logs()}")
        doc = self.client.get("/api/v1/status").json()
        self.polls += 1
        done: set[str] = set()
        states: dict[str, int] = {}
        for name, c in (doc.get("clusters") or {}).items():
            at = c.get("revision") == sha
            if c.get("state") == "Synced" and at:
                done.add(name)
            k = f"{c.get('state')}@{'new' if at else 'old'}"
            states[k] = states.get(k, 0) + 1
        return done, states

    polls = 0

    def status_cpu_s(self, samples: int = 7) -> float:
        """The controller's CPU for one GET /api/v1/status (the commits' polling is netted out with it): the
        least of several single GETs, so that background work (watch reconnects, re-checks) is not counted."""
        costs = []
        for _ in range(samples):
            cpu0 = cpu_seconds(self.pid)
            self.client.get("/api/v1/status")
            costs.append(cpu_seconds(self.pid) - cpu0)
            time.sleep(0.2)
        return min(costs)

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_synced(serves: list[Serve], sim: Sim, sha: str, *, timeout: float, t0: float) -> float:
    """Poll every process's status until the union of what they report Synced at `sha` is every cluster."""
    deadline = t0 + timeout
    for serve in serves:
        serve.polls = 0
    states: list[dict[str, int]] = []
    while time.perf_counter() < deadline:
        done: set[str] = set()
        states = []
        for serve in serves:
            mine, counted = serve.synced(sha)
            done |= mine
            states.append(counted)
        if done >= set(sim.names):
            return time.perf_counter() - t0
        time.sleep(POLL_S)
    raise TimeoutError(
        f"not every cluster Synced at {sha[:7]} within {timeout:.0f} s: {states}\n{serves[0].logs()}"
    )


def start(mode: str, repo: Repo, sim: Sim, work: Path, management: Sim | None) -> list[Serve]:
    """One `fleet serve`, or two replicas sharing the clusters through Leases on the management cluster."""
    if not mode.endswith("-2r"):
        return [Serve(repo=repo.root, sim=sim, workdir=work, mode=mode, tag=mode, args=[])]
    assert management is not None
    args = [
        "--management-kubeconfig",
        str(management.kubeconfig),
        "--management-context",
        management.names[0],
    ]
    args += ["--shards", "32"]
    return [
        Serve(repo=repo.root, sim=sim, workdir=work, mode=mode, tag=f"{mode}-{i}", args=args) for i in (1, 2)
    ]


def run_mode(mode: str, repo: Repo, sim: Sim, work: Path, management: Sim | None) -> dict[str, Any]:
    replicas = 2 if mode.endswith("-2r") else 1
    print(f"-- {mode}: starting {replicas} fleet serve on {CLUSTERS} clusters", flush=True)
    out: dict[str, Any] = {"mode": mode, "replicas": replicas, "commits": []}
    t0 = time.perf_counter()
    serves = start(mode, repo, sim, work, management)
    try:
        head = str(repo.repo.head.target)
        out["first_convergence_s"] = round(
            wait_synced(serves, sim, head, timeout=CONVERGE_TIMEOUT_S, t0=t0), 2
        )
        print(f"   converged in {out['first_convergence_s']} s", flush=True)
        time.sleep(SETTLE_S)  # watch streams open, caches listed
        status_cpu = [serve.status_cpu_s() for serve in serves]
        out["status_get_cpu_s"] = [round(c, 3) for c in status_cpu]
        for i in range(COMMITS):
            marks = sim.marks()
            cpu0 = sum(cpu_seconds(serve.pid) for serve in serves)
            repo.change_one_line()
            t0, wall0 = time.perf_counter(), time.time()
            sha = repo.commit(f"bench: {mode} commit {i + 1}")
            for serve in serves:
                serve.webhook()
            synced = wait_synced(serves, sim, sha, timeout=COMMIT_TIMEOUT_S, t0=t0)
            time.sleep(SETTLE_S)
            polling = sum(serve.polls * c for serve, c in zip(serves, status_cpu, strict=True))
            cpu = sum(cpu_seconds(serve.pid) for serve in serves) - cpu0 - polling
            counts, applied = sim.requests_since(marks, path=CHANGED_PATH)
            per = {k: round(v / CLUSTERS, 2) for k, v in counts.items() if k != "clusters_written"}
            last = max(applied) - wall0 if len(applied) == CLUSTERS else float("nan")
            row = {
                "polls": sum(serve.polls for serve in serves),
                "cpu_raw_s": round(cpu + polling, 2),
                "applied_all_s": round(last, 2),
                "applied_p50_s": round(percentile([t - wall0 for t in applied], 50), 2) if applied else None,
                "synced_s": round(synced, 2),
                "cpu_s": round(cpu, 2),
                "counts": counts,
                "per_cluster": per,
            }
            out["commits"].append(row)
            print(
                f"   commit {i + 1}: every cluster applied in {last:.2f} s (half in {row['applied_p50_s']} s), "
                f"all Synced in the status by {synced:.1f} s; per cluster {per}; controller CPU {cpu:.1f} s "
                "(status polling netted out)",
                flush=True,
            )
            time.sleep(GAP_S)
        memory = [memory_mb(serve.pid) for serve in serves]
        out["memory_mb"] = {k: round(sum(m[k] for m in memory), 1) for k in ("VmRSS", "VmHWM")}
    finally:
        for serve in serves:
            serve.stop()
    return out


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    synced = [c["applied_all_s"] for c in run["commits"]]
    status = [c["synced_s"] for c in run["commits"]]
    per = [c["per_cluster"] for c in run["commits"]]
    mean = {k: round(sum(p[k] for p in per) / len(per), 2) for k in ("read", "write", "event", "watch")}
    rss = run.get("memory_mb", {}).get("VmRSS", 0.0)
    return {
        "commit_p50_s": round(percentile(synced, 50), 2),
        "commit_p99_s": round(percentile(synced, 99), 2),
        "status_synced_p50_s": round(percentile(status, 50), 2),
        "requests_per_changed_cluster": round(mean["read"] + mean["write"], 2),
        "reads_per_changed_cluster": mean["read"],
        "writes_per_changed_cluster": mean["write"],
        "events_per_changed_cluster": mean["event"],
        "watch_requests_per_cluster": mean["watch"],
        "controller_cpu_s_per_commit": round(
            sum(c["cpu_s"] for c in run["commits"]) / len(run["commits"]), 2
        ),
        "rss_mb": rss,
        "rss_mb_per_1000_clusters": round(rss * 1000 / CLUSTERS, 1),
        "first_convergence_s": run["first_convergence_s"],
    }


def print_table(out: dict[str, Any]) -> None:
    print(f"\nbench_scale: {CLUSTERS} clusters x 10 bundles, {COMMITS} commits per mode (-2r: two replicas)")
    cols = [
        ("commit_p50_s", "p50 s"),
        ("commit_p99_s", "p99 s"),
        ("status_synced_p50_s", "status p50 s"),
        ("requests_per_changed_cluster", "req/cluster"),
        ("reads_per_changed_cluster", "reads"),
        ("writes_per_changed_cluster", "writes"),
        ("events_per_changed_cluster", "events"),
        ("controller_cpu_s_per_commit", "CPU s/commit"),
        ("rss_mb", "RSS MB"),
        ("rss_mb_per_1000_clusters", "RSS MB/1000"),
        ("first_convergence_s", "start s"),
    ]
    print(f"{'mode':<10}" + "".join(f"{title:>14}" for _, title in cols))
    for mode, summary in out["summary"].items():
        print(f"{mode:<10}" + "".join(f"{summary[k]!s:>14}" for k, _ in cols))
    print(f"load average before {out['load_before']}, after {out['load_after']}")


def cold_sync(repo: Repo, sim: Sim) -> float:
    """Every cluster written once by `fleet sync`, so that every mode starts on converged clusters (its
    start is reads only, and no mode's memory holds the garbage of a cold apply)."""
    t0 = time.perf_counter()
    argv = [sys.executable, "-m", "fleet.cli", "sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig)]
    argv += ["--no-wait", "--concurrency", "16", "--format", "json"]
    done = subprocess.run(
        argv, env=_env("sync"), capture_output=True, timeout=CONVERGE_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"fleet sync failed ({done.returncode}):\n{done.stderr.decode()[-2000:]}")
    return round(time.perf_counter() - t0, 1)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-scale-"))
    out: dict[str, Any] = {"clusters": CLUSTERS, "commits_per_mode": COMMITS, "load_before": load()}
    started = time.time()
    sim = Sim(work)
    out["sim_start_s"] = round(sim.start_s, 2)
    print(f"fleet sim with {CLUSTERS} clusters ready in {sim.start_s:.1f} s", flush=True)
    # The replicas' management cluster is an API server of its own, as in a real deployment: inside the
    # clusters' sim, its Lease renewals waited behind 1,000 clusters' requests on that one event loop.
    management = Sim(work, management=True) if any(m.endswith("-2r") for m in MODES) else None
    try:
        repo = Repo(work / "repo", names=sim.names)
        out["cold_sync_s"] = cold_sync(repo, sim)
        print(f"cold fleet sync of every cluster: {out['cold_sync_s']} s", flush=True)
        runs = {mode: run_mode(mode, repo, sim, work, management) for mode in MODES}
    finally:
        sim.stop()
        if management is not None:
            management.stop()
        if KEEP:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    out["runs"] = runs
    out["summary"] = {mode: summarise(run) for mode, run in runs.items()}
    out["load_after"] = load()
    out["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    out["targets"] = TARGETS
    RESULTS.mkdir(exist_ok=True)
    RESULT_FILE.write_text(json.dumps(out, indent=2) + "\n")
    print_table(out)
    print(f"results: {RESULT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
