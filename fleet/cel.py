"""CEL placement expressions: static checks, compilation (cached) and bounded evaluation.

Owns: `check` (problems as (line, column, message) for `fleet validate`), `compile` (a cached `Program`),
`evaluate` (one activation -> bool, under a step budget), `evaluate_many` (the async helper that runs a
batch in a worker thread), and the functions fleet adds to cel-python: `lowerAscii`, `upperAscii`,
`split`, `semver` with `isGreaterThan`/`isLessThan`/`compareTo`/`major`/`minor`/`patch`.
Does not: decide placement (`fleet.placement` does), read files, or log anything.

Cost guard. cel-python has no cost limit and can run for seconds on nested comprehensions, so:

* `check` bounds the source length (`MAX_LENGTH`), bracket nesting (`MAX_NESTING`) and parse-tree depth
  (`MAX_DEPTH`), and refuses cel-python's non-standard `reduce`/`min` macros (a doubling `reduce` can
  build an exponentially large string in a few steps);
* `evaluate` runs cel-python's interpreted evaluator with one extra hook, `_BudgetEvaluator._visit_tree`,
  that counts every node visited (including those of comprehension bodies, which cel-python evaluates
  with sub-evaluators that share the counter) and raises when the step budget or the wall-clock
  deadline is exhausted. The evaluation really stops: no thread keeps burning a core afterwards.
  `matches()` uses RE2 (linear time, no catastrophic backtracking, bounded memory, no logging).

Speed. cel-python's interpreter manages a few thousand evaluations per second, so `Program` memoises
results on the *projection* of the activation that the expression reads: the static walk records which
`cluster.<field>.<key>` paths it uses, and two clusters that agree on those values get the same result
(CEL is pure). Expressions that read a cluster's name gain nothing; ones over labels and facts do.

Messages never embed the activation (cel-python's "undeclared reference" message embeds all of it, and
its field-selection message the value): `_sanitise` keeps the first clause and drops values. cel-python's
own loggers are silenced for the same reason.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import anyio.to_thread
import celpy
import celpy.adapter
import celpy.celparser
import celpy.celtypes
import celpy.evaluation
import lark
import re2
import semver

from fleet import errors

MAX_LENGTH = 4096  # characters of source
MAX_NESTING = 24  # (), [] and {} nesting
MAX_DEPTH = 400  # parse-tree depth (a chain of 60 `&&` is ~70 deep)
DEFAULT_BUDGET = (
    10_000  # evaluator steps (node visits, ~6 us each); a typical placement expression takes 50-150
)
DEFAULT_TIMEOUT = 1.0  # seconds of wall clock per evaluation, checked inside the evaluator
DEFAULT_TOTAL_TIME_LIMIT = 5.0  # seconds for one expression over a whole batch of clusters
MEMO_SIZE = 4096  # memoised results per program

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
# Extra functions.


class SemverValue:
    """A semantic version inside CEL (the value `semver(s)` returns)."""

    __slots__ = ("version",)

    def __init__(self, version: semver.Version) -> None:
        self.version = version

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SemverValue) and self.version == other.version

    def __hash__(self) -> int:
        return hash(self.version)

    def __repr__(self) -> str:
        return f"semver({str(self.version)!r})"


def parse_semver(text: str) -> semver.Version:
    """A version from "1.30", "v1.30.2", "1.30.2-rc.1": leading v dropped, missing minor/patch are 0."""
    t = text.strip()
    if t[:1] in ("v", "V"):
        t = t[1:]
    return semver.Version.parse(t, optional_minor_and_patch=True)


def _err(message: str) -> celpy.evaluation.CELEvalError:
    return celpy.evaluation.CELEvalError(message, ValueError, ())


def _as_semver(value: Any, fn: str) -> SemverValue | celpy.evaluation.CELEvalError:
    if isinstance(value, SemverValue):
        return value
    if isinstance(value, str):
        try:
            return SemverValue(parse_semver(value))
        except ValueError:
            return _err(f"{fn}: argument is not a semantic version (expected [v]MAJOR[.MINOR[.PATCH]])")
    return _err(f"{fn}: expects a string or a semver, got {type(value).__name__}")


def _fn_semver(value: Any) -> Any:
    return _as_semver(value, "semver()")


def _compare(a: Any, b: Any, fn: str) -> int | celpy.evaluation.CELEvalError:
    if not isinstance(a, SemverValue):
        return _err(f"{fn}: receiver is not a semver (use semver(s).{fn.rstrip('()')}(...))")
    other = _as_semver(b, fn)
    if isinstance(other, celpy.evaluation.CELEvalError):
        return other
    return a.version.compare(other.version)


def _fn_greater(a: Any, b: Any) -> Any:
    c = _compare(a, b, "isGreaterThan()")
    return c if isinstance(c, celpy.evaluation.CELEvalError) else celpy.celtypes.BoolType(c > 0)


def _fn_less(a: Any, b: Any) -> Any:
    c = _compare(a, b, "isLessThan()")
    return c if isinstance(c, celpy.evaluation.CELEvalError) else celpy.celtypes.BoolType(c < 0)


def _fn_compare(a: Any, b: Any) -> Any:
    c = _compare(a, b, "compareTo()")
    return c if isinstance(c, celpy.evaluation.CELEvalError) else celpy.celtypes.IntType(c)


def _part(name: str) -> Any:
    def fn(a: Any) -> Any:
        if not isinstance(a, SemverValue):
            return _err(f"{name}(): receiver is not a semver")
        return celpy.celtypes.IntType(getattr(a.version, name))

    return fn


def _string_fn(name: str, op: Any) -> Any:
    def fn(s: Any, *args: Any) -> Any:
        if not isinstance(s, str):
            return _err(f"{name}(): receiver is not a string")
        return op(s, *args)

    return fn


def _split(s: str, sep: Any = None, limit: Any = None) -> Any:
    if not isinstance(sep, str):
        return _err("split(): separator must be a string")
    if limit is not None and not isinstance(limit, int):
        return _err("split(): limit must be an int")
    if sep == "":
        parts = list(s)
    elif limit is None or limit < 0:
        parts = s.split(sep)
    elif limit == 0:
        parts = []
    else:
        parts = s.split(sep, limit - 1)
    return celpy.celtypes.ListType([celpy.celtypes.StringType(p) for p in parts])


def _ascii_lower(s: str) -> Any:
    return celpy.celtypes.StringType("".join(c.lower() if c.isascii() else c for c in s))


def _ascii_upper(s: str) -> Any:
    return celpy.celtypes.StringType("".join(c.upper() if c.isascii() else c for c in s))


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # re2 would log the pattern (possibly a cluster's value) on stderr
_RE2_OPTIONS.max_mem = 8 << 20


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error:
        return None


def _fn_matches(text: Any, pattern: Any) -> Any:
    """`matches()` with RE2 (linear time), without logging or echoing the pattern."""
    if not isinstance(text, str) or not isinstance(pattern, str):
        return _err("matches(): expects a string and a pattern string")
    compiled = _regex(pattern)
    if compiled is None:
        return _err("matches(): invalid regular expression")
    return celpy.celtypes.BoolType(compiled.search(text) is not None)


FUNCTIONS: Mapping[str, Any] = {
    "matches": _fn_matches,
    "lowerAscii": _string_fn("lowerAscii", _ascii_lower),
    "upperAscii": _string_fn("upperAscii", _ascii_upper),
    "split": _string_fn("split", _split),
    "semver": _fn_semver,
    "isGreaterThan": _fn_greater,
    "isLessThan": _fn_less,
    "compareTo": _fn_compare,
    "major": _part("major"),
    "minor": _part("minor"),
    "patch": _part("patch"),
}

KNOWN_FUNCTIONS = frozenset(
    {k for k in celpy.evaluation.base_functions if k[:1].isalpha()} | set(FUNCTIONS) | {"has"}
)


# ----------------------------------------------------------------------------------------------------------
# The environment (created once: `celpy.Environment()` sets the process recursion limit).

_env_lock = threading.Lock()
_env: celpy.Environment | None = None


def _environment() -> celpy.Environment:
    global _env
    with _env_lock:
        if _env is None:
            # cel-python logs activations and arguments (debug, and error on unexpected exceptions).
            celpy_log = logging.getLogger("celpy")
            celpy_log.setLevel(logging.CRITICAL + 1)
            celpy_log.propagate = False
            _env = celpy.Environment()
        return _env


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


def _ident_name(node: lark.Tree) -> str | None:
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
    if names and _ident_name(cur) == "cluster" and "cluster" not in bound:
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
        if name not in KNOWN_FUNCTIONS:
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
            var = _ident_name(exprs[0]) if len(exprs) == 2 else None
            if var is None:
                w.problems.append((line, col, f"{name}() needs a variable and an expression: {name}(x, ...)"))
            else:
                _walk(member, bound, w)
                _walk(exprs[1], bound | {var}, w)
            return
        elif name not in KNOWN_FUNCTIONS:
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
def _parse(source: str) -> _Parsed:
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
    env = _environment()
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
    return list(_parse(source).problems)


# ----------------------------------------------------------------------------------------------------------
# Programs and evaluation.


class _BudgetExceeded(Exception):
    """Raised from inside the evaluator when the step budget or the deadline is exhausted."""


class _Budget:
    __slots__ = ("deadline", "left", "limit")

    def __init__(self, steps: int, time_limit: float) -> None:
        self.left = steps
        self.limit = steps
        self.deadline = time.monotonic() + time_limit


class _BudgetEvaluator(celpy.evaluation.Evaluator):
    """cel-python's interpreter, counting node visits against a shared budget."""

    def __init__(self, ast: lark.Tree, activation: celpy.evaluation.Activation, budget: _Budget) -> None:
        super().__init__(ast, activation)
        self.budget = budget

    def sub_evaluator(self, ast: lark.Tree) -> celpy.evaluation.Evaluator:
        return _BudgetEvaluator(ast, self.activation, self.budget)

    def _visit_tree(self, tree: lark.Tree) -> Any:
        b = self.budget
        b.left -= 1
        if b.left <= 0:
            raise _BudgetExceeded(f"evaluation exceeded its budget of {b.limit} steps")
        if b.left & 63 == 0 and time.monotonic() > b.deadline:
            raise _BudgetExceeded("evaluation exceeded its time limit")
        return super()._visit_tree(tree)


