"""Kubeconfig and settings: which cluster is where, with what credentials and limits.

Owns: reading the controller's kubeconfig and cutting it into one explicit single-context kubeconfig per
cluster (so no token can travel to another cluster, and `$KUBECONFIG` is never read behind our back),
refusing `exec`/`auth-provider` users unless allowed (no subprocess is ever spawned for a refused
context), `Settings` (timeouts, retries, rates) and `TlsDefaults` (one CA bundle loaded once, shared).
Does not: connect (`transport`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import certifi
import kr8s.asyncio
import yaml

from fleet.core import errors

_USER_AUTH_PLUGINS = ("exec", "auth-provider")


@dataclass(frozen=True)
class Settings:
    """How fleet talks to every cluster. Defaults follow Flux (QPS 50, burst 300).

    Deadlines: one attempt of a request, from connecting to its last byte, ends within `request_timeout`
    (a server that trickles a byte every few seconds is cut off there, not only one that goes silent);
    one request with all its retries and waits (Retry-After included) ends within about
    max(`request_timeout`, `retry_budget` + 1 s). Sizes: one answer holds at most `max_answer_bytes`; one list
    at most `max_list_pages` pages and `max_list_bytes` bytes over all its pages.
    """

    qps: float = 50.0
    burst: int = 300
    max_in_flight: int = 4  # requests at once per cluster
    max_streams: int = 64  # watch streams hold a connection each, on top of the requests in flight
    connect_timeout: float = 5.0
    request_timeout: float = 30.0  # one attempt, start to last byte
    retry_budget: float = 60.0  # seconds one request may spend retrying, all attempts included
    max_attempts: int = 6
    backoff_base: float = 0.2
    backoff_cap: float = 8.0
    allow_exec_auth: bool = False
    page_size: int = 500
    max_answer_bytes: int = 32 * 1024 * 1024
    max_list_pages: int = 1_000
    max_list_bytes: int = 256 * 1024 * 1024
    user_agent: str = ""  # the User-Agent of every request ("": kr8s's); a replica puts its identity there
    # Seconds an idle connection to a cluster is kept for its next request. aiohttp's default of 15 s is
    # shorter than the time between most commits, so each commit's rounds and Events opened new
    # connections to every cluster (a TCP and a TLS handshake each). Kept under the server's own idle
    # timeout, so that the client closes first and seldom sends on a connection the server is closing:
    # kube-apiserver closes idle HTTP/1.1 and HTTP/2 connections after 90 s, load balancers in front of
    # it commonly after 60 s (docs/reconcile.md, "Talking to clusters").
    keepalive: float = 50.0


# ----------------------------------------------------------------------------------------------------------
# Kubeconfig


@dataclass(frozen=True)
class Context:
    """One context of the controller's kubeconfig, cut down to itself.

    `config` is a complete kubeconfig holding only this context, its cluster and its user (with file paths
    made absolute); it carries credentials, so it is kept out of `repr`. `error` is set when the context
    cannot be used (missing, refused exec plugin); `warnings` name risky settings.
    """

    name: str
    server: str = ""
    config: Mapping[str, Any] = field(default_factory=dict, repr=False)
    warnings: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Kubeconfig:
    """The contexts of the controller's kubeconfig (one file, or a `KUBECONFIG`-style list of files)."""

    contexts: Mapping[str, Context]
    paths: tuple[str, ...] = ()

    def context(self, name: str) -> Context:
        found = self.contexts.get(name)
        if found is None:
            return Context(name=name, error=f"context {name!r} not found in the kubeconfig")
        return found


def default_kubeconfig_path() -> str:
    """`$KUBECONFIG`, then `~/.kube/config` (what kubectl reads)."""
    return os.environ.get("KUBECONFIG") or str(pathlib.Path("~/.kube/config").expanduser())


_FILE_FIELDS_CLUSTER = ("certificate-authority",)
_FILE_FIELDS_USER = ("client-certificate", "client-key", "tokenFile")


