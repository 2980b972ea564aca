"""CEL placement expressions: static checks, compilation (cached), and evaluation under a cost budget.

Owns: `check` (problems as (line, column, message) for `fleet validate`), `compile` (a `Program`, cached
per source text), `prepare` (an activation converted once, to be shared by every expression), `evaluate`
(one activation -> bool), `evaluate_batch`/`evaluate_many` (one expression over many clusters, under a
total budget; the async one in a worker thread), `run` (one evaluation's value and cost, for tests and
benchmarks), and the functions fleet adds to cel-python: `lowerAscii`, `upperAscii`, `split`, `semver`
with `isGreaterThan`/`isLessThan`/`compareTo`/`major`/`minor`/`patch`.
Does not: decide placement (`fleet.core.placement` does), read files, or log anything.

Cost. What is too expensive is decided by counting, never by the clock, so the same expression on the
same clusters gives the same answer every run, however loaded the machine (docs/placement.md, "Cost"):

* `check` bounds the source length (`MAX_LENGTH`), bracket nesting (`MAX_NESTING`) and parse-tree depth
  (`MAX_DEPTH`), and refuses cel-python's non-standard `reduce`/`min` macros (a doubling `reduce` can
  build an exponentially large string in a few steps);
* each evaluation counts steps (see "Cost" below: node visits, a macro's body once per element, plus
  the size of the operands of every function call) and stops with `BudgetExceeded` past `budget`
  (`DEFAULT_BUDGET`); a batch (one bundle's expression over its clusters) stops past `total_budget`
  (`DEFAULT_TOTAL_BUDGET`) and every pair of it is then an error;
* the wall clock is only a safety net (`SAFETY_NET_SECONDS` per evaluation, `SafetyNetStop`): it stops a
  runaway the step count cannot see, says so in its message (`transient`), and is never cached.
  The evaluation really stops: no thread keeps burning a core afterwards. `matches()` uses RE2 (linear
  time, no catastrophic backtracking, bounded memory, no logging).

Speed. cel-python's interpreter manages a few thousand evaluations per second, so: programs are compiled
once per expression text; a cluster is converted for CEL once (`prepare`, shared by every expression);
`_FastCompiler` evaluates what `check` admits with closures that mirror the interpreter node for node
(same functions, values, errors and step counts; tests/test_cel_fast.py compares them on generated
expressions), about ten times faster; and `Program` memoises outcomes on the *projection* of the
activation that the expression reads: the static walk records which `cluster.<field>.<key>` paths it
uses, and two clusters that agree on those values share one evaluation (CEL is pure). Expressions that
read a cluster's name gain nothing from the memo; ones over labels and facts do.

Messages never embed the activation (cel-python's "undeclared reference" message embeds all of it, and
its field-selection message the value): `_sanitise` keeps the first clause and drops values. cel-python's
own loggers are silenced for the same reason.
"""

from __future__ import annotations

import datetime
import functools
import logging
import operator
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
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

from fleet.core import errors

MAX_LENGTH = 4096  # characters of source
MAX_NESTING = 24  # (), [] and {} nesting
MAX_DEPTH = 400  # parse-tree depth (a chain of 60 `&&` is ~70 deep)
DEFAULT_BUDGET = 10_000  # steps for one evaluation; a typical placement expression takes 30-300
DEFAULT_TOTAL_BUDGET = 5_000_000  # steps for one expression over all the clusters of one batch (bundle)
SIZE_UNIT = 100  # one extra step per this many characters/elements in the operands of a call
SAFETY_NET_SECONDS = 10.0  # wall clock for one evaluation: a last resort, not a budget
MEMO_SIZE = 4096  # memoised outcomes per program

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
# Cost.
#
# The cost of one evaluation is counted in steps: one per expression node the evaluator visits (a macro's
# body is visited once per element, so `l.all(x, ...)` costs the body's steps times the list's length),
# plus, for every call of a function or operator, one step per full `SIZE_UNIT` characters, bytes, list
# elements or map entries of its operands together (`big.matches(...)`, `a + b` of long strings, `x in
# list`). The count depends only on the expression and the cluster, never on the machine or its load:
# the same expression on the same data costs the same, every run. Both evaluators (cel-python's
# interpreter and the fast evaluator below) count exactly the same steps.


