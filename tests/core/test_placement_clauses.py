"""Placement: clause order and AND, absent placement, unknown names, CEL errors per pair, dependsOn."""

from __future__ import annotations

from fleet.core import model, placement, validation
from tests.support import placement_builders as pb

CLUSTERS = [
    pb.cluster("eu-prod-1", labels={"env": "prod", "region": "eu"}, facts={"tier": 1}),
    pb.cluster("us-prod-1", labels={"env": "prod", "region": "us"}, facts={"tier": 2}),
    pb.cluster("eu-dev-1", labels={"env": "dev", "region": "eu"}),
    pb.cluster("legacy-prod", labels={"env": "prod", "region": "eu"}, facts={"tier": 1}, paused=True),
]
CM = pb.obj("ConfigMap", "settings", data={"a": "b"})


def place(*bundles: model.Bundle) -> model.PlacementResult:
    return placement.place(pb.repo(CLUSTERS, bundles))


def test_a_bundle_without_placement_goes_nowhere() -> None:
    result = place(pb.bundle("web", [CM]))
    assert result.bundles == {"web": ()}
    assert result.errors == {}
    assert result.explanations["web"]["eu-prod-1"][0].reason == "the bundle has no placement"


def test_an_empty_cluster_list_selects_nothing() -> None:
    assert place(pb.bundle("web", [CM], placement=pb.placement(clusters=[]))).bundles == {"web": ()}


def test_an_empty_selector_selects_every_cluster_including_paused_ones() -> None:
    result = place(pb.bundle("web", [CM], placement=pb.placement(cluster_selector=pb.selector())))
    assert result.bundles["web"] == ("eu-dev-1", "eu-prod-1", "legacy-prod", "us-prod-1")


def test_every_clause_present_must_hold() -> None:
    spec = pb.placement(
        clusters=["eu-prod-1", "us-prod-1", "eu-dev-1", "legacy-prod"],
        cluster_selector=pb.selector({"env": "prod"}),
        cel="has(cluster.facts.tier) && cluster.facts.tier == 1 && !cluster.name.startsWith('legacy-')",
    )
    result = place(pb.bundle("web", [CM], placement=spec))
    assert result.bundles["web"] == ("eu-prod-1",)
    explain = result.explanations["web"]
    assert [(c.clause, c.held) for c in explain["eu-prod-1"]] == [
        ("clusters", True),
        ("clusterSelector", True),
        ("cel", True),
    ]
    assert [(c.clause, c.held) for c in explain["eu-dev-1"]] == [
        ("clusters", True),
        ("clusterSelector", False),
    ]
    assert "env=dev" in explain["eu-dev-1"][1].reason
    assert [(c.clause, c.held) for c in explain["us-prod-1"]] == [
        ("clusters", True),
        ("clusterSelector", True),
        ("cel", False),
    ]
    assert [(c.clause, c.held) for c in explain["legacy-prod"]][-1] == ("cel", False)


def test_clauses_stop_at_the_first_that_fails_so_cel_never_runs_for_excluded_clusters() -> None:
    # This CEL fails on every cluster without `tier`; eu-dev-1 has none but is excluded by the list first.
    spec = pb.placement(clusters=["eu-prod-1", "us-prod-1"], cel="cluster.facts.tier >= 1")
    result = place(pb.bundle("web", [CM], placement=spec))
    assert result.bundles["web"] == ("eu-prod-1", "us-prod-1")
    assert result.errors == {}
    assert [c.clause for c in result.explanations["web"]["eu-dev-1"]] == ["clusters"]


def test_a_cel_error_is_an_error_for_that_pair_and_never_not_selected() -> None:
    spec = pb.placement(cel="cluster.facts.tier >= 1")
    result = place(pb.bundle("web", [CM], placement=spec))
    assert result.bundles["web"] == ("eu-prod-1", "legacy-prod", "us-prod-1")
    assert list(result.errors["web"]) == ["eu-dev-1"]
    assert "no such member" in result.errors["web"]["eu-dev-1"]
    last = result.explanations["web"]["eu-dev-1"][-1]
    assert (last.clause, last.held) == ("cel", None)


def test_an_unknown_cluster_name_is_a_warning_with_the_line_of_the_field() -> None:
    result = place(pb.bundle("web", [CM], placement=pb.placement(clusters=["eu-prod-1", "gone-1"])))
    assert result.bundles["web"] == ("eu-prod-1",)
    (warning,) = result.warnings
    assert warning.severity is model.Severity.WARNING
    assert (warning.path, warning.line) == ("bundles/web/bundle.yaml", 5)
    assert "'gone-1'" in warning.message


def test_a_dependency_missing_on_a_cluster_is_an_error_for_the_dependant_there() -> None:
    base = pb.bundle("base", [CM], placement=pb.placement(cluster_selector=pb.selector({"region": "eu"})))
    web = pb.bundle(
        "web",
        [CM],
        placement=pb.placement(cluster_selector=pb.selector({"env": "prod"})),
        depends_on=["base"],
    )
    result = place(base, web)
    assert result.bundles["web"] == ("eu-prod-1", "legacy-prod")
    assert result.errors["web"] == {
        "us-prod-1": "dependsOn: bundle 'base' is not placed on cluster 'us-prod-1'"
    }
    assert result.explanations["web"]["us-prod-1"][-1].clause == "dependsOn"


