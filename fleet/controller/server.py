"""The HTTP API of `fleet serve` (docs/operations.md), on aiohttp.

Owns: routing, authentication of mutating calls (``--api-token-file`` bearer token, constant-time), the
webhook's body cap, body deadline and signature check (delegated to `fleet.controller.webhook`), rendering what the
controller reports (status document, Prometheus text, the status page), and the listening socket
(`Listener`): its own accept loop hands each connection to aiohttp, so it can hold the `Limits` a server
facing the network needs: a cap on open connections (over it a new connection is closed at once), a
header deadline (a new connection that has not sent a whole request head in time is closed), an idle
(keep-alive) deadline, and a pause instead of a tight loop when accept fails for want of file
descriptors. Client errors (a malformed request) are one INFO line, not an ERROR with a traceback;
repeated lines are aggregated by the log handler (`fleet.controller.telemetry.RepeatFilter`). Does not: reconcile,
fetch or keep state; it asks a `Controller` (the engine) through the small protocol below, so tests can
drive it with the real engine and nothing else.

Routes: ``GET /healthz``, ``GET /readyz``, ``GET /api/v1/status``, ``POST /api/v1/reconcile``,
``POST /api/v1/webhook``, ``GET /api/v1/rollouts[/BUNDLE]``, ``POST /api/v1/rollouts/BUNDLE/ACTION``
(docs/rollouts.md), ``GET /api/v1/history``, ``GET /api/v1/revisions/SHA`` (docs/notifications.md),
``GET /metrics``, ``GET /`` (and the page's assets under ``/ui/``).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import resource
import socket
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import anyio
import orjson
from aiohttp import http_exceptions, web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from fleet.controller import webhook
from fleet.controller.metrics import Metrics
from fleet.core import errors
from fleet.core import history as hist

log = logging.getLogger("fleet.server")
# aiohttp's per-connection messages (malformed requests, handler errors) go here, through `_ClientErrors`.
http_log = logging.getLogger("fleet.server.http")


class Controller(Protocol):
    """What the HTTP layer needs from the engine."""

    @property
    def ready(self) -> bool: ...

    @property
    def registry(self) -> CollectorRegistry: ...

    @property
    def metrics(self) -> Metrics: ...

    def status_document(self) -> dict[str, Any]: ...

    async def request_reconcile(self, *, cluster: str | None, bundle: str | None) -> dict[str, Any]:
        """Queue reconciles (`queued`; with replicas `handedOn`: recorded for the owners of the others).
        Raises KeyError for an unknown cluster/bundle, `errors.StateError` when it cannot hand them on."""
        ...

    async def push(self, *, reason: str) -> dict[str, Any]:
        """A push was announced: fetch now (and tell the other replicas); the answer's body."""
        ...

    async def history(self, q: hist.Query) -> dict[str, Any]:
        """History entries matching `q` (docs/notifications.md); `errors.StateError` when unreadable."""
        ...

    async def revision_document(self, revision: str) -> dict[str, Any] | None:
        """Where a revision is: None when unknown, ValueError when the abbreviation is bad or ambiguous."""
        ...

    def rollout_documents(self) -> dict[str, Any]:
        """The latest rollout of every bundle, as the API shows it."""
        ...

    def rollout_document(self, bundle: str, *, revision: str | None) -> dict[str, Any] | None:
        """One bundle's latest rollout (or the one of `revision`); None when there is none."""
        ...

    async def rollout_action(
        self, bundle: str, action: str, *, actor: str, reason: str, wave: str | None, cluster: str | None
    ) -> dict[str, Any]:
        """A person's action on a rollout. KeyError: no such bundle or rollout (404); ValueError: the
        action does not apply to the rollout's state (409)."""
        ...


def default_max_connections() -> int:
    """A quarter of the open-files limit, between 16 and 512: the rest stays for clusters, git and state."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 512
    return max(16, min(512, soft // 4))


@dataclass(frozen=True)
class Limits:
    """What one connection may hold, and how many connections may be open (docs/operations.md)."""

    header_timeout: float = 10.0  # a new connection must send a whole request head within this
    idle_timeout: float = 30.0  # keep-alive: between requests (aiohttp's keepalive_timeout)
    body_timeout: float = 10.0  # reading a request body (the webhook's)
    max_connections: int = field(default_factory=default_max_connections)
    accept_pause: float = 0.5  # after accept failed for want of descriptors or memory


@dataclass(frozen=True)
class ServerSettings:
    api_token: bytes | None = None  # from --api-token-file, stripped
    webhook_secret: bytes | None = None  # from --webhook-secret-file, stripped
    jaeger_url: str | None = None
    limits: Limits = field(default_factory=Limits)

    def __repr__(self) -> str:
        return (
            f"ServerSettings(api_token={'<set>' if self.api_token else None}, "
            f"webhook_secret={'<set>' if self.webhook_secret else None}, jaeger_url={self.jaeger_url!r}, "
            f"limits={self.limits!r})"
        )


def read_secret_file(path: str | Path | None, *, option: str) -> bytes | None:
    """A secret file's content with surrounding whitespace stripped; the error names the option, never the value."""
    if not path:
        return None
    try:
        value = Path(path).read_bytes().strip()
    except OSError as e:
        from fleet.core import errors

        raise errors.InputError(f"{option} {path}: cannot read: {e.strerror}") from e
    if not value:
        from fleet.core import errors

        raise errors.InputError(f"{option} {path}: the file is empty")
    return value


