"""End-to-end notifications: the real `fleet serve` telling local receivers (an aiohttp server playing
GitHub's and GitLab's commit status APIs and webhook sinks) about revisions, from its durable outbox
(docs/notifications.md)."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fleet
from fleet.sim import testing
from tests.support import receivers, serve
from tests.support.reconcile import GitOpsRepo, configmap, run_fleet, send

pytestmark = pytest.mark.slow

CLUSTERS = ["eu-1", "eu-2", "us-1"]
TOKEN = "TOKEN-canary-7f3e9a"
CANARY = "CANARY-secret-value-5b1d"
HOOK_SECRET = "T0CANARY/B0CANARY/hookpathcanary"
LINK = "https://fleet.example.com/"
KUBECTL = str(Path(sys.executable).parent / "kubectl")


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=CLUSTERS) as handle:
        yield handle


@pytest.fixture
def gitops(tmp_path: Path) -> GitOpsRepo:
    repo = GitOpsRepo(tmp_path / "repo")
    for name in CLUSTERS:
        repo.cluster(name, labels={"region": name[:2]})
    repo.bundle("settings", [configmap("settings", colour="blue")], namespace="apps", selector={})
    repo.bundle("eu-only", [configmap("eu-only", zone="eu")], namespace="apps", selector={"region": "eu"})
    repo.commit("first", author="Ada Lovelace")
    return repo


def start(tmp_path: Path, repo: GitOpsRepo, sim: testing.SimHandle, *args: str, name: str = "serve") -> Any:
    return serve.serving(
        repo=repo.root,
        kubeconfig=sim.kubeconfig,
        state_dir=tmp_path / "state",
        log=tmp_path / f"{name}.log",
        args=["--interval", "1s", "--external-url", "https://fleet.example.com", *args],
    )


def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def all_synced_at(sha: str) -> Any:
    def check(doc: dict[str, Any]) -> bool:
        clusters = doc.get("clusters") or {}
        return bool(clusters) and all(
            c["state"] == "Synced" and c["revision"] == sha for c in clusters.values()
        )

    return check


def states(got: list[receivers.Got]) -> list[str]:
    return [g.json()["state"] for g in got]


def test_github_gets_pending_then_success_for_a_revision_with_exact_payloads_and_headers(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    head = str(gitops.repo.head.target)
    with receivers.receiving() as rx:
        args = [
            "--commit-status", "github",
            "--commit-status-url", rx.url + "/api/v3",
            "--commit-status-token-file", str(token_file(tmp_path)),
            "--commit-status-repo", "acme/gitops",
            "--notify-url", rx.url + "/hook",
        ]  # fmt: skip
        with start(tmp_path, gitops, sim, *args) as fleet_:
            fleet_.wait_for(all_synced_at(head), what="Synced")
            path = f"/api/v3/repos/acme/gitops/statuses/{head}"
            got = rx.wait_for(lambda g: len(g) >= 2, prefix=path, what="pending and success")
            time.sleep(2)
            assert len(rx.requests(path)) == 2
    assert [g.json() for g in got] == [
        {
            "state": "pending",
            "description": "rolling out: eu-only, settings",
            "context": "fleet/fleet",
            "target_url": LINK,
        },
        {
            "state": "success",
            "description": "rolled out: eu-only, settings",
            "context": "fleet/fleet",
            "target_url": LINK,
        },
    ]
    headers = got[0].headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/vnd.github+json"
    assert headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"fleet/{fleet.__version__}"
    hooks = [g.json() for g in rx.requests("/hook")]
    assert [(h["event"], h["state"]) for h in hooks] == [("started", "pending"), ("completed", "success")]
    assert hooks[1] == {
        "kind": "fleet.dev/revision",
        "instance": "fleet",
        "revision": head,
        "event": "completed",
        "state": "success",
        "description": "rolled out: eu-only, settings",
        "bundles": {"eu-only": "Completed", "settings": "Completed"},
        "reasons": {},
        "author": "Ada Lovelace",
        "subject": "first",
        "at": hooks[1]["at"],
        "url": LINK,
    }
    assert "Authorization" not in rx.requests("/hook")[0].headers


def test_gitlab_gets_its_own_states_and_a_halted_revision_is_a_failure_told_to_slack(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    first = str(gitops.repo.head.target)
    with receivers.receiving() as rx:
        args = [
            "--commit-status", "gitlab",
            "--commit-status-url", rx.url + "/api/v4",
            "--commit-status-token-file", str(token_file(tmp_path)),
            "--commit-status-repo", "acme/infra/gitops",
            "--notify-url", rx.url + "/slack", "--notify-format", "slack",
        ]  # fmt: skip
        with start(tmp_path, gitops, sim, *args) as fleet_:
            fleet_.wait_for(all_synced_at(first), what="Synced")
            gitops.bundle(
                "settings",
                [configmap("settings", colour="green"), broken_deployment()],
                namespace="apps",
                selector={},
                rollout={"waves": [{"name": "all", "maxConcurrency": 1}], "progressDeadline": "30s"},
            )
            second = gitops.commit("settings: green, and a broken deployment", author="Bea Smith")
            path = f"/api/v4/projects/acme%2Finfra%2Fgitops/statuses/{second}"
            got = rx.wait_for(lambda g: "failed" in states(g), prefix=path, timeout=90, what="failed")
    assert states(got) == ["running", "failed"]
    failed = got[1].json()
    assert failed["name"] == "fleet/fleet" and failed["target_url"] == LINK
    assert failed["description"].startswith("settings halted: ")
    assert got[1].headers["PRIVATE-TOKEN"] == TOKEN and "Authorization" not in got[1].headers
    first_path = f"/api/v4/projects/acme%2Finfra%2Fgitops/statuses/{first}"
    assert states(rx.requests(first_path)) == ["running", "success"]
    slack = [g.json() for g in rx.requests("/slack")]
    assert slack[-1]["text"].startswith(
        f":x: fleet `fleet`: revision `{second[:12]}` halted\nsettings halted: "
    )
    assert "> settings: green, and a broken deployment (Bea Smith)" in slack[-1]["text"]
    assert slack[-1]["blocks"][0]["text"]["text"] == slack[-1]["text"]


def broken_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {"sim.fleet.dev/failed": "true"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:2"}]},
            },
        },
    }


def test_a_receiver_answering_500_then_200_gets_the_notice_once_more_and_then_not_again(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    head = str(gitops.repo.head.target)
    with receivers.receiving() as rx:
        rx.answer("/hook", 500, 200)
        with start(tmp_path, gitops, sim, "--notify-url", rx.url + "/hook") as fleet_:
            fleet_.wait_for(all_synced_at(head), what="Synced")
            rx.wait_for(lambda g: len(g) >= 3, prefix="/hook", what="three requests")
            time.sleep(6)  # more than the backoff: nothing more comes
            got = rx.requests("/hook")
            assert fleet_.metric("fleet_notifications_total") == 3
    assert [(g.status, g.json()["state"]) for g in got] == [
        (500, "pending"),
        (200, "pending"),
        (200, "success"),
    ]
    assert got[0].body == got[1].body  # the same message, once more


def test_undelivered_notices_survive_a_sigkill_and_are_delivered_after_the_restart_in_order(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    head = str(gitops.repo.head.target)
    with receivers.receiving(up=False) as rx:  # the receiver is down
        with start(tmp_path, gitops, sim, "--notify-url", rx.url + "/hook") as fleet_:
            fleet_.wait_for(all_synced_at(head), what="Synced")
            deadline = time.monotonic() + 30
            while fleet_.metric("fleet_notifications_total") < 1 or _pending(fleet_) < 2:
                assert time.monotonic() < deadline, fleet_.logs()[-3000:]
                time.sleep(0.3)
            fleet_.kill()  # SIGKILL with two notices undelivered
        with sqlite3.connect(tmp_path / "state" / "state.db") as db:
            assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (2,)
        rx.start()
        with start(tmp_path, gitops, sim, "--notify-url", rx.url + "/hook", name="again") as fleet_:
            got = rx.wait_for(lambda g: len(g) >= 2, prefix="/hook", timeout=30, what="both notices")
            time.sleep(2)
            assert len(rx.requests("/hook")) == 2
    assert [(g.status, g.json()["event"]) for g in got] == [(200, "started"), (200, "completed")]


def _pending(fleet_: serve.ServeProcess) -> float:
    return fleet_.metric("fleet_notifications_pending")


def test_a_receiver_that_never_answers_does_not_hold_up_reconciling(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with receivers.receiving() as rx:
        rx.hang("/slow")
        token = token_file(tmp_path)
        args = [
            "--notify-url", rx.url + "/slow",
            "--commit-status", "github", "--commit-status-url", rx.url + "/slow",
            "--commit-status-token-file", str(token), "--commit-status-repo", "acme/gitops",
        ]  # fmt: skip
        with start(tmp_path, gitops, sim, *args) as fleet_:
            fleet_.wait_for(all_synced_at(str(gitops.repo.head.target)), what="Synced")
            for colour in ("green", "red", "white"):
                gitops.bundle(
                    "settings", [configmap("settings", colour=colour)], namespace="apps", selector={}
                )
                sha = gitops.commit(colour)
                began = time.monotonic()
                fleet_.wait_for(all_synced_at(sha), timeout=30, what=f"Synced at {colour}")
                # Three clusters one at a time (the default wave keeps 25% in flight): a few seconds, never
                # the receivers' 10 s deadline per attempt.
                assert time.monotonic() - began < 15
            assert fleet_.get("/readyz").status_code == 200


def test_no_secret_value_or_token_reaches_a_payload_an_event_a_log_line_or_the_history(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    encoded = base64.b64encode(CANARY.encode()).decode()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "stringData": {"password": CANARY},
    }
    gitops.bundle("secrets", [secret], namespace="apps", selector={})
    head = gitops.commit("a secret", author="Ada Lovelace")
    with receivers.receiving() as rx:
        args = [
            "--commit-status", "github", "--commit-status-url", rx.url,
            "--commit-status-token-file", str(token_file(tmp_path)), "--commit-status-repo", "acme/gitops",
            "--notify-url", f"{rx.url}/services/{HOOK_SECRET}", "--notify-format", "slack",
        ]  # fmt: skip
        with start(tmp_path, gitops, sim, *args) as fleet_:
            fleet_.wait_for(all_synced_at(head), what="Synced")
            # Someone edits the Secret on a cluster: fleet writes it back (a drift repair, an Event).
            send(sim, "eu-1", "PATCH", "/api/v1/namespaces/apps/secrets/db", {"data": {"password": "Zm9v"}})
            deadline = time.monotonic() + 30
            while (
                send(sim, "eu-1", "GET", "/api/v1/namespaces/apps/secrets/db").json()["data"]["password"]
                != encoded
            ):
                assert time.monotonic() < deadline, "the Secret was not written back"
                time.sleep(0.2)
            gitops.bundle("secrets", [], namespace="apps", selector={}, allowEmpty=True)
            pruned = gitops.commit("no more secret")
            fleet_.wait_for(all_synced_at(pruned), what="Synced after the prune")
            done = f"/repos/acme/gitops/statuses/{pruned}"
            rx.wait_for(lambda g: "success" in states(g), prefix=done, what="the last commit status")
            time.sleep(12)  # an Event series update, and the last deliveries
            history = run_fleet(
                "history", "--server", fleet_.url, "--format", "json", "--limit", "10000"
            ).stdout
            logs = fleet_.logs()
    events = [
        subprocess.run(
            [KUBECTL, "--kubeconfig", str(sim.kubeconfig), "--context", c, "--cache-dir", str(tmp_path / "kc"),
             "get", "events", "-A", "-o", "json"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        for c in CLUSTERS
    ]  # fmt: skip
    with sqlite3.connect(tmp_path / "state" / "state.db") as db:
        stored = "\n".join(
            str(row) for table in ("history", "outbox") for row in db.execute(f"SELECT * FROM {table}")
        )
    assert "DriftRepaired" in history and "Pruned" in history and "DriftRepaired" in "".join(events)
    # Bodies, and every header but the one that carries the token to its API.
    payloads = "\n".join(
        g.body.decode() + json.dumps({k: v for k, v in g.headers.items() if k != "Authorization"})
        for g in rx.requests()
    )
    for where, text in {
        "payloads": payloads,
        "events": "".join(events),
        "logs": logs,
        "history": history + stored,
    }.items():
        for canary in (CANARY, encoded, TOKEN, HOOK_SECRET, "hookpathcanary"):
            assert canary not in text, f"{canary!r} found in the {where}"
