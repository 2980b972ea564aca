"""The connection to Kubernetes clusters: the only module that imports kr8s.

Owns: reading the controller's kubeconfig and cutting it into one explicit single-context kubeconfig per
cluster (so no token can travel to another cluster, and `$KUBECONFIG` is never read behind our back),
refusing `exec`/`auth-provider` users unless allowed (no subprocess is ever spawned for a refused
context), one `kr8s.asyncio.Api` per cluster with explicit timeouts, a per-cluster type table from
discovery (kind -> plural, scope), a per-cluster request rate (token bucket, QPS/burst like Flux's 50/300)
and in-flight limit, a total deadline per attempt (connect to last byte) and per request, capped jittered
retries for what a retry can help (429 honouring a Retry-After that fits the retry budget, 5xx except
permanent ones, connection errors, timeouts, unreadable answers), reading every answer as what it must
be (`is_object`, `is_list`, ...: an HTML page, cut-short JSON or a wrong shape is `BadAnswer`, never an
empty result), bounded answers and lists (bytes, pages, repeated continue tokens), and the mapping of
every failure to `fleet.core.errors` with messages that name the object and never carry Secret data or
credentials.

Does not: decide what to write (`plan`), order writes or keep inventories (`apply`), or watch (`watch`).
Every request goes through kr8s's raw `call_api` with `raise_for_status=False`: kr8s's own helpers
rediscover per call, lowercase kinds and retry 401/403 by rebuilding clients, all of which we avoid.
A path of one segment (`/api`, `/apis`) is sent as it is (`_Api`): kr8s would add a slash, and a real
kube-apiserver answers `/apis/` with legacy discovery whatever the Accept header asks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import functools
import json
import logging
import math
import os
import pathlib
import random
import re
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import certifi
import httpx
import httpx_aiohttp
import kr8s
import kr8s.asyncio
import yaml

from fleet.clients import tls
from fleet.core import errors, model

log = logging.getLogger("fleet.kube")

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"

# What a failed connection can raise below kr8s: httpx's errors, kr8s's timeout, and the aiohttp errors
# the httpx-aiohttp transport does not map (TimeoutError is an OSError).
_TRANSPORT_ERRORS = (httpx.TransportError, kr8s.APITimeoutError, aiohttp.ClientError, OSError)

# 500s that say the request itself is wrong: retrying them cannot help.
_PERMANENT_500 = ("field not declared in schema", "failed to create typed patch object")
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
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
    max_in_flight: int = 4  # httpx scans its pool per request: client CPU grows with connections
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


# ----------------------------------------------------------------------------------------------------------
# Types served by a cluster


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{root}/{self.plural}"

    def object_path(self, namespace: str | None, name: str) -> str:
        return f"{self.collection_path(namespace if self.namespaced else None)}/{name}"


@dataclass(frozen=True)
class TypeTable:
    """(apiVersion, kind) -> ResourceType for what one cluster serves."""

    types: Mapping[tuple[str, str], ResourceType]

    def lookup(self, api_version: str, kind: str) -> ResourceType | None:
        return self.types.get((api_version, kind))

    def of(self, ref: model.ObjectRef) -> ResourceType | None:
        return self.types.get((ref.api_version, ref.kind))

    def namespaced_listable(self) -> tuple[ResourceType, ...]:
        seen: dict[tuple[str, str], ResourceType] = {}
        for rt in self.types.values():
            if rt.namespaced and "list" in rt.verbs:
                seen.setdefault((rt.group, rt.plural), rt)
        return tuple(seen.values())


def types_from_resource_list(doc: Mapping[str, Any]) -> list[ResourceType]:
    """The kinds of one APIResourceList (subresources left out)."""
    group_version = str(doc.get("groupVersion", ""))
    group, _, version = group_version.rpartition("/")
    out = []
    for res in _objects(doc.get("resources")):
        name = str(res.get("name", ""))
        if not name or "/" in name:
            continue
        out.append(
            ResourceType(
                group=group,
                version=version,
                kind=str(res.get("kind", "")),
                plural=name,
                namespaced=bool(res.get("namespaced")),
                verbs=tuple(str(v) for v in _list(res.get("verbs"))),
            )
        )
    return out


AGGREGATED_ACCEPT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"


def _is_aggregated(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "APIGroupDiscoveryList"


def types_from_aggregated(doc: Mapping[str, Any]) -> list[ResourceType]:
    """The kinds of an aggregated discovery document (apidiscovery.k8s.io/v2 APIGroupDiscoveryList)."""
    out = []
    for item in _objects(doc.get("items")):
        meta = item.get("metadata")
        group = str((meta if isinstance(meta, dict) else {}).get("name") or "")
        for version in _objects(item.get("versions")):
            v = str(version.get("version", ""))
            for res in _objects(version.get("resources")):
                response_kind = res.get("responseKind")
                kind = response_kind.get("kind") if isinstance(response_kind, dict) else None
                plural = res.get("resource")
                if not kind or not plural:
                    continue
                out.append(
                    ResourceType(
                        group=group,
                        version=v,
                        kind=str(kind),
                        plural=str(plural),
                        namespaced=res.get("scope") == "Namespaced",
                        verbs=tuple(str(v) for v in _list(res.get("verbs"))),
                    )
                )
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _objects(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list (anything else in it, or a non-list, is left out)."""
    return [v for v in _list(value) if isinstance(v, dict)]


