"""Strategic merge patch (`application/strategic-merge-patch+json`) for built-in types.

Owns: applying a strategic merge patch to an object using the patch hints of the built-in schema
(`x-kubernetes-patch-merge-key`, `x-kubernetes-patch-strategy`: `merge`, `replace`, `retainKeys`) and
the patch directives kubectl sends: ``$patch: replace|delete|merge`` (on maps and on list items),
``$setElementOrder/<field>``, ``$retainKeys``, ``$deleteFromPrimitiveList/<field>``, and ``null`` to
delete a key. Lists without a merge strategy are replaced whole; maps merge recursively (the SMP rules
of k8s.io/apimachinery/pkg/util/strategicpatch, re-implemented, not copied).

Does not: handle JSON merge patch or JSON patch (plain libraries do), track field ownership (the server
calls `fleet.sim.merging.ssa.update` on the result), or default anything. Custom resources have no patch hints:
`UnsupportedPatch` (the server answers 415). Never mutates its inputs; the result shares untouched
subtrees with `original`.
"""

from __future__ import annotations

from typing import Any

from fleet.core import errors
from fleet.sim.kinds import structure as structure_mod
from fleet.sim.kinds.structure import Node, Shape

PATCH = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ORDER = "$setElementOrder/"
DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"

_DELETE: Any = object()


class UnsupportedPatch(errors.InputError):
    """Strategic merge patch on a type without a schema (the server answers 415)."""


class InvalidPatch(errors.InputError):
    """A malformed strategic merge patch (the server answers 422)."""


def patch(
    original: dict[str, Any], patch: dict[str, Any], *, structure: structure_mod.Structure
) -> dict[str, Any]:
    """`original` with the strategic merge `patch` applied."""
    if not structure.strategic:
        raise UnsupportedPatch(
            f"{structure.name or 'custom resource'}: strategic merge patch is not supported"
        )
    if not isinstance(patch, dict):
        raise InvalidPatch("a strategic merge patch must be a JSON object")
    result = _merge_map(original if isinstance(original, dict) else {}, patch, structure.root, "")
    if result is _DELETE:
        return {}
    assert isinstance(result, dict)
    return result


def _hints(node: Node | None, name: str) -> tuple[str, str]:
    if node is not None and node.shape is Shape.STRUCT:
        return node.patch.get(name, ("", ""))
    return ("", "")


def _child(node: Node | None, name: str) -> Node:
    if node is None:
        return structure_mod.UNTYPED
    child = node.child(name)
    return child if child is not None else structure_mod.UNTYPED


def _merge_map(original: dict[str, Any], patch: dict[str, Any], node: Node | None, path: str) -> Any:
    directive = patch.get(PATCH)
    if directive is not None:
        if directive == "delete":
            return _DELETE
        if directive == "replace":
            return _strip_directives({k: v for k, v in patch.items() if k != PATCH}, node, path)
        if directive != "merge":
            raise InvalidPatch(f"{path or '.'}: unknown patch type: {directive}")
    retain = patch.get(RETAIN_KEYS)
    if retain is not None and not isinstance(retain, list):
        raise InvalidPatch(f"{path}.$retainKeys: must be a list")
    out = dict(original)
    orders: dict[str, list[Any]] = {}
    deletes: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (PATCH, RETAIN_KEYS):
            continue
        if key.startswith(SET_ORDER):
            if not isinstance(value, list):
                raise InvalidPatch(f"{path}.{key}: must be a list")
            orders[key[len(SET_ORDER) :]] = value
            continue
        if key.startswith(DELETE_PRIMITIVE):
            if not isinstance(value, list):
                raise InvalidPatch(f"{path}.{key}: must be a list")
            deletes[key[len(DELETE_PRIMITIVE) :]] = value
            continue
        if key.startswith("$"):
            raise InvalidPatch(f"{path}.{key}: unknown patch directive")
        if value is None:
            out.pop(key, None)
            continue
        merge_key, strategy = _hints(node, key)
        child = _child(node, key)
        current = out.get(key)
        merged = _merge_value(current, value, child, merge_key, strategy, f"{path}.{key}")
        if merged is _DELETE:
            out.pop(key, None)
        else:
            out[key] = merged
    for key, values in deletes.items():
        current = out.get(key)
        if isinstance(current, list):
            out[key] = [v for v in current if v not in values]
    for key, order in orders.items():
        current = out.get(key)
        if isinstance(current, list):
            merge_key, _ = _hints(node, key)
            server = original.get(key)
            out[key] = _apply_order(current, order, merge_key, server if isinstance(server, list) else [])
    if retain is not None:
        keep = set(retain)
        out = {k: v for k, v in out.items() if k in keep}
    return out


