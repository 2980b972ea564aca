"""Inventory ConfigMaps: encode/decode round trips, and unreadable inventories are never read as empty."""

from __future__ import annotations

import json

import pytest

from fleet.core import fencing, inventory, model

REFS = [
    model.ObjectRef("apps", "v1", "Deployment", "web", "api"),
    model.ObjectRef("", "v1", "Namespace", "", "web"),
    model.ObjectRef("example.com", "v1", "Widget", "web", "w1"),
]


def test_an_inventory_round_trips_through_its_configmap() -> None:
    cm = inventory.encode("web", REFS, instance="fleet")
    assert cm["metadata"]["name"] == "fleet-inventory-web"
    assert cm["metadata"]["namespace"] == "fleet-system"
    assert cm["metadata"]["labels"] == {"fleet.dev/owner": "fleet", "fleet.dev/inventory": "true"}
    decoded = inventory.decode(
        {**cm, "metadata": {**cm["metadata"], "resourceVersion": "7"}}, instance="fleet"
    )
    assert decoded.bundle == "web"
    assert decoded.refs == frozenset(REFS)
    assert decoded.resource_version == "7"


def test_the_encoding_is_sorted_and_stable_whatever_the_input_order() -> None:
    a = inventory.encode("web", REFS, instance="fleet")
    b = inventory.encode("web", list(reversed(REFS)), instance="fleet")
    assert a == b
    rows = json.loads(a["data"]["objects"])
    assert rows == sorted(rows)


def test_the_instance_names_the_configmap_and_the_selector() -> None:
    cm = inventory.encode("db", REFS[:1], instance="blue")
    assert cm["metadata"]["name"] == "blue-inventory-db"
    assert inventory.selector(instance="blue") == "fleet.dev/owner=blue,fleet.dev/inventory=true"


@pytest.mark.parametrize(
    "objects",
    [
        "not json",
        json.dumps({"a": 1}),
        json.dumps([["apps", "v1", "Deployment", "web"]]),
        json.dumps([[1, 2, 3, 4, 5]]),
    ],
)
def test_an_unreadable_inventory_raises_naming_the_configmap(objects: str) -> None:
    cm = inventory.encode("web", REFS, instance="fleet")
    cm["data"]["objects"] = objects
    with pytest.raises(inventory.InventoryError, match="ConfigMap/fleet-system/fleet-inventory-web"):
        inventory.decode(cm, instance="fleet")


def test_decode_all_separates_broken_inventories_from_good_ones() -> None:
    good = inventory.encode("web", REFS, instance="fleet")
    bad = inventory.encode("db", REFS, instance="fleet")
    bad["data"]["objects"] = "{"
    found, broken = inventory.decode_all([good, bad], instance="fleet")
    assert set(found) == {"web"}
    assert set(broken) == {"db"}
    assert "data.objects is not JSON" in broken["db"]


def test_an_empty_inventory_decodes_to_no_refs() -> None:
    cm = inventory.encode("web", [], instance="fleet")
    assert inventory.decode(cm, instance="fleet").refs == frozenset()


@pytest.mark.parametrize(
    "data",
    [{"bundle": "web"}, None, ["web"], {"bundle": "web", "objects": None}],
    ids=["no objects", "no data", "data a list", "objects null"],
)
def test_an_inventory_without_its_object_list_is_unreadable_not_empty(data: object) -> None:
    cm = inventory.encode("web", REFS, instance="fleet")
    cm["data"] = data
    with pytest.raises(inventory.InventoryError, match=r"ConfigMap/fleet-system/fleet-inventory-web: .*data"):
        inventory.decode(cm, instance="fleet")


def test_an_inventory_records_the_source_that_wrote_it() -> None:
    cm = inventory.encode("web", REFS, instance="fleet", source="git.example.com/team/gitops")
    assert cm["data"]["source"] == "git.example.com/team/gitops"
    decoded = inventory.decode(cm, instance="fleet")
    assert decoded.source == "git.example.com/team/gitops"
    assert decoded.where == "ConfigMap/fleet-system/fleet-inventory-web"


def test_an_inventory_written_by_an_earlier_fleet_has_no_source_and_is_adopted_by_whoever_reads_it() -> None:
    legacy = inventory.encode("web", REFS, instance="fleet")
    assert "source" not in legacy["data"]
    theirs = inventory.encode("db", REFS, instance="fleet", source="other")
    found, broken = inventory.decode_all([legacy, theirs], instance="fleet")
    assert broken == {} and found["web"].source is None
    ours, foreign = inventory.split(found, source="mine")
    assert set(ours) == {"web"} and set(foreign) == {"db"}
    # a caller naming no source takes every inventory as its own, as earlier fleets did
    assert inventory.split(found, source=None) == (found, {})


