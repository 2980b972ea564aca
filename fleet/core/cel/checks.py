"""Static checks of an expression: `check` (problems as (line, column, message) for `fleet validate`),
the source limits (`MAX_LENGTH`, `MAX_NESTING`, `MAX_DEPTH`), refused macros, the result type, and which
``cluster.<field>.<key>`` paths an expression reads (for the memo).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import celpy
import celpy.adapter
import celpy.celparser
import celpy.celtypes
import celpy.evaluation
import lark

from fleet.core.cel import functions

MAX_LENGTH = 4096  # characters of source
MAX_NESTING = 24  # (), [] and {} nesting
MAX_DEPTH = 400  # parse-tree depth (a chain of 60 `&&` is ~70 deep)

CLUSTER_FIELDS = ("name", "labels", "annotations", "facts")
_MACROS = frozenset({"map", "filter", "all", "exists", "exists_one"})
_REFUSED_MACROS = frozenset({"reduce", "min"})
_TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "duration"}
)
_WRAPPERS = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary", "member"}
)


# ----------------------------------------------------------------------------------------------------------
# Static checks.


@dataclass
class _Walk:
    problems: list[tuple[int, int, str]] = field(default_factory=list)
    paths: set[tuple[str, ...]] = field(default_factory=set)  # () means the whole cluster


def _pos(node: lark.Tree | lark.Token) -> tuple[int, int]:
    if isinstance(node, lark.Token):
        return (node.line or 1, node.column or 1)
    for tok in node.scan_values(lambda v: isinstance(v, lark.Token)):
        return (tok.line or 1, tok.column or 1)
    return (1, 1)


def _depth(tree: lark.Tree) -> int:
    deepest = 0
    stack: list[tuple[lark.Tree, int]] = [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in node.children if isinstance(c, lark.Tree))
    return deepest


def _nesting(source: str) -> tuple[int, int, int]:
    """Deepest bracket nesting outside string literals, and where it first reached that depth."""
    depth = deepest = 0
    where = (1, 1)
    line, col = 1, 0
    quote: str | None = None
    escaped = False
    for ch in source:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            if depth > deepest:
                deepest, where = depth, (line, col)
        elif ch in ")]}":
            depth -= 1
    return deepest, where[0], where[1]


def ident_name(node: lark.Tree) -> str | None:
    """`x` when node is (a wrapper of) `primary -> ident x`."""
    while isinstance(node, lark.Tree) and node.data in _WRAPPERS | {"primary"} and len(node.children) == 1:
        child = node.children[0]
        if not isinstance(child, lark.Tree):
            return None
        node = child
    if isinstance(node, lark.Tree) and node.data == "ident":
        return str(node.children[0])
    return None


def _unwrap(node: lark.Tree) -> lark.Tree:
    while node.data in _WRAPPERS | {"primary"} and len(node.children) == 1:
        child = node.children[0]
        if not isinstance(child, lark.Tree):
            break
        node = child
    return node


def _cluster_chain(node: lark.Tree, bound: frozenset[str]) -> list[str] | None:
    """For a `member_dot` chain rooted at the `cluster` variable, its field names (outermost last)."""
    names: list[str] = []
    cur = _unwrap(node)
    while cur.data == "member_dot":
        names.append(str(cur.children[1]))
        cur = _unwrap(cur.children[0])
    if names and ident_name(cur) == "cluster" and "cluster" not in bound:
        return list(reversed(names))
    return None


def _walk(node: lark.Tree, bound: frozenset[str], w: _Walk, *, under_dot: bool = False) -> None:
    data = node.data
    if data == "member_dot":
        chain = _cluster_chain(node, bound)
        if chain is not None:
            if not under_dot:
                w.paths.add(tuple(chain[:2]))
            if chain[0] not in CLUSTER_FIELDS:
                line, col = _pos(node.children[1])
                w.problems.append(
                    (line, col, f"cluster has no field {chain[0]!r} (fields: {', '.join(CLUSTER_FIELDS)})")
                )
            inner = _unwrap(node.children[0])
            if inner.data == "member_dot":
                _walk(inner, bound, w, under_dot=True)
            return
        for c in node.children:
            if isinstance(c, lark.Tree):
                _walk(c, bound, w)
        return
    if data == "ident":
        name = str(node.children[0])
        if name == "cluster" and name not in bound:
            w.paths.add(())
        elif name not in bound and name not in _TYPE_NAMES:
            line, col = _pos(node)
            w.problems.append(
                (line, col, f"undeclared reference to {name!r} (the only variable is 'cluster')")
            )
        return
    if data == "ident_arg":
        name_tok = node.children[0]
        name = str(name_tok)
        if name not in functions.KNOWN_FUNCTIONS:
            line, col = _pos(name_tok)
            w.problems.append((line, col, f"unknown function {name!r}"))
        if name == "has":
            args = node.children[1] if len(node.children) > 1 else None
            exprs = (
                [c for c in args.children if isinstance(c, lark.Tree)] if isinstance(args, lark.Tree) else []
            )
            if len(exprs) != 1 or _unwrap(exprs[0]).data != "member_dot":
                line, col = _pos(name_tok)
                w.problems.append(
                    (line, col, "has() needs one field selection, like has(cluster.facts.tier)")
                )
        for c in node.children[1:]:
            if isinstance(c, lark.Tree):
                _walk(c, bound, w)
        return
    if data == "member_dot_arg":
        member, method = node.children[0], node.children[1]
        name = str(method)
        line, col = _pos(method)
        if name in _REFUSED_MACROS:
            w.problems.append((line, col, f"{name}() is not supported (not standard CEL)"))
            return
        elif name in _MACROS:
            args = node.children[2] if len(node.children) > 2 else None
            exprs = (
                [c for c in args.children if isinstance(c, lark.Tree)] if isinstance(args, lark.Tree) else []
            )
            var = ident_name(exprs[0]) if len(exprs) == 2 else None
            if var is None:
                w.problems.append((line, col, f"{name}() needs a variable and an expression: {name}(x, ...)"))
            else:
                _walk(member, bound, w)
                _walk(exprs[1], bound | {var}, w)
            return
        elif name not in functions.KNOWN_FUNCTIONS:
            w.problems.append((line, col, f"unknown function {name!r}"))
        for c in node.children:
            if isinstance(c, lark.Tree):
                _walk(c, bound, w)
        return
    for c in node.children:
        if isinstance(c, lark.Tree):
            _walk(c, bound, w)


def _result_type_problem(tree: lark.Tree) -> str | None:
    """A description of the result type when it is surely not a bool, else None."""
    node = _unwrap(tree)
    data = node.data
    first = node.children[0] if node.children else None
    if data in ("addition", "multiplication") or (
        data == "unary" and isinstance(first, lark.Tree) and first.data == "unary_neg"
    ):
        return "an arithmetic or concatenation value"
    if data in ("list_lit", "map_lit"):
        return "a list" if data == "list_lit" else "a map"
    if data == "literal":
        tok = str(node.children[0])
        return None if tok in ("true", "false") else f"the literal {tok}"
    if data == "ident" and str(node.children[0]) == "cluster":
        return "a map"
    if data == "member_dot":
        chain = _cluster_chain(node, frozenset())
        if chain is not None and len(chain) == 1:
            return "a string" if chain[0] == "name" else "a map"
        if chain is not None and len(chain) == 2 and chain[0] in ("labels", "annotations"):
            return "a string"
    if data == "member_dot_arg" and str(node.children[1]) in _NON_BOOL_METHODS:
        return f"the value of {node.children[1]}()"
    if data == "ident_arg" and str(node.children[0]) in _NON_BOOL_FUNCTIONS:
        return f"the value of {node.children[0]}()"
    return None


_NON_BOOL_METHODS = frozenset(
    {"size", "lowerAscii", "upperAscii", "split", "major", "minor", "patch", "compareTo", "map", "filter"}
)
_NON_BOOL_FUNCTIONS = frozenset(
    {"size", "int", "uint", "double", "string", "bytes", "semver", "duration", "timestamp"}
)


@dataclass(frozen=True)
class _Parsed:
    tree: lark.Tree | None
    problems: tuple[tuple[int, int, str], ...]
    paths: frozenset[tuple[str, ...]]


@functools.lru_cache(maxsize=1024)
def parse(source: str) -> _Parsed:
    if not isinstance(source, str) or not source.strip():
        return _Parsed(None, ((1, 1, "empty expression"),), frozenset())
    if len(source) > MAX_LENGTH:
        return _Parsed(
            None, ((1, 1, f"expression is {len(source)} characters long (limit {MAX_LENGTH})"),), frozenset()
        )
    deepest, line, col = _nesting(source)
    if deepest > MAX_NESTING:
        return _Parsed(
            None, ((line, col, f"brackets nested {deepest} deep (limit {MAX_NESTING})"),), frozenset()
        )
    env = functions.environment()
    try:
        tree = env.compile(source)
    except celpy.celparser.CELParseError as e:
        line, col = e.line or 1, e.column or 1
        at_end = line == source.count("\n") + 1 and col > len(source.rsplit("\n", 1)[-1].rstrip())
        what = "unexpected end of expression" if at_end else "unexpected input"
        return _Parsed(None, ((line, col, f"syntax error: {what}"),), frozenset())
    except RecursionError:
        return _Parsed(None, ((1, 1, "expression is too deeply nested"),), frozenset())
    depth = _depth(tree)
    if depth > MAX_DEPTH:
        return _Parsed(
            None,
            ((1, 1, f"expression is {depth} levels deep (limit {MAX_DEPTH}); split it up"),),
            frozenset(),
        )
    w = _Walk()
    _walk(tree, frozenset(), w)
    kind = _result_type_problem(tree)
    if kind is not None:
        w.problems.append((1, 1, f"the result must be a bool, but this expression yields {kind}"))
    return _Parsed(tree, tuple(sorted(set(w.problems))), frozenset(w.paths))


def check(source: str) -> list[tuple[int, int, str]]:
    """Compile problems of a CEL expression as (line, column, message), within the expression; [] if fine."""
    return list(parse(source).problems)
