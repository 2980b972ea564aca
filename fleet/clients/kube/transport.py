"""One cluster's connection and `request`: the only place a request is sent.

Owns: opening a cluster once (kr8s loads the context's credentials, `session.Session` is built from them),
a per-cluster request rate (token bucket, QPS/burst like Flux's 50/300) and in-flight limit, a total
deadline per attempt (connect to last byte) and per request, capped jittered retries for what a retry can
help (429 honouring a Retry-After that fits the retry budget, 5xx except permanent ones, connection
errors, timeouts, unreadable answers), bounded answers, and the circuit breaker of an unreachable cluster.
Given `Transport.may_write` (a replica's ownership of the cluster), every write attempt (POST, PUT, PATCH,
DELETE; a dry run is none) asks it right before it is sent, retries included: False raises `NotOwner`,
nothing sent (docs/scaling.md, "Fenced writes").
A transport made with `shares=` another of the same cluster and context sends on that one's session (its
connection pool; its limits, retries and deadlines stay its own): a second writer to a cluster (the Event
writer beside the rounds) reuses a connection the first left idle instead of a TCP and TLS handshake of its
own (docs/reconcile.md, "Talking to clusters").
Requests go out on the cluster's `session.Session` (aiohttp), not through kr8s's `call_api`: kr8s's helpers
rediscover per call, lowercase kinds and retry 401/403 by rebuilding clients, and its httpx client cost
as much CPU per request as the rest of a sync (docs/benchmarks.md).
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import kr8s.asyncio
import orjson

from fleet.clients.kube import answers, config, discovery, session
from fleet.core import backoff, errors

log = logging.getLogger("fleet.kube")

# What a failed connection can raise: aiohttp's errors, and OSErrors (TimeoutError is one).
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError)
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class NotOwner(errors.Conflict):
    """This replica may not write to the cluster now: it no longer holds the cluster's shard lease, or has
    not renewed it within the renew deadline (docs/scaling.md). Nothing was sent."""

    retriable = True


# ----------------------------------------------------------------------------------------------------------
# Rate limiting


class _TokenBucket:
    """QPS/burst like client-go's: a request takes a token; when none is left it waits for the refill."""

    def __init__(self, *, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = float(max(1, burst))
        self.tokens = self.burst
        self.last = time.monotonic()

    async def take(self) -> None:
        if self.qps <= 0:
            return
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.qps)
        self.last = now
        self.tokens -= 1
        if self.tokens < 0:
            await anyio.sleep(-self.tokens / self.qps)


