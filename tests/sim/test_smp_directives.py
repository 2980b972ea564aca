"""Strategic merge patch on built-in types (reference item G.58, G.59)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fleet.sim.kinds import structure
from fleet.sim.merging import smp

DEPLOYMENT = structure.builtin("apps", "v1", "Deployment")
SERVICE = structure.builtin("", "v1", "Service")


def original() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "labels": {"app": "web", "tier": "fe"},
            "finalizers": ["a.io/x", "b.io/y"],
        },
        "spec": {
            "replicas": 1,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:1",
                            "env": [{"name": "A", "value": "1"}],
                            "args": ["--x"],
                        },
                        {"name": "sidecar", "image": "side:1"},
                    ]
                }
            },
        },
    }


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["template"]["spec"]["containers"]


def test_containers_merge_by_name_and_env_by_name() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]}]
                }
            }
        }
    }
    out = smp.patch(original(), patch, structure=DEPLOYMENT)
    app = containers(out)[0]
    assert app["image"] == "app:2"
    # The patch's items first, then the live-only ones (normalizeElementOrder; a real 1.36 server agrees).
    assert app["env"] == [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]
    assert [c["name"] for c in containers(out)] == ["app", "sidecar"]


def test_a_list_without_a_merge_strategy_is_replaced() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "args": ["--y"]}]}}}}
    out = smp.patch(original(), patch, structure=DEPLOYMENT)
    assert containers(out)[0]["args"] == ["--y"]


def test_a_new_list_item_goes_before_the_live_ones() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "new", "image": "n:1"}]}}}}
    out = smp.patch(original(), patch, structure=DEPLOYMENT)
    assert [c["name"] for c in containers(out)] == ["new", "app", "sidecar"]


def test_null_deletes_a_key() -> None:
    out = smp.patch(
        original(), {"metadata": {"labels": {"tier": None}}, "spec": {"replicas": None}}, structure=DEPLOYMENT
    )
    assert out["metadata"]["labels"] == {"app": "web"}
    assert "replicas" not in out["spec"]


def test_patch_delete_removes_a_list_item_by_merge_key() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}
    out = smp.patch(original(), patch, structure=DEPLOYMENT)
    assert [c["name"] for c in containers(out)] == ["app"]


def test_patch_delete_on_a_map_removes_it() -> None:
    out = smp.patch(original(), {"spec": {"strategy": {"$patch": "delete"}}}, structure=DEPLOYMENT)
    assert "strategy" not in out["spec"]


def test_patch_replace_on_a_map_replaces_it_whole() -> None:
    patch = {"metadata": {"labels": {"$patch": "replace", "only": "this"}}}
    out = smp.patch(original(), patch, structure=DEPLOYMENT)
    assert out["metadata"]["labels"] == {"only": "this"}


def test_patch_replace_as_a_list_item_replaces_the_list() -> None:
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "solo", "image": "s:1"}]}}
        }
    }
    out = smp.patch(original(), patch, structure=DEPLOYMENT)
    assert containers(out) == [{"name": "solo", "image": "s:1"}]


def test_retain_keys_clears_the_fields_not_listed() -> None:
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    out = smp.patch(original(), patch, structure=DEPLOYMENT)
    assert out["spec"]["strategy"] == {"type": "Recreate"}


def test_set_element_order_reorders_the_merged_list() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                    "containers": [{"name": "app", "image": "app:3"}],
                }
            }
        }
    }
    out = smp.patch(original(), patch, structure=DEPLOYMENT)
    assert [c["name"] for c in containers(out)] == ["sidecar", "app"]
    assert containers(out)[1]["image"] == "app:3"


def test_delete_from_primitive_list_removes_values_and_merge_strategy_adds_them() -> None:
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.io/x"], "finalizers": ["c.io/z"]}}
    out = smp.patch(original(), patch, structure=DEPLOYMENT)
    assert out["metadata"]["finalizers"] == ["c.io/z", "b.io/y"]


def test_service_ports_merge_by_port() -> None:
    svc = {
        "spec": {
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]
        }
    }
    out = smp.patch(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, structure=SERVICE)
    assert out["spec"]["ports"] == [
        {"port": 80, "targetPort": 9090, "protocol": "TCP"},
        {"port": 443, "protocol": "TCP"},
    ]


def test_the_original_is_not_mutated() -> None:
    before = original()
    frozen = copy.deepcopy(before)
    smp.patch(
        before,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "z"}]}}}},
        structure=DEPLOYMENT,
    )
    assert before == frozen


def test_a_custom_resource_is_unsupported() -> None:
    with pytest.raises(smp.UnsupportedPatch):
        smp.patch({"spec": {}}, {"spec": {"a": 1}}, structure=structure.for_schema(None))


def test_an_item_without_its_merge_key_is_invalid() -> None:
    with pytest.raises(smp.InvalidPatch, match="does not contain declared merge key: name"):
        smp.patch(
            original(),
            {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}},
            structure=DEPLOYMENT,
        )


def test_an_unknown_patch_directive_is_invalid() -> None:
    with pytest.raises(smp.InvalidPatch, match="unknown patch type: explode"):
        smp.patch(original(), {"spec": {"$patch": "explode"}}, structure=DEPLOYMENT)


def test_set_element_order_keeps_server_only_items_where_the_live_list_had_them() -> None:
    live = {"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "s"}, {"name": "b"}]}}}}
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                    "containers": [{"name": "b", "image": "b:2"}],
                }
            }
        }
    }
    out = smp.patch(live, patch, structure=DEPLOYMENT)
    # strategicpatch's normalizeElementOrder: ordered items [b, a]; the server-only `s` goes before `b`
    # because it preceded `b` in the live list.
    assert [c["name"] for c in containers(out)] == ["s", "b", "a"]
