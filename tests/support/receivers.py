"""Notification receivers for tests: one aiohttp server on 127.0.0.1 playing GitHub's commit status API
(``POST /repos/{owner}/{repo}/statuses/{sha}``), GitLab's (``POST /projects/{id}/statuses/{sha}``) and
plain webhook sinks (any other ``POST``), recording every request it gets.

`Receivers` runs in a thread with its own event loop. A test scripts answers by path prefix
(`answer("/hook", 500, 200)`: 500 to the first request, 200 to the next and after), makes a path hang
(`hang("/slow")`: the request is held until the server stops), and waits for what it expects
(`wait_for`). `stop()`/`start()` take the listener down and up again on the same port (a receiver that is
down, then back).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Got:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class Receivers:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.got: list[Got] = []
        self._answers: dict[str, list[int]] = {}
        self._hanging: set[str] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    # -- scripting -------------------------------------------------------------------------------------

    def answer(self, prefix: str, *statuses: int) -> None:
        """Answer requests under `prefix` with these statuses in turn, the last one from then on."""
        with self._lock:
            self._answers[prefix] = list(statuses)

    def hang(self, prefix: str) -> None:
        with self._lock:
            self._hanging.add(prefix)

    def requests(self, prefix: str = "") -> list[Got]:
        with self._lock:
            return [g for g in self.got if g.path.startswith(prefix)]

    def wait_for(
        self, check: Callable[[list[Got]], bool], *, prefix: str = "", timeout: float = 60.0, what: str = ""
    ) -> list[Got]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests(prefix)
            if check(got):
                return got
            time.sleep(0.1)
        raise AssertionError(
            f"receivers: timed out waiting for {what or 'requests'} under {prefix!r}: {self.requests(prefix)}"
        )

    # -- the server ----------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.raw_path.split("?")[0]  # as sent: GitLab's project ids are percent-encoded
        with self._lock:
            hanging = any(path.startswith(p) for p in self._hanging)
            status = 200
            for prefix, statuses in self._answers.items():
                if path.startswith(prefix):
                    status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
                    break
        if hanging:
            await self._release.wait()
            status = 504
        with self._lock:
            self.got.append(Got(request.method, path, dict(request.headers), body, status, time.time()))
        return web.json_response({"ok": status < 300}, status=status)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()

    async def _stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._release = asyncio.Event()

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@contextmanager
def receiving(*, up: bool = True) -> Iterator[Receivers]:
    """Receivers on a free port; `up=False` reserves the port without listening (a receiver that is down)."""
    r = Receivers()
    if up:
        r.start()
    try:
        yield r
    finally:
        r.close()
