"""Server-side apply and field ownership: a structured merge over plain dicts.

Owns: `apply` (an `application/apply-patch+yaml` write: merge the applied configuration into the live
object, check conflicts against the other managers' field sets, force, remove what this manager stopped
sending and nobody else owns, record the new ownership) and `update` (a non-apply write: diff old vs new,
give the changed fields to the writer, take them from everybody else, cap Update managers at 10). Both
return the whole new object with `metadata.managedFields` encoded as the real server does
(`fieldsType: FieldsV1`, one entry per manager/operation/subresource, sorted, `time` only moved when that
manager's entry changed). The semantics follow kubernetes-sigs/structured-merge-diff (merge, prune with
"add back owned and dangling items", compare) and apimachinery's managedfields package (strip meta, reset
fields, conflict messages, capping); see `docs/sim.md`, "Server-side apply".

Does not: parse request bodies, check preconditions, resourceVersion, names or namespaces, default or
canonicalise values (`fleet.sim.defaults`, called by the server on the result), prune unknown fields of
custom resources, or store anything. Pure functions: inputs are never mutated; the results share
unchanged subtrees with `live`/`new`, so callers must treat stored objects as immutable (replace, never
edit in place, below `metadata`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fleet import errors
from fleet.sim import fieldsets
from fleet.sim import structure as structure_mod
from fleet.sim.fieldsets import Trie
from fleet.sim.structure import ListType, Node, Shape

MAX_UPDATE_MANAGERS = 10
ANCIENT_CHANGES = "ancient-changes"

# Config metadata the server never takes from an apply body (kept from the live object).
_DROP_FROM_CONFIG = frozenset(
    {
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "generation",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)
# Paths never owned by anybody (apimachinery internal/stripmeta.go).
_STRIPPED_META = frozenset(
    {
        "f:name",
        "f:namespace",
        "f:creationTimestamp",
        "f:selfLink",
        "f:uid",
        "f:clusterName",
        "f:generation",
        "f:managedFields",
        "f:resourceVersion",
    }
)
_MISSING: Any = object()
# What `_prune` returns for a map, struct or list whose entries it removed down to nothing. SMD leaves
# null there (the container itself stays owned; only its entries count as removed) and a real server's
# Go types then omit it: the key is set to None for the ownership diff and dropped afterwards.
_EMPTIED: Any = object()


class ApplyConflict(errors.FleetError):
    """An apply would change fields other managers own (HTTP 409, reason Conflict).

    `conflicts`: (manager, field path) pairs such as ``("kubectl", ".spec.replicas")``. `causes`: the
    Status `details.causes` entries, ready to serialise. ``str(e)`` is the Status message.
    """

    def __init__(
        self, message: str, *, conflicts: list[tuple[str, str]], causes: list[dict[str, str]]
    ) -> None:
        super().__init__(message)
        self.conflicts = conflicts
        self.causes = causes


class FieldNotDeclared(errors.InputError):
    """The applied configuration does not fit the schema (HTTP 500 on the real server).

    The message is the part after ``failed to create typed patch object (<gvk>): ``, e.g.
    ``.spec.bogus: field not declared in schema``. Type mismatches, list-map items without their key
    fields and duplicate list-map/set items raise this class too (same answer from the server).
    """


@dataclass(slots=True)
class _Entry:
    manager: str
    operation: str
    api_version: str
    time: str | None
    subresource: str
    fields: Trie
    raw: dict[str, Any] | None

    @property
    def key(self) -> tuple[str, str, str, str]:
        # Apply entries are one per manager whatever the apiVersion (buildmanagerinfo.go).
        version = "" if self.operation == "Apply" else self.api_version
        return (self.manager, self.operation, self.subresource, version)

    def display(self) -> str:
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text


# --------------------------------------------------------------------------------------------------
# Public API


def apply(
    live: dict[str, Any] | None,
    config: dict[str, Any],
    *,
    manager: str,
    force: bool,
    structure: structure_mod.Structure,
    now: str,
    subresource: str | None = None,
) -> dict[str, Any]:
    """The object after `manager` server-side applies `config` to `live` (None: create)."""
    if not isinstance(config, dict):
        raise FieldNotDeclared(f"expected map, got {type(config).__name__}")
    root = structure.root
    cfg = _prepare_config(config, structure, subresource)
    # Pruning sees the whole applied set (metadata.name keeps `metadata` alive); what is stored and
    # compared with other managers has the never-owned paths stripped, as apimachinery does.
    cfg_full = _field_set(cfg, root, "")
    cfg_set = _strip_meta(cfg_full)
    live_obj: dict[str, Any] = live or {}
    entries = _entries_of(live_obj)
    api_version = str(cfg.get("apiVersion") or live_obj.get("apiVersion") or "")
    mine = _Entry(manager, "Apply", api_version, None, subresource or "", cfg_set, None)
    previous = next((e for e in entries if e.key == mine.key), None)
    others = [e for e in entries if e.key != mine.key]

    merged = _merge(live_obj, cfg, root)
    nulls: list[tuple[dict[str, Any], str]] = []
    if previous is not None and previous.fields:
        merged = _prune(merged, previous.fields, cfg_full, [e.fields for e in others], root, nulls)
        if merged is _EMPTIED:  # pragma: no cover - metadata.name always remains
            merged = {}

    changed_others: dict[int, Trie | None] = {}
    if others:
        add: Trie = {}
        mod: Trie = {}
        rem: Trie = {}
        _compare(live_obj, merged, root, add, mod, rem, structure.strategic)
        touched = fieldsets.set_union(_strip_meta(add), _strip_meta(mod))
        removed = _strip_meta(rem)
        conflicts: list[tuple[_Entry, Trie]] = []
        for i, other in enumerate(others):
            clash = fieldsets.set_intersection(other.fields, touched) or None
            if clash is not None:
                conflicts.append((other, clash))
            rest = other.fields
            if clash is not None:
                rest = fieldsets.set_difference(rest, clash)
            if removed:
                rest = fieldsets.set_difference(rest, removed)
            if rest is not other.fields:
                changed_others[i] = rest if fieldsets.size(rest) else None
        if conflicts and not force:
            raise _conflict_error(conflicts)
    for parent, key in nulls:
        if parent.get(key, _MISSING) is None:
            del parent[key]

    # The applier's time moves only when the object changed (managedfieldsupdater.go); a new entry
    # for an apply that changed nothing has no time, as on the real server.
    object_changed = live is None or not _equal_except_managed_fields(live_obj, merged)
    if object_changed:
        mine.time = now
    elif previous is not None:
        mine.time = previous.time
        if previous.api_version == api_version and _same_set(previous.fields, cfg_set):
            mine.fields = previous.fields
            mine.raw = previous.raw

    result_entries: list[_Entry] = []
    for i, other in enumerate(others):
        if i in changed_others:
            remaining = changed_others[i]
            if remaining is None:
                continue
            other = _Entry(
                other.manager,
                other.operation,
                other.api_version,
                other.time,
                other.subresource,
                remaining,
                None,
            )
        result_entries.append(other)
    if mine.fields:
        result_entries.append(mine)
    result_entries = _cap(result_entries)
    return _with_managed_fields(merged, live_obj, result_entries)


def update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    structure: structure_mod.Structure,
    now: str,
    subresource: str | None = None,
) -> dict[str, Any]:
    """The object after a non-apply write (create, update, patch) by `manager`: ownership moves.

    For types with a status subresource, a write to the main resource keeps the old `.status` (a
    create drops it) and a write to ``subresource="status"`` keeps everything but `.status`.
    Undeclared fields are not tracked (the server prunes or rejects them).
    """
    root = structure.root
    old_obj: dict[str, Any] = old or {}
    new_obj = _reset_for_update(old, new, structure, subresource)
    sent = new.get("metadata", {}).get("managedFields") if isinstance(new.get("metadata"), dict) else None
    if sent == [{}]:
        # The documented way to clear managedFields: the write is not tracked either.
        result = dict(new_obj)
        meta = dict(result.get("metadata") or {})
        meta.pop("managedFields", None)
        result["metadata"] = meta
        return result
    entries: list[_Entry] | None = None
    old_meta = old_obj.get("metadata")
    stored = old_meta.get("managedFields") if isinstance(old_meta, dict) else None
    if isinstance(sent, list) and sent and sent != stored:
        # A client sent other managedFields (a non-empty list replaces the stored one when valid).
        try:
            entries = _decode_entries(sent)
        except (fieldsets.InvalidFieldSet, ValueError):
            entries = None
    if entries is None:
        entries = _entries_of(old_obj)

    add: Trie = {}
    mod: Trie = {}
    rem: Trie = {}
    _compare(old_obj, new_obj, root, add, mod, rem, structure.strategic)
    touched = fieldsets.set_union(_strip_meta(add), _strip_meta(mod))
    removed = _strip_meta(rem)
    api_version = str(new_obj.get("apiVersion") or old_obj.get("apiVersion") or "")
    mine_key = (manager, "Update", subresource or "", api_version)

    result_entries: list[_Entry] = []
    previous: _Entry | None = None
    for entry in entries:
        if entry.key == mine_key:
            previous = entry
            continue
        rest = entry.fields
        if touched:
            rest = fieldsets.set_difference(rest, touched)
        if removed:
            rest = fieldsets.set_difference(rest, removed)
        if rest is not entry.fields:
            if not fieldsets.size(rest):
                continue
            entry = _Entry(
                entry.manager, entry.operation, entry.api_version, entry.time, entry.subresource, rest, None
            )
        result_entries.append(entry)
    if previous is not None or touched:
        prev_fields: Trie = previous.fields if previous is not None else {}
        if removed and prev_fields:
            prev_fields = fieldsets.set_difference(prev_fields, removed)
        if touched:
            fields = fieldsets.set_union(prev_fields, touched)
            time: str | None = now
        else:
            fields = prev_fields
            time = previous.time if previous is not None else now
        if fieldsets.size(fields):
            raw = previous.raw if previous is not None and fields is previous.fields else None
            result_entries.append(
                _Entry(manager, "Update", api_version, time, subresource or "", fields, raw)
            )
    result_entries = _cap(result_entries)
    return _with_managed_fields(new_obj, old_obj, result_entries)


def managed_fields_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The managedFields entries of an object ([] when none)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("managedFields"), list):
        return list(meta["managedFields"])
    return []


# --------------------------------------------------------------------------------------------------
# Preparing inputs


def _prepare_config(
    config: dict[str, Any], structure: structure_mod.Structure, subresource: str | None
) -> dict[str, Any]:
    cfg = config
    meta = cfg.get("metadata")
    if isinstance(meta, dict) and not _DROP_FROM_CONFIG.isdisjoint(meta):
        cfg = dict(cfg)
        cfg["metadata"] = {k: v for k, v in meta.items() if k not in _DROP_FROM_CONFIG}
    if structure.status_subresource:
        if subresource is None and "status" in cfg:
            cfg = {k: v for k, v in cfg.items() if k != "status"}
        elif subresource == "status":
            kept: dict[str, Any] = {k: cfg[k] for k in ("apiVersion", "kind", "status") if k in cfg}
            meta = cfg.get("metadata")
            if isinstance(meta, dict):
                kept["metadata"] = {k: meta[k] for k in ("name", "namespace") if k in meta}
            cfg = kept
    return cfg


def _reset_for_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    structure: structure_mod.Structure,
    subresource: str | None,
) -> dict[str, Any]:
    if not structure.status_subresource:
        return new
    if subresource is None:
        old_status = old.get("status", _MISSING) if old else _MISSING
        if new.get("status", _MISSING) is old_status:
            return new
        out = {k: v for k, v in new.items() if k != "status"}
        if old_status is not _MISSING:
            out["status"] = old_status
        return out
    if subresource == "status" and old is not None:
        out = {k: v for k, v in old.items() if k != "status"}
        if "status" in new:
            out["status"] = new["status"]
        meta = new.get("metadata")
        if isinstance(meta, dict) and "managedFields" in meta and isinstance(out.get("metadata"), dict):
            out["metadata"] = {**out["metadata"], "managedFields": meta["managedFields"]}
        return out
    return new


def _strip_meta(fields: Trie) -> Trie:
    if not fields:
        return fields
    has_meta = "f:metadata" in fields
    if not has_meta and "f:apiVersion" not in fields and "f:kind" not in fields:
        return fields
    out = {k: v for k, v in fields.items() if k not in ("f:apiVersion", "f:kind", "f:metadata")}
    if has_meta:
        meta = fields["f:metadata"]
        kept = {k: v for k, v in meta.items() if k not in _STRIPPED_META and k != fieldsets.DOT}
        if kept:
            out["f:metadata"] = kept
    if "." in out and len(out) == 1:
        return {}
    return out


# --------------------------------------------------------------------------------------------------
# Field sets of values


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def _check_scalar(value: Any, node: Node, path: str) -> None:
    if isinstance(value, dict | list):
        raise FieldNotDeclared(f"{path}: expected scalar, got {_type_name(value)}")
    allowed = node.scalar_types
    if allowed is None or value is None:
        return
    if isinstance(value, bool):
        ok = "boolean" in allowed
    elif isinstance(value, int):
        ok = "integer" in allowed or "number" in allowed
    elif isinstance(value, float):
        ok = "number" in allowed or ("integer" in allowed and value.is_integer())
    elif isinstance(value, str):
        ok = "string" in allowed
    else:
        ok = False
    if not ok:
        want = " or ".join(sorted(allowed))
        raise FieldNotDeclared(f"{path}: expected {want}, got {_type_name(value)}")


def _is_leaf(node: Node, value: Any) -> bool:
    shape = node.shape
    if shape is Shape.SCALAR or node.atomic:
        return True
    if shape is Shape.UNTYPED:
        return not isinstance(value, dict)
    return False


def _item_key(item: Any, node: Node, path: str, index: int) -> str:
    if not isinstance(item, dict):
        raise FieldNotDeclared(f"{path}: element {index}: expected map, got {_type_name(item)}")
    fields: dict[str, Any] = {}
    for key in node.keys:
        value = item.get(key)
        if value is None:
            value = node.key_defaults.get(key)
            if value is None:
                raise FieldNotDeclared(
                    f"{path}: element {index}: associative list with keys has an element that omits key "
                    f'field "{key}" (and doesn\'t have default value)'
                )
        fields[key] = value
    return fieldsets.key_key(fields)


def _field_set(value: Any, node: Node, path: str) -> Trie:
    """The children (at `node`) of the field set of `value`, validating it against the schema."""
    shape = node.shape
    if shape is Shape.SCALAR:
        _check_scalar(value, node, path)
        return {}
    if shape is Shape.LIST:
        if not isinstance(value, list):
            raise FieldNotDeclared(f"{path}: expected list, got {_type_name(value)}")
        elem = node.elem or structure_mod.UNTYPED
        kids: Trie = {}
        if node.list_type is ListType.ATOMIC:
            if elem.shape is not Shape.SCALAR and elem.shape is not Shape.UNTYPED:
                for i, item in enumerate(value):
                    if item is not None:
                        _field_set(item, elem, f"{path}[{i}]")
            return kids
        if node.list_type is ListType.SET:
            for item in value:
                if isinstance(item, dict | list) and elem.shape is Shape.SCALAR:
                    raise FieldNotDeclared(f"{path}: expected scalar set item, got {_type_name(item)}")
                pe = fieldsets.value_key(item)
                if pe in kids:
                    raise FieldNotDeclared(f"{path}: duplicate entries for key {pe[2:]}")
                kids[pe] = {}
            return kids
        for i, item in enumerate(value):
            pe = _item_key(item, node, path, i)
            if pe in kids:
                raise FieldNotDeclared(f"{path}: duplicate entries for key {fieldsets.element_text(pe)}")
            sub = _field_set(item, elem, path + fieldsets.element_text(pe))
            kids[pe] = {fieldsets.DOT: {}, **sub} if sub else {}
        return kids
    if not isinstance(value, dict):
        if shape is Shape.UNTYPED:
            return {}
        raise FieldNotDeclared(f"{path}: expected map, got {_type_name(value)}")
    kids = {}
    struct = shape is Shape.STRUCT
    for name, child_value in value.items():
        child: Node | None
        if struct:
            child = node.fields.get(name)
            declared = child is not None
            if child is None:
                child = node.elem
                if child is None:
                    raise FieldNotDeclared(f"{path}.{name}: field not declared in schema")
        else:
            child = node.elem if shape is Shape.MAP else node
            declared = False
            if child is None:
                child = structure_mod.UNTYPED
        fk = "f:" + name
        if child_value is None or _is_leaf(child, child_value):
            if child_value is not None:
                _field_set(child_value, child, f"{path}.{name}")
            kids[fk] = {}
            continue
        sub = _field_set(child_value, child, f"{path}.{name}")
        if sub:
            kids[fk] = sub if declared else {fieldsets.DOT: {}, **sub}
        elif not declared or (isinstance(child_value, dict) and not child_value):
            kids[fk] = {}
    if node.atomic:
        return {}
    return kids


def _full(value: Any, node: Node, *, declared: bool, go_types: bool) -> Trie:
    """The set of everything in `value` (used for added and removed subtrees)."""
    if value is None or _is_leaf(node, value):
        return {}
    if isinstance(value, dict):
        if node.shape is Shape.LIST:
            return {}
        kids: Trie = {}
        struct = node.shape is Shape.STRUCT
        for name, child_value in value.items():
            child = node.child(name)
            if child is None:
                continue
            kids["f:" + name] = _full(
                child_value, child, declared=go_types and struct and name in node.fields, go_types=go_types
            )
        if not kids:
            return {}
        # As the real server records creates: a new map is owned itself ("."), a struct only
        # through its fields (Go's non-pointer structs exist, empty, in the old object).
        if declared and struct:
            return kids
        return {fieldsets.DOT: {}, **kids}
    if isinstance(value, list) and node.shape is Shape.LIST:
        elem = node.elem or structure_mod.UNTYPED
        kids = {}
        for pe, item in _index(value, node):
            kids[pe] = _full(item, elem, declared=False, go_types=go_types)
        return {fieldsets.DOT: {}, **kids} if kids and not declared else kids
    return {}


def _index(items: list[Any], node: Node) -> Iterable[tuple[str, Any]]:
    """(path element, item) pairs of a set or list-map; items without a usable key are skipped."""
    if node.list_type is ListType.SET:
        for item in items:
            yield fieldsets.value_key(item), item
        return
    for item in items:
        if not isinstance(item, dict):
            continue
        fields: dict[str, Any] = {}
        for key in node.keys:
            value = item.get(key)
            if value is None:
                value = node.key_defaults.get(key)
                if value is None:
                    break
            fields[key] = value
        else:
            yield fieldsets.key_key(fields), item


# --------------------------------------------------------------------------------------------------
# Merge, prune, compare


def _merge(live: Any, cfg: Any, node: Node) -> Any:
    shape = node.shape
    if shape is Shape.SCALAR or node.atomic:
        return cfg
    if isinstance(cfg, dict):
        if shape is Shape.LIST:
            return cfg
        base = live if isinstance(live, dict) else {}
        out = dict(base)
        struct = shape is Shape.STRUCT
        for name, value in cfg.items():
            if value is None:
                out.pop(name, None)
                continue
            if struct:
                child = node.fields.get(name) or node.elem or structure_mod.UNTYPED
            elif shape is Shape.MAP:
                child = node.elem or structure_mod.UNTYPED
            else:
                child = node
            current = base.get(name)
            out[name] = _merge(current, value, child)
        return out
    if isinstance(cfg, list) and shape is Shape.LIST:
        return _merge_list(live if isinstance(live, list) else [], cfg, node)
    return cfg


def _merge_list(live: list[Any], cfg: list[Any], node: Node) -> list[Any]:
    """Merge of associative lists and sets, ordered as structured-merge-diff does."""
    elem = node.elem or structure_mod.UNTYPED
    lhs = list(_index(live, node))
    rhs = list(_index(cfg, node))
    lhs_map = dict(lhs)
    rhs_map = dict(rhs)
    shared = [pe for pe, _ in rhs if pe in lhs_map]
    next_shared = 0
    merged_rhs: set[str] = set()
    out: list[Any] = []
    is_set = node.list_type is ListType.SET

    def take(pe: str) -> None:
        nonlocal next_shared
        merged_rhs.add(pe)
        value = rhs_map[pe]
        out.append(value if is_set else _merge(lhs_map.get(pe), value, elem))
        if next_shared < len(shared) and shared[next_shared] == pe:
            next_shared += 1

    li = ri = 0
    n_l, n_r = len(lhs), len(rhs)
    while li < n_l or ri < n_r:
        if li < n_l and ri < n_r:
            pe = lhs[li][0]
            if pe == rhs[ri][0]:
                take(pe)
                li += 1
                ri += 1
                continue
            if pe in rhs_map and next_shared < len(shared) and shared[next_shared] != pe:
                li += 1
                continue
        if li < n_l:
            pe = lhs[li][0]
            if pe not in rhs_map:
                out.append(lhs[li][1])
                li += 1
                continue
            if pe in merged_rhs:
                li += 1
                continue
        if ri < n_r:
            take(rhs[ri][0])
            ri += 1
    return out


def _prune(
    value: Any,
    last: Trie,
    cfg: Trie | None,
    others: list[Trie],
    node: Node,
    nulls: list[tuple[dict[str, Any], str]],
) -> Any:
    """Remove what the applier owned before (`last`) and nobody owns now: neither its new set
    (`cfg`) nor another manager (`others`). Mirrors SMD's prune + "add back owned and dangling items":
    a named struct field counts as owned when anything below it is owned."""
    if isinstance(value, dict) and node.shape is not Shape.LIST:
        out: dict[str, Any] | None = None
        struct = node.shape is Shape.STRUCT
        removed = False
        for pe, last_child in last.items():
            if pe[0] != "f" or pe[1] != ":":
                continue
            name = pe[2:]
            if name not in value:
                continue
            cfg_child = cfg.get(pe) if cfg else None
            if cfg_child is not None and (cfg_child is last_child or cfg_child == last_child):
                continue  # still sent whole: nothing below can go
            kids = [m[pe] for m in others if pe in m]
            declared = struct and name in node.fields
            if declared:
                owned = cfg_child is not None or bool(kids)
                was_member = True
            else:
                owned = (cfg_child is not None and fieldsets.is_member(cfg_child)) or any(
                    fieldsets.is_member(k) for k in kids
                )
                was_member = fieldsets.is_member(last_child)
            if was_member and not owned:
                if out is None:
                    out = dict(value)
                del out[name]
                removed = True
                continue
            if fieldsets.has_children(last_child):
                child = node.child(name) or structure_mod.UNTYPED
                current = value[name]
                pruned = _prune(current, last_child, cfg_child, kids, child, nulls)
                if pruned is not current:
                    if out is None:
                        out = dict(value)
                    if pruned is _EMPTIED:
                        out[name] = None
                        nulls.append((out, name))
                    elif (
                        declared and isinstance(pruned, dict) and pruned and not _owns_anything(pruned, child)
                    ):
                        # SMD's "add back dangling items" drops a struct that is left holding nothing
                        # a field set can name (only empty lists).
                        del out[name]
                        removed = True
                    else:
                        out[name] = pruned
        if out is None:
            return value
        if not out and removed:
            return _EMPTIED
        return out
    if isinstance(value, list) and node.shape is Shape.LIST and node.list_type is not ListType.ATOMIC:
        elem = node.elem or structure_mod.UNTYPED
        items = list(_index(value, node))
        positions = {pe: i for i, (pe, _) in enumerate(items)}
        drop: set[int] = set()
        replace: dict[int, Any] = {}
        for pe, last_child in last.items():
            idx = positions.get(pe)
            if idx is None:
                continue
            cfg_child = cfg.get(pe) if cfg else None
            if cfg_child is not None and (cfg_child is last_child or cfg_child == last_child):
                continue
            kids = [m[pe] for m in others if pe in m]
            owned = (cfg_child is not None and fieldsets.is_member(cfg_child)) or any(
                fieldsets.is_member(k) for k in kids
            )
            if fieldsets.is_member(last_child) and not owned:
                drop.add(idx)
                continue
            if fieldsets.has_children(last_child):
                current = items[idx][1]
                pruned = _prune(current, last_child, cfg_child, kids, elem, nulls)
                if pruned is _EMPTIED:
                    drop.add(idx)
                elif pruned is not current:
                    replace[idx] = pruned
        if not drop and not replace:
            return value
        if len(drop) == len(value):
            return _EMPTIED
        # Items without a key (skipped by _index) are kept in place.
        keyed = {id(item): i for i, (_, item) in enumerate(items)}
        result: list[Any] = []
        for item in value:
            i = keyed.get(id(item))
            if i is None:
                result.append(item)
            elif i in drop:
                continue
            else:
                result.append(replace.get(i, item))
        return result
    return value


def _owns_anything(value: dict[str, Any], node: Node) -> bool:
    """Whether the field set of a non-empty struct/map value would have any member."""
    if node.shape is not Shape.STRUCT or node.atomic:
        return True
    for name, child_value in value.items():
        child = node.fields.get(name)
        if child is None:
            return True  # undeclared (preserved) fields are always members
        if child_value is None or _is_leaf(child, child_value):
            return True
        if isinstance(child_value, dict):
            if not child_value or _owns_anything(child_value, child):
                return True
        elif isinstance(child_value, list):
            if child_value:
                return True
        else:
            return True
    return False


def _compare(old: Any, new: Any, node: Node, add: Trie, mod: Trie, rem: Trie, go_types: bool) -> None:
    """Fill the added, modified and removed paths below a container present on both sides."""
    if old is new:
        return
    if isinstance(new, dict) and isinstance(old, dict) and node.shape is not Shape.LIST:
        struct = node.shape is Shape.STRUCT
        for name, nv in new.items():
            ov = old.get(name, _MISSING)
            if ov is nv:
                continue
            child = node.child(name)
            if child is None:
                continue
            _compare_one("f:" + name, ov, nv, child, struct and name in node.fields, add, mod, rem, go_types)
        for name, ov in old.items():
            if name not in new:
                child = node.child(name)
                if child is not None:
                    _compare_one(
                        "f:" + name,
                        ov,
                        _MISSING,
                        child,
                        struct and name in node.fields,
                        add,
                        mod,
                        rem,
                        go_types,
                    )
        return
    if isinstance(new, list) and isinstance(old, list) and node.shape is Shape.LIST:
        elem = node.elem or structure_mod.UNTYPED
        old_items = dict(_index(old, node))
        new_items = dict(_index(new, node))
        for pe, nv in new_items.items():
            _compare_one(pe, old_items.get(pe, _MISSING), nv, elem, False, add, mod, rem, go_types)
        for pe, ov in old_items.items():
            if pe not in new_items:
                _compare_one(pe, ov, _MISSING, elem, False, add, mod, rem, go_types)


def _compare_one(
    pe: str, ov: Any, nv: Any, node: Node, declared: bool, add: Trie, mod: Trie, rem: Trie, go_types: bool
) -> None:
    """`go_types`: built-in types, whose non-pointer structs exist (empty) in any old object, so a new
    struct field is owned through its fields only; for custom resources the new struct is owned too."""
    declared = declared and go_types
    if ov is _MISSING or ov is None:
        if nv is not _MISSING and nv is not None:
            add[pe] = _full(nv, node, declared=declared, go_types=go_types)
        return
    if nv is _MISSING or nv is None:
        gone = _full(ov, node, declared=declared, go_types=go_types)
        if nv is None and isinstance(ov, dict | list) and not _is_leaf(node, ov):
            # emptied by pruning: its entries are removed, the field itself stays owned
            gone = {k: v for k, v in gone.items() if k != fieldsets.DOT}
            if not gone:
                return
        rem[pe] = gone
        return
    both_dicts = isinstance(ov, dict) and isinstance(nv, dict)
    both_lists = isinstance(ov, list) and isinstance(nv, list)
    if _is_leaf(node, nv) and _is_leaf(node, ov):
        if ov != nv:
            mod[pe] = {}
        return
    if not (both_dicts or both_lists) or (both_lists and node.shape is not Shape.LIST):
        # The kind of value changed (map <-> scalar in an untyped field): the value is modified, the
        # old entries are removed and the new ones added.
        mod[pe] = {}
        for value, out in ((ov, rem), (nv, add)):
            if not _is_leaf(node, value):
                below = {
                    k: v
                    for k, v in _full(value, node, declared=True, go_types=go_types).items()
                    if k != fieldsets.DOT
                }
                if below:
                    out[pe] = below
        return
    a: Trie = {}
    m: Trie = {}
    r: Trie = {}
    _compare(ov, nv, node, a, m, r, go_types)
    if a:
        add[pe] = a
    if m:
        mod[pe] = m
    if r:
        rem[pe] = r


def _equal_except_managed_fields(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a is b:
        return True
    if a.keys() != b.keys():
        return False
    for key, av in a.items():
        bv = b[key]
        if av is bv:
            continue
        if key == "metadata" and isinstance(av, dict) and isinstance(bv, dict):
            if {k for k in av if k != "managedFields"} != {k for k in bv if k != "managedFields"}:
                return False
            for mk, mv in av.items():
                if mk != "managedFields" and bv[mk] != mv:
                    return False
            continue
        if av != bv:
            return False
    return True


def _same_set(a: Trie, b: Trie) -> bool:
    return a is b or a == b


# --------------------------------------------------------------------------------------------------
# managedFields entries


def _entries_of(obj: dict[str, Any]) -> list[_Entry]:
    """The entries of a stored object (written by this module, so not validated again)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return []
    raw = meta.get("managedFields")
    if not raw:
        return []
    return _decode_entries(raw, validate=False)


