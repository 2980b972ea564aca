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
from tests.reconcile_support import GitOpsRepo, configmap, live_objects, send, writes
from tests.support import disk, serve

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


def owned_settings(sim: testing.SimHandle, cluster: str) -> dict[str, Any] | None:
    return live_objects(sim, cluster, namespace="apps").get("settings")


@pytest.mark.slow
def test_a_full_disk_under_the_state_dir_keeps_reconciling_says_so_and_recovers_when_space_is_freed(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    """A real full disk: `--state-dir` on an 8 MiB tmpfs (`tests.support.disk`, needs root to mount),
    filled by a file, so SQLite's writes fail with "database or disk is full" (`sqlite3.OperationalError`,
    the error that ended `fleet serve` before)."""
    with (
        disk.small_filesystem(tmp_path / "small", size="8m") as mount,
        start(tmp_path, gitops, sim, state_dir=mount / "state") as fleet,
    ):
        fleet.wait_for(all_synced, what="Synced")
        filler = disk.fill(mount)

        def not_saving(doc: dict[str, Any]) -> bool:
            if (doc.get("stateStore") or {}).get("saving", True):
                fleet.post("/api/v1/reconcile")  # rounds write the state database
                return False
            return True

        doc = fleet.wait_for(not_saving, timeout=60, what="stateStore.saving false")
        assert "disk is full" in doc["stateStore"]["lastError"]
        assert doc["stateStore"]["failingSince"].endswith("Z")
        assert fleet.metric("fleet_state_saving") == 0
        assert fleet.metric("fleet_state_save_errors_total") >= 1

        # Still reconciling: an object deleted behind fleet's back is put back.
        assert send(sim, "eu-1", "DELETE", "/api/v1/namespaces/apps/configmaps/settings").status_code == 200
        fleet.post("/api/v1/reconcile", params={"cluster": "eu-1"})
        deadline = time.monotonic() + 60
        while owned_settings(sim, "eu-1") is None and time.monotonic() < deadline:
            time.sleep(0.3)
        assert owned_settings(sim, "eu-1") is not None, fleet.logs()[-3000:]
        assert fleet.proc.poll() is None

        filler.unlink()

        def saving(doc: dict[str, Any]) -> bool:
            if not doc["stateStore"]["saving"]:
                fleet.post("/api/v1/reconcile")
                return False
            return True

        doc = fleet.wait_for(saving, timeout=60, what="stateStore.saving true again")
        assert doc["stateStore"]["lastError"] is None and doc["stateStore"]["failingSince"] is None
        assert fleet.metric("fleet_state_saving") == 1
        assert "saving again" in fleet.logs()
        assert fleet.terminate() == 0


@pytest.mark.slow
def test_a_corrupt_state_database_is_set_aside_loudly_and_rebuilt_without_touching_the_clusters(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    """A really damaged file: random bytes written over one of state.db's b-tree pages after a clean stop."""
    db = tmp_path / "state" / "state.db"
    with start(tmp_path, gitops, sim, log_name="first.log") as fleet:
        fleet.wait_for(all_synced, what="Synced")
        assert fleet.terminate() == 0
    assert db.stat().st_size >= 3 * 4096
    with db.open("r+b") as f:
        f.seek(2 * 4096)
        f.write(bytes((i * 151 + 7) % 256 for i in range(4096)))
    damaged = db.read_bytes()
    marks = {c: (sim.journal_sync(c) or [{"seq": 0}])[-1]["seq"] for c in CLUSTERS}

    with start(tmp_path, gitops, sim, log_name="second.log") as fleet:
        doc = fleet.wait_for(all_synced, what="Synced after the rebuild")
        aside = doc["stateStore"]["setAside"]
        assert aside is not None and "malformed" in aside["reason"]
        moved = Path(aside["path"])
        assert moved.parent == db.parent and moved.name.startswith("state.db.corrupt-")
        assert moved.read_bytes() == damaged
        assert doc["stateStore"]["saving"] is True
        errors_logged = [line for line in fleet.logs().splitlines() if " ERROR " in line]
        assert any("set aside as" in line and str(moved) in line for line in errors_logged), fleet.logs()
        assert fleet.metric("fleet_state_set_aside_total") == 1
        status = fleet.get("/api/v1/status").json()
    assert status["stateStore"]["setAside"]["path"] == str(moved)
    for c in CLUSTERS:  # rebuilt from the clusters: they already held the revision, nothing written
        assert writes(sim.journal_sync(c, since=marks[c])) == [], c
