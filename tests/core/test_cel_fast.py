"""The fast paths of CEL evaluation agree with plain cel-python: the fast evaluator with the interpreter
(value, error message and position, step count), `to_cel` with `json_to_cel`, memoised and prepared
evaluation with plain evaluation, on generated expressions and clusters."""

from __future__ import annotations

import math
from typing import Any

import celpy.adapter
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fleet.core import cel, errors, model, placement
from tests.support import placement_builders as pb

# cel-python raises the recursion limit when its environment is first made; do it before hypothesis runs.
cel.compile("true")

# ----------------------------------------------------------------------------------------------------------
# Generated clusters.

SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, 2, -1, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.5, 2.0]),
    st.text(alphabet="abez-.1AÉ", max_size=6),
    st.sampled_from(["prod", "eu", "v1.30.2", "1.29", "a", "", "z3", "x3", "eu-prod-1"]),
    st.booleans(),
    st.none(),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "env", "x"]), inner, max_size=3)
    ),
    max_leaves=8,
)
FACT_KEYS = ("tier", "zones", "note", "nested", "ratio", "flag", "k8s", "items")


@st.composite
def clusters(draw: st.DrawFn) -> dict[str, Any]:
    labels = draw(
        st.dictionaries(
            st.sampled_from(["env", "region", "example.com/team"]),
            st.sampled_from(["prod", "dev", "eu", "us", "Payments", ""]),
            max_size=3,
        )
    )
    typical = {
        "tier": draw(st.integers(min_value=0, max_value=4)),
        "zones": draw(st.lists(st.sampled_from(["z1", "z3", "eu-1", "a"]), max_size=5)),
        "k8s": draw(st.sampled_from(["1.29.4", "v1.30.2", "1.31", "x"])),
    }
    facts = {
        **draw(st.sampled_from([{}, typical])),
        **draw(st.dictionaries(st.sampled_from(FACT_KEYS), JSON, max_size=3)),
    }
    return {
        "name": draw(st.sampled_from(["eu-prod-1", "us-dev-2", "legacy-prod", "c0001", "x"])),
        "labels": labels,
        "annotations": draw(
            st.dictionaries(st.sampled_from(["owner", "note"]), st.sampled_from(["ops", "x"]), max_size=2)
        ),
        "facts": facts,
    }


# ----------------------------------------------------------------------------------------------------------
# Generated expressions (within what `fleet validate` admits).

