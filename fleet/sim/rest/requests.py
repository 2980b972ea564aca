"""Reading a Kubernetes API request and shaping its answer: bodies, negotiation, query options.

Owns: the request facts the server layer journals (`RequestContext`) and the parsed resource URL
(`Target`); reading bodies (the 3 MiB cap) and decoding them (JSON, YAML; the Go decoder's 400s for
ObjectMeta fields of the wrong type, a body of another kind or version); content negotiation (JSON,
aggregated discovery, `meta.k8s.io/v1` Tables, else 406); the query options every verb shares, each
validated with the real server's message (`dryRun`, `fieldManager`, `fieldValidation`, `includeObject`,
the list and watch options with their resourceVersion rules, DeleteOptions from the query or the body);
and the JSON answers (`json_response`, `error_response`, `finish` with the `Warning` headers).

Does not: route (`fleet.sim.rest.routing`), run a verb (`reads`, `writes`, `patches`) or touch a cluster.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import orjson
import yaml
from aiohttp import web

from fleet.sim import status
from fleet.sim.kinds import types, validation
from fleet.sim.storage import selectors, store, watches

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
    table: bool = False  # answer meta.k8s.io Tables (kubectl's human-readable get)
    table_version: str = "v1"  # which: v1, or v1beta1 for a client that asks only for that
    path: str = ""  # the path below the cluster prefix (what fault rules match)
    watchers: list[watches.Watcher] = field(default_factory=list)
    # A view resource's form of the objects a watch sends (`fleet.sim.rest.views`); None: as stored.
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None


@dataclass(frozen=True)
class Target:
    """A parsed resource URL."""

    rtype: types.ResourceType
    namespace: str | None  # None: all namespaces (or cluster-scoped)
    name: str | None
    subresource: str | None
    watch_path: bool  # legacy /watch/ prefix

    @property
    def ns(self) -> str:
        """The namespace part of the storage key: "" for cluster-scoped kinds."""
        return self.namespace or "" if self.rtype.namespaced else ""


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


@functools.lru_cache(maxsize=256)  # a pure function of a few distinct Accept headers; read per request
def negotiate(accept: str, *, discovery_doc: bool = False, table: bool = False) -> str:
    """'json', 'aggregated', 'table' or raise 406. What is not served falls through to the next type.

    `table`: the resource has a server-side printer (`fleet.sim.rest.tables`), so a meta.k8s.io Table
    may be answered ('table' for v1, 'table-v1beta1'); protobuf and PartialObjectMetadata are never served.
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
            if (
                table
                and as_ == "Table"
                and params.get("g") == "meta.k8s.io"
                and params.get("v") in ("v1", "v1beta1")
            ):
                return "table" if params.get("v") == "v1" else "table-v1beta1"
            continue
        if mtype in ("application/yaml", "application/json;stream=watch"):
            return "json"
    raise status.not_acceptable(["application/json", "application/yaml"])


def include_object(q: Any) -> str:
    """`includeObject` of a Table request: None, Metadata (the default) or Object."""
    value = q.get("includeObject") or "Metadata"
    if value not in ("None", "Metadata", "Object"):
        raise status.bad_request(f'includeObject: Unsupported value: "{value}"')
    return str(value)


def flag(q: Any, name: str) -> bool:
    value = q.get(name)
    return value is not None and value.lower() in ("true", "1")


def integer(q: Any, name: str) -> int:
    value = q.get(name)
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except ValueError:
        raise status.bad_request(f'{name}: Invalid value: "{value}": must be an integer') from None


def check_dry_run(values: list[str], kind: str) -> None:
    """Only `All` is a dry-run value; the 422 quotes the whole list, as Go's `%q` prints a []string."""
    if any(v != "All" for v in values):
        shown = "[" + " ".join(orjson.dumps(v).decode() for v in values) + "]"
        raise status.invalid(
            kind,
            "",
            [
                status.field_cause(
                    "FieldValueNotSupported", "dryRun", f'Unsupported value: {shown}: supported values: "All"'
                )
            ],
            group="meta.k8s.io",
        )


def dry_run(q: Any, kind: str) -> bool:
    values = list(q.getall("dryRun", []))
    check_dry_run(values, kind)
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


# A body already read and converted by `fleet.sim.rest.views`, which the verbs read instead of the wire's.
BODY_OVERRIDE = web.RequestKey("fleet.sim.body", bytes)


async def read_body(request: web.BaseRequest) -> bytes:
    if BODY_OVERRIDE in request:
        override: bytes = request[BODY_OVERRIDE]
        return override
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


def decode_patch(data: bytes) -> Any:
    """A JSON merge patch or JSON patch body (the wording after the prefix is Python's, not Go's)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise status.bad_request(f"error decoding patch: {e}") from None


# The struct the real server's decoder reads a body's apiVersion and kind into (as Go prints its type).
_TYPE_META = (
    'struct { APIVersion string "json:\\"apiVersion,omitempty\\""; Kind string "json:\\"kind,omitempty\\"" }'
)


def decode_object(data: bytes, content_type: str, *, kind: str = "") -> dict[str, Any]:
    """A POST/PUT body: JSON (or YAML), which must be an object; errors as the real decoder words them
    (`the object provided is unrecognized (must be of type KIND): ...`; the wording of a JSON syntax error
    after it is Python's, not Go's)."""
    unrecognized = f"the object provided is unrecognized (must be of type {kind}): " if kind else ""
    if content_type == "application/yaml":
        try:
            obj = yaml.load(data, Loader=yaml.CSafeLoader)
        except yaml.YAMLError as e:
            raise status.bad_request(f"{unrecognized}{e} ({data[:32].hex()})") from None
    else:
        if not data.strip():
            raise status.bad_request(
                f"{unrecognized}couldn't get version/kind; json parse error: unexpected end of JSON input (<empty>)"
            )
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            text = data[:64].decode("utf-8", errors="replace")
            raise status.bad_request(
                f"{unrecognized}couldn't get version/kind; json parse error: {e} ({text})"
            ) from None
    if not isinstance(obj, dict):
        have = _go_type(obj) if obj is not None else "null"
        raise status.bad_request(
            f"{unrecognized}couldn't get version/kind; json parse error: json: cannot unmarshal {have} into Go "
            f"value of type {_TYPE_META} ({data[:32].hex()})"
        )
    return obj


def undecodable(rtype: types.ResourceType, message: str) -> str:
    """A typed decoder's error for a body of a built-in kind: `KIND in version "V" cannot be handled as a KIND: ...`."""
    return f'{rtype.kind} in version "{rtype.version}" cannot be handled as a {rtype.kind}: {message}'


