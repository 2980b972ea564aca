"""The status page of `fleet serve`: its static assets and the index page that loads them.

Owns: the files shipped in this folder (``index.html``, ``app.js``, ``style.css``), reading them through
importlib.resources, and rendering the index page with its configuration as ``<meta>`` tags
(``fleet-jaeger-url``, ``fleet-poll-interval-ms``). The page then polls ``api/v1/status`` (relative to
where it is served) and draws everything in the browser; it receives nothing but the status document.

Does not: serve HTTP (``fleet.controller.server`` mounts ``GET /`` -> `render_index` and ``GET /ui/{name}`` ->
`asset` with `content_type`, and should add `HEADERS`), know the status document's contents, or build
anything: no bundler, no CDN, the files are shipped as written.
"""

from __future__ import annotations

import functools
import hashlib
import html
import urllib.parse
from collections.abc import Mapping
from importlib import resources

from fleet.core import errors

# The files a browser may ask for under ``/ui/`` and their media types; any other name is unknown
# (KeyError). Every file is UTF-8 (`CHARSET`).
ASSETS: Mapping[str, str] = {
    "app.js": "text/javascript",
    "style.css": "text/css",
}
CHARSET = "utf-8"

# Response headers for the page and its assets: the page loads only its own script and style and talks
# only to its own origin, so injected markup could neither run script nor send data elsewhere.
HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_CONFIG_MARK = "<!--fleet:config-->"


@functools.cache
def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def asset(name: str) -> bytes:
    """The bytes of one shipped asset (``app.js`` or ``style.css``); KeyError for any other name."""
    if name not in ASSETS:
        raise KeyError(name)
    return _read(name)


def content_type(name: str) -> str:
    """The media type of an asset, without parameters (aiohttp: ``web.Response(body=asset(name),
    content_type=content_type(name), charset=CHARSET)``); KeyError for an unknown name."""
    return ASSETS[name]


def _version(name: str) -> str:
    """A short content hash, so a browser never keeps an old script after an upgrade."""
    return hashlib.sha256(_read(name)).hexdigest()[:12]


def check_jaeger_url(url: str) -> str:
    """The Jaeger UI base URL without a trailing slash; InputError unless it is an absolute http(s) URL.

    Messages never repeat the URL: it might carry a credential.
    """
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise errors.InputError("--jaeger-url: expected an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise errors.InputError("--jaeger-url: must not carry credentials (user:password@)")
    if parts.query or parts.fragment:
        raise errors.InputError("--jaeger-url: must not have a query or fragment")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def render_index(*, jaeger_url: str | None, poll_interval: float = 2.0) -> bytes:
    """The status page HTML.

    `jaeger_url` (the Jaeger UI base, e.g. ``http://jaeger:16686``) makes every cell link to
    ``<jaeger_url>/trace/<traceId>``; None shows trace ids as text. `poll_interval` is the seconds
    between two reads of ``api/v1/status``.
    """
    if not 0.05 <= poll_interval <= 3600:
        raise errors.InputError(f"poll interval {poll_interval}: expected between 0.05 and 3600 seconds")
    meta = [f'<meta name="fleet-poll-interval-ms" content="{round(poll_interval * 1000)}">']
    if jaeger_url:
        base = html.escape(check_jaeger_url(jaeger_url), quote=True)
        meta.append(f'<meta name="fleet-jaeger-url" content="{base}">')
    page = _read("index.html").decode("utf-8")
    page = page.replace(_CONFIG_MARK, "\n  ".join(meta), 1)
    for name in ASSETS:
        page = page.replace(f'"ui/{name}"', f'"ui/{name}?v={_version(name)}"', 1)
    return page.encode("utf-8")
