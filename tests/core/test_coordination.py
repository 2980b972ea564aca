"""One replica's decisions over the leases it sees (fleet.core.coordination), tick by tick."""

from __future__ import annotations

from fleet.core import coordination as co
from fleet.core import leases

CFG = co.Config(instance="fleet", me="a", shards=4)
T = CFG.timings


def rec(name: str, holder: str, version: str, *, transitions: int = 1, **ann: str) -> leases.Record:
    return leases.Record(
        name=name, holder=holder, duration=15, transitions=transitions, version=version, annotations=ann
    )


def replica(name: str, version: str, *, shards: int = 4) -> leases.Record:
    return rec(
        f"fleet-replica-{name}",
        name,
        version,
        **{"fleet.dev/shards": str(shards), "fleet.dev/load-factor": "1.25"},
    )


def registered(at: float = 0.0, others: dict[str, leases.Record] | None = None) -> co.State:
    """A replica that read `others` and then wrote its replica lease at `at`."""
    state = co.observe(CFG, co.State(), dict(others or {}), now=at)
    mine = leases.acquiring(
        None, name=CFG.replica_lease, me="a", wall=at, timings=T, annotations=CFG.announcement
    )
    return co.wrote(CFG, state, leases.Record(**{**mine.__dict__, "version": "10"}), sent=at, now=at)


def holding_all(at: float = 2.0) -> co.State:
    state = registered()
    state = co.wrote(CFG, state, rec(CFG.replica_lease, "a", "11", **CFG.announcement), sent=at, now=at)
    for shard in range(4):
        name = CFG.shard_lease(shard)
        state = co.wrote(CFG, state, rec(name, "a", f"2{shard}"), sent=at, now=at)
    return state


def test_a_replica_that_has_read_nothing_takes_nothing_but_its_own_registration() -> None:
    d = co.decide(CFG, co.State(), now=0.0)
    assert d.acquire == ("fleet-replica-a",)
    assert d.waiting and "not registered" in d.waiting


def test_a_new_replica_waits_a_retry_period_before_taking_shards_so_the_others_see_it_first() -> None:
    state = registered(at=0.0)
    early = co.decide(CFG, state, now=1.0)
    assert early.acquire == ("fleet-coordinator",)  # taken by any live replica that finds it free
    assert early.waiting and "less than a retry period" in early.waiting
    assert early.wake_at == 2.0
    state = co.observe(CFG, state, {CFG.replica_lease: state.seen[CFG.replica_lease].record}, now=2.0)  # type: ignore[dict-item]
    d = co.decide(CFG, state, now=2.0)
    assert set(d.acquire) == {f"fleet-shard-{i}" for i in range(4)} | {"fleet-coordinator"}
    assert d.writable == frozenset() and d.waiting is None


def test_a_holder_writes_until_its_renew_deadline_and_renews_every_retry_period() -> None:
    state = holding_all(at=2.0)
    d = co.decide(CFG, state, now=3.0)
    assert d.writable == frozenset(range(4))
    assert d.renew == ()  # written at 2: not due yet
    d = co.decide(CFG, state, now=4.0)
    assert set(d.renew) == {"fleet-replica-a", *(f"fleet-shard-{i}" for i in range(4))}
    assert co.decide(CFG, state, now=11.99).writable == frozenset(range(4))
    assert co.decide(CFG, state, now=12.0).writable == frozenset()


def test_it_wakes_at_its_writing_deadline_at_the_latest() -> None:
    state = holding_all(at=2.0)
    assert co.decide(CFG, state, now=11.0).wake_at == 12.0
    assert co.decide(CFG, state, now=3.0).wake_at == 5.0  # the retry period comes first


def test_a_lease_someone_else_wrote_is_lost_and_never_written_under() -> None:
    state = holding_all(at=2.0)
    records = {n: h.record for n, h in state.seen.items() if h.record is not None}
    records["fleet-shard-1"] = rec("fleet-shard-1", "b", "99", transitions=2)
    state = co.observe(CFG, state, records, now=3.0)  # type: ignore[arg-type]
    assert "fleet-shard-1" not in state.held
    assert 1 not in co.decide(CFG, state, now=3.0).writable


def test_an_answer_it_never_got_is_adopted_without_extending_its_deadline() -> None:
    state = holding_all(at=2.0)
    records = {n: h.record for n, h in state.seen.items() if h.record is not None}
    records["fleet-shard-2"] = rec("fleet-shard-2", "a", "50")  # its renewal landed; the answer was lost
    state = co.observe(CFG, state, records, now=5.0)  # type: ignore[arg-type]
    assert state.held["fleet-shard-2"].version == "50"
    assert state.held["fleet-shard-2"].sent == 2.0
    assert 2 not in co.decide(CFG, state, now=12.0).writable


def test_a_conflict_that_was_its_own_lost_write_is_adopted_at_its_epoch_without_extending_its_deadline() -> (
    None
):
    state = holding_all(at=2.0)
    held = state.held["fleet-shard-2"]
    sent = leases.renewing(rec("fleet-shard-2", "a", held.version), wall=4.0, timings=T)
    landed = rec("fleet-shard-2", "a", "51")  # a renewal of its own landed; its answer was lost
    assert co.own_write(CFG, held, sent, landed)
    state = co.adopted(CFG, state, landed, now=4.5)
    assert state.held["fleet-shard-2"] == leases.Held(name="fleet-shard-2", epoch=1, version="51", sent=2.0)
    assert 2 in co.decide(CFG, state, now=11.9).writable
    assert 2 not in co.decide(CFG, state, now=12.0).writable


