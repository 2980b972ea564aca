"""Which Kubernetes Events fleet writes, about what, and how repeats fold into one (fleet.core.clusterevents)."""

from __future__ import annotations

from fleet.core import clusterevents as ce
from fleet.core import history as hist
from fleet.core import model
from fleet.sim.kinds import events as sim_events

B = "b" * 40
CM = model.ObjectRef("", "v1", "ConfigMap", "apps", "settings")
NS = model.ObjectRef("", "v1", "Namespace", "", "apps")


def entry(outcome: str, **kw: object) -> hist.Entry:
    base: dict[str, object] = {
        "at": 1000.0,
        "cluster": "eu-1",
        "bundle": "web",
        "outcome": outcome,
        "to_revision": B,
    }
    return hist.Entry(**{**base, **kw})  # type: ignore[arg-type]


def test_an_apply_that_changed_objects_is_an_applied_event_on_the_bundles_inventory_with_the_revision() -> (
    None
):
    occ = ce.of_entry(entry("Synced", objects={"created": 1, "configured": 2}), instance="fleet")
    assert occ is not None
    assert (occ.cluster, occ.reason, occ.action, occ.type) == ("eu-1", "Applied", "Apply", "Normal")
    assert occ.regarding == ce.Regarding("v1", "ConfigMap", "fleet-system", "fleet-inventory-web")
    assert occ.note == "revision bbbbbbbbbbbb: bundle web: 1 created, 2 configured"


def test_prunes_rollbacks_failed_applies_and_halts_are_events_and_other_entries_are_not() -> None:
    pruned = ce.of_entry(entry("Pruned", objects={"deleted": 2}), instance="fleet")
    assert pruned is not None and (pruned.reason, pruned.type) == ("Pruned", "Normal")
    back = ce.of_entry(
        entry("RolledBack", from_revision="c" * 40, objects={"configured": 1}), instance="fleet"
    )
    assert back is not None and "rolled back from cccccccccccc" in back.note
    failed = ce.of_entry(
        entry("Failed", objects={"created": 1, "failed": 1}, message="quota"), instance="fleet"
    )
    assert failed is not None and (failed.reason, failed.type) == ("ApplyFailed", "Warning")
    assert ce.of_entry(entry("Failed", message="unreachable"), instance="fleet") is None
    assert ce.of_entry(entry("pause", cluster=""), instance="fleet") is None
    halt = ce.of_halt(
        "eu-1", bundle="web", revision=B, reason="eu-1 failed (degraded)", instance="fleet", at=1.0
    )
    assert (halt.reason, halt.type, halt.note) == (
        "RolloutHalted",
        "Warning",
        "revision bbbbbbbbbbbb: rollout of bundle web halted: eu-1 failed (degraded)",
    )


def test_a_drift_repair_of_one_namespaced_object_regards_that_object_and_otherwise_the_inventory() -> None:
    one = ce.of_entry(entry("DriftRepaired", objects={"configured": 1}), instance="fleet", refs=[CM])
    assert one is not None and one.regarding == ce.Regarding("v1", "ConfigMap", "apps", "settings")
    assert one.note == "revision bbbbbbbbbbbb: bundle web: ConfigMap apps/settings written back"
    cluster_scoped = ce.of_entry(
        entry("DriftRepaired", objects={"configured": 1}), instance="fleet", refs=[NS]
    )
    assert cluster_scoped is not None and cluster_scoped.regarding.kind == "ConfigMap"
    assert "Namespace apps" in cluster_scoped.note


def test_repeats_within_the_window_fold_into_one_series_and_a_later_one_starts_anew() -> None:
    agg = ce.Aggregator(window=60.0)
    first = ce.of_entry(
        entry("DriftRepaired", at=0.0, objects={"configured": 1}), instance="fleet", refs=[CM]
    )
    assert first is not None
    s = agg.observe(first)
    for t in range(1, 1000):
        assert agg.observe(ce.Occurrence(**{**first.__dict__, "at": t * 0.05})) is s
    assert s.count == 1000 and s.last_at == 999 * 0.05
    later = agg.observe(ce.Occurrence(**{**first.__dict__, "at": 999 * 0.05 + 61.0}))
    assert later is not s and later.count == 1 and later.name != s.name


def test_the_event_bodies_pass_the_checks_of_events_k8s_io() -> None:
    occ = ce.of_entry(entry("DriftRepaired", objects={"configured": 1}), instance="fleet", refs=[CM])
    assert occ is not None
    s = ce.Series(name=ce.event_name(occ), first=occ, last_at=occ.at)
    one = ce.body(s, instance="fleet")
    assert sim_events.create_causes(one, namespace="fleet-system") == []
    assert "series" not in one and one["reportingController"] == "fleet.dev/fleet"
    assert (
        one["metadata"]["name"].startswith("settings.") and len(one["metadata"]["name"].split(".")[1]) == 16
    )
    s.count, s.last_at = 3, occ.at + 5
    again = ce.body(s, instance="fleet")
    assert again["series"] == {"count": 3, "lastObservedTime": "1970-01-01T00:16:45.000000Z"}
    assert sim_events.create_causes(again, namespace="fleet-system") == []
    assert ce.series_patch(s) == {"series": again["series"]}
    long = ce.of_entry(entry("Failed", objects={"created": 1}, message="é" * 2000), instance="fleet")
    assert long is not None and len(long.note.encode()) <= ce.NOTE_LIMIT