class _Stop(Exception):
    """Raised from inside an evaluation to end it: the step budget or the safety net is spent."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind  # "budget" (deterministic) or "safety-net" (wall clock)


class _Budget:
    __slots__ = ("deadline", "left", "limit")

    def __init__(self, steps: int, time_limit: float) -> None:
        self.left = steps
        self.limit = steps
        self.deadline = time.monotonic() + time_limit

    @property
    def spent(self) -> int:
        return min(self.limit - self.left, self.limit)


def _ticks(b: _Budget, n: int) -> None:
    """Count `n` node visits; the wall clock is looked at about every 64 steps."""
    left = b.left - n
    b.left = left
    if left <= 0:
        raise _Stop("budget")
    if (left + n) >> 6 != left >> 6 and time.monotonic() > b.deadline:
        raise _Stop("safety-net")


_local = threading.local()  # the budget of the evaluation running on this thread, for `_charged`
_SIZED = (str, bytes, list, dict)


def _charged(fn: Any) -> Any:
    """`fn`, charging the current evaluation one step per `SIZE_UNIT` of its operands' sizes."""

    def call(*args: Any) -> Any:
        b = getattr(_local, "budget", None)
        if b is not None:
            size = 0
            for a in args:
                if isinstance(a, _SIZED):
                    size += len(a)
            if size >= SIZE_UNIT:
                n = size // SIZE_UNIT
                b.left -= n
                if b.left <= 0:
                    raise _Stop("budget")
                if time.monotonic() > b.deadline:
                    raise _Stop("safety-net")
        return fn(*args)

    call.__name__ = getattr(fn, "__name__", "function")
    return call


# Logical operators take bools (or errors) only: nothing to charge, and they are the hottest calls.
_UNCHARGED = frozenset({"_&&_", "_||_", "!_", "_?_:_", "-_"})


# cel-python's comparisons (`bool_eq` is ``boolean(operator.eq)(a, b)``) build their wrapper on every
# call, a quarter of a simple expression's time: the same wrappers, built once.
_COMPARISONS = {
    "_<_": operator.lt,
    "_<=_": operator.le,
    "_>_": operator.gt,
    "_>=_": operator.ge,
    "_==_": operator.eq,
    "_!=_": operator.ne,
}


@functools.lru_cache(maxsize=1)
def _program_functions() -> dict[str, Any]:
    """Every function a program may call (cel-python's and fleet's), charged by operand size. Types
    (`int`, `string`, ...) stay as they are: they are also values (`type(x) == string`)."""
    out: dict[str, Any] = {}
    comparisons = {name: celpy.evaluation.boolean(op) for name, op in _COMPARISONS.items()}
    for name, fn in {**celpy.evaluation.base_functions, **comparisons, **FUNCTIONS}.items():
        if isinstance(fn, type) or name in _UNCHARGED:
            if name in FUNCTIONS:
                out[name] = fn
            continue
        out[name] = _charged(fn)
    return out


class _BudgetEvaluator(celpy.evaluation.Evaluator):
    """cel-python's interpreter, counting node visits against a shared budget."""

    def __init__(self, ast: lark.Tree, activation: celpy.evaluation.Activation, budget: _Budget) -> None:
        super().__init__(ast, activation)
        self.budget = budget

    def sub_evaluator(self, ast: lark.Tree) -> celpy.evaluation.Evaluator:
        return _BudgetEvaluator(ast, self.activation, self.budget)

    def _visit_tree(self, tree: lark.Tree) -> Any:
        _ticks(self.budget, 1)
        return super()._visit_tree(tree)


# ----------------------------------------------------------------------------------------------------------
# The fast evaluator.
#
# cel-python's interpreter spends most of its time in its own machinery (a lark visitor per node, typing
# casts, activation clones per macro element), ~15 us per node. `_FastCompiler` turns a parse tree into
# nested Python closures once per expression that do what the interpreter does, node for node: the same
# cel-python functions and types on the same values, the same errors (message, position), the same
# evaluation order, and the same step count (each closure counts the nodes the interpreter would visit).
# It refuses (`_Unsupported`, and the program keeps the interpreter) anything outside what `check`
# admits. tests/test_cel_fast.py compares both evaluators on generated expressions and clusters.

_Fn = Callable[[dict[str, Any], _Budget], Any]
_CELEvalError = celpy.evaluation.CELEvalError
_BoolType = celpy.celtypes.BoolType
_ListType = celpy.celtypes.ListType
_MapType = celpy.celtypes.MapType
_NameContainer = celpy.evaluation.NameContainer
_MessageType = celpy.celtypes.MessageType


class _Unsupported(Exception):
    """A construct the fast evaluator does not mirror; the interpreter evaluates the expression."""


_BINARY = {
    "relation": {
        "relation_lt": "_<_",
        "relation_le": "_<=_",
        "relation_ge": "_>=_",
        "relation_gt": "_>_",
        "relation_eq": "_==_",
        "relation_ne": "_!=_",
        "relation_in": "_in_",
    },
    "addition": {"addition_add": "_+_", "addition_sub": "_-_"},
    "multiplication": {"multiplication_div": "_/_", "multiplication_mul": "_*_", "multiplication_mod": "_%_"},
}
_UNARY = {"unary_not": "!_", "unary_neg": "-_"}
_INTERPRETER_MACROS = frozenset({"map", "filter", "all", "exists", "exists_one", "reduce", "min"})


def _eval_error(text: str, ex: BaseException, **where: Any) -> _CELEvalError:
    value = _CELEvalError(text, ex.__class__, ex.args, **where)
    value.__cause__ = ex
    return value


