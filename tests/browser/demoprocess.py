"""Running the real `fleet demo` (simulated clusters, a demo repository and `fleet serve`) in a child
process, for the status page tests and for the screenshot in `docs/ui.png`.

Owns: starting `fleet demo --dir DIR --listen 127.0.0.1:0` in its own process group, reading the status
page's URL from the instructions it prints, waiting for its status to settle, and stopping it (SIGTERM,
which stops its `fleet sim` child too; SIGKILL to its process group only if it does not stop in time).

Does not: know anything of the page; `tests/browser/harness.py` drives the browser.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

FLEET = [sys.executable, "-m", "fleet.cli"]
HELM = Path(__file__).resolve().parents[1] / "tools" / "bin" / "helm"  # built by `make tools`
URL_LINE = re.compile(r"^\s*status page\s+(http://\S+?)/?\s*$", re.MULTILINE)


class DemoProcess:
    """A running `fleet demo`: `url` (no trailing slash), `output()` (what it printed on stdout)."""

    def __init__(self, proc: subprocess.Popen[bytes], *, stdout: Path, stderr: Path) -> None:
        self.proc = proc
        self.stdout = stdout
        self.stderr = stderr
        self.url = ""

    def output(self) -> str:
        return self.stdout.read_text(errors="replace")

    def logs(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_url(self, timeout: float) -> str:
        """The status page URL from the printed instructions, once they are printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = URL_LINE.search(self.output())
            if m:
                self.url = m.group(1)
                return self.url
            if self.proc.poll() is not None:
                raise AssertionError(f"fleet demo exited {self.proc.returncode}:\n{self.logs()[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(
            f"fleet demo printed no status page URL within {timeout} s:\n{self.logs()[-4000:]}"
        )

    def status(self) -> dict[str, Any]:
        resp = httpx.get(self.url + "/api/v1/status", timeout=10)
        resp.raise_for_status()
        doc: dict[str, Any] = resp.json()
        return doc

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"fleet demo exited {self.proc.returncode}:\n{self.logs()[-4000:]}")
            doc = self.status()
            if predicate(doc):
                return doc
            time.sleep(0.3)
        raise AssertionError(
            f"timed out waiting for {what}; last status: {doc}\nlogs:\n{self.logs()[-4000:]}"
        )


def healthy(doc: dict[str, Any]) -> bool:
    """Every cluster of a fetched revision Synced, or Paused (the demo fleet has one paused cluster)."""
    clusters = doc.get("clusters") or {}
    return (
        bool(doc.get("revision"))
        and bool(clusters)
        and all(c["state"] in ("Synced", "Paused") for c in clusters.values())
    )


@contextlib.contextmanager
def running(workdir: Path, *, interval: str = "2s", start_timeout: float = 90.0) -> Iterator[DemoProcess]:
    """`fleet demo` with its repository and state under `workdir`, listening on 127.0.0.1, port 0."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OTEL_SDK_DISABLED": "true"}
    env.pop("KUBECONFIG", None)
    stdout, stderr = workdir / "demo.out", workdir / "demo.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [
                *FLEET,
                "demo",
                "--dir",
                str(workdir),
                "--listen",
                "127.0.0.1:0",
                "--interval",
                interval,
                "--helm-binary",
                str(HELM),  # the demo's Helm bundle (make tools builds it)
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,  # its own process group: the sim child goes with it if it must be killed
        )
    demo = DemoProcess(proc, stdout=stdout, stderr=stderr)
    try:
        demo.wait_url(start_timeout)
        yield demo
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        _reap_group(proc.pid)


def _reap_group(pgid: int, *, timeout: float = 15.0) -> None:
    """Waits for the rest of the demo's process group (its `fleet sim`) to exit; kills what is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
