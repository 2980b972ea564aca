"""The demo fleet shipped in the package is the project's own `clusters/` registrations."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "tests" / "tools" / "bin" / "helm"


def test_the_packaged_demo_clusters_are_the_projects_clusters_folder() -> None:
    project = {p.name: p.read_bytes() for p in (ROOT / "clusters").glob("*.yaml")}
    packaged = {p.name: p.read_bytes() for p in (ROOT / "fleet" / "demo" / "clusters").glob("*.yaml")}
    assert len(project) >= 12
    assert packaged == project


@pytest.mark.slow  # starts processes: python -m fleet.cli, sed
@pytest.mark.real  # the demo's Helm bundle needs the Helm 4 of `make tools`
def test_the_demos_broken_release_step_breaks_only_the_web_deployment_and_its_rollout_starts_at_staging(
    tmp_path: Path,
) -> None:
    import re
    import shutil
    import subprocess
    import sys

    import yaml

    from fleet.cli import demo

    repo = tmp_path / "repo"
    shutil.copytree(
        ROOT / "fleet" / "demo", repo, ignore=shutil.ignore_patterns("__init__.py", "__pycache__")
    )
    text = demo._demo_instructions(
        url="http://127.0.0.1:8080",
        repo=repo,
        kubeconfig=tmp_path / "kc",
        secret_file=tmp_path / "s",
        kubectl="k",
    )
    step = re.search(r"(sed -i '0,.*?deployment\.yaml)", text, re.S)
    assert step is not None
    subprocess.run(step.group(1).replace("\\\n", " "), shell=True, check=True, timeout=30)
    docs = list(yaml.safe_load_all((repo / "bundles/web/deployment.yaml").read_text()))
    assert docs[0]["metadata"]["annotations"] == {"sim.fleet.dev/failed": "true"}
    assert docs[1]["kind"] == "Service" and "annotations" not in docs[1]["metadata"]
    plan = subprocess.run(
        # The demo's Helm bundle is rendered by the Helm 4 `make tools` builds (docs/sources.md).
        [sys.executable, "-m", "fleet.cli", "plan", str(repo), "--helm-binary", str(HELM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert plan.returncode == 0, plan.stderr
    waves = [line for line in plan.stdout.splitlines() if line.startswith("web ")][-1]  # the WAVES row
    assert "canary (1 at a time, soak 10s): ap-staging-1, eu-staging-1, us-staging-1 -> prod" in waves
