"""The differential line of a run (tests/support/differential_summary.py), also on pytest-xdist workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Two files of cases with outcomes already decided: 5 agree, 2 known differences, 1 differs.
CASES = """\
import pytest

from tests.support import differential_summary


@pytest.mark.parametrize("outcome", {outcomes!r})
def test_case(request: pytest.FixtureRequest, outcome: str) -> None:
    differential_summary.record(request.config, request.node.nodeid, outcome)
"""
LINE = "differential: 8 cases on the sim and the real API server: 5 agree, 2 known differences, 1 differ"


def _pytest(folder: Path, *args: str) -> str:
    (folder / "test_one.py").write_text(CASES.format(outcomes=["agree", "agree", "agree", "known"]))
    (folder / "test_two.py").write_text(CASES.format(outcomes=["agree", "agree", "known", "differ"]))
    plugins = ["-p", "tests.support.differential_summary", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, "-v", "--rootdir", str(folder), *args, str(folder)],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow  # starts pytest
def test_a_run_on_two_workers_prints_the_differential_line_once_with_every_workers_cases(
    tmp_path: Path,
) -> None:
    out = _pytest(tmp_path, "-n", "2", "--dist", "loadfile")
    assert "[gw0] " in out and "[gw1] " in out, out  # both workers ran cases
    assert [line for line in out.splitlines() if line.startswith("differential:")] == [LINE], out


@pytest.mark.slow  # starts pytest
def test_a_run_in_one_process_prints_the_differential_line_once(tmp_path: Path) -> None:
    out = _pytest(tmp_path)
    assert [line for line in out.splitlines() if line.startswith("differential:")] == [LINE], out
