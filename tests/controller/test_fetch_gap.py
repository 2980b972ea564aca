"""The minimum gap between fetches (`fetch_min_gap`, docs/operations.md "Webhook"): a flood of webhooks
fetches at most once per gap, and a push announced during the flood is still fetched.

The real `fleet.controller.engine.Engine` runs in-process, following a real git repository (pygit2),
against an in-process `fleet sim` over HTTP; fetches are counted in its `fleet_fetches_total` metric.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from fleet.controller import engine
from fleet.sim import testing
from tests.support.inprocess import engine_running
from tests.support.reconcile import GitOpsRepo, configmap

GAP = 1.0
FLOOD = 3.0  # seconds of webhooks
EVERY = 0.02  # one webhook this often


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["c1"]) as handle:
        yield handle


def _fetches(eng: engine.Engine) -> float:
    registry = eng.metrics.registry
    return sum(
        registry.get_sample_value("fleet_fetches_total", {"result": r}) or 0.0
        for r in ("new", "unchanged", "refused", "error")
    )


async def _until(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _test_a_flood_of_webhooks(tmp_path: Path, sim: testing.SimHandle) -> None:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("c1")
    repo.bundle("web", [configmap("web-config", namespace="web")], namespace="web", clusters=["c1"])
    first = repo.commit("start")
    async with engine_running(tmp_path, sim, repo, fetch_min_gap=GAP) as eng:
        await _until(lambda: eng.revision.sha == first, "the first revision")
        await anyio.sleep(GAP)  # the first fetch's gap is over
        before = _fetches(eng)
        started = time.monotonic()
        pushed = None
        while time.monotonic() - started < FLOOD:
            if pushed is None and time.monotonic() - started > FLOOD / 2:
                repo.bundle(
                    "web",
                    [configmap("web-config", namespace="web", version="2")],
                    namespace="web",
                    clusters=["c1"],
                )
                pushed = repo.commit("web 2")
            eng.trigger_fetch(reason="webhook")
            await anyio.sleep(EVERY)
        flooded = time.monotonic() - started
        # The push made during the flood is fetched, and nothing more than the gap allows.
        await _until(lambda: eng.revision.sha == pushed, "the revision pushed during the flood")
        await anyio.sleep(2 * GAP)  # the trailing fetch, if any
        fetched = _fetches(eng) - before
        assert fetched <= math.ceil(flooded / GAP) + 1, (fetched, flooded)
        assert fetched >= 2  # the flood fetched, and again after the push


def test_a_flood_of_webhooks_fetches_at_most_once_per_minimum_gap_and_still_fetches_the_last_push(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(_test_a_flood_of_webhooks, tmp_path, sim)