def _seconds(value: Any) -> float | None:
    """A Retry-After value in seconds: a number (``inf`` and huge ones stay huge, negative ones are 0) or
    an HTTP date; None for what cannot be read (``nan``, words), which is then no advice at all."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and value.strip():
        try:
            number = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:
                return None
            return max(0.0, when.timestamp() - time.time())
    else:
        return None
    if math.isnan(number):
        return None
    return max(0.0, number)


def _retry_after(headers: Mapping[str, str], body: Any) -> float | None:
    found = _seconds(headers.get("Retry-After"))
    if found is not None:
        return found
    if isinstance(body, dict):
        details = body.get("details") or {}
        if isinstance(details, dict):
            return _seconds(details.get("retryAfterSeconds"))
    return None


def retry_delay(attempt: int, *, base: float, cap: float) -> float:
    """The wait after failed attempt `attempt` (1, 2, ...): exponential from `base`, capped at `cap`,
    jittered to between half and all of it (so retries of many clients do not arrive together)."""
    return backoff.delay(attempt, base=base, cap=cap)


@dataclass
class Stats:
    """Requests this client sent, for status and benchmarks."""

    requests: int = 0
    retries: int = 0
    by_method: dict[str, int] = field(default_factory=dict)


class Transport:
    """One cluster's connection: its `session.Session`, made once from that cluster's own kubeconfig (kr8s
    loads the credentials), its limits (rate, in-flight, circuit breaker after an unreachable answer) and
    `request` with retries."""

    def __init__(
        self,
        *,
        cluster: str,
        context: config.Context,
        settings: config.Settings,
        tls: config.TlsDefaults | None = None,
        shares: Transport | None = None,
    ) -> None:
        self.cluster = cluster
        # Another transport of this cluster and context whose session (connection pool) this one sends on;
        # it opens and closes that session, this one never does.
        self.shares = shares
        self._tls = tls or config.TlsDefaults()
        self.context = context
        self.settings = settings
        self.stats = Stats()
        self._http: session.Session | None = None
        self._bucket = _TokenBucket(qps=settings.qps, burst=settings.burst)
        # fast_acquire: a free slot is taken without a pass through the event loop (one less per request)
        self._in_flight = anyio.Semaphore(max(1, settings.max_in_flight), fast_acquire=True)
        self._pause_until = 0.0
        self._dead: errors.Unreachable | None = None
        self._dead_until = 0.0
        self._types: discovery.TypeTable | None = None
        self._open_lock = anyio.Lock()
        # Asked right before each write attempt is sent (None: always allowed). A replica's ownership of the
        # cluster, on the clock: after a stall, a task woken at its write sends it before any cancel scope
        # whose deadline passed meanwhile has cancelled it (the in-flight slot is taken without a pass
        # through the event loop), so a check made before an earlier await is no check.
        self.may_write: Callable[[], bool] | None = None

    def __repr__(self) -> str:
        parts = urllib.parse.urlsplit(self.context.server)
        server = parts._replace(
            netloc=parts.hostname or "" if parts.port is None else f"{parts.hostname}:{parts.port}"
        )
        return f"Client(cluster={self.cluster!r}, server={server.geturl()!r})"  # no userinfo, ever

    @property
    def warnings(self) -> tuple[str, ...]:
        """Risky settings of the kubeconfig context, then the group versions its last discovery found
        unavailable."""
        broken = self._types.unavailable if self._types is not None else {}
        return self.context.warnings + tuple(
            discovery.unavailable_warning(gv, why) for gv, why in sorted(broken.items())
        )

    async def _open(self) -> session.Session:
        if self.shares is not None:
            return await self.shares._open()
        if self._http is not None:
            return self._http
        async with self._open_lock:
            if self._http is not None:
                return self._http
            if self.context.error:
                raise errors.ClusterError(f"cluster {self.cluster}: {self.context.error}")
            api = kr8s.asyncio.Api(kubeconfig=dict(self.context.config), bypass_factory=True)
            try:
                await api.auth.reauthenticate()
            except Exception as e:  # kr8s raises ValueError/KeyError/OSError for unusable credentials
                raise errors.ClusterError(
                    f"cluster {self.cluster}: cannot load credentials of context {self.context.name!r}: "
                    f"{type(e).__name__}"
                ) from None
            self._http = await session.Session.open(api, settings=self.settings, tls_defaults=self._tls)
            return self._http

    def revive(self) -> None:
        """Forget that the cluster was found unreachable (a new round may try it again at once)."""
        self._dead = None

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    # -- raw requests ------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: tuple[int, ...] = (),
        accept_any: tuple[int, ...] = (),
        secrets: Iterable[str] = (),
        media: str = "application/json",
        check: answers.Check | None = None,
    ) -> tuple[int, Any]:
        """Send one request with limits and retries; return (status, JSON body).

        A 2xx is returned; so is a status in `accept` when its body is a Kubernetes ``Status`` (a 404
        page from a proxy is not "not found"), and a status in `accept_any` whatever its body. Anything
        else raises an `ApiError` subclass, or `errors.Unreachable` when the cluster could not be reached
        within the retry budget. A 2xx whose body is not JSON, or fails `check` (see `is_object`,
        `is_list`), or an accepted status without a Status body, is retried like a transport fault and
        then raises `BadAnswer`: an unreadable answer is never returned as empty or as not found.
        """
        status, doc, _ = await self._request(
            method,
            path,
            what=what,
            params=params,
            body=body,
            content_type=content_type,
            accept=accept,
            accept_any=accept_any,
            secrets=secrets,
            media=media,
            check=check,
        )
        return status, doc

    async def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: tuple[int, ...] = (),
        accept_any: tuple[int, ...] = (),
        secrets: Iterable[str] = (),
        media: str = "application/json",
        check: answers.Check | None = None,
    ) -> tuple[int, Any, int]:
        """`request`, also returning the size of the answer in bytes."""
        if self._dead is not None:
            if time.monotonic() < self._dead_until:
                raise errors.Unreachable(f"{what}: {self._dead}")
            self._dead = None
        http = await self._open()
        content = None if body is None else encode(body)
        headers = {"Content-Type": content_type, "Accept": media}
        s = self.settings
        deadline = time.monotonic() + s.retry_budget
        attempt = 0
        while True:
            attempt += 1
            wait = min(self._pause_until, deadline) - time.monotonic()  # a pause never outlasts the budget
            if wait > 0:
                await anyio.sleep(wait)
            await self._bucket.take()
            # The first attempt has the whole request timeout; later ones what the budget has left (at
            # least a second, or the request timeout when it is shorter).
            limit = s.request_timeout
            if attempt > 1:
                limit = min(s.request_timeout, max(deadline - time.monotonic(), 1.0))
            problem: str
            mapped: answers.ApiError | None = None
            retry_after: float | None = None
            status: int = 0
            raw: bytes | bytearray = b""
            answer_headers: Mapping[str, str] = {}
            async with self._in_flight:
                if (
                    self.may_write is not None
                    and method in WRITES
                    and not (params and params.get("dryRun"))
                    and not self.may_write()
                ):
                    raise NotOwner(
                        f"{what}: not sent: this replica may not write to cluster {self.cluster} now (its "
                        "shard's lease lost, or not renewed within the renew deadline)"
                    )
                self.stats.requests += 1
                self.stats.by_method[method] = self.stats.by_method.get(method, 0) + 1
                try:
                    status, raw, answer_headers = await http.send(
                        method,
                        path,
                        params=params,
                        headers=headers,
                        content=content,
                        cap=s.max_answer_bytes,
                        within=limit,
                    )
                except session.TooLarge as e:
                    raise answers.BadAnswer(
                        f"{what}: the answer is larger than {s.max_answer_bytes} bytes "
                        f"({e.size} bytes or more); refused"
                    ) from None
                except aiohttp.ClientError as e:  # its own timeouts (connecting) included
                    problem = transport_problem(e)
                except TimeoutError:
                    problem = (
                        f"no complete answer within {limit:g}s"
                        if limit >= s.request_timeout
                        else f"no complete answer within the retry budget ({s.retry_budget:g}s)"
                    )
                except OSError as e:
                    problem = transport_problem(e)
            if status:
                readable, parsed = answers.parse(raw)
                if 200 <= status < 300 or status in accept or status in accept_any:
                    shape = None
                    if status in accept_any:
                        pass
                    elif not readable:
                        shape = "is not JSON"
                    elif status in accept:
                        shape = answers.is_status(parsed)
                    elif check is not None:
                        shape = check(parsed)
                    if shape is None:
                        return status, parsed, len(raw)
                    problem = f"the answer ({answers.describe(answer_headers, status, len(raw))}) {shape}"
                else:
                    mapped = answers.map_status(status, parsed, what=what, secrets=secrets)
                    if not mapped.retriable:
                        raise mapped
                    retry_after = _retry_after(answer_headers, parsed)
                    problem = str(mapped)
            delay = retry_delay(attempt, base=s.backoff_base, cap=s.backoff_cap)
            if retry_after is not None:
                assert mapped is not None
                # The other requests to this cluster wait too, but never longer than a retry budget.
                self._pause_until = max(
                    self._pause_until, time.monotonic() + min(retry_after, s.retry_budget)
                )
                if time.monotonic() + retry_after > deadline:
                    raise answers.ServerError(
                        f"{mapped}; Retry-After {retry_after:g}s is beyond the retry budget ({s.retry_budget:g}s)",
                        status=mapped.status,
                        reason=mapped.reason,
                    )
                delay = max(delay, retry_after)
            if attempt >= s.max_attempts or time.monotonic() + delay > deadline:
                if mapped is not None:
                    raise mapped
                if status:
                    raise answers.BadAnswer(f"{what}: {problem}")
                dead = errors.Unreachable(
                    f"cluster {self.cluster} unreachable after {attempt} attempts: {problem}"
                )
                self._dead = dead
                self._dead_until = time.monotonic() + s.retry_budget
                raise errors.Unreachable(f"{what}: {dead}")
            self.stats.retries += 1
            log.debug("cluster %s: %s %s: %s; retry in %.2fs", self.cluster, method, path, problem, delay)
            await anyio.sleep(delay)


def encode(body: Any) -> bytes:
    """A request body as compact JSON: orjson, or the standard library for what orjson refuses (integers
    beyond 64 bits, keys that are not strings)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, separators=(",", ":")).encode()


def transport_problem(e: BaseException) -> str:
    """What failed, in words: never the exception's message (it can quote the URL)."""
    if isinstance(e, aiohttp.ServerTimeoutError | TimeoutError):
        return "timed out"
    if isinstance(e, aiohttp.ClientConnectorError | ConnectionError):
        return "connection refused or failed"
    return re.sub(r"[^A-Za-z ]", "", type(e).__name__) or "connection error"