LITERALS = [
    "0", "1", "-1", "2", "9223372036854775807", "-9223372036854775808", "1u", "0u", "1.5", "0.0", "-2.5",
    "'a'", "'prod'", "''", "'eu-prod-1'", "'1.29'", "'(' ", "true", "false", "null", "b'x'", "[]", "{}",
    "[1, 2]", "['a', 'b']", "{'a': 1}", "{'env': 'prod', 'x': 2}", "[[1], []]",
]  # fmt: skip
PATHS = [
    "cluster", "cluster.name", "cluster.labels", "cluster.labels.env", "cluster.labels['example.com/team']",
    "cluster.annotations", "cluster.facts",
    *(f"cluster.facts.{k}" for k in FACT_KEYS),
    "cluster.facts.nested.a", "cluster.facts.missing",
]  # fmt: skip
BINARY = ["==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "in", "&&", "||"]
METHODS = [
    "{a}.size()", "{a}.startsWith({b})", "{a}.endsWith({b})", "{a}.contains({b})", "{a}.matches({b})",
    "{a}.lowerAscii()", "{a}.upperAscii()", "{a}.split({b})", "{a}.split({b}, 2)",
    "semver({a}).isGreaterThan({b})", "semver({a}).major()", "semver({a}).compareTo({b})",
    "size({a})", "int({a})", "string({a})", "double({a})", "uint({a})", "type({a}) == int",
    "type({a}) == string", "has({a}.env)", "has(cluster.facts.tier)", "{a}[{b}]", "{a}.a", "{a}.env",
    "[{a}, {b}]", "{{{a}: {b}}}", "matches({a}, {b})", "({a} ? {b} : {a})",
    "({a} / 0)", "({a} % 0)", "(9223372036854775807 + {a})", "(-9223372036854775808 - {a})", "({a} * 4611686018427387904)",
    "{a}.map(m, m)", "{{{a}: 1, {b}: 2}}",
]  # fmt: skip
MACROS = ["all", "exists", "exists_one", "map", "filter"]


def expressions(scope: tuple[str, ...], depth: int) -> st.SearchStrategy[str]:
    leaves = st.sampled_from(LITERALS + PATHS + list(scope))
    if depth == 0:
        return leaves
    sub = expressions(scope, depth - 1)

    @st.composite
    def compound(draw: st.DrawFn) -> str:
        kind = draw(st.sampled_from(["binary", "unary", "method", "macro", "leaf"]))
        if kind == "leaf":
            return draw(leaves)
        if kind == "unary":
            return f"{draw(st.sampled_from(['!', '-']))}({draw(sub)})"
        if kind == "binary":
            return f"({draw(sub)} {draw(st.sampled_from(BINARY))} {draw(sub)})"
        if kind == "method":
            return draw(st.sampled_from(METHODS)).format(a=draw(sub), b=draw(sub))
        var = f"v{len(scope)}"
        body = draw(expressions((*scope, var), depth - 1))
        return f"{draw(sub)}.{draw(st.sampled_from(MACROS))}({var}, {body})"

    return compound()


@st.composite
def predicates(draw: st.DrawFn) -> str:
    a, b = draw(expressions((), 3)), draw(expressions((), 3))
    return draw(
        st.sampled_from(["{a} == {b}", "{a} != {b}", "{a} || {b}", "{a} && {b}", "!({a})", "{a} in {b}"])
    ).format(a=a, b=b)


TYPED_BOOLS = [
    "has(cluster.facts.tier)", "cluster.labels.env == 'prod'", "'env' in cluster.labels",
    "cluster.name.startsWith('eu')", "cluster.name.matches('^[a-z]+-')", "cluster.facts.tier > 1",
    "size(cluster.labels) >= 1", "cluster.name.split('-').size() == 3", "cluster.facts.zones.exists(z, z == 'z3')",
    "semver(cluster.facts.k8s).isGreaterThan('1.29')", "cluster.labels['example.com/team'].lowerAscii() == 'payments'",
    "has(cluster.facts.zones) && cluster.facts.zones.size() > 1", "cluster.facts.tier in [1, 2]", "true", "false",
]  # fmt: skip
TYPED_LISTS = [
    "[1, 2, 3]",
    "['a', 'z3']",
    "cluster.facts.zones",
    "cluster.name.split('-')",
    "[cluster.name, 'x']",
]
TYPED_BODIES = [
    "{v} == 'z3'",
    "{v}.size() > 1",
    "{v} != ''",
    "{v} > 1",
    "{v}.startsWith('e')",
    "cluster.name != {v}",
]


def typed_predicates(depth: int = 3) -> st.SearchStrategy[str]:
    """Mostly well-typed predicates, so that many evaluations end with a value (not an error)."""
    if depth == 0:
        return st.sampled_from(TYPED_BOOLS)
    sub = typed_predicates(depth - 1)

    @st.composite
    def compound(draw: st.DrawFn) -> str:
        kind = draw(st.sampled_from(["leaf", "and", "or", "not", "cond", "macro", "count"]))
        if kind == "leaf":
            return draw(st.sampled_from(TYPED_BOOLS))
        if kind in ("and", "or"):
            return f"({draw(sub)} {'&&' if kind == 'and' else '||'} {draw(sub)})"
        if kind == "not":
            return f"!({draw(sub)})"
        if kind == "cond":
            return f"({draw(sub)} ? {draw(sub)} : {draw(sub)})"
        var = f"w{depth}"
        body = draw(st.sampled_from(TYPED_BODIES)).format(v=var)
        items = draw(st.sampled_from(TYPED_LISTS))
        if kind == "count":
            return f"{items}.filter({var}, {body}).size() {draw(st.sampled_from(['==', '>=']))} 1"
        return (
            f"{items}.{draw(st.sampled_from(['all', 'exists', 'exists_one']))}({var}, {body} && {draw(sub)})"
        )

    return compound()


def compiled(source: str) -> cel.Program:
    assume(cel.check(source) == [])
    return cel.compile(source)


# ----------------------------------------------------------------------------------------------------------
# The properties.


@pytest.mark.slow  # seconds of CPU: many generated expressions, each run by both evaluators
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
)
@given(
    source=st.one_of(predicates(), typed_predicates()),
    cluster=clusters(),
    budget=st.integers(min_value=0, max_value=9).flatmap(  # now and then a budget the expression exceeds
        lambda k: (
            st.integers(min_value=20, max_value=200)
            if k == 0
            else st.integers(min_value=2000, max_value=20_000)
        )
    ),
)
def test_the_fast_evaluator_gives_the_interpreters_value_error_and_step_count(
    source: str, cluster: dict[str, Any], budget: int
) -> None:
    program = compiled(source)
    assert program.fast is not None, source  # every expression `check` admits has the fast evaluator
    activation = {"cluster": cluster}
    fast = cel.run(program, activation, budget=budget, evaluator="fast")
    slow = cel.run(program, activation, budget=budget, evaluator="interpreter")
    assert fast == slow, source
    event("budget" if slow.stop else "error" if slow.error else "value")


