"""One cluster's HTTP connection: an aiohttp session built from its context, and one request sent on it.

Owns: `Session`, made from the context as kr8s loaded it (`kr8s.asyncio.Api.auth`: server URL, bearer
token, TLS, proxy URL, TLS server name): TLS with the context's own CA, client certificate or
insecure-skip-tls-verify as kr8s builds its SSL context, else the certifi bundle loaded once per run
(`config.TlsDefaults`), none for a plain-HTTP server; a connection pool sized for the requests in flight
plus the watch streams, whose idle connections are kept `Settings.keepalive` seconds (50 s, not aiohttp's
15 s: commits come further apart than that, docs/reliability.md); no cookie jar (as kubectl: nothing a
server sets is sent back); redirects followed (an Authorization header never crosses to another origin);
no proxy from the environment (only the context's `proxy-url`). `Session.send`: one attempt of a request, its answer read whole up to a byte
cap, bounded as a whole by aiohttp's own total timeout; `Session.stream`: a streaming GET (a watch) with
its own silence limit.

Why aiohttp itself: kr8s's `call_api` goes through an httpx client, which builds and parses each
request's URL several times, copies cookies and headers, and wraps the transport's answer in its own;
measured here that cost as much client CPU per request as the rest of a sync (docs/benchmarks.md,
"fleet sync over several processes"). kr8s still loads every context's credentials.
Does not: retry, limit or judge answers (`transport`, `answers`), or choose the path (`requests`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import aiohttp
import kr8s.asyncio

from fleet.clients import tls
from fleet.clients.kube import config

CHUNK = 64 * 1024  # bytes read at a time from an answer without a declared length


class TooLarge(Exception):
    """An answer over the byte cap (`size`: what it declared, or what was read before it was stopped)."""

    def __init__(self, size: int) -> None:
        self.size = size


class Session:
    """One cluster's aiohttp session and how to address it (see the module's docstring)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        server: str,
        headers: Mapping[str, str],
        server_hostname: str | None,
        connect_timeout: float,
    ) -> None:
        self._http = http
        self._server = server.rstrip("/")  # a server URL's path is a prefix (`/clusters/<name>` in the sim)
        self._headers = dict(headers)
        self._server_hostname = server_hostname
        self._connect_timeout = connect_timeout
        self._timeout = aiohttp.ClientTimeout(total=None)  # the last deadline `send` was given (`_bound`)

    @classmethod
    async def open(
        cls, api: kr8s.asyncio.Api, *, settings: config.Settings, tls_defaults: config.TlsDefaults
    ) -> Session:
        """The session of the context kr8s loaded into `api` (credentials read already)."""
        auth = api.auth
        verify = await tls_defaults.verify(api)
        if verify is not False:
            tls.lean_read_buffers()  # a watch stream over TLS would otherwise hold a 256 KiB buffer
        headers = {"User-Agent": settings.user_agent or api.__version__}
        if auth.token:
            headers["Authorization"] = f"Bearer {auth.token}"
        # Requests in flight are bounded by the client's own limiter; the pool must also have room for
        # the long-lived watch streams, or open streams would starve every later request of a connection.
        pool = max(1, settings.max_in_flight) + max(0, settings.max_streams)
        connector = aiohttp.TCPConnector(
            ssl=verify, limit=pool, limit_per_host=0, keepalive_timeout=settings.keepalive
        )
        http = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            proxy=auth.proxy or None,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout),
        )
        return cls(
            http,
            server=str(auth.server),
            headers=headers,
            server_hostname=auth.tls_server_name or None,
            connect_timeout=settings.connect_timeout,
        )

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        content: bytes | None,
        cap: int,
        within: float,
    ) -> tuple[int, bytes | bytearray, Mapping[str, str]]:
        """One attempt: (status, body, headers), ended by `TimeoutError` when it is not over within
        `within` seconds, from waiting for a connection to the body's last byte. The body is read up to
        `cap` bytes (`TooLarge` beyond)."""
        async with self._http.request(
            method,
            self._server + path,
            params=params or None,
            headers={**self._headers, **headers},
            data=content,
            server_hostname=self._server_hostname,
            timeout=self._bound(within),
        ) as response:
            declared = response.content_length
            if declared is not None and declared > cap:
                raise TooLarge(declared)
            if declared is not None and not response.headers.get("Content-Encoding"):
                # The framing holds the body to its declared length: read it in one go.
                return response.status, await response.read(), response.headers
            raw = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK):
                raw += chunk
                if len(raw) > cap:
                    raise TooLarge(len(raw))
            return response.status, raw, response.headers

    def _bound(self, seconds: float) -> aiohttp.ClientTimeout:
        """aiohttp's own deadline for a whole request: its `total` covers the wait for a connection,
        sending, the headers and every read of the body (its timer cancels the request where it waits and
        raises `TimeoutError`). The same bound as an anyio cancel scope around `send`, for about 40,000
        fewer instructions per request (docs/benchmarks.md, "Start-up and worker processes"). Exact: not
        rounded up to the next second as aiohttp does from 5 s on (`ceil_threshold`); never 0, which
        aiohttp reads as none."""
        seconds = max(seconds, 0.001)
        if self._timeout.total != seconds:
            self._timeout = aiohttp.ClientTimeout(
                total=seconds, sock_connect=self._connect_timeout, ceil_threshold=math.inf
            )
        return self._timeout

    async def stream(
        self, path: str, *, params: Mapping[str, str], headers: Mapping[str, str], read_timeout: float
    ) -> aiohttp.ClientResponse:
        """A streaming GET, its headers read: the caller reads the body and must `close()` it. No more
        than `read_timeout` seconds of silence are tolerated, headers included."""
        return await self._http.request(
            "GET",
            self._server + path,
            params=params or None,
            headers={**self._headers, **headers},
            server_hostname=self._server_hostname,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._connect_timeout, sock_read=read_timeout
            ),
        )

    async def aclose(self) -> None:
        await self._http.close()