def test_a_dependency_chain_fails_together() -> None:
    base = pb.bundle("base", [CM], placement=pb.placement(clusters=["eu-prod-1"]))
    mid = pb.bundle(
        "mid", [CM], placement=pb.placement(clusters=["eu-prod-1", "us-prod-1"]), depends_on=["base"]
    )
    top = pb.bundle("top", [CM], placement=pb.placement(clusters=["us-prod-1"]), depends_on=["mid"])
    result = place(base, mid, top)
    assert result.bundles == {"base": ("eu-prod-1",), "mid": ("eu-prod-1",), "top": ()}
    assert "is in error on cluster 'us-prod-1'" in result.errors["top"]["us-prod-1"]


def test_a_dependency_in_cel_error_makes_the_dependant_an_error_too() -> None:
    base = pb.bundle("base", [CM], placement=pb.placement(cel="cluster.facts.tier >= 1"))
    web = pb.bundle("web", [CM], placement=pb.placement(clusters=["eu-dev-1"]), depends_on=["base"])
    result = place(base, web)
    assert "eu-dev-1" in result.errors["base"]
    assert result.errors["web"] == {"eu-dev-1": "dependsOn: bundle 'base' is in error on cluster 'eu-dev-1'"}


def test_a_dependency_that_does_not_exist_is_an_error_on_every_placed_cluster() -> None:
    web = pb.bundle("web", [CM], placement=pb.placement(clusters=["eu-prod-1"]), depends_on=["nope"])
    assert place(web).errors == {"web": {"eu-prod-1": "dependsOn: bundle 'nope' does not exist"}}


def test_only_bundles_places_the_named_bundles_and_what_they_need() -> None:
    base = pb.bundle("base", [CM], placement=pb.placement(clusters=["eu-prod-1"]))
    web = pb.bundle("web", [CM], placement=pb.placement(clusters=["eu-prod-1"]), depends_on=["base"])
    other = pb.bundle("other", [CM], placement=pb.placement(clusters=["eu-prod-1"]))
    result = placement.place(pb.repo(CLUSTERS, [base, web, other]), only_bundles=["web"])
    assert result.bundles == {"web": ("eu-prod-1",)}


def test_the_cache_reuses_a_bundles_placement_until_its_spec_or_the_registry_changes() -> None:
    cache = placement.PlacementCache()
    web = pb.bundle("web", [CM], placement=pb.placement(cel="has(cluster.facts.tier)"))
    api = pb.bundle("api", [CM], placement=pb.placement(cluster_selector=pb.selector({"env": "prod"})))
    first = placement.place(pb.repo(CLUSTERS, [web, api]), cache=cache)
    assert (cache.hits, cache.misses) == (0, 2)
    # A new manifest in `web` does not change its placement spec: both come from the cache.
    web2 = pb.bundle("web", [CM, pb.obj("Secret", "s")], placement=web.placement)
    again = placement.place(pb.repo(CLUSTERS, [web2, api]), cache=cache)
    assert (cache.hits, cache.misses) == (2, 2)
    assert again.bundles == first.bundles
    # A changed placement is recomputed, the other bundle is not.
    web3 = pb.bundle("web", [CM], placement=pb.placement(clusters=["eu-dev-1"]))
    third = placement.place(pb.repo(CLUSTERS, [web3, api]), cache=cache)
    assert (cache.hits, cache.misses) == (3, 3)
    assert third.bundles["web"] == ("eu-dev-1",)
    # A relabelled cluster changes the registry: everything is recomputed, with the new labels.
    relabelled = [*CLUSTERS[:2], pb.cluster("eu-dev-1", labels={"env": "prod", "region": "eu"}), CLUSTERS[3]]
    fourth = placement.place(pb.repo(relabelled, [web3, api]), cache=cache)
    assert (cache.hits, cache.misses) == (3, 5)
    assert "eu-dev-1" in fourth.bundles["api"]


def test_check_reports_a_cel_error_for_every_cluster_it_was_evaluated_on() -> None:
    web = pb.bundle("web", [CM], placement=pb.placement(cel="cluster.facts.tier >= 1"))
    base = pb.bundle(
        "base", [pb.obj("ConfigMap", "base")], placement=pb.placement(clusters=["eu-prod-1", "ghost"])
    )
    clusters = [*CLUSTERS, pb.cluster("bare-2")]
    problems = validation.check(pb.repo(clusters, [web, base]))
    errors = [p for p in problems if p.severity is model.Severity.ERROR]
    assert [(p.path, p.line, p.cluster) for p in errors] == [
        ("bundles/web/bundle.yaml", 7, "bare-2"),
        ("bundles/web/bundle.yaml", 7, "eu-dev-1"),
    ]
    assert all("no such member" in p.message for p in errors)
    # The unknown name is a warning of the repository layer, not repeated here.
    assert [p for p in problems if p.severity is model.Severity.WARNING] == []


def test_a_paused_cluster_is_placed_like_any_other() -> None:
    spec = pb.placement(clusters=["legacy-prod"])
    assert place(pb.bundle("web", [CM], placement=spec)).bundles["web"] == ("legacy-prod",)