def _seal(n: int, body: _Fn) -> _Fn:
    """`body`, after counting `n` visits (of the nodes that lead to it without doing anything else)."""
    if n == 0:
        return body

    def sealed(v: dict[str, Any], b: _Budget) -> Any:
        left = b.left - n
        b.left = left
        if left <= 0:
            raise _Stop("budget")
        if (left + n) >> 6 != left >> 6 and time.monotonic() > b.deadline:
            raise _Stop("safety-net")
        return body(v, b)

    return sealed


class _FastCompiler:
    def __init__(self, activation: celpy.evaluation.Activation) -> None:
        self.activation = activation
        self.functions = activation.functions
        self.reserved = frozenset(activation.identifiers)  # names the interpreter resolves specially

    def compile(self, tree: lark.Tree, variables: frozenset[str]) -> _Fn | None:
        try:
            return self.fn(tree, variables)
        except _Unsupported:
            return None

    def fn(self, tree: Any, scope: frozenset[str]) -> _Fn:
        return _seal(*self.node(tree, scope))

    def node(self, tree: Any, scope: frozenset[str]) -> tuple[int, _Fn]:
        """(visits to count first, then the closure) for `tree`."""
        if not isinstance(tree, lark.Tree):
            raise _Unsupported(repr(tree))
        kids = tree.children
        data = tree.data
        if data in ("expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication"):
            if len(kids) == 1:
                n, body = self.node(kids[0], scope)
                return n + 1, body
        if (data == "unary" and len(kids) == 1) or data == "member":
            if len(kids) != 1:
                raise _Unsupported(data)
            n, body = self.node(kids[0], scope)
            return n + 1, body
        method = getattr(self, f"_{data}", None)
        if method is None:
            raise _Unsupported(data)
        return cast(tuple[int, _Fn], method(tree, scope))

    def _trees(self, kids: Sequence[Any]) -> None:
        if not all(isinstance(k, lark.Tree) for k in kids):
            raise _Unsupported("token")

    def _expr(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, _Fn]:
        kids = tree.children
        if len(kids) != 3:
            raise _Unsupported("expr")
        self._trees(kids)
        n, cond = self.node(kids[0], scope)  # evaluated first: its visits are counted with this node's
        yes, no = (self.fn(k, scope) for k in kids[1:])
        func = self.functions["_?_:_"]

        def body(v: dict[str, Any], b: _Budget) -> Any:
            cv = cond(v, b)
            left = right = _BoolType(False)
            try:
                if cv:
                    left = yes(v, b)
                else:
                    right = no(v, b)
                return func(cv, left, right)
            except TypeError as ex:
                text = (
                    f"found no matching overload for _?_:_ "
                    f"applied to '({type(cv)}, {type(left)}, {type(right)})'"
                )
                return _eval_error(text, ex, tree=tree)

        return 1 + n, body

    def _logical(self, tree: lark.Tree, scope: frozenset[str], op: str) -> tuple[int, _Fn]:
        kids = tree.children
        if len(kids) != 2:
            raise _Unsupported(tree.data)
        self._trees(kids)
        n, lhs = self.node(kids[0], scope)
        rhs = self.fn(kids[1], scope)
        func = self.functions[op]

        def body(v: dict[str, Any], b: _Budget) -> Any:
            left = lhs(v, b)
            right = rhs(v, b)
            try:
                return func(left, right)
            except TypeError as ex:
                text = f"found no matching overload for {op} applied to '({type(left)}, {type(right)})'"
                return _eval_error(text, ex, tree=tree)

        return 1 + n, body

    def _conditionalor(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, _Fn]:
        return self._logical(tree, scope, "_||_")

    def _conditionaland(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, _Fn]:
        return self._logical(tree, scope, "_&&_")

    def _binary(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, _Fn]:
        kids = tree.children
        if len(kids) != 2:
            raise _Unsupported(tree.data)
        self._trees(kids)
        op_tree, right_tree = kids
        op_name = _BINARY[tree.data].get(op_tree.data)
        if op_name is None or len(op_tree.children) != 1:
            raise _Unsupported(op_tree.data)
        n, lhs = self.node(op_tree.children[0], scope)
        rhs = self.fn(right_tree, scope)
        func = self.functions[op_name]
        label = op_tree.data
        arithmetic = tree.data != "relation"
        division = tree.data == "multiplication"

        def body(v: dict[str, Any], b: _Budget) -> Any:
            left = lhs(v, b)
            right = rhs(v, b)
            try:
                return func(left, right)
            except TypeError as ex:
                text = f"found no matching overload for {label!r} applied to '({type(left)}, {type(right)})'"
                return _eval_error(text, ex, tree=tree)
            except ZeroDivisionError as ex:
                if not division:
                    raise
                return _eval_error("modulus or divide by zero", ex, tree=tree)
            except (ValueError, OverflowError) as ex:
                if not arithmetic:
                    raise
                return _eval_error("return error for overflow", ex, tree=tree)

        # The node itself and its operator node (`relation_eq`, ...) are visited before the operands.
        return 2 + n, body

    _relation = _binary
    _addition = _binary
    _multiplication = _binary

    def _unary(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, _Fn]:
        kids = tree.children
        if len(kids) != 2:
            raise _Unsupported("unary")
        self._trees(kids)
        op_tree, right_tree = kids
        op_name = _UNARY.get(op_tree.data)
        if op_name is None or op_tree.children:
            raise _Unsupported(op_tree.data)
        n, rhs = self.node(right_tree, scope)
        func = self.functions[op_name]
        label = op_tree.data

        def body(v: dict[str, Any], b: _Budget) -> Any:
            right = rhs(v, b)
            try:
                return func(right)
            except TypeError as ex:
                text = f"found no matching overload for {label!r} applied to '({type(right)})'"
                return _eval_error(text, ex, tree=tree)
            except ValueError as ex:
                return _eval_error("return error for overflow", ex, tree=tree)

        return 2 + n, body

    def _member_dot(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, _Fn]:
        kids = tree.children
        if len(kids) != 2 or not isinstance(kids[1], lark.Token):
            raise _Unsupported("member_dot")
        n, inner = self.node(kids[0], scope)
        prop = kids[1].value

        def body(v: dict[str, Any], b: _Budget) -> Any:
            member = inner(v, b)
            if isinstance(member, _CELEvalError):
                return member
            if isinstance(member, _NameContainer):
                if prop in member:
                    return member[prop].value
                return _CELEvalError(
                    f"No {prop!r} in bindings {sorted(member.keys())}", KeyError, None, tree=tree
                )
            if isinstance(member, _MessageType):
                return member.get(prop)
            if isinstance(member, _MapType):
                try:
                    return member[prop]
                except KeyError:
                    return _CELEvalError(f"no such member in mapping: {prop!r}", KeyError, None, tree=tree)
            text = f"{member!r} with type: '{type(member)}' does not support field selection"
            return _CELEvalError(text, TypeError, None, tree=tree)

        return 1 + n, body

    def _member_dot_arg(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, _Fn]:
        kids = tree.children
        if len(kids) not in (2, 3) or not isinstance(kids[1], lark.Token):
            raise _Unsupported("member_dot_arg")
        name = kids[1].value
        if name in _INTERPRETER_MACROS:
            return self._macro(tree, scope, name)
        if name not in self.functions:
            raise _Unsupported(name)
        function = self.functions[name]
        token = kids[1]
        n, inner = self.node(kids[0], scope)
        args = self.fn(kids[2], scope) if len(kids) == 3 else None

        def body(v: dict[str, Any], b: _Budget) -> Any:
            member = inner(v, b)
            exprlist = args(v, b) if args is not None else None
            if isinstance(member, _CELEvalError):
                return member
            if isinstance(exprlist, _CELEvalError):
                return exprlist
            try:
                return function(member, *(exprlist or []))
            except ValueError as ex:
                return _eval_error("return error for overflow", ex, token=token)
            except (TypeError, AttributeError) as ex:
                return _eval_error("no such overload", ex, token=token)

        return 1 + n, body

    def _macro(self, tree: lark.Tree, scope: frozenset[str], name: str) -> tuple[int, _Fn]:
        kids = tree.children
        if name in ("reduce", "min") or len(kids) != 3:
            raise _Unsupported(name)
        args = kids[2]
        if not isinstance(args, lark.Tree) or len(args.children) != 2:
            raise _Unsupported(name)
        var_tree, expr_tree = args.children
        var = _ident_name(var_tree)
        if var is None or var in self.reserved or len(list(var_tree.find_data("ident"))) != 1:
            raise _Unsupported(name)
        n, source = self.node(kids[0], scope)
        each = self.fn(expr_tree, scope | {var})

        if name in ("map", "filter", "exists_one"):

            def body(v: dict[str, Any], b: _Budget) -> Any:
                items = source(v, b)
                if isinstance(items, _CELEvalError):
                    return items

                def sub(item: Any) -> Any:
                    value = each({**v, var: item}, b)
                    if isinstance(value, _CELEvalError):
                        raise value
                    return value

                if name == "map":
                    return _ListType(map(sub, items))
                if name == "filter":
                    return _ListType(filter(sub, items))
                count = sum(1 for item in items if bool(sub(item)))
                return _BoolType(count == 1)

            return 1 + n, body

        combine: Any = celpy.evaluation.eval_error("no such overload", TypeError)(
            celpy.celtypes.logical_and if name == "all" else celpy.celtypes.logical_or
        )
        start = name == "all"

        def short_circuit_body(v: dict[str, Any], b: _Budget) -> Any:
            items = source(v, b)
            if isinstance(items, _CELEvalError):
                return items

            def sub(item: Any) -> Any:
                try:
                    return each({**v, var: item}, b)
                except _CELEvalError as ex:
                    return ex

            return functools.reduce(combine, map(sub, items), _BoolType(start))

        return 1 + n, short_circuit_body

    def _member_index(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, _Fn]:
        kids = tree.children
        if len(kids) != 2:
            raise _Unsupported("member_index")
        self._trees(kids)
        n, inner = self.node(kids[0], scope)
        index_fn = self.fn(kids[1], scope)
        func = self.functions["_[_]"]

        def body(v: dict[str, Any], b: _Budget) -> Any:
            member = inner(v, b)
            index = index_fn(v, b)
            try:
                return func(member, index)
            except TypeError as ex:
                text = f"found no matching overload for _[_] applied to '({type(member)}, {type(index)})'"
                return _eval_error(text, ex, tree=tree)
            except KeyError as ex:
                return _eval_error("no such key", ex, tree=tree)
            except IndexError as ex:
                return _eval_error("invalid_argument", ex, tree=tree)

        return 1 + n, body

    def _primary(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, _Fn]:
        kids = tree.children
        if len(kids) != 1 or not isinstance(kids[0], lark.Tree):
            raise _Unsupported("primary")
        child = kids[0]
        data = child.data
        if data == "literal":
            return 2, self._literal(child)
        if data == "paren_expr":
            if len(child.children) != 1:
                raise _Unsupported("paren_expr")
            n, body = self.node(child.children[0], scope)
            return 1 + n, body
        if data == "list_lit":
            if not child.children:
                return 1, lambda v, b: _ListType()
            if len(child.children) != 1:
                raise _Unsupported("list_lit")
            n, body = self.node(child.children[0], scope)
            return 1 + n, body
        if data == "map_lit":
            if not child.children:
                return 1, lambda v, b: _MapType()
            if len(child.children) != 1:
                raise _Unsupported("map_lit")
            n, inits = self.node(child.children[0], scope)  # counted before the try: same result

            def map_body(v: dict[str, Any], b: _Budget) -> Any:
                try:
                    return inits(v, b)
                except (ValueError, TypeError) as ex:
                    return _CELEvalError(ex.args[0], ex.__class__, ex.args, tree=tree)

            return 1 + n, map_body
        if data == "ident_arg":
            return 1, self._call(child, scope)
        if data == "ident":
            return 1, self._ident(child, scope)
        raise _Unsupported(data)

    def _literal(self, tree: lark.Tree) -> _Fn:
        interpreter = celpy.evaluation.Evaluator(tree, self.activation)
        try:
            value = interpreter.literal(tree)
        except Exception as ex:
            raise _Unsupported("literal") from ex
        if isinstance(value, _CELEvalError):
            return lambda v, b: interpreter.literal(tree)
        return lambda v, b: value

    def _ident(self, tree: lark.Tree, scope: frozenset[str]) -> _Fn:
        if len(tree.children) != 1 or not isinstance(tree.children[0], lark.Token):
            raise _Unsupported("ident")
        name = tree.children[0].value
        if name in self.reserved:
            raise _Unsupported(name)
        if name in scope:
            return lambda v, b: v[name]
        if name in self.functions:
            value = self.functions[name]
            return lambda v, b: value
        raise _Unsupported(name)  # an undeclared reference: the interpreter says so

    def _call(self, tree: lark.Tree, scope: frozenset[str]) -> _Fn:
        kids = tree.children
        if not kids or not isinstance(kids[0], lark.Token) or len(kids) > 2:
            raise _Unsupported("ident_arg")
        token = kids[0]
        name = token.value
        exprs: list[Any] = []
        if len(kids) == 2:
            if not isinstance(kids[1], lark.Tree) or kids[1].data != "exprlist":
                raise _Unsupported("ident_arg")
            exprs = list(kids[1].children)
        args = [self.fn(e, scope) for e in exprs]
        if name == "has":
            if not args:
                raise _Unsupported("has")

            def has_body(v: dict[str, Any], b: _Budget) -> Any:
                values = [a(v, b) for a in args]
                return _BoolType(not isinstance(values[0], _CELEvalError))

            return has_body
        if name == "dyn":
            if not args:
                raise _Unsupported("dyn")

            def dyn_body(v: dict[str, Any], b: _Budget) -> Any:
                values = [a(v, b) for a in args]
                return values[0]

            return dyn_body
        if name not in self.functions:
            raise _Unsupported(name)
        function = self.functions[name]

        def body(v: dict[str, Any], b: _Budget) -> Any:
            values = [a(v, b) for a in args]
            for value in values:
                if isinstance(value, _CELEvalError):
                    return value
            try:
                return function(*values)
            except ValueError as ex:
                return _eval_error("return error for overflow", ex, token=token)
            except (TypeError, AttributeError) as ex:
                return _eval_error("no such overload", ex, token=token)

        return body

    def _exprlist(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, _Fn]:
        args = [self.fn(e, scope) for e in tree.children]

        def body(v: dict[str, Any], b: _Budget) -> Any:
            values = [a(v, b) for a in args]
            for value in values:
                if isinstance(value, _CELEvalError):
                    return value
            return _ListType(values)

        return 1, body

    def _mapinits(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, _Fn]:
        args = [self.fn(e, scope) for e in tree.children]

        def body(v: dict[str, Any], b: _Budget) -> Any:
            result = _MapType()
            values = [a(v, b) for a in args]
            for key, value in zip(values[0::2], values[1::2], strict=False):
                if key in result:
                    raise ValueError(f"Duplicate key {key!r}")
                result[key] = value
            return result

        return 1, body


