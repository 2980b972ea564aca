"""Benchmark of the history (docs/notifications.md): query time on a generated year of a 500-cluster fleet,
and on a live fleet after many commits, with commit-to-Synced latency with and without dead receivers.

Part 1, **a year of history** (in this process, no server): a state database (`fleet.clients.statedb.StateStore`,
schema as `fleet serve` makes it) filled with a generated year of a 500-cluster fleet with 20 bundles:
10 commits a day, each changing one bundle placed on every cluster (one `Synced` entry per cluster), one
drift repair per cluster a day, and a failure on 5 clusters a day: about 2.0 million entries. Then every
question `fleet history` and `fleet status --revision` ask is timed through the store and
`Entry.document()` (what ``GET /api/v1/history`` does, minus HTTP): a cluster's last day, a pair's
latest changes, a bundle's week, one commit fleet-wide (full id and an 8-digit abbreviation), the whole
fleet's last hour, a cluster's whole year (10,000 entries); each the median of 5 runs after one cold run.
Also the retention: deleting one day's entries, batch by batch, and the database's size.

Part 2, **a live fleet**: one `fleet sim` process with 2N clusters and two `fleet serve` processes side
by side ("plain": no receivers; "dead": ``--notify-url`` to a port where nothing listens and
``--commit-status github`` to a server that accepts connections and never answers), each following its own
repository of N clusters and 3 bundles (every bundle all at once on every cluster). Their commits
alternate (plain, dead, dead, plain, ...), each a one-line change of one bundle announced by the signed
webhook, timed from just before the commit to every cluster Synced at it in the status API. After the
commits, `fleet history` (through the API) must answer: every cluster reached every commit of the
changed bundle (N x commits `Synced` entries, each with its author), ``GET /api/v1/revisions/SHA`` of the
last commit names every cluster as holding it (and of a middle one, which every cluster has left since,
its history entries), and the dead receivers' outbox holds every notice.

Run: ``.venv/bin/python -m benchmarks bench_history`` (full: a year of 500 clusters; 100 clusters x 50
commits per controller; about 10-15 minutes) or ``--quick`` (a month of 500 clusters; 10 clusters x 5
commits; about 1 minute). Knobs: FLEET_BENCH_HISTORY_DAYS, FLEET_BENCH_HISTORY_CLUSTERS (part 2, per
controller), FLEET_BENCH_HISTORY_COMMITS (per controller), FLEET_BENCH_HISTORY_KEEP=1. Writes
``benchmarks/results/history.json`` (``history-quick.json``, ``history-custom.json``) and prints a table.

Owns: the benchmark's data, processes, measurements and result file. Does not: assert anything (a missed
target is reported, not raised).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pygit2
import yaml

from fleet.clients import statedb
from fleet.controller import audit, webhook
from fleet.core import history as hist

QUICK = "--quick" in sys.argv
DAYS = int(os.environ.get("FLEET_BENCH_HISTORY_DAYS", "30" if QUICK else "365"))
FLEET_CLUSTERS = 500
FLEET_BUNDLES = 20
COMMITS_PER_DAY = 10
FAILING_PER_DAY = 5
LIVE_CLUSTERS = int(os.environ.get("FLEET_BENCH_HISTORY_CLUSTERS", "10" if QUICK else "100"))
LIVE_COMMITS = int(os.environ.get("FLEET_BENCH_HISTORY_COMMITS", "5" if QUICK else "50"))
KEEP = os.environ.get("FLEET_BENCH_HISTORY_KEEP", "") == "1"
CUSTOM = any(os.environ.get(f"FLEET_BENCH_HISTORY_{k}") for k in ("DAYS", "CLUSTERS", "COMMITS"))
RESULTS = Path(__file__).resolve().parent / "results"
RESULT_FILE = RESULTS / (
    "history-custom.json" if CUSTOM else "history-quick.json" if QUICK else "history.json"
)
SECRET = b"bench-history-webhook-secret"
TARGET_QUERY_S = 1.0
DAY = 86400.0
NOW = 1_800_000_000.0  # a fixed "now" for the generated year (2027-01-15)


# -- part 1: a generated year ---------------------------------------------------------------------------


def sha(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()


def generate(store: statedb.StateStore, *, days: int) -> tuple[int, float, dict[str, Any]]:
    """Fill the store with `days` of history; (entries, seconds, facts for the queries)."""
    rng = random.Random(42)
    clusters = [f"c{i:03d}" for i in range(FLEET_CLUSTERS)]
    bundles = [f"b{i:02d}" for i in range(FLEET_BUNDLES)]
    held = {b: sha("start", b) for b in bundles}
    started = time.perf_counter()
    total = 0
    revisions: list[str] = []
    for day in range(days):
        base = NOW - (days - day) * DAY
        batch: list[hist.Entry] = []
        for n in range(COMMITS_PER_DAY):
            at = base + n * DAY / COMMITS_PER_DAY
            bundle = bundles[rng.randrange(FLEET_BUNDLES)]
            rev = sha(day, n)
            revisions.append(rev)
            for i, c in enumerate(clusters):
                batch.append(
                    hist.Entry(
                        at=at + i * 0.2,
                        cluster=c,
                        bundle=bundle,
                        outcome=hist.SYNCED,
                        from_revision=held[bundle],
                        to_revision=rev,
                        objects={"configured": 1 + i % 3},
                        trace_id=sha("t", day, n, i)[:32],
                        actor=f"author-{n % 7}",
                    )
                )
            held[bundle] = rev
        for c in clusters:
            b = bundles[rng.randrange(FLEET_BUNDLES)]
            batch.append(
                hist.Entry(
                    at=base + rng.uniform(0, DAY),
                    cluster=c,
                    bundle=b,
                    outcome=hist.DRIFT_REPAIRED,
                    from_revision=held[b],
                    to_revision=held[b],
                    objects={"configured": 1},
                    actor=hist.FLEET,
                )
            )
        for c in rng.sample(clusters, FAILING_PER_DAY):
            b = bundles[rng.randrange(FLEET_BUNDLES)]
            batch.append(
                hist.Entry(
                    at=base + rng.uniform(0, DAY),
                    cluster=c,
                    bundle=b,
                    outcome=hist.FAILED,
                    from_revision=held[b],
                    to_revision=held[b],
                    message="Deployment/apps/web: admission webhook denied the request",
                    actor="author-1",
                )
            )
        batch.sort(key=lambda e: e.at)
        store.record_history(tuple(batch))
        total += len(batch)
    facts = {"revision": revisions[len(revisions) // 2], "cluster": clusters[137], "bundle": bundles[3]}
    return total, time.perf_counter() - started, facts


def timed(fn: Callable[[], Any], *, runs: int = 5) -> tuple[float, float, Any]:
    """(cold seconds, median of `runs` warm seconds, last result)."""
    t0 = time.perf_counter()
    result = fn()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        warm.append(time.perf_counter() - t0)
    return cold, statistics.median(warm), result


def year(workdir: Path) -> dict[str, Any]:
    path = workdir / "year" / "state.db"
    store = statedb.StateStore(path)
    entries, seconds, facts = generate(store, days=DAYS)
    print(f"generated {entries:,} entries over {DAYS} days in {seconds:.0f} s", flush=True)

    def ask(**kw: Any) -> Callable[[], list[dict[str, Any]]]:
        q = hist.Query(**kw)
        return lambda: [e.document() for e in store.query_history(q)]

    questions = {
        "a cluster's last day": ask(cluster=facts["cluster"], since=NOW - DAY, limit=100),
        "a pair's latest 100": ask(cluster=facts["cluster"], bundle=facts["bundle"], limit=100),
        "a bundle's last week": ask(bundle=facts["bundle"], since=NOW - 7 * DAY, limit=hist.MAX_LIMIT),
        "one commit fleet-wide (full id)": ask(revision=facts["revision"], limit=hist.MAX_LIMIT),
        "one commit fleet-wide (8 digits)": ask(revision=facts["revision"][:8], limit=hist.MAX_LIMIT),
        "the fleet's last hour": ask(since=NOW - 3600, limit=hist.MAX_LIMIT),
        "the fleet's latest 100": ask(limit=100),
        "a cluster's whole year": ask(cluster=facts["cluster"], limit=hist.MAX_LIMIT),
    }
    out: dict[str, Any] = {"entries": entries, "days": DAYS, "generate_s": round(seconds, 1), "queries": {}}
    for name, fn in questions.items():
        cold, warm, rows = timed(fn)
        out["queries"][name] = {
            "rows": len(rows),
            "cold_ms": round(cold * 1000, 2),
            "warm_ms": round(warm * 1000, 2),
        }
    # Retention: one day's entries, in the batches `fleet serve` uses.
    oldest = NOW - DAYS * DAY
    batches, t0 = [], time.perf_counter()
    deleted = 0
    while True:
        b0 = time.perf_counter()
        n = store.prune_history(before=oldest + DAY, batch=audit.Settings().prune_batch)
        batches.append(time.perf_counter() - b0)
        deleted += n
        if n < audit.Settings().prune_batch:
            break
    out["prune_one_day"] = {
        "deleted": deleted,
        "seconds": round(time.perf_counter() - t0, 3),
        "longest_batch_ms": round(max(batches) * 1000, 1),
    }
    store.close()
    out["db_mb"] = round(sum(p.stat().st_size for p in path.parent.iterdir()) / 1e6, 1)
    return out


# -- part 2: a live fleet ---------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("OTEL_")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Silent:
    """A TCP server that accepts connections and never answers (a receiver that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


class Repo:
    def __init__(self, root: Path, names: list[str]) -> None:
        self.root = root
        self.generation = 0
        self.repo = pygit2.init_repository(str(root), initial_head="main")
        for name in names:
            self._write(
                f"clusters/{name}.yaml",
                f"apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n",
            )
        for b in ("b00", "b01", "b02"):
            self._write(
                f"bundles/{b}/bundle.yaml",
                f"apiVersion: fleet.dev/v1alpha1\nkind: Bundle\nmetadata:\n  name: {b}\nspec:\n  namespace: bench-{b}\n"
                '  placement:\n    clusterSelector: {}\n  rollout:\n    waves: [{name: all, maxConcurrency: "100%"}]\n',
            )
            self._write(f"bundles/{b}/manifests/cm.yaml", self._cm(b, 0))
        self.commit("initial", author="bench")

    @staticmethod
    def _cm(bundle: str, generation: int) -> str:
        return f'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  bundle: {bundle}\n  generation: "{generation}"\n'

    def _write(self, path: str, text: str) -> None:
        full = self.root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text)

    def change(self) -> None:
        self.generation += 1
        self._write("bundles/b01/manifests/cm.yaml", self._cm("b01", self.generation))

    def commit(self, message: str, *, author: str) -> str:
        index = self.repo.index
        index.add_all()
        index.write()
        sig = pygit2.Signature(author, f"{author}@example.com")
        parents = [] if self.repo.head_is_unborn else [self.repo.head.target]
        return str(self.repo.create_commit("HEAD", sig, sig, message, index.write_tree(), parents))


