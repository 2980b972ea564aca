"""The `fleet sim` process: N simulated clusters behind one aiohttp low-level server.

Owns: `Sim` (start/stop, one listening socket with a `/clusters/<name>` prefix per cluster or one
port per cluster, optional TLS with a CA made at start by `trustme`), the kubeconfig describing every
cluster, fault rules (`FaultRule`: injected statuses with Retry-After, latency, requests held until
their rules are cleared, hangs, refused connections, answers lost after the request was processed, dropped
watches), the per-cluster request journal,
and the admin endpoints under `/_sim/` (their shapes: docs/sim.md, "Admin endpoints").

Does not: implement Kubernetes semantics (`fleet.sim.rest`, `fleet.sim.storage.store`).
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import resource
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from fleet.clients import tls
from fleet.core import errors
from fleet.sim import controllers, status
from fleet.sim.rest import discovery, requests, routing
from fleet.sim.storage import store

JOURNAL_CAP = 10_000  # entries kept per cluster; `seq` keeps counting, so a capped journal shows a gap
JOURNAL_KEYS = ("seq", "method", "path", "query", "status", "mutated", "time", "userAgent")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class RuleError(errors.InputError, ValueError):
    """A fault rule that does not validate; the message names the field."""


@dataclass
class FaultRule:
    """One fault rule (docs/sim.md). `matched` counts matching requests, `fired` the ones it acted on."""

    status: int | None = None
    retry_after: int | None = None
    latency_ms: float = 0.0
    hold: bool = False
    hang: bool = False
    refuse: bool = False
    lose_answer: bool = False
    drop_watches: bool = False
    method: str | None = None
    watch: bool | None = None
    path: re.Pattern[str] | None = None
    user_agent: re.Pattern[str] | None = None
    after: int = 0
    count: int | None = None
    rate: float = 1.0
    matched: int = 0
    fired: int = 0
    held: int = 0  # requests waiting on this rule now

    @classmethod
    def parse(cls, doc: Any) -> FaultRule:
        if not isinstance(doc, dict):
            raise RuleError("a fault rule must be a JSON object")
        known = {
            "status",
            "retryAfter",
            "latencyMs",
            "hold",
            "hang",
            "refuse",
            "loseAnswer",
            "dropWatches",
            "method",
            "watch",
            "path",
            "userAgent",
            "after",
            "count",
            "rate",
        }
        unknown = sorted(set(doc) - known)
        if unknown:
            raise RuleError(f"unknown fault rule field(s): {', '.join(unknown)}")
        rule = cls()
        code = doc.get("status")
        if code is not None:
            if not isinstance(code, int) or isinstance(code, bool) or not 400 <= code <= 599:
                raise RuleError("status: must be an HTTP status code from 400 to 599")
            rule.status = code
        for key, attr in (("retryAfter", "retry_after"), ("after", "after"), ("count", "count")):
            value = doc.get(key)
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise RuleError(f"{key}: must be a non-negative integer")
                setattr(rule, attr, value)
        latency = doc.get("latencyMs")
        if latency is not None:
            if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
                raise RuleError("latencyMs: must be a non-negative number")
            rule.latency_ms = float(latency)
        for key, attr in (
            ("hold", "hold"),
            ("hang", "hang"),
            ("refuse", "refuse"),
            ("loseAnswer", "lose_answer"),
            ("dropWatches", "drop_watches"),
        ):
            value = doc.get(key)
            if value is not None:
                if not isinstance(value, bool):
                    raise RuleError(f"{key}: must be true or false")
                setattr(rule, attr, value)
        watch = doc.get("watch")
        if watch is not None:
            if not isinstance(watch, bool):
                raise RuleError("watch: must be true or false")
            rule.watch = watch
        method = doc.get("method")
        if method is not None:
            if method not in METHODS:
                raise RuleError(f"method: must be one of {', '.join(METHODS)}")
            rule.method = method
        for key, attr in (("path", "path"), ("userAgent", "user_agent")):
            pattern = doc.get(key)
            if pattern is not None:
                if not isinstance(pattern, str):
                    raise RuleError(f"{key}: must be a regular expression string")
                try:
                    setattr(rule, attr, re.compile(pattern))
                except re.error as e:
                    raise RuleError(f"{key}: invalid regular expression: {e}") from None
        rate = doc.get("rate")
        if rate is not None:
            if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1:
                raise RuleError("rate: must be a number from 0 to 1")
            rule.rate = float(rate)
        if not (
            rule.status
            or rule.latency_ms
            or rule.hold
            or rule.hang
            or rule.refuse
            or rule.lose_answer
            or rule.drop_watches
        ):
            raise RuleError(
                "a fault rule needs one of status, latencyMs, hold, hang, refuse, loseAnswer, dropWatches"
            )
        if rule.hold and (rule.status or rule.hang or rule.refuse or rule.lose_answer or rule.drop_watches):
            raise RuleError("hold: cannot be combined with status, hang, refuse, loseAnswer or dropWatches")
        if rule.lose_answer and (rule.status or rule.hang or rule.refuse or rule.drop_watches):
            raise RuleError("loseAnswer: cannot be combined with status, hang, refuse or dropWatches")
        return rule

    def selects(self, method: str, path: str, watch: bool, agent: str = "") -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.user_agent is not None and self.user_agent.search(agent) is None:
            return False
        if self.watch is not None and self.watch != watch:
            return False
        if (
            self.drop_watches
            and self.watch is None
            and not watch
            and not (
                self.status or self.latency_ms or self.hold or self.hang or self.refuse or self.lose_answer
            )
        ):
            return False
        return self.path is None or self.path.search(path) is not None

    def take(self, method: str, path: str, watch: bool, agent: str = "") -> bool:
        """Whether this request is acted on (counts matches, honours after/count/rate)."""
        if not self.selects(method, path, watch, agent):
            return False
        self.matched += 1
        if self.matched <= self.after:
            return False
        if self.count is not None and self.fired >= self.count:
            return False
        if self.rate < 1.0 and random.random() >= self.rate:
            return False
        self.fired += 1
        return True


@dataclass
class Host:
    """One served cluster: its state, its API handler, its faults and journal."""

    cluster: store.Cluster
    api: routing.Api
    faults: list[FaultRule] = field(default_factory=list)
    journal: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=JOURNAL_CAP))
    seq: int = 0
    port: int = 0
    url: str = ""
    holds: set[asyncio.Future[None]] = field(default_factory=set)  # held requests, released by a clear

    def record(self, method: str, path: str, query: str, code: int, mutated: bool, agent: str) -> list[Any]:
        """Append a journal entry; kept as a small list (seq, method, path, query, status, mutated, time: the
        wall-clock second the answer was decided, so tests can tell what overlapped; the client's
        User-Agent, so tests can tell which of several clients sent it)."""
        self.seq += 1
        entry: list[Any] = [self.seq, method, path, query, code, mutated, time.time(), agent]
        self.journal.append(entry)
        return entry


def _is_watch(request: web.BaseRequest, rest: str) -> bool:
    if request.method != "GET":
        return False
    value = request.query.get("watch")
    if value is not None and value.lower() in ("true", "1"):
        return True
    return "/watch/" in rest


class Sim:
    """N clusters served by one asyncio process. Create, `await start()`, use, `await stop()`."""

    def __init__(
        self,
        names: list[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        port_per_cluster: bool = False,
        tls: bool = False,
        settings: store.Settings | None = None,
        git_version: str = discovery.KUBE_VERSION,
    ) -> None:
        if not names:
            raise ValueError("fleet sim needs at least one cluster")
        if len(set(names)) != len(names):
            raise ValueError("cluster names must be unique")
        for name in names:
            if not re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9_.]*", name):
                raise ValueError(f"cluster name {name!r}: use letters, digits, '-', '_' and '.'")
        self.names = list(names)
        self.host = host
        self.port = port
        self.port_per_cluster = port_per_cluster
        self.tls = tls
        self.settings = settings or store.Settings()
        self.git_version = git_version
        self.hosts: dict[str, Host] = {}
        self._by_port: dict[int, Host] = {}
        self._runner: web.ServerRunner | None = None
        self._ca_pem: bytes | None = None
        self.admin_url = ""
        self._hangs: set[asyncio.Future[None]] = set()

    # ----- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        _raise_nofile_limit()
        ssl_ctx = self._tls_context() if self.tls else None
        for i, name in enumerate(self.names):
            cluster = store.Cluster(name, index=i, settings=self.settings)
            cluster.ca_pem = self._ca_pem  # what kube-root-ca.crt holds, as on a real cluster
            controllers.install(cluster)
            self.hosts[name] = Host(cluster=cluster, api=routing.Api(cluster, git_version=self.git_version))
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        scheme = "https" if self.tls else "http"
        shown_host = self.host if ":" not in self.host else f"[{self.host}]"
        if self.port_per_cluster:
            for i, name in enumerate(self.names):
                want = self.port + i if self.port else 0
                bound = await self._site(want, ssl_ctx)
                h = self.hosts[name]
                h.port = bound
                h.url = f"{scheme}://{shown_host}:{bound}"
                self._by_port[bound] = h
            self.admin_url = f"{scheme}://{shown_host}:{self.hosts[self.names[0]].port}"
        else:
            bound = await self._site(self.port, ssl_ctx)
            self.admin_url = f"{scheme}://{shown_host}:{bound}"
            for name in self.names:
                h = self.hosts[name]
                h.port = bound
                h.url = f"{self.admin_url}/clusters/{name}"
        await self._check_answering()

    async def _check_answering(self) -> None:
        """GET /version of every cluster over the network (ready only once every cluster answers)."""
        ssl_ctx: ssl.SSLContext | bool = False
        if self._ca_pem is not None:
            ssl_ctx = ssl.create_default_context(cadata=self._ca_pem.decode())
        connector = aiohttp.TCPConnector(limit=32, ssl=ssl_ctx)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def check(h: Host) -> None:
                async with session.get(
                    h.url + "/version", headers={"User-Agent": "fleet-sim-self-check"}
                ) as r:
                    if r.status != 200:
                        raise RuntimeError(f"cluster {h.cluster.name}: /version answered {r.status}")
                    await r.read()
                # Self-checks are not client requests: keep the journal to what clients sent.
                h.journal.clear()
                h.seq = 0

            await asyncio.gather(*(check(h) for h in self.hosts.values()))

    async def _site(self, port: int, ssl_ctx: ssl.SSLContext | None) -> int:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, port, ssl_context=ssl_ctx, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1])

    def _tls_context(self) -> ssl.SSLContext:
        tls.lean_read_buffers()  # 1,000 watches over TLS would otherwise hold 256 KiB each
        import trustme  # only with --tls: it loads `cryptography`, which a plain sim never needs

        ca = trustme.CA(organization_name="fleet sim")
        cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        self._ca_pem = ca.cert_pem.bytes()
        return ctx

    @property
    def ca_pem(self) -> bytes | None:
        return self._ca_pem

    async def stop(self) -> None:
        for h in self.hosts.values():
            for w in list(h.cluster.watchers()):
                h.cluster.unwatch(w)
        for fut in list(self._hangs):
            fut.cancel()
        for h in self.hosts.values():
            for fut in list(h.holds):
                fut.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ----- kubeconfig -----------------------------------------------------------------------------

    def url(self, name: str) -> str:
        return self.hosts[name].url

    def kubeconfig(self) -> dict[str, Any]:
        """One kubeconfig: a context, cluster and user per simulated cluster; context name = cluster name."""
        clusters = []
        for name in self.names:
            entry: dict[str, Any] = {"server": self.hosts[name].url}
            if self._ca_pem is not None:
                entry["certificate-authority-data"] = base64.b64encode(self._ca_pem).decode()
            clusters.append({"name": name, "cluster": entry})
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": clusters,
            "users": [{"name": name, "user": {"token": f"fleet-sim-{name}"}} for name in self.names],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}} for name in self.names],
            "current-context": self.names[0],
        }

    # ----- in-process admin -----------------------------------------------------------------------

    def host_of(self, name: str) -> Host:
        h = self.hosts.get(name)
        if h is None:
            raise KeyError(f"no simulated cluster named {name!r}")
        return h

    def add_fault(self, name: str, rule: dict[str, Any]) -> FaultRule:
        h = self.host_of(name)
        parsed = FaultRule.parse(rule)
        h.faults.append(parsed)
        if parsed.drop_watches and parsed.user_agent is None:  # open streams' clients are not known
            for w in list(h.cluster.watchers()):
                rest = w.path
                if parsed.path is None or parsed.path.search(rest):
                    w.close()
        return parsed

    def clear_faults(self, name: str) -> None:
        """Remove every rule of the cluster; the requests they hold go on, served as if no rule matched."""
        h = self.host_of(name)
        h.faults.clear()
        for fut in list(h.holds):
            if not fut.done():
                fut.set_result(None)

    def rules(self, name: str) -> list[dict[str, int]]:
        """Each rule's counters: requests `matched`, acted on (`fired`), `held` now."""
        return [{"matched": r.matched, "fired": r.fired, "held": r.held} for r in self.host_of(name).faults]

    def compact(self, name: str) -> int:
        return self.host_of(name).cluster.compact()

    def journal(self, name: str, *, since: int = 0) -> list[dict[str, Any]]:
        return [dict(zip(JOURNAL_KEYS, e, strict=True)) for e in self.host_of(name).journal if e[0] > since]

    # ----- HTTP -----------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_sim/") or path == "/_sim":
            return await self._admin(request, path)
        host: Host | None = None
        rest = path
        if path.startswith("/clusters/"):
            name, _, tail = path[len("/clusters/") :].partition("/")
            host = self.hosts.get(name)
            rest = "/" + tail
        if host is None and self._by_port:
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            if sockname:
                host = self._by_port.get(int(sockname[1]))
                rest = path
        if host is None:
            return requests.error_response(status.resource_not_found())
        return await self._serve(host, request, rest)

    async def _serve(self, h: Host, request: web.BaseRequest, rest: str) -> web.StreamResponse:
        method = request.method
        query = request.query_string
        agent = request.headers.get("User-Agent", "")
        watch = _is_watch(request, rest)
        ctx = requests.RequestContext(path=rest)
        lose = False
        for rule in list(h.faults):
            if not rule.take(method, rest, watch, agent):
                continue
            if rule.latency_ms:
                await asyncio.sleep(rule.latency_ms / 1000.0)
            if rule.hold:  # before anything of it is read or processed, until the rules are cleared
                await self._hold(h, rule)
                break
            if rule.refuse:
                h.record(method, rest, query, 0, False, agent)
                transport = request.transport
                if transport is not None:
                    transport.abort()
                raise asyncio.CancelledError
            if rule.hang:
                h.record(method, rest, query, 0, False, agent)
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._hangs.add(fut)
                try:
                    await fut
                finally:
                    self._hangs.discard(fut)
            if rule.status:
                err = status.injected(rule.status, retry_after=rule.retry_after)
                h.record(method, rest, query, err.code, False, agent)
                return requests.error_response(err)
            if rule.lose_answer and not watch:
                lose = True
            if rule.drop_watches and watch:
                ctx.drop_watch = True
        if watch:
            entry = h.record(method, rest, query, 200, False, agent)
            resp = await h.api.handle(request, rest, ctx)
            entry[4] = resp.status
            return resp
        resp = await h.api.handle(request, rest, ctx)
        h.record(method, rest, query, resp.status, ctx.mutated, agent)
        if lose:  # processed (a write has landed), then the connection closes with no answer sent
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError
        return resp

    async def _hold(self, h: Host, rule: FaultRule) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        h.holds.add(fut)
        rule.held += 1
        try:
            await fut
        finally:
            rule.held -= 1
            h.holds.discard(fut)

    async def _admin(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        parts = [p for p in path.split("/") if p][1:]
        method = request.method
        try:
            if parts == ["clusters"] and method == "GET":
                return _admin_json({"clusters": self.names})
            if len(parts) >= 3 and parts[0] == "clusters":
                name = parts[1]
                if name not in self.hosts:
                    return _admin_json({"error": f"no simulated cluster named {name!r}"}, code=404)
                action = parts[2:]
                if action == ["faults"] and method == "POST":
                    try:
                        rule = orjson.loads(await request.read())
                    except orjson.JSONDecodeError as e:
                        return _admin_json({"error": f"fault rule is not JSON: {e}"}, code=400)
                    self.add_fault(name, rule)
                    return _admin_json({"rules": len(self.hosts[name].faults)}, code=201)
                if action == ["faults"] and method == "DELETE":
                    self.clear_faults(name)
                    return _admin_json({"rules": 0})
                if action == ["faults"] and method == "GET":
                    return _admin_json({"rules": self.rules(name)})
                if action == ["compact"] and method == "POST":
                    return _admin_json({"resourceVersion": str(self.compact(name))})
                if action == ["journal"] and method == "GET":
                    since_raw = request.query.get("since", "0")
                    try:
                        since = int(since_raw)
                    except ValueError:
                        return _admin_json({"error": "since: must be an integer"}, code=400)
                    return _admin_json({"requests": self.journal(name, since=since)})
            return _admin_json({"error": f"no admin endpoint {method} {path}"}, code=404)
        except RuleError as e:
            return _admin_json({"error": str(e)}, code=400)


def _admin_json(doc: dict[str, Any], *, code: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=code, content_type="application/json")


def _raise_nofile_limit() -> None:
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass


def cluster_names(count: int) -> list[str]:
    return [f"sim-{i:03d}" for i in range(1, count + 1)]