CLUSTER: dict[str, Any] = {
    "name": "eu-prod-1",
    "labels": {"env": "prod", "region": "eu", "example.com/team": "Payments"},
    "annotations": {"owner": "ops"},
    "facts": {
        "tier": 1,
        "nodes": 40,
        "k8s": "v1.30.2",
        "zones": ["a", "b"],
        "note": "some text",
        "gpu": False,
    },
}

# Every branch the fast evaluator mirrors, values and errors, each once at least.
EVERY_PATH = [
    "has(cluster.facts.tier) && cluster.facts.tier == 1 && !cluster.name.startsWith('legacy-')",
    "cluster.labels['example.com/team'].lowerAscii() == 'payments'", "cluster.name.split('-', 2) == ['eu', 'prod-1']",
    "semver(cluster.facts.k8s).isGreaterThan('1.29.9')", "cluster.facts.zones.exists(z, z == 'b')",
    "cluster.facts.zones.all(z, z.size() == 1)", "'ops' in cluster.annotations.map(k, cluster.annotations[k])",
    "cluster.facts.zones.exists_one(z, z == 'a')", "cluster.facts.zones.filter(z, z == 'a') == ['a']",
    "cluster.facts.nodes > 10 ? true : false", "type(cluster.name) == string", "cluster.facts.gpu == false",
    "cluster.facts.missing == 1", "cluster.facts.note == 1", "cluster.facts.note.inner == 1",
    "cluster.facts.tier + cluster.facts.note == 'x'", "semver(cluster.facts.note).major() == 1",
    "cluster.facts.nodes > 10 ? 1 : 2", "1 / 0 == 1", "1 % 0 == 1", "1 / 0 == 1 || true", "[1, 2][5] == 1",
    "{'a': 1}['b'] == 1", "{'a': 1, 'a': 2}.size() == 1", "{[1]: 2}.size() == 1", "cluster.facts.zones.map(z, z + 1) == []",
    "int('x') == 1", "cluster.name.matches('(')", "9223372036854775807 + 1 > 0", "-(-9223372036854775808) > 0",
    "9223372036854775807 * 2 > 0", "cluster.facts.tier.all(x, true)", "cluster.facts.tier.map(x, x) == []",
    "!cluster.facts.tier", "-cluster.name == 1", "cluster.name && true", "cluster.name || true",
    "cluster.name ? true : false", "(1 / 0 > 1) ? true : false", "cluster.facts.zones.exists(z, z / 2 == 1)",
    "cluster.facts.zones.all(z, 1 / 0 == z)", "[1, 2].exists_one(x, x / 0 == 1)", "[].all(x, x)",
    "{'a': 1}.all(k, k == 'a')", "'abc'.all(c, c != '')", "cluster.facts.tier in cluster.facts.zones",
    "cluster.labels.env.contains(1)", "size(1) == 1", "1u + 1 == 2u", "1.5 / 0.0 > 0.0", "b'x' + 'y' == 1",
    "null == cluster.facts.missing", "[1][0u] == 1", "cluster.facts.zones[-1] == 'a'", "{1: 'a'}[1] == 'a'",
    "{1: 'a'}[1.0] == 'a'", "cluster.facts.zones.map(z, [z, z]).size() == 2",
    "cluster.facts.zones.exists(cluster, cluster == 'a')", "[1, 2].map(x, [3, 4].map(y, x * y)) == [[3, 4], [6, 8]]",
    "[1, 2].all(x, [1, 2].exists(x, x == 2))", "string(1) == '1'", "double('x') == 1.0", "uint(-1) == 1u",
]  # fmt: skip


