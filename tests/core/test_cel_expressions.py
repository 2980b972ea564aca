"""CEL placement expressions: extra functions, has(), static checks, errors without data, the budget."""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from fleet.core import cel, errors

CANARY = "s3cr3t-CANARY-value"

CLUSTER: dict[str, Any] = {
    "name": "eu-prod-1",
    "labels": {"env": "prod", "region": "eu", "example.com/team": "Payments"},
    "annotations": {"owner": "ops"},
    "facts": {"tier": 1, "nodes": 40, "k8s": "v1.30.2", "zones": ["a", "b"], "note": CANARY, "gpu": False},
}


def run(source: str, cluster: dict[str, Any] | None = None) -> bool:
    return cel.evaluate(cel.compile(source), {"cluster": cluster if cluster is not None else CLUSTER})


TRUE_CASES = [
    "has(cluster.facts.tier) && cluster.facts.tier == 1 && !cluster.name.startsWith('legacy-')",
    "!has(cluster.facts.missing)",
    "has(cluster.labels.env)",
    "cluster.labels['example.com/team'].lowerAscii() == 'payments'",
    "cluster.labels.region.upperAscii() == 'EU'",
    "cluster.name.split('-') == ['eu', 'prod', '1']",
    "cluster.name.split('-', 2) == ['eu', 'prod-1']",
    "size(cluster.name.split('-')) == 3",
    "semver(cluster.facts.k8s).isGreaterThan('1.29.9')",
    "semver(cluster.facts.k8s).isLessThan('v1.31')",
    "semver('1.30').compareTo('1.30.0') == 0",
    "semver('v1.30.2').major() == 1 && semver('v1.30.2').minor() == 30 && semver('v1.30.2').patch() == 2",
    "semver('2.0.0-rc.1').isLessThan('2.0.0')",
    "semver('1.30.2').isGreaterThan(semver('1.30.1'))",
    "cluster.facts.zones.exists(z, z == 'b')",
    "cluster.facts.zones.all(z, z.size() == 1)",
    "'ops' in cluster.annotations.map(k, cluster.annotations[k])",
    "cluster.name.matches('^eu-')",
    "cluster.facts.gpu == false",
    "cluster.facts.nodes > 10 ? true : false",
    "false || cluster.facts.tier == 1",
]


@pytest.mark.parametrize("source", TRUE_CASES)
def test_expressions_over_the_cluster_evaluate_to_true(source: str) -> None:
    assert cel.check(source) == []
    assert run(source) is True


@pytest.mark.parametrize(
    "source",
    [
        "cluster.facts.tier == 2",
        "cluster.name.startsWith('legacy-')",
        "semver(cluster.facts.k8s).isGreaterThan('1.31')",
        "has(cluster.facts.missing) && cluster.facts.missing == 1",
    ],
)
def test_expressions_that_do_not_hold_evaluate_to_false(source: str) -> None:
    assert run(source) is False


def test_has_guards_short_circuit_a_missing_fact_on_a_cluster_without_facts() -> None:
    bare = {"name": "bare", "labels": {}, "annotations": {}, "facts": {}}
    assert run("has(cluster.facts.tier) && cluster.facts.tier == 1", bare) is False


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("cluster.facts.missing == 1", "no such member"),
        ("cluster.facts.note == 1", "no matching overload"),
        ("cluster.facts.note.inner == 1", "does not support field selection"),
        ("cluster.facts.tier + cluster.facts.note == 'x'", "no matching overload"),
        ("semver(cluster.facts.note).major() == 1", "not a semantic version"),
        ("cluster.facts.nodes > 10 ? 1 : 2", "must be a bool"),
    ],
)
def test_evaluation_errors_are_placement_errors_that_never_carry_cluster_values(
    source: str, fragment: str
) -> None:
    with pytest.raises(errors.PlacementError) as info:
        run(source)
    message = str(info.value)
    assert fragment in message
    assert CANARY not in message
    assert "eu-prod-1" not in message  # nothing of the activation, not even the name