def _encode(data: Any) -> bytes:
    """Compact JSON: orjson (the status document of 1,000 clusters is a megabyte: a tenth of the
    standard library's CPU), the standard library for what orjson refuses (keys that are not strings)."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, separators=(",", ":")).encode()


def _json(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=_encode(data), status=status, content_type="application/json")


def _problem(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


CONTROLLER_KEY: web.AppKey[Controller] = web.AppKey("controller")
SETTINGS_KEY: web.AppKey[ServerSettings] = web.AppKey("settings")
# Transports that delivered at least one whole request head (the header deadline spares them).
STARTED_KEY: web.AppKey[weakref.WeakSet[Any]] = web.AppKey("started")


def _authorised(request: web.Request) -> bool:
    token = request.app[SETTINGS_KEY].api_token
    if token is None:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return webhook.equal(value, token)  # the bytes as sent: not-UTF-8 is a mismatch, never a 500


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    if request.app[CONTROLLER_KEY].ready:
        return web.Response(text="ready\n")
    return web.Response(text="not ready\n", status=503)


async def status(request: web.Request) -> web.Response:
    """The status document, with an ETag so pollers (the status page) get a 304 when nothing changed."""
    body = _encode(request.app[CONTROLLER_KEY].status_document())
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


async def reconcile(request: web.Request) -> web.Response:
    if not _authorised(request):
        return _problem(401, "a valid bearer token is required")
    cluster = request.query.get("cluster") or None
    bundle = request.query.get("bundle") or None
    try:
        doc = await request.app[CONTROLLER_KEY].request_reconcile(cluster=cluster, bundle=bundle)
    except KeyError as e:
        return _problem(404, str(e.args[0]) if e.args else "unknown cluster or bundle")
    except errors.StateError as e:
        return _problem(503, f"the reconcile cannot be handed to the replica owning the cluster: {e}")
    return _json(doc, status=202)


async def webhook_call(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    refused = request.app[CONTROLLER_KEY].metrics.webhooks_refused
    secret = settings.webhook_secret
    if secret is None:
        return _problem(404, "no webhook secret is configured (--webhook-secret-file)")
    if request.content_length is not None and request.content_length > webhook.MAX_BODY:
        refused.labels(reason="too-large").inc()
        return _problem(413, f"body over {webhook.MAX_BODY} bytes")
    body = bytearray()
    with anyio.move_on_after(settings.limits.body_timeout) as reading:
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > webhook.MAX_BODY:
                refused.labels(reason="too-large").inc()
                return _problem(413, f"body over {webhook.MAX_BODY} bytes")
    if reading.cancelled_caught:
        refused.labels(reason="body-timeout").inc()
        request.app[CONTROLLER_KEY].metrics.http_timeouts.labels(kind="body").inc()
        resp = _problem(408, f"the body did not arrive within {settings.limits.body_timeout:g} s")
        resp.force_close()
        return resp
    verdict = webhook.verify(headers=request.headers, body=bytes(body), secret=secret)
    if verdict in (webhook.Verdict.MISSING, webhook.Verdict.INVALID):
        refused.labels(reason=verdict.value).inc()
        # One identical line per verdict: the log handler aggregates a flood of them (RepeatFilter).
        log.warning("webhook refused: %s signature", verdict.value)
        return _problem(401, "missing or invalid signature")
    return _json(await request.app[CONTROLLER_KEY].push(reason=f"webhook ({verdict.value})"), status=202)


async def history(request: web.Request) -> web.Response:
    """``GET /api/v1/history?cluster=&bundle=&since=&revision=&limit=``: 200, 400 naming a bad parameter,
    503 when the state database cannot be read."""
    q = request.query
    try:
        query = hist.query(
            cluster=q.get("cluster"),
            bundle=q.get("bundle"),
            since=q.get("since"),
            revision=q.get("revision"),
            limit=q.get("limit"),
            now=time.time(),
        )
    except ValueError as e:
        return _problem(400, str(e))
    try:
        doc = await request.app[CONTROLLER_KEY].history(query)
    except errors.StateError as e:
        return _problem(503, f"the history cannot be read: {e}")
    body = await anyio.to_thread.run_sync(lambda: _encode(doc))
    return web.Response(body=body, content_type="application/json")


async def revision(request: web.Request) -> web.Response:
    """``GET /api/v1/revisions/SHA``: which clusters hold it, for which bundles, since when."""
    sha = request.match_info["sha"]
    try:
        doc = await request.app[CONTROLLER_KEY].revision_document(sha)
    except ValueError as e:
        return _problem(400, str(e))
    except errors.StateError as e:
        return _problem(503, f"the history cannot be read: {e}")
    if doc is None:
        return _problem(
            404,
            f"revision {sha}: unknown here (no cluster holds it, no rollout and no history entry names it: "
            "never applied, or older than the history's retention)",
        )
    return _json(doc)


ROLLOUT_ACTIONS = ("pause", "resume", "approve", "skip", "abort", "rollback")
_MAX_TEXT = 1024  # reason and actor of an action


async def rollouts_list(request: web.Request) -> web.Response:
    return _json(request.app[CONTROLLER_KEY].rollout_documents())


async def rollout_get(request: web.Request) -> web.Response:
    bundle = request.match_info["bundle"]
    revision = request.query.get("revision") or None
    doc = request.app[CONTROLLER_KEY].rollout_document(bundle, revision=revision)
    if doc is None:
        what = f"bundle {bundle}: no rollout" + (f" of revision {revision}" if revision else "")
        return _problem(404, what)
    return _json(doc)


async def rollout_action(request: web.Request) -> web.Response:
    """``POST /api/v1/rollouts/BUNDLE/ACTION`` (docs/rollouts.md): 202, 401, 404, 409 or 400."""
    if not _authorised(request):
        return _problem(401, "a valid bearer token is required")
    bundle, action = request.match_info["bundle"], request.match_info["action"]
    if action not in ROLLOUT_ACTIONS:
        return _problem(404, f"unknown rollout action {action!r} (one of {', '.join(ROLLOUT_ACTIONS)})")
    q = request.query
    reason, actor = q.get("reason", ""), q.get("actor", "") or "api"
    if len(reason) > _MAX_TEXT or len(actor) > _MAX_TEXT:
        return _problem(400, f"reason and actor are at most {_MAX_TEXT} characters")
    wave, cluster = q.get("wave") or None, q.get("cluster") or None
    if action == "skip" and cluster is None:
        return _problem(400, "skip needs ?cluster=NAME")
    try:
        doc = await request.app[CONTROLLER_KEY].rollout_action(
            bundle, action, actor=actor, reason=reason, wave=wave, cluster=cluster
        )
    except KeyError as e:
        return _problem(404, str(e.args[0]) if e.args else f"bundle {bundle}: no rollout")
    except ValueError as e:
        return _problem(409, str(e))
    return _json(doc, status=202)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text, or OpenMetrics (with trace-id exemplars on durations) when the scraper asks for it."""
    registry = request.app[CONTROLLER_KEY].registry
    if "application/openmetrics-text" in request.headers.get("Accept", ""):
        body, content_type = openmetrics.generate_latest(registry), openmetrics.CONTENT_TYPE_LATEST
    else:
        body, content_type = generate_latest(registry), CONTENT_TYPE_LATEST
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


