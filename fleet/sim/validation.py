"""Unknown-field detection for built-in kinds (the `fieldValidation` behaviour of typed decoding).

Owns: walking an object against its kubernetes-validate schema and returning the paths of fields the
schema does not declare, in the form the real server prints (`spec.template.spec.containers[0].bogus`),
and pruning them (typed decoding drops unknown fields of built-in kinds). Pure functions. Does not:
validate values, or handle custom resources (their pruning follows the CRD schema; see the CRD code).
"""

from __future__ import annotations

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
