"""`fleet.core.pipeline`: the one pipeline every command and the controller take a revision through."""

from __future__ import annotations

import dataclasses

from fleet.core import model, pipeline, plan
from tests.support import placement_builders as pb

EU = pb.cluster("eu-prod-1", labels={"env": "prod"})
US = pb.cluster("us-prod-1", labels={"env": "prod"})
WEB = pb.bundle(
    "web",
    [pb.obj("ConfigMap", "settings", data={"v": "1"})],
    namespace="web",
    placement=pb.placement(clusters=["eu-prod-1", "us-prod-1"]),
)


def test_a_revision_with_no_cluster_file_or_no_bundle_is_empty_and_a_broken_one_counts_as_present() -> None:
    assert pipeline.emptiness(pb.repo([], [WEB])) == "no cluster file"
    assert pipeline.emptiness(pb.repo([EU], [])) == "no bundle"
    assert pipeline.emptiness(pb.repo([EU], [WEB])) is None
    broken = dataclasses.replace(pb.repo([EU], []), broken_bundles={"db": ()})
    assert pipeline.emptiness(broken) is None


def test_every_placed_pair_is_rendered_or_in_error_and_each_cluster_gets_its_targets() -> None:
    rendered = pipeline.render_revision(pb.repo([EU, US], [WEB]), revision="r1")
    assert set(rendered.desired) == {("web", "eu-prod-1"), ("web", "us-prod-1")}
    assert not rendered.render_errors
    targets = pipeline.targets_for(rendered.repo, rendered.placed, rendered.desired, rendered.render_errors)
    assert set(targets) == {"eu-prod-1", "us-prod-1"}
    assert targets["eu-prod-1"]["web"].desired is rendered.desired[("web", "eu-prod-1")]


def test_serve_gives_a_cluster_no_wave_selects_an_error_and_nothing_to_apply() -> None:
    only_eu = model.RolloutSpec(
        waves=(model.WaveSpec("canary", placement=pb.placement(clusters=["eu-prod-1"])),)
    )
    web = dataclasses.replace(WEB, rollout=only_eu)
    rendered = pipeline.render_revision(pb.repo([EU, US], [web]), revision="r1")
    assert set(rendered.wave_errors()) == {("web", "us-prod-1")}
    desired = pipeline.desired_state(rendered, instance=model.DEFAULT_INSTANCE)
    us = desired.targets["us-prod-1"]["web"]
    assert us.desired is None and us.error and "wave" in us.error
    assert desired.targets["eu-prod-1"]["web"].desired is not None
    assert desired.hashes() == {"web": {"eu-prod-1": rendered.desired[("web", "eu-prod-1")].hash}}


def test_what_a_cluster_is_handed_is_a_hash_an_error_left_or_protected() -> None:
    rendered = pipeline.render_revision(pb.repo([EU], [WEB]), revision="r1")
    desired = pipeline.desired_state(rendered, instance=model.DEFAULT_INSTANCE)
    targets = dict(desired.targets["eu-prod-1"])
    targets["api"] = plan.Target("api", error="boom")
    targets["later"] = plan.Target("later", suspended=True)
    sig = pipeline.signature(targets, {"db": "broken"})
    assert sig == {
        "web": rendered.desired[("web", "eu-prod-1")].hash,
        "api": "error:boom",
        "later": "left",
        "db": "protected",
    }
