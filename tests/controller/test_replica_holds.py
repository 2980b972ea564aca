"""Two replicas of one source at the same revision, each with its own rollout (no management cluster): a
bundle this replica's rollout still holds at the older revision on a cluster (its turn not come) is left
as it is there once the other replica has put the cluster at the newer revision, by the watch's repairs and
by rounds alike, and the rollout, when it reaches the cluster, finds it Synced and writes nothing
(docs/reconcile.md, "Replicas of one source: the newer revision wins"). A single controller's held
cluster is still repaired to the revision its rollout holds it at.

The real `fleet.controller.engine.Engine` in-process against an in-process `fleet sim`; the other replica
is played by the test (its revision record, then its writes)."""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from fleet.controller import engine
from fleet.core import drift, inventory
from fleet.core import rollout as ro
from fleet.sim import testing
from tests.support.inprocess import (
    NAMES,
    NS,
    Running,
    clusters_sim,
    other_replica_writes,
    round_of,
    running,
    web_repo,
)
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, send, writes

__all__ = ["clusters_sim"]  # the fixture `sim`

WEB_EXTRA = f"/api/v1/namespaces/{NS}/configmaps/web-extra"


@asynccontextmanager
async def _c2_held(
    run: Running, repo: GitOpsRepo, objects: list[dict[str, Any]], *, write: str = "PATCH"
) -> AsyncIterator[str]:
    """Commit `objects` as bundle web: this replica's rollout (one cluster of two at a time) sends c1 first,
    whose `write` of web's objects waits on the wire, so c2 is held at the first revision meanwhile. Yields
    the new revision once this replica's round of c2 ran at it (holding c2's web at the first); c1 goes on
    at the end."""
    eng, sim = run.engine, run.sim
    first = next(iter(run.status()["clusters"].values()))["revision"]
    await sim.faults("c1", {"method": write, "path": f"/namespaces/{NS}/configmaps/web-", "hold": True})
    repo.bundle("web", objects, namespace=NS, selector={"web": "yes"})
    second = repo.commit("web 2")
    eng.trigger_fetch(reason="test")
    deadline = time.monotonic() + 30
    while not any(r["held"] for r in await sim.fault_rules("c1")):
        assert time.monotonic() < deadline, "c1's apply at the second revision never came"
        await anyio.sleep(0.05)
    c2 = eng.clusters["c2"]
    eng._wake(c2, reason="resync")  # a round of c2 at the second revision (its periodic resync)
    await round_of(eng, "c2", second)
    web = run.status()["clusters"]["c2"]["bundles"]["web"]
    assert (web["state"], web["revision"]) == ("Synced", first), web  # held at the first revision
    try:
        yield second
    finally:
        await sim.clear_faults("c1")


def _skipped(eng: engine.Engine, cluster: str) -> float:
    found = eng.metrics.registry.get_sample_value(
        "fleet_objects_total", {"cluster": cluster, "action": "skipped"}
    )
    return found or 0.0


async def _repairs_skipped(eng: engine.Engine, cluster: str, before: float) -> None:
    """The watch judged the other replica's change as drift of its held objects and left it alone."""
    deadline = time.monotonic() + 30
    while _skipped(eng, cluster) <= before:
        assert time.monotonic() < deadline, f"{cluster}: no drift repair left the change alone"
        await anyio.sleep(0.05)


async def _a_round_leaves_it(run: Running, revision: str) -> dict[str, Any]:
    """A round of c2 (its resync): web Pending, left as it is, saying who is ahead."""
    eng = run.engine
    eng._wake(eng.clusters["c2"], reason="resync")
    await run.until(
        lambda doc: "left as it is" in str(doc["clusters"]["c2"]["bundles"]["web"]["lastError"]),
        "c2's web left as it is",
    )
    await round_of(eng, "c2", revision)
    web: dict[str, Any] = run.status()["clusters"]["c2"]["bundles"]["web"]
    assert web["state"] == "Pending", web
    assert f"already at revision {revision}, written by another writer of this source" in web["lastError"]
    return web