# ----------------------------------------------------------------------------------------------------------
# Programs and evaluation.


@dataclass(frozen=True, eq=False)
class Context:
    """One activation (``{"cluster": {...}}``) converted for CEL at most once, to be evaluated by any
    number of programs: `fleet.core.placement` prepares each cluster once per revision (`prepare`). The
    conversion happens on the first evaluation that needs it: a memoised outcome needs none."""

    raw: Mapping[str, Any]
    keys: dict[frozenset[tuple[str, ...]], Hashable | None] = field(default_factory=dict)  # memo keys

    @functools.cached_property
    def _converted(self) -> tuple[Any, str | None, dict[str, Any] | None]:
        try:
            value = to_cel(dict(self.raw))
        except (TypeError, ValueError) as e:
            return None, f"cel: the cluster holds a value CEL cannot represent ({type(e).__name__})", None
        variables = {str(k): v for k, v in cast(dict[str, Any], value).items()}
        return value, None, variables if set(variables) == {"cluster"} else None

    @property
    def value(self) -> Any:
        """The converted activation (a cel-python map), None when it cannot be converted."""
        return self._converted[0]

    @property
    def problem(self) -> str | None:
        """Why the activation cannot be converted, if it cannot."""
        return self._converted[1]

    @property
    def variables(self) -> dict[str, Any] | None:
        """The fast evaluator's view of the activation, for ``{"cluster": ...}`` only."""
        return self._converted[2]


