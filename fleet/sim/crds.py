"""CustomResourceDefinitions (`apiextensions.k8s.io/v1`) served by a simulated cluster.

Owns:
- `prepare_definition`: the server-side defaults of a CRD (`names.singular`, `names.listKind`,
  `conversion.strategy: None`) and the validation a real server answers with 422 (name is
  `<plural>.<group>`, scope, versions with exactly one storage version, a schema per version).
- `prepare_object`, `unknown_fields`: custom resource pruning against the version's `openAPIV3Schema`
  (unknown fields dropped unless `x-kubernetes-preserve-unknown-fields`), schema `default`s, and the
  422 of a value of the wrong type, a missing required field or a value outside an enum.
- `install(cluster)` and `CrdController`: the establishing and finalizing controllers. A created or
  changed CRD gets `acceptedNames`, `storedVersions` and the `NamesAccepted` and `Established`
  conditions (after `Settings.crd_establish_delay`), and from that moment its kinds are in the
  cluster's type registry, so discovery (legacy and aggregated, whose ETag changes) and `/openapi/v3`
  list them and the custom resource URLs answer; before it they are 404, as on a real server. A
  deleted CRD gets the finalizer `customresourcecleanup.apiextensions.k8s.io` and the `Terminating`
  condition; creates of its resources are then 403; its resources are deleted, its watches closed, its
  kinds leave the registry, and the finalizer is removed so the CRD goes.

Does not: convert between versions (all served versions share one storage and no conversion is done),
run CEL rules or webhooks, or build Table output from `additionalPrinterColumns`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from fleet.sim import status, store, structure, types, writes

GROUP = "apiextensions.k8s.io"
KIND = "CustomResourceDefinition"
PLURAL = "customresourcedefinitions"
FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
MANAGER = "kube-apiserver"

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
        obj["status"] = {"acceptedNames": {"plural": "", "kind": ""}, "storedVersions": storage}
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


# ----- the controllers --------------------------------------------------------------------------


def _condition_true(obj: dict[str, Any], ctype: str) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return bool(cond.get("status") == "True")
    return False


@dataclass
class _Served:
    uid: str
    signature: bytes
    rtypes: list[types.ResourceType] = field(default_factory=list)


class CrdController:
    """Establishes, serves and finalizes the CRDs of one cluster; reacts to events, no polling."""

    def __init__(self, cluster: store.Cluster) -> None:
        self.cluster = cluster
        self.served: dict[str, _Served] = {}  # CRD name -> what is in the registry for it
        self.terminating: dict[tuple[str, str], str] = {}  # (group, plural) -> CRD name being deleted
        self._terminating_kinds: dict[tuple[str, str], str] = {}  # (group, kind) -> CRD name
        self._pending: set[str] = set()
        self._timers: dict[str, Any] = {}

    # hooks

    def on_event(self, cluster: store.Cluster, event: store.Event) -> None:
        obj = event.new.obj if event.new is not None else None
        if obj is None:
            return
        api_version = obj.get("apiVersion", "")
        if obj.get("kind") == KIND and api_version == f"{GROUP}/v1":
            self._queue(event.name)
        elif event.type == store.DELETED and self._terminating_kinds:
            group = api_version.rpartition("/")[0]
            crd = self._terminating_kinds.get((group, obj.get("kind", "")))
            if crd is not None:
                self._queue(crd)

    def admit(self, rtype: types.ResourceType, namespace: str, name: str) -> None:
        if rtype.custom and rtype.key in self.terminating:
            raise status.forbidden(
                rtype, name, "create not allowed while custom resource definition is terminating"
            )

    def deletion_finalizers(self, rtype: types.ResourceType, stored: store.Stored) -> list[str]:
        return [FINALIZER] if is_definition(rtype) else []

    # work

    def _queue(self, name: str) -> None:
        if name in self._pending:
            return
        self._pending.add(name)
        writes.run_soon(self._sync, name)

    def _crd_type(self) -> types.ResourceType:
        rtype = self.cluster.registry.get(GROUP, "v1", PLURAL)
        assert rtype is not None
        return rtype

    def _sync(self, name: str) -> None:
        self._pending.discard(name)
        crd_type = self._crd_type()
        stored = self.cluster.find(crd_type, "", name)
        if stored is None:
            self._unserve(name)
            return
        obj = stored.obj
        if obj["metadata"].get("deletionTimestamp"):
            self._terminate(crd_type, stored)
            return
        served = self.served.get(name)
        signature = orjson.dumps(obj.get("spec"), option=orjson.OPT_SORT_KEYS)
        uid = obj["metadata"].get("uid", "")
        if served is not None and served.uid == uid and served.signature == signature:
            return
        delay = self.cluster.settings.crd_establish_delay
        if served is None and delay > 0 and not _condition_true(obj, "Established"):
            # Names are accepted at once; the kinds are served only once Established.
            writes.write_status(
                self.cluster, crd_type, stored, self._status(obj, established=False), manager=MANAGER
            )
            if name not in self._timers:
                self._timers[name] = writes.run_later(delay, self._establish_later, name, uid)
            return
        self._establish(crd_type, stored, signature)

    def _establish_later(self, name: str, uid: str) -> None:
        self._timers.pop(name, None)
        crd_type = self._crd_type()
        stored = self.cluster.find(crd_type, "", name)
        if stored is None or stored.obj["metadata"].get("uid") != uid:
            return
        if stored.obj["metadata"].get("deletionTimestamp"):
            self._terminate(crd_type, stored)
            return
        signature = orjson.dumps(stored.obj.get("spec"), option=orjson.OPT_SORT_KEYS)
        self._establish(crd_type, stored, signature)

    def _establish(self, crd_type: types.ResourceType, stored: store.Stored, signature: bytes) -> None:
        obj = stored.obj
        name = obj["metadata"]["name"]
        registry = self.cluster.registry
        new_types = [
            t
            for t in resource_types(obj)
            if (existing := registry.get(t.group, t.version, t.plural)) is None or existing.custom
        ]  # never shadow a built-in kind
        self._unregister(name, keep_watches={t.key for t in new_types})
        for rtype in new_types:
            registry.add(rtype)
        if new_types:
            ts = self.cluster.types.get(new_types[0].key)
            if ts is not None:
                ts.rtype = new_types[0]  # a recreated CRD: the stored state serves the new entry
        self.served[name] = _Served(obj["metadata"].get("uid", ""), signature, new_types)
        writes.write_status(
            self.cluster, crd_type, stored, self._status(obj, established=True), manager=MANAGER
        )

    def _status(self, obj: dict[str, Any], *, established: bool) -> dict[str, Any]:
        spec = obj["spec"]
        names = spec["names"]
        old = obj.get("status") or {}
        now = store.now()
        conditions = list(old.get("conditions") or [])
        conditions = writes.set_condition(
            conditions, "NamesAccepted", "True", "NoConflicts", "no conflicts found", now=now
        )
        if established:
            conditions = writes.set_condition(
                conditions,
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
                now=now,
            )
        accepted: dict[str, Any] = {"plural": names["plural"], "singular": names.get("singular", "")}
        if names.get("shortNames"):
            accepted["shortNames"] = list(names["shortNames"])
        accepted["kind"] = names["kind"]
        accepted["listKind"] = names.get("listKind", names["kind"] + "List")
        if names.get("categories"):
            accepted["categories"] = list(names["categories"])
        stored_versions = list(old.get("storedVersions") or [])
        for version in spec["versions"]:
            if version.get("storage") and version["name"] not in stored_versions:
                stored_versions.append(version["name"])
        return {"conditions": conditions, "acceptedNames": accepted, "storedVersions": stored_versions}

    def _unregister(self, name: str, *, keep_watches: set[tuple[str, str]] | None = None) -> None:
        """Take a CRD's entries out of the registry and close their watches (except `keep_watches`)."""
        served = self.served.get(name)
        if served is None:
            return
        registry = self.cluster.registry
        for rtype in served.rtypes:
            if registry.get(rtype.group, rtype.version, rtype.plural) is rtype:
                registry.remove(rtype.group, rtype.version, rtype.plural)
            ts = self.cluster.types.get(rtype.key)
            if ts is not None and rtype.key not in (keep_watches or set()):
                for watcher in list(ts.watchers):
                    self.cluster.unwatch(watcher)

    def _unserve(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        self._unregister(name)
        self.served.pop(name, None)
        for key, crd in list(self.terminating.items()):
            if crd == name:
                del self.terminating[key]
        for gk, crd in list(self._terminating_kinds.items()):
            if crd == name:
                del self._terminating_kinds[gk]

    def _terminate(self, crd_type: types.ResourceType, stored: store.Stored) -> None:
        obj = stored.obj
        name = obj["metadata"]["name"]
        if FINALIZER not in (obj["metadata"].get("finalizers") or []):
            return
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        key = (spec.get("group", ""), names.get("plural", ""))
        self.terminating[key] = name
        self._terminating_kinds[(key[0], names.get("kind", ""))] = name
        if not _condition_true(obj, "Terminating"):
            new_status = dict(obj.get("status") or {})
            new_status["conditions"] = writes.set_condition(
                list(new_status.get("conditions") or []),
                "Terminating",
                "True",
                "InstanceDeletionInProgress",
                "CustomResource deletion is in progress",
                now=store.now(),
            )
            writes.write_status(self.cluster, crd_type, stored, new_status, manager=MANAGER)
            stored = self.cluster.find(crd_type, "", name) or stored
        left = 0
        ts = self.cluster.types.get(key)
        if ts is not None:
            for skey in list(ts.sorted_keys()):
                item = ts.objects.get(skey)
                if item is None:
                    continue
                meta = item.obj["metadata"]
                if not meta.get("deletionTimestamp"):
                    try:
                        self.cluster.delete(ts.rtype, meta.get("namespace", ""), meta["name"])
                    except status.ApiError:
                        pass
                if skey in ts.objects:
                    left += 1
        if left:
            return  # the DELETED events of the rest bring us back here
        self._unserve(name)

        def drop(meta: dict[str, Any]) -> None:
            meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
            if not meta["finalizers"]:
                del meta["finalizers"]

        writes.update_metadata(self.cluster, crd_type, stored, drop, manager=MANAGER)


def install(cluster: store.Cluster) -> CrdController:
    """Attach the CRD controllers to a cluster (hooks on its events; nothing runs while idle)."""
    controller = CrdController(cluster)
    cluster.hooks.append(controller.on_event)
    cluster.create_admission.append(controller.admit)
    cluster.deletion_finalizers.append(controller.deletion_finalizers)
    return controller


# ----- OpenAPI v2 -------------------------------------------------------------------------------

OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def openapi_v2(accept: str) -> tuple[bytes, str]:
    """`/openapi/v2` without definitions: the body and its Content-Type.

    kubectl validates an object whose kind is neither in `/openapi/v3` nor defined by a CRD (a custom
    resource applied in the same file as its CRD) against the OpenAPI v2 document, which it asks for
    as protobuf. A document with no definitions makes it skip that validation, as a real server's does
    for an unknown kind, so the object then fails where it does on a real cluster: "no matches for
    kind ... ensure CRDs are installed first". An empty protobuf message is a valid, empty
    `openapi_v2.Document`; JSON clients get the equivalent JSON.
    """
    if OPENAPI_V2_PROTOBUF in accept and "application/json" not in accept.split(OPENAPI_V2_PROTOBUF)[0]:
        return b"", "application/octet-stream"  # what the real server labels it (Go cannot parse "@")
    doc = {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.35.2"},
        "paths": {},
        "definitions": {},
    }
    return orjson.dumps(doc), "application/json"
