"""The limited YAML loader reads what PyYAML's safe loader reads (for plain JSON-like values), shared
structures included: checked on generated documents."""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import yamlsafe

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_any_json_like_value_round_trips_through_yaml(value: Any) -> None:
    text = yaml.safe_dump(value, allow_unicode=True)
    (doc,) = yamlsafe.load_yaml(text.encode(), path="v.yaml")
    expected = yaml.safe_load(text)  # equal to `value` except for YAML's own line-break characters
    assert json.dumps(doc.data, sort_keys=True) == json.dumps(expected, sort_keys=True)


@settings(max_examples=100, deadline=None)
@given(st.lists(values, min_size=1, max_size=4))
def test_shared_values_dumped_as_anchors_and_aliases_load_like_pyyaml(parts: list[Any]) -> None:
    shared = {"shared": parts[0]}
    document = {"a": shared, "b": [shared, shared], "rest": parts[1:]}
    text = yaml.safe_dump(document)
    (doc,) = yamlsafe.load_yaml(text.encode(), path="s.yaml")
    assert doc.data == yaml.safe_load(text)


@settings(max_examples=50, deadline=None)
@given(st.lists(values, min_size=1, max_size=6))
def test_multi_document_files_keep_every_document_in_order(docs: list[Any]) -> None:
    text = yaml.safe_dump_all(docs)
    loaded = yamlsafe.load_yaml(text.encode(), path="m.yaml")
    assert [d.data for d in loaded] == list(yaml.safe_load_all(text))
    assert [d.index for d in loaded] == list(range(len(docs)))
