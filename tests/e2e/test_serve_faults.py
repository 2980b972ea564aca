"""End-to-end faults of the controller process itself: the real `fleet serve` against `fleet sim` clusters
and a real git repository (connection floods, hostile headers, a full disk, a corrupt state database)."""

from __future__ import annotations

import base64
import copy
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pygit2
import pytest

from fleet.sim import testing
from tests.support import disk, faultproxy, githttp, otlp, serve
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, run_fleet, send, writes

CLUSTERS = ["eu-1", "us-1"]
JSON_HEADERS = {"Content-Type": "application/json"}
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


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_a_cold_start_with_two_hundred_clusters_keeps_to_its_concurrency_and_bounded_memory(
    tmp_path: Path,
) -> None:
    """RELIABILITY 22. Every request to every cluster is slowed by 20 ms so that rounds overlap; the number
    of rounds in flight is sampled from /metrics all along. (The per-cluster request rate is the token
    bucket's, tested in tests/clients/test_kube_client.py::test_requests_are_rate_limited_per_cluster.)"""
    n, concurrency = 200, 4
    names = [f"c{i:03d}" for i in range(n)]
    repo = GitOpsRepo(tmp_path / "repo")
    for name in names:
        repo.cluster(name, labels={"env": "prod"})
    repo.bundle("settings", [configmap("settings", colour="blue")], namespace="apps", selector={})
    repo.bundle("more", [configmap(f"more-{i}") for i in range(5)], namespace="apps", selector={})
    head = repo.commit("first")
    with testing.serving(names=names) as many:
        for name in names:
            many.faults_sync(name, {"latencyMs": 20})
        with serve.serving(
            repo=repo.root,
            kubeconfig=many.kubeconfig,
            state_dir=tmp_path / "state",
            log=tmp_path / "serve.log",
            args=["--interval", "1h", "--concurrency", str(concurrency)],
        ) as fleet:
            seen: list[float] = []
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                seen.append(fleet.metric("fleet_rounds_in_flight"))
                doc = fleet.status()
                clusters = doc.get("clusters") or {}
                if len(clusters) == n and all(
                    c["state"] == "Synced" and c["revision"] == head for c in clusters.values()
                ):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"not converged: {fleet.logs()[-3000:]}")
            peak = rss_peak_mb(fleet.proc.pid)
        assert max(seen) <= concurrency, max(seen)
        assert max(seen) >= 2, "rounds never overlapped: the sampling saw nothing"
        assert peak < 400, f"peak RSS {peak:.0f} MB"
        for name in ("c000", "c199"):
            assert set(live_objects(many, name, namespace="apps")) >= {"settings", "more-0", "more-4"}


