"""Server-side apply and field ownership, behaviour by behaviour (reference items H.65-H.72)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fleet.sim.kinds import structure
from fleet.sim.merging import fieldsets, ssa

DEPLOYMENT = structure.builtin("apps", "v1", "Deployment")
CONFIGMAP = structure.builtin("", "v1", "ConfigMap")
SERVICE = structure.builtin("", "v1", "Service")


def deployment(
    *, replicas: int | None = 2, image: str = "nginx:1.27", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": image}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": labels or {"app": "web"}},
        "spec": spec,
    }


def entries(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["manager"], e["operation"]): e for e in obj["metadata"].get("managedFields", [])}


def owned(obj: dict[str, Any], manager: str, operation: str = "Apply") -> set[str]:
    entry = entries(obj)[(manager, operation)]
    return {fieldsets.path_text(p) for p in fieldsets.members(entry["fieldsV1"])}


def test_two_appliers_co_own_a_deployment_without_clobbering_each_other() -> None:
    gitops = deployment(replicas=None)
    scaler = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 7},
    }
    obj = ssa.apply(None, gitops, manager="gitops", force=False, structure=DEPLOYMENT, now="t1")
    obj = ssa.apply(obj, scaler, manager="scaler", force=False, structure=DEPLOYMENT, now="t2")
    image_bump = deployment(replicas=None, image="nginx:1.28")
    obj = ssa.apply(obj, image_bump, manager="gitops", force=False, structure=DEPLOYMENT, now="t3")
    assert obj["spec"]["replicas"] == 7
    assert obj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    assert owned(obj, "scaler") == {".spec.replicas"}
    assert '.spec.template.spec.containers[name="app"].image' in owned(obj, "gitops")
    assert ".spec.replicas" not in owned(obj, "gitops")


def test_an_applier_that_drops_a_label_removes_it() -> None:
    obj = ssa.apply(
        None,
        deployment(labels={"app": "web", "tier": "fe"}),
        manager="gitops",
        force=False,
        structure=DEPLOYMENT,
        now="t1",
    )
    obj = ssa.apply(
        obj, deployment(labels={"app": "web"}), manager="gitops", force=False, structure=DEPLOYMENT, now="t2"
    )
    assert obj["metadata"]["labels"] == {"app": "web"}
    assert ".metadata.labels.tier" not in owned(obj, "gitops")


def test_a_co_owned_field_stays_when_one_owner_drops_it() -> None:
    obj = ssa.apply(
        None,
        deployment(labels={"app": "web", "tier": "fe"}),
        manager="a",
        force=False,
        structure=DEPLOYMENT,
        now="t1",
    )
    # Same value from a second applier: shared ownership, no conflict.
    obj = ssa.apply(
        obj,
        deployment(labels={"app": "web", "tier": "fe"}),
        manager="b",
        force=False,
        structure=DEPLOYMENT,
        now="t2",
    )
    obj = ssa.apply(
        obj, deployment(labels={"app": "web"}), manager="a", force=False, structure=DEPLOYMENT, now="t3"
    )
    assert obj["metadata"]["labels"] == {"app": "web", "tier": "fe"}
    assert ".metadata.labels.tier" in owned(obj, "b")
    assert ".metadata.labels.tier" not in owned(obj, "a")
    # When the last owner drops it too, it goes.
    obj = ssa.apply(
        obj, deployment(labels={"app": "web"}), manager="b", force=False, structure=DEPLOYMENT, now="t4"
    )
    assert obj["metadata"]["labels"] == {"app": "web"}


def test_a_conflicting_apply_names_the_other_manager_and_the_field() -> None:
    obj = ssa.apply(
        None, deployment(replicas=2), manager="gitops", force=False, structure=DEPLOYMENT, now="t1"
    )
    edited = copy.deepcopy(obj)
    edited["spec"]["replicas"] = 5
    obj = ssa.update(obj, edited, manager="kubectl-scale", structure=DEPLOYMENT, now="t2")
    with pytest.raises(ssa.ApplyConflict) as caught:
        ssa.apply(obj, deployment(replicas=3), manager="gitops", force=False, structure=DEPLOYMENT, now="t3")
    assert caught.value.conflicts == [("kubectl-scale", ".spec.replicas")]
    assert (
        str(caught.value)
        == 'Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas'
    )
    assert caught.value.causes == [
        {
            "type": "FieldManagerConflict",
            "message": 'conflict with "kubectl-scale" using apps/v1',
            "field": ".spec.replicas",
        }
    ]


def test_several_conflicts_are_listed_per_manager() -> None:
    obj = ssa.apply(None, deployment(replicas=2), manager="a", force=False, structure=DEPLOYMENT, now="t1")
    with pytest.raises(ssa.ApplyConflict) as caught:
        ssa.apply(
            obj,
            deployment(replicas=3, image="other:1"),
            manager="b",
            force=False,
            structure=DEPLOYMENT,
            now="t2",
        )
    assert sorted(caught.value.conflicts) == [
        ("a", ".spec.replicas"),
        ("a", '.spec.template.spec.containers[name="app"].image'),
    ]
    assert str(caught.value).startswith('Apply failed with 2 conflicts: conflicts with "a":\n- ')


def test_an_apply_with_the_same_value_as_another_owner_is_not_a_conflict() -> None:
    obj = ssa.apply(None, deployment(replicas=2), manager="a", force=False, structure=DEPLOYMENT, now="t1")
    obj = ssa.apply(obj, deployment(replicas=2), manager="b", force=False, structure=DEPLOYMENT, now="t2")
    assert ".spec.replicas" in owned(obj, "a")
    assert ".spec.replicas" in owned(obj, "b")


def test_a_forced_apply_takes_ownership_from_the_other_manager() -> None:
    obj = ssa.apply(
        None, deployment(replicas=2), manager="gitops", force=False, structure=DEPLOYMENT, now="t1"
    )
    scaler = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 9},
    }
    obj = ssa.apply(obj, scaler, manager="hpa", force=True, structure=DEPLOYMENT, now="t2")
    assert obj["spec"]["replicas"] == 9
    assert owned(obj, "hpa") == {".spec.replicas"}
    assert ".spec.replicas" not in owned(obj, "gitops")


def test_reapplying_the_same_manifest_a_hundred_times_returns_an_identical_object() -> None:
    first = ssa.apply(None, deployment(), manager="gitops", force=False, structure=DEPLOYMENT, now="t0")
    obj = first
    for i in range(100):
        obj = ssa.apply(
            obj, deployment(), manager="gitops", force=False, structure=DEPLOYMENT, now=f"t{i + 1}"
        )
        assert obj == first
    assert json.dumps(obj, sort_keys=True) == json.dumps(first, sort_keys=True)
    assert entries(obj)[("gitops", "Apply")]["time"] == "t0"


def test_a_changed_apply_moves_only_that_managers_time() -> None:
    obj = ssa.apply(None, deployment(), manager="a", force=False, structure=DEPLOYMENT, now="t1")
    obj = ssa.apply(
        obj,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"minReadySeconds": 3},
        },
        manager="b",
        force=False,
        structure=DEPLOYMENT,
        now="t2",
    )
    obj = ssa.apply(
        obj, deployment(image="nginx:2"), manager="a", force=False, structure=DEPLOYMENT, now="t3"
    )
    assert entries(obj)[("a", "Apply")]["time"] == "t3"
    assert entries(obj)[("b", "Apply")]["time"] == "t2"


def test_container_ports_merge_by_container_port_and_protocol() -> None:
    base = deployment()
    base["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    obj = ssa.apply(None, base, manager="gitops", force=False, structure=DEPLOYMENT, now="t1")
    metrics = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "ports": [{"containerPort": 80, "protocol": "UDP"}, {"containerPort": 9090}],
                        }
                    ]
                }
            }
        },
    }
    obj = ssa.apply(obj, metrics, manager="metrics", force=False, structure=DEPLOYMENT, now="t2")
    ports = obj["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert ports == [{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}, {"containerPort": 9090}]
    assert owned(obj, "metrics") >= {
        '.spec.template.spec.containers[name="app"].ports[containerPort=80,protocol="UDP"]',
        '.spec.template.spec.containers[name="app"].ports[containerPort=9090,protocol="TCP"]',
    }
    # The gitops applier still owns its own TCP port item, and re-applying keeps the others' items.
    obj = ssa.apply(obj, base, manager="gitops", force=False, structure=DEPLOYMENT, now="t3")
    assert len(obj["spec"]["template"]["spec"]["containers"][0]["ports"]) == 3


def test_containers_merge_by_name_and_a_dropped_container_is_removed() -> None:
    two = deployment()
    two["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1"})
    obj = ssa.apply(None, two, manager="gitops", force=False, structure=DEPLOYMENT, now="t1")
    injector = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "istio-proxy", "image": "proxy:1"}]}}},
    }
    obj = ssa.apply(obj, injector, manager="injector", force=False, structure=DEPLOYMENT, now="t2")
    names = [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]]
    assert names == ["app", "sidecar", "istio-proxy"]
    obj = ssa.apply(obj, deployment(), manager="gitops", force=False, structure=DEPLOYMENT, now="t3")
    names = [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]]
    assert names == ["app", "istio-proxy"]


def test_an_atomic_list_is_replaced_whole_and_owned_as_one_field() -> None:
    cfg = deployment()
    cfg["spec"]["template"]["spec"]["containers"][0]["args"] = ["--a", "--b"]
    obj = ssa.apply(None, cfg, manager="gitops", force=False, structure=DEPLOYMENT, now="t1")
    cfg["spec"]["template"]["spec"]["containers"][0]["args"] = ["--c"]
    obj = ssa.apply(obj, cfg, manager="gitops", force=False, structure=DEPLOYMENT, now="t2")
    assert obj["spec"]["template"]["spec"]["containers"][0]["args"] == ["--c"]
    assert '.spec.template.spec.containers[name="app"].args' in owned(obj, "gitops")
    other = copy.deepcopy(cfg)
    other["spec"]["template"]["spec"]["containers"][0]["args"] = ["--d"]
    with pytest.raises(ssa.ApplyConflict) as caught:
        ssa.apply(obj, other, manager="other", force=False, structure=DEPLOYMENT, now="t3")
    assert ("gitops", '.spec.template.spec.containers[name="app"].args') in caught.value.conflicts


def test_an_atomic_map_like_a_label_selector_is_owned_whole() -> None:
    obj = ssa.apply(None, deployment(), manager="gitops", force=False, structure=DEPLOYMENT, now="t1")
    assert ".spec.selector" in owned(obj, "gitops")
    assert ".spec.selector.matchLabels.app" not in owned(obj, "gitops")


def test_set_lists_are_owned_per_value() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["a.io/x"]}}
    obj = ssa.apply(None, cm, manager="one", force=False, structure=CONFIGMAP, now="t1")
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["b.io/y"]}}
    obj = ssa.apply(obj, other, manager="two", force=False, structure=CONFIGMAP, now="t2")
    assert obj["metadata"]["finalizers"] == ["a.io/x", "b.io/y"]
    assert owned(obj, "two") == {'.metadata.finalizers[="b.io/y"]'}
    obj = ssa.apply(
        obj,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
        manager="one",
        force=False,
        structure=CONFIGMAP,
        now="t3",
    )
    assert obj["metadata"]["finalizers"] == ["b.io/y"]


def test_update_moves_ownership_to_the_editor() -> None:
    obj = ssa.apply(
        None, deployment(replicas=2), manager="gitops", force=False, structure=DEPLOYMENT, now="t1"
    )
    edited = copy.deepcopy(obj)
    edited["spec"]["replicas"] = 4
    edited["metadata"]["annotations"] = {"note": "x"}
    obj = ssa.update(obj, edited, manager="kubectl-edit", structure=DEPLOYMENT, now="t2")
    assert owned(obj, "kubectl-edit", "Update") == {
        ".spec.replicas",
        ".metadata.annotations",
        ".metadata.annotations.note",
    }
    assert ".spec.replicas" not in owned(obj, "gitops")
    entry = entries(obj)[("kubectl-edit", "Update")]
    assert entry["apiVersion"] == "apps/v1"
    assert entry["time"] == "t2"
    # The applier may now drop replicas without removing the editor's value.
    obj = ssa.apply(
        obj, deployment(replicas=None), manager="gitops", force=False, structure=DEPLOYMENT, now="t3"
    )
    assert obj["spec"]["replicas"] == 4


def test_an_update_that_changes_nothing_keeps_managed_fields_and_times() -> None:
    obj = ssa.apply(None, deployment(), manager="gitops", force=False, structure=DEPLOYMENT, now="t1")
    same = ssa.update(obj, copy.deepcopy(obj), manager="kubectl", structure=DEPLOYMENT, now="t2")
    assert same == obj


def test_a_create_through_update_owns_every_field_it_wrote() -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "d"},
        "data": {"k": "v"},
    }
    obj = ssa.update(None, cm, manager="kubectl-create", structure=CONFIGMAP, now="t1")
    entry = entries(obj)[("kubectl-create", "Update")]
    assert entry["fieldsV1"] == {"f:data": {".": {}, "f:k": {}}}
    assert entry["operation"] == "Update"


def test_update_managers_are_capped_at_ten_with_ancient_changes() -> None:
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    obj = ssa.update(None, cm, manager="creator", structure=CONFIGMAP, now="t00")
    for i in range(12):
        new = copy.deepcopy(obj)
        new["data"][f"k{i}"] = "v"
        obj = ssa.update(obj, new, manager=f"editor-{i}", structure=CONFIGMAP, now=f"t{i + 1:02d}")
    managers = [e["manager"] for e in obj["metadata"]["managedFields"]]
    assert len(managers) == 10
    assert "ancient-changes" in managers
    assert "editor-11" in managers and "editor-0" not in managers
    ancient = next(e for e in obj["metadata"]["managedFields"] if e["manager"] == "ancient-changes")
    assert "f:k0" in ancient["fieldsV1"]["f:data"]


def test_status_is_ignored_by_an_apply_to_the_main_resource() -> None:
    cfg = deployment()
    cfg["status"] = {"replicas": 99}
    obj = ssa.apply(None, cfg, manager="gitops", force=False, structure=DEPLOYMENT, now="t1")
    assert "status" not in obj
    assert not any(p.startswith(".status") for p in owned(obj, "gitops"))


def test_an_apply_to_the_status_subresource_touches_only_status() -> None:
    obj = ssa.apply(None, deployment(), manager="gitops", force=False, structure=DEPLOYMENT, now="t1")
    status_cfg = deployment(replicas=50)
    status_cfg["status"] = {"replicas": 2, "readyReplicas": 2}
    obj = ssa.apply(
        obj,
        status_cfg,
        manager="controller",
        force=False,
        structure=DEPLOYMENT,
        now="t2",
        subresource="status",
    )
    assert obj["spec"]["replicas"] == 2
    assert obj["status"] == {"replicas": 2, "readyReplicas": 2}
    entry = next(e for e in obj["metadata"]["managedFields"] if e["manager"] == "controller")
    assert entry["subresource"] == "status"
    assert owned(obj, "controller") == {".status.replicas", ".status.readyReplicas"}


def test_an_update_to_the_main_resource_keeps_the_old_status() -> None:
    obj = ssa.apply(None, deployment(), manager="gitops", force=False, structure=DEPLOYMENT, now="t1")
    with_status = dict(obj, status={"replicas": 2})
    obj = ssa.update(obj, with_status, manager="ctl", structure=DEPLOYMENT, now="t2", subresource="status")
    changed = copy.deepcopy(obj)
    changed["status"] = {"replicas": 0}
    changed["spec"]["paused"] = True
    after = ssa.update(obj, changed, manager="kubectl", structure=DEPLOYMENT, now="t3")
    assert after["status"] == {"replicas": 2}
    assert after["spec"]["paused"] is True


def test_an_undeclared_field_is_rejected_with_its_path() -> None:
    cfg = deployment()
    cfg["spec"]["bogus"] = 1
    with pytest.raises(ssa.FieldNotDeclared, match=r"^\.spec\.bogus: field not declared in schema$"):
        ssa.apply(None, cfg, manager="gitops", force=False, structure=DEPLOYMENT, now="t1")
    deep = deployment()
    deep["spec"]["template"]["spec"]["containers"][0]["imagePolicy"] = "x"
    with pytest.raises(
        ssa.FieldNotDeclared, match=r'containers\[name="app"\]\.imagePolicy: field not declared'
    ):
        ssa.apply(None, deep, manager="gitops", force=False, structure=DEPLOYMENT, now="t1")


def test_a_wrongly_typed_value_is_rejected() -> None:
    cfg = deployment()
    cfg["spec"]["replicas"] = "three"
    with pytest.raises(ssa.FieldNotDeclared, match=r"^\.spec\.replicas: expected integer, got string$"):
        ssa.apply(None, cfg, manager="gitops", force=False, structure=DEPLOYMENT, now="t1")


def test_list_map_items_without_their_key_are_rejected() -> None:
    cfg = deployment()
    cfg["spec"]["template"]["spec"]["containers"] = [{"image": "x"}]
    with pytest.raises(ssa.FieldNotDeclared, match='omits key field "name"'):
        ssa.apply(None, cfg, manager="gitops", force=False, structure=DEPLOYMENT, now="t1")


def test_meta_fields_are_never_owned_and_server_fields_are_not_taken_from_the_body() -> None:
    cfg = deployment()
    cfg["metadata"].update(
        {"uid": "evil", "resourceVersion": "1", "generation": 9, "creationTimestamp": None}
    )
    live = ssa.apply(None, deployment(), manager="gitops", force=False, structure=DEPLOYMENT, now="t1")
    live["metadata"].update(
        {"uid": "u-1", "resourceVersion": "5", "generation": 1, "creationTimestamp": "t0"}
    )
    obj = ssa.apply(live, cfg, manager="gitops", force=False, structure=DEPLOYMENT, now="t2")
    assert obj["metadata"]["uid"] == "u-1"
    assert obj["metadata"]["generation"] == 1
    paths = owned(obj, "gitops")
    assert not any(
        p in paths for p in (".apiVersion", ".kind", ".metadata.name", ".metadata.namespace", ".metadata.uid")
    )


def test_apply_does_not_mutate_its_inputs() -> None:
    live = ssa.apply(None, deployment(), manager="a", force=False, structure=DEPLOYMENT, now="t1")
    frozen_live = copy.deepcopy(live)
    cfg = deployment(replicas=3, labels={"x": "y"})
    frozen_cfg = copy.deepcopy(cfg)
    ssa.apply(live, cfg, manager="a", force=False, structure=DEPLOYMENT, now="t2")
    assert live == frozen_live
    assert cfg == frozen_cfg


def test_a_custom_resource_without_schema_merges_maps_and_replaces_lists() -> None:
    deduced = structure.for_schema(None)
    cr = {
        "apiVersion": "x.io/v1",
        "kind": "W",
        "metadata": {"name": "w"},
        "spec": {"a": {"b": 1}, "l": [1, 2]},
    }
    obj = ssa.apply(None, cr, manager="one", force=False, structure=deduced, now="t1")
    other = {"apiVersion": "x.io/v1", "kind": "W", "metadata": {"name": "w"}, "spec": {"a": {"c": 2}}}
    obj = ssa.apply(obj, other, manager="two", force=False, structure=deduced, now="t2")
    assert obj["spec"] == {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert ".spec.l" in owned(obj, "one")
    assert ".spec.a.c" in owned(obj, "two")


def test_a_crd_schema_drives_list_map_keys_and_rejects_unknown_fields() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "items": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["id"],
                        "items": {
                            "type": "object",
                            "properties": {"id": {"type": "string"}, "v": {"type": "integer"}},
                        },
                    },
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            },
            "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
        },
    }
    st = structure.for_schema(schema, status_subresource=True)
    cr = {
        "apiVersion": "x.io/v1",
        "kind": "W",
        "metadata": {"name": "w"},
        "spec": {"items": [{"id": "a", "v": 1}], "free": {"x": [1]}},
    }
    obj = ssa.apply(None, cr, manager="one", force=False, structure=st, now="t1")
    two = {
        "apiVersion": "x.io/v1",
        "kind": "W",
        "metadata": {"name": "w"},
        "spec": {"items": [{"id": "b", "v": 2}]},
    }
    obj = ssa.apply(obj, two, manager="two", force=False, structure=st, now="t2")
    assert obj["spec"]["items"] == [{"id": "a", "v": 1}, {"id": "b", "v": 2}]
    bad = {"apiVersion": "x.io/v1", "kind": "W", "metadata": {"name": "w"}, "spec": {"nope": 1}}
    with pytest.raises(ssa.FieldNotDeclared, match=r"^\.spec\.nope: field not declared in schema$"):
        ssa.apply(obj, bad, manager="one", force=False, structure=st, now="t3")


def test_client_sent_managed_fields_replace_clear_or_are_ignored_when_invalid() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
    obj = ssa.apply(None, cm, manager="gitops", force=False, structure=CONFIGMAP, now="t1")
    # [{}] clears managedFields (and the write is not tracked)
    cleared = ssa.update(
        obj,
        {**obj, "metadata": {**obj["metadata"], "managedFields": [{}]}},
        manager="x",
        structure=CONFIGMAP,
        now="t2",
    )
    assert "managedFields" not in cleared["metadata"]
    # a valid, different list replaces the stored one
    mine = [
        {
            "manager": "other",
            "operation": "Update",
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:a": {}}},
        }
    ]
    replaced = ssa.update(
        obj,
        {**obj, "metadata": {**obj["metadata"], "managedFields": mine}},
        manager="x",
        structure=CONFIGMAP,
        now="t2",
    )
    assert [e["manager"] for e in replaced["metadata"]["managedFields"]] == ["other"]
    # an invalid one is ignored: the stored entries stay
    bad = [{"manager": "other", "operation": "Bogus", "fieldsV1": {"f:data": {}}}]
    kept = ssa.update(
        obj,
        {**obj, "metadata": {**obj["metadata"], "managedFields": bad}},
        manager="x",
        structure=CONFIGMAP,
        now="t2",
    )
    assert kept["metadata"]["managedFields"] == obj["metadata"]["managedFields"]


def test_a_crd_metadata_schema_does_not_hide_object_meta() -> None:
    schema = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}}},
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    st = structure.for_schema(schema)
    cr = {
        "apiVersion": "x.io/v1",
        "kind": "W",
        "metadata": {"name": "w", "labels": {"a": "1"}, "finalizers": ["x.io/f"]},
    }
    obj = ssa.apply(None, cr, manager="m", force=False, structure=st, now="t1")
    assert owned(obj, "m") == {".metadata.labels.a", '.metadata.finalizers[="x.io/f"]'}
