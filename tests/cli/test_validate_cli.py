"""`fleet validate` as users run it: the real CLI in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import repository_builders as rb

# Every test here starts processes (python -m fleet.cli): `slow`, outside the fast inner loop.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def fleet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd or ROOT,
    )


def test_the_projects_own_repository_validates_with_a_warning_about_missing_bundles() -> None:
    out = fleet("validate", ".")
    assert out.returncode == 0, out.stdout + out.stderr
    n_clusters = len(list((ROOT / "clusters").glob("*.yaml")))
    n_bundles = len(list((ROOT / "bundles").glob("*/bundle.yaml"))) if (ROOT / "bundles").exists() else 0
    lines = out.stdout.splitlines()
    assert lines[-1].startswith(f"{n_clusters} clusters, {n_bundles} bundles, ")
    if n_bundles == 0:
        assert lines[:-1] == ["bundles:1: warning: no bundle (bundles/NAME/bundle.yaml) in this revision"]
    assert f"reading work tree {ROOT} (revision null)" in out.stderr


def test_an_invalid_work_tree_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    rb.write_files(tmp_path, rb.SAMPLE)
    rb.write_files(
        tmp_path,
        {
            "clusters/eu-prod-1.yaml": rb.cluster_yaml("eu-prod-1") + "spec:\n  token: CANARY-TOKEN\n",
            "bundles/web/bundle.yaml": rb.bundle_yaml("web", spec="  placement: {}\n  dependsOn: [nope]\n"),
        },
    )
    out = fleet("validate", str(tmp_path))
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        "bundles/web/bundle.yaml:6: spec.placement is empty (omit it to place nowhere, or give clusters, "
        "clusterSelector or cel)",
        'bundles/web/bundle.yaml:7: spec.dependsOn[0] "nope": no such bundle',
        'clusters/eu-prod-1.yaml:8: credential-looking field "spec.token": credentials never live in the '
        "repository (put them in the controller's kubeconfig); the value is not shown",
    ]
    assert "CANARY" not in out.stdout + out.stderr
    assert "3 error(s), 0 warning(s)" in out.stderr


def test_rev_reads_a_commit_instead_of_the_work_tree(tmp_path: Path) -> None:
    git = rb.init(tmp_path)
    sha = rb.commit(git, dict(rb.SAMPLE), message="good state")
    rb.write_files(tmp_path, {**rb.SAMPLE, "bundles/web/deploy.yaml": "a: [\n"})
    worktree = fleet("validate", str(tmp_path))
    assert worktree.returncode == 1
    assert worktree.stdout.startswith("bundles/web/deploy.yaml:2: invalid YAML: ")
    head = fleet("validate", str(tmp_path), "--rev", "HEAD")
    assert head.returncode == 0, head.stdout + head.stderr
    assert head.stdout.splitlines() == ["2 clusters, 2 bundles, 3 objects"]
    assert f"reading revision {sha[:12]} (HEAD) of {tmp_path}: good state" in head.stderr


def test_path_validates_a_subfolder_and_names_problems_from_the_root(tmp_path: Path) -> None:
    rb.write_files(tmp_path, {f"envs/prod/{k}": v for k, v in rb.SAMPLE.items()})
    rb.write_files(
        tmp_path, {"envs/prod/bundles/base/bundle.yaml": rb.bundle_yaml("base", spec="  suspend: 1\n")}
    )
    out = fleet("validate", str(tmp_path), "--path", "envs/prod")
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        "envs/prod/bundles/base/bundle.yaml:6: spec.suspend must be true or false, not 1"
    ]
    assert "--path envs/prod" in out.stderr


def test_a_repository_that_cannot_be_read_exits_1_with_a_path_line_naming_the_reason(tmp_path: Path) -> None:
    out = fleet("validate", "/etc/passwd", "--rev", "HEAD")
    assert out.returncode == 1
    assert out.stdout.splitlines() == ["/etc/passwd:1: not a git repository"]
    git = rb.init(tmp_path)
    rb.commit(git, dict(rb.SAMPLE))
    out = fleet("validate", str(tmp_path), "--rev", "v9")
    assert out.returncode == 1
    assert out.stdout.splitlines() == [f"{tmp_path}:1: unknown revision 'v9' (no such branch, tag or commit)"]
    out = fleet("validate", "--rev", "nosuch", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [".:1: unknown revision 'nosuch' (no such branch, tag or commit)"]
    missing = tmp_path / "missing"
    out = fleet("validate", str(missing))
    assert out.returncode == 1
    assert out.stdout.splitlines() == [f"{missing}:1: cannot read (No such file or directory)"]
