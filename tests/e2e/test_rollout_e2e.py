"""End-to-end rollouts: the real `fleet serve` against `fleet sim` clusters and a real git repository.

Deployments become available `WORKLOAD_DELAY` seconds after a new spec (the sim's workload controller);
the sim's annotations make one that never becomes available (`sim.fleet.dev/unavailable`) or that fails
for good (`sim.fleet.dev/failed`). The sim's request journal, with the time of every answer, proves what
fleet wrote where and when.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.sim import testing
from fleet.sim.storage import store
from tests.support import serve
from tests.support.reconcile import GitOpsRepo, send

pytestmark = pytest.mark.slow

CLUSTERS = ["dev-1", "prod-1", "prod-2", "prod-3", "prod-4"]
PROD = CLUSTERS[1:]
WORKLOAD_DELAY = 1.0
TOKEN = "rollout-token-for-tests"

CANARY_THEN_REST = {
    "waves": [
        {"name": "canary", "placement": {"clusters": ["dev-1"]}, "maxConcurrency": 1},
        {"name": "rest", "maxConcurrency": 2},
    ],
    "progressDeadline": "20s",
}


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    settings = dataclasses.replace(store.Settings(), workload_delay=WORKLOAD_DELAY)
    with testing.serving(names=[*CLUSTERS, "prod-5"], settings=settings) as handle:
        yield handle


def deployment(image: str, *, failed: bool = False, unavailable: bool = False) -> dict[str, Any]:
    annotations = {}
    if failed:
        annotations["sim.fleet.dev/failed"] = "true"
    if unavailable:
        annotations["sim.fleet.dev/unavailable"] = "true"
    meta: dict[str, Any] = {"name": "web"}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    }


def web(repo: GitOpsRepo, image: str, *, rollout: dict[str, Any] | None = None, **kw: Any) -> None:
    repo.bundle(
        "web", [deployment(image, **kw)], namespace="web", selector={}, rollout=rollout or CANARY_THEN_REST
    )


@pytest.fixture
def gitops(tmp_path: Path) -> GitOpsRepo:
    repo = GitOpsRepo(tmp_path / "repo")
    for c in CLUSTERS:
        repo.cluster(c, labels={"env": "dev" if c.startswith("dev") else "prod"})
    web(repo, "web:1")
    repo.commit("first")
    return repo


def start(tmp_path: Path, repo: GitOpsRepo, sim: testing.SimHandle, *, name: str = "serve") -> Any:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    return serve.serving(
        repo=repo.root,
        kubeconfig=sim.kubeconfig,
        state_dir=tmp_path / "state",
        log=tmp_path / f"{name}.log",
        args=["--interval", "1s", "--api-token-file", str(token)],
    )


def rollout_of(doc: dict[str, Any], sha: str) -> dict[str, Any] | None:
    r = (doc.get("rollouts") or {}).get("web")
    return r if r is not None and r["revision"] == sha else None


def state_is(sha: str, *states: str) -> Any:
    def check(doc: dict[str, Any]) -> bool:
        r = rollout_of(doc, sha)
        return r is not None and r["state"] in states

    return check


def image_on(sim: testing.SimHandle, cluster: str) -> str | None:
    """The image of the bundle's Deployment on a cluster, read over HTTP (None: no such Deployment)."""
    resp = httpx.get(f"{sim.url(cluster)}/apis/apps/v1/namespaces/web/deployments/web", timeout=10)
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return str(resp.json()["spec"]["template"]["spec"]["containers"][0]["image"])


def deployment_writes(sim: testing.SimHandle, cluster: str, *, since: int = 0) -> list[dict[str, Any]]:
    """Requests that changed the bundle's Deployment on a cluster, from the sim's journal."""
    return [
        e
        for e in sim.journal_sync(cluster, since=since)
        if e["mutated"] and "/deployments" in e["path"] and e["method"] in ("PATCH", "PUT", "POST")
    ]


def writes(sim: testing.SimHandle, cluster: str, *, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in sim.journal_sync(cluster, since=since) if e["mutated"]]


def marks(sim: testing.SimHandle) -> dict[str, int]:
    return {c: (sim.journal_sync(c) or [{"seq": 0}])[-1]["seq"] for c in CLUSTERS}


