"""What a renderer may not do: hang past its time limit, print without end, or be missing without a clear
word (issue 18). The `helm` here is a stand-in script, for these tests only: the real Helm is in
tests/clients/test_sources_helm.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fleet.clients import sources
from fleet.sim import testing
from tests.support import repository_builders as rb
from tests.support import sources as ss
from tests.support.reconcile import run_fleet

CHART = {
    "bundles/web/chart/Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    "bundles/web/chart/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n",
}


def repo_files() -> dict[str, str | bytes]:
    return {
        "clusters/sim-001.yaml": ss.cluster("sim-001", env="prod"),
        "clusters/sim-002.yaml": ss.cluster("sim-002", env="prod"),
        "bundles/web/bundle.yaml": ss.bundle(
            "web",
            "  namespace: web\n  source:\n    helm: {chart: chart}\n  placement: {clusterSelector: {}}\n",
        ),
        **CHART,
        "bundles/plain/bundle.yaml": ss.bundle(
            "plain", "  namespace: plain\n  placement: {clusterSelector: {}}\n"
        ),
        "bundles/plain/cm.yaml": ss.dump(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"}, "data": {"a": "1"}}
        ),
    }


def fake_helm(tmp_path: Path, body: str) -> str:
    """A `helm` that answers `version` like Helm 4 and does `body` for `template`."""
    script = tmp_path / "helm"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = version ]; then echo v4.0.0-test; exit 0; fi\n'
        f"echo $$ >> {tmp_path}/pids\n"
        f"{body}\n"
    )
    script.chmod(0o755)
    return str(script)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too: it was killed and only waits for its parent (this test's process is not it).
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] == "Z"


@pytest.mark.slow  # starts processes: helm
def test_a_renderer_that_hangs_is_stopped_at_its_time_limit_and_breaks_only_its_bundle(
    tmp_path: Path,
) -> None:
    helm = fake_helm(tmp_path, "exec /bin/sleep 300")
    cache = sources.Cache()
    started = time.monotonic()
    out = ss.expand(repo_files(), settings=sources.Settings(helm_binary=helm, timeout=2.0), cache=cache)
    elapsed = time.monotonic() - started
    assert elapsed < 30, elapsed
    message = out.errors[("web", "sim-001")]
    assert message == (
        "bundles/web/bundle.yaml:8: helm: did not finish within the time limit of 2s (--render-timeout); stopped"
    )
    assert ("plain", "sim-001") in out.desired and ("plain", "sim-002") in out.desired
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 1  # one render for both clusters
    assert all(gone(p) for p in pids), pids
    # A time limit is not a property of the content: the next revision tries again.
    ss.expand(repo_files(), settings=sources.Settings(helm_binary=helm, timeout=1.0), cache=cache)
    assert cache.runner.started["helm"] == 3  # version once, template twice


@pytest.mark.slow  # starts processes: helm
def test_a_renderer_that_prints_without_end_is_stopped_at_the_output_limit(tmp_path: Path) -> None:
    helm = fake_helm(tmp_path, "exec /usr/bin/yes 'a: b'")
    out = ss.expand(repo_files(), settings=sources.Settings(helm_binary=helm, max_output=1_000_000))
    assert out.errors[("web", "sim-001")] == (
        "bundles/web/bundle.yaml:8: helm: printed more than 1000000 bytes (the output limit); stopped"
    )
    assert all(gone(int(p)) for p in (tmp_path / "pids").read_text().split())


def test_without_a_helm_program_the_helm_bundles_say_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no helm on PATH
    out = ss.expand(repo_files())
    assert out.errors[("web", "sim-001")] == (
        "bundles/web/bundle.yaml:8: spec.source.helm: no helm program: install Helm 4 on PATH or pass "
        "--helm-binary PATH (fleet renders charts with `helm template`)"
    )
    assert ("plain", "sim-001") in out.desired


@pytest.mark.slow  # starts processes: helm
def test_a_helm_that_is_not_helm_4_is_named(tmp_path: Path) -> None:
    script = tmp_path / "helm"
    script.write_text('#!/bin/sh\n[ "$1" = version ] && echo v3.19.0\n')
    script.chmod(0o755)
    out = ss.expand(repo_files(), settings=sources.Settings(helm_binary=str(script)))
    assert out.errors[("web", "sim-001")] == (
        f"bundles/web/bundle.yaml:8: spec.source.helm: {script} is Helm v3.19.0: fleet needs Helm 4"
    )


@pytest.mark.slow
def test_fleet_sync_with_a_hanging_renderer_applies_the_rest_and_reports_the_bundle_failed(
    tmp_path: Path, fleet_sim: testing.SimHandle
) -> None:
    helm = fake_helm(tmp_path, "exec /bin/sleep 300")
    rb.write_files(tmp_path / "repo", repo_files())
    out = run_fleet(
        "sync",
        str(tmp_path / "repo"),
        "--worktree",
        "--kubeconfig",
        str(fleet_sim.kubeconfig),
        "--helm-binary",
        helm,
        "--render-timeout",
        "2s",
        "--no-wait",
        "--format",
        "json",
    )
    assert out.returncode == 1, out.stdout + out.stderr
    import json

    doc = json.loads(out.stdout)
    for c in ("sim-001", "sim-002"):
        bundles = doc["clusters"][c]["bundles"]
        assert bundles["plain"]["state"] == "Synced", bundles
        assert bundles["web"]["state"] == "Failed"
        assert "did not finish within the time limit of 2s" in bundles["web"]["message"]
    live = fleet_sim.journal_sync("sim-001")
    assert any("/configmaps/plain" in r["path"] for r in live)
    assert not any("/configmaps/web" in r["path"] for r in live)
    assert all(gone(int(p)) for p in (tmp_path / "pids").read_text().split())