_META_STRINGS = ("name", "generateName", "namespace", "uid", "resourceVersion", "creationTimestamp")
_GO_TYPES = {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number"}


def _go_type(value: Any) -> str:
    return _GO_TYPES.get(type(value), "value")


def check_metadata(
    obj: dict[str, Any], rtype: types.ResourceType | None = None, *, patch: bool = False
) -> None:
    """The decoding errors of ObjectMeta fields of the wrong JSON type, like the Go decoder's: a request
    body of a built-in kind (`rtype`) gets 400 `KIND in version "V" cannot be handled as a KIND: json: ...`;
    a patched object (`patch`) 422 `patch: Invalid value: json: ...` (the real one also quotes the whole
    patched object, which the sim leaves out: it may hold Secret data)."""
    meta = obj.get("metadata")
    if meta is None:
        return

    def fail(message: str) -> NoReturn:
        if patch:
            cause = status.field_cause("FieldValueInvalid", "patch", f"Invalid value: {message}")
            raise status.error(
                422, "Invalid", f' "" is invalid: patch: {cause["message"]}', details={"causes": [cause]}
            )
        if rtype is not None and not rtype.custom:
            message = undecodable(rtype, message)
        raise status.bad_request(message)

    def wrong(field: str, value: Any, want: str) -> NoReturn:
        fail(
            f"json: cannot unmarshal {_go_type(value)} into Go struct field ObjectMeta.metadata.{field} of type {want}"
        )

    if not isinstance(meta, dict):
        owner = rtype.kind if rtype is not None and not rtype.custom else "Object"
        fail(
            f"json: cannot unmarshal {_go_type(meta)} into Go struct field {owner}.metadata of type v1.ObjectMeta"
        )
    for key in _META_STRINGS:
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            wrong(key, value, "string")
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            wrong(key, value, "map[string]string")
        for v in value.values():
            if not isinstance(v, str):
                wrong(key, v, "string")
    # A list of the wrong JSON type is named as the list type, a wrong item as the item type.
    finalizers = meta.get("finalizers")
    if finalizers is not None and not isinstance(finalizers, list):
        wrong("finalizers", finalizers, "[]string")
    for f in finalizers or ():
        if not isinstance(f, str):
            wrong("finalizers", f, "string")
    refs = meta.get("ownerReferences")
    if refs is not None and not isinstance(refs, list):
        wrong("ownerReferences", refs, "[]v1.OwnerReference")
    for ref in refs or ():
        if not isinstance(ref, dict):
            wrong("ownerReferences", ref, "v1.OwnerReference")
    generation = meta.get("generation")
    if generation is not None and (not isinstance(generation, int) or isinstance(generation, bool)):
        wrong("generation", generation, "int64")


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
    check_metadata(obj, rtype)


def header_text(text: str) -> str:
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


# ----- options shared by verbs ------------------------------------------------------------------


def list_options(request: web.BaseRequest, t: Target, *, watch: bool) -> dict[str, Any]:
    q = request.query
    rv = q.get("resourceVersion")
    match = q.get("resourceVersionMatch")
    cont = q.get("continue") or ""
    causes = []
    if match and not rv and not (watch and flag(q, "sendInitialEvents")):
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
                f'invalid resource version: resourceVersion: Invalid value: "{rv}": strconv.ParseUint: '
                f'parsing "{rv}": invalid syntax'
            ) from None
    return {
        "rv": rv,
        "at": at,
        "match": match,
        "cont": cont,
        "labels": labels,
        "fields": fields,
        "limit": integer(q, "limit"),
        "send_initial": send_initial,
    }


async def delete_options(request: web.BaseRequest) -> dict[str, Any]:
    q = request.query
    data = await read_body(request)
    body: dict[str, Any] = {}
    if data.strip():
        decoded = decode_json(data)
        if not isinstance(decoded, dict):
            raise status.bad_request("DeleteOptions must be an object")
        body = decoded
    dry_values = list(q.getall("dryRun", [])) + list(body.get("dryRun") or [])
    check_dry_run(dry_values, "DeleteOptions")
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


def finish(result: store.WriteResult, ctx: RequestContext, *, deleted: bool = False) -> web.Response:
    ctx.mutated = result.mutated
    stored = result.stored.obj
    if not deleted and stored.get("kind") == "Secret" and stored.get("apiVersion") == "v1":
        ctx.warnings.extend(validation.secret_warnings(stored))
    body = result.body if result.body is not None else result.stored.full()
    resp = json_response(body, code=result.code)
    for w in ctx.warnings:  # one header per warning, as the real server sends them
        resp.headers.add("Warning", '299 - "' + header_text(w) + '"')
    return resp
