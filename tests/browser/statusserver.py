"""A stand-in for `fleet serve`'s HTTP side, serving only what the status page needs.

Owns: ``GET /`` (`fleet.controller.ui.render_index`), ``GET /ui/{name}`` (`fleet.controller.ui.asset`) with `fleet.controller.ui.HEADERS`,
and ``GET /api/v1/status`` answering whatever document the test last set (or an HTTP error it asked
for), with an ETag and 304 Not Modified as `fleet serve` may do. It records every path requested, so tests can check the page asks for nothing else.
Does not: reconcile anything; the real server is `fleet.controller.server`, and the same page tests can run
against it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio.from_thread
from aiohttp import web

from fleet.controller import ui


class StatusServer:
    """The page's server; `set_status` and `fail_with` may be called from any thread."""

    def __init__(self, *, jaeger_url: str | None, poll_interval: float) -> None:
        self.jaeger_url = jaeger_url
        self.poll_interval = poll_interval
        self.url = ""
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._body = b"{}"
        self._failure: int | None = None
        self.status_reads = 0
        self.not_modified = 0

    def set_status(self, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        with self._lock:
            self._body = body
            self._failure = None

    def fail_with(self, http_status: int) -> None:
        with self._lock:
            self._failure = http_status

    async def _index(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        page = ui.render_index(jaeger_url=self.jaeger_url, poll_interval=self.poll_interval)
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers=dict(ui.HEADERS))

    async def _asset(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        name = request.match_info["name"]
        try:
            data = ui.asset(name)
        except KeyError:
            raise web.HTTPNotFound() from None
        return web.Response(
            body=data, content_type=ui.content_type(name), charset=ui.CHARSET, headers=dict(ui.HEADERS)
        )

    async def _status(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        with self._lock:
            body, failure = self._body, self._failure
            self.status_reads += 1
        if failure is not None:
            return web.Response(status=failure, text="unavailable")
        # A strong ETag lets the browser revalidate instead of downloading an unchanged document.
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if request.headers.get("If-None-Match") == etag:
            self.not_modified += 1
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type="application/json", headers={"ETag": etag})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/ui/{name}", self._asset)
        app.router.add_get("/api/v1/status", self._status)
        return app


@contextlib.asynccontextmanager
async def serve(server: StatusServer) -> AsyncIterator[StatusServer]:
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        server.url = f"http://127.0.0.1:{port}/"
        yield server
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def running(
    portal: anyio.from_thread.BlockingPortal, *, poll_interval: float, jaeger_url: str | None = None
) -> Iterator[StatusServer]:
    """A StatusServer on 127.0.0.1 (port 0) for the life of the block, on the portal's event loop."""
    with portal.wrap_async_context_manager(
        serve(StatusServer(jaeger_url=jaeger_url, poll_interval=poll_interval))
    ) as s:
        yield s