async def _test_a_cluster_another_replica_moved_ahead_is_left_as_it_is_until_this_rollout_reaches_it(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo, request_timeout=30.0) as run:
        eng = run.engine
        objects = [
            configmap("web-config", namespace=NS, version="2"),
            configmap("web-static", namespace=NS),
            configmap("web-extra", namespace=NS),
        ]
        async with _c2_held(run, repo, objects) as second:
            assert eng.desired is not None and eng.claim is not None
            changed: Mapping[str, Any] = next(
                obj
                for ref, obj in drift.desired_objects(eng.desired.targets["c1"], instance="fleet").items()
                if ref.name == "web-config"
            )
            skipped = _skipped(eng, "c2")
            other = inventory.Claim(
                source=eng.claim.source, revision=second, observed_at=inventory.now_rfc3339(), writer="other"
            )
            await other_replica_writes(sim, "c2", other, changed)  # the other replica's rollout reached c2
            mark = (await sim.journal("c2"))[-1]["seq"]
            await _repairs_skipped(eng, "c2", skipped)
            web = await _a_round_leaves_it(run, second)
            assert "(other, revision seen at" in web["lastError"], web
            assert writes(await sim.journal("c2", since=mark)) == []
            assert live_objects(sim, "c2", namespace=NS)["web-config"]["data"] == {"version": "2"}
        # c1 goes on: this replica's rollout reaches c2, finds it at the second revision, writes nothing
        await run.synced_at(second)
        await anyio.sleep(0.3)
        assert writes(await sim.journal("c2", since=mark)) == []
        rollout = eng.rollout_document("web", revision=None)
        assert rollout is not None and rollout["state"] == "Completed", rollout
        assert {c: s for w in rollout["waves"] for c, s in w["clusters"].items()} == {
            "c1": "Done",
            "c2": "Done",
        }


def test_a_cluster_another_replica_moved_ahead_is_left_as_it_is_until_this_rollout_reaches_it(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_a_cluster_another_replica_moved_ahead_is_left_as_it_is_until_this_rollout_reaches_it,
        tmp_path,
        sim,
    )


async def _other_replica_removes(sim: testing.SimHandle, cluster: str, claim: inventory.Claim) -> None:
    """What a replica whose revision only drops web-extra writes: its revision record, then the delete."""
    await other_replica_writes(sim, cluster, claim)
    gone = await anyio.to_thread.run_sync(functools.partial(send, sim, cluster, "DELETE", WEB_EXTRA))
    assert gone.status_code == 200, gone.text


async def _test_an_object_another_replica_pruned_at_this_replicas_revision_is_not_recreated_while_held(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo, request_timeout=30.0) as run:
        eng = run.engine
        objects = [configmap("web-config", namespace=NS, version="1"), configmap("web-static", namespace=NS)]
        async with _c2_held(run, repo, objects, write="DELETE") as second:
            assert eng.claim is not None
            skipped = _skipped(eng, "c2")
            other = inventory.Claim(
                source=eng.claim.source, revision=second, observed_at=inventory.now_rfc3339(), writer="other"
            )
            await _other_replica_removes(sim, "c2", other)  # only its record says who did it
            mark = (await sim.journal("c2"))[-1]["seq"]
            await _repairs_skipped(eng, "c2", skipped)
            await _a_round_leaves_it(run, second)
            assert writes(await sim.journal("c2", since=mark)) == []
            assert "web-extra" not in live_objects(sim, "c2", namespace=NS)
        await run.synced_at(second)
        assert "web-extra" not in live_objects(sim, "c2", namespace=NS)


def test_an_object_another_replica_pruned_at_this_replicas_revision_is_not_recreated_while_held(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_an_object_another_replica_pruned_at_this_replicas_revision_is_not_recreated_while_held,
        tmp_path,
        sim,
    )


async def _test_a_single_controllers_held_cluster_is_still_repaired_to_the_revision_its_rollout_holds(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo, request_timeout=30.0) as run:
        eng = run.engine
        objects = [
            configmap("web-config", namespace=NS, version="2"),
            configmap("web-static", namespace=NS),
            configmap("web-extra", namespace=NS),
        ]
        async with _c2_held(run, repo, objects) as second:
            edit = functools.partial(
                send,
                sim,
                "c2",
                "PATCH",
                f"/api/v1/namespaces/{NS}/configmaps/web-config",
                {"data": {"version": "x"}},
            )
            assert (await anyio.to_thread.run_sync(edit)).status_code == 200
            deadline = time.monotonic() + 30
            while live_objects(sim, "c2", namespace=NS)["web-config"]["data"] != {"version": "1"}:
                assert time.monotonic() < deadline, "the held cluster's drift was never repaired"
                await anyio.sleep(0.05)
            gone = await anyio.to_thread.run_sync(functools.partial(send, sim, "c2", "DELETE", WEB_EXTRA))
            assert gone.status_code == 200
            eng._wake(eng.clusters["c2"], reason="resync")
            deadline = time.monotonic() + 30
            while "web-extra" not in live_objects(sim, "c2", namespace=NS):
                assert time.monotonic() < deadline, "the held cluster's deleted object was never recreated"
                await anyio.sleep(0.05)
            await round_of(eng, "c2", second)
            web = run.status()["clusters"]["c2"]["bundles"]["web"]
            assert web["state"] == "Synced" and web["lastError"] is None, web
        await run.synced_at(second)
        assert live_objects(sim, "c2", namespace=NS)["web-config"]["data"] == {"version": "2"}


