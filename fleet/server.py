"""The HTTP API of `fleet serve` (SPEC.md section 4), on aiohttp.

Owns: routing, authentication of mutating calls (``--api-token-file`` bearer token, constant-time), the
webhook's body cap and signature check (delegated to `fleet.webhook`), and rendering what the controller
reports (status document, Prometheus text, the status page). Does not: reconcile, fetch or keep state;
it asks a `Controller` (the engine) through the small protocol below, so tests can drive it with the real
engine and nothing else.

Routes: ``GET /healthz``, ``GET /readyz``, ``GET /api/v1/status``, ``POST /api/v1/reconcile``,
``POST /api/v1/webhook``, ``GET /metrics``, ``GET /`` (and the page's assets under ``/ui/``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from fleet import webhook

log = logging.getLogger("fleet.server")


class Controller(Protocol):
    """What the HTTP layer needs from the engine."""

    @property
    def ready(self) -> bool: ...

    @property
    def registry(self) -> CollectorRegistry: ...

    def status_document(self) -> dict[str, Any]: ...

    def request_reconcile(self, *, cluster: str | None, bundle: str | None) -> list[str]:
        """Queue reconciles; returns the clusters queued. Raises KeyError for an unknown cluster/bundle."""
        ...

    def trigger_fetch(self, *, reason: str) -> bool:
        """Ask for a fetch now; False when rate-limited (the call is still accepted)."""
        ...


@dataclass(frozen=True)
class ServerSettings:
    api_token: bytes | None = None  # from --api-token-file, stripped
    webhook_secret: bytes | None = None  # from --webhook-secret-file, stripped
    jaeger_url: str | None = None

    def __repr__(self) -> str:
        return (
            f"ServerSettings(api_token={'<set>' if self.api_token else None}, "
            f"webhook_secret={'<set>' if self.webhook_secret else None}, jaeger_url={self.jaeger_url!r})"
        )


def read_secret_file(path: str | Path | None, *, option: str) -> bytes | None:
    """A secret file's content with surrounding whitespace stripped; the error names the option, never the value."""
    if not path:
        return None
    try:
        value = Path(path).read_bytes().strip()
    except OSError as e:
        from fleet import errors

        raise errors.InputError(f"{option} {path}: cannot read: {e.strerror}") from e
    if not value:
        from fleet import errors

        raise errors.InputError(f"{option} {path}: the file is empty")
    return value


def _json(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(), status=status, content_type="application/json"
    )


def _problem(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


CONTROLLER_KEY: web.AppKey[Controller] = web.AppKey("controller")
SETTINGS_KEY: web.AppKey[ServerSettings] = web.AppKey("settings")


def _authorised(request: web.Request) -> bool:
    token = request.app[SETTINGS_KEY].api_token
    if token is None:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    if request.app[CONTROLLER_KEY].ready:
        return web.Response(text="ready\n")
    return web.Response(text="not ready\n", status=503)


async def status(request: web.Request) -> web.Response:
    """The status document, with an ETag so pollers (the status page) get a 304 when nothing changed."""
    body = json.dumps(request.app[CONTROLLER_KEY].status_document(), separators=(",", ":")).encode()
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
        queued = request.app[CONTROLLER_KEY].request_reconcile(cluster=cluster, bundle=bundle)
    except KeyError as e:
        return _problem(404, str(e.args[0]) if e.args else "unknown cluster or bundle")
    return _json({"queued": queued}, status=202)


async def webhook_call(request: web.Request) -> web.Response:
    secret = request.app[SETTINGS_KEY].webhook_secret
    if secret is None:
        return _problem(404, "no webhook secret is configured (--webhook-secret-file)")
    if request.content_length is not None and request.content_length > webhook.MAX_BODY:
        return _problem(413, f"body over {webhook.MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > webhook.MAX_BODY:
            return _problem(413, f"body over {webhook.MAX_BODY} bytes")
    verdict = webhook.verify(headers=request.headers, body=bytes(body), secret=secret)
    if verdict in (webhook.Verdict.MISSING, webhook.Verdict.INVALID):
        log.warning("webhook refused: %s signature", verdict.value)
        return _problem(401, "missing or invalid signature")
    accepted = request.app[CONTROLLER_KEY].trigger_fetch(reason=f"webhook ({verdict.value})")
    return _json({"fetch": "started" if accepted else "already pending"}, status=202)


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
    from fleet import ui

    page = ui.render_index(jaeger_url=request.app[SETTINGS_KEY].jaeger_url)
    return web.Response(body=page, content_type="text/html", charset=ui.CHARSET, headers=ui.HEADERS)


async def asset(request: web.Request) -> web.Response:
    from fleet import ui

    name = request.match_info["name"]
    try:
        data = ui.asset(name)
    except (KeyError, FileNotFoundError, ValueError):
        raise web.HTTPNotFound() from None
    return web.Response(body=data, content_type=ui.content_type(name), charset=ui.CHARSET, headers=ui.HEADERS)


def build_app(controller: Controller, settings: ServerSettings) -> web.Application:
    """The aiohttp application; the caller runs it (AppRunner + TCPSite)."""
    app = web.Application(client_max_size=webhook.MAX_BODY + 1)
    app[CONTROLLER_KEY] = controller
    app[SETTINGS_KEY] = settings
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/status", status)
    app.router.add_post("/api/v1/reconcile", reconcile)
    app.router.add_post("/api/v1/webhook", webhook_call)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    app.router.add_get("/ui/{name}", asset)
    return app
