"""Replicas of `fleet serve` as real processes sharing one management cluster (`fleet sim`), for the
failover tests of tests/e2e/test_replicas_failover.py: starting and signalling replicas, who owns which
shard (their status documents), and the journals read back as facts: who wrote which cluster when, who
acquired which shard lease when, and the check that each shard had at most one writer at every moment.
"""

from __future__ import annotations

import re
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.core import leases, sharding
from fleet.sim import testing
from tests.support import serve
from tests.support.reconcile import GitOpsRepo, send

MANAGEMENT = "mgmt"
SHARDS = 16
PER_SHARD = 2  # clusters per shard: the clusters moved are exactly the shards moved, in proportion
DURATION, RENEW_DEADLINE, RETRY = 8.0, 5.0, 1.0  # short lease timings (flags); defaults 15 s, 10 s, 2 s
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_AGENT = re.compile(r"\(replica ([a-z0-9-]+)\)")
_SHARD_LEASE = re.compile(r"/leases/fleet-shard-(\d+)$")


def balanced_clusters(*, shards: int = SHARDS, per_shard: int = PER_SHARD) -> list[str]:
    """Cluster names with exactly `per_shard` in each shard (the first names that fit)."""
    count: dict[int, int] = defaultdict(int)
    names = []
    i = 0
    while len(names) < shards * per_shard:
        name = f"c-{i:03d}"
        s = sharding.shard_of(name, shards=shards)
        if count[s] < per_shard:
            count[s] += 1
            names.append(name)
        i += 1
    return sorted(names)


def replica_of(agent: str) -> str | None:
    found = _AGENT.search(agent or "")
    return found.group(1) if found else None


@dataclass
class Replica:
    process: serve.ServeProcess
    id: str = ""
    stopping: bool = False  # sent SIGTERM or SIGSTOP: its status is not asked (until SIGCONT)

    def doc(self) -> dict[str, Any]:
        return self.process.status()

    def shards(self) -> set[int]:
        return set(self.doc()["replica"]["shards"])


