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
(same functions, values, errors and step counts; tests/core/test_cel_fast.py compares them on generated
expressions), about ten times faster; and `Program` memoises outcomes on the *projection* of the
activation that the expression reads: the static walk records which `cluster.<field>.<key>` paths it
uses, and two clusters that agree on those values share one evaluation (CEL is pure). Expressions that
read a cluster's name gain nothing from the memo; ones over labels and facts do.

Messages never embed the activation (cel-python's "undeclared reference" message embeds all of it, and
its field-selection message the value): `_sanitise` keeps the first clause and drops values. cel-python's
own loggers are silenced for the same reason.
"""

from __future__ import annotations

from fleet.core.cel.checks import CLUSTER_FIELDS, MAX_DEPTH, MAX_LENGTH, MAX_NESTING, check
from fleet.core.cel.cost import DEFAULT_BUDGET, DEFAULT_TOTAL_BUDGET, SIZE_UNIT
from fleet.core.cel.functions import FUNCTIONS, KNOWN_FUNCTIONS, SemverValue, parse_semver
from fleet.core.cel.programs import (
    MEMO_SIZE,
    SAFETY_NET_MARK,
    SAFETY_NET_SECONDS,
    BudgetExceeded,
    Context,
    Outcome,
    Program,
    SafetyNetStop,
    compile,
    evaluate,
    evaluate_batch,
    evaluate_many,
    prepare,
    run,
    to_cel,
    transient,
)

__all__ = [
    "CLUSTER_FIELDS",
    "DEFAULT_BUDGET",
    "DEFAULT_TOTAL_BUDGET",
    "FUNCTIONS",
    "KNOWN_FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_NESTING",
    "MEMO_SIZE",
    "SAFETY_NET_MARK",
    "SAFETY_NET_SECONDS",
    "SIZE_UNIT",
    "BudgetExceeded",
    "Context",
    "Outcome",
    "Program",
    "SafetyNetStop",
    "SemverValue",
    "check",
    "compile",
    "evaluate",
    "evaluate_batch",
    "evaluate_many",
    "parse_semver",
    "prepare",
    "run",
    "to_cel",
    "transient",
]
