"""A retried failure in the status document (docs/operations.md, "Status"): the cluster is Failed (what
its last round met) and its `lastError` says it is being retried and when the next attempt is, as its
bundle's rollout lists it under the wave's `retrying` (docs/rollouts.md, "Which failures are retried").

The real `fleet.controller.engine.Engine` runs in-process against an in-process `fleet sim` over HTTP,
following a real git repository (pygit2); the sim answers the bundle's apply 503 until the test clears it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.clients import kube
from fleet.controller import engine
from fleet.sim import testing
from tests.support.inprocess import engine_running
from tests.support.reconcile import GitOpsRepo, configmap

ROLLOUT = {"waves": [{"name": "all"}], "progressDeadline": "5m"}


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["c1"]) as handle:
        yield handle


def _web(repo: GitOpsRepo, version: str) -> None:
    repo.bundle(
        "web",
        [configmap("web-config", namespace="web", version=version)],
        namespace="web",
        clusters=["c1"],
        rollout=ROLLOUT,
    )


async def _until(
    eng: engine.Engine, check: Callable[[dict[str, Any]], bool], what: str, within: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    doc = eng.status_document()
    while time.monotonic() < deadline:
        doc = eng.status_document()
        if check(doc):
            return doc
        await anyio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: {doc['clusters']} {doc.get('rollouts')}")


def _retrying(doc: dict[str, Any], sha: str) -> str | None:
    """The rollout's last error of c1 under its wave's `retrying`, while the rollout of `sha` retries it."""
    r = (doc.get("rollouts") or {}).get("web")
    if r is None or r["revision"] != sha:
        return None
    return (r["waves"][0].get("retrying") or {}).get("c1")


async def _test_a_retried_failure(tmp_path: Path, sim: testing.SimHandle) -> None:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("c1")
    _web(repo, "1")
    first = repo.commit("start")
    kube_settings = kube.Settings(request_timeout=5.0, retry_budget=0.3, backoff_base=0.05)
    async with engine_running(
        tmp_path, sim, repo, kube_settings=kube_settings, retry_base=1.0, retry_cap=4.0
    ) as eng:
        await _until(eng, lambda d: d["clusters"].get("c1", {}).get("revision") == first, "synced")
        # Every apply of web-config answered 503, past the request's retry budget: a retriable failure.
        await sim.faults("c1", {"status": 503, "method": "PATCH", "path": "configmaps/web-config$"})
        _web(repo, "2")
        second = repo.commit("web 2")
        eng.trigger_fetch(reason="test")

        def shown(doc: dict[str, Any]) -> bool:
            error = (doc["clusters"].get("c1") or {}).get("lastError") or ""
            return _retrying(doc, second) is not None and error.startswith("retrying at ")

        doc = await _until(eng, shown, "the retried failure in the status and in the rollout")
        c1 = doc["clusters"]["c1"]
        assert c1["state"] == "Failed"  # what its last round met; the rollout keeps it in flight
        assert c1["bundles"]["web"]["state"] == "Failed"
        note, _, error = c1["lastError"].partition(": ")
        when = dt.datetime.fromisoformat(note.split()[2].replace("Z", "+00:00"))
        synced = dt.datetime.fromisoformat(c1["lastSyncAt"].replace("Z", "+00:00"))
        assert synced <= when <= synced + dt.timedelta(seconds=eng.settings.retry_cap + 1), c1
        assert "failure" in note and "in a row" in note, c1
        retrying = _retrying(doc, second)
        assert retrying is not None and error in retrying, (error, retrying)
        r = doc["rollouts"]["web"]
        assert r["waves"][0]["clusters"] == {"c1": "Progressing"}, r

        # Once an attempt goes through, the note goes with the error.
        await sim.clear_faults("c1")
        doc = await _until(
            eng,
            lambda d: (
                d["clusters"]["c1"]["state"] == "Synced" and d["rollouts"]["web"]["state"] == "Completed"
            ),
            "synced after the retries",
        )
        assert doc["clusters"]["c1"]["lastError"] is None


def test_a_retried_failure_shows_failed_with_its_next_attempt_while_the_rollout_lists_it_as_retrying(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(_test_a_retried_failure, tmp_path, sim)
