"""Label selectors: Kubernetes semantics, the text form, and agreement with an independent reading."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.core import errors, model, selectors
from tests.support import placement_builders as pb

EU_PROD = {"env": "prod", "region": "eu", "example.com/tier": "1"}
BARE: dict[str, str] = {}

CASES = [
    # (selector, labels, expected, why)
    (pb.selector(), EU_PROD, True, "the empty selector matches everything"),
    (pb.selector(), BARE, True, "the empty selector matches a cluster without labels"),
    (pb.selector({"env": "prod"}), EU_PROD, True, "matchLabels equal"),
    (pb.selector({"env": "dev"}), EU_PROD, False, "matchLabels different value"),
    (pb.selector({"env": "prod"}), BARE, False, "matchLabels missing key"),
    (pb.selector({"env": ""}), BARE, False, "matchLabels with an empty value still needs the key"),
    (pb.selector({"env": ""}), {"env": ""}, True, "matchLabels empty value present"),
    (pb.selector(None, ("region", "In", ["eu", "us"])), EU_PROD, True, "In listed"),
    (pb.selector(None, ("region", "In", ["us"])), EU_PROD, False, "In not listed"),
    (pb.selector(None, ("region", "In", ["eu"])), BARE, False, "In missing key"),
    (pb.selector(None, ("region", "NotIn", ["us"])), EU_PROD, True, "NotIn not listed"),
    (pb.selector(None, ("region", "NotIn", ["eu"])), EU_PROD, False, "NotIn listed"),
    (pb.selector(None, ("region", "NotIn", ["eu"])), BARE, True, "NotIn matches a cluster without the key"),
    (pb.selector(None, ("region", "Exists", [])), EU_PROD, True, "Exists present"),
    (pb.selector(None, ("region", "Exists", [])), BARE, False, "Exists missing"),
    (pb.selector(None, ("region", "DoesNotExist", [])), EU_PROD, False, "DoesNotExist present"),
    (pb.selector(None, ("region", "DoesNotExist", [])), BARE, True, "DoesNotExist missing"),
    (pb.selector(None, ("example.com/tier", "In", ["1"])), EU_PROD, True, "prefixed keys"),
    (pb.selector({"env": "prod"}, ("region", "In", ["us"])), EU_PROD, False, "labels AND expressions"),
    (
        pb.selector({"env": "prod"}, ("region", "In", ["eu"]), ("legacy", "DoesNotExist", [])),
        EU_PROD,
        True,
        "every requirement holds",
    ),
]


@pytest.mark.parametrize(("selector", "labels", "expected", "why"), CASES, ids=[c[3] for c in CASES])
def test_a_selector_matches_exactly_as_kubernetes_says(
    selector: model.LabelSelector, labels: Mapping[str, str], expected: bool, why: str
) -> None:
    assert selectors.matches(selector, labels) is expected, why


TEXT_CASES = [
    ("", pb.selector()),
    ("env=prod", pb.selector({"env": "prod"})),
    ("env==prod", pb.selector({"env": "prod"})),
    ("env!=prod", pb.selector(None, ("env", "NotIn", ["prod"]))),
    ("region in (eu,us)", pb.selector(None, ("region", "In", ["eu", "us"]))),
    ("region notin ( eu , us )", pb.selector(None, ("region", "NotIn", ["eu", "us"]))),
    ("legacy", pb.selector(None, ("legacy", "Exists", []))),
    ("!legacy", pb.selector(None, ("legacy", "DoesNotExist", []))),
    (
        "env=prod,region in (eu,us),!legacy",
        pb.selector({"env": "prod"}, ("region", "In", ["eu", "us"]), ("legacy", "DoesNotExist", [])),
    ),
    ("example.com/tier=1", pb.selector({"example.com/tier": "1"})),
]


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES, ids=[t or "<empty>" for t, _ in TEXT_CASES])
def test_the_text_form_parses_to_the_selector_it_names(text: str, expected: model.LabelSelector) -> None:
    assert selectors.parse(text) == expected


def test_not_equal_in_text_matches_clusters_without_the_key_like_kubectl() -> None:
    assert selectors.matches(selectors.parse("env!=prod"), {})
    assert not selectors.matches(selectors.parse("env!=prod"), {"env": "prod"})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("region in eu", "expected '('"),
        ("region in (eu", "expected ')'"),
        ("a,,b", "expected a label key"),
        ("=x", "expected a label key"),
        ("env=prod x", "expected ','"),
        ("bad key!=x", "expected"),
        ("-bad=x", "invalid label key"),
        ("env=" + "v" * 64, "invalid label value"),
        ("env=prod,", "expected a requirement"),
    ],
)
def test_bad_selector_text_is_refused_with_the_place_named(text: str, fragment: str) -> None:
    with pytest.raises(errors.InputError) as info:
        selectors.parse(text)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# Property: the engine agrees with an independent reading of the Kubernetes rules.

KEYS = ["env", "region", "tier", "example.com/team"]
VALUES = ["prod", "dev", "eu", "us", "1", ""]

label_sets = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=4)
requirements = st.builds(
    model.Requirement,
    key=st.sampled_from(KEYS),
    operator=st.sampled_from(list(model.Operator)),
    values=st.lists(st.sampled_from(VALUES), min_size=1, max_size=3).map(tuple),
).map(
    lambda r: (
        r
        if r.operator in (model.Operator.IN, model.Operator.NOT_IN)
        else model.Requirement(r.key, r.operator, ())
    )
)
label_selectors = st.builds(
    model.LabelSelector,
    match_labels=st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2).map(
        lambda d: tuple(d.items())
    ),
    match_expressions=st.lists(requirements, max_size=4).map(tuple),
)


def oracle(selector: model.LabelSelector, labels: Mapping[str, str]) -> bool:
    """The rules as the Kubernetes API reference states them, written as set membership."""
    present = set(labels)
    for key, value in selector.match_labels:  # "equivalent to an In requirement with a single value"
        if not (key in present and labels[key] in {value}):
            return False
    for r in selector.match_expressions:
        allowed = set(r.values)
        ok = {
            "In": r.key in present and labels.get(r.key) in allowed,
            "NotIn": r.key not in present or labels.get(r.key) not in allowed,
            "Exists": r.key in present,
            "DoesNotExist": r.key not in present,
        }[r.operator.value]
        if not ok:
            return False
    return True


@pytest.mark.slow  # seconds of CPU: generated selectors and label sets
@settings(max_examples=400, deadline=None)
@given(selector=label_selectors, labels=label_sets)
def test_the_selector_engine_agrees_with_an_independent_reading_of_the_rules(
    selector: model.LabelSelector, labels: dict[str, str]
) -> None:
    assert selectors.matches(selector, labels) == oracle(selector, labels)


@settings(max_examples=200, deadline=None)
@given(selector=label_selectors, labels=label_sets)
def test_the_text_form_round_trips_to_a_selector_that_matches_the_same_labels(
    selector: model.LabelSelector, labels: dict[str, str]
) -> None:
    text = selectors.to_text(selector)
    assert selectors.matches(selectors.parse(text), labels) == selectors.matches(selector, labels)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="ab=!,() in notx./-", max_size=30))
def test_any_selector_text_either_parses_or_is_refused_with_an_input_error(text: str) -> None:
    try:
        parsed = selectors.parse(text)
    except errors.InputError:
        return
    assert isinstance(parsed, model.LabelSelector)
    assert all(selectors.valid_key(r.key) for r in parsed.match_expressions)
