"""The limited YAML loader reads any JSON value written as YAML back as the JSON Kubernetes would keep for
it (strings written quoted, so that none reads as a boolean or a number), shared structures included:
checked on generated documents. Scalar by scalar comparisons with Kubernetes are in
tests/core/test_yaml_as_kubernetes_reads_it.py."""

from __future__ import annotations

import decimal
import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.core import yamlsafe

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=40,
)


class QuotingDumper(yaml.SafeDumper):
    """PyYAML's dumper, writing every string double-quoted."""


QuotingDumper.add_representer(
    str, lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"')
)


def as_kubernetes_keeps(value: Any) -> Any:
    """An integer in int64 range stays; any other number is a float64, which kubectl writes without a
    fraction when it is integral and below 1e21 (the shortest digits that read back as that float)."""
    if isinstance(value, dict):
        return {k: as_kubernetes_keeps(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_kubernetes_keeps(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    f = float(value)
    return int(decimal.Decimal(repr(f))) if f.is_integer() and abs(f) < 1e21 else f


def dump(value: Any) -> str:
    return yaml.dump(value, Dumper=QuotingDumper, allow_unicode=True)


def same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.slow  # seconds of CPU: generated values
@settings(max_examples=200, deadline=None)
@given(values)
def test_any_json_like_value_round_trips_through_yaml_as_kubernetes_keeps_it(value: Any) -> None:
    (doc,) = yamlsafe.load_yaml(dump(value).encode(), path="v.yaml")
    expected = yaml.safe_load(dump(value))  # `value` but for YAML's own line-break characters in strings
    assert same(doc.data, as_kubernetes_keeps(expected))


@pytest.mark.slow  # seconds of CPU: generated values
@settings(max_examples=100, deadline=None)
@given(st.lists(values, min_size=1, max_size=4))
def test_shared_values_dumped_as_anchors_and_aliases_load_as_the_same_values(parts: list[Any]) -> None:
    shared = {"shared": parts[0]}
    document = {"a": shared, "b": [shared, shared], "rest": parts[1:]}
    text = dump(document)
    (doc,) = yamlsafe.load_yaml(text.encode(), path="s.yaml")
    assert same(doc.data, as_kubernetes_keeps(yaml.safe_load(text)))


@settings(max_examples=50, deadline=None)
@given(st.lists(values, min_size=1, max_size=6))
def test_multi_document_files_keep_every_document_in_order(docs: list[Any]) -> None:
    text = yaml.dump_all(docs, Dumper=QuotingDumper)
    loaded = yamlsafe.load_yaml(text.encode(), path="m.yaml")
    assert same([d.data for d in loaded], as_kubernetes_keeps(list(yaml.safe_load_all(text))))
    assert [d.index for d in loaded] == list(range(len(docs)))