def _decode_entries(raw: Any, *, validate: bool = True) -> list[_Entry]:
    if not isinstance(raw, list):
        raise ValueError("managedFields must be a list")
    out: list[_Entry] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError(f"managedFields[{i}] must be an object")
        operation = item.get("operation")
        if operation not in ("Apply", "Update"):
            raise ValueError(f"managedFields[{i}].operation must be Apply or Update")
        if item.get("fieldsType", "FieldsV1") != "FieldsV1":
            raise ValueError(f"managedFields[{i}].fieldsType must be FieldsV1")
        fields_v1 = item.get("fieldsV1") or {}
        fields = fieldsets.decode(fields_v1, where=f"managedFields[{i}].fieldsV1") if validate else fields_v1
        out.append(
            _Entry(
                manager=str(item.get("manager") or ""),
                operation=str(operation),
                api_version=str(item.get("apiVersion") or ""),
                time=item.get("time"),
                subresource=str(item.get("subresource") or ""),
                fields=fields,
                raw=item,
            )
        )
    return out


def _entry_dict(entry: _Entry) -> dict[str, Any]:
    if entry.raw is not None:
        return entry.raw
    out: dict[str, Any] = {
        "manager": entry.manager,
        "operation": entry.operation,
        "apiVersion": entry.api_version,
    }
    if entry.time is not None:
        out["time"] = entry.time
    out["fieldsType"] = "FieldsV1"
    out["fieldsV1"] = fieldsets.encode(entry.fields)
    if entry.subresource:
        out["subresource"] = entry.subresource
    return out


