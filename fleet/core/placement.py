"""Placement: which clusters each bundle goes to, with an explanation per (bundle, cluster, clause).

Owns: `place` (a `model.Repo` -> `model.PlacementResult`, pure apart from a cache the caller may pass),
`select` (one `model.Placement` x one cluster, used for bundles and overrides alike), `waves` (the
rollout wave of each placed cluster), and `PlacementCache`.
Does not: parse files (`fleet.core.repository`), render manifests (`fleet.core.render`), report problems
for `fleet validate` (`fleet.core.validation`), or talk to clusters.

Rules (docs/placement.md, "Placement"):

* clauses are checked in the order ``clusters``, ``clusterSelector``, ``cel``, stopping at the first that
  fails, so CEL only runs for clusters the other clauses admit; a cluster is selected when every clause
  present holds;
* no placement: no cluster; ``clusters: []`` selects nothing; an unknown name in ``clusters`` is a warning;
* a CEL evaluation error is an error for that pair (reported, never read as "not selected");
* a ``dependsOn`` bundle that is not placed (or is in error, or is broken) on a cluster where its
  dependant is placed is an error for the dependant on that cluster; this is repeated until nothing
  changes, so chains of dependencies fail together;
* paused clusters are placed like any other (the engine skips writes to them).

Cost (docs/placement.md, "Cost"). A bundle's CEL is evaluated, for the clusters the other clauses admit,
as one `cel.evaluate_batch`: each evaluation within `budget` steps, all of them together within
`total_budget` steps. Steps are counted, never timed, so the result does not depend on the machine's
load: an expression over a budget is an error for the pair (or, over the total, for every pair of the
bundle) naming the bundle and the budget, the same on every run. Only the wall-clock safety net
(`cel.SAFETY_NET_SECONDS`, a runaway the count cannot see) depends on the clock; such results are
`transient` and never cached.

Speed. Each cluster is converted for CEL once per `place` call (`_Contexts`, shared by every bundle);
programs are compiled once per expression text (`cel.compile`). Selector matching is cheap; CEL costs
tens of microseconds per evaluation. `PlacementCache` keeps each bundle's raw placement keyed by its
placement spec and a hash of the cluster registry, so a commit that changes one bundle re-evaluates that
bundle only. `fleet.core.cel` (cel-python, lark, pendulum: 0.3e9 instructions to import, a tenth of
`fleet sync`'s start-up) is imported where an expression is judged, so a revision without CEL never
loads it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet.core import errors, model, rollout, selectors

if TYPE_CHECKING:
    from fleet.core import cel

CLAUSES = ("clusters", "clusterSelector", "cel")


@dataclass(frozen=True)
class Decision:
    """How one placement judged one cluster: selected, not selected, or an error (with the message)."""

    selected: bool
    clauses: tuple[model.ClauseResult, ...]
    error: str | None = None


@functools.lru_cache(maxsize=4096)
def _describe_requirement(r: model.Requirement) -> str:
    return selectors.to_text(model.LabelSelector(match_expressions=(r,)))


@functools.lru_cache(maxsize=4096)
def _selector_text(selector: model.LabelSelector) -> str:
    return selectors.to_text(selector) or "{}"


def _selector_reason(selector: model.LabelSelector, labels: Mapping[str, str]) -> tuple[bool, str]:
    for key, value in selector.match_labels:
        if key not in labels:
            return False, f"label {key} is missing (selector wants {key}={value})"
        if labels[key] != value:
            return False, f"label {key}={labels[key]}, selector wants {key}={value}"
    for r in selector.match_expressions:
        if not selectors.requirement_holds(r, labels):
            have = f"{r.key}={labels[r.key]}" if r.key in labels else f"{r.key} missing"
            return False, f"requirement '{_describe_requirement(r)}' fails ({have})"
    return True, f"labels match '{_selector_text(selector)}'"


def _selector_keys(selector: model.LabelSelector | None) -> tuple[str, ...]:
    """The label keys a selector reads (its verdict and reason depend on nothing else)."""
    if selector is None:
        return ()
    return tuple(sorted({k for k, _ in selector.match_labels} | {r.key for r in selector.match_expressions}))


def _before_cel(
    placement: model.Placement, cluster: model.Cluster
) -> tuple[tuple[model.ClauseResult, ...], Decision | None]:
    """The clauses before `cel`: their results, and the decision when one of them already failed."""
    results: list[model.ClauseResult] = []
    if placement.clusters is not None:
        if cluster.name in placement.clusters:
            results.append(model.ClauseResult("clusters", True, f"clusters lists {cluster.name}"))
        else:
            results.append(model.ClauseResult("clusters", False, f"clusters does not list {cluster.name}"))
            return tuple(results), Decision(False, tuple(results))
    if placement.cluster_selector is not None:
        held, reason = _selector_reason(placement.cluster_selector, cluster.labels)
        results.append(model.ClauseResult("clusterSelector", held, reason))
        if not held:
            return tuple(results), Decision(False, tuple(results))
    return tuple(results), None


def _with_cel(results: tuple[model.ClauseResult, ...], outcome: bool | errors.PlacementError) -> Decision:
    if isinstance(outcome, errors.PlacementError):
        # held=None already says "error" and the clause is cel: the reason is the bare message.
        clause = model.ClauseResult("cel", None, str(outcome).removeprefix("cel: "))
        return Decision(False, (*results, clause), error=str(outcome))
    clause = model.ClauseResult("cel", outcome, "cel is true" if outcome else "cel is false")
    return Decision(outcome, (*results, clause))


def _no_clause(placement: model.Placement | None) -> Decision | None:
    if placement is None:
        return Decision(False, (model.ClauseResult("placement", False, "the bundle has no placement"),))
    if placement.clusters is None and placement.cluster_selector is None and placement.cel is None:
        return Decision(False, (model.ClauseResult("placement", False, "the placement has no clause"),))
    return None


def select(
    placement: model.Placement | None,
    cluster: model.Cluster,
    *,
    budget: int | None = None,
    what: str = "this expression",
    context: cel.Context | None = None,
) -> Decision:
    """Judge one cluster against one placement (a bundle's or an override's). Pure and deterministic:
    CEL runs under its step budget (`cel.evaluate`); only the wall-clock safety net (a runaway the
    budget cannot see, see `transient`) depends on the machine. `context` is the cluster already
    prepared for CEL (`cel.prepare`), when the caller has it. `budget`: `cel.DEFAULT_BUDGET` when None."""
    none = _no_clause(placement)
    if none is not None:
        return none
    assert placement is not None  # _no_clause decided the None case
    results, decided = _before_cel(placement, cluster)
    if decided is not None:
        return decided
    if placement.cel is None:
        return Decision(True, tuple(results))
    from fleet.core import cel  # here: a revision without CEL never loads cel-python (docs/benchmarks.md)

    steps = cel.DEFAULT_BUDGET if budget is None else budget
    try:
        program = cel.compile(placement.cel)
        held = cel.evaluate(program, context or {"cluster": cluster.activation()}, budget=steps, what=what)
    except errors.PlacementError as e:
        return _with_cel(results, e)
    return _with_cel(results, held)


def transient(message: str) -> bool:
    """Whether a placement error depends on the machine (the CEL wall-clock safety net): such results
    are never cached, and the next revision evaluates again."""
    from fleet.core import cel

    return cel.transient(message)


# ----------------------------------------------------------------------------------------------------------
# Cache.


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def placement_key(placement: model.Placement | None) -> str:
    """A stable text key of a placement spec (line numbers excluded)."""
    if placement is None:
        return "none"
    sel = placement.cluster_selector
    return _canonical(
        {
            "clusters": list(placement.clusters) if placement.clusters is not None else None,
            "selector": None
            if sel is None
            else [
                sorted(sel.match_labels),
                [[r.key, str(r.operator), list(r.values)] for r in sel.match_expressions],
            ],
            "cel": placement.cel,
        }
    )


def registry_key(clusters: Mapping[str, model.Cluster]) -> str:
    """A hash of everything placement reads from the cluster registry."""
    h = hashlib.sha256()
    for name in sorted(clusters):
        h.update(_canonical(clusters[name].activation()).encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclass
class PlacementCache:
    """Raw placement (before dependsOn) per (placement spec, registry). Not thread-safe; one per engine."""

    entries: dict[tuple[str, str], dict[str, Decision]] = field(default_factory=dict)
    max_entries: int = 4096
    hits: int = 0
    misses: int = 0

    def get(self, key: tuple[str, str]) -> dict[str, Decision] | None:
        found = self.entries.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: tuple[str, str], decisions: dict[str, Decision]) -> None:
        if len(self.entries) >= self.max_entries:
            self.entries.clear()
        self.entries[key] = decisions


class _Contexts:
    """Each cluster converted for CEL once per `place` call (one revision), shared by every bundle."""

    def __init__(self, clusters: Mapping[str, model.Cluster]) -> None:
        self.clusters = clusters
        self.done: dict[str, cel.Context] = {}

    def __getitem__(self, name: str) -> cel.Context:
        ctx = self.done.get(name)
        if ctx is None:
            from fleet.core import cel

            ctx = self.done[name] = cel.prepare({"cluster": self.clusters[name].activation()})
        return ctx


def _raw(
    bundle: model.Bundle,
    clusters: Mapping[str, model.Cluster],
    *,
    reg_key: str,
    cache: PlacementCache | None,
    budget: int | None,
    total_budget: int | None,
    time_limit: float | None,
    contexts: _Contexts,
) -> dict[str, Decision]:
    key = (placement_key(bundle.placement), reg_key)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    spec = bundle.placement
    decisions: dict[str, Decision] = {}
    pending: dict[str, tuple[model.ClauseResult, ...]] = {}
    none = _no_clause(spec)
    # Without a `clusters` clause, what the clauses before CEL say depends only on the labels the selector
    # reads: clusters that agree on those share one judgement (and one Decision object, immutable).
    by_labels = spec is not None and spec.clusters is None
    keys = _selector_keys(spec.cluster_selector) if spec is not None else ()
    judged: dict[tuple[str | None, ...], tuple[tuple[model.ClauseResult, ...], Decision | None]] = {}
    for name in sorted(clusters):
        if none is not None or spec is None:
            decisions[name] = none or Decision(False, ())
            continue
        cluster = clusters[name]
        if by_labels:
            seen = tuple(cluster.labels.get(k) for k in keys)
            judgement = judged.get(seen)
            if judgement is None:
                judgement = judged[seen] = _before_cel(spec, cluster)
            results, decided = judgement
        else:
            results, decided = _before_cel(spec, cluster)
        if decided is not None:
            decisions[name] = decided
        elif spec.cel is None:
            decisions[name] = Decision(True, results)
        else:
            pending[name] = results
    if pending and spec is not None and spec.cel is not None:
        # CEL only for the clusters the other clauses admit, as one batch under the bundle's total budget.
        from fleet.core import cel

        outcomes: list[bool | errors.PlacementError]
        try:
            program = cel.compile(spec.cel)
        except errors.PlacementError as e:
            outcomes = [e] * len(pending)
        else:
            outcomes = cel.evaluate_batch(
                program,
                [contexts[name] for name in pending],
                budget=cel.DEFAULT_BUDGET if budget is None else budget,
                total_budget=cel.DEFAULT_TOTAL_BUDGET if total_budget is None else total_budget,
                time_limit=cel.SAFETY_NET_SECONDS if time_limit is None else time_limit,
                what=f"the placement of bundle {bundle.name!r}",
            )
        shared: dict[tuple[int, bool], Decision] = {}  # (the clauses before, the verdict) -> one Decision
        for (name, results), outcome in zip(pending.items(), outcomes, strict=True):
            if isinstance(outcome, bool):
                decision = shared.get((id(results), outcome))
                if decision is None:
                    decision = shared[(id(results), outcome)] = _with_cel(results, outcome)
                decisions[name] = decision
            else:
                decisions[name] = _with_cel(results, outcome)
        decisions = {name: decisions[name] for name in sorted(decisions)}
    # A result cut short by the safety net (a clock) is not a property of the spec and registry: never
    # cache it.
    if cache is not None and not any(d.error and transient(d.error) for d in decisions.values()):
        cache.put(key, decisions)
    return decisions


def _needed(repo: model.Repo, only: Iterable[str]) -> set[str]:
    """`only` plus every bundle they depend on, transitively."""
    seen: set[str] = set()
    todo = [b for b in only if b in repo.bundles]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(d for d in repo.bundles[name].depends_on if d in repo.bundles and d not in seen)
    return seen


def place(
    repo: model.Repo,
    *,
    only_bundles: Collection[str] | None = None,
    cache: PlacementCache | None = None,
    budget: int | None = None,
    total_budget: int | None = None,
    time_limit: float | None = None,
) -> model.PlacementResult:
    """Place every bundle of `repo` (or `only_bundles`) on its clusters. Pure given the cache's content.
    The CEL limits are `cel.DEFAULT_BUDGET`, `cel.DEFAULT_TOTAL_BUDGET` and `cel.SAFETY_NET_SECONDS` when
    None (cel-python is loaded only for a revision that has CEL).

    Blocking (CEL is CPU-bound): async callers run it with `anyio.to_thread.run_sync`.
    """
    wanted = set(repo.bundles) if only_bundles is None else {b for b in only_bundles if b in repo.bundles}
    names = sorted(_needed(repo, wanted))
    reg_key = registry_key(repo.clusters)
    contexts = _Contexts(repo.clusters)
    decisions = {
        b: _raw(
            repo.bundles[b],
            repo.clusters,
            reg_key=reg_key,
            cache=cache,
            budget=budget,
            total_budget=total_budget,
            time_limit=time_limit,
            contexts=contexts,
        )
        for b in names
    }

    placed: dict[str, set[str]] = {b: {c for c, d in decisions[b].items() if d.selected} for b in names}
    errs: dict[str, dict[str, str]] = {
        b: {c: d.error for c, d in decisions[b].items() if d.error} for b in names
    }
    extra: dict[str, dict[str, list[model.ClauseResult]]] = {b: {} for b in names}

    changed = True
    while changed:
        changed = False
        for b in names:
            for dep in repo.bundles[b].depends_on:
                for c in sorted(placed[b]):
                    problem = _dependency_problem(repo, dep, c, placed=placed, errs=errs)
                    if problem is None:
                        continue
                    placed[b].discard(c)
                    errs[b][c] = problem
                    extra[b].setdefault(c, []).append(model.ClauseResult("dependsOn", False, problem))
                    changed = True

    warnings: list[model.Problem] = []
    for b in sorted(wanted):
        bundle = repo.bundles[b]
        if bundle.placement is not None and bundle.placement.clusters is not None:
            for unknown in sorted(set(bundle.placement.clusters) - set(repo.clusters)):
                broken = unknown in repo.broken_clusters
                why = "its cluster file is broken" if broken else "no cluster file has that name"
                warnings.append(
                    model.Problem(
                        bundle.path,
                        bundle.placement.lines.get("clusters", 1),
                        f"placement.clusters: unknown cluster {unknown!r} ({why})",
                        model.Severity.WARNING,
                        bundle=b,
                        cluster=unknown,
                    )
                )

    explanations: dict[str, dict[str, tuple[model.ClauseResult, ...]]] = {}
    for b in sorted(wanted):
        explanations[b] = {
            c: d.clauses + tuple(extra[b].get(c, ())) if c in extra[b] else d.clauses
            for c, d in decisions[b].items()
        }
    return model.PlacementResult(
        bundles={b: tuple(sorted(placed[b])) for b in sorted(wanted)},
        errors={b: dict(sorted(errs[b].items())) for b in sorted(wanted) if errs[b]},
        explanations=explanations,
        warnings=tuple(warnings),
    )


def _dependency_problem(
    repo: model.Repo,
    dep: str,
    cluster: str,
    *,
    placed: Mapping[str, set[str]],
    errs: Mapping[str, Mapping[str, str]],
) -> str | None:
    if dep in repo.broken_bundles:
        return f"dependsOn: bundle {dep!r} is broken"
    if dep not in repo.bundles:
        return f"dependsOn: bundle {dep!r} does not exist"
    if cluster in errs.get(dep, {}):
        return f"dependsOn: bundle {dep!r} is in error on cluster {cluster!r}"
    if cluster not in placed.get(dep, set()):
        return f"dependsOn: bundle {dep!r} is not placed on cluster {cluster!r}"
    return None


# ----------------------------------------------------------------------------------------------------------
# Rollout waves.


def waves(
    repo: model.Repo, result: model.PlacementResult, *, budget: int | None = None
) -> dict[str, rollout.Membership]:
    """The wave of each placed cluster, per bundle, by `spec.rollout` (docs/rollouts.md): a cluster falls
    in the first wave whose placement selects it (a wave without placement takes every remaining one).
    Clusters no wave selects, or whose wave CEL fails, are in the membership's `errors`."""
    out: dict[str, rollout.Membership] = {}
    for b, placed in result.bundles.items():
        bundle = repo.bundles.get(b)
        if bundle is None:
            continue

        def judge(p: model.Placement, cluster: str) -> tuple[bool, str | None]:
            d = select(p, repo.clusters[cluster], budget=budget)
            return d.selected, d.error

        out[b] = rollout.membership(bundle.rollout, placed, select=judge)
    return out


def explain_wave(bundle: model.Bundle, cluster: model.Cluster, *, budget: int | None = None) -> list[str]:
    """Why `cluster` falls in its wave of `bundle`: one line per wave judged, in order, up to its own."""
    lines: list[str] = []
    for wave in bundle.rollout.waves:
        if wave.placement is None:
            lines.append(f"wave {wave.name}: selected: it takes every remaining cluster")
            return lines
        d = select(wave.placement, cluster, budget=budget)
        why = "; ".join(c.reason for c in d.clauses)
        if d.error:
            lines.append(f"wave {wave.name}: error: {why}")
            return lines
        lines.append(f"wave {wave.name}: {'selected' if d.selected else 'not selected'}: {why}")
        if d.selected:
            return lines
    lines.append("no wave selects it")
    return lines
