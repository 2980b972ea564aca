"""FieldsV1 encoding, decoding and path rendering (reference item H.65)."""

from __future__ import annotations

import json

import pytest

from fleet.sim.merging import fieldsets


def test_encoding_puts_the_dot_first_then_fields_keys_values_and_indexes_in_order() -> None:
    trie = {
        "i:10": {},
        'v:"b"': {},
        "i:9": {},
        'k:{"containerPort":8080,"protocol":"TCP"}': {},
        'k:{"containerPort":80,"protocol":"TCP"}': {},
        "f:z": {},
        ".": {},
        'v:"a"': {},
        "f:a": {"f:y": {}, "f:b": {}},
    }
    encoded = fieldsets.encode(trie)
    assert list(encoded) == [
        ".",
        "f:a",
        "f:z",
        'k:{"containerPort":80,"protocol":"TCP"}',
        'k:{"containerPort":8080,"protocol":"TCP"}',
        'v:"a"',
        'v:"b"',
        "i:9",
        "i:10",
    ]
    assert list(encoded["f:a"]) == ["f:b", "f:y"]


def test_paths_render_like_the_real_server() -> None:
    path = (
        "f:spec",
        "f:template",
        "f:spec",
        "f:containers",
        'k:{"name":"app"}',
        "f:ports",
        'k:{"containerPort":80,"protocol":"TCP"}',
    )
    assert (
        fieldsets.path_text(path)
        == '.spec.template.spec.containers[name="app"].ports[containerPort=80,protocol="TCP"]'
    )
    assert (
        fieldsets.path_text(("f:metadata", "f:finalizers", 'v:"a.io/x"')) == '.metadata.finalizers[="a.io/x"]'
    )
    assert fieldsets.path_text(("f:spec", "f:args", "i:0")) == ".spec.args[0]"


def test_list_map_keys_are_json_with_sorted_field_names() -> None:
    assert (
        fieldsets.key_key({"protocol": "TCP", "containerPort": 80})
        == 'k:{"containerPort":80,"protocol":"TCP"}'
    )
    assert fieldsets.key_key({"name": 'quo"te'}) == "k:" + json.dumps(
        {"name": 'quo"te'}, separators=(",", ":")
    )
    assert fieldsets.value_key(True) == "v:true"


@pytest.mark.parametrize(
    "bad",
    [[], {"f:a": 1}, {"x:a": {}}, {".": {"f:a": {}}}, {'k:{"a"': {}}, {"i:x": {}}],
)
def test_malformed_fields_v1_is_rejected(bad: object) -> None:
    with pytest.raises(fieldsets.InvalidFieldSet):
        fieldsets.decode(bad)
