"""The merge-relevant shape of an object type, compiled from its schema.

Owns: turning a JSON schema (kubernetes-validate's built-in definitions, or a CRD's `openAPIV3Schema`)
into a small tree of `Node`s that answers, at each path, what structured merge needs to know: a struct
(known fields; an unknown field is an error unless unknown fields are preserved), a map (granular or
atomic), a list (associative with keys, a set, or atomic), a scalar, or untyped ("deduced": maps
granular, lists atomic). It also keeps the strategic-merge-patch hints (`x-kubernetes-patch-merge-key`,
`x-kubernetes-patch-strategy`) per field. Compiled nodes are cached per definition (so per kind) for the
life of the process and shared by every simulated cluster; treat them as read-only.

Does not: merge, diff or patch anything (`fleet.sim.merging`), validate values beyond the scalar type,
default or prune (`fleet.sim.kinds.defaults` and the server).
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any

from fleet.sim.kinds import schemas

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"

# Key fields of list-maps that the real OpenAPI documents with a default (kubernetes-validate drops
# `default`): SMD fills a missing key from it, so `ports: [{containerPort: 80}]` is keyed with TCP.
_BUILTIN_KEY_DEFAULTS = {"protocol": "TCP"}

# Definitions that are opaque JSON on the wire (no properties): treated as untyped (deduced).
_SCALAR_TYPES = frozenset({"string", "integer", "number", "boolean"})


class Shape(enum.StrEnum):
    STRUCT = "struct"
    MAP = "map"
    LIST = "list"
    SCALAR = "scalar"
    UNTYPED = "untyped"


class ListType(enum.StrEnum):
    ATOMIC = "atomic"
    SET = "set"
    MAP = "map"


class Node:
    """One position in a schema. Fields not meaningful for a shape keep their defaults."""

    __slots__ = (
        "atomic",
        "elem",
        "fields",
        "format",
        "key_defaults",
        "keys",
        "list_type",
        "patch",
        "scalar_types",
        "shape",
    )

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        # STRUCT: declared fields. MAP/LIST: `elem` is the value/item node. STRUCT with preserved unknown
        # fields: `elem` is the untyped node used for undeclared fields.
        self.fields: dict[str, Node] = {}
        self.elem: Node | None = None
        self.atomic = False
        self.list_type = ListType.ATOMIC
        self.keys: tuple[str, ...] = ()
        self.key_defaults: dict[str, Any] = {}
        # Strategic merge patch hints per declared field: name -> (merge key, strategy).
        self.patch: dict[str, tuple[str, str]] = {}
        # SCALAR: allowed JSON types ("string", "integer", "number", "boolean"); None = anything.
        self.scalar_types: frozenset[str] | None = None
        # SCALAR: "quantity" for resource.Quantity, "int-or-string", else "".
        self.format = ""

    def child(self, name: str) -> Node | None:
        """The node of field/key `name` of a struct or map; None for an undeclared struct field."""
        if self.shape is Shape.STRUCT:
            node = self.fields.get(name)
            return node if node is not None else self.elem
        if self.shape is Shape.MAP:
            return self.elem
        if self.shape is Shape.UNTYPED:
            return self
        return None

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        extra = ""
        if self.shape is Shape.LIST:
            extra = f" {self.list_type}{list(self.keys) if self.keys else ''}"
        elif self.shape is Shape.STRUCT:
            extra = f" fields={sorted(self.fields)}"
        return f"<Node {self.shape}{' atomic' if self.atomic else ''}{extra}>"


UNTYPED = Node(Shape.UNTYPED)
ANY_SCALAR = Node(Shape.SCALAR)


@dataclass(frozen=True, eq=False)
class Structure:
    """The compiled shape of one object type.

    `status_subresource`: the type has a `/status` subresource, so writes to the main resource reset
    `.status` and writes to `/status` reset everything else. `strategic`: strategic merge patch is
    supported (built-in types only; custom resources answer 415).
    """

    root: Node
    name: str
    status_subresource: bool
    strategic: bool

    def at(self, *path: str) -> Node | None:
        """The node at a path of field names/map keys (list items are entered with ``"[]"``)."""
        node: Node | None = self.root
        for part in path:
            if node is None:
                return None
            if part == "[]":
                node = (
                    node.elem if node.shape is Shape.LIST else (node if node.shape is Shape.UNTYPED else None)
                )
            else:
                node = node.child(part)
        return node


def _types_of(schema: dict[str, Any]) -> set[str]:
    t = schema.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str) and x != "null"}
    return set()


class _Compiler:
    """Compiles one schema family; nodes of `$ref` definitions are memoised (cycles allowed)."""

    def __init__(self, defs: schemas.Schemas | None, *, crd: bool) -> None:
        self.defs = defs
        self.crd = crd
        self.by_ref: dict[str, Node] = {}

    def ref(self, name: str) -> Node:
        node = self.by_ref.get(name)
        if node is not None:
            return node
        assert self.defs is not None
        schema = self.defs.get(name)
        node = Node(Shape.UNTYPED)
        self.by_ref[name] = node  # placeholder first: recursive types refer back to it
        built = self.compile(schema)
        for slot in Node.__slots__:
            setattr(node, slot, getattr(built, slot))
        if name == QUANTITY:
            node.format = "quantity"
        elif name == INT_OR_STRING:
            node.format = "int-or-string"
        return node

    def compile(self, schema: dict[str, Any]) -> Node:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(schemas.REF_PREFIX) and self.defs is not None:
            base = self.ref(ref[len(schemas.REF_PREFIX) :])
            atomic = schema.get("x-kubernetes-map-type") == "atomic"
            if atomic and not base.atomic:
                clone = Node(base.shape)
                for slot in Node.__slots__:
                    setattr(clone, slot, getattr(base, slot))
                clone.atomic = True
                return clone
            return base
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
            merged = {**all_of[0], **{k: v for k, v in schema.items() if k != "allOf"}}
            return self.compile(merged)
        if schema.get("x-kubernetes-int-or-string"):
            node = Node(Shape.SCALAR)
            node.scalar_types = frozenset({"string", "integer"})
            node.format = "int-or-string"
            return node
        if schema.get("x-kubernetes-embedded-resource"):
            return self.embedded(schema)
        one_of = schema.get("oneOf") or schema.get("anyOf")
        types = _types_of(schema)
        if not types and isinstance(one_of, list):
            alt: set[str] = set()
            for option in one_of:
                if isinstance(option, dict):
                    alt |= _types_of(option)
            if alt and alt <= _SCALAR_TYPES:
                node = Node(Shape.SCALAR)
                node.scalar_types = frozenset(alt)
                return node
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        if "array" in types or "items" in schema:
            return self.array(schema)
        if isinstance(props, dict) and props:
            node = Node(Shape.STRUCT)
            for name, sub in props.items():
                if not isinstance(sub, dict):
                    continue
                node.fields[name] = self.compile(sub)
                key = sub.get("x-kubernetes-patch-merge-key")
                strategy = sub.get("x-kubernetes-patch-strategy")
                if key or strategy:
                    node.patch[name] = (str(key or ""), str(strategy or ""))
            node.atomic = schema.get("x-kubernetes-map-type") == "atomic"
            if preserve:
                node.elem = UNTYPED
            return node
        if isinstance(additional, dict):
            node = Node(Shape.MAP)
            node.elem = self.compile(additional)
            node.atomic = schema.get("x-kubernetes-map-type") == "atomic"
            return node
        if "object" in types or additional is True:
            if self.crd and not preserve and additional is not True:
                # A structural schema's object without properties holds nothing (unknown fields are
                # not declared); `status: {type: object}` is the usual example.
                node = Node(Shape.STRUCT)
                node.atomic = schema.get("x-kubernetes-map-type") == "atomic"
                return node
            if schema.get("x-kubernetes-map-type") == "atomic":
                node = Node(Shape.MAP)
                node.elem = UNTYPED
                node.atomic = True
                return node
            return UNTYPED
        if types and types <= _SCALAR_TYPES:
            node = Node(Shape.SCALAR)
            node.scalar_types = frozenset(types)
            return node
        if preserve or not types:
            return UNTYPED
        return ANY_SCALAR

    def array(self, schema: dict[str, Any]) -> Node:
        node = Node(Shape.LIST)
        items = schema.get("items")
        node.elem = self.compile(items) if isinstance(items, dict) else UNTYPED
        list_type = schema.get("x-kubernetes-list-type") or "atomic"
        node.list_type = ListType(list_type) if list_type in ("atomic", "set", "map") else ListType.ATOMIC
        if node.list_type is ListType.MAP:
            node.keys = tuple(str(k) for k in schema.get("x-kubernetes-list-map-keys") or ())
            if not node.keys:
                node.list_type = ListType.ATOMIC
            item = node.elem
            for key in node.keys:
                field = item.fields.get(key) if item.shape is Shape.STRUCT else None
                default = None
                if isinstance(items, dict) and self.crd:
                    raw = (items.get("properties") or {}).get(key) or {}
                    default = raw.get("default") if isinstance(raw, dict) else None
                if default is None and not self.crd and field is not None:
                    default = _BUILTIN_KEY_DEFAULTS.get(key)
                if default is not None:
                    node.key_defaults[key] = default
        node.atomic = node.list_type is ListType.ATOMIC
        return node

    def embedded(self, schema: dict[str, Any]) -> Node:
        rest = {k: v for k, v in schema.items() if k != "x-kubernetes-embedded-resource"}
        node = self.compile(rest)
        if node.shape is not Shape.STRUCT:
            fresh = Node(Shape.STRUCT)
            fresh.elem = UNTYPED if node.shape is Shape.UNTYPED else None
            node = fresh
        return _with_type_meta(node)


def _with_type_meta(node: Node) -> Node:
    out = Node(Shape.STRUCT)
    for slot in Node.__slots__:
        setattr(out, slot, getattr(node, slot))
    out.fields = dict(node.fields)
    for name in ("apiVersion", "kind"):
        if name not in out.fields or out.fields[name].shape is not Shape.SCALAR:
            scalar = Node(Shape.SCALAR)
            scalar.scalar_types = frozenset({"string"})
            out.fields[name] = scalar
    # A CRD schema may only restrict metadata.name/generateName; the server always merges metadata as
    # ObjectMeta (labels, annotations, finalizers, ownerReferences...).
    out.fields["metadata"] = _object_meta()
    return out


@functools.cache
def _builtin_compiler() -> _Compiler:
    return _Compiler(schemas.load(), crd=False)


def _object_meta() -> Node:
    return _builtin_compiler().ref(OBJECT_META)


class UnknownKind(LookupError):
    """No built-in schema for a group/version/kind."""


@functools.cache
def builtin(group: str, version: str, kind: str) -> Structure:
    """The structure of a built-in kind from kubernetes-validate (cached per kind)."""
    defs = schemas.load()
    name = defs.name_for(group, version, kind)
    if name is None:
        gv = f"{group}/{version}" if group else version
        raise UnknownKind(f"{gv}, Kind={kind}: no built-in schema")
    root = _builtin_compiler().ref(name)
    gv = f"{group}/{version}" if group else version
    return Structure(
        root=root,
        name=f"{gv}, Kind={kind}",
        status_subresource=root.shape is Shape.STRUCT and "status" in root.fields,
        strategic=True,
    )


def for_schema(
    openapi_v3_schema: dict[str, Any] | None,
    *,
    status_subresource: bool = False,
    name: str = "",
) -> Structure:
    """The structure of a custom resource from its CRD version's `openAPIV3Schema`.

    None (no schema) gives a deduced structure: maps granular, lists atomic. `metadata` is always the
    built-in ObjectMeta, as the real server does. Compile once per CRD version and keep the result.
    """
    if openapi_v3_schema is None:
        root = Node(Shape.STRUCT)
        root.elem = UNTYPED
    else:
        root = _Compiler(schemas.load(), crd=True).compile(openapi_v3_schema)
        if root.shape is not Shape.STRUCT:
            fresh = Node(Shape.STRUCT)
            fresh.elem = UNTYPED if root.shape is Shape.UNTYPED else None
            root = fresh
    return Structure(
        root=_with_type_meta(root),
        name=name,
        status_subresource=status_subresource,
        strategic=False,
    )