@dataclass
class Fleet:
    """A management cluster, its clusters, a repository, and the replicas started so far."""

    tmp: Path
    sim: testing.SimHandle
    repo: GitOpsRepo
    clusters: list[str]
    stack: ExitStack
    replicas: list[Replica] = field(default_factory=list)
    count: int = 0

    def start(self, *extra: str) -> Replica:
        self.count += 1
        name = f"r{self.count}"
        proc = self.stack.enter_context(
            serve.serving(
                repo=self.repo.root,
                kubeconfig=self.sim.kubeconfig,
                state_dir=self.tmp / f"state-{name}",
                log=self.tmp / f"{name}.log",
                args=[
                    "--interval",
                    "1s",
                    "--management-kubeconfig",
                    str(self.sim.kubeconfig),
                    "--management-context",
                    MANAGEMENT,
                    "--shards",
                    str(SHARDS),
                    "--lease-duration",
                    f"{DURATION:g}s",
                    "--lease-renew-deadline",
                    f"{RENEW_DEADLINE:g}s",
                    "--lease-retry-period",
                    f"{RETRY:g}s",
                    *extra,
                ],
            )
        )
        found = re.search(r"replica (\S+) of \d+ shards", proc.logs())
        assert found, proc.logs()
        replica = Replica(proc, found.group(1))
        self.replicas.append(replica)
        return replica

    def live(self) -> list[Replica]:
        """The replicas running (and not told to stop)."""
        return [r for r in self.replicas if r.process.proc.poll() is None and not r.stopping]

    def owners(self) -> dict[int, list[str]]:
        """Shard -> the live replicas whose status says they own it now."""
        out: dict[int, list[str]] = defaultdict(list)
        for r in self.live():
            for s in r.shards():
                out[s].append(r.id)
        return dict(out)

    def settled(self, replicas: list[Replica]) -> bool:
        """Every shard owned by exactly one of `replicas`, each holding at least its floor."""
        owners = self.owners()
        if sorted(owners) != list(range(SHARDS)) or any(len(v) != 1 for v in owners.values()):
            return False
        floor = sharding.floor(shards=SHARDS, replicas=len(replicas))
        held = {r.id: 0 for r in replicas}
        for (who,) in owners.values():
            if who not in held:
                return False
            held[who] += 1
        return all(n >= floor for n in held.values())

    def cluster_owners(self) -> dict[str, str]:
        """Cluster -> the replica owning it now (from the shards of the status documents)."""
        by_shard = {s: who[0] for s, who in self.owners().items()}
        return {c: by_shard[sharding.shard_of(c, shards=SHARDS)] for c in self.clusters}

    def wait(self, check: Callable[[], bool], *, within: float, what: str) -> float:
        """Seconds until `check()` holds; fails after `within` with every replica's log tail."""
        start = time.monotonic()
        # Polls the replicas' status documents: what is checked is their state, no event tells of it.
        while time.monotonic() - start < within:
            if check():
                return time.monotonic() - start
            time.sleep(0.1)
        logs = "\n".join(f"--- {r.id}\n{r.process.logs()[-3000:]}" for r in self.replicas)
        raise AssertionError(f"not within {within}s: {what}\n{self.summary()}\n{logs}")

    def summary(self) -> str:
        """Each live replica's shards and the state and revision of each cluster it shows."""
        lines = []
        for r in self.live():
            doc = r.doc()
            states = {c: (d.get("state"), (d.get("revision") or "")[:7]) for c, d in doc["clusters"].items()}
            lines.append(f"{r.id}: shards {doc['replica']['shards']} clusters {states}")
        return "\n".join(lines)

    def synced_at(self, sha: str) -> bool:
        """Every cluster Synced at `sha` in the status of the live replica owning it."""
        seen: dict[str, Mapping[str, Any]] = {}
        for r in self.live():
            seen.update(r.doc()["clusters"])
        return set(seen) >= set(self.clusters) and all(
            seen[c]["state"] == "Synced" and seen[c]["revision"] == sha for c in self.clusters
        )

    def lease_epoch(self, shard: int) -> int:
        """The shard lease's transitions as the management cluster holds them now (0: absent)."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/{leases.NAMESPACE}/leases/fleet-shard-{shard}"
        resp = send(self.sim, MANAGEMENT, "GET", path)
        return int(resp.json()["spec"].get("leaseTransitions", 0)) if resp.is_success else 0

    def inventory_fence(self, cluster: str, bundle: str) -> str | None:
        path = f"/api/v1/namespaces/fleet-system/configmaps/fleet-inventory-{bundle}"
        resp = send(self.sim, cluster, "GET", path)
        resp.raise_for_status()
        fence: str | None = resp.json()["data"].get("fence")
        return fence

    def signal(self, replica: Replica, signum: signal.Signals) -> float:
        replica.process.proc.send_signal(signum)
        at = time.time()
        if signum in (signal.SIGTERM, signal.SIGSTOP):
            replica.stopping = True
        elif signum == signal.SIGCONT:
            replica.stopping = False
        if signum == signal.SIGKILL:
            replica.process.proc.wait(timeout=10)
        return at

    # -- the journals --------------------------------------------------------------------------------

    def writes(self) -> list[tuple[float, str, str, str]]:
        """(time, replica, cluster, method path) of every write a replica sent to a cluster."""
        return [(t, who, c, what) for t, who, c, what, _ in self._writes()]

    def _writes(self) -> list[tuple[float, str, str, str, dict[str, Any]]]:
        out = []
        for c in self.clusters:
            journal = self.sim.journal_sync(c)
            assert not journal or journal[0]["seq"] == 1, f"{c}: the journal lost entries"
            for e in journal:
                who = replica_of(e["userAgent"])
                if e["method"] in WRITES and who is not None:
                    out.append((e["time"], who, c, f"{e['method']} {e['path']}", e))
        return sorted(out, key=lambda w: (w[0], w[2], w[4]["seq"]))

    def requests(
        self, cluster: str, *, replica: str, method: str, path: str, after: float = 0.0
    ) -> list[dict[str, Any]]:
        """The journal entries of `cluster` for the requests `replica` sent with `method` to a path matching
        the regular expression `path`, answered after `after`."""
        return [
            e
            for e in self.sim.journal_sync(cluster)
            if replica_of(e["userAgent"]) == replica
            and e["method"] == method
            and re.fullmatch(path, e["path"])
            and e["time"] > after
        ]

    def lease_writes(self) -> list[dict[str, Any]]:
        journal = self.sim.journal_sync(MANAGEMENT)
        assert not journal or journal[0]["seq"] == 1, "the management journal lost entries"
        return journal

    def acquisitions(self) -> dict[int, list[tuple[float, str]]]:
        """Shard -> (time, replica) of each successful write of its lease by a replica other than the one
        that wrote it last: when each owner's ownership began, on the management cluster's clock."""
        out: dict[int, list[tuple[float, str]]] = defaultdict(list)
        last: dict[int, str] = {}
        for e in self.lease_writes():
            found = _SHARD_LEASE.search(e["path"])
            who = replica_of(e["userAgent"])
            if found is None or who is None or e["method"] not in ("POST", "PUT") or e["status"] >= 300:
                continue
            shard = int(found.group(1))
            if last.get(shard) != who:
                out[shard].append((e["time"], who))
            last[shard] = who
        return dict(out)

    def last_renewal(self, replica: str) -> float:
        """When the last successful lease write of `replica` was answered (its writes of the state of record,
        ConfigMaps on the same management cluster, are no renewal)."""
        times = [
            e["time"]
            for e in self.lease_writes()
            if replica_of(e["userAgent"]) == replica
            and e["method"] in ("POST", "PUT")
            and e["status"] < 300
            and "/leases" in e["path"]
        ]
        assert times, f"replica {replica} never wrote a lease"
        return max(times)

    def check_one_writer_per_shard(self, *, refused: Iterable[tuple[str, int]] = ()) -> int:
        """Over the whole journal: each write of a replica to a cluster came after that replica's latest
        acquisition of the cluster's shard lease and before anyone else's next one. Returns the writes.

        `refused`: (cluster, seq) of writes held on the wire (a sim `hold`) past another replica's
        acquisition: the journal's time is when they landed, not when they were sent. Each must have been
        refused by the compare-and-swap (409, nothing changed) and is no write."""
        acquired = self.acquisitions()
        writes = self._writes()
        late = set(refused)
        held = [(c, e) for _, _, c, _, e in writes if (c, e["seq"]) in late]
        assert len(held) == len(late), f"not all of {sorted(late)} are replicas' writes in the journals"
        for c, e in held:
            assert (e["status"], e["mutated"]) == (409, False), f"{c}: a write held on the wire landed: {e}"
        bad = []
        for t, who, cluster, what, e in writes:
            if (cluster, e["seq"]) in late:
                continue
            shard = sharding.shard_of(cluster, shards=SHARDS)
            before = [a for a in acquired.get(shard, []) if a[0] <= t]
            owner = before[-1][1] if before else None
            if owner != who:
                bad.append(f"{t:.3f} {who} wrote {cluster} (shard {shard}, owned by {owner}): {what}")
        assert not bad, "writes by a replica that did not own the shard:\n" + "\n".join(bad[:20])
        return len(writes)


def fleet_of(tmp: Path, stack: ExitStack, *, transitions: int = 0) -> Fleet:
    """The clusters, the management cluster with every shard lease free (at `transitions`), a repository."""
    clusters = balanced_clusters()
    sim = stack.enter_context(testing.serving(names=[MANAGEMENT, *clusters]))
    repo = GitOpsRepo(tmp / "repo")
    for c in clusters:
        repo.cluster(c)
    # Every shard lease exists, free, before any replica starts: each acquisition is then an update of a
    # named lease, which the journal shows (a create is a POST to the collection, its name is not there).
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": leases.NAMESPACE}}
    assert send(sim, MANAGEMENT, "POST", "/api/v1/namespaces", ns).is_success
    for shard in range(SHARDS):
        name = leases.shard_lease(instance="fleet", shard=shard)
        record = leases.Record(name=name, transitions=transitions)
        body = leases.encode(record, instance="fleet", role=leases.Role.SHARD)
        path = f"/apis/coordination.k8s.io/v1/namespaces/{leases.NAMESPACE}/leases"
        assert send(sim, MANAGEMENT, "POST", path, body).is_success
    return Fleet(tmp=tmp, sim=sim, repo=repo, clusters=clusters, stack=stack)


def moved(before: Mapping[str, str], after: Mapping[str, str]) -> float:
    """The fraction of clusters whose owner changed."""
    return sum(1 for c in before if after.get(c) != before[c]) / len(before)


def iterate_logs(fleet: Fleet) -> Iterator[str]:
    for r in fleet.replicas:
        yield f"--- {r.id}\n{r.process.logs()[-4000:]}"
