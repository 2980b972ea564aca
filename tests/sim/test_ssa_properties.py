"""Property tests of field sets and apply (Hypothesis): round-trips, set algebra, idempotence."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.sim.kinds import structure
from fleet.sim.merging import fieldsets, ssa

DEPLOYMENT = structure.builtin("apps", "v1", "Deployment")
CONFIGMAP = structure.builtin("", "v1", "ConfigMap")

names = st.text(alphabet="abcxyz-._/", min_size=1, max_size=6)
scalars = st.one_of(st.integers(-5, 5), st.booleans(), names, st.none())
elements = st.one_of(
    names.map(fieldsets.field_key),
    st.dictionaries(names, st.one_of(st.integers(0, 99), names), min_size=1, max_size=2).map(
        fieldsets.key_key
    ),
    scalars.map(fieldsets.value_key),
    st.integers(0, 20).map(fieldsets.index_key),
)
paths = st.lists(elements, min_size=1, max_size=4).map(tuple)
sets = st.lists(paths, max_size=12).map(fieldsets.from_paths)


def member_paths(trie: dict[str, Any]) -> set[tuple[str, ...]]:
    return set(fieldsets.members(trie))


@given(st.lists(paths, max_size=12))
def test_a_field_set_has_exactly_the_paths_it_was_built_from(built: list[tuple[str, ...]]) -> None:
    assert member_paths(fieldsets.from_paths(built)) == set(built)


@given(sets)
def test_fields_v1_encoding_round_trips_through_json(trie: dict[str, Any]) -> None:
    encoded = fieldsets.encode(trie)
    decoded = fieldsets.decode(json.loads(json.dumps(encoded)))
    assert member_paths(decoded) == member_paths(trie)
    # deterministic: encoding is independent of insertion order
    shuffled = fieldsets.from_paths(sorted(member_paths(trie), reverse=True))
    assert json.dumps(fieldsets.encode(shuffled)) == json.dumps(encoded)


@given(sets, sets)
def test_set_algebra_matches_python_sets(a: dict[str, Any], b: dict[str, Any]) -> None:
    pa, pb = member_paths(a), member_paths(b)
    assert member_paths(fieldsets.set_union(a, b)) == pa | pb
    assert member_paths(fieldsets.set_difference(a, b)) == pa - pb
    assert member_paths(fieldsets.set_intersection(a, b)) == pa & pb


label_keys = st.text(alphabet="abcdef", min_size=1, max_size=3)
label_maps = st.dictionaries(label_keys, st.text(alphabet="xyz", max_size=3), max_size=4)
containers = st.lists(
    st.fixed_dictionaries(
        {"name": label_keys, "image": st.sampled_from(["a:1", "b:2", "c"])},
        optional={
            "args": st.lists(st.text(alphabet="-ab", max_size=3), max_size=3),
            "ports": st.lists(
                st.fixed_dictionaries(
                    {"containerPort": st.integers(1, 4)},
                    optional={"protocol": st.sampled_from(["TCP", "UDP"])},
                ),
                max_size=3,
                unique_by=lambda p: (p["containerPort"], p.get("protocol", "TCP")),
            ),
        },
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda c: c["name"],
)


def deployment(labels: dict[str, str], replicas: int | None, cs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "w"}},
        "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": cs}},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "w", "labels": labels},
        "spec": spec,
    }


configs = st.builds(deployment, label_maps, st.one_of(st.none(), st.integers(0, 5)), containers)


@settings(max_examples=60, deadline=None)
@given(configs, configs)
def test_applying_the_same_config_twice_changes_nothing(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    live = ssa.apply(None, first, manager="other", force=True, structure=DEPLOYMENT, now="t1")
    once = ssa.apply(live, second, manager="gitops", force=True, structure=DEPLOYMENT, now="t2")
    twice = ssa.apply(once, second, manager="gitops", force=False, structure=DEPLOYMENT, now="t3")
    assert twice == once


@settings(max_examples=60, deadline=None)
@given(configs, configs)
def test_a_sole_applier_gets_exactly_what_it_sent(first: dict[str, Any], second: dict[str, Any]) -> None:
    live = ssa.apply(None, first, manager="gitops", force=False, structure=DEPLOYMENT, now="t1")
    after = ssa.apply(live, second, manager="gitops", force=False, structure=DEPLOYMENT, now="t2")
    fresh = ssa.apply(None, second, manager="gitops", force=False, structure=DEPLOYMENT, now="t2")
    # Everything the applier stopped sending is pruned: the result is what a fresh create gives,
    # apart from the order of list items shared with the old object and empty lists/maps, which
    # nobody owns (an empty list-map adds nothing to a field set) and Go's omitempty drops on a real
    # server anyway.
    assert _sorted_lists(after) == _sorted_lists(fresh)


def _sorted_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_lists(v) for k, v in value.items() if k != "managedFields" and v not in ([], {})}
    if isinstance(value, list):
        return sorted((_sorted_lists(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


@settings(max_examples=60, deadline=None)
@given(label_maps, label_maps)
def test_an_update_owns_exactly_the_keys_it_changed(before: dict[str, str], after: dict[str, str]) -> None:
    old = ssa.update(
        None,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": before},
        manager="a",
        structure=CONFIGMAP,
        now="t1",
    )
    new = ssa.update(old, {**old, "data": after}, manager="b", structure=CONFIGMAP, now="t2")
    changed = {k for k in after if before.get(k) != after[k]}
    owned_by_b = set()
    for entry in new["metadata"].get("managedFields", []):
        if entry["manager"] == "b":
            owned_by_b = {p[1][2:] for p in fieldsets.members(entry["fieldsV1"]) if len(p) == 2}
    assert owned_by_b == changed
