"""Field sets: the ownership tries that `metadata.managedFields[].fieldsV1` serialises.

Owns: the in-memory form of a field set, its set algebra (union, difference, intersection, member
paths), decoding and validating FieldsV1, encoding it in a deterministic order, and rendering a path in
the message format of the real server (`.spec.containers[name="app"].image`).

A field set is a trie held as nested dicts in exactly the FieldsV1 shape, so decoding costs nothing and
unchanged sets are written back as they were read. Keys are path elements: ``f:<field>``,
``k:<json object of list-map keys>``, ``v:<json value>`` (set items), ``i:<index>``. A node is a
*member* of the set (the path itself is owned) when it is empty (a leaf) or has a ``"."`` key; a
non-member node only carries children. Tries are treated as immutable values: functions here never
mutate their arguments.

Does not: walk objects against schemas (that is `fleet.sim.merging.ssa`) or know which paths are special.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fleet.core import errors

Trie = dict[str, Any]
DOT = "."
EMPTY: Trie = {}


class InvalidFieldSet(errors.InputError):
    """A FieldsV1 document that is not a valid field set."""


def is_member(node: Trie) -> bool:
    return not node or DOT in node


def has_children(node: Trie) -> bool:
    return len(node) > (1 if DOT in node else 0)


def children(node: Trie) -> Iterator[tuple[str, Trie]]:
    for key, child in node.items():
        if key != DOT:
            yield key, child


def make(member: bool, kids: dict[str, Trie]) -> Trie | None:
    """A node from membership and children; None when it would be empty (owns nothing)."""
    if not kids:
        return {} if member else None
    if member:
        out: Trie = {DOT: {}}
        out.update(kids)
        return out
    return kids


def decode(fields_v1: Any, *, where: str = "fieldsV1") -> Trie:
    """Validate a FieldsV1 document and return it as a trie (the same dicts, not copied)."""
    if not isinstance(fields_v1, dict):
        raise InvalidFieldSet(f"{where}: expected an object, got {type(fields_v1).__name__}")
    stack: list[tuple[str, dict[str, Any]]] = [(where, fields_v1)]
    while stack:
        path, node = stack.pop()
        for key, child in node.items():
            if not isinstance(child, dict):
                raise InvalidFieldSet(f"{path}: {key!r} must map to an object")
            if key == DOT:
                if child:
                    raise InvalidFieldSet(f"{path}: '.' must map to an empty object")
                continue
            if len(key) < 3 or key[1] != ":" or key[0] not in "fkvi":
                raise InvalidFieldSet(f"{path}: {key!r} is not a path element (f:, k:, v: or i:)")
            if key[0] in "kv":
                try:
                    json.loads(key[2:])
                except ValueError as e:
                    raise InvalidFieldSet(f"{path}: {key!r}: invalid JSON") from e
            elif key[0] == "i" and not key[2:].isdigit():
                raise InvalidFieldSet(f"{path}: {key!r}: invalid index")
            stack.append((f"{path}.{key}", child))
    return fields_v1


_RANK = {"f": 0, "k": 1, "v": 2, "i": 3}


def _value_rank(v: Any) -> tuple[Any, ...]:
    # Null < bool < number < string < list < object, then the value; deterministic for any JSON.
    if v is None:
        return (0,)
    if isinstance(v, bool):
        return (1, v)
    if isinstance(v, int | float):
        return (2, v)
    if isinstance(v, str):
        return (3, v)
    if isinstance(v, list):
        return (4, tuple(_value_rank(x) for x in v))
    if isinstance(v, dict):
        return (5, tuple((k, _value_rank(v[k])) for k in sorted(v)))
    return (6, repr(v))


def sort_key(key: str) -> tuple[Any, ...]:
    kind = key[0]
    rest = key[2:]
    if kind == "f":
        return (0, rest)
    if kind == "i":
        return (3, int(rest) if rest.isdigit() else 0, rest)
    try:
        return (_RANK.get(kind, 4), _value_rank(json.loads(rest)), rest)
    except ValueError:
        return (_RANK.get(kind, 4), (9,), rest)


def encode(node: Trie) -> Trie:
    """A copy of `node` in the canonical order: ``"."`` first, then fields, keys, values, indexes."""
    out: Trie = {}
    if DOT in node:
        out[DOT] = {}
    keys = [k for k in node if k != DOT]
    if len(keys) > 1:
        if all(k.startswith("f:") for k in keys):
            keys.sort()  # fields only (the usual node): their order is that of the names
        else:
            keys.sort(key=sort_key)
    for key in keys:
        child = node[key]
        out[key] = encode(child) if child else {}
    return out


def union(a: Trie | None, b: Trie | None) -> Trie | None:
    if a is None:
        return b
    if b is None or a is b:
        return a
    kids = dict(children(a))
    for key, child in children(b):
        cur = kids.get(key)
        merged = child if cur is None else union(cur, child)
        if merged is not None:
            kids[key] = merged
    return make(is_member(a) or is_member(b), kids)


def difference(a: Trie | None, b: Trie | None) -> Trie | None:
    """Members of `a` that are not members of `b` (recursively)."""
    if a is None:
        return None
    if b is None:
        return a
    member = is_member(a) and not is_member(b)
    kids: dict[str, Trie] = {}
    changed = member != is_member(a)
    for key, child in a.items():
        if key == DOT:
            continue
        other = b.get(key)
        if other is None:
            kids[key] = child
            continue
        rest = difference(child, other)
        if rest is not child:
            changed = True
        if rest is not None:
            kids[key] = rest
    if not changed:
        return a
    return make(member, kids)


def intersection(a: Trie | None, b: Trie | None) -> Trie | None:
    if a is None or b is None:
        return None
    kids: dict[str, Trie] = {}
    small, big = (a, b) if len(a) <= len(b) else (b, a)
    for key, child in small.items():
        if key == DOT:
            continue
        other = big.get(key)
        if other is not None:
            both = intersection(child, other)
            if both is not None:
                kids[key] = both
    return make(is_member(a) and is_member(b), kids)


def members(node: Trie, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every member path (as a tuple of path elements), parents before children."""
    for key, child in children(node):
        path = (*prefix, key)
        if is_member(child):
            yield path
        yield from members(child, path)