@dataclass(eq=False)
class Program:
    """A compiled expression. Build with `compile` (cached per source)."""

    source: str
    runner: celpy.Runner
    paths: frozenset[tuple[str, ...]]
    base: celpy.evaluation.Activation | None = None  # built once; each evaluation clones it
    memo: dict[str, bool | str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def projection(self, cluster: Mapping[str, Any]) -> str | None:
        """The part of `cluster` this expression can read, as a canonical key; None: all of it."""
        if () in self.paths:
            return None
        parts = []
        for path in sorted(self.paths):
            value: Any = cluster
            present = True
            for p in path:
                if isinstance(value, Mapping) and p in value:
                    value = value[p]
                else:
                    present = False
                    break
            parts.append([list(path), present, value if present else None])
        try:
            return json.dumps(parts, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            return None


@functools.lru_cache(maxsize=1024)
def compile(source: str) -> Program:
    """Compile (and cache) an expression; raises `errors.PlacementError` listing its check problems."""
    parsed = _parse(source)
    if parsed.problems or parsed.tree is None:
        line, col, msg = (parsed.problems or ((1, 1, "invalid expression"),))[0]
        raise errors.PlacementError(f"cel: {line}:{col}: {msg}")
    env = _environment()
    runner = env.program(parsed.tree, functions=dict(FUNCTIONS))
    return Program(source=source, runner=runner, paths=parsed.paths, base=runner.new_activation())


_TOKEN = re.compile(r"Token\('RULE', '(\w+)'\)")
_CLASS = re.compile(r"<class '(?:[\w]+\.)*(\w+)'>")
_FIELD_SELECTION = re.compile(r"with type: '<class '([\w.]+)'>' does not support field selection")


def _sanitise(err: BaseException) -> str:
    """An evaluation error's message without any value from the activation."""
    raw = str(err.args[0]) if err.args else type(err).__name__
    m = _FIELD_SELECTION.search(raw)
    if m:
        raw = f"a value of type {m.group(1).rsplit('.', 1)[-1]} does not support field selection"
    raw = raw.split(" (in activation", 1)[0].split(" (in container", 1)[0]
    raw = _TOKEN.sub(lambda t: t.group(1), raw)
    raw = _CLASS.sub(lambda t: t.group(1).replace("Type", "").lower(), raw)
    raw = raw.splitlines()[0] if raw else "evaluation error"
    if len(raw) > 200:
        raw = raw[:200] + "..."
    line = getattr(err, "line", None)
    column = getattr(err, "column", None)
    where = f" at {line}:{column}" if line else ""
    return f"{raw}{where}"


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _leaves(v)


def _scrub(message: str, activation: Mapping[str, Any]) -> str:
    """Belt and braces: replace any string value of the activation (3+ characters) in `message`."""
    for leaf in sorted(set(_leaves(activation)), key=len, reverse=True):
        if len(leaf) >= 3 and leaf in message:
            message = message.replace(leaf, "<value>")
    return message


def evaluate(
    program: Program,
    activation: Mapping[str, Any],
    *,
    budget: int = DEFAULT_BUDGET,
    time_limit: float = DEFAULT_TIMEOUT,
) -> bool:
    """Evaluate `program` for `activation` (``{"cluster": {...}}``), at most `budget` steps and `time_limit`
    seconds. Raises `errors.PlacementError` (message free of activation values) on any failure:
    an evaluation error, a non-bool result, an exhausted budget."""
    cluster = activation.get("cluster")
    key = program.projection(cluster) if isinstance(cluster, Mapping) and len(activation) == 1 else None
    if key is not None:
        key = f"{budget}|{key}"  # a budget error depends on the budget
    if key is not None:
        hit = program.memo.get(key)
        if hit is not None:
            if isinstance(hit, str):
                raise errors.PlacementError(hit)
            return hit
    try:
        result = _evaluate(program, activation, budget=budget, time_limit=time_limit)
    except errors.PlacementError as e:
        if key is not None and "time limit" not in str(e):  # a step budget is deterministic, a clock not
            _remember(program, key, str(e))
        raise
    if key is not None:
        _remember(program, key, result)
    return result


def _remember(program: Program, key: str, value: bool | str) -> None:
    with program.lock:
        if len(program.memo) >= MEMO_SIZE:
            program.memo.clear()
        program.memo[key] = value


def _evaluate(program: Program, activation: Mapping[str, Any], *, budget: int, time_limit: float) -> bool:
    try:
        context = celpy.adapter.json_to_cel(dict(activation))
    except (TypeError, ValueError) as e:
        raise errors.PlacementError(
            f"cel: the cluster holds a value CEL cannot represent ({type(e).__name__})"
        ) from None
    runner = program.runner
    base = program.base if program.base is not None else runner.new_activation()
    evaluator = _BudgetEvaluator(runner.ast, base, _Budget(budget, time_limit))
    try:
        value = evaluator.evaluate(cast(Any, context))
    except _BudgetExceeded as e:
        raise errors.PlacementError(f"cel: {e}") from None
    except celpy.evaluation.CELEvalError as e:
        raise errors.PlacementError(f"cel: {_scrub(_sanitise(e), activation)}") from None
    except RecursionError:
        raise errors.PlacementError("cel: expression nests too deeply to evaluate") from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError) as e:
        raise errors.PlacementError(f"cel: evaluation failed ({type(e).__name__})") from None
    if isinstance(value, celpy.celtypes.BoolType) or isinstance(value, bool):
        return bool(value)
    return_type = type(value).__name__.replace("Type", "").lower() or "value"
    raise errors.PlacementError(f"cel: the result must be a bool, got {return_type}")


def evaluate_batch(
    program: Program,
    activations: Sequence[Mapping[str, Any]],
    *,
    budget: int = DEFAULT_BUDGET,
    time_limit: float = DEFAULT_TIMEOUT,
    total_time_limit: float = DEFAULT_TOTAL_TIME_LIMIT,
) -> list[bool | errors.PlacementError]:
    """`evaluate` for each activation, errors returned in place (blocking: call it off the event loop).

    `total_time_limit` bounds the whole batch: once spent, the remaining activations get an error instead of
    an evaluation, so one runaway expression over a thousand clusters cannot hold a core for minutes."""
    out: list[bool | errors.PlacementError] = []
    stop = time.monotonic() + total_time_limit
    for act in activations:
        if time.monotonic() > stop:
            out.append(
                errors.PlacementError(
                    f"cel: evaluation skipped: this expression spent its {total_time_limit:g} s"
                )
            )
            continue
        try:
            out.append(evaluate(program, act, budget=budget, time_limit=time_limit))
        except errors.PlacementError as e:
            out.append(e)
    return out


async def evaluate_many(
    program: Program,
    activations: Sequence[Mapping[str, Any]],
    *,
    budget: int = DEFAULT_BUDGET,
    time_limit: float = DEFAULT_TIMEOUT,
    total_time_limit: float = DEFAULT_TOTAL_TIME_LIMIT,
    limiter: anyio.CapacityLimiter | None = None,
) -> list[bool | errors.PlacementError]:
    """`evaluate_batch` in a worker thread, so the event loop stays free. Each evaluation is bounded by
    its step budget and deadline, so the thread always finishes promptly."""
    return await anyio.to_thread.run_sync(
        functools.partial(
            evaluate_batch,
            program,
            activations,
            budget=budget,
            time_limit=time_limit,
            total_time_limit=total_time_limit,
        ),
        limiter=limiter,
    )