def test_a_single_controllers_held_cluster_is_still_repaired_to_the_revision_its_rollout_holds(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_a_single_controllers_held_cluster_is_still_repaired_to_the_revision_its_rollout_holds,
        tmp_path,
        sim,
    )


async def _test_a_cluster_left_to_another_writer_is_written_again_once_this_rollout_is_rolled_back(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo, request_timeout=30.0) as run:
        eng = run.engine
        first = next(iter(run.status()["clusters"].values()))["revision"]
        objects = [
            configmap("web-config", namespace=NS, version="2"),
            configmap("web-static", namespace=NS),
            configmap("web-extra", namespace=NS),
        ]
        async with _c2_held(run, repo, objects) as second:
            assert eng.desired is not None and eng.claim is not None
            changed: Mapping[str, Any] = next(
                obj
                for ref, obj in drift.desired_objects(eng.desired.targets["c1"], instance="fleet").items()
                if ref.name == "web-config"
            )
            other = inventory.Claim(
                source=eng.claim.source, revision=second, observed_at=inventory.now_rfc3339(), writer="other"
            )
            await other_replica_writes(sim, "c2", other, changed)
            await _a_round_leaves_it(run, second)
            # A person rolls this controller's rollout of the second revision back: it never reaches c2,
            # so c2 is not left at that revision "until this rollout reaches it", forever.
            await eng.rollouts.act("web", ro.Action.ROLLBACK, actor="ana", reason="bad")
        await run.until(
            lambda doc: (
                doc["clusters"]["c2"]["bundles"]["web"]["state"] == "Synced"
                and doc["clusters"]["c2"]["bundles"]["web"]["revision"] == first
            ),
            "c2's web written back to the revision the rolled-back rollout holds it at",
            within=30.0,
        )
        assert live_objects(sim, "c2", namespace=NS)["web-config"]["data"] == {"version": "1"}


def test_a_cluster_left_to_another_writer_is_written_again_once_this_rollout_is_rolled_back(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_a_cluster_left_to_another_writer_is_written_again_once_this_rollout_is_rolled_back,
        tmp_path,
        sim,
    )


async def _test_a_restarted_controllers_own_record_is_not_another_writers_and_its_held_cluster_is_repaired(
    tmp_path: Path, sim: testing.SimHandle, refused: bool = False
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo, request_timeout=30.0) as run:
        eng = run.engine
        first = next(iter(run.status()["clusters"].values()))["revision"]
        # web's rollout sends c1 the second revision and waits for a person before c2; base's reaches c2,
        # so c2's revision record holds this controller's claim of the second revision.
        waves = [
            {"name": "canary", "placement": {"clusters": ["c1"]}},
            {"name": "rest", "approval": "before"},
        ]
        objects = [
            configmap("web-config", namespace=NS, version="2"),
            configmap("web-static", namespace=NS),
            configmap("web-extra", namespace=NS),
        ]
        repo.bundle("web", objects, namespace=NS, selector={"web": "yes"}, rollout={"waves": waves})
        repo.bundle(
            "base", [configmap("base-config", namespace="base", v="2")], namespace="base", clusters=NAMES
        )
        second = repo.commit("web 2, base 2")
        eng.trigger_fetch(reason="test")

        def waiting(doc: dict[str, Any]) -> bool:
            c1, c2 = doc["clusters"]["c1"]["bundles"], doc["clusters"]["c2"]["bundles"]
            return (
                c1["web"]["revision"] == second
                and c1["web"]["state"] == "Synced"
                and (c2["web"]["state"], c2["web"]["revision"]) == ("Synced", first)
                and (c2["base"]["state"], c2["base"]["revision"]) == ("Synced", second)
            )

        await run.until(waiting, "c1 at the second revision, c2's web held at the first, its base moved")
        if refused:  # a tip refused as a whole: the second revision stays enforced, the tip is shown
            shutil.rmtree(repo.root / "clusters")
            repo.commit("no cluster file")
            eng.trigger_fetch(reason="test")
            await run.until(lambda doc: bool(doc.get("errors")), "the tip refused")
    async with running(tmp_path, sim, repo, request_timeout=30.0, settled=False) as run:
        eng = run.engine
        await round_of(eng, "c2", second)
        await run.until(lambda doc: "web" in doc["clusters"]["c2"]["bundles"], "c2's status")
        web = run.status()["clusters"]["c2"]["bundles"]["web"]
        assert (web["state"], web["revision"], web["lastError"]) == ("Synced", first, None), web
        edit = functools.partial(
            send,
            sim,
            "c2",
            "PATCH",
            f"/api/v1/namespaces/{NS}/configmaps/web-config",
            {"data": {"version": "x"}},
        )
        assert (await anyio.to_thread.run_sync(edit)).status_code == 200
        deadline = time.monotonic() + 30
        while live_objects(sim, "c2", namespace=NS)["web-config"]["data"] != {"version": "1"}:
            assert time.monotonic() < deadline, "the restarted controller never repaired its held cluster"
            await anyio.sleep(0.05)