def _merge_value(current: Any, value: Any, node: Node, merge_key: str, strategy: str, path: str) -> Any:
    strategies = set(strategy.split(",")) if strategy else set()
    if isinstance(value, dict):
        if "replace" in strategies:
            return _strip_directives(value, node, path)
        base = current if isinstance(current, dict) else {}
        return _merge_map(base, value, node, path)
    if isinstance(value, list):
        if "merge" in strategies:
            base_list = current if isinstance(current, list) else []
            return _merge_list(base_list, value, node, merge_key, path)
        return _strip_list(value, node, path)
    return value


def _merge_list(original: list[Any], patch: list[Any], node: Node, merge_key: str, path: str) -> list[Any]:
    elem = node.elem if node.shape is Shape.LIST and node.elem is not None else structure_mod.UNTYPED
    # `$patch: replace` as a list item replaces the whole list with the other items.
    if any(isinstance(item, dict) and item.get(PATCH) == "replace" and len(item) == 1 for item in patch):
        return [
            _strip_directives(i, elem, path) if isinstance(i, dict) else i
            for i in patch
            if not (isinstance(i, dict) and i.get(PATCH) == "replace")
        ]
    maps = [i for i in patch if isinstance(i, dict)]
    if not maps:
        out = list(original)
        for item in patch:
            if item not in out:
                out.append(item)
        return _apply_order(out, patch, "", original)
    if not merge_key:
        raise InvalidPatch(f"{path}: merging a list of maps needs a patch merge key")
    out = list(original)
    for item in patch:
        if not isinstance(item, dict):
            raise InvalidPatch(f"{path}: cannot mix maps and values in a merging list")
        directive = item.get(PATCH)
        if merge_key not in item:
            raise InvalidPatch(f"{path}: map: {item} does not contain declared merge key: {merge_key}")
        key_value = item[merge_key]
        index = next(
            (i for i, cur in enumerate(out) if isinstance(cur, dict) and cur.get(merge_key) == key_value),
            None,
        )
        if directive == "delete":
            out = [cur for cur in out if not (isinstance(cur, dict) and cur.get(merge_key) == key_value)]
            continue
        if index is None:
            out.append(_strip_directives(item, elem, path))
            continue
        merged = _merge_map(out[index], item, elem, f"{path}[{merge_key}={key_value}]")
        if merged is _DELETE:
            del out[index]
        else:
            out[index] = merged
    # The order of the result: the patch's items in its order, interleaved with the live-only items as
    # normalizeElementOrder does without `$setElementOrder` (a new item goes before the live ones).
    return _apply_order(out, [i for i in patch if i.get(PATCH) != "delete"], merge_key, original)


def _apply_order(items: list[Any], order: list[Any], merge_key: str, server: list[Any]) -> list[Any]:
    """The merged list in the order `$setElementOrder` asks for (strategicpatch's normalizeElementOrder).

    Items named in `order` are sorted by it; the other (server-only) items keep their order in the live
    list `server`; the two are interleaved, a server-only item going first only when both it and the
    next ordered item are in the live list and it came first there.
    """

    def ident(item: Any) -> Any:
        if merge_key and isinstance(item, dict):
            return item.get(merge_key)
        return item

    def position(ids: list[Any], item: Any) -> int:
        wanted = ident(item)
        for i, candidate in enumerate(ids):
            if candidate == wanted:
                return i
        return -1

    order_ids = [ident(e) for e in order]
    server_ids = [ident(e) for e in server]
    named = [it for it in items if position(order_ids, it) >= 0]
    named.sort(key=lambda it: position(order_ids, it))
    server_only = [it for it in items if position(order_ids, it) < 0]
    server_only.sort(key=lambda it: (position(server_ids, it) < 0, position(server_ids, it)))
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(named):
        if i >= len(server_only):
            out.append(named[j])
            j += 1
        elif j >= len(named):
            out.append(server_only[i])
            i += 1
        else:
            left, right = position(server_ids, server_only[i]), position(server_ids, named[j])
            if left >= 0 and right >= 0 and left < right:
                out.append(server_only[i])
                i += 1
            else:
                out.append(named[j])
                j += 1
    return out


def _strip_directives(value: Any, node: Node | None, path: str) -> Any:
    """A patch value that lands where nothing was: directives and nulls removed."""
    if isinstance(value, dict):
        if value.get(PATCH) == "delete":
            return _DELETE
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key.startswith("$") or item is None:
                continue
            stripped = _strip_directives(item, _child(node, key), f"{path}.{key}")
            if stripped is not _DELETE:
                out[key] = stripped
        return out
    if isinstance(value, list):
        return _strip_list(value, node, path)
    return value


def _strip_list(value: list[Any], node: Node | None, path: str) -> list[Any]:
    elem = node.elem if node is not None and node.shape is Shape.LIST and node.elem is not None else None
    out = []
    for item in value:
        if isinstance(item, dict) and PATCH in item and len(item) == 1:
            continue
        stripped = _strip_directives(item, elem, path)
        if stripped is not _DELETE:
            out.append(stripped)
    return out