_LEAF_TYPES = {
    bool: celpy.celtypes.BoolType,
    int: celpy.celtypes.IntType,
    str: celpy.celtypes.StringType,
}  # not float: 0.0 and -0.0 are equal keys but different values
_leaves_cache: dict[tuple[type, Any], Any] = {}  # converted scalars (immutable), shared by all clusters


def to_cel(document: Any) -> Any:
    """`celpy.adapter.json_to_cel`: the same conversion (same types, same order of checks, same errors),
    several times faster. cel-python checks `isinstance` against `typing.List`/`typing.Dict` (slow;
    these are the builtin classes) and builds its int and string values slowly: scalars of exactly
    these builtin types are converted once and shared (they are immutable). tests/test_cel_fast.py
    compares the two."""
    kind = type(document)
    convert = _LEAF_TYPES.get(kind)
    if convert is not None:
        key = (kind, document)
        hit = _leaves_cache.get(key)
        if hit is None:
            if len(_leaves_cache) >= 100_000:
                _leaves_cache.clear()
            hit = _leaves_cache[key] = convert(document)
        return hit
    if isinstance(document, bool):
        return celpy.celtypes.BoolType(document)
    if isinstance(document, float):
        return celpy.celtypes.DoubleType(document)
    if isinstance(document, int):
        return celpy.celtypes.IntType(document)
    if isinstance(document, str):
        return celpy.celtypes.StringType(document)
    if document is None:
        return None
    if isinstance(document, tuple | list):
        return celpy.celtypes.ListType([to_cel(item) for item in document])
    if isinstance(document, dict):
        return celpy.celtypes.MapType({to_cel(key): to_cel(value) for key, value in document.items()})
    if isinstance(document, datetime.datetime):
        return celpy.celtypes.TimestampType(document)
    if isinstance(document, datetime.timedelta):
        return celpy.celtypes.DurationType(document)
    raise ValueError(f"unexpected type {type(document)} in JSON structure")


