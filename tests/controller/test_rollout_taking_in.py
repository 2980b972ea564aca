"""A new revision taken in while rounds run (docs/rollouts.md): the engine holds the revision's render
before its rollouts have decided anything about it, so a round in between never sends a cluster that
render; and a round begun before a new rollout started is no word on that rollout when it ends.

The Conductor (fleet.controller.rollouts) alone, in-process over its SQLite store; then the real
`fleet.controller.engine.Engine` in-process against an in-process sim over HTTP, following a real git
repository (pygit2), with the round run at the point of the race: where the engine yields while it takes
the revision in (recording it as the mirror's last good revision), or where a round ends (telling the
rollouts what it saw). The sim's request journal shows what fleet wrote where.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.clients import kube, statedb
from fleet.controller import engine, rollouts, runtime
from fleet.controller.metrics import Metrics
from fleet.core import model
from fleet.core import rollout as ro
from fleet.sim import testing
from tests.support import placement_builders as pb
from tests.support.inprocess import engine_running
from tests.support.reconcile import GitOpsRepo, configmap

OLD, NEW = "a" * 40, "b" * 40


def conductor(tmp: Path) -> rollouts.Conductor:
    async def save(write: Any) -> None:
        await anyio.to_thread.run_sync(write)

    return rollouts.Conductor(
        store=statedb.StateStore(tmp / "state.db"), metrics=Metrics(), wake=lambda n, _ctx: None, save=save
    )


async def begin(c: rollouts.Conductor, revision: str, hashes: dict[str, str]) -> None:
    spec = model.RolloutSpec(
        waves=(model.WaveSpec(name="all", max_concurrency=model.Count(100, percent=True)),)
    )
    bundle = model.Bundle(**{**pb.bundle("web").__dict__, "rollout": spec})
    await c.begin(
        revision=revision,
        author=None,
        repo=pb.repo([pb.cluster(n) for n in hashes], [bundle], revision=revision),
        placed={"web": hashes},
        waves={"web": ro.Membership(waves=(("all", tuple(sorted(hashes))),), errors={})},
        held=lambda cluster, bundle: (None, None),
        paused=(),
        context=None,
    )


def test_a_revision_the_rollouts_have_not_taken_in_is_held_as_the_newest_they_have(tmp_path: Path) -> None:
    async def main() -> None:
        c = conductor(tmp_path)
        assert c.hold("web", "c1", revision=OLD) == rollouts.LEAVE  # they have taken in nothing yet
        await begin(c, OLD, {"c1": "h1"})
        assert c.hold("web", "c1", revision=OLD) == rollouts.NEWEST
        await c.observed(
            "c1", {"web": rollouts.Observed(state=model.State.SYNCED)}, holds={"web": rollouts.NEWEST}
        )
        assert c.latest["web"].phase is ro.Phase.COMPLETED
        # The engine holds NEW; its rollouts do not yet: c1 keeps OLD, whatever NEW renders.
        assert c.hold("web", "c1", revision=NEW) == rollouts.Hold("revision", OLD)
        await begin(c, NEW, {"c1": "h2"})
        assert c.hold("web", "c1", revision=NEW) == rollouts.NEWEST

    anyio.run(main)


def test_a_round_that_handed_the_older_render_is_no_word_on_the_newer_rollout(tmp_path: Path) -> None:
    async def main() -> None:
        c = conductor(tmp_path)
        await begin(c, OLD, {"c1": "h1"})
        synced = {"web": rollouts.Observed(state=model.State.SYNCED)}
        await c.observed("c1", synced, holds={"web": rollouts.NEWEST}, handed={"web": "h1"})
        assert c.latest["web"].phase is ro.Phase.COMPLETED
        # A round that began at OLD (handing c1 h1) ends after NEW's rollout sent c1 h2.
        await begin(c, NEW, {"c1": "h2"})
        await c.observed("c1", synced, holds={"web": rollouts.NEWEST}, handed={"web": "h1"})
        assert c.latest["web"].members["c1"].phase is ro.ClusterPhase.PROGRESSING
        await c.observed("c1", synced, holds={"web": rollouts.NEWEST}, handed={"web": "h2"})
        assert c.latest["web"].phase is ro.Phase.COMPLETED

    anyio.run(main)


NAMES = ["canary", "rest"]
WAVES = {
    "waves": [
        {"name": "canary", "placement": {"clusters": ["canary"]}, "maxConcurrency": 1},
        {"name": "rest", "maxConcurrency": 1},
    ],
    "progressDeadline": "30s",
}


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=NAMES) as handle:
        yield handle


def web(repo: GitOpsRepo, version: str) -> None:
    repo.bundle(
        "web", [configmap("web-config", namespace="web", version=version)], namespace="web", selector={},
        rollout=WAVES,
    )  # fmt: skip


async def until(check: Any, what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def phase(eng: engine.Engine, sha: str) -> ro.Phase | None:
    r = eng.rollouts.latest.get("web")
    return r.phase if r is not None and r.revision == sha else None


@asynccontextmanager
async def first_rolled_out(
    tmp_path: Path, sim: testing.SimHandle
) -> AsyncIterator[tuple[engine.Engine, GitOpsRepo]]:
    """The engine in-process, once the first revision's rollout completed and both clusters are Synced;
    its repository polled only when a test asks (`trigger_fetch`)."""
    repo = GitOpsRepo(tmp_path / "repo")
    for name in NAMES:
        repo.cluster(name)
    web(repo, "1")
    first = repo.commit("first")
    kube_settings = kube.Settings(request_timeout=5.0, retry_budget=5.0, backoff_base=0.05)
    async with engine_running(tmp_path, sim, repo, kube_settings=kube_settings, recheck_interval=0.2) as eng:
        await until(lambda: phase(eng, first) is ro.Phase.COMPLETED, "the first rollout completed")
        synced = (model.State.SYNCED, model.State.SYNCED)
        await until(lambda: tuple(eng.clusters[n].state for n in NAMES) == synced, "both clusters Synced")
        yield eng, repo


async def refused_by_the_canary(sim: testing.SimHandle, repo: GitOpsRepo) -> str:
    """A second revision the canary refuses (422): its rollout halts at once, the rest wave never starts."""
    await sim.faults("canary", {"status": 422, "method": "PATCH", "path": "configmaps/web-config$"})
    web(repo, "2")
    return repo.commit("second, refused by the canary")


async def halted(eng: engine.Engine, sim: testing.SimHandle, sha: str, *, mark: int) -> ro.Rollout:
    """The rollout of `sha` once it ended, and that nothing was written to the rest wave since `mark`."""
    await until(lambda: phase(eng, sha) in (ro.Phase.HALTED, ro.Phase.COMPLETED), "the second rollout ended")
    await anyio.sleep(0.5)  # anything still sent arrives in the journal
    written = [e for e in await sim.journal("rest", since=mark) if e["mutated"]]
    assert written == [], [f"{e['method']} {e['path']}" for e in written]
    r = eng.rollouts.latest["web"]
    assert r.phase is ro.Phase.HALTED, r.reason
    assert r.members["canary"].phase is ro.ClusterPhase.FAILED
    assert r.members["rest"].phase is ro.ClusterPhase.PENDING  # its turn never came: not Done, not written
    return r


async def _test_a_round_while_a_revision_is_taken_in_does_not_send_a_later_wave_that_revision(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    async with first_rolled_out(tmp_path, sim) as (eng, repo):
        second = ""
        in_between: list[str] = []
        keep = eng.source.keep

        async def keep_then_a_round(follow: Any, sha: str) -> None:
            await keep(follow, sha)
            if sha == second:  # the engine holds the second revision; its rollouts do not yet
                assert eng.desired is not None and eng.desired.repo.revision == second
                in_between.append("rest")
                await eng._round(eng.clusters["rest"], runtime.Request(reasons={"recheck"}))

        eng.source.keep = keep_then_a_round  # type: ignore[method-assign]
        mark = (await sim.journal("rest"))[-1]["seq"]
        second = await refused_by_the_canary(sim, repo)
        eng.trigger_fetch(reason="test")
        await halted(eng, sim, second, mark=mark)
        assert in_between, "no round ran while the revision was taken in"


async def _test_a_canary_round_begun_before_a_revision_is_no_word_on_its_rollout(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    async with first_rolled_out(tmp_path, sim) as (eng, repo):
        mark = (await sim.journal("rest"))[-1]["seq"]
        second = await refused_by_the_canary(sim, repo)
        told = eng.rollouts.observed
        late: list[str] = []

        async def told_after_the_revision(cluster: str, results: Any, **kw: Any) -> None:
            if cluster == "canary" and not late:  # the round below, begun at the first revision
                late.append(cluster)
                eng.trigger_fetch(reason="test")
                await until(lambda: phase(eng, second) is not None, "the second rollout started")
            await told(cluster, results, **kw)

        eng.rollouts.observed = told_after_the_revision  # type: ignore[method-assign]
        eng._wake(eng.clusters["canary"], reason="resync")  # Synced at the first revision: writes nothing
        await halted(eng, sim, second, mark=mark)
        assert late, "no canary round ended after the revision was taken in"


@pytest.mark.slow  # seconds: two rollouts end to end in-process
def test_a_round_while_a_revision_is_taken_in_does_not_send_a_later_wave_that_revision(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_a_round_while_a_revision_is_taken_in_does_not_send_a_later_wave_that_revision, tmp_path, sim
    )


@pytest.mark.slow  # seconds: two rollouts end to end in-process
def test_a_canary_round_begun_before_a_revision_is_no_word_on_its_rollout(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(_test_a_canary_round_begun_before_a_revision_is_no_word_on_its_rollout, tmp_path, sim)
