"""`fleet sim` as a process: the ready line, the kubeconfig, --from REPO, and a clean exit on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

# Every test here starts processes (python -m fleet.cli): `slow`, outside the fast inner loop.
pytestmark = pytest.mark.slow


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli", "sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, line


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_fleet_sim_prints_ready_writes_n_contexts_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "kc.yaml"
    proc, line = _start("--clusters", "3", "--kubeconfig-out", str(out))
    try:
        assert line == f"ready {out}\n"
        doc = yaml.safe_load(out.read_text())
        assert [c["name"] for c in doc["contexts"]] == ["sim-001", "sim-002", "sim-003"]
        server = doc["clusters"][2]["cluster"]["server"]
        assert server.endswith("/clusters/sim-003")
        with httpx.Client(timeout=10) as c:
            assert c.get(server + "/version").json()["gitVersion"].startswith("v1.35.")
            admin = server.rsplit("/clusters/", 1)[0]
            assert c.get(admin + "/_sim/clusters").json() == {"clusters": ["sim-001", "sim-002", "sim-003"]}
    finally:
        code = _stop(proc)
    assert code == 0


def test_fleet_sim_from_a_repository_serves_one_cluster_per_cluster_file(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "clusters").mkdir(parents=True)
    (repo / "clusters" / "eu.yaml").write_text(
        "apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata: {name: eu}\nspec: {context: eu-prod}\n"
    )
    (repo / "clusters" / "us.yaml").write_text(
        "apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata: {name: us}\n"
    )
    out = tmp_path / "kc.yaml"
    proc, line = _start("--from", str(repo), "--kubeconfig-out", str(out), "--port-per-cluster", "--tls")
    try:
        assert line == f"ready {out}\n"
        doc = yaml.safe_load(out.read_text())
        assert [c["name"] for c in doc["contexts"]] == ["eu-prod", "us"]
        servers = [c["cluster"]["server"] for c in doc["clusters"]]
        assert all(s.startswith("https://127.0.0.1:") for s in servers) and len(set(servers)) == 2
        assert all(c["cluster"]["certificate-authority-data"] for c in doc["clusters"])
    finally:
        code = _stop(proc)
    assert code == 0


def test_fleet_sim_with_a_bad_listen_address_fails_with_a_message(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "sim", "--listen", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "--listen 'nonsense'" in proc.stderr


def test_fleet_sim_rv_base_starts_resource_versions_above_32_bits(tmp_path: Path) -> None:
    out = tmp_path / "kc.yaml"
    proc, line = _start("--names", "big", "--rv-base", "5000000000", "--kubeconfig-out", str(out))
    try:
        assert line == f"ready {out}\n"
        server = yaml.safe_load(out.read_text())["clusters"][0]["cluster"]["server"]
        with httpx.Client(timeout=10) as c:
            rv = c.get(server + "/api/v1/namespaces").json()["metadata"]["resourceVersion"]
        assert int(rv) > 2**32
    finally:
        assert _stop(proc) == 0