def fleet_error(exc: BaseException) -> errors.FleetError | None:
    """The `FleetError` an exception (or a task group's exception group) carries; Unreachable first."""
    if isinstance(exc, errors.FleetError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [f for f in (fleet_error(e) for e in exc.exceptions) if f is not None]
        for f in found:
            if isinstance(f, errors.Unreachable):
                return f
        return found[0] if found else None
    return None


@contextlib.contextmanager
def unwrap_group() -> Iterator[None]:
    """Raise the `FleetError` of a failed task group as itself, not wrapped in an exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        err = fleet_error(group)
        if err is None:
            raise
        raise err from None


def no_match_message(ref: model.ObjectRef) -> str:
    return (
        f'{ref}: no matches for kind "{ref.kind}" in version "{ref.api_version}" '
        "(is its CustomResourceDefinition installed?)"
    )


# ----------------------------------------------------------------------------------------------------------
# Errors


def _status_message(body: Any, status: int) -> tuple[str, str]:
    if isinstance(body, dict) and body.get("kind") == "Status":
        return str(body.get("message") or ""), str(body.get("reason") or "")
    return f"HTTP {status}", ""


def scrub(message: str, secrets: Iterable[str]) -> str:
    """`message` with every secret value (and its base64 form) replaced, cut to a readable length."""
    import base64

    for value in secrets:
        if not value or len(value) < 3:
            continue
        forms = {value}
        try:
            forms.add(base64.b64encode(value.encode()).decode())
            forms.add(base64.b64decode(value, validate=True).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            pass
        for form in sorted(forms, key=len, reverse=True):
            if len(form) >= 3:
                message = message.replace(form, "<redacted>")
    return message if len(message) <= 600 else message[:600] + "..."


class ApiError(errors.ClusterError):
    """A request answered with an error status (after retries); `status` and `reason` say which."""

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class RejectedError(ApiError, errors.Rejected):
    retriable = False


class ContinueExpired(RejectedError):
    """410 Gone on a list's continue token: the list must start again (not retried here)."""


class ConflictError(ApiError, errors.Conflict):
    retriable = False


class ServerError(ApiError):
    """A 5xx or 429 that outlived its retries (retriable later)."""

    retriable = True


class BadAnswer(errors.ClusterError):
    """A 2xx answer that cannot be read: not JSON (an HTML page, cut short) or not of the expected shape,
    or too large. Never read as an empty result (retriable later)."""

    retriable = True


def _map_status(status: int, body: Any, *, what: str, secrets: Iterable[str]) -> ApiError:
    message, reason = _status_message(body, status)
    text = scrub(f"{what}: {message}" if message else f"{what}: HTTP {status}", secrets)
    if status == 409 and reason != "AlreadyExists":
        return ConflictError(text, status=status, reason=reason)
    if status in _RETRY_STATUSES and not _permanent(status, message):
        return ServerError(text, status=status, reason=reason)
    return RejectedError(text, status=status, reason=reason)


def _permanent(status: int, message: str) -> bool:
    return status == 500 and any(marker in message for marker in _PERMANENT_500)


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


class _Api(kr8s.asyncio.Api):
    """kr8s's Api, except that it sends a path of one segment as it is. kr8s joins base and url with a
    slash, so `/apis` would go out as `/apis/`, which a real kube-apiserver answers with the legacy
    APIGroupList even when aggregated discovery is asked for: every round would then walk every group
    version (docs/real-cluster.md)."""

    def _construct_url(
        self, version: str = "v1", base: str = "", namespace: str | None = None, url: str = ""
    ) -> str:
        built: str = super()._construct_url(version, base, namespace, url)
        if base and not version and not namespace and not url and built == f"{base}/":
            return base
        return built


def _split_path(path: str) -> tuple[str, str]:
    head, _, tail = path.rpartition("/")
    if not head:
        return path, ""
    return head, tail


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


def _describe(headers: Mapping[str, str], status: int, size: int) -> str:
    kind = headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
    return f"HTTP {status}, {kind}, {size} bytes"


def _parse(raw: bytes | bytearray) -> tuple[bool, Any]:
    """(True, JSON value) or (False, None); an empty body is (True, None)."""
    if not raw:
        return True, None
    try:
        return True, json.loads(raw)
    except (ValueError, RecursionError):
        return False, None


Items = list[dict[str, Any]]  # the items of a list answer

# What an answer must look like; each returns a problem or None.
Check = Callable[[Any], str | None]


def is_object(doc: Any) -> str | None:
    """A Kubernetes object: a JSON object whose metadata (when present) is an object."""
    if not isinstance(doc, dict):
        return f"is {_json_kind(doc)}, not an object"
    if not isinstance(doc.get("metadata", {}), dict):
        return "has metadata that is not an object"
    return None


def is_list(doc: Any) -> str | None:
    """A Kubernetes list: an object with an ``items`` list of objects that have metadata."""
    problem = is_object(doc)
    if problem:
        return problem
    items = doc.get("items")
    if not isinstance(items, list):
        return "has no items list" if items is None else f"has items that are {_json_kind(items)}, not a list"
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("metadata"), dict):
            return "has an item that is not an object with metadata"
    token = doc.get("metadata", {}).get("continue")
    if token is not None and not isinstance(token, str):
        return "has a continue token that is not a string"
    return None


