"""The state of record's ConfigMaps (fleet.core.records): codecs, schema versions, bounds and merges, pure."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from fleet.core import history as hist
from fleet.core import model
from fleet.core import records as rec
from fleet.core import rollout as ro
from fleet.core import summaries as sm

SHA_A = "a" * 40
SHA_B = "b" * 40


def a_rollout(bundle: str = "web", revision: str = SHA_B, *, started: float = 100.0) -> rec.Rollout:
    spec = model.RolloutSpec(
        waves=(
            model.WaveSpec(name="canary", max_concurrency=model.Count(1)),
            model.WaveSpec(name="rest", approval=model.Approval.BEFORE),
        ),
        progress_deadline=600.0,
    )
    r = ro.start(
        bundle=bundle,
        revision=revision,
        spec=spec,
        waves=[("canary", ("c1",)), ("rest", ("c2", "c3"))],
        from_revisions=dict.fromkeys(("c1", "c2", "c3"), SHA_A),
        unchanged=(),
        now=started,
    )
    return rec.Rollout(
        bundle=bundle,
        revision=revision,
        started_at=started,
        updated_at=started,
        terminal=False,
        doc={"rollout": ro.dump(r), "hashes": {"c1": "h1"}},
    )


def entry(at: float, *, cluster: str = "c1", bundle: str = "web", to: str = SHA_B, **kw: Any) -> hist.Entry:
    return hist.Entry(at=at, cluster=cluster, bundle=bundle, outcome="Synced", to_revision=to, **kw)


def stored(obj: dict[str, Any], version: str = "7") -> dict[str, Any]:
    """What the API server gives back: the object with a resourceVersion."""
    out = copy.deepcopy(obj)
    out["metadata"]["resourceVersion"] = version
    return out


# -- rollouts ----------------------------------------------------------------------------------------------


def test_a_rollout_record_round_trips_and_the_state_machine_loads_it_back() -> None:
    r = a_rollout()
    obj = rec.encode_rollout(r, instance="fleet")
    assert obj["metadata"]["name"] == f"fleet-rollout-web-{SHA_B[:12]}"
    assert obj["metadata"]["namespace"] == "fleet-system"
    assert obj["metadata"]["labels"] == {
        "fleet.dev/owner": "fleet",
        "fleet.dev/record": "rollout",
        "fleet.dev/bundle": "web",
    }
    assert obj["metadata"]["annotations"] == {"fleet.dev/schema": str(rec.SCHEMA)}
    assert obj["data"]["state"] == "Progressing"  # readable with kubectl beside the whole form
    back = rec.decode_rollout(stored(obj))
    assert back.meta == rec.Meta(name=obj["metadata"]["name"], version="7")
    assert (back.bundle, back.revision, back.started_at, back.terminal) == ("web", SHA_B, 100.0, False)
    assert ro.load(back.doc["rollout"]) == ro.load(r.doc["rollout"])
    assert back.doc["hashes"] == {"c1": "h1"}


def test_a_rollout_record_is_written_compact_with_sorted_keys_and_its_text_as_it_is() -> None:
    r = a_rollout()
    r = replace(r, doc={**r.doc, "hashes": {"z": "h2", "c\u00e9": "h1"}})
    text = rec.encode_rollout(r, instance="fleet")["data"]["rollout.json"]
    assert text.startswith('{"hashes":{"c\u00e9":"h1","z":"h2"},"rollout":{')
    assert "\\u" not in text and ", " not in text and '": ' not in text
    assert rec.decode_rollout(stored(rec.encode_rollout(r, instance="fleet"))).doc == json.loads(
        json.dumps(r.doc)
    )


def test_a_long_bundle_name_makes_a_valid_record_name_and_two_such_names_never_meet() -> None:
    one = rec.name_for(rec.ROLLOUT, instance="fleet", bundle="b" * 240 + "1", revision=SHA_B)
    two = rec.name_for(rec.ROLLOUT, instance="fleet", bundle="b" * 240 + "2", revision=SHA_B)
    assert one != two and len(one) <= 253 and len(two) <= 253
    obj = rec.encode_rollout(a_rollout(bundle="b" * 240 + "1"), instance="fleet")
    assert "fleet.dev/bundle" not in obj["metadata"]["labels"]  # too long for a label: in the data only
    assert rec.decode_rollout(stored(obj)).bundle == "b" * 240 + "1"


def test_an_unreadable_rollout_record_is_an_error_naming_the_object_and_the_field() -> None:
    obj = stored(rec.encode_rollout(a_rollout(), instance="fleet"))
    name = obj["metadata"]["name"]
    broken = copy.deepcopy(obj)
    broken["data"]["rollout.json"] = "{not json"
    with pytest.raises(
        rec.RecordError, match=rf"ConfigMap/fleet-system/{name}: data.rollout.json is not JSON"
    ):
        rec.decode_rollout(broken)
    missing = copy.deepcopy(obj)
    del missing["data"]["startedAt"]
    with pytest.raises(rec.RecordError, match=rf"{name}: data.startedAt is missing"):
        rec.decode_rollout(missing)
    other = copy.deepcopy(obj)
    other["data"]["bundle"] = "api"
    with pytest.raises(rec.RecordError, match=r"is not the rollout of api"):
        rec.decode_rollout(other)
    wrong_kind = copy.deepcopy(obj)
    wrong_kind["metadata"]["labels"]["fleet.dev/record"] = "history"
    with pytest.raises(rec.RecordError, match=r"label fleet.dev/record is 'history', not 'rollout'"):
        rec.decode_rollout(wrong_kind)


def test_a_record_over_the_size_limit_is_refused_naming_it_rather_than_cut() -> None:
    big = a_rollout()
    big = rec.Rollout(
        **{**big.__dict__, "doc": {**big.doc, "hashes": {f"c{i}": "h" * 64 for i in range(20_000)}}}
    )
    with pytest.raises(
        rec.RecordError, match=r"fleet-rollout-web-bbbbbbbbbbbb: the record would hold \d+ bytes"
    ):
        rec.encode_rollout(big, instance="fleet")


def test_the_newest_rollout_of_each_bundle_and_those_beyond_the_kept_ones() -> None:
    rs = [a_rollout(revision=c * 40, started=float(i)) for i, c in enumerate("abcde")]
    rs.append(a_rollout(bundle="api", revision="f" * 40, started=1.0))
    newest = rec.latest(rs)
    assert {b: r.revision[0] for b, r in newest.items()} == {"web": "e", "api": "f"}
    assert sorted(r.revision[0] for r in rec.beyond_kept(rs, keep=3)) == ["a", "b"]


# -- schema versions -----------------------------------------------------------------------------------------


def test_a_record_of_a_newer_schema_is_refused_not_overwritten() -> None:
    obj = stored(rec.encode_rollout(a_rollout(), instance="fleet"))
    obj["metadata"]["annotations"]["fleet.dev/schema"] = str(rec.SCHEMA + 1)
    with pytest.raises(rec.RecordError, match=r"written by a newer fleet .*refusing to read or overwrite it"):
        rec.decode_rollout(obj)


def test_an_older_schema_is_migrated_step_by_step_and_one_without_a_migration_is_an_error() -> None:
    obj = stored(rec.encode_rollout(a_rollout(), instance="fleet"))
    obj["metadata"]["annotations"]["fleet.dev/schema"] = "0"
    with pytest.raises(rec.RecordError, match=r"not a schema version"):
        rec.upgrade(obj, kind=rec.ROLLOUT)
    # A version-1 record read by a fleet at schema 2, with a step that renames a field.
    obj["metadata"]["annotations"]["fleet.dev/schema"] = "1"
    old = copy.deepcopy(obj)
    old["data"]["begun"] = old["data"].pop("startedAt")

    def one_to_two(data: dict[str, str]) -> dict[str, str]:
        out = dict(data)
        out["startedAt"] = out.pop("begun")
        return out

    original = rec.SCHEMA
    try:
        rec.SCHEMA = 2  # type: ignore[misc]
        meta, data = rec.upgrade(old, kind=rec.ROLLOUT, migrations={(rec.ROLLOUT, 1): one_to_two})
        assert data["startedAt"] == "100.0" and "begun" not in data and meta.version == "7"
        with pytest.raises(rec.RecordError, match=r"schema 1 of rollout records has no migration to 2"):
            rec.upgrade(old, kind=rec.ROLLOUT, migrations={})
    finally:
        rec.SCHEMA = original  # type: ignore[misc]


def test_a_missing_schema_annotation_makes_the_record_unreadable() -> None:
    obj = stored(rec.encode_rollout(a_rollout(), instance="fleet"))
    del obj["metadata"]["annotations"]
    with pytest.raises(rec.RecordError, match=r"annotation fleet.dev/schema is None"):
        rec.decode_rollout(obj)


# -- actions --------------------------------------------------------------------------------------------------


def test_an_action_request_round_trips() -> None:
    a = rec.ActionRequest(
        bundle="web", revision=SHA_B, action="approve", actor="ana", at=5.5, replica="r-b", token="x1y2z",
        reason="looks good", wave="rest",
    )  # fmt: skip
    obj = rec.encode_action(a, instance="fleet")
    assert obj["metadata"]["name"] == "fleet-action-web-x1y2z"
    back = rec.decode_action(stored(obj))
    assert back == rec.ActionRequest(**{**a.__dict__, "meta": rec.Meta(obj["metadata"]["name"], "7")})


# -- history ------------------------------------------------------------------------------------------------


def test_a_history_segment_round_trips_with_full_precision_times() -> None:
    s = rec.Segment(
        writer="host-a1b2c",
        number=3,
        entries=(
            entry(1.125, objects={"created": 2}, trace_id="ab" * 16, actor="ana"),
            hist.Entry(at=2.5, cluster="", bundle="web", outcome="approve", actor="bo", reason="ok"),
        ),
    )
    obj = rec.encode_segment(s, instance="fleet")
    assert obj["metadata"]["name"] == "fleet-history-host-a1b2c-000003"
    assert obj["data"]["count"] == "2" and obj["data"]["newest"] == "2.5"
    back = rec.decode_segment(stored(obj), instance="fleet")
    assert (back.writer, back.number, back.meta.version) == ("host-a1b2c", 3, "7")
    assert [e.at for e in back.entries] == [1.125, 2.5]
    assert back.entries[0].objects == {"created": 2} and back.entries[0].actor == "ana"
    assert back.entries[1].cluster == "" and back.entries[1].reason == "ok"


def test_a_segment_grown_from_a_read_one_is_stored_as_one_written_whole() -> None:
    # An append encodes only the entries it adds (the text read or written before is kept).
    first = (entry(1.0, objects={"created": 1}), entry(2.0, actor="ana"))
    read = rec.decode_segment(
        stored(rec.encode_segment(rec.Segment(writer="w", number=0, entries=first), instance="f")),
        instance="f",
    )
    more = (entry(3.0, message="m"),)
    grown = rec.grown(rec.grown(read, more), ())
    whole = rec.Segment(writer="w", number=0, entries=read.entries + more, meta=read.meta)
    assert grown == whole
    assert rec.encode_segment(grown, instance="f") == rec.encode_segment(whole, instance="f")
    assert rec.fits(grown, [entry(4.0)]) == rec.fits(whole, [entry(4.0)])


def test_a_broken_history_line_is_an_error_naming_the_segment_and_the_line() -> None:
    obj = stored(
        rec.encode_segment(rec.Segment(writer="w", number=0, entries=(entry(1.0),)), instance="fleet")
    )
    obj["data"]["entries"] += '{"outcome": "Synced"}\n'
    with pytest.raises(
        rec.RecordError, match=r"fleet-history-w-000000: data.entries line 2 is not a history entry"
    ):
        rec.decode_segment(obj, instance="fleet")


def test_a_segment_takes_entries_up_to_its_bounds() -> None:
    s = rec.Segment(
        writer="w", number=0, entries=tuple(entry(float(i)) for i in range(rec.SEGMENT_ENTRIES - 1))
    )
    assert rec.fits(s, [entry(1.0)])
    assert not rec.fits(s, [entry(1.0), entry(2.0)])
    assert rec.fits(
        rec.Segment(writer="w", number=1), [entry(float(i)) for i in range(rec.SEGMENT_ENTRIES + 5)]
    )
    long = rec.Segment(writer="w", number=0, entries=(entry(1.0, message="m" * 400),) * 400)
    assert not rec.fits(long, [entry(1.0, message="m" * 400)] * 300)


def test_history_merged_from_every_replicas_segments_is_newest_first_filtered_and_limited() -> None:
    a = rec.Segment(writer="a", number=0, entries=(entry(1.0), entry(3.0, cluster="c2"), entry(5.0)))
    b = rec.Segment(writer="b", number=0, entries=(entry(2.0, to="c" * 40), entry(4.0, bundle="api")))
    everything = rec.merge_history([a, b], hist.Query(limit=100))
    assert [e.at for e in everything] == [5.0, 4.0, 3.0, 2.0, 1.0]
    assert [e.seq for e in everything] == [1, 2, 3, 4, 5]
    assert [e.at for e in rec.merge_history([a, b], hist.Query(cluster="c1", limit=100))] == [
        5.0,
        4.0,
        2.0,
        1.0,
    ]
    assert [e.at for e in rec.merge_history([a, b], hist.Query(bundle="api", limit=100))] == [4.0]
    assert [e.at for e in rec.merge_history([a, b], hist.Query(since=3.0, limit=2))] == [5.0, 4.0]
    assert [e.at for e in rec.merge_history([a, b], hist.Query(revision="cccc", limit=9))] == [2.0]


def test_a_segment_expires_whole_once_its_newest_entry_is_past_the_retention() -> None:
    s = rec.Segment(writer="a", number=0, entries=(entry(1.0), entry(9.0)))
    assert not rec.expired(s, before=9.0)
    assert rec.expired(s, before=9.5)
    assert not rec.expired(rec.Segment(writer="a", number=1), before=100.0)


# -- status summaries -----------------------------------------------------------------------------------------


def cluster_doc(state: str = "Synced") -> dict[str, Any]:
    return {"state": state, "revision": SHA_B, "bundles": {"web": {"state": state, "revision": SHA_B}}}


def shard_of(name: str) -> int:
    return int(name.rsplit("-", 1)[1]) % 4


def test_a_status_summary_round_trips_with_its_observations() -> None:
    s = sm.Summary(
        shard=2, shards=4, writer="r-a", epoch=3, updated_at=10.5,
        clusters={"c-2": cluster_doc(), "c-6": cluster_doc("Failed")},
        observed={"c-2": {"web": sm.Observation(revision=SHA_B, state="Synced", at=10.0)}},
    )  # fmt: skip
    obj = sm.encode_summary(s, instance="fleet")
    assert obj["metadata"]["name"] == "fleet-status-2"
    assert obj["data"]["states"] == "Failed=1 Synced=1"
    back = sm.decode_summary(stored(obj))
    assert back == sm.Summary(**{**s.__dict__, "meta": rec.Meta("fleet-status-2", "7")})


def test_a_summary_is_written_compact_with_sorted_keys_and_its_text_as_it_is() -> None:
    doc = {"state": "Failed", "lastError": "apply: the field \u00e9t\u00e9 is refused", "bundles": {}}
    s = sm.Summary(shard=1, shards=4, writer="a", epoch=1, updated_at=1.0, clusters={"c-1": doc})
    text = sm.encode_summary(s, instance="f")["data"]["clusters.json"]
    assert (
        text
        == '{"c-1":{"bundles":{},"lastError":"apply: the field \u00e9t\u00e9 is refused","state":"Failed"}}'
    )
    assert "\\u" not in text  # not escaped: one byte less than six per character
    assert sm.decode_summary(stored(sm.encode_summary(s, instance="f"))).clusters == {"c-1": doc}


def test_an_unreadable_summary_names_it() -> None:
    obj = stored(
        sm.encode_summary(sm.Summary(shard=1, shards=4, writer="a", epoch=1, updated_at=1.0), instance="f")
    )
    obj["data"]["clusters.json"] = json.dumps(["not", "a", "map"])
    with pytest.raises(
        rec.RecordError, match=r"ConfigMap/fleet-system/f-status-1: data.clusters.json is not a map"
    ):
        sm.decode_summary(obj)
    obj["data"]["shard"] = "9"
    obj["data"]["clusters.json"] = "{}"
    with pytest.raises(rec.RecordError, match=r"data.shard 9 is not below data.shards 4"):
        sm.decode_summary(obj)


def test_a_record_holding_what_its_writer_never_writes_nan_is_unreadable_not_taken_in() -> None:
    """Records are written without NaN or infinities (`records.dumps`); one that holds them was not written
    by fleet and is an error naming the ConfigMap and field, not a document shown with a NaN in it."""
    obj = stored(
        sm.encode_summary(sm.Summary(shard=1, shards=4, writer="a", epoch=1, updated_at=1.0), instance="f")
    )
    obj["data"]["clusters.json"] = '{"c-1": {"state": "Synced", "lastSyncAt": NaN}}'
    with pytest.raises(
        rec.RecordError, match=r"ConfigMap/fleet-system/f-status-1: data.clusters.json is not JSON"
    ):
        sm.decode_summary(obj)


def test_a_summary_written_by_a_newer_owner_of_the_shard_fences_out_an_older_one() -> None:
    newer = sm.Summary(shard=1, shards=4, writer="b", epoch=5, updated_at=1.0)
    assert sm.fenced(newer, shards=4, epoch=4)
    assert not sm.fenced(newer, shards=4, epoch=5)
    assert not sm.fenced(newer, shards=8, epoch=1)  # written under another shard count: replaced
    assert not sm.fenced(None, shards=4, epoch=0)


def test_the_whole_fleet_is_every_shards_summary_and_a_missing_shard_is_reported_not_empty() -> None:
    summaries = [
        sm.Summary(shard=0, shards=4, writer="a", epoch=1, updated_at=5.0, clusters={"c-0": cluster_doc()}),
        sm.Summary(shard=1, shards=4, writer="b", epoch=2, updated_at=5.0,
                    clusters={"c-1": cluster_doc("Failed"), "c-5": cluster_doc(), "c-2": cluster_doc("Stale")}),
        # an older owner's summary of shard 1 (lower epoch) is not taken
        sm.Summary(shard=1, shards=4, writer="a", epoch=1, updated_at=9.0, clusters={"c-9": cluster_doc()}),
        # written under 2 shards (before the count changed): only fills in what no current summary holds
        sm.Summary(shard=1, shards=2, writer="a", epoch=1, updated_at=1.0,
                    clusters={"c-3": cluster_doc(), "c-1": cluster_doc("Pending")}),
    ]  # fmt: skip
    merged = sm.merge_status(summaries, shards=4, shard_of=shard_of)
    assert {n: d["state"] for n, d in merged.clusters.items()} == {
        "c-0": "Synced",
        "c-1": "Failed",
        "c-3": "Synced",
        "c-5": "Synced",
    }
    assert merged.missing == (2, 3)  # c-2 is in shard 2, whose summary is missing: not shown from shard 1's
    assert merged.writers == {0: "a", 1: "b"}


def test_observations_are_merged_from_the_summary_of_their_clusters_shard_only() -> None:
    seen = sm.Observation(revision=SHA_B, state="Synced", at=3.0)
    summaries = [
        sm.Summary(shard=1, shards=4, writer="b", epoch=1, updated_at=5.0, observed={"c-1": {"web": seen}}),
        sm.Summary(shard=2, shards=4, writer="b", epoch=1, updated_at=5.0, observed={"c-5": {"web": seen}}),
    ]
    merged = sm.merge_status(summaries, shards=4, shard_of=shard_of)
    assert merged.observed == {"c-1": {"web": seen}}  # c-5 is shard 1's: shard 2's word on it is not taken
    assert merged.clusters == {}
