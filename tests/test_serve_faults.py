"""End-to-end faults of the controller process itself: the real `fleet serve` against `fleet sim` clusters
and a real git repository (connection floods, hostile headers, a full disk, a corrupt state database)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.sim import testing
from tests.reconcile_support import GitOpsRepo, configmap
from tests.support import serve

CLUSTERS = ["eu-1", "us-1"]
SECRET = "webhook-secret-for-tests"


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=CLUSTERS) as handle:
        yield handle


@pytest.fixture
def gitops(tmp_path: Path) -> GitOpsRepo:
    repo = GitOpsRepo(tmp_path / "repo")
    for name in CLUSTERS:
        repo.cluster(name, labels={"region": name.split("-")[0]})
    repo.bundle("settings", [configmap("settings", colour="blue")], namespace="apps", selector={})
    repo.commit("first")
    return repo


def start(tmp_path: Path, repo: GitOpsRepo, sim: testing.SimHandle, *args: str, **kwargs: Any) -> Any:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    return serve.serving(
        repo=repo.root,
        kubeconfig=sim.kubeconfig,
        state_dir=kwargs.pop("state_dir", tmp_path / "state"),
        log=tmp_path / kwargs.pop("log_name", "serve.log"),
        args=["--interval", "1s", "--webhook-secret-file", str(secret), *args],
        **kwargs,
    )


def all_synced(doc: dict[str, Any]) -> bool:
    clusters = doc.get("clusters") or {}
    return bool(clusters) and all(c["state"] == "Synced" for c in clusters.values())


def log_lines(fleet: serve.ServeProcess) -> list[str]:
    return fleet.logs().splitlines()


@pytest.mark.slow
def test_a_flood_of_idle_connections_at_a_low_open_files_limit_neither_silences_the_api_nor_floods_the_log(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    """256 open files (a quarter for the API: 64 connections); 1,500 connections held idle for 12 s."""
    with start(tmp_path, gitops, sim, open_files=256) as fleet:
        fleet.wait_for(all_synced, what="Synced")
        before = len(log_lines(fleet))
        flood: list[socket.socket] = []
        for _ in range(1500):
            try:
                flood.append(
                    socket.create_connection(("127.0.0.1", int(fleet.url.rsplit(":", 1)[1])), timeout=2)
                )
            except OSError:
                pass
        answered_at = None
        started = time.monotonic()
        while time.monotonic() - started < 25:
            try:
                if httpx.get(fleet.url + "/healthz", timeout=2).status_code == 200:
                    answered_at = time.monotonic() - started
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        time.sleep(max(0.0, 12 - (time.monotonic() - started)))
        for s in flood:
            s.close()
        assert answered_at is not None and answered_at < 20, "the API did not answer again"
        assert fleet.status()["clusters"], "the controller still answers with its status"
        during = log_lines(fleet)[before:]
        assert len(during) < 40, "\n".join(during[:60])
        assert fleet.proc.poll() is None
        assert fleet.metric("fleet_http_connections_refused_total") > 0
        assert fleet.metric("fleet_http_timeouts_total") > 0


@pytest.mark.slow
def test_a_flood_of_bad_webhooks_is_refused_with_401_and_logged_a_bounded_number_of_times(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim, "--interval", "1h") as fleet:
        fleet.wait_for(all_synced, what="Synced")
        before = len(log_lines(fleet))
        statuses = set()
        with httpx.Client(timeout=10) as client:
            for i in range(2000):
                headers = {"X-Hub-Signature-256": f"sha256={i:064x}"} if i % 2 else {}
                statuses.add(
                    client.post(fleet.url + "/api/v1/webhook", content=b"{}", headers=headers).status_code
                )
        assert statuses == {401}
        refused = [line for line in log_lines(fleet)[before:] if "webhook refused" in line]
        assert 2 <= len(refused) <= 20, refused
        assert fleet.metric("fleet_webhooks_refused_total") == 2000