def prepare(activation: Mapping[str, Any] | Context) -> Context:
    """`activation` ready for evaluation by any program (converted once, when first needed)."""
    if isinstance(activation, Context):
        return activation
    return Context(raw=activation)


class BudgetExceeded(errors.PlacementError):
    """An evaluation (or a batch) exceeded its cost budget: deterministic, the same every run."""


class SafetyNetStop(errors.PlacementError):
    """The wall-clock safety net stopped an evaluation: a cost the step budget does not count.
    Depends on the machine, so never cached; see `transient`."""


SAFETY_NET_MARK = "wall-clock safety net"


def transient(message: str) -> bool:
    """Whether an error message came from the wall-clock safety net (so may differ on the next run)."""
    return SAFETY_NET_MARK in message


@dataclass(frozen=True)
class Outcome:
    """One evaluation: its value (True/False) or its error, and its cost in steps.

    `stop` is "budget" when the step budget ran out (cost is then the budget), "safety-net" when the
    wall-clock safety net stopped it, else None."""

    value: bool | None
    error: str | None
    cost: int
    stop: str | None = None


@dataclass(eq=False)
class Program:
    """A compiled expression. Build with `compile` (cached per source)."""

    source: str
    runner: celpy.Runner
    paths: frozenset[tuple[str, ...]]
    base: celpy.evaluation.Activation | None = None  # built once; each interpreted evaluation clones it
    fast: _Fn | None = None  # the fast evaluator's closure; None: the interpreter evaluates
    memo: dict[tuple[int, Hashable], Outcome] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def projection(self, cluster: Mapping[str, Any]) -> Hashable | None:
        """The part of `cluster` this expression can read, as a key; None: all of it, or its name (unique
        per cluster: nothing to share, so not worth the key)."""
        return _projection(self.paths, cluster)