def is_status(doc: Any) -> str | None:
    """A ``Status`` object, as a Kubernetes API server sends with its error statuses."""
    if not isinstance(doc, dict) or doc.get("kind") != "Status":
        return "is not a Kubernetes Status"
    return None


def is_resource_list(doc: Any) -> str | None:
    """An APIResourceList (legacy discovery of one group version)."""
    problem = is_object(doc)
    if problem:
        return problem
    resources = doc.get("resources")
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        return "has no resources list"
    return None


def is_discovery_root(doc: Any) -> str | None:
    """``/api`` or ``/apis``: an aggregated APIGroupDiscoveryList, APIVersions or APIGroupList."""
    problem = is_object(doc)
    if problem:
        return problem
    if _is_aggregated(doc):
        items = doc.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return "is an APIGroupDiscoveryList without an items list"
        return None
    groups = doc.get("groups")
    if groups is not None and (not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups)):
        return "has groups that are not a list of objects"
    if groups is None and not isinstance(doc.get("versions"), list):
        return "is neither an APIGroupList nor APIVersions"
    return None


def _json_kind(value: Any) -> str:
    if value is None:
        return "empty"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


def retry_delay(attempt: int, *, base: float, cap: float) -> float:
    """The wait after failed attempt `attempt` (1, 2, ...): exponential from `base`, capped at `cap`,
    jittered to between half and all of it (so retries of many clients do not arrive together)."""
    return min(cap, base * 2 ** min(attempt - 1, 64)) * (0.5 + random.random() / 2)