def test_an_undeclared_reference_error_does_not_embed_the_activation() -> None:
    # `check` refuses it statically; the runtime path (a program built from an unchecked tree) must not
    # echo cel-python's "(in activation ...)" text either.
    assert cel.check("nosuch == 1")
    env = cel.functions.environment()
    program = cel.Program(source="x", runner=env.program(env.compile("nosuch == 1")), paths=frozenset({()}))
    with pytest.raises(errors.PlacementError) as info:
        cel.evaluate(program, {"cluster": CLUSTER})
    assert "nosuch" in str(info.value)
    assert CANARY not in str(info.value)
    assert "activation" not in str(info.value)


CHECK_CASES = [
    ("cluster.name ==", "syntax error"),
    ("cluster.name", "must be a bool"),
    ("1 + 2", "must be a bool"),
    ("'a'", "must be a bool"),
    ("[true]", "must be a bool"),
    ("cluster.labels.env", "must be a bool"),
    ("cluster.facts", "yields a map"),
    ("cluster.name.size()", "yields the value of size()"),
    ("semver(cluster.facts.k8s)", "yields the value of semver()"),
    ("cluster.facts.zones.map(z, z == 'a')", "yields the value of map()"),
    ("cluster.clusterName == 'x'", "cluster has no field 'clusterName'"),
    ("tier == 1", "undeclared reference to 'tier'"),
    ("lower(cluster.name) == 'x'", "unknown function 'lower'"),
    ("cluster.name.toLower() == 'x'", "unknown function 'toLower'"),
    ("has(cluster) ", "has() needs one field selection"),
    ("[1, 2].reduce(r, i, 0, r + i) == 3", "reduce() is not supported"),
    ("(" * 30 + "true" + ")" * 30, "nested 30 deep"),
    ("true && " * 1000 + "true", "characters long"),
    ("", "empty expression"),
]


@pytest.mark.parametrize(("source", "fragment"), CHECK_CASES, ids=[c[1] for c in CHECK_CASES])
def test_check_reports_problems_with_line_and_column(source: str, fragment: str) -> None:
    problems = cel.check(source)
    assert problems, source
    line, column, _message = problems[0]
    assert line >= 1 and column >= 1
    assert any(fragment in m for _, _, m in problems), problems
    with pytest.raises(errors.PlacementError):
        cel.compile(source)


def test_check_points_at_the_offending_field_on_its_line() -> None:
    assert cel.check("has(cluster.facts.tier) &&\n  cluster.nope == 1") == [
        (2, 11, "cluster has no field 'nope' (fields: name, labels, annotations, facts)")
    ]


def test_comprehension_variables_are_declared_inside_their_macro_only() -> None:
    assert cel.check("cluster.facts.zones.all(z, z != '')") == []
    assert [m for _, _, m in cel.check("cluster.facts.zones.all(z, z != '') && z == 'a'")] == [
        "undeclared reference to 'z' (the only variable is 'cluster')"
    ]


def test_a_long_chain_of_conditions_within_the_limits_compiles_and_runs() -> None:
    source = " && ".join(f"cluster.facts.nodes > {i}" for i in range(39))
    assert cel.check(source) == []
    assert run(source) is True


RUNAWAY = (
    "[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, "
    "[1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, [1,2,3,4,5,6,7,8,9,10].all(f, "
    "a + b + c + d + e + f > 0 && cluster.name != ''))))))"
)


def test_a_runaway_expression_is_stopped_by_its_step_budget() -> None:
    assert cel.check(RUNAWAY) == []
    with pytest.raises(errors.PlacementError) as info:
        cel.evaluate(cel.compile(RUNAWAY), {"cluster": CLUSTER}, budget=2_000)
    assert "cost budget of 2,000 steps" in str(info.value)
    assert isinstance(info.value, cel.BudgetExceeded)


