"""A fault-injecting HTTP reverse proxy for tests: fleet's real client -> this proxy -> `fleet sim`.

The sim's own fault rules (docs/sim.md) answer with error statuses, delay, hang, refuse and drop watches;
they cannot break a *successful* answer. This proxy can: per `Rule` it answers with any status, headers
and body (an HTML login page with 200, a list without ``items``, ``Retry-After: inf``), or forwards the
request to the sim and then edits the JSON answer (an endless ``continue`` token), cuts the body short,
pads it to a huge size, or trickles it a few bytes at a time. Requests no rule acts on are passed through
unchanged, streaming (watches work through it). It can also hang or drop connections, per cluster, for
partition tests.

Usage (sync or async tests alike: the proxy runs on its own event loop in a daemon thread)::

    with testing.serving(names=["a", "b"]) as sim, faultproxy.serving(sim.kubeconfig_dict) as proxy:
        proxy.kubeconfig                      # the sim's kubeconfig, every server behind the proxy
        proxy.add(faultproxy.Rule(cluster="a", method="GET", path=r"/configmaps$",
                                  status=200, body=faultproxy.HTML_LOGIN, headers=faultproxy.HTML))
        proxy.add(faultproxy.Rule(query="limit=", edit=faultproxy.endless_continue(), drop_query=("continue",)))
        proxy.add(faultproxy.Rule(cluster="b", trickle=(1, 0.5), trickle_for=20))
        proxy.hits                            # one `Hit` per request: which rule acted, and how
        proxy.clear()

`serving(..., clusters=["a"])` puts only those clusters behind the proxy (the others keep their direct
URL). Only plain-HTTP upstreams with path-prefixed clusters (the sim's default, one shared port) are
supported: a `Rule.cluster` is the ``/clusters/<name>`` prefix of the path.

Does not: speak TLS, or model anything of Kubernetes (the sim does that).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import itertools
import json
import re
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

HTML = {"Content-Type": "text/html; charset=utf-8"}
HTML_LOGIN = (
    b"<!DOCTYPE html><html><head><title>Sign in</title></head>"
    b"<body><form action='/login' method='post'><input name='user'><input name='password' type='password'>"
    b"</form></body></html>"
)
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authenticate",
    "proxy-authorization",
    "host",
}
_CLUSTER = re.compile(r"^/clusters/([^/]+)(/.*)?$")


@dataclass
class Rule:
    """What to do with matching requests. Matching: every given field must match; `after` matching requests
    pass untouched, then at most `count` (None: all) are acted on.

    Actions, applied in this order: `delay` (seconds, then go on); `drop` (close the connection, no
    answer); `hang` (never answer); `status` (answer at once with `status`, `headers` and `body`, which
    may be bytes, str or a JSON-able value; nothing reaches the sim). Otherwise the request is forwarded
    and the answer is changed: `edit` (a function of the parsed JSON answer returning the new one),
    `truncate` (keep the first N bytes of the body), `pad` (add spaces after the JSON document until the
    body holds at least N bytes: still valid JSON, sent in 64 KiB chunks), `trickle` ((bytes, seconds):
    send that many bytes every that many seconds; after `trickle_for` seconds the rest goes at once).
    `set_headers` are added to a forwarded answer; `drop_query` names query parameters removed before
    forwarding (with `endless_continue`: the sim never sees the made-up ``continue`` tokens).
    """

    cluster: str | None = None
    method: str | None = None
    path: str | None = None  # regular expression searched in the path below the cluster prefix
    query: str | None = None  # regular expression searched in the raw query string
    watch: bool | None = None
    after: int = 0
    count: int | None = None
    delay: float = 0.0
    drop: bool = False
    hang: bool = False
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = b""
    edit: Callable[[Any], Any] | None = None
    truncate: int | None = None
    pad: int | None = None
    trickle: tuple[int, float] | None = None
    trickle_for: float = 60.0
    set_headers: Mapping[str, str] = field(default_factory=dict)
    drop_query: tuple[str, ...] = ()
    matched: int = 0
    fired: int = 0

    def selects(self, *, cluster: str | None, method: str, path: str, query: str, watch: bool) -> bool:
        if self.cluster is not None and self.cluster != cluster:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.watch is not None and self.watch != watch:
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        return self.query is None or re.search(self.query, query) is not None


@dataclass(frozen=True)
class Hit:
    """One request the proxy saw; `rule` is the index of the rule that acted on it (None: passed)."""

    cluster: str | None
    method: str
    path: str
    query: str
    rule: int | None
    cookie: str | None = None  # the Cookie header the request carried
    peer: Any = None  # the client's end of the connection it came on ((host, port): one per connection)


def endless_continue(*, fresh: bool = False) -> Callable[[Any], Any]:
    """An `edit` that gives every list answer a ``continue`` token: the same one each time, or (`fresh`) a
    new one each time (a server that pages forever). Use it with ``drop_query=("continue",)``."""
    counter = itertools.count(1)

    def edit(doc: Any) -> Any:
        if isinstance(doc, dict):
            meta = doc.setdefault("metadata", {})
            meta["continue"] = f"proxy-token-{next(counter)}" if fresh else "proxy-token-same"
        return doc

    return edit


def drop_key(key: str) -> Callable[[Any], Any]:
    """An `edit` that removes a top-level key (a list answer without ``items``)."""

    def edit(doc: Any) -> Any:
        if isinstance(doc, dict):
            doc.pop(key, None)
        return doc

    return edit


def replace_with(value: Any) -> Callable[[Any], Any]:
    """An `edit` that answers `value` instead (a JSON list, a string, ...)."""
    return lambda _doc: copy.deepcopy(value)


def _bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


class FaultProxy:
    """The running proxy (see the module docstring). Methods are safe to call from any thread."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.url = ""
        self.kubeconfig = Path()
        self.kubeconfig_dict: dict[str, Any] = {}
        self.hits: list[Hit] = []
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._session: aiohttp.ClientSession | None = None

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def hits_of(self, rule: Rule) -> list[Hit]:
        with self._lock:
            index = next((i for i, r in enumerate(self._rules) if r is rule), None)
            return [h for h in self.hits if index is not None and h.rule == index]

    def _pick(self, **request: Any) -> tuple[int | None, Rule | None]:
        with self._lock:
            for i, rule in enumerate(self._rules):
                if not rule.selects(**request):
                    continue
                rule.matched += 1
                if rule.matched <= rule.after or (rule.count is not None and rule.fired >= rule.count):
                    continue
                rule.fired += 1
                return i, rule
            return None, None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        m = _CLUSTER.match(request.path)
        cluster, below = (m.group(1), m.group(2) or "/") if m else (None, request.path)
        query = request.query_string
        watch = request.query.get("watch") in ("true", "1") or "/watch/" in below
        index, rule = self._pick(cluster=cluster, method=request.method, path=below, query=query, watch=watch)
        with self._lock:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            self.hits.append(
                Hit(cluster, request.method, below, query, index, request.headers.get("Cookie"), peer)
            )
        if rule is not None:
            if rule.delay:
                await asyncio.sleep(rule.delay)
            if rule.drop:
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=599)  # never sent: the connection is gone
            if rule.hang:
                await asyncio.Event().wait()  # cancelled when the client gives up
            if rule.status is not None:
                return web.Response(status=rule.status, headers=dict(rule.headers), body=_bytes(rule.body))
        return await self._forward(request, rule)

    async def _forward(self, request: web.Request, rule: Rule | None) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        url = request.rel_url
        if rule is not None and rule.drop_query:
            url = url.without_query_params(*rule.drop_query)
        async with self._session.request(
            request.method,
            self.upstream + url.raw_path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            if rule is not None:
                out_headers.update(rule.set_headers)
            changes = rule is not None and (
                rule.edit is not None or rule.truncate is not None or rule.pad or rule.trickle
            )
            response = web.StreamResponse(status=upstream.status, headers=out_headers)
            if not changes:
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
            assert rule is not None
            raw = await upstream.read()
        if rule.edit is not None:
            raw = json.dumps(rule.edit(json.loads(raw))).encode()
        if rule.truncate is not None:
            raw = raw[: rule.truncate]
        if not rule.pad and not rule.trickle:
            return web.Response(status=response.status, headers=out_headers, body=raw)
        await response.prepare(request)
        if rule.trickle:
            size, every = rule.trickle
            loop = asyncio.get_running_loop()
            until = loop.time() + rule.trickle_for
            while raw and loop.time() < until:
                await response.write(raw[:size])
                raw = raw[size:]
                await asyncio.sleep(every)
        await response.write(raw)
        padded = len(raw)
        chunk = b" " * 65536
        while rule.pad and padded < rule.pad:
            await response.write(chunk)
            padded += len(chunk)
        await response.write_eof()
        return response


def _upstream_of(server: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(server)
    return f"{parts.scheme}://{parts.netloc}", parts.path


@contextlib.contextmanager
def serving(kubeconfig: Mapping[str, Any], *, clusters: list[str] | None = None) -> Iterator[FaultProxy]:
    """Start a proxy in front of the servers of `kubeconfig` (e.g. `SimHandle.kubeconfig_dict`); yields it
    with `kubeconfig` (a file) and `kubeconfig_dict` routed through it (only `clusters` when given)."""
    servers = {c["name"]: c["cluster"]["server"] for c in kubeconfig["clusters"]}
    upstreams = {_upstream_of(s)[0] for s in servers.values()}
    if len(upstreams) != 1 or not next(iter(upstreams)).startswith("http://"):
        raise ValueError(
            "faultproxy: needs one plain-HTTP upstream (fleet sim without --tls/--port-per-cluster)"
        )
    proxy = FaultProxy(upstreams.pop())
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[str] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=10)
        proxy._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, handler_cancellation=True)
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
            port = sockets[0].getsockname()[1]
        except BaseException as e:
            started.set_exception(e)
            return
        started.set_result(f"http://127.0.0.1:{port}")
        await stop.wait()
        await runner.cleanup()
        await proxy._session.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="faultproxy", daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory(prefix="faultproxy-") as tmp:
        try:
            proxy.url = started.result(30)
            doc = copy.deepcopy(dict(kubeconfig))
            for entry in doc["clusters"]:
                if clusters is None or entry["name"] in clusters:
                    entry["cluster"]["server"] = proxy.url + _upstream_of(entry["cluster"]["server"])[1]
            proxy.kubeconfig_dict = doc
            proxy.kubeconfig = Path(tmp) / "kubeconfig"
            proxy.kubeconfig.write_text(yaml.safe_dump(doc, sort_keys=False))
            yield proxy
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(30)
            if not thread.is_alive():
                loop.close()