def has_members(node: Trie | None) -> bool:
    """Whether `node` has any member path (`size(node) > 0`, stopping at the first)."""
    if not node:
        return False
    for key, child in node.items():
        if key == DOT:
            continue
        if not child or DOT in child or has_members(child):
            return True
    return False


def size(node: Trie | None) -> int:
    """The number of member paths."""
    if not node:
        return 0
    return sum(1 for _ in members(node))


def from_paths(paths: list[tuple[str, ...]]) -> Trie:
    """A trie whose members are exactly `paths` (test and tooling helper)."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for i, key in enumerate(path):
            entry = node.setdefault(key, [False, {}])
            if i == len(path) - 1:
                entry[0] = True
            node = entry[1]

    def build(level: dict[str, Any]) -> Trie:
        out: Trie = {}
        for key, (member, sub) in level.items():
            made = make(member, build(sub))
            if made is not None:
                out[key] = made
        return out

    return build(tree)


def element_text(key: str) -> str:
    """One path element as the real server prints it: ``.name``, ``[name="a"]``, ``[="x"]``, ``[0]``."""
    kind, rest = key[0], key[2:]
    if kind == "f":
        return "." + rest
    if kind == "i":
        return f"[{rest}]"
    if kind == "v":
        return f"[={rest}]"
    try:
        fields = json.loads(rest)
    except ValueError:
        return f"[{rest}]"
    if not isinstance(fields, dict):
        return f"[{rest}]"
    parts = [f"{k}={json.dumps(fields[k], separators=(',', ':'))}" for k in sorted(fields)]
    return "[" + ",".join(parts) + "]"


def path_text(path: tuple[str, ...]) -> str:
    return "".join(element_text(k) for k in path)


def field_key(name: str) -> str:
    return "f:" + name


def _json(value: Any) -> str:
    # Fast path for the usual key values (plain strings, integers); same text as json.dumps.
    if isinstance(value, str):
        if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
            return '"' + value + '"'
    elif isinstance(value, bool):
        return "true" if value else "false"
    elif isinstance(value, int):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def key_key(fields: dict[str, Any]) -> str:
    return "k:{" + ",".join(f"{_json(k)}:{_json(fields[k])}" for k in sorted(fields)) + "}"


def value_key(value: Any) -> str:
    return "v:" + _json(value)


def index_key(i: int) -> str:
    return f"i:{i}"


# Whole sets (the root of a managedFields entry): the root itself is never a member, and an empty set
# is ``{}``.


def _root(node: Trie | None) -> Trie:
    if not node:
        return {}
    if DOT in node:
        return {k: v for k, v in node.items() if k != DOT}
    return node


def set_union(a: Trie, b: Trie) -> Trie:
    if not a:
        return b
    if not b:
        return a
    return _root(union(_root(a), _root(b)))


def set_difference(a: Trie, b: Trie) -> Trie:
    if not a or not b:
        return a
    rest = difference({DOT: {}, **a} if a else a, b)
    if rest is None:
        return {}
    if rest.get(DOT) is not None and len(rest) == len(a) + 1 and all(rest[k] is a[k] for k in a):
        return a
    return _root(rest)


def set_intersection(a: Trie, b: Trie) -> Trie:
    if not a or not b:
        return {}
    return _root(intersection(a, b))
