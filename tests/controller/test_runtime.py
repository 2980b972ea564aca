"""The controller's decisions about one cluster, in-process (`fleet.controller.runtime`): no engine, no
server, no cluster; each takes a record and a round's result and gives the new record."""

from __future__ import annotations

from fleet.cluster import reconcile
from fleet.controller import rollouts, runtime
from fleet.core import model

S = model.State
NOW = "2026-12-07T10:00:00Z"


def result(state: model.State, message: str = "", **bundles: model.State) -> reconcile.ClusterResult:
    return reconcile.ClusterResult(
        "eu-1",
        state,
        bundles={
            b: reconcile.BundleResult(b, s, message="bad" if s is S.FAILED else "", hash=f"h-{b}")
            for b, s in bundles.items()
        },
        message=message,
    )


def record(
    rt: runtime.ClusterRuntime,
    res: reconcile.ClusterResult,
    *,
    holds: dict[str, rollouts.Hold] | None = None,
    protected: dict[str, str] | None = None,
    signature: dict[str, str] | None = None,
) -> None:
    runtime.record_round(
        rt,
        res,
        signature=signature or {"web": "h-web"},
        revision="r2",
        trace_id="t",
        protected=protected or {},
        holds=holds or {},
        now=NOW,
        waiting_reason=lambda b: f"waiting for its turn ({b})",
        rolled_back=lambda b: False,
    )


def fresh() -> runtime.ClusterRuntime:
    return runtime.ClusterRuntime(name="eu-1", cluster=None)


def test_a_synced_round_at_the_newest_revision_makes_the_cluster_hold_it_and_resets_its_failures() -> None:
    rt = fresh()
    rt.failures = 3
    record(rt, result(S.SYNCED, web=S.SYNCED, api=S.SYNCED))
    assert (rt.state, rt.revision, rt.failures, rt.last_error) == (S.SYNCED, "r2", 0, None)
    assert rt.bundles["web"].revision == "r2" and rt.bundles["web"].since == NOW
    assert rt.signature == {"web": "h-web"} and rt.attempted and rt.last_sync_at == NOW


def test_the_worst_bundle_decides_the_cluster_state_and_its_error_is_the_clusters() -> None:
    rt = fresh()
    record(rt, result(S.FAILED, web=S.SYNCED, api=S.FAILED))
    assert rt.state is S.FAILED and rt.last_error == "bad" and rt.failures == 1
    assert rt.revision is None  # not all of it is Synced: it holds no revision as a whole


def test_an_unreachable_round_counts_a_failure_and_hands_the_cluster_nothing() -> None:
    rt = fresh()
    rt.signature = {"web": "old"}
    record(rt, result(S.UNREACHABLE, "connection refused"))
    assert (rt.state, rt.failures, rt.last_error, rt.signature) == (
        S.UNREACHABLE,
        1,
        "connection refused",
        {"web": "old"},
    )


def test_a_bundle_left_as_it_is_until_its_rollout_turn_is_pending_at_what_it_held() -> None:
    rt = fresh()
    rt.bundles["web"] = runtime.BundleStatus(S.SYNCED, revision="r1", objects=4, hash="h1", since="earlier")
    record(rt, result(S.SYNCED, web=S.SUSPENDED, api=S.SYNCED), holds={"web": rollouts.LEAVE})
    web = rt.bundles["web"]
    assert (web.state, web.revision, web.objects, web.since) == (S.PENDING, "r1", 4, "earlier")
    assert web.last_error == "waiting for its turn (web)"
    assert rt.waiting and rt.revision is None  # waiting only for its turn; it does not hold r2 as a whole


def test_a_broken_bundle_keeps_its_last_good_state_and_turns_failed_with_why() -> None:
    rt = fresh()
    rt.bundles["db"] = runtime.BundleStatus(S.SYNCED, revision="r1", objects=2, hash="h1")
    record(rt, result(S.SYNCED, web=S.SYNCED), protected={"db": "bundle db: broken at this revision"})
    db = rt.bundles["db"]
    assert (db.state, db.revision, db.objects, db.last_error) == (
        S.FAILED,
        "r1",
        2,
        "bundle db: broken at this revision",
    )
    assert rt.state is S.FAILED


def test_the_cluster_state_rollup_leaves_suspended_bundles_out_and_obeys_the_rounds_own_verdict() -> None:
    assert runtime.cluster_state(S.SYNCED, "", [S.SUSPENDED, S.SYNCED]) is S.SYNCED
    assert runtime.cluster_state(S.SYNCED, "", [S.PROGRESSING, S.PENDING]) is S.PROGRESSING
    assert runtime.cluster_state(S.PAUSED, "", [S.FAILED]) is S.PAUSED
    assert runtime.cluster_state(S.UNREACHABLE, "gone", [S.SYNCED]) is S.UNREACHABLE
    assert runtime.cluster_state(S.FAILED, "namespace gone", [S.SYNCED]) is S.FAILED
    assert runtime.cluster_state(S.FAILED, "", []) is S.SYNCED  # no message and no bundle: nothing failed


