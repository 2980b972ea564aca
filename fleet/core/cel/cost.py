"""The cost of an evaluation, counted in steps, never read from the clock (docs/placement.md, "Cost"):
the budget, the charged functions and the interpreter that counts its node visits.
"""

from __future__ import annotations

import functools
import operator
import threading
import time
from typing import Any

import celpy
import celpy.adapter
import celpy.celparser
import celpy.celtypes
import celpy.evaluation
import lark

from fleet.core.cel import functions

DEFAULT_BUDGET = 10_000  # steps for one evaluation; a typical placement expression takes 30-300
DEFAULT_TOTAL_BUDGET = 5_000_000  # steps for one expression over all the clusters of one batch (bundle)
SIZE_UNIT = 100  # one extra step per this many characters/elements in the operands of a call


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


class Stop(Exception):
    """Raised from inside an evaluation to end it: the step budget or the safety net is spent."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind  # "budget" (deterministic) or "safety-net" (wall clock)


class Budget:
    __slots__ = ("deadline", "left", "limit")

    def __init__(self, steps: int, time_limit: float) -> None:
        self.left = steps
        self.limit = steps
        self.deadline = time.monotonic() + time_limit

    @property
    def spent(self) -> int:
        return min(self.limit - self.left, self.limit)


def _ticks(b: Budget, n: int) -> None:
    """Count `n` node visits; the wall clock is looked at about every 64 steps."""
    left = b.left - n
    b.left = left
    if left <= 0:
        raise Stop("budget")
    if (left + n) >> 6 != left >> 6 and time.monotonic() > b.deadline:
        raise Stop("safety-net")


local = threading.local()  # the budget of the evaluation running on this thread, for `_charged`
_SIZED = (str, bytes, list, dict)


def _charged(fn: Any) -> Any:
    """`fn`, charging the current evaluation one step per `SIZE_UNIT` of its operands' sizes."""

    def call(*args: Any) -> Any:
        b = getattr(local, "budget", None)
        if b is not None:
            size = 0
            for a in args:
                if isinstance(a, _SIZED):
                    size += len(a)
            if size >= SIZE_UNIT:
                n = size // SIZE_UNIT
                b.left -= n
                if b.left <= 0:
                    raise Stop("budget")
                if time.monotonic() > b.deadline:
                    raise Stop("safety-net")
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
def program_functions() -> dict[str, Any]:
    """Every function a program may call (cel-python's and fleet's), charged by operand size. Types
    (`int`, `string`, ...) stay as they are: they are also values (`type(x) == string`)."""
    out: dict[str, Any] = {}
    comparisons = {name: celpy.evaluation.boolean(op) for name, op in _COMPARISONS.items()}
    for name, fn in {**celpy.evaluation.base_functions, **comparisons, **functions.FUNCTIONS}.items():
        if isinstance(fn, type) or name in _UNCHARGED:
            if name in functions.FUNCTIONS:
                out[name] = fn
            continue
        out[name] = _charged(fn)
    return out


class BudgetEvaluator(celpy.evaluation.Evaluator):
    """cel-python's interpreter, counting node visits against a shared budget."""

    def __init__(self, ast: lark.Tree, activation: celpy.evaluation.Activation, budget: Budget) -> None:
        super().__init__(ast, activation)
        self.budget = budget

    def sub_evaluator(self, ast: lark.Tree) -> celpy.evaluation.Evaluator:
        return BudgetEvaluator(ast, self.activation, self.budget)

    def _visit_tree(self, tree: lark.Tree) -> Any:
        _ticks(self.budget, 1)
        return super()._visit_tree(tree)
