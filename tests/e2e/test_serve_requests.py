"""End-to-end: what a commit costs the real `fleet serve` process per cluster, from `fleet sim`'s journal.

With its watch caches (the default) a changed cluster gets the apply of the changed object (carrying the
round's claim; no revision record without a delete), and no read; a cluster the commit does not change
gets nothing. With
``FLEET_WATCH_CACHE=0`` (the behaviour before, kept for benchmarks) every round reads the server again
(docs/reconcile.md, "Reading from the watch caches").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.sim import testing
from tests.support import serve
from tests.support.reconcile import GitOpsRepo, configmap

CLUSTERS = ["eu-1", "eu-2", "us-1"]


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=CLUSTERS) as handle:
        yield handle


def _repo(root: Path, colour: str = "blue") -> GitOpsRepo:
    repo = GitOpsRepo(root)
    for name in CLUSTERS:
        repo.cluster(name, labels={"region": name[:2]})
    repo.bundle("base", [configmap("base", team="ops")], namespace="apps", selector={})
    repo.bundle(
        "eu",
        [configmap("eu", colour=colour), configmap("eu-static")],
        namespace="eu",
        selector={"region": "eu"},
    )
    repo.commit("first")
    return repo


def _synced_at(sha: str, streams: int) -> Any:
    def check(doc: dict[str, Any]) -> bool:
        clusters = doc.get("clusters") or {}
        return set(clusters) == set(CLUSTERS) and all(
            c["state"] == "Synced" and c["revision"] == sha and c["watch"]["streams"] >= streams
            for c in clusters.values()
        )

    return check


def _sent(sim: testing.SimHandle, cluster: str, since: int) -> list[str]:
    """Requests since `since`: watch streams and fleet's Events (its reports) left out."""
    out = []
    for e in sim.journal_sync(cluster, since=since):
        if "watch=true" in str(e.get("query") or "") or "/events" in e["path"]:
            continue
        out.append(f"{e['method']} {e['path']}")
    return out


def _commit_and_count(tmp_path: Path, sim: testing.SimHandle, env: dict[str, str]) -> dict[str, list[str]]:
    repo = _repo(tmp_path / "repo")
    with serve.serving(
        repo=repo.root,
        kubeconfig=sim.kubeconfig,
        state_dir=tmp_path / "state",
        log=tmp_path / "serve.log",
        args=["--interval", "1s"],
        env=env,
    ) as fleet:
        streams = 1 if env.get("FLEET_WATCH_CACHE") == "0" else 2  # ConfigMaps; with the cache, Namespaces
        fleet.wait_for(_synced_at(str(repo.repo.head.target), streams), what="first revision, watches open")
        time.sleep(1.0)  # the caches listed, every stream open
        marks = {c: (sim.journal_sync(c) or [{"seq": 0}])[-1]["seq"] for c in CLUSTERS}
        repo.bundle(
            "eu",
            [configmap("eu", colour="green"), configmap("eu-static")],
            namespace="eu",
            selector={"region": "eu"},
        )
        sha = repo.commit("eu: green")
        fleet.wait_for(_synced_at(sha, streams), what="the commit Synced")
        time.sleep(1.5)  # the rounds that follow a commit (rollout looks) are in the journal too
        return {c: _sent(sim, c, marks[c]) for c in CLUSTERS}


def test_a_commit_sends_a_changed_cluster_one_write_and_no_read_and_the_others_nothing(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    sent = _commit_and_count(tmp_path, sim, {})
    for cluster in ("eu-1", "eu-2"):
        assert sent[cluster] == ["PATCH /api/v1/namespaces/eu/configmaps/eu"], sent  # carrying the claim
    assert sent["us-1"] == [], sent


def test_with_the_watch_cache_switched_off_every_round_reads_the_server(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    sent = _commit_and_count(tmp_path, sim, {"FLEET_WATCH_CACHE": "0"})
    for cluster in ("eu-1", "eu-2"):
        assert "GET /api/v1/namespaces" in sent[cluster], sent
        assert "PATCH /api/v1/namespaces/eu/configmaps/eu" in sent[cluster], sent
    assert sent["us-1"] == [], sent
