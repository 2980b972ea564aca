"""Render: substitution, overrides, namespaces, ownership marks, order, hash, sharing and claims."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.core import errors, model, placement, render, validation
from tests.support import placement_builders as pb

EU = pb.cluster(
    "eu-prod-1",
    labels={"env": "prod", "region": "eu", "example.com/team": "payments"},
    annotations={"owner": "ops"},
    facts={"tier": 1, "nodes": 40, "gpu": True, "dc": "fra"},
)
US = pb.cluster("us-prod-1", labels={"env": "prod", "region": "us"}, facts={"tier": 2})
SHA = "a" * 40


def one(bundle: model.Bundle, cluster: model.Cluster = EU, **kw: Any) -> model.DesiredSet:
    return render.render(bundle, cluster, revision=kw.pop("revision", SHA), **kw)


def by_kind(ds: model.DesiredSet, kind: str) -> dict[str, Any]:
    (found,) = [o for o in ds.objects if o["kind"] == kind]
    return dict(found)


# ----------------------------------------------------------------------------------------------------------
# Substitution.

SUBSTITUTIONS = [
    ("${cluster.name}", "eu-prod-1"),
    ("${cluster.labels.region}", "eu"),
    ("${cluster.labels.example.com/team}", "payments"),
    ("${cluster.annotations.owner}", "ops"),
    ("${cluster.facts.tier}", "1"),
    ("${cluster.facts.gpu}", "true"),
    ("${cluster.facts.dc}", "fra"),
    ("db-${cluster.labels.region}.${cluster.name}.svc", "db-eu.eu-prod-1.svc"),
    ("$${cluster.name}", "${cluster.name}"),
    ("echo ${HOME} ${cluster.name}", "echo ${HOME} eu-prod-1"),
    ("${cluster}", "${cluster}"),
    ("plain", "plain"),
]


@pytest.mark.parametrize(("template", "expected"), SUBSTITUTIONS)
def test_cluster_variables_are_substituted_in_string_values_as_text(template: str, expected: str) -> None:
    cm = pb.obj("ConfigMap", "settings", data={"value": template, "count": 3})
    out = by_kind(one(pb.bundle("web", [cm], namespace="web")), "ConfigMap")
    assert out["data"] == {"value": expected, "count": 3}


def test_substitution_never_injects_yaml_structure() -> None:
    tricky = pb.cluster("x", labels={"v": "a\nkind: Secret"})
    cm = pb.obj("ConfigMap", "settings", data={"value": "${cluster.labels.v}"})
    out = by_kind(one(pb.bundle("web", [cm]), tricky), "ConfigMap")
    assert out["data"]["value"] == "a\nkind: Secret"
    assert out["kind"] == "ConfigMap"


def test_an_object_annotated_substitute_disabled_is_left_alone() -> None:
    cm = pb.obj(
        "ConfigMap",
        "script",
        annotations={model.ANNOTATION_SUBSTITUTE: "disabled"},
        data={"run.sh": "echo ${cluster.name} ${cluster.nope}"},
    )
    out = by_kind(one(pb.bundle("web", [cm])), "ConfigMap")
    assert out["data"]["run.sh"] == "echo ${cluster.name} ${cluster.nope}"


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("${cluster.nope}", "unknown variable ${cluster.nope}"),
        ("${cluster.labels.missing}", "is not set on cluster eu-prod-1"),
        ("${cluster.facts.}", "unknown variable"),
        ("${cluster.name", "unterminated"),
    ],
)
def test_an_unknown_variable_is_a_render_error_naming_the_file_and_object(
    template: str, fragment: str
) -> None:
    cm = pb.obj("ConfigMap", "settings", data={"value": template})
    with pytest.raises(errors.RenderError) as info:
        one(pb.bundle("web", [cm]))
    assert fragment in str(info.value)
    assert "bundles/web/manifests.yaml:1" in str(info.value)
    assert "ConfigMap/settings" in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# Namespaces, marks, order, hash.


def test_namespaced_objects_get_the_bundle_namespace_and_cluster_scoped_ones_none() -> None:
    crd = pb.obj(
        "CustomResourceDefinition",
        "widgets.example.com",
        api_version="apiextensions.k8s.io/v1",
        spec={"group": "example.com", "scope": "Cluster", "names": {"kind": "Widget"}},
    )
    objs = [
        pb.deployment("api"),
        pb.deployment("other", namespace="elsewhere"),
        pb.obj("ClusterRole", "reader", api_version="rbac.authorization.k8s.io/v1", namespace="oops"),
        pb.obj("Widget", "w", api_version="example.com/v1"),
        pb.obj("Gadget", "g", api_version="example.com/v1"),
        crd,
    ]
    ds = one(pb.bundle("web", objs, namespace="web"))
    spaces = {(o["kind"], o["metadata"]["name"]): o["metadata"].get("namespace") for o in ds.objects}
    assert spaces == {
        ("Deployment", "api"): "web",
        ("Deployment", "other"): "elsewhere",
        ("ClusterRole", "reader"): None,
        ("Widget", "w"): None,
        ("Gadget", "g"): "web",
        ("CustomResourceDefinition", "widgets.example.com"): None,
    }
    assert ds.namespace == "web"


def test_a_bundle_that_contains_its_namespace_owns_it_and_the_engine_creates_nothing() -> None:
    ds = one(pb.bundle("web", [pb.obj("Namespace", "web"), pb.deployment("api")], namespace="web"))
    assert ds.namespace is None
    assert ds.objects[0]["kind"] == "Namespace"


def test_every_object_carries_the_ownership_marks() -> None:
    ds = one(pb.bundle("web", [pb.deployment("api")], namespace="web"), instance="blue")
    meta = ds.objects[0]["metadata"]
    assert meta["labels"] == {model.LABEL_BUNDLE: "web", model.LABEL_OWNER: "blue"}
    assert meta["annotations"] == {model.ANNOTATION_REVISION: SHA}


def test_objects_come_crds_first_then_namespaces_then_a_stable_order() -> None:
    objs = [
        pb.deployment("b"),
        pb.obj("ConfigMap", "z"),
        pb.obj("Namespace", "web"),
        pb.deployment("a"),
        pb.obj("CustomResourceDefinition", "x.example.com", api_version="apiextensions.k8s.io/v1"),
    ]
    ds = one(pb.bundle("web", objs, namespace="web"))
    assert [(o["kind"], o["metadata"]["name"]) for o in ds.objects] == [
        ("CustomResourceDefinition", "x.example.com"),
        ("Namespace", "web"),
        ("ConfigMap", "z"),
        ("Deployment", "a"),
        ("Deployment", "b"),
    ]
    shuffled = one(pb.bundle("web", list(reversed(objs)), namespace="web"))
    assert shuffled.hash == ds.hash


def test_the_hash_ignores_the_revision_but_not_the_content() -> None:
    bundle = pb.bundle("web", [pb.deployment("api")], namespace="web")
    a, b = one(bundle, revision="a" * 40), one(bundle, revision="b" * 40)
    assert a.hash == b.hash
    assert a.objects != b.objects
    assert one(bundle, revision=None).hash == a.hash
    assert model.ANNOTATION_REVISION not in (
        one(bundle, revision=None).objects[0]["metadata"].get("annotations") or {}
    )
    changed = one(pb.bundle("web", [pb.deployment("api", replicas=2)], namespace="web"))
    assert changed.hash != a.hash


def test_the_same_object_twice_in_one_bundle_is_an_error_naming_both_places() -> None:
    with pytest.raises(errors.RenderError) as info:
        one(pb.bundle("web", [pb.deployment("api"), pb.deployment("api", replicas=3)], namespace="web"))
    assert "Deployment/web/api is declared twice" in str(info.value)
    assert "bundles/web/manifests.yaml:1" in str(info.value)


def test_a_document_without_a_name_is_refused_naming_the_document() -> None:
    with pytest.raises(errors.RenderError) as info:
        one(pb.bundle("web", [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}]))
    assert "document 0 has no metadata.name" in str(info.value)


def test_render_does_not_change_the_bundle_it_reads() -> None:
    bundle = pb.bundle("web", [pb.deployment("api")], namespace="web")
    before = copy.deepcopy([m.obj for m in bundle.manifests])
    one(bundle)
    assert [m.obj for m in bundle.manifests] == before


# ----------------------------------------------------------------------------------------------------------
# Overrides.

EU_ONLY = pb.placement(cluster_selector=pb.selector({"region": "eu"}))
DEPLOY = model.PatchTarget(kind="Deployment", name="api")


def test_a_merge_patch_applies_to_the_clusters_its_placement_selects() -> None:
    bundle = pb.bundle(
        "web",
        [pb.deployment("api"), pb.deployment("worker")],
        namespace="web",
        overrides=[pb.override(EU_ONLY, (DEPLOY, {"spec": {"replicas": 5}}, None))],
    )
    eu, us = one(bundle, EU), one(bundle, US)
    assert [o["spec"]["replicas"] for o in eu.objects] == [5, 1]
    assert [o["spec"]["replicas"] for o in us.objects] == [1, 1]


def test_overrides_apply_in_order_and_json_patches_work_too() -> None:
    bundle = pb.bundle(
        "web",
        [pb.deployment("api")],
        namespace="web",
        overrides=[
            pb.override(EU_ONLY, (DEPLOY, {"spec": {"replicas": 5, "paused": True}}, None)),
            pb.override(
                pb.placement(cel="cluster.facts.tier == 1"),
                (DEPLOY, None, [{"op": "replace", "path": "/spec/replicas", "value": 7}]),
                (DEPLOY, {"spec": {"paused": None}}, None),
            ),
        ],
    )
    spec = one(bundle).objects[0]["spec"]
    assert spec["replicas"] == 7
    assert "paused" not in spec


def test_substitution_happens_before_overrides_and_inside_them() -> None:
    bundle = pb.bundle(
        "web",
        [pb.obj("ConfigMap", "c", data={"host": "${cluster.name}.example"})],
        overrides=[
            pb.override(
                EU_ONLY,
                (model.PatchTarget(kind="ConfigMap"), {"data": {"dc": "${cluster.facts.dc}"}}, None),
            )
        ],
    )
    assert one(bundle).objects[0]["data"] == {"host": "eu-prod-1.example", "dc": "fra"}


@pytest.mark.parametrize(
    "target",
    [
        model.PatchTarget(kind="Deployment", name="nope"),
        model.PatchTarget(kind="Deployment", name="api", namespace="other"),
        model.PatchTarget(kind="Deployment", api_version="apps/v2"),
    ],
)
def test_an_override_whose_target_matches_no_object_is_an_error(target: model.PatchTarget) -> None:
    bundle = pb.bundle(
        "web",
        [pb.deployment("api")],
        namespace="web",
        overrides=[pb.override(EU_ONLY, (target, {"a": 1}, None))],
    )
    with pytest.raises(errors.RenderError) as info:
        one(bundle)
    assert "bundles/web/bundle.yaml:21: override 1 patch 1" in str(info.value)
    assert "matches no object" in str(info.value)


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/data/password", "value": "guess"}],
        [{"op": "replace", "path": "/data/nope/deeper", "value": "x"}],
        [{"op": "remove", "path": "/spec"}],
        [{"op": "add", "path": "/data/password/0", "value": "x"}],
    ],
)
def test_a_failed_json_patch_on_a_secret_never_shows_the_secret(ops: list[dict[str, Any]]) -> None:
    secret = pb.obj("Secret", "creds", data={"password": "Q0FOQVJZLXZhbHVl"})
    bundle = pb.bundle(
        "web",
        [secret],
        namespace="web",
        overrides=[pb.override(EU_ONLY, (model.PatchTarget(kind="Secret"), None, ops))],
    )
    with pytest.raises(errors.RenderError) as info:
        one(bundle)
    assert "Q0FOQVJZLXZhbHVl" not in str(info.value)
    assert f"operation 1 ({ops[0]['op']} {ops[0]['path']})" in str(info.value)


def test_a_json_patch_that_cannot_apply_is_an_error_naming_the_object() -> None:
    bundle = pb.bundle(
        "web",
        [pb.deployment("api")],
        namespace="web",
        overrides=[pb.override(EU_ONLY, (DEPLOY, None, [{"op": "remove", "path": "/spec/nope"}]))],
    )
    with pytest.raises(errors.RenderError) as info:
        one(bundle)
    assert "cannot patch Deployment/web/api" in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# Every pair: sharing and claims.


def test_render_all_shares_identical_renders_and_splits_per_cluster_ones() -> None:
    clusters = [pb.cluster(f"c{i}", labels={"region": "eu" if i % 2 else "us"}) for i in range(6)]
    plain = pb.bundle(
        "plain", [pb.deployment("a")], namespace="p", placement=pb.placement(cluster_selector=pb.selector())
    )
    per = pb.bundle(
        "per",
        [pb.obj("ConfigMap", "c", data={"r": "${cluster.labels.region}"})],
        namespace="q",
        placement=pb.placement(cluster_selector=pb.selector()),
    )
    repo = pb.repo(clusters, [plain, per])
    cache = render.RenderCache()
    desired, failed = render.render_all(repo, placement.place(repo), revision=SHA, cache=cache)
    assert failed == {}
    assert len({id(desired[("plain", c.name)].objects) for c in clusters}) == 1
    assert len({desired[("per", c.name)].hash for c in clusters}) == 2
    assert cache.misses == 3
    desired2, _ = render.render_all(repo, placement.place(repo), revision="b" * 40, cache=cache)
    assert cache.misses == 3
    assert desired2[("plain", "c0")].hash == desired[("plain", "c0")].hash


def test_with_a_cache_the_revision_annotation_stays_the_commit_at_which_a_pair_last_changed() -> None:
    everywhere = pb.placement(cluster_selector=pb.selector())
    same = pb.bundle("same", [pb.deployment("a")], namespace="p", placement=everywhere)
    moving = pb.bundle("moving", [pb.deployment("b")], namespace="q", placement=everywhere)
    cache = render.RenderCache()

    def revision_of(desired: dict[tuple[str, str], model.DesiredSet], bundle: str) -> str:
        return str(
            desired[(bundle, "eu-prod-1")].objects[0]["metadata"]["annotations"][model.ANNOTATION_REVISION]
        )

    repo1 = pb.repo([EU, US], [same, moving])
    first, _ = render.render_all(repo1, placement.place(repo1), revision="1" * 40, cache=cache)
    moved = pb.bundle("moving", [pb.deployment("b", replicas=4)], namespace="q", placement=everywhere)
    repo2 = pb.repo([EU, US], [same, moved])
    second, _ = render.render_all(repo2, placement.place(repo2), revision="2" * 40, cache=cache)
    assert revision_of(second, "same") == "1" * 40
    assert revision_of(second, "moving") == "2" * 40
    assert second[("same", "eu-prod-1")].hash == first[("same", "eu-prod-1")].hash
    # Without a cache, every object carries the revision rendered.
    fresh, _ = render.render_all(repo2, placement.place(repo2), revision="2" * 40)
    assert revision_of(fresh, "same") == "2" * 40


def test_two_bundles_claiming_one_object_on_a_cluster_are_both_in_error_there_only() -> None:
    a = pb.bundle(
        "a",
        [pb.deployment("api"), pb.obj("ConfigMap", "a")],
        namespace="web",
        placement=pb.placement(clusters=["eu-prod-1", "us-prod-1"]),
    )
    b = pb.bundle(
        "b",
        [pb.deployment("api", replicas=2)],
        namespace="web",
        placement=pb.placement(clusters=["eu-prod-1"]),
    )
    repo = pb.repo([EU, US], [a, b])
    desired, failed = render.render_all(repo, placement.place(repo), revision=SHA)
    assert set(failed) == {("a", "eu-prod-1"), ("b", "eu-prod-1")}
    assert (
        "Deployment/web/api is also declared by bundle b on cluster eu-prod-1" in failed[("a", "eu-prod-1")]
    )
    assert set(desired) == {("a", "us-prod-1")}


def test_a_claim_conflict_resolved_in_a_later_commit_renders_every_pair_again_with_a_cache() -> None:
    both = pb.placement(clusters=["eu-prod-1", "us-prod-1"])
    a = pb.bundle("a", [pb.deployment("api")], namespace="web", placement=both)
    b = pb.bundle(
        "b", [pb.deployment("api")], namespace="web", placement=pb.placement(clusters=["eu-prod-1"])
    )
    cache = render.RenderCache()
    repo1 = pb.repo([EU, US], [a, b])
    desired1, failed1 = render.render_all(repo1, placement.place(repo1), revision=SHA, cache=cache)
    assert set(desired1) == {("a", "us-prod-1")}
    assert set(failed1) == {("a", "eu-prod-1"), ("b", "eu-prod-1")}
    b2 = pb.bundle("b", [pb.deployment("api-b")], namespace="web", placement=b.placement)
    repo2 = pb.repo([EU, US], [a, b2])
    desired2, failed2 = render.render_all(repo2, placement.place(repo2), revision=SHA, cache=cache)
    assert failed2 == {}
    assert set(desired2) == {("a", "eu-prod-1"), ("a", "us-prod-1"), ("b", "eu-prod-1")}
    # And the same conflict again is found again, even though `a` did not change.
    desired3, failed3 = render.render_all(repo1, placement.place(repo1), revision=SHA, cache=cache)
    assert (set(desired3), set(failed3)) == (set(desired1), set(failed1))


def test_a_render_error_on_one_cluster_leaves_the_others_rendered() -> None:
    web = pb.bundle(
        "web",
        [pb.obj("ConfigMap", "c", data={"dc": "${cluster.facts.dc}"})],
        placement=pb.placement(cluster_selector=pb.selector()),
    )
    repo = pb.repo([EU, US], [web])
    desired, failed = render.render_all(repo, placement.place(repo), revision=SHA)
    assert set(desired) == {("web", "eu-prod-1")}
    assert "variable ${cluster.facts.dc} is not set on cluster us-prod-1" in failed[("web", "us-prod-1")]


def test_check_reports_unknown_variables_and_unmatched_override_targets_with_their_lines() -> None:
    web = pb.bundle(
        "web",
        [pb.obj("ConfigMap", "c", data={"x": "${cluster.region}"})],
        overrides=[pb.override(EU_ONLY, (model.PatchTarget(kind="Secret"), {"a": 1}, None))],
        placement=pb.placement(clusters=["eu-prod-1"]),
    )
    problems = validation.check(pb.repo([EU, US], [web]))
    assert [(p.path, p.line) for p in problems] == [
        ("bundles/web/bundle.yaml", 21),
        ("bundles/web/manifests.yaml", 1),
    ]
    assert "matches no object" in problems[0].message
    assert "unknown variable ${cluster.region}" in problems[1].message


# ----------------------------------------------------------------------------------------------------------
# Property: render is deterministic.

scalars = st.one_of(st.integers(-5, 5), st.booleans(), st.text(max_size=8), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
documents = st.lists(
    st.tuples(
        st.sampled_from(["ConfigMap", "Deployment", "ClusterRole", "Namespace"]),
        st.text(alphabet="abcdef", min_size=1, max_size=4),
        st.dictionaries(st.text(alphabet="xyz", min_size=1, max_size=3), values, max_size=3),
    ),
    max_size=5,
    unique_by=lambda t: (t[0], t[1]),
)


@settings(max_examples=60, deadline=None)
@given(docs=documents, template=st.sampled_from(["", "${cluster.name}", "${cluster.labels.region}-x"]))
def test_render_is_deterministic_same_input_same_bytes_and_hash(
    docs: list[tuple[str, str, dict[str, Any]]], template: str
) -> None:
    objs = [pb.obj(kind, name, data={**data, "t": template}) for kind, name, data in docs]
    bundle = pb.bundle("web", objs, namespace="web")
    first = one(bundle)
    second = one(pb.bundle("web", copy.deepcopy(objs), namespace="web"))
    assert json.dumps(first.objects, sort_keys=False) == json.dumps(second.objects, sort_keys=False)
    assert first.hash == second.hash == render.hash_objects(first.objects)
