"""The ownership and pruning rules of docs/reconcile.md, as pure decisions."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

from fleet.core import drift, inventory, model, plan

INSTANCE = "fleet"


def cm(name: str, *, ns: str = "web", data: Mapping[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, **meta},
        "data": dict(data or {"k": "v"}),
    }


def desired_set(bundle: str, *objects: Mapping[str, Any], namespace: str | None = None) -> model.DesiredSet:
    return model.DesiredSet(
        bundle=bundle, cluster="c1", objects=tuple(objects), hash="h", namespace=namespace
    )


def live_of(
    obj: Mapping[str, Any], *, bundle: str = "web", owner: str | None = INSTANCE, **extra_meta: Any
) -> dict[str, Any]:
    """What the server would hold after fleet applied `obj` (plus server-set fields)."""
    out = plan.marked(obj, bundle=bundle, instance=owner or "x")
    meta = dict(out["metadata"])
    labels = dict(meta["labels"])
    if owner is None:
        labels.pop(model.LABEL_OWNER)
        labels.pop(model.LABEL_BUNDLE)
    meta["labels"] = labels
    meta.update(
        {"resourceVersion": "5", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z", **extra_meta}
    )
    return {**out, "metadata": meta}


def inv(bundle: str, *objs: Mapping[str, Any]) -> inventory.Inventory:
    return inventory.Inventory(bundle, frozenset(model.ObjectRef.of(o) for o in objs), resource_version="1")


def run(
    targets: Mapping[str, plan.Target],
    *,
    live: list[Mapping[str, Any]] = (),  # type: ignore[assignment]
    inventories: Mapping[str, inventory.Inventory] | None = None,
    known: set[tuple[str, str]] | None = None,
) -> plan.ClusterPlan:
    return plan.plan_cluster(
        targets,
        instance=INSTANCE,
        inventories=inventories or {},
        live={plan.key_of(o): o for o in live},
        known=known if known is not None else {("", "ConfigMap"), ("", "Namespace"), ("apps", "Deployment")},
    )


def ops(p: plan.BundlePlan) -> dict[str, plan.Op]:
    return {s.ref.name: s.op for s in p.steps}


def test_absent_objects_are_created_and_objects_already_as_desired_are_left_alone() -> None:
    a, b = cm("a"), cm("b")
    result = run({"web": plan.Target("web", desired_set("web", a, b))}, live=[live_of(a)])
    assert ops(result.bundles["web"]) == {"a": plan.Op.UNCHANGED, "b": plan.Op.CREATE}
    assert [s.ref.name for s in result.bundles["web"].writes] == ["b"]


def test_the_revision_annotation_alone_does_not_cause_a_write() -> None:
    old = cm("a", annotations={model.ANNOTATION_REVISION: "old"})
    new = cm("a", annotations={model.ANNOTATION_REVISION: "new"})
    result = run({"web": plan.Target("web", desired_set("web", new))}, live=[live_of(old)])
    assert ops(result.bundles["web"]) == {"a": plan.Op.UNCHANGED}


def test_a_changed_or_drifted_object_of_ours_is_configured_with_force() -> None:
    want = cm("a", data={"k": "new"})
    result = run(
        {"web": plan.Target("web", desired_set("web", want))}, live=[live_of(cm("a", data={"k": "old"}))]
    )
    (step,) = result.bundles["web"].steps
    assert step.op is plan.Op.CONFIGURE and step.force
    drifted = live_of(want)
    drifted["data"] = {"k": "edited by hand"}
    result = run({"web": plan.Target("web", desired_set("web", want))}, live=[drifted])
    assert ops(result.bundles["web"]) == {"a": plan.Op.CONFIGURE}


def test_a_field_removed_from_the_manifest_is_noticed_through_the_hash() -> None:
    before = cm("a", data={"k": "v", "gone": "x"})
    after = cm("a", data={"k": "v"})
    result = run({"web": plan.Target("web", desired_set("web", after))}, live=[live_of(before)])
    assert ops(result.bundles["web"]) == {"a": plan.Op.CONFIGURE}


def test_server_defaults_and_secret_string_data_do_not_count_as_drift() -> None:
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
    }
    live = live_of(dep)
    live["spec"] = {
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "template": {
            "spec": {"containers": [{"name": "app", "image": "nginx", "imagePullPolicy": "Always"}]}
        },
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "web"},
        "stringData": {"pw": "hunter2"},
    }
    live_secret = live_of(secret)
    live_secret.pop("stringData")
    live_secret["data"] = {"pw": "aHVudGVyMg=="}
    result = run(
        {"web": plan.Target("web", desired_set("web", dep, secret))},
        live=[live, live_secret],
        known={("apps", "Deployment"), ("", "Secret")},
    )
    assert ops(result.bundles["web"]) == {"api": plan.Op.UNCHANGED, "s": plan.Op.UNCHANGED}


def test_an_existing_object_without_our_label_is_a_conflict_unless_adoption_is_asked() -> None:
    a = cm("a")
    foreign = live_of(a, owner=None)
    result = run({"web": plan.Target("web", desired_set("web", a))}, live=[foreign])
    (step,) = result.bundles["web"].steps
    assert step.op is plan.Op.CONFLICT
    assert "not managed by fleet" in step.message and "fleet.dev/adopt" in step.message
    by_bundle = run({"web": plan.Target("web", desired_set("web", a), adopt=True)}, live=[foreign])
    assert by_bundle.bundles["web"].steps[0].op is plan.Op.ADOPT
    annotated = cm("a", annotations={model.ANNOTATION_ADOPT: "true"})
    by_manifest = run({"web": plan.Target("web", desired_set("web", annotated))}, live=[foreign])
    assert by_manifest.bundles["web"].steps[0].op is plan.Op.ADOPT
    assert by_manifest.bundles["web"].steps[0].force


def test_another_instances_object_is_never_written_even_with_adoption() -> None:
    a = cm("a")
    theirs = live_of(a, owner="blue")
    result = run({"web": plan.Target("web", desired_set("web", a), adopt=True)}, live=[theirs])
    (step,) = result.bundles["web"].steps
    assert step.op is plan.Op.CONFLICT
    assert "blue" in step.message
    assert result.bundles["web"].writes == ()


def test_a_conflicting_object_stays_out_of_the_inventory_union() -> None:
    a, b = cm("a"), cm("b")
    result = run({"web": plan.Target("web", desired_set("web", a, b))}, live=[live_of(a, owner=None)])
    assert {r.name for r in result.bundles["web"].inventory_before} == {"b"}


def test_the_inventory_union_holds_previous_and_new_objects() -> None:
    a, b = cm("a"), cm("b")
    result = run(
        {"web": plan.Target("web", desired_set("web", b))},
        live=[live_of(a)],
        inventories={"web": inv("web", a)},
    )
    bp = result.bundles["web"]
    assert {r.name for r in bp.inventory_before} == {"a", "b"}
    assert [(p.ref.name, p.op) for p in bp.prune] == [("a", plan.PruneOp.DELETE)]


def test_prune_needs_our_owner_and_bundle_labels_and_respects_prune_disabled() -> None:
    gone, theirs, other_bundle, keep_me, keep = (
        cm("gone"),
        cm("theirs"),
        cm("moved"),
        cm("keep-me"),
        cm("keep"),
    )
    live = [
        live_of(theirs, owner=None),
        live_of(other_bundle, bundle="db"),
        live_of(keep_me, annotations={model.ANNOTATION_PRUNE: "disabled"}),
        live_of(keep),
    ]
    result = run(
        {"web": plan.Target("web", desired_set("web", keep))},
        live=live,
        inventories={"web": inv("web", gone, theirs, other_bundle, keep_me, keep)},
    )
    decisions = {p.ref.name: p.op for p in result.bundles["web"].prune}
    assert decisions == {
        "gone": plan.PruneOp.FORGET,
        "theirs": plan.PruneOp.FORGET,
        "moved": plan.PruneOp.FORGET,
        "keep-me": plan.PruneOp.FORGET,
    }


def test_inventory_entries_of_kinds_that_could_not_be_read_are_kept_not_deleted() -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "web"}}
    result = run(
        {"web": plan.Target("web", desired_set("web", cm("a")))}, inventories={"web": inv("web", widget)}
    )
    (step,) = result.bundles["web"].prune
    assert step.op is plan.PruneOp.KEEP
    assert step.ref in result.bundles["web"].keep


def test_a_bundle_rendering_to_nothing_with_a_non_empty_inventory_is_refused_unless_allow_empty() -> None:
    a = cm("a")
    refused = run(
        {"web": plan.Target("web", desired_set("web"))}, live=[live_of(a)], inventories={"web": inv("web", a)}
    )
    assert refused.bundles["web"].outcome is plan.Outcome.REFUSED
    assert "allowEmpty" in refused.bundles["web"].message
    assert refused.bundles["web"].prune == ()
    allowed = run(
        {"web": plan.Target("web", desired_set("web"), allow_empty=True)},
        live=[live_of(a)],
        inventories={"web": inv("web", a)},
    )
    assert allowed.bundles["web"].outcome is plan.Outcome.RUN
    assert [p.op for p in allowed.bundles["web"].prune] == [plan.PruneOp.DELETE]


def test_a_pair_in_error_or_suspended_plans_no_write_and_no_prune() -> None:
    a = cm("a")
    for target, outcome in (
        (plan.Target("web", error="render failed"), plan.Outcome.FAILED),
        (plan.Target("web", desired_set("web"), suspended=True), plan.Outcome.SUSPENDED),
    ):
        result = run({"web": target}, live=[live_of(a)], inventories={"web": inv("web", a)})
        bp = result.bundles["web"]
        assert bp.outcome is outcome
        assert bp.steps == () and bp.prune == ()


def test_a_bundle_found_only_in_an_inventory_is_pruned_as_removed() -> None:
    a = cm("a")
    result = run({}, live=[live_of(a)], inventories={"web": inv("web", a)})
    bp = result.bundles["web"]
    assert bp.outcome is plan.Outcome.REMOVED
    assert [(p.ref.name, p.op) for p in bp.prune] == [("a", plan.PruneOp.DELETE)]


def test_an_object_moved_to_another_bundle_is_relabelled_not_pruned() -> None:
    a, b = cm("a"), cm("b")
    result = run(
        {"web": plan.Target("web", desired_set("web", b)), "db": plan.Target("db", desired_set("db", a))},
        live=[live_of(a, bundle="web"), live_of(b)],
        inventories={"web": inv("web", a)},
    )
    assert ops(result.bundles["db"]) == {"a": plan.Op.CONFIGURE}
    assert "moved from bundle web" in result.bundles["db"].steps[0].message
    assert [p.op for p in result.bundles["web"].prune] == [plan.PruneOp.FORGET]


def test_an_object_declared_by_two_bundles_is_a_conflict_in_both() -> None:
    a = cm("a")
    result = run(
        {"web": plan.Target("web", desired_set("web", a)), "db": plan.Target("db", desired_set("db", a))}
    )
    assert ops(result.bundles["web"]) == {"a": plan.Op.CONFLICT}
    assert ops(result.bundles["db"]) == {"a": plan.Op.CONFLICT}


def test_apply_order_is_crds_then_namespaces_then_the_rest_and_prune_is_the_reverse() -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
    }
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}
    a = cm("a")
    ordered = plan.apply_order([a, ns, crd])
    assert [o["kind"] for o in ordered] == ["CustomResourceDefinition", "Namespace", "ConfigMap"]
    refs = plan.prune_order(model.ObjectRef.of(o) for o in (crd, ns, a))
    assert [r.kind for r in refs] == ["ConfigMap", "Namespace", "CustomResourceDefinition"]


def test_depends_on_groups_bundles_in_waves_and_cycles_are_errors() -> None:
    t = {
        "base": plan.Target("base", desired_set("base")),
        "web": plan.Target("web", desired_set("web"), depends_on=("base",)),
        "x": plan.Target("x", desired_set("x"), depends_on=("y",)),
        "y": plan.Target("y", desired_set("y"), depends_on=("x",)),
    }
    result = run(t)
    assert result.waves == (("base",), ("web",))
    assert result.bundles["x"].outcome is plan.Outcome.FAILED
    assert "cycle" in result.bundles["x"].message


def test_the_bundle_namespace_is_created_only_when_the_bundle_does_not_hold_it() -> None:
    a = cm("a")
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}
    plain = run({"web": plan.Target("web", desired_set("web", a, namespace="web"))})
    assert plain.bundles["web"].namespace == "web"
    owned = run({"web": plan.Target("web", desired_set("web", ns, a, namespace="web"))})
    assert owned.bundles["web"].namespace is None


def test_an_owned_namespace_is_prunable_only_when_it_holds_nothing_else() -> None:
    a = model.ObjectRef("", "v1", "ConfigMap", "web", "a")
    contents = [
        cm("a"),
        cm("kube-root-ca.crt"),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "web"}},
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "r", "namespace": "web", "ownerReferences": [{"uid": "x"}]},
        },
    ]
    assert plan.namespace_prunable("web", contents=contents, pruned=[a]) == (True, ())
    ok, holding = plan.namespace_prunable("web", contents=[*contents, cm("user-data")], pruned=[a])
    assert not ok
    assert [r.name for r in holding] == ["user-data"]


def theirs(bundle: str, *objs: Mapping[str, Any]) -> inventory.Inventory:
    refs = frozenset(model.ObjectRef.of(o) for o in objs)
    name = model.inventory_name(instance=INSTANCE, bundle=bundle)
    return inventory.Inventory(bundle, refs, resource_version="3", source="repo-b", name=name)


def test_an_inventory_another_source_wrote_is_a_conflict_never_a_removed_bundle() -> None:
    mine, other = cm("mine"), cm("other", ns="b")
    result = plan.plan_cluster(
        {"web": plan.Target("web", desired_set("web", mine))},
        instance=INSTANCE,
        inventories={"web": inv("web", mine)},
        live={plan.key_of(o): o for o in (live_of(mine), live_of(other, bundle="api"))},
        known={("", "ConfigMap")},
        foreign={"api": theirs("api", other)},
        source="repo-a",
    )
    api = result.bundles["api"]
    assert api.outcome is plan.Outcome.CONFLICT and api.prune == ()
    assert "repo-a" in api.message and "repo-b" in api.message
    assert "ConfigMap/fleet-system/fleet-inventory-api" in api.message
    assert result.bundles["web"].outcome is plan.Outcome.RUN


def test_a_bundle_whose_inventory_another_source_wrote_is_not_applied_here() -> None:
    a = cm("a")
    result = plan.plan_cluster(
        {"web": plan.Target("web", desired_set("web", a))},
        instance=INSTANCE,
        inventories={},
        live={},
        known={("", "ConfigMap")},
        foreign={"web": theirs("web", cm("b"))},
        source="repo-a",
    )
    web = result.bundles["web"]
    assert web.outcome is plan.Outcome.CONFLICT and web.steps == () and web.prune == ()


def test_an_object_another_source_holds_is_a_conflict_and_never_pruned_from_ours() -> None:
    shared, labelled, mine = cm("shared"), cm("labelled"), cm("mine")
    result = plan.plan_cluster(
        {"web": plan.Target("web", desired_set("web", shared, labelled))},
        instance=INSTANCE,
        inventories={"web": inv("web", mine)},
        live={plan.key_of(o): o for o in (live_of(shared, bundle="api"), live_of(labelled, bundle="api"))}
        | {plan.key_of(mine): live_of(mine)},
        known={("", "ConfigMap")},
        foreign={"api": theirs("api", shared, mine)},
        source="repo-a",
    )
    web = result.bundles["web"]
    assert ops(web) == {"shared": plan.Op.CONFLICT, "labelled": plan.Op.CONFLICT}
    assert all("repo-b" in s.message for s in web.steps)
    assert [(p.ref.name, p.op) for p in web.prune] == [("mine", plan.PruneOp.KEEP)]


def test_a_round_over_renders_it_planned_before_hashes_none_of_their_objects_again() -> None:
    # A pair keeps its DesiredSet across revisions while its content does not change, and every round of
    # the cluster plans it and builds drift's desired objects from it (docs/benchmarks.md, bench_scale).
    objects = [cm(f"c{i}", data={"k": str(i)}) for i in range(5)]
    targets = {"web": plan.Target("web", desired=desired_set("web", *objects))}
    live = [live_of(o) for o in objects]
    hashes = 0

    def count(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal hashes
        if event == "call" and frame.f_code is plan.object_hash.__code__:
            hashes += 1

    def round_() -> plan.ClusterPlan:
        drift.desired_objects(targets, instance=INSTANCE)
        return run(targets, live=live, inventories={"web": inv("web", *objects)})

    first = round_()
    sys.setprofile(count)
    try:
        again = round_()
    finally:
        sys.setprofile(None)
    assert hashes == 0
    assert again == first and all(s.op is plan.Op.UNCHANGED for s in again.bundles["web"].steps)


def test_clusters_whose_renders_share_their_objects_hash_each_object_once_for_all_of_them() -> None:
    # Clusters of one variant share one render's objects (fleet.core.render.fleetwide); each cluster has
    # its own DesiredSet. A cold sync of 50 clusters would otherwise hash every object 50 times.
    objects = tuple(cm(f"c{i}", data={"k": str(i)}) for i in range(5))
    sets = [
        model.DesiredSet(bundle="web", cluster=f"c{n}", objects=objects, hash="h", namespace=None)
        for n in range(3)
    ]
    hashes = 0

    def count(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal hashes
        if event == "call" and frame.f_code is plan.object_hash.__code__:
            hashes += 1

    sys.setprofile(count)
    try:
        marked = [plan.marked_objects(ds, bundle="web", instance=INSTANCE) for ds in sets]
    finally:
        sys.setprofile(None)
    assert hashes == len(objects)
    assert marked[0] == tuple(plan.marked(o, bundle="web", instance=INSTANCE) for o in objects)
    assert marked[1] is marked[0] and marked[2] is marked[0]
    # Another owner or bundle name marks them anew; equal objects that are not the same render do too.
    assert (
        plan.marked_objects(sets[1], bundle="web", instance="other")[0]["metadata"]["labels"][
            model.LABEL_OWNER
        ]
        == "other"
    )
    copy = model.DesiredSet(
        bundle="web", cluster="c9", objects=tuple(dict(o) for o in objects), hash="h", namespace=None
    )
    assert plan.marked_objects(copy, bundle="web", instance=INSTANCE) == marked[0]
    assert plan.marked_objects(copy, bundle="web", instance=INSTANCE) is not marked[0]
