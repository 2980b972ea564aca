"""Lease records and the rules of time around them (fleet.core.leases)."""

from __future__ import annotations

import pytest

from fleet.core import leases

T = leases.Timings()


def test_the_default_timings_are_15s_10s_and_2s_with_5s_between_deadline_and_expiry() -> None:
    assert (T.duration, T.renew_deadline, T.retry, T.margin) == (15.0, 10.0, 2.0, 5.0)


@pytest.mark.parametrize(
    ("duration", "deadline", "retry", "message"),
    [
        (15, 15, 2, "must end at least 1s before the lease duration"),
        (15, 10, 9, "must be well under the renew deadline"),
        (15, 10, 0, "lease retry must be more than 0s"),
        (15.5, 10, 2, "must be whole seconds"),
        (-1, 10, 2, "lease duration must be more than 0s"),
    ],
)
def test_timings_that_would_let_two_replicas_write_are_refused_saying_why(
    duration: float, deadline: float, retry: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        leases.Timings(duration=duration, renew_deadline=deadline, retry=retry)


def test_lease_names_follow_the_instance() -> None:
    assert leases.shard_lease(instance="fleet", shard=7) == "fleet-shard-7"
    assert leases.replica_lease(instance="fleet", replica="web-1-x2x4q") == "fleet-replica-web-1-x2x4q"
    assert leases.coordinator_lease(instance="prod") == "prod-coordinator"
    assert leases.shard_of_lease("fleet-shard-7", instance="fleet") == 7
    assert leases.shard_of_lease("fleet-shard-x", instance="fleet") is None
    assert leases.shard_of_lease("other-shard-7", instance="fleet") is None
    assert leases.replica_of_lease("fleet-replica-a-b", instance="fleet") == "a-b"


@pytest.mark.parametrize("bad", ["", "Upper", "-a", "a-", "a_b", "a" * 41])
def test_a_replica_id_that_is_not_a_short_dns_label_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="replica id must be"):
        leases.check_replica_id(bad)


def test_a_lease_round_trips_through_its_object() -> None:
    rec = leases.Record(
        name="fleet-shard-3",
        holder="a",
        duration=15,
        transitions=4,
        acquired="2026-05-01T10:00:00.000000Z",
        renewed="2026-05-01T10:00:02.000000Z",
        version="812",
        annotations={"fleet.dev/shards": "32"},
    )
    obj = leases.encode(rec, instance="fleet", role=leases.Role.SHARD)
    assert obj["apiVersion"] == "coordination.k8s.io/v1" and obj["kind"] == "Lease"
    assert obj["metadata"]["namespace"] == "fleet-system"
    assert obj["metadata"]["resourceVersion"] == "812"
    assert obj["metadata"]["labels"] == {"fleet.dev/owner": "fleet", "fleet.dev/lease": "shard"}
    assert obj["spec"] == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "leaseTransitions": 4,
        "acquireTime": "2026-05-01T10:00:00.000000Z",
        "renewTime": "2026-05-01T10:00:02.000000Z",
    }
    assert leases.decode(obj) == rec


def test_a_new_lease_has_no_resource_version_so_it_is_created() -> None:
    rec = leases.acquiring(None, name="fleet-shard-0", me="a", wall=0.0, timings=T)
    assert "resourceVersion" not in leases.encode(rec, instance="fleet", role="shard")["metadata"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("held", "spec is not a mapping"),
        ({"holderIdentity": 3}, "holderIdentity is not a string"),
        ({"holderIdentity": "a"}, "leaseDurationSeconds is not a whole number"),
        ({"holderIdentity": "a", "leaseDurationSeconds": 0}, "duration under a second"),
        ({"holderIdentity": "a", "leaseDurationSeconds": "15"}, "leaseDurationSeconds is not a whole number"),
        ({"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": -1}, "leaseTransitions"),
    ],
)
def test_a_lease_that_cannot_be_read_is_an_error_naming_it_never_free(spec: object, message: str) -> None:
    with pytest.raises(leases.LeaseError, match=f"Lease/fleet-system/fleet-shard-1: .*{message}"):
        leases.decode({"metadata": {"name": "fleet-shard-1"}, "spec": spec})