def _sort_key(entry: _Entry) -> tuple[str, str, str, str, str]:
    return (entry.operation, entry.time or "", entry.manager, entry.api_version, entry.subresource)


def _cap(entries: list[_Entry]) -> list[_Entry]:
    """At most MAX_UPDATE_MANAGERS Update entries; the oldest merge into `ancient-changes`."""
    updates = [e for e in entries if e.operation == "Update"]
    if len(updates) <= MAX_UPDATE_MANAGERS:
        return entries
    candidates = sorted((e for e in updates if e.manager != ANCIENT_CHANGES), key=lambda e: e.time or "")
    buckets: dict[str, _Entry] = {e.api_version: e for e in updates if e.manager == ANCIENT_CHANGES}
    count = len(updates)
    merged_away: set[int] = set()
    for entry in candidates:
        if count <= MAX_UPDATE_MANAGERS:
            break
        merged_away.add(id(entry))
        bucket = buckets.get(entry.api_version)
        if bucket is None:
            buckets[entry.api_version] = _Entry(
                ANCIENT_CHANGES, "Update", entry.api_version, entry.time, "", entry.fields, None
            )
        else:
            merged_away.add(id(bucket))
            count -= 1
            buckets[entry.api_version] = _Entry(
                ANCIENT_CHANGES,
                "Update",
                entry.api_version,
                max(bucket.time or "", entry.time or "") or None,
                "",
                fieldsets.set_union(bucket.fields, entry.fields),
                None,
            )
    kept = [
        e
        for e in entries
        if id(e) not in merged_away and not (e.manager == ANCIENT_CHANGES and e.operation == "Update")
    ]
    return kept + list(buckets.values())