def _freeze(value: Any) -> Hashable:
    """A key equal for two values exactly when CEL sees the same value: types kept apart (1, 1.0 and true
    differ; a string never equals a tuple), map order kept (macros iterate maps in order). Raises
    TypeError for anything else."""
    kind = type(value)
    if kind is str or value is None:
        return value
    if kind is int or kind is bool:
        return (kind, value)
    if kind is float:
        return (kind, repr(value))  # -0.0 and 0.0 differ, nan equals nan
    if kind is dict:
        return (dict, tuple((_freeze(k), _freeze(v)) for k, v in value.items()))
    if kind is list or kind is tuple:
        return (list, tuple(_freeze(v) for v in value))
    raise TypeError(kind.__name__)


def _projection(paths: frozenset[tuple[str, ...]], cluster: Any) -> Hashable | None:
    if () in paths or ("name",) in paths or not isinstance(cluster, Mapping):
        return None
    parts: list[tuple[tuple[str, ...], bool, Hashable]] = []
    try:
        for path in sorted(paths):
            value: Any = cluster
            present = True
            for p in path:
                if isinstance(value, Mapping) and p in value:
                    value = value[p]
                else:
                    present = False
                    break
            parts.append((path, present, _freeze(value) if present else None))
    except TypeError:
        return None
    return tuple(parts)


@functools.lru_cache(maxsize=1024)
def compile(source: str) -> Program:
    """Compile (and cache, per source text) an expression; raises `errors.PlacementError` listing its
    check problems."""
    parsed = _parse(source)
    if parsed.problems or parsed.tree is None:
        line, col, msg = (parsed.problems or ((1, 1, "invalid expression"),))[0]
        raise errors.PlacementError(f"cel: {line}:{col}: {msg}")
    env = _environment()
    runner = env.program(parsed.tree, functions=_program_functions())
    base = runner.new_activation()
    fast = _FastCompiler(base).compile(parsed.tree, frozenset({"cluster"}))
    return Program(source=source, runner=runner, paths=parsed.paths, base=base, fast=fast)


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


def run(
    program: Program,
    activation: Mapping[str, Any] | Context,
    *,
    budget: int = DEFAULT_BUDGET,
    time_limit: float = SAFETY_NET_SECONDS,
    evaluator: str | None = None,
) -> Outcome:
    """Evaluate once, without the memo: the value or error and the cost in steps. `evaluator` picks
    "fast" or "interpreter" (tests compare them); by default the fast one when the program has it."""
    ctx = prepare(activation)
    if ctx.problem is not None:
        return Outcome(None, ctx.problem, 0)
    use_fast = program.fast is not None and ctx.variables is not None
    if evaluator == "interpreter":
        use_fast = False
    elif evaluator == "fast" and not use_fast:
        raise ValueError("this program or activation has no fast evaluation")
    b = _Budget(budget, time_limit)
    previous = getattr(_local, "budget", None)
    _local.budget = b
    try:
        if use_fast:
            assert program.fast is not None and ctx.variables is not None
            value = program.fast(ctx.variables, b)  # never mutated: macros bind in new dicts
            if isinstance(value, _CELEvalError):
                raise value
        else:
            runner = program.runner
            base = program.base if program.base is not None else runner.new_activation()
            value = _BudgetEvaluator(runner.ast, base, b).evaluate(cast(Any, ctx.value))
    except _Stop as stop:
        return Outcome(None, None, b.spent if stop.kind != "budget" else budget, stop=stop.kind)
    except _CELEvalError as e:
        return Outcome(None, f"cel: {_scrub(_sanitise(e), ctx.raw)}", b.spent)
    except RecursionError:
        return Outcome(None, "cel: expression nests too deeply to evaluate", b.spent)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError) as e:
        return Outcome(None, f"cel: evaluation failed ({type(e).__name__})", b.spent)
    finally:
        _local.budget = previous
    if isinstance(value, celpy.celtypes.BoolType | bool):
        return Outcome(bool(value), None, b.spent)
    return_type = type(value).__name__.replace("Type", "").lower() or "value"
    return Outcome(None, f"cel: the result must be a bool, got {return_type}", b.spent)


