"""The Kubernetes REST surface of one simulated cluster: URL routing, negotiation, and the verbs.

Owns: mapping a path below the cluster prefix (`/api/v1/namespaces/x/configmaps/y`, `/apis/...`,
discovery, `/openapi/v3`, `/version`, health) to a verb on `fleet.sim.store.Cluster`; decoding bodies
(JSON, YAML for apply, the 3 MiB cap, protobuf refused with 415); query options (resourceVersion
semantics, selectors, pagination, dryRun, fieldManager, fieldValidation, force); the four patch types
(JSON merge patch with `json-merge-patch`, JSON patch with `jsonpatch`, strategic merge with
`fleet.sim.smp`, server-side apply with `fleet.sim.ssa`); defaulting and managedFields through
`fleet.sim.preparation`; and streaming watches. Every failure is a `status.ApiError` rendered as a real Status body.

Does not: listen on sockets, inject faults or journal requests (`fleet.sim.server`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import json_merge_patch
import jsonpatch
import orjson
import yaml
from aiohttp import web

from fleet.sim import (
    allocation,
    customresources,
    discovery,
    preparation,
    selectors,
    smp,
    ssa,
    status,
    store,
    tables,
    types,
    validation,
)

log = logging.getLogger(__name__)
MAX_BODY = 3 * 1024 * 1024
JSON = "application/json"
AGGREGATED_CT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
CR_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)
BODY_TYPES = ("application/json", "application/yaml")
ADMIN_USER = {"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins", "system:authenticated"]}


@dataclass
class RequestContext:
    """Per-request facts the server layer journals and the watch loop needs."""

    mutated: bool = False
    watch: bool = False
    warnings: list[str] = field(default_factory=list)
    drop_watch: bool = False  # a fault rule closes this watch right after its headers
    table: bool = False  # answer meta.k8s.io/v1 Tables (kubectl's human-readable get)
    path: str = ""  # the path below the cluster prefix (what fault rules match)
    watchers: list[store.Watcher] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """A parsed resource URL."""

    rtype: types.ResourceType
    namespace: str | None  # None: all namespaces (or cluster-scoped)
    name: str | None
    subresource: str | None
    watch_path: bool  # legacy /watch/ prefix


# ----- helpers ----------------------------------------------------------------------------------


def json_response(
    body: bytes | dict[str, Any], *, code: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return web.Response(body=data, status=code, content_type=JSON, headers=headers)


def error_response(err: status.ApiError) -> web.Response:
    return json_response(err.status, code=err.code, headers=err.headers or None)


def _media_types(header: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for part in header.split(","):
        bits = [b.strip() for b in part.split(";")]
        if not bits[0]:
            continue
        params = {}
        for b in bits[1:]:
            k, _, v = b.partition("=")
            params[k.strip().lower()] = v.strip()
        out.append((bits[0].lower(), params))
    return out


def negotiate(accept: str, *, discovery_doc: bool = False, table: bool = False) -> str:
    """'json', 'aggregated', 'table' or raise 406. What is not served falls through to the next type.

    `table`: the resource has a server-side printer (`fleet.sim.tables`), so a meta.k8s.io/v1 Table may be
    answered; protobuf, PartialObjectMetadata and v1beta1 Tables are never served.
    """
    if not accept:
        return "json"
    for mtype, params in _media_types(accept):
        if mtype in ("application/json", "*/*", "application/*"):
            as_ = params.get("as")
            if as_ is None:
                return "json"
            if (
                discovery_doc
                and as_ == "APIGroupDiscoveryList"
                and params.get("g") == "apidiscovery.k8s.io"
                and params.get("v") == "v2"
            ):
                return "aggregated"
            if table and as_ == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") == "v1":
                return "table"
            continue
        if mtype in ("application/yaml", "application/json;stream=watch"):
            return "json"
    raise status.not_acceptable(["application/json", "application/yaml"])


def _include(q: Any) -> str:
    """`includeObject` of a Table request: None, Metadata (the default) or Object."""
    value = q.get("includeObject") or "Metadata"
    if value not in ("None", "Metadata", "Object"):
        raise status.bad_request(f'includeObject: Unsupported value: "{value}"')
    return str(value)


def _bool(q: Any, name: str) -> bool:
    value = q.get(name)
    return value is not None and value.lower() in ("true", "1")


def _int(q: Any, name: str) -> int:
    value = q.get(name)
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except ValueError:
        raise status.bad_request(f'{name}: Invalid value: "{value}": must be an integer') from None


def dry_run(q: Any, kind: str) -> bool:
    values = q.getall("dryRun", [])
    for v in values:
        if v != "All":
            raise status.invalid(
                kind,
                "",
                [
                    status.field_cause(
                        "FieldValueNotSupported",
                        "dryRun",
                        f'Unsupported value: "{v}": supported values: "All"',
                    )
                ],
                group="meta.k8s.io",
            )
    return bool(values)


def field_manager(request: web.BaseRequest, kind: str, *, required: bool = False) -> str:
    manager = request.query.get("fieldManager")
    if manager is None or manager == "":
        if required:
            raise status.invalid(
                kind,
                "",
                [
                    status.field_cause(
                        "FieldValueRequired", "fieldManager", "Required value: is required for apply patch"
                    )
                ],
                group="meta.k8s.io",
            )
        ua = request.headers.get("User-Agent", "")
        return ua.split("/", 1)[0][:128]
    if len(manager) > 128:
        raise status.invalid(
            kind,
            "",
            [
                status.field_cause(
                    "FieldValueTooLong", "fieldManager", "Too long: may not be more than 128 bytes"
                )
            ],
            group="meta.k8s.io",
        )
    if not manager.isprintable():
        raise status.invalid(
            kind,
            "",
            [
                status.field_cause(
                    "FieldValueInvalid",
                    "fieldManager",
                    f'Invalid value: "{manager}": must only contain printable characters',
                )
            ],
            group="meta.k8s.io",
        )
    return manager


def field_validation(q: Any) -> str:
    value = q.get("fieldValidation") or "Warn"
    if value not in ("Strict", "Warn", "Ignore"):
        raise status.bad_request(
            f'Invalid fieldValidation directive: "{value}", valid values: Strict, Warn, Ignore'
        )
    return value


async def read_body(request: web.BaseRequest) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise status.too_large(f"Request entity too large: limit is {MAX_BODY}")
    chunks = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_BODY:
            raise status.too_large(f"Request entity too large: limit is {MAX_BODY}")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise status.bad_request(f"couldn't get version/kind; json parse error: {e}") from None


def decode_object(data: bytes, content_type: str) -> dict[str, Any]:
    """A POST/PUT body: JSON (or YAML), which must be an object."""
    if content_type == "application/yaml":
        try:
            obj = yaml.load(data, Loader=yaml.CSafeLoader)
        except yaml.YAMLError as e:
            raise status.bad_request(f"error converting YAML to JSON: {e}") from None
    else:
        if not data.strip():
            raise status.bad_request("the body of the request was empty")
        obj = decode_json(data)
    if not isinstance(obj, dict):
        raise status.bad_request(
            "couldn't get version/kind; json parse error: json: cannot unmarshal "
            f"{type(obj).__name__} into Go value of type struct {{ APIVersion string; Kind string }}"
        )
    return obj


_META_STRINGS = ("name", "generateName", "namespace", "uid", "resourceVersion", "creationTimestamp")
_GO_TYPES = {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number"}


def _go_type(value: Any) -> str:
    return _GO_TYPES.get(type(value), "value")


def check_metadata(obj: dict[str, Any]) -> None:
    """The decoding errors of ObjectMeta fields of the wrong JSON type (400, like the Go decoder)."""
    meta = obj.get("metadata")
    if meta is None:
        return

    def fail(field: str, value: Any, want: str) -> NoReturn:
        raise status.bad_request(
            f"json: cannot unmarshal {_go_type(value)} into Go struct field ObjectMeta.metadata.{field} of type {want}"
        )

    if not isinstance(meta, dict):
        raise status.bad_request(
            f"json: cannot unmarshal {_go_type(meta)} into Go struct field Object.metadata of type v1.ObjectMeta"
        )
    for key in _META_STRINGS:
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            fail(key, value, "string")
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            fail(key, value, "map[string]string")
        for v in value.values():
            if not isinstance(v, str):
                fail(key, v, "string")
    finalizers = meta.get("finalizers")
    if finalizers is not None and (
        not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers)
    ):
        fail("finalizers", finalizers, "[]string")
    refs = meta.get("ownerReferences")
    if refs is not None and (not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs)):
        fail("ownerReferences", refs, "[]v1.OwnerReference")
    generation = meta.get("generation")
    if generation is not None and (not isinstance(generation, int) or isinstance(generation, bool)):
        fail("generation", generation, "int64")


def check_body_type(rtype: types.ResourceType, obj: dict[str, Any]) -> None:
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if api_version not in (None, "") and api_version != rtype.api_version:
        raise status.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version ({rtype.api_version})"
        )
    if kind not in (None, "") and kind != rtype.kind:
        raise status.bad_request(
            f"the kind in the data ({kind}) does not match the expected kind ({rtype.kind})"
        )
    check_metadata(obj)


def _header_text(text: str) -> str:
    """A quoted-string body for a header: backslash and quote escaped, anything unprintable as \\uXXXX."""
    out = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif 32 <= ord(ch) < 127:
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


def content_type_of(request: web.BaseRequest) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


# ----- routing ----------------------------------------------------------------------------------


def parse_target(registry: types.Registry, segments: list[str], group: str, version: str) -> Target:
    watch_path = False
    if segments and segments[0] == "watch":
        watch_path = True
        segments = segments[1:]
    namespace: str | None = None
    if (
        len(segments) >= 3
        and segments[0] == "namespaces"
        and not (len(segments) == 3 and segments[2] in ("status", "finalize") and group == "")
    ):
        namespace = segments[1]
        segments = segments[2:]
    if not segments or len(segments) > 3:
        raise status.resource_not_found()
    rtype = registry.get(group, version, segments[0])
    if rtype is None:
        raise status.resource_not_found()
    name = segments[1] if len(segments) > 1 else None
    sub = segments[2] if len(segments) > 2 else None
    if namespace is not None and not rtype.namespaced:
        raise status.resource_not_found()
    if rtype.namespaced and namespace is None and name is not None:
        raise status.resource_not_found()
    if sub is not None and sub not in rtype.subresources:
        raise status.resource_not_found()
    if name == "" or namespace == "":
        raise status.resource_not_found()
    return Target(rtype, namespace, name, sub, watch_path)


class Api:
    """One cluster's request handler."""

    def __init__(self, cluster: store.Cluster, *, git_version: str = discovery.KUBE_VERSION) -> None:
        self.cluster = cluster
        self.git_version = git_version
        self._version = orjson.dumps(discovery.version_info(git_version))
        self.allocator = allocation.Allocator()  # Service cluster IPs and node ports of this cluster

    async def handle(self, request: web.BaseRequest, path: str, ctx: RequestContext) -> web.StreamResponse:
        try:
            return await self._route(request, path, ctx)
        except status.ApiError as err:
            return error_response(err)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as e:  # a bug must still answer a Status, never kill the connection silently
            log.exception("fleet sim: unexpected error for %s %s", request.method, path)
            return error_response(status.internal_error(f"{type(e).__name__}: {e}"))

    async def _route(self, request: web.BaseRequest, path: str, ctx: RequestContext) -> web.StreamResponse:
        segments = [s for s in path.split("/") if s]
        registry = self.cluster.registry
        if not segments:
            return json_response(
                {"paths": ["/api", "/api/v1", "/apis", "/openapi/v3", "/version", "/healthz"]}
            )
        head = segments[0]
        if head == "version" and len(segments) == 1:
            return json_response(self._version)
        if head in ("healthz", "livez", "readyz"):
            return web.Response(text="ok", content_type="text/plain")
        if head == "openapi":
            if segments[1:2] == ["v3"]:
                if len(segments) == 2:
                    return json_response(discovery.openapi_index(registry))
                doc = discovery.openapi_document(registry, "/".join(segments[2:]))
                if doc is not None:
                    return json_response(doc, headers={"Cache-Control": "public, immutable"})
            if segments[1:] == ["v2"]:
                # kubectl's fallback when a kind is in neither OpenAPI v3 nor a CRD (see fleet.sim.discovery).
                body, content_type = discovery.openapi_v2(request.headers.get("Accept", ""))
                return web.Response(body=body, headers={"Content-Type": content_type})
            raise status.resource_not_found()
        if head == "api":
            if len(segments) == 1:
                return self._discovery_root(request, legacy=True)
            group, version, rest = "", segments[1], segments[2:]
        elif head == "apis":
            if len(segments) == 1:
                return self._discovery_root(request, legacy=False)
            group = segments[1]
            if len(segments) == 2:
                negotiate(request.headers.get("Accept", ""))
                doc = discovery.api_group(registry, group)
                if doc is None:
                    raise status.resource_not_found()
                return json_response(doc)
            version, rest = segments[2], segments[3:]
        else:
            raise status.resource_not_found()
        if not rest:
            negotiate(request.headers.get("Accept", ""))
            doc = discovery.resource_list(registry, group, version)
            if doc is None:
                raise status.resource_not_found()
            return json_response(doc)
        target = parse_target(registry, rest, group, version)
        printable = target.subresource is None and tables.has_printer(target.rtype)
        ctx.table = negotiate(request.headers.get("Accept", ""), table=printable) == "table"
        return await self._resource(request, target, ctx)

    def _discovery_root(self, request: web.BaseRequest, *, legacy: bool) -> web.Response:
        registry = self.cluster.registry
        if negotiate(request.headers.get("Accept", ""), discovery_doc=True) == "aggregated":
            body, etag = discovery.aggregated(registry, legacy=legacy)
            headers = {"ETag": etag, "Vary": "Accept"}
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers=headers)
            resp = web.Response(body=body, headers=headers)
            resp.headers["Content-Type"] = AGGREGATED_CT
            return resp
        return json_response(discovery.api_versions(registry) if legacy else discovery.group_list(registry))

    # ----- verbs ----------------------------------------------------------------------------------

    async def _resource(self, request: web.BaseRequest, t: Target, ctx: RequestContext) -> web.StreamResponse:
        method = request.method
        q = request.query
        if t.rtype.virtual:
            if method != "POST" or t.name is not None:
                raise status.method_not_allowed()
            return await self._review(request, t)
        if method == "GET":
            if t.subresource is None and (t.watch_path or _bool(q, "watch")):
                return await self._watch(request, t, ctx)
            if t.name is None:
                return await self._list(request, t, ctx)
            return await self._get(request, t, ctx)
        if method == "POST":
            if t.name is not None:
                raise status.method_not_allowed()
            return await self._create(request, t, ctx)
        if method == "PUT" and t.name is not None:
            return await self._update(request, t, ctx)
        if method == "PATCH" and t.name is not None:
            return await self._patch(request, t, ctx)
        if method == "DELETE":
            if t.name is None:
                return await self._delete_collection(request, t, ctx)
            return await self._delete(request, t, ctx)
        raise status.method_not_allowed()

    def _ns(self, t: Target) -> str:
        return t.namespace or "" if t.rtype.namespaced else ""

    async def _get(self, request: web.BaseRequest, t: Target, ctx: RequestContext) -> web.Response:
        q = request.query
        if q.get("fieldSelector"):
            try:
                fields = selectors.parse_fields(q.get("fieldSelector"), known=t.rtype.field_paths())
            except selectors.SelectorError as e:
                raise status.bad_request(str(e)) from None
            pinned = fields.required_name()
            if pinned is not None and pinned != t.name:
                raise status.bad_request("fieldSelector metadata.name doesn't match requested name")
        rv = q.get("resourceVersion")
        if rv not in (None, "", "0"):
            try:
                target_rv = int(rv)
            except ValueError:
                raise status.bad_request(f"invalid resource version: {rv}") from None
            if target_rv > self.cluster.rv and not await self.cluster.wait_for_rv(target_rv):
                raise self.cluster.too_large(target_rv)
        assert t.name is not None
        if t.rtype.namespaced and self.cluster.namespace_phase(t.namespace or "") is None:
            raise status.not_found(t.rtype, t.name)
        stored = self.cluster.get(t.rtype, self._ns(t), t.name)
        if t.subresource == "scale":
            return json_response(scale_of(stored.obj, t.rtype))
        if ctx.table:
            meta = {"resourceVersion": stored.obj["metadata"].get("resourceVersion", "")}
            return json_response(
                tables.table(t.rtype, [stored], metadata=meta, include=_include(request.query))
            )
        return json_response(stored.full())

    def _list_options(self, request: web.BaseRequest, t: Target, *, watch: bool) -> dict[str, Any]:
        q = request.query
        rv = q.get("resourceVersion")
        match = q.get("resourceVersionMatch")
        cont = q.get("continue") or ""
        causes = []
        if match and not rv and not (watch and _bool(q, "sendInitialEvents")):
            causes.append(
                status.field_cause(
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                )
            )
        if match and cont:
            causes.append(
                status.field_cause(
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    "Forbidden: resourceVersionMatch is forbidden when continue is provided",
                )
            )
        if match and match not in ("Exact", "NotOlderThan"):
            causes.append(
                status.field_cause(
                    "FieldValueNotSupported",
                    "resourceVersionMatch",
                    f'Unsupported value: "{match}": supported values: "Exact", "NotOlderThan", ""',
                )
            )
        if match == "Exact" and rv == "0":
            causes.append(
                status.field_cause(
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
                )
            )
        send_initial = q.get("sendInitialEvents")
        if send_initial is not None and not watch:
            causes.append(
                status.field_cause(
                    "FieldValueForbidden",
                    "sendInitialEvents",
                    "Forbidden: sendInitialEvents is forbidden for list",
                )
            )
        if watch and send_initial is not None and match != "NotOlderThan":
            causes.append(
                status.field_cause(
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                )
            )
        if watch and match and send_initial is None:
            causes.append(
                status.field_cause(
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                )
            )
        if causes:
            raise status.invalid("ListOptions", "", causes, group="meta.k8s.io")
        try:
            labels = selectors.parse_labels(q.get("labelSelector"))
            fields = selectors.parse_fields(q.get("fieldSelector"), known=t.rtype.field_paths())
        except selectors.SelectorError as e:
            raise status.bad_request(str(e)) from None
        if cont and rv not in (None, "", "0"):
            raise status.bad_request("specifying resource version is not allowed when using continue")
        at: int | None = None
        if rv not in (None, "", "0") and not cont:
            try:
                at = int(rv)
                if at < 0:
                    raise ValueError
            except ValueError:
                raise status.bad_request(
                    f'invalid resource version: strconv.ParseUint: parsing "{rv}": invalid syntax'
                ) from None
        return {
            "rv": rv,
            "at": at,
            "match": match,
            "cont": cont,
            "labels": labels,
            "fields": fields,
            "limit": _int(q, "limit"),
            "send_initial": send_initial,
        }

    async def _list(self, request: web.BaseRequest, t: Target, ctx: RequestContext) -> web.Response:
        opts = self._list_options(request, t, watch=False)
        at = opts["at"]
        exact = opts["match"] == "Exact" or (not opts["match"] and at is not None and opts["limit"] > 0)
        if at is not None and at > self.cluster.rv and not await self.cluster.wait_for_rv(at):
            raise self.cluster.too_large(at)
        namespace = t.namespace if t.rtype.namespaced else None
        result = self.cluster.list(
            t.rtype,
            namespace,
            labels=opts["labels"],
            fields=opts["fields"],
            limit=opts["limit"],
            continue_token=opts["cont"],
            at=at,
            exact=exact,
        )
        meta: dict[str, Any] = {"resourceVersion": str(result.rv)}
        if result.continue_token:
            meta["continue"] = result.continue_token
        if result.remaining is not None:
            meta["remainingItemCount"] = result.remaining
        if ctx.table:
            return json_response(
                tables.table(t.rtype, result.items, metadata=meta, include=_include(request.query))
            )
        head = orjson.dumps({"kind": t.rtype.list_kind, "apiVersion": t.rtype.api_version, "metadata": meta})
        encode = store.Stored.full if t.rtype.custom else store.Stored.item
        body = head[:-1] + b',"items":[' + b",".join(encode(s) for s in result.items) + b"]}"
        return json_response(body)

    async def _watch(self, request: web.BaseRequest, t: Target, ctx: RequestContext) -> web.StreamResponse:
        q = request.query
        opts = self._list_options(request, t, watch=True)
        ctx.watch = True
        bookmarks = _bool(q, "allowWatchBookmarks")
        send_initial = opts["send_initial"]
        rv = opts["rv"]
        since: int | None = None
        initial_end = False
        if send_initial is not None:
            if send_initial.lower() == "true":
                initial_end = bookmarks
                if opts["at"] is not None and opts["at"] > self.cluster.rv:
                    await self.cluster.wait_for_rv(opts["at"])
            else:
                since = opts["at"] if opts["at"] is not None else self.cluster.rv
        elif rv in (None, "", "0"):
            initial_end = bookmarks  # WatchList defaulting of legacy watches with bookmarks (1.34+)
        else:
            since = opts["at"]
            assert since is not None
            if since > self.cluster.rv:
                await self.cluster.wait_for_rv(since)
        timeout_s = _int(q, "timeoutSeconds")
        if timeout_s <= 0:
            base = self.cluster.settings.min_request_timeout
            timeout_s = int(base + random.random() * base)
        namespace = t.namespace if t.rtype.namespaced else None
        if t.name is not None:
            # /watch/namespaces/x/configmaps/y: a watch on one object.
            name_sel = selectors.FieldSelector(
                (
                    *opts["fields"].terms,
                    selectors.FieldTerm("metadata.name", ("metadata", "name"), t.name, False),
                )
            )
            opts["fields"] = name_sel
        watcher = self.cluster.watch(
            t.rtype,
            namespace,
            labels=opts["labels"],
            fields=opts["fields"],
            since=since,
            initial_events_end=initial_end,
            encode=tables.watch_encoder(t.rtype, include=_include(q)) if ctx.table else None,
        )
        watcher.path = ctx.path or request.path
        ctx.watchers.append(watcher)
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": JSON, "Cache-Control": "no-cache, private"}
        )
        resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
            if ctx.drop_watch:
                return resp
            await self._pump(resp, watcher, t.rtype, timeout_s=timeout_s, bookmarks=bookmarks)
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            self.cluster.unwatch(watcher)
            raise
        finally:
            self.cluster.unwatch(watcher)
        return resp

    async def _pump(
        self,
        resp: web.StreamResponse,
        w: store.Watcher,
        rtype: types.ResourceType,
        *,
        timeout_s: float,
        bookmarks: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        interval = self.cluster.settings.bookmark_interval
        next_bookmark = loop.time() + interval if bookmarks else float("inf")
        final_bookmark_sent = False
        while True:
            if w.queue:
                data = b"".join(w.queue)
                w.queue.clear()
                w.wake.clear()
                await resp.write(data)
                if w.close_after_drain:
                    return
                continue
            if w.closed:
                return
            now_ = loop.time()
            if now_ >= deadline:
                return
            if bookmarks and not final_bookmark_sent and deadline - now_ <= 2.0 and timeout_s > 2.0:
                final_bookmark_sent = True
                await resp.write(self.cluster.bookmark(rtype))
                continue
            if now_ >= next_bookmark:
                next_bookmark = now_ + interval
                await resp.write(self.cluster.bookmark(rtype))
                continue
            wake_at = min(deadline, next_bookmark)
            if bookmarks and not final_bookmark_sent and timeout_s > 2.0:
                wake_at = min(wake_at, deadline - 2.0)
            w.wake.clear()
            try:
                await asyncio.wait_for(w.wake.wait(), timeout=max(wake_at - now_, 0.0))
            except TimeoutError:
                pass

    # ----- writes ---------------------------------------------------------------------------------

    def _strict_fields(
        self,
        rtype: types.ResourceType,
        obj: dict[str, Any],
        mode: str,
        ctx: RequestContext,
        *,
        raw: bytes | None = None,
    ) -> None:
        if rtype.custom:
            unknown = customresources.unknown_fields(rtype, obj, prune=mode != "Strict")
        else:
            problem = validation.type_error(obj, group=rtype.group, version=rtype.version, kind=rtype.kind)
            if problem is not None:
                raise status.bad_request(problem)
            unknown = validation.unknown_fields(
                obj, group=rtype.group, version=rtype.version, kind=rtype.kind, prune=mode != "Strict"
            )
        problems = [f'unknown field "{p}"' for p in unknown]
        if raw is not None and mode != "Ignore":
            problems += [f'duplicate field "{p}"' for p in validation.duplicate_fields(raw)]
        if not problems:
            return
        if mode == "Strict":
            raise status.bad_request("strict decoding error: " + ", ".join(problems))
        if mode == "Warn":
            ctx.warnings.extend(problems)

    def _finish(self, result: store.WriteResult, ctx: RequestContext) -> web.Response:
        ctx.mutated = result.mutated
        headers = {}
        if ctx.warnings:
            headers["Warning"] = ", ".join('299 - "' + _header_text(w) + '"' for w in ctx.warnings)
        if result.body is not None:
            return json_response(result.body, code=result.code, headers=headers or None)
        return json_response(result.stored.full(), code=result.code, headers=headers or None)

    def _server_fields(
        self, rtype: types.ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Metadata validation and what the registry allocates after defaulting (Service IPs, node ports)."""
        causes = validation.metadata_causes(obj)
        if rtype.group == "" and rtype.kind == "Secret" and not rtype.custom:
            before = validation.secret_update_causes(obj, old) if old is not None else []
            causes = before + causes + validation.secret_causes(obj)
        if causes:
            raise status.invalid(
                rtype.kind, obj.get("metadata", {}).get("name", ""), causes, group=rtype.group
            )
        if rtype.group == "" and rtype.kind == "Service" and not rtype.custom:
            allocation.allocate(self.allocator, obj, old)
        return obj

    def _prepare_new(
        self, rtype: types.ResourceType, old: dict[str, Any] | None, manager: str, subresource: str | None
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def prepare(obj: dict[str, Any]) -> dict[str, Any]:
            obj = self._server_fields(rtype, preparation.apply_defaults(rtype, obj), old)
            return preparation.record_update(rtype, old, obj, manager=manager, subresource=subresource)

        return prepare

    async def _review(self, request: web.BaseRequest, t: Target) -> web.Response:
        """SelfSubjectAccessReview / SelfSubjectReview: every caller is an allowed cluster admin."""
        ct = content_type_of(request)
        if ct not in BODY_TYPES:
            raise status.unsupported_media_type(ct, ["application/json", "application/yaml"])
        body = decode_object(await read_body(request), ct)
        check_body_type(t.rtype, body)
        body["apiVersion"], body["kind"] = t.rtype.api_version, t.rtype.kind
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        body["metadata"] = {"creationTimestamp": None, **(meta or {})}
        if t.rtype.kind == "SelfSubjectAccessReview":
            body.setdefault("spec", {})
            body["status"] = {"allowed": True, "reason": "fleet sim allows every request"}
        elif t.rtype.kind == "TokenReview":
            body.setdefault("spec", {})
            body["status"] = {"authenticated": True, "user": dict(ADMIN_USER)}
        else:
            body["status"] = {"userInfo": dict(ADMIN_USER)}
        return json_response(body, code=201)

    async def _create(self, request: web.BaseRequest, t: Target, ctx: RequestContext) -> web.Response:
        ct = content_type_of(request)
        if ct not in BODY_TYPES:
            raise status.unsupported_media_type(ct, ["application/json", "application/yaml"])
        q = request.query
        is_dry = dry_run(q, "CreateOptions")
        manager = field_manager(request, "CreateOptions")
        mode = field_validation(q)
        data = await read_body(request)
        obj = decode_object(data, ct)
        check_body_type(t.rtype, obj)
        self._strict_fields(t.rtype, obj, mode, ctx, raw=data if ct == JSON else None)
        namespace = t.namespace or ""
        if t.rtype.namespaced and not namespace:
            raise status.resource_not_found()
        result = self.cluster.create(
            t.rtype,
            namespace,
            obj,
            manager=manager,
            dry_run=is_dry,
            prepare=self._prepare_new(t.rtype, None, manager, None),
        )
        return self._finish(result, ctx)

    async def _update(self, request: web.BaseRequest, t: Target, ctx: RequestContext) -> web.Response:
        ct = content_type_of(request)
        if ct not in BODY_TYPES:
            raise status.unsupported_media_type(ct, ["application/json", "application/yaml"])
        q = request.query
        is_dry = dry_run(q, "UpdateOptions")
        manager = field_manager(request, "UpdateOptions")
        mode = field_validation(q)
        data = await read_body(request)
        body = decode_object(data, ct)
        assert t.name is not None
        if t.subresource == "scale":
            return self._write_scale(t, body, manager=manager, dry=is_dry, ctx=ctx)
        if t.subresource == "finalize":
            # Namespace finalize: only spec.finalizers changes (registry/core/namespace FinalizeREST).
            old_ns = self.cluster.get(t.rtype, "", t.name)
            finalizers = (
                (body.get("spec") or {}).get("finalizers") if isinstance(body.get("spec"), dict) else None
            )
            if finalizers is not None and not (
                isinstance(finalizers, list) and all(isinstance(f, str) for f in finalizers)
            ):
                raise status.bad_request("spec.finalizers must be a list of strings")
            changed = old_ns.copy()
            changed.setdefault("spec", {})["finalizers"] = finalizers or []
            if not changed["spec"]["finalizers"]:
                del changed["spec"]["finalizers"]
            result = self.cluster.commit_update(t.rtype, old_ns, changed, dry_run=is_dry)
            return self._finish(result, ctx)
        check_body_type(t.rtype, body)
        self._strict_fields(t.rtype, body, mode, ctx, raw=data if ct == JSON else None)
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            raise status.bad_request("metadata must be an object")
        if meta.get("name") and meta["name"] != t.name:
            raise status.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({t.name})"
            )
        if t.rtype.namespaced and meta.get("namespace") and meta["namespace"] != t.namespace:
            raise status.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        old = self.cluster.get(t.rtype, self._ns(t), t.name)
        body_rv = meta.get("resourceVersion")
        if body_rv:
            if body_rv != old.obj["metadata"].get("resourceVersion"):
                raise status.conflict(t.rtype, t.name, status.OPTIMISTIC_LOCK)
        elif t.rtype.custom:
            raise status.invalid(
                t.rtype.kind,
                t.name,
                [
                    status.field_cause(
                        "FieldValueInvalid",
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
                group=t.rtype.group,
            )
        result = self._write_update(
            t.rtype, old, body, manager=manager, subresource=t.subresource, dry=is_dry
        )
        return self._finish(result, ctx)

    def _write_update(
        self,
        rtype: types.ResourceType,
        old: store.Stored,
        new: dict[str, Any],
        *,
        manager: str,
        subresource: str | None,
        dry: bool,
        applied: bool = False,
        managed_as: str | None = None,
    ) -> store.WriteResult:
        new = self.cluster.prepare_update(rtype, old, new, subresource=subresource)
        new = self._server_fields(rtype, preparation.apply_defaults(rtype, new), old.obj)
        self.cluster.bump_generation(rtype, old.obj, new)
        if not applied:
            new = preparation.record_update(
                rtype, old.obj, new, manager=manager, subresource=managed_as or subresource
            )
        return self.cluster.commit_update(rtype, old, new, dry_run=dry)

    def _write_scale(
        self, t: Target, body: dict[str, Any], *, manager: str, dry: bool, ctx: RequestContext
    ) -> web.Response:
        assert t.name is not None
        old = self.cluster.get(t.rtype, self._ns(t), t.name)
        body_rv = (body.get("metadata") or {}).get("resourceVersion")
        if body_rv and body_rv != old.obj["metadata"].get("resourceVersion"):
            raise status.conflict(t.rtype, t.name, status.OPTIMISTIC_LOCK)
        replicas = (body.get("spec") or {}).get("replicas")
        new = old.copy()
        if isinstance(replicas, int):
            if t.rtype.scale_paths is not None:
                customresources.set_path(new, t.rtype.scale_paths[0], replicas)
            else:
                new.setdefault("spec", {})["replicas"] = replicas
        result = self._write_update(
            t.rtype, old, new, manager=manager, subresource=None, dry=dry, managed_as="scale"
        )
        ctx.mutated = result.mutated
        return json_response(scale_of(result.stored.obj, t.rtype))

    async def _patch(self, request: web.BaseRequest, t: Target, ctx: RequestContext) -> web.Response:
        ct = content_type_of(request)
        rtype = t.rtype
        allowed = CR_PATCH_TYPES if rtype.custom else PATCH_TYPES
        if ct not in allowed:
            raise status.unsupported_media_type(ct, list(allowed))
        q = request.query
        is_dry = dry_run(q, "PatchOptions")
        apply_ = ct == "application/apply-patch+yaml"
        manager = field_manager(request, "PatchOptions", required=apply_)
        mode = field_validation(q)
        if "force" in q and not apply_:
            raise status.invalid(
                "PatchOptions",
                "",
                [
                    status.field_cause(
                        "FieldValueForbidden", "force", "Forbidden: may not be specified for non-apply patch"
                    )
                ],
                group="meta.k8s.io",
            )
        data = await read_body(request)
        assert t.name is not None
        if apply_:
            return self._apply(t, data, manager=manager, force=_bool(q, "force"), dry=is_dry, ctx=ctx)
        doc = decode_json(data)
        old = self.cluster.get(t.rtype, self._ns(t), t.name)
        base: dict[str, Any] = old.copy() if t.subresource != "scale" else scale_of(old.obj, t.rtype)
        if ct == "application/merge-patch+json":
            if not isinstance(doc, dict):
                raise status.bad_request(
                    "json: cannot unmarshal into Go value of type map[string]interface {}"
                )
            patched = json_merge_patch.merge(base, doc)
        elif ct == "application/json-patch+json":
            try:
                patch = jsonpatch.JsonPatch(doc)
                patched = patch.apply(base, in_place=True)
            except jsonpatch.InvalidJsonPatch as e:
                raise status.bad_request(
                    f"the server rejected our request due to an error in our request: {e}"
                ) from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as e:
                raise status.error(
                    422, "Invalid", f"the server rejected our request due to an error in our request: {e}"
                ) from None
        else:
            patched = strategic_patch(rtype, base, doc)
        if not isinstance(patched, dict):
            raise status.bad_request("the patch did not produce an object")
        if t.subresource == "scale":
            return self._write_scale(t, patched, manager=manager, dry=is_dry, ctx=ctx)
        check_metadata(patched)
        meta = patched.get("metadata")
        if not isinstance(meta, dict):
            raise status.bad_request("metadata must be an object")
        if meta.get("name") != t.name:
            raise status.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({t.name})"
            )
        if meta.get("resourceVersion") and meta["resourceVersion"] != old.obj["metadata"].get(
            "resourceVersion"
        ):
            raise status.conflict(rtype, t.name, status.OPTIMISTIC_LOCK)
        if not rtype.custom:
            check_patched_bytes(rtype, patched, strategic=ct == "application/strategic-merge-patch+json")
        self._strict_fields(rtype, patched, mode, ctx)
        result = self._write_update(
            rtype, old, patched, manager=manager, subresource=t.subresource, dry=is_dry
        )
        return self._finish(result, ctx)

    def _apply(
        self, t: Target, data: bytes, *, manager: str, force: bool, dry: bool, ctx: RequestContext
    ) -> web.Response:
        rtype = t.rtype
        assert t.name is not None
        config: Any = None
        try:
            config = orjson.loads(data)  # most appliers (kubectl, fleet) send JSON: 10x cheaper than YAML
        except orjson.JSONDecodeError:
            try:
                config = yaml.load(data, Loader=yaml.CSafeLoader) if data.strip() else None
            except yaml.YAMLError as e:
                raise status.bad_request(f"error decoding YAML: {e}") from None
        if not isinstance(config, dict):
            raise status.bad_request("invalid object type: the apply patch must be a single object")
        if config.get("apiVersion") != rtype.api_version:
            raise status.bad_request(
                "Incorrect version specified in apply patch. Specified patch version: "
                f"{config.get('apiVersion')}, expected: {rtype.api_version}"
            )
        if config.get("kind") != rtype.kind:
            raise status.bad_request(f"invalid object type: {rtype.api_version}, Kind={config.get('kind')}")
        meta = config.get("metadata") or {}
        if not isinstance(meta, dict):
            raise status.bad_request("metadata must be an object")
        check_metadata(config)
        if meta.get("managedFields") is not None:
            raise status.bad_request("metadata.managedFields must be nil")
        if meta.get("name") and meta["name"] != t.name:
            raise status.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({t.name})"
            )
        if rtype.namespaced and meta.get("namespace") and meta["namespace"] != t.namespace:
            raise status.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        ns = self._ns(t)
        old = self.cluster.find(rtype, ns, t.name)
        stamp = store.now()
        structure = rtype.structure()
        try:
            if old is None:
                if t.subresource is not None:
                    raise status.not_found(rtype, t.name)
                if rtype.namespaced and self.cluster.namespace_phase(ns) is None:
                    raise status.namespace_not_found(ns)
                config.setdefault("metadata", {})["name"] = t.name
                new = ssa.apply(None, config, manager=manager, force=force, structure=structure, now=stamp)
                check_applied_bytes(rtype, new, meta)
                new.get("metadata", {}).pop("resourceVersion", None)
                result = self.cluster.create(
                    rtype,
                    ns,
                    new,
                    manager=manager,
                    dry_run=dry,
                    prepare=lambda o: self._server_fields(rtype, preparation.apply_defaults(rtype, o), None),
                )
            else:
                wanted_rv = meta.get("resourceVersion")
                if wanted_rv and wanted_rv != old.obj["metadata"].get("resourceVersion"):
                    raise status.conflict(
                        rtype, t.name, status.OPTIMISTIC_LOCK
                    )  # a precondition, as in patches
                live = old.copy()
                new = ssa.apply(
                    live,
                    config,
                    manager=manager,
                    force=force,
                    structure=structure,
                    now=stamp,
                    subresource=t.subresource,
                )
                check_applied_bytes(rtype, new, meta)
                result = self._write_update(
                    rtype, old, new, manager=manager, subresource=t.subresource, dry=dry, applied=True
                )
        except ssa.ApplyConflict as e:
            raise conflict_error(e.conflicts, old.obj if old else None, applier=manager) from None
        except ssa.FieldNotDeclared as e:
            raise status.internal(f"failed to create typed patch object ({gvk_string(rtype)}): {e}") from None
        return self._finish(result, ctx)

    async def _delete(self, request: web.BaseRequest, t: Target, ctx: RequestContext) -> web.Response:
        opts = await self._delete_options(request)
        assert t.name is not None
        result = self.cluster.delete(
            t.rtype,
            self._ns(t),
            t.name,
            dry_run=opts["dry"],
            propagation=opts["propagation"],
            precondition_uid=opts["uid"],
            precondition_rv=opts["rv"],
        )
        return self._finish(result, ctx)

    async def _delete_options(self, request: web.BaseRequest) -> dict[str, Any]:
        q = request.query
        data = await read_body(request)
        body: dict[str, Any] = {}
        if data.strip():
            decoded = decode_json(data)
            if not isinstance(decoded, dict):
                raise status.bad_request("DeleteOptions must be an object")
            body = decoded
        dry_values = list(q.getall("dryRun", [])) + list(body.get("dryRun") or [])
        for v in dry_values:
            if v != "All":
                raise status.invalid(
                    "DeleteOptions",
                    "",
                    [
                        status.field_cause(
                            "FieldValueNotSupported",
                            "dryRun",
                            f'Unsupported value: "{v}": supported values: "All"',
                        )
                    ],
                    group="meta.k8s.io",
                )
        propagation = body.get("propagationPolicy") or q.get("propagationPolicy")
        if propagation is None:
            orphan = body.get("orphanDependents")
            if orphan is None and q.get("orphanDependents") is not None:
                orphan = q.get("orphanDependents", "").lower() == "true"
            if orphan is True:
                propagation = "Orphan"
        if propagation is not None and propagation not in ("Foreground", "Background", "Orphan"):
            raise status.invalid(
                "DeleteOptions",
                "",
                [
                    status.field_cause(
                        "FieldValueNotSupported",
                        "propagationPolicy",
                        f'Unsupported value: "{propagation}": supported values: "Foreground", "Background", "Orphan", "nil"',
                    )
                ],
                group="meta.k8s.io",
            )
        pre = body.get("preconditions") or {}
        return {
            "dry": bool(dry_values),
            "propagation": propagation,
            "uid": pre.get("uid") if isinstance(pre, dict) else None,
            "rv": pre.get("resourceVersion") if isinstance(pre, dict) else None,
        }

    async def _delete_collection(
        self, request: web.BaseRequest, t: Target, ctx: RequestContext
    ) -> web.Response:
        opts = await self._delete_options(request)
        q = request.query
        try:
            labels = selectors.parse_labels(q.get("labelSelector"))
            fields = selectors.parse_fields(q.get("fieldSelector"), known=t.rtype.field_paths())
        except selectors.SelectorError as e:
            raise status.bad_request(str(e)) from None
        namespace = t.namespace if t.rtype.namespaced else None
        listed = self.cluster.list(t.rtype, namespace, labels=labels, fields=fields)
        items = []
        for stored in listed.items:
            meta = stored.obj["metadata"]
            try:
                result = self.cluster.delete(
                    t.rtype,
                    meta.get("namespace", ""),
                    meta["name"],
                    dry_run=opts["dry"],
                    propagation=opts["propagation"],
                )
            except status.ApiError:
                continue
            ctx.mutated = ctx.mutated or result.mutated
            items.append(result.stored)
        head = orjson.dumps(
            {
                "kind": t.rtype.list_kind,
                "apiVersion": t.rtype.api_version,
                "metadata": {"resourceVersion": str(self.cluster.rv)},
            }
        )
        encode = store.Stored.full if t.rtype.custom else store.Stored.item
        return json_response(head[:-1] + b',"items":[' + b",".join(encode(s) for s in items) + b"]}")


# ----- bridges to the pure engines --------------------------------------------------------------


def strategic_patch(rtype: types.ResourceType, base: dict[str, Any], doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise status.bad_request("json: cannot unmarshal into Go value of type map[string]interface {}")
    try:
        return smp.patch(base, doc, structure=rtype.structure())
    except smp.UnsupportedPatch:
        raise status.unsupported_media_type(
            "application/strategic-merge-patch+json", list(CR_PATCH_TYPES)
        ) from None
    except smp.InvalidPatch as e:
        raise status.error(422, "Invalid", str(e)) from None


def check_patched_bytes(rtype: types.ResourceType, patched: dict[str, Any], *, strategic: bool) -> None:
    """A patched built-in object whose []byte field (Secret `data`) is not base64: the real 422.

    The real server decodes the patched object and answers `NewInvalid(GroupKind{}, "", patch: Invalid
    value: <patched object>: <decode error>)` (apiserver handlers/patch.go; the strategic path converts
    from unstructured, prefixing `error decoding from json: `). Its bad value is the whole patched
    object, Secret values included; the sim omits it, as apimachinery renders an omitted value
    (`Invalid value: <detail>`), so no secret is ever echoed.
    """
    found = validation.byte_field_error(patched, group=rtype.group, version=rtype.version, kind=rtype.kind)
    if found is None:
        return
    detail = validation.base64_message(found[1])
    if strategic:
        detail = "error decoding from json: " + detail
    cause = status.field_cause("FieldValueInvalid", "patch", f"Invalid value: {detail}")
    raise status.error(
        422, "Invalid", f' "" is invalid: patch: {cause["message"]}', details={"causes": [cause]}
    )


def check_applied_bytes(rtype: types.ResourceType, merged: dict[str, Any], meta: dict[str, Any]) -> None:
    """A server-side apply whose merged object has a []byte field that is not base64: the real 500.

    The real field manager converts the merged object to the typed version and fails there (managedfields
    structuredmerge.go `failed to convert new object (...) to proper version`, runtime scheme.go
    `unable to convert unstructured object to ...`, converter.go `error decoding from json: ...`); the
    error is not a Status, so it is rendered as 500 with an empty reason. The offset only, no value.
    """
    if rtype.custom:
        return
    found = validation.byte_field_error(merged, group=rtype.group, version=rtype.version, kind=rtype.kind)
    if found is None:
        return
    gvk = gvk_string(rtype)
    where = f"{meta.get('namespace') or ''}/{meta.get('name') or ''}; {gvk}"
    raise status.internal(
        f"failed to convert new object ({where}) to proper version: unable to convert unstructured object "
        f"to {gvk}: error decoding from json: {validation.base64_message(found[1])}"
    )


def gvk_string(rtype: types.ResourceType) -> str:
    return f"{rtype.group}/{rtype.version}, Kind={rtype.kind}"


def _manager_label(manager: str, live: dict[str, Any] | None, applier: str = "") -> str:
    for entry in (live or {}).get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == manager and not (manager == applier and entry.get("operation") == "Apply"):
            label = f'"{manager}"'
            if entry.get("subresource"):
                label += f' with subresource "{entry["subresource"]}"'
            if entry.get("operation") == "Update":
                label += f" using {entry.get('apiVersion', '')}"
                if entry.get("time"):
                    label += f" at {entry['time']}"
            return label
    return f'"{manager}"'


def conflict_error(
    conflicts: list[tuple[str, str]], live: dict[str, Any] | None, *, applier: str = ""
) -> status.ApiError:
    """The 409 of an apply conflict, shaped like apimachinery internal/conflict.go."""
    causes = [
        {
            "type": "FieldManagerConflict",
            "message": f"conflict with {_manager_label(m, live, applier)}",
            "field": path,
        }
        for m, path in conflicts
    ]
    if len(conflicts) == 1:
        m, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {_manager_label(m, live, applier)}: {path}"
    else:
        by_manager: dict[str, list[str]] = {}
        for m, path in conflicts:
            by_manager.setdefault(m, []).append(path)
        lines = []
        for m, paths in by_manager.items():
            lines.append(f"conflicts with {_manager_label(m, live, applier)}:")
            lines.extend(f"- {p}" for p in paths)
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return status.ApiError(status.status(409, "Conflict", message, details={"causes": causes}))


def scale_of(obj: dict[str, Any], rtype: types.ResourceType | None = None) -> dict[str, Any]:
    if rtype is not None and rtype.scale_paths is not None:
        return customresources.scale_of(obj, rtype.scale_paths)
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    st = obj.get("status") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": {
            "replicas": st.get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        },
    }