def test_an_empty_source_field_is_unreadable_never_taken_as_ours() -> None:
    cm = inventory.encode("web", REFS, instance="fleet", source="x")
    cm["data"]["source"] = ""
    with pytest.raises(inventory.InventoryError, match=r"data\.source"):
        inventory.decode(cm, instance="fleet")


def test_the_inventory_write_carries_the_resource_version_it_was_read_at() -> None:
    cm = inventory.encode("web", REFS, instance="fleet", source="s", resource_version="41")
    assert cm["metadata"]["resourceVersion"] == "41"
    assert "resourceVersion" not in inventory.encode("web", REFS, instance="fleet")["metadata"]


def claim(revision: str, seen: str, source: str = "git.example.com/team/gitops") -> inventory.Claim:
    return inventory.Claim(source=source, revision=revision, observed_at=seen)


def test_of_two_revisions_of_one_source_the_one_seen_later_is_newer() -> None:
    old = claim("aaa", "2026-05-01T10:00:00.000Z")
    new = claim("bbb", "2026-05-01T10:00:05.250Z")
    assert new.newer_than(old) and not old.newer_than(new)
    # a force-push back to an older commit is seen later: it is the newer claim
    back = claim("aaa", "2026-05-01T10:01:00.000Z")
    assert back.newer_than(new)
    # the same revision is never "newer", whenever it was seen (two replicas agree: no fight)
    assert not claim("bbb", "2026-05-01T11:00:00Z").newer_than(new)
    # second-precision times from the state database compare with millisecond ones
    assert claim("ccc", "2026-05-01T10:00:06Z").newer_than(new)
    # the same instant: one order that both sides agree on
    tie_a, tie_b = claim("aaa", "2026-05-01T10:00:00Z"), claim("bbb", "2026-05-01T10:00:00.000Z")
    assert tie_b.newer_than(tie_a) != tie_a.newer_than(tie_b)


def test_ones_own_revision_seen_at_another_instant_was_written_by_another_writer_whatever_the_host() -> None:
    mine = inventory.Claim(
        source="s", revision="bbb", observed_at="2026-05-01T10:00:05.250Z", writer="fleet serve on h"
    )
    # another replica on the same host fetched the same commit at another instant
    other = inventory.Claim(
        source="s", revision="bbb", observed_at="2026-05-01T10:00:05.300Z", writer="fleet serve on h"
    )
    assert other.by_another(mine) and not other.newer_than(mine)
    assert "already at revision bbb, written by another writer of this source (fleet serve on h" in (
        other.ahead_message()
    )
    # one's own claim, read back in another precision, or after a restart on a host of another name
    assert not inventory.Claim(source="s", revision="bbb", observed_at="2026-05-01T10:00:05.25Z").by_another(
        mine
    )
    again = inventory.Claim(
        source="s", revision="bbb", observed_at=mine.observed_at, writer="fleet serve on h2"
    )
    assert not again.by_another(mine)
    # another revision is never "by another" at one's own revision (newer or older: `newer_than` decides)
    assert not claim("ccc", "2026-05-01T11:00:00Z").by_another(mine)


def test_a_revision_record_round_trips_and_names_its_source_without_credentials() -> None:
    c = inventory.Claim(
        source="git.example.com/team/gitops",
        revision="bbb",
        observed_at="2026-05-01T10:00:05.250Z",
        committed_at="2026-05-01T09:59:00Z",
        writer="fleet serve on host-1",
    )
    cm = inventory.encode_record(c, instance="fleet", resource_version="9")
    assert cm["metadata"]["name"] == inventory.record_name(instance="fleet", source=c.source)
    assert cm["metadata"]["name"].startswith("fleet-revision-")
    assert cm["metadata"]["labels"] == {"fleet.dev/owner": "fleet", "fleet.dev/revision-record": "true"}
    assert cm["metadata"]["resourceVersion"] == "9"
    assert inventory.decode_record(cm, source=c.source) == c
    assert "superseded by revision bbb written by another controller" in c.superseded_message()