async def index(request: web.Request) -> web.Response:
    from fleet.controller import ui

    page = ui.render_index(jaeger_url=request.app[SETTINGS_KEY].jaeger_url)
    return web.Response(body=page, content_type="text/html", charset=ui.CHARSET, headers=ui.HEADERS)


async def asset(request: web.Request) -> web.Response:
    from fleet.controller import ui

    name = request.match_info["name"]
    try:
        data = ui.asset(name)
    except (KeyError, FileNotFoundError, ValueError):
        raise web.HTTPNotFound() from None
    return web.Response(body=data, content_type=ui.content_type(name), charset=ui.CHARSET, headers=ui.HEADERS)


@web.middleware
async def _note_request(request: web.Request, handler: Any) -> web.StreamResponse:
    """Mark the connection as having sent a whole request head (the header deadline spares it)."""
    if request.transport is not None:
        request.app[STARTED_KEY].add(request.transport)
    response: web.StreamResponse = await handler(request)
    return response


def build_app(controller: Controller, settings: ServerSettings) -> web.Application:
    """The aiohttp application; `Listener` serves it."""
    app = web.Application(client_max_size=webhook.MAX_BODY + 1, middlewares=[_note_request])
    app[CONTROLLER_KEY] = controller
    app[SETTINGS_KEY] = settings
    app[STARTED_KEY] = weakref.WeakSet()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/status", status)
    app.router.add_post("/api/v1/reconcile", reconcile)
    app.router.add_post("/api/v1/webhook", webhook_call)
    app.router.add_get("/api/v1/history", history)
    app.router.add_get("/api/v1/revisions/{sha}", revision)
    app.router.add_get("/api/v1/rollouts", rollouts_list)
    app.router.add_get("/api/v1/rollouts/{bundle}", rollout_get)
    app.router.add_post("/api/v1/rollouts/{bundle}/{action}", rollout_action)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    app.router.add_get("/ui/{name}", asset)
    return app