@pytest.mark.parametrize("source", EVERY_PATH)
def test_the_fast_evaluator_gives_the_interpreters_outcome_on_every_path_it_mirrors(source: str) -> None:
    program = cel.compile(source)
    assert program.fast is not None
    for budget in (10, 50, 10_000):
        fast = cel.run(program, {"cluster": CLUSTER}, budget=budget, evaluator="fast")
        slow = cel.run(program, {"cluster": CLUSTER}, budget=budget, evaluator="interpreter")
        assert fast == slow


@pytest.mark.slow  # seconds of CPU: generated values
@settings(max_examples=300, deadline=None)
@given(document=st.dictionaries(st.sampled_from(["cluster", "a", "b"]), JSON, max_size=3))
def test_to_cel_converts_every_value_exactly_as_cel_python_does(document: dict[str, Any]) -> None:
    def same(a: Any, b: Any) -> bool:
        if type(a) is not type(b):
            return False
        if isinstance(a, dict):
            return (
                list(a) == list(b)
                and all(same(k, j) for k, j in zip(a, b, strict=True))
                and all(same(a[k], b[k]) for k in a)
            )
        if isinstance(a, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        if isinstance(a, float):
            return math.copysign(1, a) == math.copysign(1, b) and (
                a == b or (math.isnan(a) and math.isnan(b))
            )
        return bool(a == b)

    assert same(cel.to_cel(document), celpy.adapter.json_to_cel(document))
    assert same(cel.to_cel(document), celpy.adapter.json_to_cel(document))  # again, from the shared scalars


@pytest.mark.slow  # seconds of CPU: generated fleets placed three ways
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
)
@given(source=st.one_of(predicates(), typed_predicates()), fleet=st.lists(clusters(), min_size=1, max_size=8))
def test_memoised_and_prepared_evaluation_agrees_with_plain_interpretation_cluster_by_cluster(
    source: str, fleet: list[dict[str, Any]]
) -> None:
    program = compiled(source)
    for cluster in fleet * 2:  # the second round reads the memo
        plain = cel.run(program, {"cluster": cluster}, budget=2000, evaluator="interpreter")
        try:
            got: bool | str = cel.evaluate(program, cel.prepare({"cluster": cluster}), budget=2000)
        except errors.PlacementError as e:
            got = str(e)
        if plain.stop == "budget":
            assert isinstance(got, str) and "cost budget of 2,000 steps" in got
        else:
            assert got == (plain.value if plain.value is not None else plain.error), source


@pytest.mark.slow  # seconds of CPU: generated fleets, every pair judged alone
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
)
@given(
    source=st.one_of(predicates(), typed_predicates()), fleet=st.lists(clusters(), min_size=1, max_size=10)
)
def test_placement_agrees_with_judging_each_pair_alone_with_the_interpreter(
    source: str, fleet: list[dict[str, Any]]
) -> None:
    compiled(source)
    members = [
        model.Cluster(
            name=f"{c['name']}-{i}", labels=c["labels"], annotations=c["annotations"], facts=c["facts"]
        )
        for i, c in enumerate(fleet)
    ]
    repo = pb.repo(members, [pb.bundle("b", [pb.obj("ConfigMap", "x")], placement=pb.placement(cel=source))])
    result = placement.place(repo, budget=2000, total_budget=10**9)
    for member in members:
        plain = cel.run(
            cel.compile(source), {"cluster": member.activation()}, budget=2000, evaluator="interpreter"
        )
        if plain.value is not None:
            assert (member.name in result.bundles["b"]) is plain.value
            assert member.name not in result.errors.get("b", {})
        else:
            assert member.name not in result.bundles["b"]
            assert member.name in result.errors["b"]


def test_clusters_whose_maps_differ_only_in_order_do_not_share_an_evaluation() -> None:
    # Macros iterate a map in its order, so {a, b} and {b, a} are different values to this expression.
    program = cel.compile("cluster.facts.m.map(k, k)[0] == 'a'")
    ab = {"name": "one", "labels": {}, "annotations": {}, "facts": {"m": {"a": 1, "b": 2}}}
    ba = {"name": "two", "labels": {}, "annotations": {}, "facts": {"m": {"b": 2, "a": 1}}}
    assert cel.evaluate(program, {"cluster": ab}) is True
    assert cel.evaluate(program, {"cluster": ba}) is False
