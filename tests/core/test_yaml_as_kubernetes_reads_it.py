"""Repository files are read as Kubernetes reads them (`kubectl apply -f`: sigs.k8s.io/yaml over go-yaml
v2, then JSON, then an unstructured object): plain scalars, mapping keys, numbers, ``<<`` merges, and
duplicate keys (refused with their line). Issue 13, items 5, 13 and 14.

`KUBERNETES` was recorded from sigs.k8s.io/yaml v1.6.0 (go.yaml.in/yaml/v2 v2.4.3) and
k8s.io/apimachinery v0.35.0: for each plain scalar, the JSON kubectl sends for ``v: SCALAR`` (the value)
and the JSON key it writes for ``m: {SCALAR: 1}``; ``REFUSED`` where it stops with an error.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleet.core import model, render, repository, yamlsafe
from tests.support import repository_builders as rb

REFUSED = None

KUBERNETES: list[tuple[str, str | None, str | None]] = [
    ("y", "true", "true"),
    ("Y", "true", "true"),
    ("n", "false", "false"),
    ("N", "false", "false"),
    ("yes", "true", "true"),
    ("Yes", "true", "true"),
    ("YES", "true", "true"),
    ("no", "false", "false"),
    ("No", "false", "false"),
    ("NO", "false", "false"),
    ("true", "true", "true"),
    ("True", "true", "true"),
    ("TRUE", "true", "true"),
    ("false", "false", "false"),
    ("False", "false", "false"),
    ("FALSE", "false", "false"),
    ("on", "true", "true"),
    ("On", "true", "true"),
    ("ON", "true", "true"),
    ("off", "false", "false"),
    ("Off", "false", "false"),
    ("OFF", "false", "false"),
    ("yEs", '"yEs"', "yEs"),
    ("oN", '"oN"', "oN"),
    ("~", "null", REFUSED),
    ("null", "null", REFUSED),
    ("Null", "null", REFUSED),
    ("NULL", "null", REFUSED),
    ("nULL", '"nULL"', "nULL"),
    ("0", "0", "0"),
    ("00", "0", "0"),
    ("-0", "0", "0"),
    ("+0", "0", "0"),
    ("007", "7", "7"),
    ("08", "8", "8"),
    ("09", "9", "9"),
    ("0o17", "15", "15"),
    ("0O17", "15", "15"),
    ("0x1F", "31", "31"),
    ("0X1f", "31", "31"),
    ("0b101", "5", "5"),
    ("0B11", "3", "3"),
    ("-0b101", "-5", "-5"),
    ("0b+101", "5", "5"),
    ("0b-1", "-1", "-1"),
    ("+0x10", "16", "16"),
    ("-0x10", "-16", "-16"),
    ("0x", '"0x"', "0x"),
    ("0b", '"0b"', "0b"),
    ("0o", '"0o"', "0o"),
    ("0x_1F", "31", "31"),
    ("1_000", "1000", "1000"),
    ("1__0", "10", "10"),
    ("_1", '"_1"', "_1"),
    ("1_", "1", "1"),
    ("0777", "511", "511"),
    ("0_7_7_7", "511", "511"),
    ("10:30", '"10:30"', "10:30"),
    ("190:20:30.15", '"190:20:30.15"', "190:20:30.15"),
    ("-1:30", '"-1:30"', "-1:30"),
    ("1:2:3", '"1:2:3"', "1:2:3"),
    ("1:60", '"1:60"', "1:60"),
    ("+1:30", '"+1:30"', "+1:30"),
    ("12:30:00", '"12:30:00"', "12:30:00"),
    ("1.0", "1", "1"),
    ("3.0", "3", "3"),
    ("-3.0", "-3", "-3"),
    ("1.", "1", "1"),
    ("-1.", "-1", "-1"),
    (".5", "0.5", "0.5"),
    ("+.5", "0.5", "0.5"),
    ("-.5", "-0.5", "-0.5"),
    ("._5", '"._5"', "._5"),
    (".5_0", "0.5", "0.5"),
    (".5e3", "500", "500"),
    (".5E+3", "500", "500"),
    ("..5", '"..5"', "..5"),
    (".", '"."', "."),
    ("1e3", "1000", "1000"),
    ("1E3", "1000", "1000"),
    ("1.0e3", "1000", "1000"),
    ("1.0e+3", "1000", "1000"),
    ("1e-3", "0.001", "0.001"),
    ("1e+3", "1000", "1000"),
    ("1e-7", "1e-7", "1e-07"),
    ("1e-400", "0", "0"),
    ("1e400", '"1e400"', "1e400"),
    (".5e400", '".5e400"', ".5e400"),
    ("1.5", "1.5", "1.5"),
    ("0.1", "0.1", "0.1"),
    ("1e21", "1e+21", "1e+21"),
    ("1e20", "100000000000000000000", "1e+20"),
    ("1.2345678901234567e20", "123456789012345670000", "1.2345679e+20"),
    ("1e16", "10000000000000000", "1e+16"),
    ("2e-5", "0.00002", "2e-05"),
    ("1_0.5", "10.5", "10.5"),
    ("1.5_0", "1.5", "1.5"),
    ("6.02e23", "6.02e+23", "6.02e+23"),
    ("9223372036854775807", "9223372036854775807", "9223372036854775807"),
    ("9223372036854775808", "9223372036854776000", REFUSED),
    ("-9223372036854775808", "-9223372036854775808", "-9223372036854775808"),
    ("-9223372036854775809", "-9223372036854776000", "-9.223372e+18"),
    ("18446744073709551615", "18446744073709552000", REFUSED),
    ("18446744073709551616", "18446744073709552000", "1.8446744e+19"),
    ("99999999999999999999999", "1e+23", "1e+23"),
    ("+9223372036854775808", "9223372036854776000", "9.223372e+18"),
    (".inf", REFUSED, ".inf"),
    (".Inf", REFUSED, ".inf"),
    (".INF", REFUSED, ".inf"),
    ("-.inf", REFUSED, "-.inf"),
    ("+.inf", REFUSED, ".inf"),
    (".iNf", '".iNf"', ".iNf"),
    ("inf", '"inf"', "inf"),
    ("Infinity", '"Infinity"', "Infinity"),
    ("-Infinity", '"-Infinity"', "-Infinity"),
    ("NaN", '"NaN"', "NaN"),
    ("nan", '"nan"', "nan"),
    (".nan", REFUSED, ".nan"),
    (".NaN", REFUSED, ".nan"),
    (".NAN", REFUSED, ".nan"),
    ("2024-01-01", '"2024-01-01"', "2024-01-01"),
    ("2024-1-1", '"2024-1-1"', "2024-1-1"),
    ("2001-12-14t21:59:43.10-05:00", '"2001-12-14t21:59:43.10-05:00"', "2001-12-14t21:59:43.10-05:00"),
    ("2024-01-01T10:00:00Z", '"2024-01-01T10:00:00Z"', "2024-01-01T10:00:00Z"),
    ("20240101", "20240101", "20240101"),
    ("2024-13-45", '"2024-13-45"', "2024-13-45"),
    ("=", '"="', "="),
    ("+", '"+"', "+"),
    ("--", '"--"', "--"),
    ("++1", '"++1"', "++1"),
    ("0x1p-2", '"0x1p-2"', "0x1p-2"),
    ("1e", '"1e"', "1e"),
    ("1e+", '"1e+"', "1e+"),
    ("e3", '"e3"', "e3"),
    ("0.0.1", '"0.0.1"', "0.0.1"),
    ("1.2.3", '"1.2.3"', "1.2.3"),
    ("v1", '"v1"', "v1"),
    ("$1", '"$1"', "$1"),
    ("1/2", '"1/2"', "1/2"),
    ("0xG", '"0xG"', "0xG"),
    ("0b2", '"0b2"', "0b2"),
    ("0o8", '"0o8"', "0o8"),
    ("12e-3_0", "1.2e-29", "1.2e-29"),
]


def load(text: str) -> Any:
    (doc,) = yamlsafe.load_yaml(text.encode(), path="f.yaml")
    return doc.data


def refusal(text: str, *, path: str = "f.yaml") -> str:
    with pytest.raises(yamlsafe.YamlError) as info:
        yamlsafe.load_yaml(text.encode(), path=path)
    return str(info.value)


def parse(files: dict[str, str | bytes]) -> model.Repo:
    data = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    return repository.parse(model.Snapshot(revision=None, files=data))


def errors_of(repo: model.Repo) -> list[tuple[str, int, str]]:
    return [(p.path, p.line, p.message) for p in repo.errors]


@pytest.mark.parametrize(("scalar", "value", "key"), KUBERNETES)
def test_a_plain_scalar_reads_as_kubernetes_reads_it_as_a_value_and_as_a_key(
    scalar: str, value: str | None, key: str | None
) -> None:
    if value is REFUSED:
        assert "invalid YAML: .nan and .inf are not JSON numbers" in refusal(f"v: {scalar}\n")
    else:
        got, want = load(f"v: {scalar}\n")["v"], json.loads(value)
        assert (got, type(got)) == (want, type(want))
    if key is REFUSED:
        assert "cannot be a JSON key (Kubernetes refuses it; quote it)" in refusal(f"m:\n  {scalar}: 1\n")
    else:
        assert load(f"m:\n  {scalar}: 1\n") == {"m": {key: 1}}


def test_keys_that_are_booleans_numbers_or_floats_become_the_strings_kubernetes_writes() -> None:
    data = load("data: {SE: Sweden, NO: Norway}\nports: {9000: x, metrics: y}\nf: {1.5: a, 3.0: b, 1e6: c}\n")
    assert data == {
        "data": {"SE": "Sweden", "false": "Norway"},
        "ports": {"9000": "x", "metrics": True},
        "f": {"1.5": "a", "3": "b", "1e+06": "c"},
    }
    assert render.canonical_json(data)  # sortable: every key is a string


def test_a_null_key_is_refused_with_its_line_as_kubernetes_refuses_it() -> None:
    assert refusal("a: 1\nb: {~: a, c: d}\n") == (
        "f.yaml:2: invalid YAML: a mapping key that is null (~, null or nothing) cannot be a JSON key "
        "(Kubernetes refuses it; quote it)"
    )
    assert "f.yaml:3: " in refusal("a: 1\nb:\n  null: x\n")
    assert "above 2^63-1" in refusal("{18446744073709551615: x}\n")


@pytest.mark.parametrize("text", ["10:30", "190:20:30.15", "-1:30", "1:2:3", "12:30:00", "+1:30"])
def test_base_60_numbers_of_yaml_1_1_stay_text(text: str) -> None:
    assert load(f"at: {text}\n{text}: k\n") == {"at": text, text: "k"}


def test_numbers_are_written_as_kubectl_sends_them() -> None:
    data = load("a: 3.0\nb: 1e3\nc: 08\nd: 0o17\ne: 9223372036854775808\nf: 0.5\ng: 1e21\n")
    assert data == {"a": 3, "b": 1000, "c": 8, "d": 15, "e": 9223372036854776000, "f": 0.5, "g": 1e21}
    assert render.canonical_json(data) == (
        '{"a":3,"b":1000,"c":8,"d":15,"e":9223372036854776000,"f":0.5,"g":1e+21}'
    )


def test_explicit_tags_resolve_as_go_yaml_and_a_mismatch_is_an_error_without_the_value() -> None:
    assert load('a: !!int "12"\nb: !!float 1\nc: !!str 1\nd: !!bool yes\ne: !!null ""\n') == {
        "a": 12,
        "b": 1,
        "c": "1",
        "d": True,
        "e": None,
    }
    message = refusal("a: 1\nb: !!int SECRET-CANARY\n")
    assert message == "f.yaml:2: invalid YAML: a value tagged !!int is not an integer"


def test_a_merge_key_beside_an_equals_value_reads_as_kubernetes_reads_it() -> None:
    text = "base: &b {x: 1, op: 2}\nm:\n  <<: *b\n  op: =\n  eq: =\n"
    assert load(text) == {"base": {"x": 1, "op": 2}, "m": {"x": 1, "op": "=", "eq": "="}}


def test_merge_lists_give_the_first_mapping_precedence_and_explicit_keys_after_win() -> None:
    text = "a: &a {x: 1, w: 1}\nb: &b {x: 2, z: 2}\nm:\n  <<: [*a, *b]\n  z: 3\n"
    assert load(text)["m"] == {"x": 1, "w": 1, "z": 3}
    assert load("m:\n  <<: {a: {<<: {b: 1}, c: 2}}\n") == {"m": {"a": {"b": 1, "c": 2}}}


def test_a_key_before_a_merge_that_sets_it_again_is_refused_as_ambiguous() -> None:
    # go-yaml v2 (Kubernetes) keeps the merged 2, the YAML merge rule (PyYAML, kustomize) the explicit 1.
    assert refusal("m:\n  a: 1\n  <<: {a: 2, b: 3}\n") == (
        'f.yaml:3: invalid YAML: key "a" is set before this << merge, which sets it again: Kubernetes keeps '
        "the merged value, the YAML merge rule the explicit one (write << first, or drop one of them)"
    )


def test_a_merge_of_something_else_than_mappings_is_an_error_with_its_line() -> None:
    assert refusal("a: 1\nm:\n  <<: [x]\n") == (
        "f.yaml:3: invalid YAML: a << merge needs a mapping or a list of mappings"
    )
    assert 'duplicate key "<<" (first at line 2' in refusal("m:\n  <<: {a: 1}\n  <<: {b: 2}\n")


def test_a_duplicate_key_is_refused_with_the_line_of_the_second() -> None:
    assert refusal("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  k: 1\n  k: 2\n") == (
        'f.yaml:6: invalid YAML: duplicate key "k" (first at line 5)'
    )


def test_keys_that_read_the_same_once_converted_are_duplicates() -> None:
    assert refusal("m:\n  yes: 1\n  true: 2\n") == (
        'f.yaml:3: invalid YAML: duplicate key "true": "yes" at line 2 and "true" here are the same key '
        "as Kubernetes reads them"
    )
    assert 'duplicate key "1"' in refusal("m:\n  1: a\n  '1': b\n")


def test_a_duplicate_key_in_json_is_refused_with_its_line() -> None:
    text = b'{\n  "apiVersion": "v1",\n  "kind": "ConfigMap",\n  "metadata": {"name": "a"},\n  "kind": "Secret"\n}'
    with pytest.raises(yamlsafe.YamlError) as info:
        yamlsafe.load_json(text, path="m.json")
    assert str(info.value) == 'm.json:5: invalid JSON: duplicate key "kind"'


def test_json_numbers_are_read_as_kubectl_sends_them_and_nan_is_refused() -> None:
    (doc,) = yamlsafe.load_json(b'{"a": 3.0, "b": 1e3, "c": 9223372036854775808, "d": 0.5}', path="m.json")
    assert render.canonical_json(doc.data) == '{"a":3,"b":1000,"c":9223372036854776000,"d":0.5}'
    for text, line in [(b'{"a":\n  NaN}', 2), (b'{"a": [1,\n 2,\n -Infinity]}', 3), (b'{"a": 1e999}', 1)]:
        with pytest.raises(yamlsafe.YamlError) as info:
            yamlsafe.load_json(text, path="m.json")
        assert info.value.line == line


def test_a_doubled_spec_in_a_cluster_file_is_refused_instead_of_dropping_facts() -> None:
    cluster = rb.cluster_yaml("eu-prod-1", labels={"env": "prod"}) + (
        "spec:\n  facts: {gpu: true}\nspec:\n  paused: false\n"
    )
    repo = parse({**rb.SAMPLE, "clusters/eu-prod-1.yaml": cluster})
    assert errors_of(repo) == [
        ("clusters/eu-prod-1.yaml", 9, 'invalid YAML: duplicate key "spec" (first at line 7)')
    ]
    assert "eu-prod-1" in repo.broken_clusters and "eu-prod-1" not in repo.clusters


def test_a_duplicate_key_in_bundle_yaml_or_a_manifest_breaks_that_bundle_only() -> None:
    bundle = rb.bundle_yaml(
        "web", spec="  namespace: web\n  namespace: other\n  placement:\n    clusters: []\n"
    )
    repo = parse({**rb.SAMPLE, "bundles/web/bundle.yaml": bundle})
    assert errors_of(repo) == [
        ("bundles/web/bundle.yaml", 7, 'invalid YAML: duplicate key "namespace" (first at line 6)')
    ]
    assert "web" in repo.broken_bundles and "base" in repo.bundles
    doubled = '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "base", "name": "other"}}'
    repo = parse({**rb.SAMPLE, "bundles/base/ns.json": doubled})
    assert errors_of(repo) == [("bundles/base/ns.json", 1, 'invalid JSON: duplicate key "name"')]
    assert "base" in repo.broken_bundles and "web" in repo.bundles


def test_field_lines_follow_keys_as_converted() -> None:
    (doc,) = yamlsafe.load_yaml(b"a: 1\nspec:\n  facts:\n    NO: 1\n", path="c.yaml", lines=True)
    assert doc.data == {"a": 1, "spec": {"facts": {"false": 1}}}
    assert doc.lines[("spec", "facts", "false")] == 4
