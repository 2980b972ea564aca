"""CRDs and custom resources as data: what a CRD write and a custom resource write become.

Owns:
- `prepare_definition`: the server-side defaults of a CRD (`names.singular`, `names.listKind`,
  `conversion.strategy: None`) and the validation a real server answers with 422 (name is
  `<plural>.<group>`, scope, versions with exactly one storage version, a schema per version).
- `prepare_object`, `unknown_fields`: custom resource pruning against the version's `openAPIV3Schema`
  (unknown fields dropped unless `x-kubernetes-preserve-unknown-fields`), schema `default`s, and the
  422 of a value of the wrong type, a missing required field or a value outside an enum.
- `resource_types`: the type-table entries (`fleet.sim.kinds.types.ResourceType`) of a CRD's served
  versions, preferred version first, with their merge structures.
- `scale_of`, `get_path`, `set_path`: the `autoscaling/v1` Scale of a custom resource at the CRD's
  scale paths.
Pure functions over plain dicts: nothing here reads or writes a cluster.

Does not: establish, serve or finalize CRDs (the controller in `fleet.sim.controllers.crds`), convert between
versions (all served versions share one storage and no conversion is done), run CEL rules or webhooks,
or build Table output from `additionalPrinterColumns`.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from fleet.sim import status
from fleet.sim.kinds import structure, types

GROUP = "apiextensions.k8s.io"
KIND = "CustomResourceDefinition"
PLURAL = "customresourcedefinitions"

_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def is_definition(rtype: types.ResourceType) -> bool:
    return rtype.group == GROUP and rtype.plural == PLURAL and not rtype.custom


# ----- CRD defaults and validation --------------------------------------------------------------


def prepare_definition(obj: dict[str, Any]) -> dict[str, Any]:
    """Defaults of a CRD write, then its validation (422 naming every bad field)."""
    spec = obj.get("spec")
    if isinstance(spec, dict):
        names = spec.get("names")
        if isinstance(names, dict) and isinstance(names.get("kind"), str) and names["kind"]:
            names.setdefault("singular", names["kind"].lower())
            names.setdefault("listKind", names["kind"] + "List")
        if "conversion" not in spec:
            spec["conversion"] = {"strategy": "None"}
    causes = _definition_causes(obj)
    if causes:
        raise status.invalid(KIND, (obj.get("metadata") or {}).get("name", ""), causes, group=GROUP)
    if not obj.get("status"):
        # A create: the strategy's empty status with the storage version (the controller fills the rest).
        storage = [v["name"] for v in obj["spec"]["versions"] if v.get("storage")]
        obj["status"] = {
            "acceptedNames": {"plural": "", "kind": ""},
            "conditions": None,
            "storedVersions": storage,
        }
    return obj


def _definition_causes(obj: dict[str, Any]) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [status.field_cause("FieldValueRequired", "spec", "Required value")]
    group = spec.get("group")
    raw_names = spec.get("names")
    names: dict[str, Any] = raw_names if isinstance(raw_names, dict) else {}
    plural = names.get("plural")
    name = (obj.get("metadata") or {}).get("name", "")
    if not group:
        causes.append(status.field_cause("FieldValueRequired", "spec.group", "Required value"))
    elif "." not in str(group):
        causes.append(
            status.field_cause(
                "FieldValueInvalid",
                "spec.group",
                f'Invalid value: "{group}": should be a domain with at least one dot',
            )
        )
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if (
        isinstance(group, str)
        and (group == "k8s.io" or group.endswith((".k8s.io", ".kubernetes.io")) or group == "kubernetes.io")
        and "api-approved.kubernetes.io" not in annotations
    ):
        causes.append(
            status.field_cause(
                "FieldValueRequired",
                "metadata.annotations[api-approved.kubernetes.io]",
                'Required value: protected groups must have approval annotation "api-approved.kubernetes.io", '
                "see https://github.com/kubernetes/enhancements/pull/1111",
            )
        )
    if not plural:
        causes.append(status.field_cause("FieldValueRequired", "spec.names.plural", "Required value"))
    if not names.get("kind"):
        causes.append(status.field_cause("FieldValueRequired", "spec.names.kind", "Required value"))
    if group and plural and name != f"{plural}.{group}":
        causes.append(
            status.field_cause(
                "FieldValueInvalid",
                "metadata.name",
                f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
            )
        )
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        causes.append(
            status.field_cause(
                "FieldValueNotSupported" if scope else "FieldValueRequired",
                "spec.scope",
                f'Unsupported value: "{scope}": supported values: "Cluster", "Namespaced"'
                if scope
                else "Required value",
            )
        )
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        causes.append(status.field_cause("FieldValueRequired", "spec.versions", "Required value"))
        return causes
    storage = 0
    seen: set[str] = set()
    for i, version in enumerate(versions):
        where = f"spec.versions[{i}]"
        if not isinstance(version, dict):
            causes.append(status.field_cause("FieldValueInvalid", where, "Invalid value: must be an object"))
            continue
        vname = version.get("name")
        if not vname:
            causes.append(status.field_cause("FieldValueRequired", f"{where}.name", "Required value"))
        elif vname in seen:
            causes.append(
                status.field_cause("FieldValueDuplicate", f"{where}.name", f'Duplicate value: "{vname}"')
            )
        seen.add(str(vname))
        if version.get("storage"):
            storage += 1
        schema = (
            (version.get("schema") or {}).get("openAPIV3Schema")
            if isinstance(version.get("schema"), dict)
            else None
        )
        if not isinstance(schema, dict):
            causes.append(
                status.field_cause(
                    "FieldValueRequired",
                    f"{where}.schema.openAPIV3Schema",
                    "Required value: schemas are required",
                )
            )
        elif schema.get("type") != "object":
            causes.append(
                status.field_cause(
                    "FieldValueInvalid" if "type" in schema else "FieldValueRequired",
                    f"{where}.schema.openAPIV3Schema.type",
                    f'Unsupported value: "{schema.get("type")}": supported values: "object"'
                    if "type" in schema
                    else "Required value: must not be empty at the root",
                )
            )
    if storage != 1:
        causes.append(
            status.field_cause(
                "FieldValueInvalid",
                "spec.versions",
                f"Invalid value: {_go_list(versions)}: must have exactly one version marked as storage version",
            )
        )
    return causes


def _go_list(versions: list[Any]) -> str:
    return "[]apiextensions.CustomResourceDefinitionVersion{...}" if versions else "null"


# ----- custom resources: pruning, defaults, validation ------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def unknown_fields(rtype: types.ResourceType, obj: dict[str, Any], *, prune: bool) -> list[str]:
    """Paths (`spec.bogus`) of fields the CRD schema does not declare; `prune` deletes them in place."""
    if rtype.schema is None:
        return []
    out: list[str] = []
    _unknown(rtype.schema, obj, "", out, prune, root=True)
    return out


def _unknown(schema: Any, value: Any, path: str, out: list[str], prune: bool, *, root: bool = False) -> None:
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        typed_meta = root or bool(schema.get("x-kubernetes-embedded-resource"))
        drop = []
        for key, sub in value.items():
            if key in props:
                _unknown(props[key], sub, _join(path, key), out, prune)
            elif typed_meta and key in ("apiVersion", "kind", "metadata"):
                continue
            elif isinstance(additional, dict):
                _unknown(additional, sub, _join(path, key), out, prune)
            elif preserve or additional is True:
                continue
            else:
                out.append(_join(path, key))
                drop.append(key)
        if prune:
            for key in drop:
                del value[key]
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, sub in enumerate(value):
                _unknown(items, sub, f"{path}[{i}]", out, prune)


def _default(schema: Any, value: Any) -> None:
    """Structural defaulting: a missing (or non-nullable null) property gets its `default`."""
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = schema.get("properties")
        if isinstance(props, dict):
            for key, sub in props.items():
                if not isinstance(sub, dict):
                    continue
                if key in value and value[key] is None and not sub.get("nullable"):
                    del value[key]
                if key not in value and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
            for key, sub in value.items():
                if key in props:
                    _default(props[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for sub in value.values():
                _default(additional, sub)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for sub in value:
                _default(items, sub)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _go_value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return '"' + type(value).__name__ + '"'
    return str(value)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _validate(schema: Any, value: Any, path: str, causes: list[dict[str, str]]) -> None:
    if not isinstance(schema, dict):
        return
    if value is None:
        if not schema.get("nullable") and schema.get("type"):
            causes.append(
                status.field_cause(
                    "FieldValueTypeInvalid",
                    path,
                    f'Invalid value: "null": {path} in body must be of type {schema["type"]}: "null"',
                )
            )
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, int | str) or isinstance(value, bool):
            causes.append(
                status.field_cause(
                    "FieldValueTypeInvalid",
                    path,
                    f"Invalid value: {_go_value(value)}: {path} in body must be of type integer or string",
                )
            )
        return
    stype = schema.get("type")
    if isinstance(stype, str) and stype in _JSON_TYPES:
        ok = isinstance(value, _JSON_TYPES[stype]) and not (
            stype in ("integer", "number") and isinstance(value, bool)
        )
        if stype == "integer" and isinstance(value, float) and value.is_integer():
            ok = True
        if not ok:
            causes.append(
                status.field_cause(
                    "FieldValueTypeInvalid",
                    path,
                    f'Invalid value: "{_type_name(value)}": {path} in body must be of type {stype}: '
                    f'"{_type_name(value)}"',
                )
            )
            return
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        allowed = ", ".join(_go_value(e) for e in enum)
        causes.append(
            status.field_cause(
                "FieldValueNotSupported",
                path,
                f"Unsupported value: {_go_value(value)}: supported values: {allowed}",
            )
        )
    if isinstance(value, dict):
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        for req in schema.get("required") or []:
            if req not in value:
                causes.append(status.field_cause("FieldValueRequired", _join(path, req), "Required value"))
        for key, sub in value.items():
            if key in props:
                _validate(props[key], sub, _join(path, key), causes)
            elif isinstance(schema.get("additionalProperties"), dict):
                _validate(schema["additionalProperties"], sub, _join(path, key), causes)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, sub in enumerate(value):
                _validate(items, sub, f"{path}[{i}]", causes)


def prepare_object(rtype: types.ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """What the server stores of a custom resource write: pruned, defaulted, validated (422)."""
    schema = rtype.schema
    if schema is None:
        return obj
    _unknown(schema, obj, "", [], True, root=True)
    _default(schema, obj)
    causes: list[dict[str, str]] = []
    raw_props = schema.get("properties")
    props: dict[str, Any] = raw_props if isinstance(raw_props, dict) else {}
    for key, sub in obj.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        if key in props:
            _validate(props[key], sub, key, causes)
    for req in schema.get("required") or []:
        if req not in obj and req not in ("apiVersion", "kind", "metadata"):
            causes.append(status.field_cause("FieldValueRequired", req, "Required value"))
    if causes:
        name = (obj.get("metadata") or {}).get("name", "")
        raise status.invalid(rtype.kind, name, causes, group=rtype.group)
    return obj


# ----- the type table entries of a CRD ----------------------------------------------------------


def _version_priority(name: str) -> tuple[int, int, int, str]:
    """Kubernetes version order: GA before beta before alpha, higher numbers first, others last."""
    m = _VERSION_RE.match(name)
    if m is None:
        return (3, 0, 0, name)
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0), name)


def resource_types(obj: dict[str, Any]) -> list[types.ResourceType]:
    """The served versions of a (valid) CRD as type-table entries, preferred version first."""
    spec = obj["spec"]
    names = spec["names"]
    group = spec["group"]
    out = []
    for version in sorted(
        (v for v in spec["versions"] if v.get("served")), key=lambda v: _version_priority(v["name"])
    ):
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        subs = version.get("subresources") or {}
        subresources = tuple(s for s in ("status", "scale") if isinstance(subs, dict) and s in subs)
        scale = subs.get("scale") if isinstance(subs, dict) else None
        scale_paths = (
            (
                str(scale.get("specReplicasPath") or ".spec.replicas"),
                str(scale.get("statusReplicasPath") or ".status.replicas"),
                str(scale.get("labelSelectorPath") or ""),
            )
            if isinstance(scale, dict)
            else None
        )
        selectable: dict[str, tuple[str, ...]] = {}
        for sel in version.get("selectableFields") or []:
            path = str(sel.get("jsonPath", "")).lstrip(".")
            if path:
                selectable[path] = tuple(path.split("."))
        rtype = types.ResourceType(
            group=group,
            version=version["name"],
            kind=names["kind"],
            plural=names["plural"],
            singular=names.get("singular") or names["kind"].lower(),
            namespaced=spec["scope"] == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=subresources,
            list_kind=names.get("listKind") or names["kind"] + "List",
            generation=True,
            selectable_fields=selectable,
            custom=True,
            schema=schema,
            scale_paths=scale_paths,
        )
        rtype._structure = structure.for_schema(
            schema,
            status_subresource="status" in subresources,
            name=f"{group}/{version['name']}, Kind={names['kind']}",
        )
        out.append(rtype)
    return out


# ----- the scale subresource ----------------------------------------------------------------------


def _split(path: str) -> list[str]:
    return [p for p in path.split(".") if p]


def get_path(obj: dict[str, Any], path: str) -> Any:
    node: Any = obj
    for part in _split(path):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = _split(path)
    node = obj
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def scale_of(obj: dict[str, Any], paths: tuple[str, str, str]) -> dict[str, Any]:
    """The `autoscaling/v1` Scale of a custom resource, read at the CRD's scale paths."""
    spec_path, status_path, selector_path = paths
    meta = obj["metadata"]
    replicas = get_path(obj, spec_path)
    current = get_path(obj, status_path) if status_path else None
    selector = get_path(obj, selector_path) if selector_path else None
    spec: dict[str, Any] = {}
    if isinstance(replicas, int) and replicas:
        spec["replicas"] = replicas
    st: dict[str, Any] = {"replicas": current if isinstance(current, int) else 0}
    if isinstance(selector, str) and selector:
        st["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": spec,
        "status": st,
    }