def test_a_restarted_controllers_own_record_is_not_another_writers_and_its_held_cluster_is_repaired(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_a_restarted_controllers_own_record_is_not_another_writers_and_its_held_cluster_is_repaired,
        tmp_path,
        sim,
    )


def test_a_controller_restarted_at_a_refused_tip_still_knows_its_own_record_and_repairs_its_held_cluster(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_a_restarted_controllers_own_record_is_not_another_writers_and_its_held_cluster_is_repaired,
        tmp_path,
        sim,
        True,
    )


async def _test_a_cluster_another_replica_moved_ahead_stays_left_when_a_newer_commit_supersedes_this_rollout(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo, request_timeout=30.0) as run:
        eng = run.engine
        objects = [
            configmap("web-config", namespace=NS, version="2"),
            configmap("web-static", namespace=NS),
            configmap("web-extra", namespace=NS),
        ]
        async with _c2_held(run, repo, objects) as second:
            assert eng.desired is not None and eng.claim is not None
            changed: Mapping[str, Any] = next(
                obj
                for ref, obj in drift.desired_objects(eng.desired.targets["c1"], instance="fleet").items()
                if ref.name == "web-config"
            )
            other = inventory.Claim(
                source=eng.claim.source, revision=second, observed_at=inventory.now_rfc3339(), writer="other"
            )
            await other_replica_writes(sim, "c2", other, changed)  # the other replica's rollout reached c2
            mark = (await sim.journal("c2"))[-1]["seq"]
            # A newer commit supersedes this controller's rollout of the second revision: c2, held at the
            # first, is still behind the other replica's second revision, and stays left as it is.
            objects[0] = configmap("web-config", namespace=NS, version="3")
            repo.bundle("web", objects, namespace=NS, selector={"web": "yes"})
            third = repo.commit("web 3")
            eng.trigger_fetch(reason="test")
            deadline = time.monotonic() + 30
            while eng.claim.revision != third:
                assert time.monotonic() < deadline, "the third revision was never taken in"
                await anyio.sleep(0.05)
            eng._wake(eng.clusters["c2"], reason="resync")
            await round_of(eng, "c2", third)
            web = run.status()["clusters"]["c2"]["bundles"]["web"]
            assert web["state"] == "Pending", web
            assert (
                f"already at revision {second}, written by another writer of this source" in web["lastError"]
            )
            assert writes(await sim.journal("c2", since=mark)) == []
            assert live_objects(sim, "c2", namespace=NS)["web-config"]["data"] == {"version": "2"}
        await run.synced_at(third)  # this controller's rollout of the third revision reaches c2
        assert live_objects(sim, "c2", namespace=NS)["web-config"]["data"] == {"version": "3"}


def test_a_cluster_another_replica_moved_ahead_stays_left_when_a_newer_commit_supersedes_this_rollout(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_a_cluster_another_replica_moved_ahead_stays_left_when_a_newer_commit_supersedes_this_rollout,
        tmp_path,
        sim,
    )
