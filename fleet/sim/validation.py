"""Unknown-field detection for built-in kinds (the `fieldValidation` behaviour of typed decoding).

Owns: walking an object against its kubernetes-validate schema and returning the paths of fields the
schema does not declare, in the form the real server prints (`spec.template.spec.containers[0].bogus`),
and pruning them (typed decoding drops unknown fields of built-in kinds). Pure functions. Does not:
validate values, or handle custom resources (their pruning follows the CRD schema; see the CRD code).
"""

from __future__ import annotations

import re
from typing import Any

from fleet.sim import schemas as schemas_mod


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
                _walk(loaded, extra, sub, _join(path, key), out, prune)
    elif isinstance(value, list):
        items = node.get("items")
        if isinstance(items, dict):
            for i, sub in enumerate(value):
                _walk(loaded, items, sub, f"{path}[{i}]", out, prune)


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object", list: "array"}
_GO = {"boolean": "bool", "string": "string", "object": "object", "array": "array", "number": "float64"}


def _allowed(node: dict[str, Any]) -> list[str] | None:
    declared = node.get("type")
    if declared is None:
        return None
    names = declared if isinstance(declared, list) else [declared]
    return [t for t in names if t != "null"] or None


def _fits(loaded: schemas_mod.Schemas, node: dict[str, Any], value: Any) -> bool:
    if value is None:
        return True  # JSON null decodes to the zero value
    if isinstance(node.get("oneOf"), list):
        return any(_fits(loaded, loaded.resolve(branch), value) for branch in node["oneOf"])
    if node.get("x-kubernetes-int-or-string"):
        return isinstance(value, int | str) and not isinstance(value, bool)
    allowed = _allowed(node)
    if allowed is None:
        return True
    have = _JSON_TYPES.get(type(value), "")
    if have == "integer" and "number" in allowed:
        return True
    if have == "number" and "integer" in allowed and float(value).is_integer():
        return True
    return have in allowed


def type_error(obj: dict[str, Any], *, group: str, version: str, kind: str) -> str | None:
    """The Go decoder's message for the first field whose JSON type the schema does not allow, or None.

    Shaped like the real server's 400: ``Deployment in version "v1" cannot be handled as a Deployment: json:
    cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32``.
    """
    loaded = schemas_mod.load()
    name = loaded.name_for(group, version, kind)
    if name is None:
        return None
    found = _first_mismatch(loaded, name, loaded.get(name), obj, "")
    if found is None:
        return None
    struct, path, value, node = found
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
    loaded: schemas_mod.Schemas, struct: str, schema: dict[str, Any], value: Any, path: str
) -> tuple[str, str, Any, dict[str, Any]] | None:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(schemas_mod.REF_PREFIX):
        struct = ref[len(schemas_mod.REF_PREFIX) :]
    node = loaded.resolve(schema)
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return None
    if not _fits(loaded, node, value):
        return struct.rsplit(".", 1)[-1], path, value, node
    if isinstance(value, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            for key, sub in value.items():
                if key in props:
                    found = _first_mismatch(loaded, struct, props[key], sub, _join(path, key))
                    if found:
                        return found
            return None
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, sub in value.items():
                found = _first_mismatch(loaded, struct, extra, sub, _join(path, key))
                if found:
                    return found
    elif isinstance(value, list):
        items = node.get("items")
        if isinstance(items, dict):
            for sub in value:
                found = _first_mismatch(loaded, struct, items, sub, path)
                if found:
                    return found
    return None


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
    import json

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
        return "name part must be no more than 63 characters"
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
                    bad("metadata.labels", value, "must be no more than 63 characters")
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
                    "message": f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes",
                    "field": "metadata.annotations",
                }
            )
    return causes
