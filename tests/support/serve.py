"""Running the real `fleet serve` program in a child process for end-to-end tests.

`ServeProcess` starts it with `--listen 127.0.0.1:0`, reads the bound URL from its stderr (kept in a file,
so a full pipe never blocks the server), and offers small helpers: the status document, waiting for a
condition on it, the metrics text, signals. `injecting` starts it with a fault injected into its own code
(tests/support/inject/sitecustomize.py), to prove that the controller survives a bug.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

FLEET = [sys.executable, "-m", "fleet.cli"]
# The folder of the fault-injection `sitecustomize` (see tests/support/inject/sitecustomize.py).
INJECT = Path(__file__).resolve().parent / "inject"


def injecting(fault: str) -> dict[str, str]:
    """Environment for `serving(env=...)` that starts fleet with the fault `fault` injected."""
    path = os.pathsep.join(p for p in (str(INJECT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "FLEET_TEST_FAULT": fault}


class ServeProcess:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.url = ""

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_listening(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"listening on (http://\S+)", self.logs())
            if m:
                self.url = m.group(1)
                return self.url
            if self.proc.poll() is not None:
                raise AssertionError(f"fleet serve exited {self.proc.returncode}:\n{self.logs()}")
            time.sleep(0.05)
        raise AssertionError(f"fleet serve did not listen within {timeout}s:\n{self.logs()}")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=10, **kwargs)

    def status(self) -> dict[str, Any]:
        resp = self.get("/api/v1/status")
        resp.raise_for_status()
        doc: dict[str, Any] = resp.json()
        return doc

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 60.0, what: str = "condition"
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"fleet serve exited {self.proc.returncode}:\n{self.logs()[-4000:]}")
            doc = self.status()
            if predicate(doc):
                return doc
            time.sleep(0.2)
        raise AssertionError(
            f"timed out waiting for {what}; last status: {doc}\nlogs:\n{self.logs()[-4000:]}"
        )

    def metric(self, name: str) -> float:
        """Sum of every sample of a metric family in the Prometheus text."""
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def _limit_open_files(n: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


@contextmanager
def serving(
    *,
    repo: Path | str,
    kubeconfig: Path,
    state_dir: Path,
    log: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    open_files: int | None = None,
) -> Iterator[ServeProcess]:
    """`open_files` lowers the child's RLIMIT_NOFILE (soft and hard), as a container's limit would."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("KUBECONFIG", None)
    full_env.setdefault("OTEL_SDK_DISABLED", "true")
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [
                *FLEET,
                "serve",
                "--repo",
                str(repo),
                "--kubeconfig",
                str(kubeconfig),
                "--state-dir",
                str(state_dir),
                "--listen",
                "127.0.0.1:0",
                *args,
            ],
            stdout=sink,
            stderr=sink,
            env=full_env,
            preexec_fn=(lambda: _limit_open_files(open_files)) if open_files else None,
        )
    handle = ServeProcess(proc, log)
    try:
        handle.wait_listening()
        yield handle
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