def test_a_lease_without_holder_is_free() -> None:
    rec = leases.decode({"metadata": {"name": "fleet-shard-1", "resourceVersion": "5"}, "spec": {}})
    assert rec.free and rec.transitions == 0 and rec.version == "5"


def test_the_first_holder_has_epoch_1_and_each_new_holder_one_more() -> None:
    first = leases.acquiring(None, name="fleet-shard-0", me="a", wall=100.0, timings=T)
    assert (first.holder, first.transitions, first.duration) == ("a", 1, 15)
    taken = leases.acquiring(first, name="fleet-shard-0", me="b", wall=130.0, timings=T)
    assert (taken.holder, taken.transitions) == ("b", 2)
    renewed = leases.renewing(taken, wall=132.0, timings=T)
    assert (renewed.holder, renewed.transitions, renewed.acquired) == ("b", 2, taken.acquired)
    assert renewed.renewed == "1970-01-01T00:02:12.000000Z"
    released = leases.releasing(renewed, wall=133.0)
    assert (released.holder, released.transitions) == ("", 2)
    again = leases.acquiring(released, name="fleet-shard-0", me="b", wall=134.0, timings=T)
    assert (again.holder, again.transitions) == ("b", 3)


def test_taking_back_a_lease_that_still_names_me_keeps_the_epoch() -> None:
    mine = leases.acquiring(None, name="fleet-shard-0", me="a", wall=0.0, timings=T)
    assert leases.acquiring(mine, name="fleet-shard-0", me="a", wall=5.0, timings=T).transitions == 1


def test_an_epoch_is_raised_above_a_fence_only_upward() -> None:
    rec = leases.Record(name="fleet-shard-0", holder="a", transitions=2, version="9")
    assert leases.raising(rec, above=7, wall=0.0, timings=T).transitions == 8
    assert leases.raising(rec, above=1, wall=0.0, timings=T).transitions == 2


def test_a_lease_is_free_for_others_a_duration_after_they_first_saw_its_version() -> None:
    rec = leases.Record(name="x", holder="a", duration=15, version="1")
    seen = leases.observe(None, rec, now=1000.0)
    # Its renewTime (the holder's clock, an hour off) plays no part.
    skewed = leases.Record(
        name="x", holder="a", duration=15, version="1", renewed="2000-01-01T00:00:00.000000Z"
    )
    seen = leases.observe(seen, skewed, now=1010.0)
    assert leases.free_at(seen) == 1015.0
    assert leases.live(seen, now=1014.9) and not leases.live(seen, now=1015.0)
    # A new version (a renewal) starts the count again from when it is seen.
    renewed = leases.observe(seen, leases.Record(name="x", holder="a", duration=15, version="2"), now=1012.0)
    assert leases.free_at(renewed) == 1027.0


def test_a_released_or_absent_lease_is_free_at_once() -> None:
    released = leases.Record(name="x", holder="", duration=1, version="3")
    assert leases.free_at(leases.observe(None, released, now=50.0)) == 50.0
    assert leases.free_at(leases.observe(None, None, now=50.0)) == 50.0


def test_the_holder_stops_writing_a_margin_before_anyone_else_may_take_the_lease() -> None:
    held = leases.Held(name="x", epoch=1, version="1", sent=100.0)
    assert leases.may_write(held, now=109.99, timings=T)
    assert not leases.may_write(held, now=110.0, timings=T)
    # The others saw that version after it was sent, so not before 100: free from 115 at the earliest.
    assert (
        leases.free_at(leases.Seen(record=leases.Record(name="x", holder="a", version="1"), since=100.0))
        == 115.0
    )
    assert not leases.may_write(None, now=0.0, timings=T)