class Serve:
    def __init__(self, name: str, workdir: Path, kubeconfig: Path, names: list[str], args: list[str]) -> None:
        self.name = name
        self.repo = Repo(workdir / f"repo-{name}", names)
        self.log = workdir / f"serve-{name}.log"
        secret = workdir / "secret"
        secret.write_bytes(SECRET)
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fleet.cli", "serve", "--repo", str(self.repo.root), "--kubeconfig",
                 str(kubeconfig), "--state-dir", str(workdir / f"state-{name}"), "--listen", "127.0.0.1:0",
                 "--interval", "1h", "--webhook-secret-file", str(secret), *args],
                stdout=sink, stderr=sink, env=_env(),
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (m := re.search(r"listening on (http://\S+)", self.log.read_text())):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"fleet serve {name} did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        self.url = m.group(1)

    def synced_at(self, sha_: str) -> bool:
        doc = httpx.get(self.url + "/api/v1/status", timeout=30).json()
        clusters = doc.get("clusters") or {}
        return len(clusters) == LIVE_CLUSTERS and all(
            c["state"] == "Synced" and c["revision"] == sha_ for c in clusters.values()
        )

    def wait(self, sha_: str, *, timeout: float = 600.0) -> float:
        t0 = time.monotonic()
        while not self.synced_at(sha_):
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{self.name}: not Synced at {sha_[:12]} within {timeout} s")
            time.sleep(0.05)
        return time.monotonic() - t0

    def commit(self, n: int) -> tuple[str, float]:
        self.repo.change()
        t0 = time.monotonic()
        sha_ = self.repo.commit(f"bench: change {n}", author=f"author-{n % 5}")
        body = b"{}"
        httpx.post(
            self.url + "/api/v1/webhook",
            content=body,
            headers={"X-Hub-Signature-256": webhook.sign_github(body=body, secret=SECRET)},
            timeout=30,
        )
        self.wait(sha_)
        return sha_, time.monotonic() - t0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def live(workdir: Path) -> dict[str, Any]:
    kubeconfig = workdir / "kubeconfig"
    sim = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli", "sim", "--clusters", str(2 * LIVE_CLUSTERS), "--kubeconfig-out", str(kubeconfig)],
        stdout=subprocess.PIPE, stderr=(workdir / "sim.log").open("ab"), env=_env(), text=True,
    )  # fmt: skip
    assert sim.stdout is not None
    if not sim.stdout.readline().startswith("ready "):
        raise RuntimeError("fleet sim did not start")
    names = [c["name"] for c in yaml.safe_load(kubeconfig.read_text())["contexts"]]
    silent = Silent()
    token = workdir / "token"
    token.write_text("bench-token\n")
    dead_args = [
        "--notify-url", f"http://127.0.0.1:{_free_port()}/hook",  # nothing listens there
        "--commit-status", "github", "--commit-status-url", silent.url, "--commit-status-token-file", str(token),
        "--commit-status-repo", "acme/gitops",
    ]  # fmt: skip
    serves = {
        "plain": Serve("plain", workdir, kubeconfig, names[:LIVE_CLUSTERS], []),
        "dead": Serve("dead", workdir, kubeconfig, names[LIVE_CLUSTERS:], dead_args),
    }
    out: dict[str, Any] = {"clusters": LIVE_CLUSTERS, "commits": LIVE_COMMITS}
    try:
        for s in serves.values():
            s.wait(str(s.repo.repo.head.target))
        latencies: dict[str, list[float]] = {"plain": [], "dead": []}
        shas: dict[str, list[str]] = {"plain": [], "dead": []}
        order = ["plain", "dead"]
        for n in range(LIVE_COMMITS):
            for mode in order if n % 2 == 0 else reversed(order):
                sha_, seconds = serves[mode].commit(n)
                latencies[mode].append(seconds)
                shas[mode].append(sha_)
                time.sleep(1.1)  # over the webhook's rate limit
        for mode, values in latencies.items():
            values.sort()
            out[f"commit_to_synced_{mode}"] = {
                "median_s": round(statistics.median(values), 3),
                "p90_s": round(values[int(0.9 * (len(values) - 1))], 3),
                "max_s": round(values[-1], 3),
            }
        # The questions, on the dead receivers' controller (its history is the one at risk).
        s = serves["dead"]
        t0 = time.monotonic()
        doc = httpx.get(
            s.url + "/api/v1/history", params={"bundle": "b01", "limit": "10000"}, timeout=60
        ).json()
        history_s = time.monotonic() - t0
        synced = [e for e in doc["entries"] if e["outcome"] == "Synced"]
        reached = {(e["cluster"], e["toRevision"]) for e in synced}
        expected = {(c, r) for c in names[LIVE_CLUSTERS:] for r in shas["dead"]}
        authors_ok = all(e["actor"].startswith("author-") for e in synced if e["toRevision"] in shas["dead"])
        middle, last = shas["dead"][len(shas["dead"]) // 2], shas["dead"][-1]
        t0 = time.monotonic()
        where = httpx.get(s.url + f"/api/v1/revisions/{middle[:8]}", timeout=60).json()
        revision_s = time.monotonic() - t0
        newest = httpx.get(s.url + f"/api/v1/revisions/{last[:8]}", timeout=60).json()
        metrics = httpx.get(s.url + "/metrics", timeout=30).text
        pending = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("fleet_notifications_pending{")
        )
        out["answers"] = {
            "every_cluster_reached_every_commit": expected <= reached,
            "synced_entries_of_b01": len(synced),
            "authors_recorded": authors_ok,
            "history_query_s": round(history_s, 3),
            "revision_query_s": round(revision_s, 3),
            "last_commit_held_by_clusters": len(newest.get("holders") or {}),
            "middle_commit_held_by_clusters": len(where.get("holders") or {}),  # 0: every cluster moved on
            "middle_commit_history_entries": len(where.get("history") or []),
            "notices_waiting_in_the_outbox": pending,
        }
    finally:
        for s in serves.values():
            s.stop()
        silent.close()
        sim.terminate()
        sim.wait(30)
    return out


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-history-"))
    started = time.time()
    try:
        results: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
            "load_start": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
        }
        results["year"] = year(workdir)
        results["live"] = live(workdir)
        results["load_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if KEEP:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    RESULT_FILE.write_text(json.dumps(results, indent=2) + "\n")
    y = results["year"]
    print(
        f"\nhistory of {FLEET_CLUSTERS} clusters x {y['days']} days: {y['entries']:,} entries, {y['db_mb']} MB (load {results['load_start']} -> {results['load_end']})"
    )
    print(f"{'question':36} {'rows':>6} {'cold ms':>9} {'warm ms':>9}")
    worst = 0.0
    for name, q in y["queries"].items():
        worst = max(worst, q["cold_ms"], q["warm_ms"])
        print(f"{name:36} {q['rows']:>6} {q['cold_ms']:>9.2f} {q['warm_ms']:>9.2f}")
    p = y["prune_one_day"]
    print(
        f"retention: one day ({p['deleted']:,} entries) deleted in {p['seconds']} s, longest batch {p['longest_batch_ms']} ms"
    )
    verdict = "met" if worst / 1000 < TARGET_QUERY_S else "MISSED"
    print(f"target: every question under {TARGET_QUERY_S:g} s: {verdict} (slowest {worst:.1f} ms)")
    lv = results["live"]
    print(f"\nlive: {lv['clusters']} clusters per controller, {lv['commits']} commits each (alternating)")
    for mode in ("plain", "dead"):
        c = lv[f"commit_to_synced_{mode}"]
        print(
            f"  commit to Synced, {mode:5}: median {c['median_s']} s, p90 {c['p90_s']} s, max {c['max_s']} s"
        )
    for k, v in lv["answers"].items():
        print(f"  {k}: {v}")
    print(f"\nwrote {RESULT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