@dataclass
class Stats:
    """Requests this client sent, for status and benchmarks."""

    requests: int = 0
    retries: int = 0
    by_method: dict[str, int] = field(default_factory=dict)


class Client:
    """One cluster: a kr8s Api made once from that cluster's own kubeconfig, limits, discovery."""

    def __init__(
        self, *, cluster: str, context: Context, settings: Settings, tls: TlsDefaults | None = None
    ) -> None:
        self.cluster = cluster
        self._tls = tls or TlsDefaults()
        self.context = context
        self.settings = settings
        self.stats = Stats()
        self._api: kr8s.asyncio.Api | None = None
        self._bucket = _TokenBucket(qps=settings.qps, burst=settings.burst)
        self._in_flight = anyio.CapacityLimiter(max(1, settings.max_in_flight))
        self._pause_until = 0.0
        self._dead: errors.Unreachable | None = None
        self._dead_until = 0.0
        self._types: TypeTable | None = None
        self._open_lock = anyio.Lock()

    def __repr__(self) -> str:
        parts = urllib.parse.urlsplit(self.context.server)
        server = parts._replace(
            netloc=parts.hostname or "" if parts.port is None else f"{parts.hostname}:{parts.port}"
        )
        return f"Client(cluster={self.cluster!r}, server={server.geturl()!r})"  # no userinfo, ever

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.context.warnings

    async def _open(self) -> kr8s.asyncio.Api:
        async with self._open_lock:
            if self._api is not None:
                return self._api
            if self.context.error:
                raise errors.ClusterError(f"cluster {self.cluster}: {self.context.error}")
            api = _Api(kubeconfig=dict(self.context.config), bypass_factory=True)
            api.timeout = httpx.Timeout(self.settings.request_timeout, connect=self.settings.connect_timeout)
            try:
                await api.auth.reauthenticate()
            except Exception as e:  # kr8s raises ValueError/KeyError/OSError for unusable credentials
                raise errors.ClusterError(
                    f"cluster {self.cluster}: cannot load credentials of context {self.context.name!r}: "
                    f"{type(e).__name__}"
                ) from None
            await self._tls.install(api, settings=self.settings)
            self._api = api
            return api

    def revive(self) -> None:
        """Forget that the cluster was found unreachable (a new round may try it again at once)."""
        self._dead = None

    async def aclose(self) -> None:
        api, self._api = self._api, None
        session = getattr(api, "_session", None) if api is not None else None
        if session is not None:
            await session.aclose()

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
        check: Check | None = None,
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
        check: Check | None = None,
    ) -> tuple[int, Any, int]:
        """`request`, also returning the size of the answer in bytes."""
        if self._dead is not None:
            if time.monotonic() < self._dead_until:
                raise errors.Unreachable(f"{what}: {self._dead}")
            self._dead = None
        api = await self._open()
        base, url = _split_path(path)
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
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
            mapped: ApiError | None = None
            retry_after: float | None = None
            status, raw, answer_headers = 0, bytearray(), httpx.Headers()
            async with self._in_flight:
                self.stats.requests += 1
                self.stats.by_method[method] = self.stats.by_method.get(method, 0) + 1
                try:
                    status, raw, answer_headers = await self._send(
                        api, method, base, url, params=params, headers=headers, content=content, limit=limit
                    )
                except _TooLarge as e:
                    raise BadAnswer(
                        f"{what}: the answer is larger than {s.max_answer_bytes} bytes "
                        f"({e.size} bytes or more); refused"
                    ) from None
                except TimeoutError:
                    problem = (
                        f"no complete answer within {limit:g}s"
                        if limit >= s.request_timeout
                        else f"no complete answer within the retry budget ({s.retry_budget:g}s)"
                    )
                except _TRANSPORT_ERRORS as e:
                    problem = _transport_problem(e)
            if status:
                readable, parsed = _parse(raw)
                if 200 <= status < 300 or status in accept or status in accept_any:
                    shape = None
                    if status in accept_any:
                        pass
                    elif not readable:
                        shape = "is not JSON"
                    elif status in accept:
                        shape = is_status(parsed)
                    elif check is not None:
                        shape = check(parsed)
                    if shape is None:
                        return status, parsed, len(raw)
                    problem = f"the answer ({_describe(answer_headers, status, len(raw))}) {shape}"
                else:
                    mapped = _map_status(status, parsed, what=what, secrets=secrets)
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
                    raise ServerError(
                        f"{mapped}; Retry-After {retry_after:g}s is beyond the retry budget ({s.retry_budget:g}s)",
                        status=mapped.status,
                        reason=mapped.reason,
                    )
                delay = max(delay, retry_after)
            if attempt >= s.max_attempts or time.monotonic() + delay > deadline:
                if mapped is not None:
                    raise mapped
                if status:
                    raise BadAnswer(f"{what}: {problem}")
                dead = errors.Unreachable(
                    f"cluster {self.cluster} unreachable after {attempt} attempts: {problem}"
                )
                self._dead = dead
                self._dead_until = time.monotonic() + s.retry_budget
                raise errors.Unreachable(f"{what}: {dead}")
            self.stats.retries += 1
            log.debug("cluster %s: %s %s: %s; retry in %.2fs", self.cluster, method, path, problem, delay)
            await anyio.sleep(delay)

    async def _send(
        self,
        api: kr8s.asyncio.Api,
        method: str,
        base: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        content: bytes | None,
        limit: float,
    ) -> tuple[int, bytearray, httpx.Headers]:
        """One attempt, ended by `limit` seconds (connect to last byte); the body is read up to the cap."""
        cap = self.settings.max_answer_bytes
        with anyio.fail_after(max(0.0, limit)):
            async with api.call_api(
                method,
                version="",
                base=base,
                url=url,
                params=dict(params or {}),
                headers=dict(headers),
                content=content,
                raise_for_status=False,
                stream=True,
            ) as response:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise _TooLarge(int(declared))
                if declared.isdigit() and not response.headers.get("Content-Encoding"):
                    # The framing holds the body to its declared length: read it in one go.
                    return response.status_code, bytearray(await response.aread()), response.headers
                raw = bytearray()
                async for chunk in response.aiter_bytes():
                    raw += chunk
                    if len(raw) > cap:
                        raise _TooLarge(len(raw))
                return response.status_code, raw, response.headers

    # -- discovery ---------------------------------------------------------------------------------

    async def types(self, *, refresh: bool = False) -> TypeTable:
        """The kinds this cluster serves, discovered once (again with `refresh`, e.g. after a CRD).

        Aggregated discovery (two requests: ``/api`` and ``/apis``) when the server offers it, else the
        legacy walk (``/api/v1``, ``/apis``, then every group version)."""
        if self._types is not None and not refresh:
            return self._types
        what = f"cluster {self.cluster}: discovery"
        found: list[ResourceType] = []
        docs: dict[str, Any] = {}

        async def fetch(path: str) -> None:
            docs[path] = (
                await self.request("GET", path, what=what, media=AGGREGATED_ACCEPT, check=is_discovery_root)
            )[1]

        with unwrap_group():
            async with anyio.create_task_group() as tg:
                tg.start_soon(fetch, "/api")
                tg.start_soon(fetch, "/apis")
        core, groups = docs["/api"], docs["/apis"]
        if _is_aggregated(core) and _is_aggregated(groups):
            found.extend(types_from_aggregated(core))
            found.extend(types_from_aggregated(groups))
        else:
            _, core_v1 = await self.request("GET", "/api/v1", what=what, check=is_resource_list)
            found.extend(types_from_resource_list(core_v1))
            versions = []
            for group in groups.get("groups") or []:
                for v in group.get("versions") or []:
                    if isinstance(v, dict) and v.get("groupVersion"):
                        versions.append(str(v["groupVersion"]))

            async def one(gv: str) -> None:
                status, doc = await self.request(
                    "GET", f"/apis/{gv}", what=what, accept_any=(404, 503), check=is_resource_list
                )
                if status == 200:
                    found.extend(types_from_resource_list(doc))

            with unwrap_group():
                async with anyio.create_task_group() as tg:
                    for gv in versions:
                        tg.start_soon(one, gv)
        self._types = TypeTable(types={(t.api_version, t.kind): t for t in found})
        return self._types

    # -- verbs -------------------------------------------------------------------------------------

    async def list(
        self,
        rt: ResourceType,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every object of a kind (in a namespace or all), following pages; items get kind/apiVersion."""
        params: dict[str, str] = {"limit": str(self.settings.page_size)}
        if label_selector:
            params["labelSelector"] = label_selector
        where = f" in {namespace}" if namespace else ""
        what = f"cluster {self.cluster}: list {rt.plural}{where}"
        items, _ = await self.list_pages(rt, rt.collection_path(namespace), what=what, params=params)
        return items

    async def list_pages(
        self, rt: ResourceType, path: str, *, what: str, params: Mapping[str, str]
    ) -> tuple[Items, str]:
        """(every item, the resourceVersion of the first page) of a paged list at `path`.

        Bounded: at most `max_list_pages` pages and `max_list_bytes` bytes over all of them; a continue
        token the server already gave is an error (a paging loop), as is any page that is not a list
        (`is_list`). A 410 on a continue token raises `ContinueExpired` (the caller decides when to
        start again). Items get kind/apiVersion."""
        s = self.settings
        items: Items = []
        query = dict(params)
        seen: set[str] = set()
        total = 0
        rv = ""
        for page in range(1, s.max_list_pages + 1):
            try:
                _, doc, size = await self._request("GET", path, what=what, params=query, check=is_list)
            except RejectedError as e:
                if e.status == 410 and "continue" in query:
                    raise ContinueExpired(str(e), status=e.status, reason=e.reason) from None
                raise
            total += size
            if total > s.max_list_bytes:
                raise BadAnswer(
                    f"{what}: the list holds more than {s.max_list_bytes} bytes ({page} pages); refused"
                )
            meta = doc.get("metadata") or {}
            if page == 1:
                rv = str(meta.get("resourceVersion") or "")
            for item in doc["items"]:
                item.setdefault("apiVersion", rt.api_version)
                item.setdefault("kind", rt.kind)
                items.append(item)
            token = meta.get("continue")
            if not token:
                return items, rv
            if token in seen:
                raise BadAnswer(f"{what}: the server gave the same continue token again (a paging loop)")
            seen.add(token)
            query = {**query, "continue": token}
        raise BadAnswer(f"{what}: more than {s.max_list_pages} pages; refused (a server that pages forever?)")

    async def get(self, rt: ResourceType, *, namespace: str | None, name: str) -> dict[str, Any] | None:
        ref = f"{rt.kind}/{namespace}/{name}" if namespace else f"{rt.kind}/{name}"
        status, doc = await self.request(
            "GET", rt.object_path(namespace, name), what=ref, accept=(404,), check=is_object
        )
        return doc if status == 200 else None

    async def apply(
        self,
        rt: ResourceType,
        obj: Mapping[str, Any],
        *,
        force: bool,
        dry_run: bool = False,
        secrets: Iterable[str] = (),
    ) -> tuple[dict[str, Any], bool]:
        """Server-side apply with field manager `fleet`; returns (object, created)."""
        ref = model.ObjectRef.of(obj)
        params = {"fieldManager": model.FIELD_MANAGER, "force": "true" if force else "false"}
        if dry_run:
            params["dryRun"] = "All"
        status, doc = await self.request(
            "PATCH",
            rt.object_path(ref.namespace or None, ref.name),
            what=str(ref),
            params=params,
            body=obj,
            content_type=APPLY_CONTENT_TYPE,
            secrets=secrets,
            check=is_object,
        )
        return doc, status == 201

    async def create(self, rt: ResourceType, obj: Mapping[str, Any]) -> bool:
        """Plain create; False when the object already exists."""
        ref = model.ObjectRef.of(obj)
        status, _ = await self.request(
            "POST",
            rt.collection_path(ref.namespace or None),
            what=str(ref),
            params={"fieldManager": model.FIELD_MANAGER},
            body=obj,
            accept=(409,),
        )
        return status != 409

    async def delete(self, rt: ResourceType, *, namespace: str | None, name: str) -> bool:
        """Delete (background propagation); False when it was already gone."""
        ref = f"{rt.kind}/{namespace}/{name}" if namespace else f"{rt.kind}/{name}"
        status, _ = await self.request(
            "DELETE",
            rt.object_path(namespace, name),
            what=ref,
            params={"propagationPolicy": "Background"},
            accept=(404,),
        )
        return status != 404

    def stream(self, path: str, *, what: str, params: Mapping[str, str], read_timeout: float) -> WatchStream:
        """A streaming GET (a watch), used as ``async with client.stream(...) as s``; see `WatchStream`.

        No retries here (the watch loop owns reconnects and backoff); the rate limit applies to opening
        it, the in-flight limit does not (a stream is long-lived). `read_timeout`: the longest silence
        tolerated on the connection (headers included) before it is declared dead.
        """
        return WatchStream(self, path, what=what, params=params, read_timeout=read_timeout)


class WatchStream:
    """One open streaming response: `status`, `lines()` for a 2xx, `error()` for the Status of another.

    Transport failures and read timeouts (a half-open connection) raise `errors.Unreachable` with a
    message that carries no URL or credential.
    """

    def __init__(
        self, client: Client, path: str, *, what: str, params: Mapping[str, str], read_timeout: float
    ) -> None:
        self._client = client
        self._path = path
        self._what = what
        self._params = dict(params)
        self._read_timeout = read_timeout
        self._cm: Any = None
        self._response: httpx.Response | None = None
        self.status = 0

    async def __aenter__(self) -> WatchStream:
        client = self._client
        api = await client._open()
        base, url = _split_path(self._path)
        await client._bucket.take()
        client.stats.requests += 1
        client.stats.by_method["GET"] = client.stats.by_method.get("GET", 0) + 1
        timeout = httpx.Timeout(self._read_timeout, connect=client.settings.connect_timeout)
        self._cm = api.call_api(
            "GET",
            version="",
            base=base,
            url=url,
            params=self._params,
            headers={"Accept": "application/json"},
            raise_for_status=False,
            stream=True,
            timeout=timeout,
        )
        try:
            self._response = await self._cm.__aenter__()
        except _TRANSPORT_ERRORS as e:
            self._cm = None
            raise errors.Unreachable(f"{self._what}: {_transport_problem(e)}") from None
        self.status = self._response.status_code
        return self

    async def __aexit__(self, *exc: Any) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            try:
                await cm.__aexit__(*exc)
            except _TRANSPORT_ERRORS:
                pass

    async def lines(self) -> AsyncIterator[bytes]:
        """The non-empty lines of the body as they arrive."""
        assert self._response is not None
        cap = self._client.settings.max_answer_bytes
        buffer = b""
        try:
            async for chunk in self._response.aiter_bytes():
                buffer += chunk
                while True:
                    line, sep, rest = buffer.partition(b"\n")
                    if not sep:
                        break
                    buffer = rest
                    if line.strip():
                        yield line
                if len(buffer) > cap:
                    raise BadAnswer(f"{self._what}: a watch event is larger than {cap} bytes; refused")
        except _TRANSPORT_ERRORS as e:
            raise errors.Unreachable(f"{self._what}: {_transport_problem(e)}") from None
        if buffer.strip():
            yield buffer

    async def error(self) -> tuple[str, str]:
        """(message, reason) of a non-2xx answer's Status body."""
        assert self._response is not None
        cap = self._client.settings.max_answer_bytes
        raw = b""
        try:
            async for chunk in self._response.aiter_bytes():
                raw += chunk
                if len(raw) > cap:
                    raw = b""
                    break
        except _TRANSPORT_ERRORS:
            raw = b""
        _, body = _parse(raw)
        return _status_message(body, self.status)


def _transport_problem(e: BaseException) -> str:
    if isinstance(e, kr8s.APITimeoutError | httpx.TimeoutException | TimeoutError):
        return "timed out"
    if isinstance(e, httpx.ConnectError):
        return "connection refused or failed"
    # httpx messages can quote the URL; keep only the kind of failure.
    return re.sub(r"[^A-Za-z ]", "", type(e).__name__) or "connection error"


class TlsDefaults:
    """TLS contexts and HTTP sessions of the clients of a run.

    TLS: kr8s hands httpx ``verify=True`` when a kubeconfig names no CA or client certificate, and httpx
    then loads the certifi bundle for every client, on the event loop (17-50 ms each). This loads it once,
    in a worker thread, and shares it; plain-HTTP servers get no certificate loading at all; contexts
    with their own CA, client certificate or insecure-skip-tls-verify keep the context kr8s builds.

    Session: kr8s's `call_api` uses whatever `httpx.AsyncClient` its Api holds. `install` gives it one
    built like kr8s builds it (base URL, the context's bearer token, timeouts, proxy) but on the aiohttp
    transport of httpx-aiohttp, which costs about half the client CPU per request of httpx's own
    transport (httpcore scans its whole pool on every request). Everything else (auth loading, URL
    building, the request itself) stays kr8s's.
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
        auth = api.auth
        own = auth.client_key_file or auth.client_cert_file or auth.server_ca_file
        if own or getattr(auth, "_insecure_skip_tls_verify", False):
            return await auth.ssl_context()
        if str(auth.server).startswith("http://"):
            return False  # no TLS on this connection: nothing to verify
        return await self.default()

    async def install(self, api: kr8s.asyncio.Api, *, settings: Settings) -> None:
        auth = api.auth
        verify = await self.verify(api)
        if verify is not False:
            tls.lean_read_buffers()  # a watch stream over TLS would otherwise hold a 256 KiB buffer

        async def fixed() -> ssl.SSLContext | bool:
            return verify

        auth.ssl_context = fixed  # type: ignore[method-assign]  # also used if kr8s rebuilds its session
        headers = {"User-Agent": api.__version__, "Content-Type": "application/json"}
        if auth.token:
            headers["Authorization"] = f"Bearer {auth.token}"
        # Requests in flight are bounded by the client's own limiter; the pool must also have room for
        # the long-lived watch streams, or open streams would starve every later request of a connection.
        size = max(1, settings.max_in_flight)
        pool = size + max(0, settings.max_streams)
        transport = httpx_aiohttp.AiohttpTransport(
            verify=verify,
            trust_env=False,
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=size),
            proxy=httpx.Proxy(auth.proxy) if auth.proxy else None,
        )
        api._session = httpx.AsyncClient(
            base_url=auth.server,
            headers=headers,
            timeout=api.timeout,
            follow_redirects=True,
            transport=transport,
        )


class Clients:
    """The clients of a run, one per cluster, made on first use and closed together."""

    def __init__(self, kubeconfig: Kubeconfig, *, settings: Settings) -> None:
        self.kubeconfig = kubeconfig
        self.settings = settings
        self._clients: dict[str, Client] = {}
        self._tls = TlsDefaults()

    def client(self, cluster: str, *, context: str | None = None) -> Client:
        found = self._clients.get(cluster)
        if found is None:
            ctx = self.kubeconfig.context(context or cluster)
            found = Client(cluster=cluster, context=ctx, settings=self.settings, tls=self._tls)
            self._clients[cluster] = found
        return found

    def all(self) -> tuple[Client, ...]:
        return tuple(self._clients.values())

    async def aclose(self) -> None:
        for client in list(self._clients.values()):
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def with_settings(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)
