"""Benchmark of rollouts (docs/rollouts.md): how fast a wave follows the one before it, and what rollouts
cost the controller per commit.

Setup: one `fleet sim --clusters 3N --workload-delay D` in its own process and three `fleet serve`
processes, each following its own git repository (pygit2) with N cluster files and one bundle ``web``: a
Deployment whose image changes with every commit (the sim makes a Deployment available D seconds after
its new spec; fleet sees that on its watch). The three differ only in the bundle's ``spec.rollout``:

- ``waves``: four waves of 1, 33, 33 and 33 clusters (selected by a ``wave`` label), each all at once
  (``maxConcurrency: "100%"``);
- ``default``: no ``spec.rollout``, the default (one wave, 25 % in flight);
- ``single``: one wave, all at once (``maxConcurrency: "100%"``: how fleet behaved before rollouts).

1. wave transitions (``waves`` alone): for each commit, each cluster's apply time is the time the sim
   answered the write of the Deployment (its journal), and it turned healthy D seconds later (the sim's
   workload delay); the delay of a transition is the first apply of wave k+1 minus the last "healthy" of
   wave k: what fleet adds between a wave finishing and the next one starting (watch event, round,
   health, the state machine, storing the rollout, waking the next clusters). Target: p99 under 1 s.
2. controller CPU per commit (``default`` and ``single`` side by side, their commits alternating so the
   machine's other load hits both alike): ``/proc/<pid>/stat`` utime+stime from just before the commit to
   every cluster Synced at it, net of the status API polled every 50 ms meanwhile (polls x the CPU of one
   status GET, measured on each controller while idle: a slower strategy is polled longer). Target: the
   default rollout costs under 10 % more than a single 100 % wave.

Run: ``.venv/bin/python -m benchmarks bench_rollout`` (100 clusters per controller, 10 commits per mode;
a few minutes) or ``--quick`` (12 clusters, 3 commits); FLEET_BENCH_ROLLOUT_CLUSTERS and
FLEET_BENCH_ROLLOUT_COMMITS change those. Writes ``benchmarks/results/rollout.json`` (``rollout-quick.json``)
and prints a table.

Owns: the benchmark's repositories, processes and measurements. Does not: assert anything (a missed
target is reported, not raised) or change how `fleet serve` or `fleet sim` behave.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pygit2
import yaml

from benchmarks.bench_serve import _env, cpu_seconds, load, median, percentile

QUICK = "--quick" in sys.argv
CLUSTERS = int(os.environ.get("FLEET_BENCH_ROLLOUT_CLUSTERS", "12" if QUICK else "100"))
COMMITS = int(os.environ.get("FLEET_BENCH_ROLLOUT_COMMITS", "3" if QUICK else "10"))
DELAY_S = 0.5
POLL_S = 0.05
TIMEOUT_S = 180.0
MODES = ("waves", "default", "single")
RESULTS = Path(__file__).resolve().parent / "results"


def _wave_of(index: int) -> str:
    """Cluster 1 is the canary; the rest split in three equal waves."""
    if index == 0:
        return "canary"
    third = max(1, (CLUSTERS - 1 + 2) // 3)
    return f"w{2 + (index - 1) // third}"


def _rollout(mode: str) -> str:
    if mode == "default":
        return ""
    if mode == "single":
        return '  rollout:\n    waves: [{name: all, maxConcurrency: "100%"}]\n'
    waves = "".join(
        f'      - {{name: {w}, placement: {{clusterSelector: {{matchLabels: {{wave: {w}}}}}}}, maxConcurrency: "100%"}}\n'
        for w in ("canary", "w2", "w3")
    )
    return f'  rollout:\n    waves:\n{waves}      - {{name: w4, maxConcurrency: "100%"}}\n'


def _deployment(generation: int) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
          image: nginx:1.{generation}
"""


class Repo:
    def __init__(self, root: Path, *, mode: str, names: list[str]) -> None:
        self.root = root
        self.generation = 0
        self.repo = pygit2.init_repository(str(root), initial_head="main")
        self.waves: dict[str, str] = {}
        for i, name in enumerate(names):
            wave = _wave_of(i)
            self.waves[name] = wave
            self._write(
                f"clusters/{name}.yaml",
                f"apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n"
                f"  labels: {{env: bench, wave: {wave}}}\n",
            )
        self._write(
            "bundles/web/bundle.yaml",
            "apiVersion: fleet.dev/v1alpha1\nkind: Bundle\nmetadata:\n  name: web\nspec:\n  namespace: web\n"
            "  placement:\n    clusterSelector: {matchLabels: {env: bench}}\n" + _rollout(mode),
        )
        self._write("bundles/web/deployment.yaml", _deployment(0))
        self.commit("initial")

    def _write(self, path: str, text: str) -> None:
        full = self.root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text)

    def bump(self) -> str:
        self.generation += 1
        self._write("bundles/web/deployment.yaml", _deployment(self.generation))
        return self.commit(f"web: nginx 1.{self.generation}")

    def commit(self, message: str) -> str:
        index = self.repo.index
        index.add_all()
        index.write()
        sig = pygit2.Signature("bench", "bench@example.com")
        parents = [] if self.repo.head_is_unborn else [self.repo.head.target]
        return str(self.repo.create_commit("HEAD", sig, sig, message, index.write_tree(), parents))


