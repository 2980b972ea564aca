"""Decoding and validation checks for built-in kinds, with the messages the real server prints.

Owns: walking an object against its kubernetes-validate schema and returning the paths of fields the
schema does not declare, in the form the real server prints (`spec.template.spec.containers[0].bogus`),
and pruning them (typed decoding drops unknown fields of built-in kinds); the Go decoder's type errors,
including the base64 decoding of `[]byte` fields (schema `format: byte`, e.g. Secret `data`) with Go's
`encoding/base64` error offsets (an object is walked only below schemas that can hold such a field); metadata label/annotation checks; and Secret validation
(pkg/apis/core/validation `ValidateSecret`/`ValidateSecretUpdate`). Pure functions. No message built
here ever contains a Secret value. Does not: handle custom resources (their pruning follows the CRD
schema; see the CRD code), or decide HTTP status codes for patches and applies (see `fleet.sim.rest.patches`).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from fleet.sim.kinds import schemas as schemas_mod


def unknown_fields(
    obj: dict[str, Any], *, group: str, version: str, kind: str, prune: bool = False
) -> list[str]:
    """Paths of undeclared fields in `obj` (a built-in kind); with `prune`, also delete them in place."""
    loaded = schemas_mod.load()
    root = loaded.for_kind(group, version, kind)
    if root is None:
        return []
    out: list[str] = []
    _walk(loaded, root, obj, "", out, prune)
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(
    loaded: schemas_mod.Schemas, schema: dict[str, Any], value: Any, path: str, out: list[str], prune: bool
) -> None:
    node = loaded.resolve(schema)
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            unknown = []
            for key, sub in value.items():
                if key in props:
                    if isinstance(sub, dict | list):  # below a scalar there is nothing to find
                        _walk(loaded, props[key], sub, _join(path, key), out, prune)
                else:
                    out.append(_join(path, key))
                    unknown.append(key)
            if prune:
                for key in unknown:
                    del value[key]
            return
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, sub in value.items():
                if isinstance(sub, dict | list):
                    _walk(loaded, extra, sub, _join(path, key), out, prune)
    elif isinstance(value, list):
        items = node.get("items")
        if isinstance(items, dict):
            for i, sub in enumerate(value):
                if isinstance(sub, dict | list):
                    _walk(loaded, items, sub, f"{path}[{i}]", out, prune)


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object", list: "array"}
_GO = {"boolean": "bool", "string": "string", "object": "object", "array": "array", "number": "float64"}


def _allowed(node: dict[str, Any]) -> list[str] | None:
    declared = node.get("type")
    if declared is None:
        return None
    names = declared if isinstance(declared, list) else [declared]
    return [t for t in names if t != "null"] or None


# What `_fits` reads of a resolved schema node, by id of the node (the definitions live as long as the
# process): its `oneOf` branches, whether it is int-or-string, its allowed types.
_FIT_RULES: dict[int, tuple[list[Any] | None, bool, list[str] | None]] = {}


def _fit_rules(node: dict[str, Any]) -> tuple[list[Any] | None, bool, list[str] | None]:
    rules = _FIT_RULES.get(id(node))
    if rules is None:
        one_of = node.get("oneOf")
        rules = _FIT_RULES[id(node)] = (
            one_of if isinstance(one_of, list) else None,
            bool(node.get("x-kubernetes-int-or-string")),
            _allowed(node),
        )
    return rules


def _fits(loaded: schemas_mod.Schemas, node: dict[str, Any], value: Any) -> bool:
    if value is None:
        return True  # JSON null decodes to the zero value
    one_of, int_or_string, allowed = _fit_rules(node)
    if one_of is not None:
        return any(_fits(loaded, loaded.resolve(branch), value) for branch in one_of)
    if int_or_string:
        return isinstance(value, int | str) and not isinstance(value, bool)
    if allowed is None:
        return True
    have = _JSON_TYPES.get(type(value), "")
    if have == "integer" and "number" in allowed:
        return True
    if have == "number" and "integer" in allowed and float(value).is_integer():
        return True
    return have in allowed


# ---------------------------------------------------------------------------------------------------
# []byte fields: Go's encoding/json decodes them with base64.StdEncoding (padding required, '\r' and
# '\n' skipped, trailing bits not checked) and fails with `illegal base64 data at input byte N`.

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUES = {c: i for i, c in enumerate(_B64_ALPHABET)}
_NEWLINES = (0x0A, 0x0D)
_PAD = 0x3D
_PLAIN_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def go_base64_decode(src: bytes) -> tuple[bytes, int | None]:
    """(decoded bytes, offset of the first illegal byte or None), as Go's `base64.StdEncoding.Decode`.

    A port of the quantum decoder of Go's encoding/base64 so that the error offset is the one the real
    server reports (Python's decoders accept other inputs and report no offsets).
    """
    if _PLAIN_BASE64.fullmatch(src):  # the common case, decoded in C: Go accepts it as well
        return base64.b64decode(src), None
    out = bytearray()
    si, n = 0, len(src)
    while si < n:
        quantum = [0, 0, 0, 0]
        size, j, trailing = 4, 0, None
        while j < 4:
            if si == n:
                if j == 0:
                    return bytes(out), None
                return bytes(out), si - j
            c = src[si]
            si += 1
            value = _B64_VALUES.get(c)
            if value is not None:
                quantum[j] = value
                j += 1
                continue
            if c in _NEWLINES:
                continue
            if c != _PAD or j < 2:
                return bytes(out), si - 1
            if j == 2:  # "==" expected; the first "=" is consumed
                while si < n and src[si] in _NEWLINES:
                    si += 1
                if si == n:
                    return bytes(out), n
                if src[si] != _PAD:
                    return bytes(out), si - 1
                si += 1
            while si < n and src[si] in _NEWLINES:
                si += 1
            if si < n:
                trailing = si
            size = j
            break
        bits = quantum[0] << 18 | quantum[1] << 12 | quantum[2] << 6 | quantum[3]
        out += bytes(((bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF)[: size - 1])
        if trailing is not None:
            return bytes(out), trailing
    return bytes(out), None


def base64_error(value: str) -> int | None:
    """Offset Go reports for a JSON string decoded into []byte, or None when it decodes."""
    return go_base64_decode(value.encode("utf-8", "surrogatepass"))[1]


def canonical_base64(value: str) -> str:
    """The base64 the real server returns for a decodable []byte string (re-encoded from its bytes)."""
    decoded, problem = go_base64_decode(value.encode("utf-8", "surrogatepass"))
    if problem is not None:
        return value
    return base64.b64encode(decoded).decode("ascii")


class _BadBase64:
    """Marks a []byte field whose string is not base64 (carries only the offset, never the value)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


def base64_message(offset: int) -> str:
    return f"illegal base64 data at input byte {offset}"


def byte_field_error(obj: dict[str, Any], *, group: str, version: str, kind: str) -> tuple[str, int] | None:
    """(path, offset) of the first []byte field (document order) whose string is not base64, or None."""
    loaded = schemas_mod.load()
    name = loaded.name_for(group, version, kind)
    if name is None:
        return None
    found = _first_mismatch(loaded, name, loaded.get(name), obj, "", types=False)
    if found is None or not isinstance(found[2], _BadBase64):
        return None
    return found[1], found[2].offset


def type_error(obj: dict[str, Any], *, group: str, version: str, kind: str) -> str | None:
    """The Go decoder's message for the first field whose JSON value the typed decoder rejects, or None.

    Shaped like the real server's 400: ``Deployment in version "v1" cannot be handled as a Deployment: json:
    cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32``; for a
    []byte field that is not base64: ``Secret in version "v1" cannot be handled as a Secret: illegal
    base64 data at input byte 8`` (the offset only, never the value).
    """
    loaded = schemas_mod.load()
    name = loaded.name_for(group, version, kind)
    if name is None:
        return None
    found = _first_mismatch(loaded, name, loaded.get(name), obj, "")
    if found is None:
        return None
    struct, path, value, node = found
    if isinstance(value, _BadBase64):
        return f'{kind} in version "{version}" cannot be handled as a {kind}: {base64_message(value.offset)}'
    allowed = _allowed(node) or ["value"]
    want = allowed[0]
    if want == "integer":
        want = node.get("format") or "int64"
    else:
        want = _GO.get(want, want)
    have = _JSON_TYPES.get(type(value), "value")
    have = "number" if have == "integer" else have
    return (
        f'{kind} in version "{version}" cannot be handled as a {kind}: json: cannot unmarshal {have} into Go '
        f"struct field {struct}.{path} of type {want}"
    )


def _first_mismatch(
    loaded: schemas_mod.Schemas,
    struct: str,
    schema: dict[str, Any],
    value: Any,
    path: str,
    *,
    types: bool = True,
) -> tuple[str, str, Any, dict[str, Any]] | None:
    """(Go struct, path, value, schema node) of the first field the typed decoder rejects, or None."""
    found = _mismatch(loaded, struct, schema, value, types)
    if found is None:
        return None
    name, keys, bad, node = found
    for key in reversed(keys):  # the keys below `path`, innermost first
        path = _join(path, key)
    return name, path, bad, node


_WalkRules = tuple[
    str | None,  # the definition a `$ref` names (the Go struct of the fields below), or None
    dict[str, Any],  # the resolved node
    bool,  # x-kubernetes-preserve-unknown-fields
    bool,  # format: byte
    dict[str, Any] | None,  # properties
    dict[str, Any] | None,  # additionalProperties
    dict[str, Any] | None,  # items
]
_WALK_RULES: dict[int, _WalkRules] = {}


def _walk_rules(loaded: schemas_mod.Schemas, schema: dict[str, Any]) -> _WalkRules:
    """What `_mismatch` reads of a schema node, read once per node (by id: the definitions live as long as
    the process)."""
    rules = _WALK_RULES.get(id(schema))
    if rules is None:
        ref = schema.get("$ref")
        struct = (
            ref[len(schemas_mod.REF_PREFIX) :]
            if isinstance(ref, str) and ref.startswith(schemas_mod.REF_PREFIX)
            else None
        )
        node = loaded.resolve(schema)
        props, extra, items = node.get("properties"), node.get("additionalProperties"), node.get("items")
        rules = _WALK_RULES[id(schema)] = (
            struct,
            node,
            bool(node.get("x-kubernetes-preserve-unknown-fields")),
            node.get("format") == "byte",
            props if isinstance(props, dict) else None,
            extra if isinstance(extra, dict) else None,
            items if isinstance(items, dict) else None,
        )
    return rules


def _mismatch(
    loaded: schemas_mod.Schemas, struct: str, schema: dict[str, Any], value: Any, types: bool
) -> tuple[str, list[str], Any, dict[str, Any]] | None:
    # The path is not built on the way down (most objects have no mismatch): the keys are collected
    # on the way back, innermost first.
    if not types and not _holds_bytes(loaded, schema):
        return None  # only a []byte field can be found below, and no schema there declares one
    ref_struct, node, preserve, is_byte, props, extra, items = _walk_rules(loaded, schema)
    if ref_struct is not None:
        struct = ref_struct
    if preserve:
        return None
    if not _fits(loaded, node, value):
        if types:
            return struct.rsplit(".", 1)[-1], [], value, node
        return None
    if isinstance(value, str) and is_byte:
        offset = base64_error(value)
        if offset is not None:
            return struct.rsplit(".", 1)[-1], [], _BadBase64(offset), node
        return None
    if isinstance(value, dict):
        if props is not None:
            for key, sub in value.items():
                if key in props:
                    found = _mismatch(loaded, struct, props[key], sub, types)
                    if found:
                        found[1].append(key)
                        return found
            return None
        if extra is not None:
            for key, sub in value.items():
                found = _mismatch(loaded, struct, extra, sub, types)
                if found:
                    found[1].append(key)
                    return found
    elif isinstance(value, list):
        if items is not None:
            for sub in value:
                found = _mismatch(loaded, struct, items, sub, types)
                if found:
                    return found
    return None


# Which schema nodes can have a []byte field below them (`format: byte`), so that `byte_field_error` walks
# only those subtrees of an object: by id of the node (the definitions live as long as the process).
_BYTES_BELOW: dict[int, bool] = {}
_BYTE_DEFINITIONS: dict[int, frozenset[str]] = {}


def _inline(node: Any, refs: set[str]) -> bool:
    """Whether `node` or any schema nested in it (not following references) is `format: byte`; the
    definitions it references go into `refs`. Looks at every nested value: a superset of what is walked."""
    found = False
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("format") == "byte":
                found = True
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith(schemas_mod.REF_PREFIX):
                refs.add(ref[len(schemas_mod.REF_PREFIX) :])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _byte_definitions(loaded: schemas_mod.Schemas) -> frozenset[str]:
    """The definitions with a []byte field anywhere below them, references followed (a fixed point)."""
    known = _BYTE_DEFINITIONS.get(id(loaded))
    if known is not None:
        return known
    edges: dict[str, set[str]] = {}
    holding: set[str] = set()
    for name, schema in loaded.definitions.items():
        refs: set[str] = set()
        if _inline(schema, refs):
            holding.add(name)
        edges[name] = refs
    grew = True
    while grew:
        grew = False
        for name, refs in edges.items():
            if name not in holding and not refs.isdisjoint(holding):
                holding.add(name)
                grew = True
    known = _BYTE_DEFINITIONS[id(loaded)] = frozenset(holding)
    return known


def _holds_bytes(loaded: schemas_mod.Schemas, schema: dict[str, Any]) -> bool:
    found = _BYTES_BELOW.get(id(schema))
    if found is None:
        refs: set[str] = set()
        found = _inline(schema, refs) or not refs.isdisjoint(_byte_definitions(loaded))
        _BYTES_BELOW[id(schema)] = found
    return found


class _Seen(dict[str, Any]):
    """A decoded JSON object that remembers which of its keys appeared more than once."""

    duplicates: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> _Seen:
    out = _Seen()
    out.duplicates = []
    for key, value in pairs:
        if key in out and key not in out.duplicates:
            out.duplicates.append(key)
        out[key] = value
    return out


def duplicate_fields(data: bytes) -> list[str]:
    """Paths of JSON object keys that appear twice in `data` (the strict decoder's `duplicate field`)."""
    try:
        doc = json.loads(data, object_pairs_hook=_pairs)
    except ValueError:
        return []
    out: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, _Seen):
            for key, value in node.items():
                if key in node.duplicates:
                    out.append(_join(path, key))
                walk(value, _join(path, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(doc, "")
    return out


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_ANNOTATIONS_BYTES = 256 * 1024


def _key_problem(key: str) -> str | None:
    if key.count("/") > 1:  # IsQualifiedName: neither a name nor prefix/name
        return (
            "a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and "
            "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix "
            "and '/' (e.g. 'example.com/MyName')"
        )
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "prefix part must be non-empty"
        if len(prefix) > 253:
            return "prefix part must be no more than 253 characters"
        if not _DNS_SUBDOMAIN.match(prefix):
            return (
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
                "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            )
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 bytes"
    if not _NAME_PART.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return None


def metadata_causes(obj: dict[str, Any]) -> list[dict[str, str]]:
    """422 causes for invalid label keys and values and annotation keys (apimachinery ValidateLabels etc.)."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    causes: list[dict[str, str]] = []

    def bad(field: str, value: str, detail: str) -> None:
        causes.append(
            {"reason": "FieldValueInvalid", "message": f'Invalid value: "{value}": {detail}', "field": field}
        )

    labels = (meta or {}).get("labels")
    if isinstance(labels, dict):
        for key, value in labels.items():
            problem = _key_problem(str(key))
            if problem:
                bad("metadata.labels", str(key), problem)
            if isinstance(value, str):
                if len(value) > 63:
                    bad("metadata.labels", value, "must be no more than 63 bytes")
                elif not _LABEL_VALUE.match(value):
                    bad(
                        "metadata.labels",
                        value,
                        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
                        "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
                        "'my_value',  or '12345', regex used for validation is "
                        "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                    )
    annotations = (meta or {}).get("annotations")
    if isinstance(annotations, dict):
        size = 0
        for key, value in annotations.items():
            problem = _key_problem(str(key).lower())
            if problem:
                bad("metadata.annotations", str(key), problem)
            size += len(str(key)) + len(str(value))
        if size > MAX_ANNOTATIONS_BYTES:
            causes.append(
                {
                    "reason": "FieldValueTooLong",
                    "message": f"Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes",
                    "field": "metadata.annotations",
                }
            )
    return causes


# ---------------------------------------------------------------------------------------------------
# Secrets (pkg/apis/core/validation ValidateSecret, ValidateSecretUpdate; k8s.io/api/core/v1 constants)

MAX_SECRET_SIZE = 1024 * 1024
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_CONFIG_KEY_MESSAGE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
    "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)
_REDACTED = "<secret contents redacted>"
_IMMUTABLE_SET = "Forbidden: field is immutable when `immutable` is set"


def _go_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def config_key_problems(key: str) -> list[str]:
    """apimachinery IsConfigMapKey: the messages for a key that may not name a Secret/ConfigMap entry."""
    out: list[str] = []
    if len(key) > 253:
        out.append("must be no more than 253 characters")
    if not _CONFIG_KEY.match(key):
        out.append(_CONFIG_KEY_MESSAGE)
    if key == ".":
        out.append("must not be '.'")
    elif key == "..":
        out.append("must not be '..'")
    elif key.startswith(".."):
        out.append("must not start with '..'")
    return out


def _decoded(value: Any) -> bytes:
    if not isinstance(value, str):
        return b""
    return go_base64_decode(value.encode("utf-8", "surrogatepass"))[0]


def _data(obj: dict[str, Any]) -> dict[str, Any]:
    data = obj.get("data")
    return data if isinstance(data, dict) else {}


_GO_JSON_KINDS = {list: "array", str: "string", bool: "bool", int: "number", float: "number"}
_CLOSERS = {"{": "}", "[": "]"}


def _go_char(c: str) -> str:
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    quoted = json.dumps(c, ensure_ascii=False)[1:-1]
    return f"'{quoted}'"


def _innermost(text: str, pos: int) -> str:
    """The innermost open bracket before `pos` (strings skipped), or '' at top level."""
    stack: list[str] = []
    in_string = escaped = False
    for c in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in _CLOSERS:
            stack.append(c)
        elif c in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def go_json_object_error(raw: bytes) -> str | None:
    """Go's `json.Unmarshal(raw, &map[string]interface{}{})` error text, or None when it succeeds.

    Messages follow encoding/json (`unexpected end of JSON input`, `invalid character 'x' looking for
    beginning of value`, `json: cannot unmarshal array into Go value of type map[string]interface {}`).
    The syntax-error context is derived from Python's decoder and matches Go for the common cases.
    """
    text = raw.decode("utf-8", "replace")
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        pos = e.pos
        if pos >= len(text) or e.msg.startswith("Unterminated string"):
            return "unexpected end of JSON input"
        where = {
            "Expecting value": "looking for beginning of value",
            "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
            "Expecting ':' delimiter": "after object key",
            "Extra data": "after top-level value",
        }.get(e.msg)
        if e.msg.startswith("Invalid control character"):
            where = "in string literal"
        elif e.msg.startswith("Invalid \\escape"):
            where, pos = "in string escape code", pos + 1  # Go names the character after the backslash
        elif e.msg.startswith("Invalid \\u"):
            where, pos = "in \\u hexadecimal character escape", pos + 2
            while pos < len(text) and text[pos] in "0123456789abcdefABCDEF":
                pos += 1
            if pos >= len(text):
                return "unexpected end of JSON input"
        elif where is None:
            where = "after object key:value pair" if _innermost(text, pos) == "{" else "after array element"
        return f"invalid character {_go_char(text[pos])} {where}"
    except ValueError:
        first = text.lstrip(" \t\r\n")[:1] or " "
        return f"invalid character {_go_char(first)} looking for beginning of value"
    if doc is None or isinstance(doc, dict):
        return None
    return f"json: cannot unmarshal {_GO_JSON_KINDS.get(type(doc), 'value')} into Go value of type map[string]interface {{}}"


def secret_warnings(obj: dict[str, Any]) -> list[str]:
    """The warnings of a stored `kubernetes.io/tls` Secret whose certificate or key holds no PEM block
    (what Go's `tls.X509KeyPair` says first; other certificate problems are not checked here)."""
    if obj.get("type") != "kubernetes.io/tls" or not isinstance(obj.get("data"), dict):
        return []

    def pem(key: str) -> bool:
        try:
            raw = base64.b64decode(str(obj["data"].get(key) or ""), validate=False)
        except ValueError:
            return False
        return b"-----BEGIN " in raw

    if not pem("tls.crt"):
        return ["tls: failed to find any PEM data in certificate input"]
    if not pem("tls.key"):
        return ["tls: failed to find any PEM data in key input"]
    return []


def secret_causes(obj: dict[str, Any]) -> list[dict[str, str]]:
    """422 causes of ValidateSecret past its metadata checks: data keys, total size, typed-secret rules.

    `obj` is the defaulted v1 Secret (stringData already folded into base64 `data`). Values never
    appear in a message: the real validator prints `<secret contents redacted>` where it names one.
    """
    data = _data(obj)
    causes: list[dict[str, str]] = []
    total = 0
    for key, value in data.items():
        for problem in config_key_problems(str(key)):
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {_go_quote(str(key))}: {problem}",
                    "field": f"data[{key}]",
                }
            )
        total += len(_decoded(value))
    if total > MAX_SECRET_SIZE:
        causes.append(
            {
                "reason": "FieldValueTooLong",
                "message": f"Too long: may not be more than {MAX_SECRET_SIZE} bytes",
                "field": "data",
            }
        )

    def required(field: str) -> None:
        causes.append({"reason": "FieldValueRequired", "message": "Required value", "field": field})

    def json_value(key: str) -> None:
        if key not in data:
            required(f"data[{key}]")
            return
        problem = go_json_object_error(_decoded(data[key]))
        if problem is not None:
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {_go_quote(_REDACTED)}: {problem}",
                    "field": f"data[{key}]",
                }
            )

    kind = obj.get("type") or ""
    if kind == "kubernetes.io/service-account-token":
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        annotations = (meta or {}).get("annotations")
        name = (
            annotations.get("kubernetes.io/service-account.name") if isinstance(annotations, dict) else None
        )
        if not name:
            required("metadata.annotations[kubernetes.io/service-account.name]")
    elif kind == "kubernetes.io/dockercfg":
        json_value(".dockercfg")
    elif kind == "kubernetes.io/dockerconfigjson":
        json_value(".dockerconfigjson")
    elif kind == "kubernetes.io/basic-auth":
        if "username" not in data and "password" not in data:
            required("data[username]")
            required("data[password]")
    elif kind == "kubernetes.io/ssh-auth":
        if not _decoded(data.get("ssh-privatekey")):
            required("data[ssh-privatekey]")
    elif kind == "kubernetes.io/tls":
        if "tls.crt" not in data:
            required("data[tls.crt]")
        if "tls.key" not in data:
            required("data[tls.key]")
    return causes


def secret_update_causes(new: dict[str, Any], old: dict[str, Any]) -> list[dict[str, str]]:
    """422 causes ValidateSecretUpdate adds before ValidateSecret: `type` and an `immutable` Secret."""
    causes: list[dict[str, str]] = []
    new_type, old_type = new.get("type") or "", old.get("type") or ""
    if new_type != old_type:
        causes.append(
            {
                "reason": "FieldValueInvalid",
                "message": f"Invalid value: {_go_quote(str(new_type))}: field is immutable",
                "field": "type",
            }
        )
    if old.get("immutable") is True:
        if new.get("immutable") is not True:
            causes.append({"reason": "FieldValueForbidden", "message": _IMMUTABLE_SET, "field": "immutable"})
        old_data = {k: _decoded(v) for k, v in _data(old).items()}
        new_data = {k: _decoded(v) for k, v in _data(new).items()}
        if old_data != new_data:
            causes.append({"reason": "FieldValueForbidden", "message": _IMMUTABLE_SET, "field": "data"})
    return causes