def cli(server: str, *args: str, token: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--api-token-file", str(token)] if token is not None else []
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", "rollout", *args, "--server", server, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def completed_first(fleet: Any, gitops: GitOpsRepo) -> str:
    first = str(gitops.repo.head.target)
    fleet.wait_for(state_is(first, "Completed"), timeout=90, what="the first revision's rollout completed")
    return first


def test_a_bad_revision_halts_after_the_canary_and_no_other_cluster_is_touched(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim) as fleet:
        first = completed_first(fleet, gitops)
        before = marks(sim)
        web(gitops, "web:2", failed=True)
        bad = gitops.commit("bad")
        doc = fleet.wait_for(state_is(bad, "Halted"), timeout=60, what="the bad revision halted")
        time.sleep(2 * WORKLOAD_DELAY)  # room for a wrong start to show in the journals
        doc = fleet.status()
    r = rollout_of(doc, bad)
    assert r is not None and r["state"] == "Halted"
    assert r["wave"] == "canary"
    assert "dev-1: degraded" in r["reason"]
    assert r["waves"][0]["clusters"] == {"dev-1": "Failed"}
    assert set(r["waves"][1]["clusters"].values()) == {"Pending"}
    assert image_on(sim, "dev-1") == "web:2"
    for c in PROD:
        assert writes(sim, c, since=before[c]) == [], f"{c} was written to"
        assert image_on(sim, c) == "web:1"
        assert doc["clusters"][c]["bundles"]["web"]["revision"] == first


def test_a_healthy_revision_completes_every_wave_in_order_within_max_concurrency(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim) as fleet:
        completed_first(fleet, gitops)
        before = marks(sim)
        web(gitops, "web:2")
        good = gitops.commit("good")
        fleet.wait_for(state_is(good, "Completed"), timeout=90, what="the good revision completed")
    applied = {}
    for c in CLUSTERS:
        found = deployment_writes(sim, c, since=before[c])
        assert len(found) == 1, (c, found)  # each cluster sent the revision exactly once
        applied[c] = found[0]["time"]
    assert all(applied["dev-1"] + WORKLOAD_DELAY <= applied[c] for c in PROD), applied
    # A cluster is in flight from its apply until its Deployment is available (WORKLOAD_DELAY later):
    # at no apply are more than maxConcurrency (2) of the wave in flight.
    times = sorted(applied[c] for c in PROD)
    for t in times:
        overlapping = [s for s in times if s <= t < s + WORKLOAD_DELAY]
        assert len(overlapping) <= 2, (t, times)


def test_a_deadline_fails_a_cluster_that_never_turns_healthy(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim) as fleet:
        completed_first(fleet, gitops)
        web(gitops, "web:2", unavailable=True, rollout={**CANARY_THEN_REST, "progressDeadline": "3s"})
        bad = gitops.commit("never available")
        doc = fleet.wait_for(state_is(bad, "Halted"), timeout=60, what="halted at the deadline")
    r = rollout_of(doc, bad)
    assert r is not None
    assert r["waves"][0]["failed"]["dev-1"]["reason"] == "deadline"
    assert "not healthy within the progress deadline (3s)" in r["waves"][0]["failed"]["dev-1"]["message"]


def test_people_act_on_rollouts_from_the_cli_and_the_api_with_the_token(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    token = tmp_path / "token"
    with start(tmp_path, gitops, sim) as fleet:
        first = completed_first(fleet, gitops)
        # approval before the rest wave, and a canary that fails only on dev-1 (an override)
        rollout = {
            "waves": [
                {"name": "canary", "placement": {"clusters": ["dev-1"]}},
                {"name": "rest", "maxConcurrency": "100%", "approval": "before"},
            ]
        }
        gitops.bundle(
            "web",
            [deployment("web:2")],
            namespace="web",
            selector={},
            rollout=rollout,
            overrides=[
                {
                    "placement": {"clusters": ["dev-1"]},
                    "patches": [
                        {
                            "target": {"kind": "Deployment", "name": "web"},
                            "merge": {"metadata": {"annotations": {"sim.fleet.dev/failed": "true"}}},
                        }
                    ],
                }
            ],
        )
        second = gitops.commit("dev-1 fails")
        fleet.wait_for(state_is(second, "Halted"), timeout=60, what="halted on dev-1")

        # The token is required.
        assert fleet.post("/api/v1/rollouts/web/resume").status_code == 401
        assert cli(fleet.url, "resume", "web").returncode == 1
        # An action that does not apply is refused with 409 (and exit 1 from the CLI).
        refused = cli(fleet.url, "approve", "web", "--wave", "canary", token=token)
        assert refused.returncode == 1 and "HTTP 409" in refused.stderr
        # The status says why it halted and how to go on.
        shown = cli(fleet.url, "status", "web")
        assert shown.returncode == 1
        assert "next: fleet rollout resume web" in shown.stdout and "dev-1" in shown.stdout

        # skip the failed cluster: the halt lifts, and the rest wave waits for approval.
        skipped = cli(
            fleet.url, "skip", "web", "dev-1", "--reason", "known bad node", "--actor", "alice", token=token
        )
        assert skipped.returncode == 0, skipped.stderr
        fleet.wait_for(state_is(second, "WaitingApproval"), timeout=30, what="waiting for approval")
        assert all(image_on(sim, c) == "web:1" for c in PROD)
        approved = fleet.post(
            "/api/v1/rollouts/web/approve",
            params={"wave": "rest", "actor": "bob", "reason": "change 42"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert approved.status_code == 202, approved.text
        doc = fleet.wait_for(state_is(second, "Completed"), timeout=60, what="completed after approval")
        assert all(image_on(sim, c) == "web:2" for c in PROD)
        actions = rollout_of(doc, second)["actions"]  # type: ignore[index]
        assert [(a["action"], a["actor"], a["reason"]) for a in actions] == [
            ("skip", "alice", "known bad node"),
            ("approve", "bob", "change 42"),
        ]

        # rollback returns every cluster the rollout moved to what it held before.
        rolled = cli(fleet.url, "rollback", "web", "--reason", "revert", token=token)
        assert rolled.returncode == 0, rolled.stderr
        fleet.wait_for(state_is(second, "RolledBack"), timeout=30, what="rolled back")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(image_on(sim, c) != "web:1" for c in PROD):
            time.sleep(0.3)
        assert all(image_on(sim, c) == "web:1" for c in PROD)
        doc = fleet.wait_for(
            lambda d: all(d["clusters"][c]["bundles"]["web"]["revision"] == first for c in PROD),
            timeout=30,
            what="clusters back at the first revision",
        )


def test_pause_holds_the_next_wave_and_resume_continues(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    token = tmp_path / "token"
    with start(tmp_path, gitops, sim) as fleet:
        completed_first(fleet, gitops)
        rollout = {
            **CANARY_THEN_REST,
            "waves": [{**CANARY_THEN_REST["waves"][0], "soak": "10s"}, CANARY_THEN_REST["waves"][1]],
        }
        web(gitops, "web:2", rollout=rollout)
        second = gitops.commit("soaking canary")
        fleet.wait_for(state_is(second, "Soaking"), timeout=60, what="canary soaking")
        before = marks(sim)
        soaking_since = time.time()
        paused = cli(fleet.url, "pause", "web", "--reason", "freeze", token=token)
        assert paused.returncode == 0, paused.stderr
        time.sleep(max(0.0, soaking_since + 11 - time.time()))  # past the soak: the rest wave would start
        doc = fleet.status()
        r = rollout_of(doc, second)
        assert r is not None and r["state"] == "Halted" and r["paused"] is True
        assert all(writes(sim, c, since=before[c]) == [] for c in PROD)
        assert cli(fleet.url, "resume", "web", token=token).returncode == 0
        fleet.wait_for(state_is(second, "Completed"), timeout=60, what="completed after resume")
    assert all(image_on(sim, c) == "web:2" for c in CLUSTERS)


def test_abort_leaves_the_clusters_not_reached_at_their_revision(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    token = tmp_path / "token"
    with start(tmp_path, gitops, sim) as fleet:
        completed_first(fleet, gitops)
        web(gitops, "web:2", failed=True)
        bad = gitops.commit("bad")
        fleet.wait_for(state_is(bad, "Halted"), timeout=60, what="halted")
        aborted = cli(fleet.url, "abort", "web", token=token)
        assert aborted.returncode == 0, aborted.stderr
        doc = fleet.wait_for(state_is(bad, "Aborted"), timeout=30, what="aborted")
        again = cli(fleet.url, "resume", "web", token=token)
        assert again.returncode == 1 and "HTTP 409" in again.stderr
    assert image_on(sim, "dev-1") == "web:2"
    assert all(image_on(sim, c) == "web:1" for c in PROD)
    assert rollout_of(doc, bad)["actions"][0]["action"] == "abort"  # type: ignore[index]


def test_soak_restarts_when_a_cluster_degrades_during_it(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    soak = 4.0
    with start(tmp_path, gitops, sim) as fleet:
        completed_first(fleet, gitops)
        rollout = {
            **CANARY_THEN_REST,
            "waves": [{**CANARY_THEN_REST["waves"][0], "soak": "4s"}, CANARY_THEN_REST["waves"][1]],
        }
        web(gitops, "web:2", rollout=rollout)
        second = gitops.commit("soak")
        before = marks(sim)
        fleet.wait_for(state_is(second, "Soaking"), timeout=60, what="canary soaking")
        time.sleep(1.0)
        degraded_at = time.time()
        # Someone scales the canary's Deployment: fleet repairs it, and it is not available again until
        # the workload catches up: the canary is unhealthy for a moment, so the soak starts again.
        resp = send(
            sim, "dev-1", "PATCH", "/apis/apps/v1/namespaces/web/deployments/web", {"spec": {"replicas": 3}}
        )
        assert resp.status_code == 200, resp.text
        fleet.wait_for(state_is(second, "Completed"), timeout=60, what="completed")
    first_rest = min(deployment_writes(sim, c, since=before[c])[0]["time"] for c in PROD)
    assert first_rest >= degraded_at + soak, first_rest - degraded_at


def test_a_fix_forward_supersedes_a_halted_rollout_and_starts_at_the_canary(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim) as fleet:
        completed_first(fleet, gitops)
        web(gitops, "web:2", failed=True)
        bad = gitops.commit("bad")
        fleet.wait_for(state_is(bad, "Halted"), timeout=60, what="halted")
        before = marks(sim)
        web(gitops, "web:3")
        fix = gitops.commit("fix forward")
        doc = fleet.wait_for(state_is(fix, "Completed"), timeout=90, what="the fix completed")
        old = fleet.get("/api/v1/rollouts/web", params={"revision": bad}).json()
    assert old["state"] == "Superseded"
    assert all(image_on(sim, c) == "web:3" for c in CLUSTERS)
    dev = deployment_writes(sim, "dev-1", since=before["dev-1"])[0]["time"]
    for c in PROD:
        found = deployment_writes(sim, c, since=before[c])
        assert len(found) == 1  # straight from web:1 to web:3, never web:2
        assert found[0]["time"] > dev
    assert rollout_of(doc, fix)["waves"][0]["clusters"] == {"dev-1": "Done"}  # type: ignore[index]


def test_a_cluster_registered_mid_rollout_joins_the_last_wave_and_a_removed_one_is_removed(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim) as fleet:
        completed_first(fleet, gitops)
        rollout = {
            **CANARY_THEN_REST,
            "waves": [{**CANARY_THEN_REST["waves"][0], "soak": "5s"}, CANARY_THEN_REST["waves"][1]],
        }
        web(gitops, "web:2", rollout=rollout)
        second = gitops.commit("soak")
        fleet.wait_for(state_is(second, "Soaking"), timeout=60, what="canary soaking")
        gitops.cluster("prod-5", labels={"env": "prod"})
        gitops.remove("clusters/prod-4.yaml")
        gitops.commit("prod-5 joins, prod-4 leaves")
        doc = fleet.wait_for(state_is(second, "Completed"), timeout=90, what="completed")
    r = rollout_of(doc, second)
    assert r is not None
    assert r["waves"][1]["clusters"]["prod-5"] == "Done"
    assert r["waves"][1]["clusters"]["prod-4"] == "Removed"
    assert image_on(sim, "prod-5") == "web:2"


def test_a_killed_controller_continues_the_rollout_where_it_was(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    rollout = {
        "waves": [
            {"name": "canary", "placement": {"clusters": ["dev-1"]}},
            {"name": "rest", "maxConcurrency": 1},
        ]
    }
    web(gitops, "web:1", rollout=rollout)
    gitops.commit("one at a time")
    with start(tmp_path, gitops, sim, name="serve-1") as fleet:
        completed_first(fleet, gitops)
        before = marks(sim)
        web(gitops, "web:2", rollout=rollout)
        second = gitops.commit("second")

        def mid_wave(doc: dict[str, Any]) -> bool:
            r = rollout_of(doc, second)
            return (
                r is not None
                and r["wave"] == "rest"
                and list(r["waves"][1]["clusters"].values()).count("Done") >= 1
            )

        fleet.wait_for(mid_wave, timeout=60, what="mid rest wave")
        fleet.kill()
    with start(tmp_path, gitops, sim, name="serve-2") as fleet:
        fleet.wait_for(state_is(second, "Completed"), timeout=90, what="completed after the restart")
    for c in CLUSTERS:
        found = deployment_writes(sim, c, since=before[c])
        assert len(found) == 1, (c, found)  # none applied twice, none skipped
    times = [deployment_writes(sim, c, since=before[c])[0]["time"] for c in PROD]
    assert times == sorted(times)  # one at a time, in the wave's order


def test_a_canary_whose_apply_is_answered_503_for_a_while_is_retried_and_the_rollout_completes(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    # More 503s than one request's retry budget (1s) absorbs: rounds of the canary fail, retriable; the
    # controller retries them with its backoff and the rollout goes on once the apply goes through.
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    with serve.serving(
        repo=gitops.root,
        kubeconfig=sim.kubeconfig,
        state_dir=tmp_path / "state",
        log=tmp_path / "serve.log",
        args=["--interval", "1s", "--api-token-file", str(token), "--retry-budget", "1s"],
    ) as fleet:
        completed_first(fleet, gitops)
        sim.faults_sync("dev-1", {"status": 503, "method": "PATCH", "path": "deployments/web$", "count": 12})
        web(gitops, "web:2", rollout={**CANARY_THEN_REST, "progressDeadline": "60s"})
        good = gitops.commit("good, behind a busy API server")
        retrying = fleet.wait_for(
            lambda doc: bool((rollout_of(doc, good) or {"waves": [{}]})["waves"][0].get("retrying")),
            timeout=60,
            what="the canary retried",
        )
        doc = fleet.wait_for(state_is(good, "Completed", "Halted"), timeout=90, what="the rollout ended")
    r = rollout_of(doc, good)
    assert r is not None and r["state"] == "Completed", r
    shown = rollout_of(retrying, good)
    assert shown is not None and shown["waves"][0]["clusters"] == {"dev-1": "Progressing"}
    assert "unable to handle the request" in shown["waves"][0]["retrying"]["dev-1"]
    assert [e["status"] for e in sim.journal_sync("dev-1") if e["path"].endswith("/deployments/web")].count(
        503
    ) == 12
    for c in CLUSTERS:
        assert image_on(sim, c) == "web:2"


def test_a_canary_whose_apply_is_answered_422_halts_the_rollout_at_once(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim) as fleet:
        completed_first(fleet, gitops)
        before = marks(sim)
        sim.faults_sync("dev-1", {"status": 422, "method": "PATCH", "path": "deployments/web$"})
        web(gitops, "web:2")
        bad = gitops.commit("refused")
        doc = fleet.wait_for(state_is(bad, "Halted"), timeout=60, what="halted after the canary")
    r = rollout_of(doc, bad)
    assert r is not None
    failed = r["waves"][0]["failed"]["dev-1"]
    assert failed["reason"] == "apply" and "still failing" not in failed["message"]
    for c in PROD:
        assert writes(sim, c, since=before[c]) == [], f"{c} was written to"
