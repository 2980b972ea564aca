"""The structured merge over plain dicts: field sets of values, merge, prune and compare under a schema.

Owns: the field set of a value at a `fleet.sim.kinds.structure.Node` (`field_set`, validating the value as
the typed conversion of the real server does and raising `FieldNotDeclared` with its message; `full_set`
for whole added or removed subtrees), the merge of an applied configuration into a live object
(`merge`: structs and maps field by field, list-maps and sets item by item, atomic values replaced),
the removal of what an applier stopped sending and nobody else owns (`prune`, with structured-merge-
diff's "add back owned and dangling items"), and the comparison of two objects into added, modified
and removed field sets (`compare`). Pure functions; inputs are never mutated and results share
unchanged subtrees with them.

Does not: decide ownership or conflicts, or read and write managedFields (`fleet.sim.merging.ssa`,
`fleet.sim.merging.managedfields`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fleet.core import errors
from fleet.sim.kinds import structure as structure_mod
from fleet.sim.kinds.structure import ListType, Node, Shape
from fleet.sim.merging import fieldsets
from fleet.sim.merging.fieldsets import Trie

MISSING: Any = object()  # a key absent from a dict (distinct from a null value)
# What `prune` returns for a map, struct or list whose entries it removed down to nothing. SMD leaves
# null there (the container itself stays owned; only its entries count as removed) and a real server's
# Go types then omit it: the key is set to None for the ownership diff and dropped afterwards.
EMPTIED: Any = object()


class FieldNotDeclared(errors.InputError):
    """The applied configuration does not fit the schema (HTTP 500 on the real server).

    The message is the part after ``failed to create typed patch object (<gvk>): ``, e.g.
    ``.spec.bogus: field not declared in schema``. Type mismatches, list-map items without their key
    fields and duplicate list-map/set items raise this class too (same answer from the server).
    """


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


def field_set(value: Any, node: Node, path: str) -> Trie:
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
                        field_set(item, elem, f"{path}[{i}]")
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
            sub = field_set(item, elem, path + fieldsets.element_text(pe))
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
                field_set(child_value, child, f"{path}.{name}")
            kids[fk] = {}
            continue
        sub = field_set(child_value, child, f"{path}.{name}")
        if sub:
            kids[fk] = sub if declared else {fieldsets.DOT: {}, **sub}
        elif not declared or (isinstance(child_value, dict) and not child_value):
            kids[fk] = {}
    if node.atomic:
        return {}
    return kids


def full_set(value: Any, node: Node, *, declared: bool, go_types: bool) -> Trie:
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
            kids["f:" + name] = full_set(
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
        for pe, item in index(value, node):
            kids[pe] = full_set(item, elem, declared=False, go_types=go_types)
        return {fieldsets.DOT: {}, **kids} if kids and not declared else kids
    return {}


def index(items: list[Any], node: Node) -> Iterable[tuple[str, Any]]:
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


def merge(live: Any, cfg: Any, node: Node) -> Any:
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
            out[name] = merge(current, value, child)
        return out
    if isinstance(cfg, list) and shape is Shape.LIST:
        return _merge_list(live if isinstance(live, list) else [], cfg, node)
    return cfg


def _merge_list(live: list[Any], cfg: list[Any], node: Node) -> list[Any]:
    """Merge of associative lists and sets, ordered as structured-merge-diff does."""
    elem = node.elem or structure_mod.UNTYPED
    lhs = list(index(live, node))
    rhs = list(index(cfg, node))
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
        out.append(value if is_set else merge(lhs_map.get(pe), value, elem))
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


def prune(
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
                pruned = prune(current, last_child, cfg_child, kids, child, nulls)
                if pruned is not current:
                    if out is None:
                        out = dict(value)
                    if pruned is EMPTIED:
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
            return EMPTIED
        return out
    if isinstance(value, list) and node.shape is Shape.LIST and node.list_type is not ListType.ATOMIC:
        elem = node.elem or structure_mod.UNTYPED
        items = list(index(value, node))
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
                pruned = prune(current, last_child, cfg_child, kids, elem, nulls)
                if pruned is EMPTIED:
                    drop.add(idx)
                elif pruned is not current:
                    replace[idx] = pruned
        if not drop and not replace:
            return value
        if len(drop) == len(value):
            return EMPTIED
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


def compare(old: Any, new: Any, node: Node, add: Trie, mod: Trie, rem: Trie, go_types: bool) -> None:
    """Fill the added, modified and removed paths below a container present on both sides."""
    if old is new:
        return
    if isinstance(new, dict) and isinstance(old, dict) and node.shape is not Shape.LIST:
        struct = node.shape is Shape.STRUCT
        for name, nv in new.items():
            ov = old.get(name, MISSING)
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
                        MISSING,
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
        old_items = dict(index(old, node))
        new_items = dict(index(new, node))
        for pe, nv in new_items.items():
            _compare_one(pe, old_items.get(pe, MISSING), nv, elem, False, add, mod, rem, go_types)
        for pe, ov in old_items.items():
            if pe not in new_items:
                _compare_one(pe, ov, MISSING, elem, False, add, mod, rem, go_types)


def _compare_one(
    pe: str, ov: Any, nv: Any, node: Node, declared: bool, add: Trie, mod: Trie, rem: Trie, go_types: bool
) -> None:
    """`go_types`: built-in types, whose non-pointer structs exist (empty) in any old object, so a new
    struct field is owned through its fields only; for custom resources the new struct is owned too."""
    declared = declared and go_types
    if ov is MISSING or ov is None:
        if nv is not MISSING and nv is not None:
            add[pe] = full_set(nv, node, declared=declared, go_types=go_types)
        return
    if nv is MISSING or nv is None:
        gone = full_set(ov, node, declared=declared, go_types=go_types)
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
                    for k, v in full_set(value, node, declared=True, go_types=go_types).items()
                    if k != fieldsets.DOT
                }
                if below:
                    out[pe] = below
        return
    a: Trie = {}
    m: Trie = {}
    r: Trie = {}
    compare(ov, nv, node, a, m, r, go_types)
    if a:
        add[pe] = a
    if m:
        mod[pe] = m
    if r:
        rem[pe] = r


def equal_except_managed_fields(a: dict[str, Any], b: dict[str, Any]) -> bool:
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
