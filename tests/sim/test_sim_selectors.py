"""Label and field selector parsing and matching (pure functions, apimachinery grammar)."""

from __future__ import annotations

import pytest

from fleet.sim.storage import selectors

KNOWN = {"metadata.name": ("metadata", "name"), "spec.nodeName": ("spec", "nodeName")}


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", {"a": "1"}, True),
        ("a=1", {"a": "1"}, True),
        ("a=1", {}, False),
        ("a!=1", {}, True),
        ("a notin (1,2)", {}, True),
        ("a notin (1,2)", {"a": "2"}, False),
        ("a in (1, 2)", {"a": "2"}, True),
        ("a,!b", {"a": "x"}, True),
        ("a,!b", {"a": "x", "b": "y"}, False),
        ("a>5", {"a": "6"}, True),
        ("a>5", {"a": "x"}, False),
        ("a<5", {}, False),
        ("example.com/team=web", {"example.com/team": "web"}, True),
        ("a=", {"a": ""}, True),
        ("  a = 1 , b == 2 ", {"a": "1", "b": "2"}, True),
    ],
)
def test_label_selectors_match_like_apimachinery(text: str, labels: dict[str, str], expected: bool) -> None:
    assert selectors.parse_labels(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["a=b c", "a in ()", "a in (b", "a>b", "-a=b", "a=-b", "!", "a,,b", "a b"])
def test_malformed_label_selectors_raise(text: str) -> None:
    with pytest.raises(selectors.SelectorError):
        selectors.parse_labels(text)


def test_field_selectors_unescape_and_skip_empty_terms() -> None:
    sel = selectors.parse_fields(r"metadata.name=a\,b,,spec.nodeName!=n1,", known=KNOWN)
    assert [(t.field, t.value, t.negate) for t in sel.terms] == [
        ("metadata.name", "a,b", False),
        ("spec.nodeName", "n1", True),
    ]
    assert sel.matches({"metadata": {"name": "a,b"}, "spec": {"nodeName": "n2"}})
    assert not sel.matches({"metadata": {"name": "a,b"}, "spec": {"nodeName": "n1"}})
    assert sel.required_name() == "a,b"


def test_a_missing_field_compares_as_the_empty_string() -> None:
    sel = selectors.parse_fields("spec.nodeName=", known=KNOWN)
    assert sel.matches({"spec": {}})


@pytest.mark.parametrize("text", ["spec.foo=bar", "metadata.name", r"metadata.name=a\x"])
def test_unknown_fields_and_malformed_field_selectors_raise(text: str) -> None:
    with pytest.raises(selectors.SelectorError):
        selectors.parse_fields(text, known=KNOWN)