@pytest.mark.parametrize(
    "data",
    [
        {"source": "other", "revision": "a", "observedAt": "2026-05-01T10:00:00Z"},
        {"source": "s", "revision": "a"},
        {"source": "s", "revision": "a", "observedAt": "yesterday"},
    ],
)
def test_an_unreadable_revision_record_raises_naming_it(data: dict[str, str]) -> None:
    cm = {"metadata": {"name": "fleet-revision-x"}, "data": data}
    with pytest.raises(inventory.InventoryError, match="ConfigMap/fleet-system/fleet-revision-x"):
        inventory.decode_record(cm, source="s")


def test_an_inventory_carries_the_fence_of_the_replica_that_wrote_it() -> None:
    fence = fencing.Fence(lease="fleet-shard-7", epoch=12)
    cm = inventory.encode("web", REFS, instance="fleet", source="git.example.com/a", fence=fence)
    assert cm["data"]["fence"] == "fleet-shard-7@12"
    assert inventory.decode(cm, instance="fleet").fence == fence
    assert "fence" not in inventory.encode("web", REFS, instance="fleet")["data"]
    assert inventory.decode(inventory.encode("web", REFS, instance="fleet"), instance="fleet").fence is None


@pytest.mark.parametrize(
    "fence", ["", "fleet-shard-7", "fleet-shard-7@", "fleet-shard-7@0", "@3", "Shard@1", "x@-1"]
)
def test_an_unreadable_fence_makes_the_inventory_unreadable_never_unfenced(fence: str) -> None:
    cm = inventory.encode("web", REFS, instance="fleet")
    cm["data"]["fence"] = fence
    with pytest.raises(
        inventory.InventoryError, match=r"ConfigMap/fleet-system/fleet-inventory-web: data\.fence"
    ):
        inventory.decode(cm, instance="fleet")


def _carrying(mark: object) -> dict[str, object]:
    return {"metadata": {"name": "one", "annotations": {model.ANNOTATION_CLAIM: mark}}}


def test_the_claim_an_object_carries_round_trips_through_its_annotation() -> None:
    claim = inventory.Claim(
        "https://git.example/fleet.git", "a" * 40, "2026-12-07T20:00:00.000Z", writer="fleet serve on h"
    )
    body = inventory.marked({"metadata": {"name": "one", "annotations": {"x": "y"}}, "data": {}}, claim)
    assert body["metadata"]["annotations"]["x"] == "y"
    assert inventory.claim_of(body, source=claim.source) == claim
    work_tree = inventory.Claim("src", "", "2026-12-07T20:00:00.000Z")
    assert inventory.claim_of(inventory.marked({}, work_tree), source="src") == work_tree
    assert inventory.marked(body, None) is body


@pytest.mark.parametrize(
    "mark",
    ["", "garbage", "not-a-time " + "a" * 40 + " 0123456789", 42, "2026-12-07T20:00:00.000Z abc"],
)
def test_an_unreadable_claim_on_an_object_is_no_claim_never_a_newer_one(mark: object) -> None:
    assert inventory.claim_of(_carrying(mark), source="src") is None


def test_a_claim_of_another_source_on_an_object_is_not_this_sources() -> None:
    theirs = inventory.Claim("other", "b" * 40, "2099-01-01T00:00:00.000Z")
    assert inventory.claim_of(inventory.marked({}, theirs), source="src") is None
    assert inventory.claim_of(None, source="src") is None
    assert inventory.claim_of({"metadata": {}}, source="src") is None


def test_the_newest_of_several_claims_is_the_one_seen_latest_and_only_when_newer_than_ones_own() -> None:
    own = inventory.Claim("src", "a" * 40, "2026-12-07T20:00:00.000Z")
    older = inventory.Claim("src", "0" * 40, "2026-12-07T19:00:00.000Z")
    newer = inventory.Claim("src", "b" * 40, "2026-12-07T21:00:00.000Z")
    newest = inventory.Claim("src", "c" * 40, "2026-12-07T22:00:00.000Z")
    same = inventory.Claim("src", "a" * 40, "2026-12-07T23:00:00.000Z")  # own revision, another writer
    assert inventory.newest([older, None, same], than=own) is None
    assert inventory.newest([newer, older, newest, None], than=own) == newest
    assert inventory.newest([newest, newer], than=own) == newest
    # the cluster's newest claim holds one's own revision: claims of other revisions it superseded are no
    # controller ahead
    assert inventory.newest([newer, same], than=own) is None
    assert inventory.newest([newer, same, newest], than=own) is None