def test_a_conflict_with_another_holder_or_another_epoch_is_not_its_own_write() -> None:
    held = holding_all(at=2.0).held["fleet-shard-2"]
    sent = leases.renewing(rec("fleet-shard-2", "a", held.version), wall=4.0, timings=T)
    assert not co.own_write(CFG, held, sent, rec("fleet-shard-2", "b", "51", transitions=2))
    assert not co.own_write(CFG, held, sent, rec("fleet-shard-2", "a", "51", transitions=3))
    assert not co.own_write(CFG, held, sent, None)
    lifted = leases.raising(rec("fleet-shard-2", "a", held.version), above=6, wall=4.0, timings=T)
    assert co.own_write(CFG, held, lifted, rec("fleet-shard-2", "a", "51", transitions=7))


def test_a_joining_replica_gets_its_share_and_the_holder_releases_it_without_writing_to_it() -> None:
    state = holding_all(at=2.0)
    records = {n: h.record for n, h in state.seen.items() if h.record is not None}
    records["fleet-replica-b"] = replica("b", "60")
    state = co.observe(CFG, state, records, now=3.0)  # type: ignore[arg-type]
    d = co.decide(CFG, state, now=3.0)
    assert d.live == ("a", "b")
    gives = {i for i in range(4) if d.assignment.owner[i] == "b"}
    assert len(gives) == 2
    assert set(d.release) == {f"fleet-shard-{i}" for i in gives}
    assert d.writable == frozenset(range(4)) - gives


def test_a_dead_holders_shard_is_taken_a_lease_duration_after_its_last_renewal_was_seen() -> None:
    records = {"fleet-shard-0": rec("fleet-shard-0", "b", "5"), "fleet-replica-b": replica("b", "4")}
    state = registered(at=0.0, others=records)
    assert co.decide(CFG, state, now=2.0).live == ("a", "b")
    # b's leases are never renewed again: a sees the same versions until they expire.
    again = {**records, CFG.replica_lease: state.seen[CFG.replica_lease].record}
    state = co.observe(CFG, state, again, now=14.0)  # type: ignore[arg-type]
    state = co.wrote(CFG, state, rec(CFG.replica_lease, "a", "11", **CFG.announcement), sent=14.0, now=14.0)
    d = co.decide(CFG, state, now=14.0)
    assert "fleet-shard-0" not in d.acquire and d.wake_at == 15.0
    d = co.decide(CFG, state, now=15.0)
    assert d.live == ("a",) and "fleet-shard-0" in d.acquire


def test_draining_stops_every_write_and_releases_the_replica_lease_last() -> None:
    state = holding_all(at=2.0)
    state = co.wrote(CFG, state, rec("fleet-coordinator", "a", "70"), sent=2.0, now=2.0)
    d = co.decide(CFG, co.draining(state), now=3.0)
    assert d.writable == frozenset() and not d.coordinating
    assert d.release[-1] == "fleet-replica-a"
    assert set(d.release[:-1]) == {*(f"fleet-shard-{i}" for i in range(4)), "fleet-coordinator"}
    assert d.acquire == () and d.renew == ()


def test_letting_go_of_a_lease_ends_writing_under_it_before_the_release_is_sent() -> None:
    state = co.letting_go(CFG, holding_all(at=2.0), "fleet-shard-3")
    assert co.decide(CFG, state, now=3.0).writable == frozenset({0, 1, 2})


def test_nothing_is_taken_while_a_live_replica_announces_another_shard_count() -> None:
    state = registered(at=0.0, others={"fleet-replica-b": replica("b", "4", shards=64)})
    state = co.observe(CFG, state, {**{n: s.record for n, s in state.seen.items()}}, now=2.0)  # type: ignore[misc]
    d = co.decide(CFG, state, now=2.0)
    assert d.acquire == ()
    assert d.waiting and "replicas b announce other settings than --shards 4" in d.waiting


def test_a_replica_past_its_own_registration_deadline_is_not_live_and_gives_its_shards_up() -> None:
    state = holding_all(at=2.0)
    for shard in range(4):  # the shards were renewed; its replica lease (written at 2) was not
        state = co.wrote(CFG, state, rec(CFG.shard_lease(shard), "a", f"3{shard}"), sent=9.0, now=9.0)
    d = co.decide(CFG, state, now=12.0)
    assert "a" not in d.live
    assert set(d.release) == {f"fleet-shard-{i}" for i in range(4)}
    assert d.writable == frozenset()


def test_the_coordinator_deletes_leases_of_replicas_dead_for_ten_lease_durations() -> None:
    records = {"fleet-replica-old": replica("old", "3")}
    state = registered(at=0.0, others=records)
    state = co.wrote(CFG, state, rec("fleet-coordinator", "a", "70"), sent=164.0, now=164.0)
    state = co.wrote(CFG, state, rec(CFG.replica_lease, "a", "71", **CFG.announcement), sent=164.0, now=164.0)
    assert co.decide(CFG, state, now=164.0).forget == ()
    assert co.decide(CFG, state, now=165.0).forget == ("fleet-replica-old",)
