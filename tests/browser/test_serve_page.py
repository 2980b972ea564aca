"""The status page served by the real `fleet serve` (child process) over `fleet sim` clusters and a real
git repository, in real headless Chromium: the page and the server agree on routes, assets, the
status document and the Jaeger link.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.sim import testing
from tests.browser import harness
from tests.reconcile_support import GitOpsRepo, configmap
from tests.support import serve

CLUSTERS = ["eu-1", "eu-2", "us-1"]
JAEGER = "http://jaeger.example:16686"

CELLS_JS = """(() => {
  const columns = [...document.querySelectorAll('#matrix-head th.bundle')].map(th => th.textContent);
  const rows = {};
  for (const tr of document.querySelectorAll('#matrix-body tr')) {
    const cells = {};
    tr.querySelectorAll('td.cell').forEach((td, i) => { cells[columns[i]] = td.getAttribute('aria-label'); });
    rows[tr.dataset.c] = cells;
  }
  return rows;
})()"""


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=CLUSTERS) as handle:
        yield handle


def test_the_page_of_fleet_serve_shows_its_status_and_follows_a_new_commit(
    browser: harness.Page, tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("eu-1", labels={"region": "eu"})
    repo.cluster("eu-2", labels={"region": "eu"})
    repo.cluster("us-1", labels={"region": "us"})
    repo.bundle("settings", [configmap("settings", colour="blue")], namespace="apps", selector={})
    repo.bundle("eu-only", [configmap("eu-only", zone="eu")], namespace="apps", selector={"region": "eu"})
    repo.commit("first")
    with serve.serving(
        repo=repo.root,
        kubeconfig=sim.kubeconfig,
        state_dir=tmp_path / "state",
        log=tmp_path / "serve.log",
        args=["--interval", "1s", "--jaeger-url", JAEGER],
    ) as fleet:
        browser.goto(fleet.url + "/")
        synced = {
            "eu-1": {"eu-only": "Synced", "settings": "Synced"},
            "eu-2": {"eu-only": "Synced", "settings": "Synced"},
            "us-1": {"eu-only": "not placed", "settings": "Synced"},
        }
        browser.wait_for(
            f"JSON.stringify({CELLS_JS}) === {json.dumps(json.dumps(synced, separators=(',', ':')))}", 60
        )
        head = str(repo.repo.head.target)
        assert browser.evaluate("document.querySelector('.sha').textContent") == head[:7]
        assert "first" in browser.evaluate("document.getElementById('revision').textContent")

        repo.bundle("settings", [configmap("settings", colour="green")], namespace="apps", selector={})
        second = repo.commit("settings: green")
        browser.wait_for(
            f"document.querySelector('.sha') && document.querySelector('.sha').textContent === '{second[:7]}'",
            60,
        )
        browser.wait_for(
            f"JSON.stringify({CELLS_JS}) === {json.dumps(json.dumps(synced, separators=(',', ':')))}", 60
        )

        doc: dict[str, Any] = fleet.status()
        # Labels show as chips when the server sends them (an optional field of each cluster).
        labels = doc["clusters"]["eu-1"].get("labels") or {}
        chips = browser.evaluate(
            "[...document.querySelectorAll('tr[data-c=\"eu-1\"] .chip')].map(c => c.textContent)"
        )
        assert chips == [f"{k}={v}" for k, v in sorted(labels.items())]
        browser.click('tr[data-c="eu-2"] td.cell')
        browser.wait_for("!document.getElementById('details').hidden")
        trace_id = doc["clusters"]["eu-2"]["traceId"]
        link = browser.evaluate("(a => a && a.href)(document.querySelector('#details a.trace'))")
        if trace_id:
            assert link == f"{JAEGER}/trace/{trace_id}"
        else:
            assert link is None
            assert "no trace recorded" in browser.evaluate(
                "document.getElementById('details-body').textContent"
            )