@pytest.mark.slow
def test_sigterm_during_a_round_that_cannot_finish_ends_within_the_grace_period_with_exit_0(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    """RELIABILITY 20. A new commit's applies hang on one cluster (the sim never answers them, and the
    request timeout is longer than the grace period): SIGTERM cancels that round after the 20 s grace."""
    with start(tmp_path, gitops, sim, "--request-timeout", "5m", "--retry-budget", "5m") as fleet:
        fleet.wait_for(all_synced, what="Synced")
        sim.faults_sync("eu-1", {"hang": True, "method": "PATCH"})
        gitops.bundle("settings", [configmap("settings", colour="green")], namespace="apps", selector={})
        gitops.commit("green")
        deadline = time.monotonic() + 30
        while not any(
            r["method"] == "PATCH" and r["status"] == 0 for r in sim.journal_sync("eu-1")
        ):  # the apply is in flight and hung
            assert time.monotonic() < deadline, fleet.logs()[-3000:]
            time.sleep(0.2)
        started = time.monotonic()
        code = fleet.terminate(timeout=60)
        took = time.monotonic() - started
    assert code == 0, fleet.logs()[-3000:]
    assert took < 20 + 10, took
    assert "shutting down" in fleet.logs() and "stopped" in fleet.logs()


@pytest.mark.slow
def test_no_secret_value_or_credential_reaches_logs_status_metrics_traces_or_the_cli(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    """RELIABILITY 23 and 24 in one controller run: a Secret canary (applied), a second canary in a Secret
    the server rejects (its message names the field), the git token in the repository URL (a real
    smart-HTTP server that demands it), and a bearer token in every kubeconfig user. None of them, raw or
    base64, may appear in the log, the status document, the metrics, the exported spans or `fleet
    status`'s output."""
    applied, rejected = "canary-applied-5e1f", "canary-rejected-77aa"
    kube_token = "kube-token-canary-0b9d"
    repo = GitOpsRepo(tmp_path / "work")
    for name in CLUSTERS:
        repo.cluster(name, labels={"region": name.split("-")[0]})
    repo.bundle(
        "settings",
        [
            configmap("settings", colour="blue"),
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"pw": applied}},
        ],
        namespace="apps",
        selector={},
    )
    refused = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pull"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": rejected},
    }
    repo.bundle("registry", [refused], namespace="apps", selector={})
    repo.commit("first")
    served = tmp_path / "served"
    pygit2.clone_repository(str(repo.root), str(served / "fleet.git"), bare=True)
    kubeconfig = copy.deepcopy(sim.kubeconfig_dict)
    for user in kubeconfig["users"]:
        user["user"] = {"token": kube_token}
    # An admission webhook (or an older server) that quotes the refused value, raw and base64, in its
    # message: fleet's scrubbing has to catch it.
    quoted = f'Invalid value: "{rejected}" ({base64.b64encode(rejected.encode()).decode()})'
    rejection = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": f'admission webhook "registry.example.com" denied the request: {quoted}',
        "reason": "Invalid",
        "code": 422,
    }

    with (
        faultproxy.serving(kubeconfig) as proxy,
        githttp.serving(served) as git_url,
        otlp.running() as receiver,
    ):
        rule = proxy.add(
            faultproxy.Rule(
                method="PATCH", path=r"/secrets/pull$", status=422, body=rejection, headers=JSON_HEADERS
            )
        )
        with serve.serving(
            repo=git_url.replace("http://", f"http://{githttp.USER}:{githttp.TOKEN}@") + "/fleet.git",
            kubeconfig=proxy.kubeconfig,
            state_dir=tmp_path / "state",
            log=tmp_path / "serve.log",
            args=["--interval", "1s", "--otlp-endpoint", receiver.url],
            env={"OTEL_SDK_DISABLED": "false", "OTEL_BSP_SCHEDULE_DELAY": "100"},
        ) as fleet:
            doc = fleet.wait_for(
                lambda d: (
                    len(d.get("clusters") or {}) == len(CLUSTERS)
                    and all(
                        (c["bundles"].get("settings") or {}).get("state") == "Synced"
                        for c in d["clusters"].values()
                    )
                    and any(
                        (c["bundles"].get("registry") or {}).get("state") == "Failed"
                        for c in d["clusters"].values()
                    )
                ),
                what="settings Synced everywhere, registry Failed on a cluster",
            )
            failed = [
                c["bundles"]["registry"]["lastError"]
                for c in doc["clusters"].values()
                if (c["bundles"].get("registry") or {}).get("state") == "Failed"
            ]
            assert "Secret/apps/pull" in failed[0]
            deadline = time.monotonic() + 30
            while not receiver.snapshot() and time.monotonic() < deadline:
                time.sleep(0.2)
            status_text = fleet.get("/api/v1/status").text
            metrics_text = fleet.get("/metrics").text
            cli = run_fleet("status", "--server", fleet.url, "--format", "json")
            cli_table = run_fleet("status", "--server", fleet.url)
            logs = fleet.logs()
        assert proxy.hits_of(rule), "the rejection quoting the canary was really sent"
    exported = receiver.all_bytes()
    assert exported and receiver.snapshot(), "spans were exported, so their absence below means something"
    assert live_objects(sim, "eu-1", "secrets", namespace="apps")["db"]  # the canary was really applied
    places = {
        "log": logs,
        "status": status_text,
        "metrics": metrics_text,
        "fleet status": cli.stdout + cli.stderr + cli_table.stdout + cli_table.stderr,
        "traces": exported.decode("latin-1"),
    }
    for value in (applied, rejected, githttp.TOKEN, kube_token):
        for form in (value, base64.b64encode(value.encode()).decode()):
            for where, text in places.items():
                assert form not in text, f"{value!r} found in {where}"