def _named(items: Any, what: str, path: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if items is None:
        return out
    if not isinstance(items, list):
        raise errors.InputError(f"{path}: {what} must be a list")
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise errors.InputError(f"{path}: every entry of {what} needs a name")
        body = item.get(what[:-1]) or {}
        if not isinstance(body, dict):
            raise errors.InputError(f"{path}: {what[:-1]} {item['name']!r} must be a mapping")
        out.setdefault(item["name"], body)
    return out


def _absolute(entry: dict[str, Any], keys: Iterable[str], base: pathlib.Path) -> dict[str, Any]:
    out = dict(entry)
    for key in keys:
        value = out.get(key)
        if isinstance(value, str) and value and not pathlib.Path(value).is_absolute():
            out[key] = str(base / value)
    return out


def parse_kubeconfig(documents: Iterable[tuple[str, bytes]], *, allow_exec_auth: bool = False) -> Kubeconfig:
    """Cut kubeconfig files (path, bytes; first definition of a name wins, as in kubectl) into contexts."""
    clusters: dict[str, dict[str, Any]] = {}
    users: dict[str, dict[str, Any]] = {}
    contexts: dict[str, dict[str, Any]] = {}
    paths = []
    for path, data in documents:
        paths.append(path)
        try:
            doc = yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise errors.InputError(f"{path}{line}: the kubeconfig is not valid YAML") from None
        if not isinstance(doc, dict):
            raise errors.InputError(f"{path}: the kubeconfig must be a mapping")
        base = pathlib.Path(path).expanduser().resolve().parent
        for name, body in _named(doc.get("clusters"), "clusters", path).items():
            clusters.setdefault(name, _absolute(body, _FILE_FIELDS_CLUSTER, base))
        for name, body in _named(doc.get("users"), "users", path).items():
            users.setdefault(name, _absolute(body, _FILE_FIELDS_USER, base))
        for name, body in _named(doc.get("contexts"), "contexts", path).items():
            contexts.setdefault(name, body)
    out: dict[str, Context] = {}
    for name, ctx in contexts.items():
        out[name] = _context(name, ctx, clusters, users, allow_exec_auth=allow_exec_auth)
    return Kubeconfig(contexts=out, paths=tuple(paths))


def _context(
    name: str,
    ctx: Mapping[str, Any],
    clusters: Mapping[str, dict[str, Any]],
    users: Mapping[str, dict[str, Any]],
    *,
    allow_exec_auth: bool,
) -> Context:
    cluster_name = ctx.get("cluster")
    user_name = ctx.get("user")
    cluster = clusters.get(str(cluster_name)) if cluster_name else None
    if cluster is None:
        return Context(name=name, error=f"context {name!r}: cluster {cluster_name!r} not in the kubeconfig")
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        return Context(name=name, error=f"context {name!r}: cluster {cluster_name!r} has no server")
    user = users.get(str(user_name), {}) if user_name else {}
    plugins = [p for p in _USER_AUTH_PLUGINS if p in user]
    if plugins and not allow_exec_auth:
        return Context(
            name=name,
            server=server,
            error=(
                f"context {name!r}: user {user_name!r} runs an {plugins[0]} plugin; "
                "refused without --allow-exec-auth"
            ),
        )
    warnings = []
    if cluster.get("insecure-skip-tls-verify"):
        warnings.append(
            f"context {name!r}: insecure-skip-tls-verify is set, the server certificate is not checked"
        )
    user_key = str(user_name) if user_name else "fleet-anonymous"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": str(cluster_name), "cluster": dict(cluster)}],
        "users": [{"name": user_key, "user": dict(user)}],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": str(cluster_name), "user": user_key, "namespace": "default"},
            }
        ],
        "current-context": name,
    }
    return Context(name=name, server=server, config=config, warnings=tuple(warnings))


async def load_kubeconfig(path: str | None = None, *, allow_exec_auth: bool = False) -> Kubeconfig:
    """Read the kubeconfig (a path, or a `:`-separated list of paths like `$KUBECONFIG`) off the loop."""
    spec = path or default_kubeconfig_path()
    files = [p for p in spec.split(os.pathsep) if p]

    def read() -> list[tuple[str, bytes]]:
        out = []
        for p in files:
            full = pathlib.Path(p).expanduser()
            try:
                out.append((str(full), full.read_bytes()))
            except FileNotFoundError:
                if len(files) == 1:
                    raise errors.InputError(f"{full}: kubeconfig not found") from None
            except OSError as e:
                raise errors.InputError(f"{full}: cannot read the kubeconfig: {e.strerror}") from None
        return out

    docs = await anyio.to_thread.run_sync(read)
    return parse_kubeconfig(docs, allow_exec_auth=allow_exec_auth)


class TlsDefaults:
    """The TLS context of the clients of a run that verify with the default CA bundle.

    kr8s gives back ``True`` (verify with the default bundle) when a kubeconfig names no CA or client
    certificate, and loading the certifi bundle takes 17-50 ms, on the event loop if nothing else is done:
    this loads it once, in a worker thread, and shares it; plain-HTTP servers get no certificate loading
    at all; contexts with their own CA, client certificate or insecure-skip-tls-verify keep the context
    kr8s builds.
    """

    def __init__(self) -> None:
        self._context: ssl.SSLContext | None = None
        self._lock = anyio.Lock()

    async def default(self) -> ssl.SSLContext:
        async with self._lock:
            if self._context is None:
                self._context = await anyio.to_thread.run_sync(
                    functools.partial(ssl.create_default_context, cafile=certifi.where())
                )
            return self._context

    async def verify(self, api: kr8s.asyncio.Api) -> ssl.SSLContext | bool:
        """What to verify the server of `api`'s context with (False: a plain-HTTP server)."""
        auth = api.auth
        own = auth.client_key_file or auth.client_cert_file or auth.server_ca_file
        if own or getattr(auth, "_insecure_skip_tls_verify", False):
            context: ssl.SSLContext | bool = await auth.ssl_context()
            return context
        if str(auth.server).startswith("http://"):
            return False  # no TLS on this connection: nothing to verify
        return await self.default()


def with_settings(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)