# ----------------------------------------------------------------------------------------------------------
# The listening socket


class _ClientErrors(logging.Filter):
    """aiohttp logs a malformed request as an ERROR with a traceback; it is the client's error: one INFO
    line saying what was wrong, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, http_exceptions.HttpProcessingError):
            record.msg = "malformed request refused (%s %s)"
            record.args = (exc.code, " ".join(str(exc.message).split())[:200])
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


http_log.addFilter(_ClientErrors())

_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Listener:
    """Serve an app on one listening socket with `Limits`; use as ``async with``, then run `serve()`.

    The accept loop is fleet's own (asyncio's ``create_server`` loops on EMFILE, logging each attempt):
    a connection over `Limits.max_connections` is closed at once and counted; when accept fails for want
    of descriptors the loop pauses `Limits.accept_pause` and logs one (aggregated) line; every accepted
    connection goes to aiohttp with `loop.connect_accepted_socket` and gets a header deadline.
    """

    def __init__(self, app: web.Application, *, limits: Limits, metrics: Metrics | None = None) -> None:
        self.app = app
        self.limits = limits
        self.metrics = metrics or app[CONTROLLER_KEY].metrics
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=limits.idle_timeout,
            logger=http_log,
        )
        self._sock: socket.socket | None = None
        self.metrics.http_connections.set_function(lambda: self.open_connections)

    async def __aenter__(self) -> Listener:
        await self._runner.setup()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with anyio.CancelScope(shield=True):
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            await self._runner.cleanup()

    async def bind(self, host: str, port: int) -> tuple[str, int]:
        """Listen on HOST:PORT (port 0: a free one); returns the address bound. InputError when it cannot."""

        def open_socket() -> socket.socket:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, _type, _proto, _name, address = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
                sock.listen(128)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            return sock

        try:
            self._sock = await anyio.to_thread.run_sync(open_socket)
        except OSError as e:
            raise errors.InputError(f"--listen {host}:{port}: cannot listen: {e.strerror or e}") from e
        bound = self._sock.getsockname()
        return str(bound[0]), int(bound[1])

    @property
    def open_connections(self) -> int:
        server = self._runner.server
        return len(server.connections) if server is not None else 0

    async def serve(self) -> None:
        """Accept connections until cancelled."""
        sock, server = self._sock, self._runner.server
        assert sock is not None and server is not None, "bind() first"
        loop = asyncio.get_running_loop()
        while True:
            await anyio.wait_readable(sock)
            while True:  # every connection waiting in the backlog
                try:
                    conn, _peer = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    if e.errno in _OUT_OF_RESOURCES:
                        self.metrics.http_refused.labels(reason="resources").inc()
                        log.error("HTTP API: cannot accept connections: %s; pausing", e.strerror)
                        await anyio.sleep(self.limits.accept_pause)
                    break  # ECONNABORTED and the like: the peer is gone already
                if self.open_connections >= self.limits.max_connections:
                    conn.close()
                    self.metrics.http_refused.labels(reason="cap").inc()
                    log.warning(
                        "HTTP API: %d connections open (the cap): closing new ones at once",
                        self.limits.max_connections,
                    )
                    continue
                conn.setblocking(False)
                try:
                    transport, _protocol = await loop.connect_accepted_socket(server, conn)
                except OSError:
                    conn.close()
                    continue
                loop.call_later(self.limits.header_timeout, self._header_deadline, transport)

    def _header_deadline(self, transport: asyncio.BaseTransport) -> None:
        if not transport.is_closing() and transport not in self.app[STARTED_KEY]:
            self.metrics.http_timeouts.labels(kind="header").inc()
            transport.close()