class Sim:
    def __init__(self, workdir: Path, clusters: int) -> None:
        self.kubeconfig = workdir / "kubeconfig"
        self.log = workdir / "sim.log"
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fleet.cli",
                    "sim",
                    "--clusters",
                    str(clusters),
                    "--workload-delay",
                    f"{DELAY_S}s",
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
        doc = yaml.safe_load(self.kubeconfig.read_text())
        servers = {c["name"]: c["cluster"]["server"] for c in doc["clusters"]}
        self.admin = next(iter(servers.values())).split("/clusters/")[0]
        self.client = httpx.Client(timeout=30)

    def journal(self, name: str, since: int = 0) -> list[dict[str, Any]]:
        resp = self.client.get(f"{self.admin}/_sim/clusters/{name}/journal", params={"since": str(since)})
        resp.raise_for_status()
        return list(resp.json()["requests"])

    def mark(self, names: list[str]) -> dict[str, int]:
        return {n: (self.journal(n) or [{"seq": 0}])[-1]["seq"] for n in names}

    def applied_at(self, name: str, since: int) -> float | None:
        """When the sim answered the write that changed the Deployment, after `since`."""
        for e in self.journal(name, since):
            if e["mutated"] and "/deployments" in e["path"] and e["method"] in ("PATCH", "PUT", "POST"):
                return float(e["time"])
        return None

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Serve:
    def __init__(self, *, repo: Path, sim: Sim, workdir: Path, tag: str) -> None:
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
            "1s",
        ]
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(argv, stdout=sink, stderr=sink, env=_env())
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            m = re.search(r"listening on (http://\S+)", self.log.read_text(errors="replace"))
            url = m.group(1) if m else None
            if self.proc.poll() is not None:
                raise RuntimeError(f"fleet serve exited:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        if url is None:
            raise RuntimeError("fleet serve did not listen")
        self.client = httpx.Client(base_url=url, timeout=10)

    def wait_synced(self, sha: str, count: int) -> int:
        """Poll the status every POLL_S until every cluster is Synced at `sha`; returns the polls made."""
        deadline = time.monotonic() + TIMEOUT_S
        polls = 0
        while time.monotonic() < deadline:
            doc = self.client.get("/api/v1/status").json()
            polls += 1
            clusters = doc.get("clusters") or {}
            if len(clusters) == count and all(
                c.get("state") == "Synced" and c.get("revision") == sha for c in clusters.values()
            ):
                return polls
            time.sleep(POLL_S)
        raise TimeoutError(
            f"not Synced at {sha[:7]} within {TIMEOUT_S:.0f} s:\n{self.log.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()


_STATUS_COST: dict[int, float] = {}


def status_cost(serve: Serve, samples: int = 40) -> float:
    """CPU seconds one status GET costs the controller, measured once per controller while it is idle."""
    pid = serve.proc.pid
    if pid not in _STATUS_COST:
        time.sleep(1.0)
        before = cpu_seconds(pid)
        for _ in range(samples):
            serve.client.get("/api/v1/status")
        _STATUS_COST[pid] = (cpu_seconds(pid) - before) / samples
    return _STATUS_COST[pid]


def transitions(sim: Sim, repo: Repo, marks: dict[str, int]) -> list[float]:
    """Delays between the last 'healthy' of a wave and the first apply of the next, for one commit."""
    applied = {n: sim.applied_at(n, marks[n]) for n in repo.waves}
    order = ["canary", "w2", "w3", "w4"]
    out = []
    for a, b in itertools.pairwise(order):
        done = [t for n, t in applied.items() if repo.waves[n] == a and t is not None]
        nxt = [t for n, t in applied.items() if repo.waves[n] == b and t is not None]
        if done and nxt:
            delay = min(nxt) - (max(done) + DELAY_S)
            out.append(delay)
            if delay < 0:  # the next wave started before this one was all applied: show who and when
                late = max((t, n) for n, t in applied.items() if repo.waves[n] == a and t is not None)
                early = min((t, n) for n, t in applied.items() if repo.waves[n] == b and t is not None)
                print(
                    f"  NEGATIVE {a}->{b}: last of {a} {late[1]} at {late[0]:.3f}, first of {b} {early[1]} at {early[0]:.3f}",
                    flush=True,
                )
    return out


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    out: dict[str, Any] = {
        "clusters": CLUSTERS,
        "commits": COMMITS,
        "workload_delay_s": DELAY_S,
        "load_before": load(),
    }
    with tempfile.TemporaryDirectory(prefix="fleet-bench-rollout-") as tmp:
        work = Path(tmp)
        sim = Sim(work, 3 * CLUSTERS)
        serves: dict[str, Serve] = {}
        repos: dict[str, Repo] = {}
        try:
            for i, mode in enumerate(MODES):
                names = [f"sim-{j:03d}" for j in range(1 + i * CLUSTERS, 1 + (i + 1) * CLUSTERS)]
                repos[mode] = Repo(work / f"repo-{mode}", mode=mode, names=names)
                serves[mode] = Serve(repo=repos[mode].root, sim=sim, workdir=work, tag=mode)
            for mode in MODES:
                serves[mode].wait_synced(str(repos[mode].repo.head.target), CLUSTERS)
            print(f"first convergence done ({CLUSTERS} clusters x 3 controllers)", flush=True)

            delays: list[float] = []
            for n in range(COMMITS):
                marks = sim.mark(list(repos["waves"].waves))
                sha = repos["waves"].bump()
                serves["waves"].wait_synced(sha, CLUSTERS)
                got = transitions(sim, repos["waves"], marks)
                delays += got
                print(f"waves commit {n + 1}: transitions {', '.join(f'{d:.3f}' for d in got)} s", flush=True)
            out["transition_s"] = {
                "n": len(delays),
                "p50": round(median(delays), 3),
                "p99": round(percentile(delays, 99), 3),
                "max": round(max(delays), 3),
            }

            for mode in ("default", "single"):
                status_cost(serves[mode])  # measured before the commits, while both are idle
            out["status_get_cpu_ms"] = {
                m: round(status_cost(serves[m]) * 1000, 2) for m in ("default", "single")
            }
            cpu: dict[str, list[float]] = {"default": [], "single": []}
            synced: dict[str, list[float]] = {"default": [], "single": []}
            for n in range(COMMITS):
                for mode in ("default", "single") if n % 2 == 0 else ("single", "default"):
                    pid = serves[mode].proc.pid
                    before, t0 = cpu_seconds(pid), time.perf_counter()
                    sha = repos[mode].bump()
                    polls = serves[mode].wait_synced(sha, CLUSTERS)
                    synced[mode].append(time.perf_counter() - t0)
                    # net of the status polling (a slower strategy is polled more often)
                    cpu[mode].append(cpu_seconds(pid) - before - polls * status_cost(serves[mode]))
                print(
                    f"cpu commit {n + 1}: default {cpu['default'][-1]:.2f} s, single {cpu['single'][-1]:.2f} s",
                    flush=True,
                )
            for mode in ("default", "single"):
                out[mode] = {
                    "cpu_per_commit_s": round(median(cpu[mode]), 3),
                    "commit_to_synced_p50_s": round(median(synced[mode]), 3),
                    "commit_to_synced_max_s": round(max(synced[mode]), 3),
                }
            out["default_cpu_over_single"] = round(
                out["default"]["cpu_per_commit_s"] / out["single"]["cpu_per_commit_s"] - 1, 3
            )
        finally:
            for s in serves.values():
                s.stop()
            sim.stop()
    out["load_after"] = load()
    name = "rollout-quick.json" if QUICK else "rollout.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")
    t = out["transition_s"]
    rows = [
        ("wave transition p50 / p99 / max (s)", f"{t['p50']} / {t['p99']} / {t['max']}", "p99 < 1 s"),
        ("CPU per commit, default rollout (s)", str(out["default"]["cpu_per_commit_s"]), ""),
        ("CPU per commit, single 100% wave (s)", str(out["single"]["cpu_per_commit_s"]), ""),
        ("default over single", f"{out['default_cpu_over_single'] * 100:+.1f} %", "< +10 %"),
        (
            "commit to Synced p50, default / single (s)",
            f"{out['default']['commit_to_synced_p50_s']} / {out['single']['commit_to_synced_p50_s']}",
            "",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(
        f"\nrollouts, {CLUSTERS} clusters per controller, {COMMITS} commits per mode, load {out['load_before']} -> {out['load_after']}"
    )
    for label, value, target in rows:
        print(f"  {label:<{width}}  {value:<22} {target}")
    print(f"written to {RESULTS / name}")


if __name__ == "__main__":
    os.environ.setdefault("OTEL_SDK_DISABLED", "true")
    main()