def _with_managed_fields(
    obj: dict[str, Any], previous: dict[str, Any], entries: list[_Entry]
) -> dict[str, Any]:
    entries.sort(key=_sort_key)
    encoded = [_entry_dict(e) for e in entries]
    old_meta = previous.get("metadata") if isinstance(previous.get("metadata"), dict) else None
    old_list = old_meta.get("managedFields") if old_meta else None
    if (
        isinstance(old_list, list)
        and len(old_list) == len(encoded)
        and all(a is b for a, b in zip(old_list, encoded, strict=True))
    ):
        value: list[dict[str, Any]] | None = old_list
    else:
        value = encoded or None
    result = dict(obj)
    meta = dict(obj.get("metadata") or {})
    if value:
        meta["managedFields"] = value
    else:
        meta.pop("managedFields", None)
    result["metadata"] = meta
    return result


def _conflict_error(conflicts: list[tuple[_Entry, Trie]]) -> ApplyConflict:
    pairs: list[tuple[_Entry, str]] = []
    for entry, clash in sorted(conflicts, key=lambda c: c[0].display()):
        paths = sorted(fieldsets.members(clash), key=lambda p: tuple(fieldsets.sort_key(k) for k in p))
        pairs.extend((entry, fieldsets.path_text(p)) for p in paths)
    causes = [
        {"type": "FieldManagerConflict", "message": f"conflict with {entry.display()}", "field": path}
        for entry, path in pairs
    ]
    if len(pairs) == 1:
        entry, path = pairs[0]
        message = f"Apply failed with 1 conflict: conflict with {entry.display()}: {path}"
    else:
        lines: list[str] = []
        seen: list[str] = []
        by_manager: dict[str, list[str]] = {}
        for entry, path in pairs:
            name = entry.display()
            if name not in by_manager:
                seen.append(name)
                by_manager[name] = []
            by_manager[name].append(path)
        for name in sorted(seen):
            lines.append(f"conflicts with {name}:")
            lines.extend(f"- {p}" for p in by_manager[name])
        message = f"Apply failed with {len(pairs)} conflicts: " + "\n".join(lines)
    return ApplyConflict(
        message,
        conflicts=[(entry.manager, path) for entry, path in pairs],
        causes=causes,
    )
