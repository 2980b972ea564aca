"""How `fleet diff` shows objects: noise removed, Secret values redacted (pure functions)."""

from __future__ import annotations

from fleet.cluster import diff
from fleet.core import model, plan

LIVE = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {
        "name": "one",
        "namespace": "web",
        "uid": "1234",
        "resourceVersion": "77",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "managedFields": [{"manager": "fleet"}],
        "annotations": {model.ANNOTATION_REVISION: "abc", plan.ANNOTATION_HASH: "h1", "team": "a"},
    },
    "data": {"key": "value"},
    "status": {"whatever": True},
}


def test_fields_that_always_differ_are_left_out() -> None:
    cleaned = diff.clean(LIVE)
    assert cleaned["metadata"] == {"name": "one", "namespace": "web", "annotations": {"team": "a"}}
    assert "status" not in cleaned


def test_a_unified_diff_shows_only_real_changes() -> None:
    new = {**LIVE, "metadata": {**LIVE["metadata"], "resourceVersion": "78"}, "data": {"key": "changed"}}
    text = diff.unified(model.ObjectRef.of(LIVE), LIVE, new)
    assert text.startswith("--- live/ConfigMap/web/one\n+++ desired/ConfigMap/web/one\n")
    changed = [line for line in text.splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")]
    assert changed == ["-  key: value", "+  key: changed"]
    assert diff.unified(model.ObjectRef.of(LIVE), LIVE, dict(LIVE)) == ""


def test_secret_values_are_redacted_and_changes_are_still_visible() -> None:
    live = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"a": "c2VjcmV0", "b": "eA=="},
    }
    new = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"a": "c2VjcmV0", "b": "eQ=="},
    }
    text = diff.unified(model.ObjectRef.of(live), live, new)
    assert "c2VjcmV0" not in text and "eA==" not in text and "eQ==" not in text
    assert "+  b: '<redacted: changed>'" in text
    assert "  a: <redacted>" in text


def test_a_removed_object_is_all_minus_lines() -> None:
    text = diff.unified(model.ObjectRef.of(LIVE), LIVE, None)
    assert "+++ desired/ConfigMap/web/one" in text
    assert all(not line.startswith("+") or line.startswith("+++") for line in text.splitlines())