def _outcome(program: Program, ctx: Context, *, budget: int, time_limit: float) -> Outcome:
    """`run`, through the program's memo: clusters that agree on what the expression reads share one
    evaluation (its value, error and cost: CEL is pure). Safety-net stops are never remembered."""
    key: Hashable | None = None
    if len(ctx.raw) == 1:
        if program.paths in ctx.keys:
            key = ctx.keys[program.paths]
        else:
            key = ctx.keys[program.paths] = _projection(program.paths, ctx.raw.get("cluster"))
    if key is not None:
        hit = program.memo.get((budget, key))
        if hit is not None:
            return hit
    out = run(program, ctx, budget=budget, time_limit=time_limit)
    if key is not None and out.stop != "safety-net":
        with program.lock:
            if len(program.memo) >= MEMO_SIZE:
                program.memo.clear()
            program.memo[(budget, key)] = out
    return out


def _error(out: Outcome, *, budget: int, time_limit: float, what: str) -> errors.PlacementError:
    if out.stop == "budget":
        return BudgetExceeded(
            f"cel: {what} exceeded its cost budget of {budget:,} steps on this cluster (see docs/placement.md)"
        )
    if out.stop == "safety-net":
        return SafetyNetStop(
            f"cel: {what} was stopped by the {SAFETY_NET_MARK} after {time_limit:g} s on this cluster: "
            "a cost the step budget does not count (see docs/placement.md)"
        )
    return errors.PlacementError(out.error or "cel: evaluation failed")


def evaluate(
    program: Program,
    activation: Mapping[str, Any] | Context,
    *,
    budget: int = DEFAULT_BUDGET,
    time_limit: float = SAFETY_NET_SECONDS,
    what: str = "this expression",
) -> bool:
    """Evaluate `program` for `activation` (``{"cluster": {...}}`` or a prepared `Context`) within `budget`
    steps. Raises `errors.PlacementError` (message free of activation values) on any failure: an
    evaluation error, a non-bool result, `BudgetExceeded`, or `SafetyNetStop` past `time_limit` seconds
    (the last resort: a runaway the step budget cannot see). `what` names the expression in budget
    errors (placement says "the placement of bundle 'web'")."""
    out = _outcome(program, prepare(activation), budget=budget, time_limit=time_limit)
    if out.value is None:
        raise _error(out, budget=budget, time_limit=time_limit, what=what)
    return out.value


def evaluate_batch(
    program: Program,
    activations: Sequence[Mapping[str, Any] | Context],
    *,
    budget: int = DEFAULT_BUDGET,
    total_budget: int = DEFAULT_TOTAL_BUDGET,
    time_limit: float = SAFETY_NET_SECONDS,
    what: str = "this expression",
) -> list[bool | errors.PlacementError]:
    """`evaluate` for each activation, errors returned in place (blocking: call it off the event loop).

    `total_budget` bounds the whole batch, deterministically: when the costs of the evaluations add up to
    more, every activation gets a `BudgetExceeded` error (the same answer every run, whatever the
    machine's load). After a `SafetyNetStop`, the rest of the batch is not evaluated (each gets an
    error saying so): the expression is a runaway the budget cannot see."""
    out: list[bool | errors.PlacementError] = []
    spent = 0
    stopped = False
    for act in activations:
        if stopped:
            out.append(
                SafetyNetStop(
                    f"cel: {what} was not evaluated on this cluster: the {SAFETY_NET_MARK} stopped it "
                    "on an earlier one (see docs/placement.md)"
                )
            )
            continue
        o = _outcome(program, prepare(act), budget=budget, time_limit=time_limit)
        spent += o.cost
        if spent > total_budget:
            over = BudgetExceeded(
                f"cel: {what} exceeded its cost budget of {total_budget:,} steps over "
                f"{len(activations):,} clusters (see docs/placement.md)"
            )
            return [over] * len(activations)
        if o.stop == "safety-net":
            stopped = True
        out.append(
            o.value if o.value is not None else _error(o, budget=budget, time_limit=time_limit, what=what)
        )
    return out


async def evaluate_many(
    program: Program,
    activations: Sequence[Mapping[str, Any] | Context],
    *,
    budget: int = DEFAULT_BUDGET,
    total_budget: int = DEFAULT_TOTAL_BUDGET,
    time_limit: float = SAFETY_NET_SECONDS,
    limiter: anyio.CapacityLimiter | None = None,
) -> list[bool | errors.PlacementError]:
    """`evaluate_batch` in a worker thread, so the event loop stays free. Each evaluation is bounded by
    its step budget (and the safety net), so the thread always finishes promptly."""
    return await anyio.to_thread.run_sync(
        functools.partial(
            evaluate_batch,
            program,
            activations,
            budget=budget,
            total_budget=total_budget,
            time_limit=time_limit,
        ),
        limiter=limiter,
    )