def test_a_runaway_the_step_budget_cannot_see_is_stopped_by_the_safety_net_which_says_so() -> None:
    # A budget too large to matter stands for a cost the step count cannot see.
    started = time.process_time()
    with pytest.raises(errors.PlacementError) as info:
        cel.evaluate(cel.compile(RUNAWAY), {"cluster": CLUSTER}, budget=10**9, time_limit=0.2)
    assert isinstance(info.value, cel.SafetyNetStop)
    assert "wall-clock safety net after 0.2 s" in str(info.value)
    assert cel.transient(str(info.value))
    # The work really stopped: the CPU spent is of the order of the limit, not of the full expression
    # (10^6 innermost evaluations).
    assert time.process_time() - started < 30


def test_a_batch_stops_evaluating_after_the_safety_net_stopped_one_evaluation() -> None:
    activations = [{"cluster": {**CLUSTER, "name": f"c{i}"}} for i in range(50)]
    started = time.monotonic()
    results = cel.evaluate_batch(cel.compile(RUNAWAY), activations, budget=10**9, time_limit=0.05)
    assert time.monotonic() - started < 10
    assert len(results) == 50
    assert all(isinstance(r, cel.SafetyNetStop) for r in results)
    assert "stopped by the wall-clock safety net" in str(results[0])
    assert all("not evaluated on this cluster" in str(r) for r in results[1:])


def test_evaluate_many_runs_in_a_worker_thread_and_keeps_the_event_loop_free() -> None:
    activations = [{"cluster": {**CLUSTER, "name": f"c{i}", "facts": {"tier": i % 3}}} for i in range(30)]
    ticks = 0

    async def main() -> list[bool | errors.PlacementError]:
        nonlocal ticks
        done = anyio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            out = await cel.evaluate_many(
                cel.compile("cluster.facts.tier == 1 ? true : " + RUNAWAY), activations, budget=3_000
            )
            done.set()
        return out

    results = anyio.run(main)
    assert [r for r in results if r is True] == [True] * 10
    assert all(isinstance(r, errors.PlacementError) for r in results if r is not True)
    assert ticks > 0


def test_results_are_shared_between_clusters_that_agree_on_what_the_expression_reads() -> None:
    program = cel.compile(
        "has(cluster.facts.tier) && cluster.facts.tier == 1 && cluster.labels.env == 'prod'"
    )
    assert program.paths == frozenset({("facts", "tier"), ("labels", "env")})
    a = {**CLUSTER, "name": "a"}
    b = {**CLUSTER, "name": "b", "annotations": {"other": "x"}}
    c = {**CLUSTER, "name": "c", "facts": {"tier": 2}}
    assert program.projection(a) == program.projection(b)
    assert program.projection(a) != program.projection(c)
    assert [cel.evaluate(program, {"cluster": x}) for x in (a, b, c)] == [True, True, False]


def test_an_expression_that_reads_the_whole_cluster_is_never_shared() -> None:
    program = cel.compile("size(cluster) == 4")
    assert program.projection(CLUSTER) is None
    assert run("size(cluster) == 4") is True


def test_a_fact_of_the_wrong_type_gives_an_error_not_a_shared_wrong_answer() -> None:
    program = cel.compile("cluster.facts.tier == 1")
    assert cel.evaluate(program, {"cluster": CLUSTER}) is True
    with pytest.raises(errors.PlacementError):
        cel.evaluate(program, {"cluster": {**CLUSTER, "facts": {"tier": "1"}}})
    with pytest.raises(errors.PlacementError):
        cel.evaluate(program, {"cluster": {**CLUSTER, "facts": {"tier": 1.0}}})


def test_an_invalid_regex_from_a_cluster_value_is_an_error_that_neither_logs_nor_echoes_it(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(errors.PlacementError) as info:
        run("cluster.name.matches(cluster.facts.note + '(')")
    assert "invalid regular expression" in str(info.value)
    assert CANARY not in str(info.value)
    captured = capfd.readouterr()
    assert CANARY not in captured.out + captured.err


def test_a_catastrophic_backtracking_pattern_is_matched_by_re2_without_backtracking() -> None:
    cluster = {**CLUSTER, "facts": {**CLUSTER["facts"], "note": "a" * 5000 + "!"}}
    assert run("cluster.facts.note.matches('^(a+)+$')", cluster) is False
    assert run("matches(cluster.facts.note, '^(a|aa)+!$')", cluster) is True