def test_a_worker_waits_for_nothing_when_a_round_is_pending() -> None:
    rt = fresh()
    rt.pending = runtime.Request(reasons={"revision"})
    assert runtime.idle_delay(rt, retry_base=2, retry_cap=120, recheck_interval=2, resync_interval=300) == 0.0


def test_a_failing_cluster_backs_off_from_twice_the_base_doubling_up_to_the_cap() -> None:
    rt = fresh()
    rt.state = S.FAILED
    waits = []
    for failures in (1, 2, 3, 10):
        rt.failures = failures
        waits.append(
            runtime.idle_delay(
                rt, retry_base=2, retry_cap=120, recheck_interval=2, resync_interval=300, rng=lambda: 0.999999
            )
        )
    assert [round(w) for w in waits] == [4, 8, 16, 120]
    rt.failures = 1
    low = runtime.idle_delay(
        rt, retry_base=2, retry_cap=120, recheck_interval=2, resync_interval=300, rng=lambda: 0.0
    )
    assert low == 2.0  # jittered down to half, never below


def test_a_progressing_cluster_is_rechecked_soon_and_a_settled_one_resynced_later() -> None:
    rt = fresh()
    rt.state, rt.attempted = S.PROGRESSING, True
    mid = lambda: 0.5  # noqa: E731  (no jitter: the middle of the spread)
    assert (
        runtime.idle_delay(rt, retry_base=2, retry_cap=120, recheck_interval=2, resync_interval=300, rng=mid)
        == 2
    )
    rt.waiting = True  # only waiting for its rollout's turn: nothing to re-check
    assert (
        runtime.idle_delay(rt, retry_base=2, retry_cap=120, recheck_interval=2, resync_interval=300, rng=mid)
        == 300
    )
    rt.state, rt.waiting = S.SYNCED, False
    assert (
        runtime.idle_delay(rt, retry_base=2, retry_cap=120, recheck_interval=2, resync_interval=300, rng=mid)
        == 300
    )


def test_a_revision_changes_a_cluster_when_a_hash_differs_or_a_bundle_goes_but_not_for_a_bundle_left_alone() -> (
    None
):
    rt = fresh()
    rt.signature = {"web": "h1", "api": "h2"}
    assert not runtime.changed(rt, {"web": "h1", "api": "h2"})
    assert runtime.changed(rt, {"web": "h1b", "api": "h2"})
    assert runtime.changed(rt, {"web": "h1"})  # api is no longer placed here
    assert not runtime.changed(rt, {"web": "left", "api": "h2"})  # web waits for its rollout's turn


def test_a_revision_that_changes_nothing_here_moves_what_is_synced_at_the_newest_render_to_it() -> None:
    rt = fresh()
    rt.state, rt.revision = S.SYNCED, "r1"
    rt.bundles["web"] = runtime.BundleStatus(S.SYNCED, revision="r1", since="earlier")
    rt.bundles["api"] = runtime.BundleStatus(S.PROGRESSING, revision="r0")
    runtime.hold_newest(rt, sha="r2", holds={}, now=NOW)
    assert (rt.revision, rt.bundles["web"].revision, rt.bundles["web"].since) == ("r2", "r2", NOW)
    assert rt.bundles["api"].revision == "r0"
    runtime.hold_newest(rt, sha="r3", holds={"web": rollouts.Hold("revision", "r2")}, now=NOW)
    assert rt.revision == "r2" and rt.bundles["web"].revision == "r2"  # web is held back by its rollout


def test_a_failed_round_waiting_for_its_retry_says_when_in_the_status_and_a_resync_says_nothing() -> None:
    rt = fresh()
    record(rt, result(S.SYNCED, web=S.FAILED))
    assert rt.state is S.FAILED and rt.failures == 1
    ten = 1_796_637_600.0  # 2026-12-07T10:00:00Z
    runtime.waits(rt, delay=3.2, reason=runtime.idle_reason(rt), now=ten + 0.5)
    assert rt.document()["lastError"] == "retrying at 2026-12-07T10:00:04Z (failure 1 in a row): bad"
    assert rt.document()["bundles"]["web"]["lastError"] == "bad"
    record(rt, result(S.SYNCED, web=S.SYNCED))
    runtime.waits(rt, delay=300, reason=runtime.idle_reason(rt), now=ten + 10)
    assert rt.retry_at is None and rt.document()["lastError"] is None
