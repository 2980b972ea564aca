"""Programs and their evaluation: `compile` (cached), `prepare`, `evaluate`, `evaluate_batch`,
`evaluate_many` and `run`, under the step budget and the wall-clock safety net, with memoised outcomes.

Owns: `Program` (the fast closures when they apply, else cel-python's interpreter), the projection memo,
converting documents to CEL values (`to_cel`) and messages that never carry the activation (`sanitise`).
"""

from __future__ import annotations

import datetime
import functools
import re
import threading
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import anyio.to_thread
import celpy
import celpy.adapter
import celpy.celparser
import celpy.celtypes
import celpy.evaluation

from fleet.core import errors, values
from fleet.core.cel import checks, closures, cost, functions

SAFETY_NET_SECONDS = 10.0  # wall clock for one evaluation: a last resort, not a budget
MEMO_SIZE = 4096  # memoised outcomes per program


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
    these builtin types are converted once and shared (they are immutable). tests/core/test_cel_fast.py
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
    fast: closures.Fn | None = None  # the fast evaluator's closure; None: the interpreter evaluates
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
    parsed = checks.parse(source)
    if parsed.problems or parsed.tree is None:
        line, col, msg = (parsed.problems or ((1, 1, "invalid expression"),))[0]
        raise errors.PlacementError(f"cel: {line}:{col}: {msg}")
    env = functions.environment()
    runner = env.program(parsed.tree, functions=cost.program_functions())
    base = runner.new_activation()
    fast = closures.FastCompiler(base).compile(parsed.tree, frozenset({"cluster"}))
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


def _scrub(message: str, activation: Mapping[str, Any]) -> str:
    """Belt and braces: replace any string value of the activation (3+ characters) in `message`."""
    for leaf in sorted(set(values.strings(activation)), key=len, reverse=True):
        if len(leaf) >= 3 and leaf in message:
            message = message.replace(leaf, "<value>")
    return message


def run(
    program: Program,
    activation: Mapping[str, Any] | Context,
    *,
    budget: int = cost.DEFAULT_BUDGET,
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
    b = cost.Budget(budget, time_limit)
    previous = getattr(cost.local, "budget", None)
    cost.local.budget = b
    try:
        if use_fast:
            assert program.fast is not None and ctx.variables is not None
            value = program.fast(ctx.variables, b)  # never mutated: macros bind in new dicts
            if isinstance(value, closures.CELEvalError):
                raise value
        else:
            runner = program.runner
            base = program.base if program.base is not None else runner.new_activation()
            value = cost.BudgetEvaluator(runner.ast, base, b).evaluate(cast(Any, ctx.value))
    except cost.Stop as stop:
        return Outcome(None, None, b.spent if stop.kind != "budget" else budget, stop=stop.kind)
    except closures.CELEvalError as e:
        return Outcome(None, f"cel: {_scrub(_sanitise(e), ctx.raw)}", b.spent)
    except RecursionError:
        return Outcome(None, "cel: expression nests too deeply to evaluate", b.spent)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError) as e:
        return Outcome(None, f"cel: evaluation failed ({type(e).__name__})", b.spent)
    finally:
        cost.local.budget = previous
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
    budget: int = cost.DEFAULT_BUDGET,
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
    budget: int = cost.DEFAULT_BUDGET,
    total_budget: int = cost.DEFAULT_TOTAL_BUDGET,
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
    budget: int = cost.DEFAULT_BUDGET,
    total_budget: int = cost.DEFAULT_TOTAL_BUDGET,
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
