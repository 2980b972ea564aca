"""The status page's rollout view in a real headless Chromium (docs/rollouts.md, docs/ui.md).

The rollouts in the status documents are made by the real state machine (`fleet.core.rollout`), so the
page is fed exactly the shape `fleet serve` answers.
"""

from __future__ import annotations

import pathlib
from typing import Any

from fleet.core import model
from fleet.core import rollout as ro
from tests.browser import harness, statusdocs
from tests.browser.statusserver import StatusServer

VIEW_JS = """(() => {
  const out = {};
  for (const art of document.querySelectorAll('#rollouts-body article.rollout')) {
    const waves = {};
    for (const w of art.querySelectorAll('li.wave')) {
      const chips = {};
      w.querySelectorAll('li.chip').forEach(c => { chips[c.dataset.cluster] = c.dataset.state; });
      waves[w.dataset.wave] = {chips, current: w.classList.contains('current'),
                               failures: [...w.querySelectorAll('.wave-failures li')].map(li => li.textContent)};
    }
    out[art.dataset.bundle] = {
      state: art.dataset.state,
      reason: (art.querySelector('.rollout-reason') || {}).textContent || null,
      next: (art.querySelector('.rollout-next code') || {}).textContent || null,
      inCompleted: !!art.closest('details.rollouts-done'),
      waves,
    };
  }
  return {hidden: document.getElementById('rollouts').hidden, rollouts: out};
})()"""


def halted_web() -> dict[str, Any]:
    spec = model.RolloutSpec(
        waves=(
            model.WaveSpec(name="canary", max_concurrency=model.Count(1)),
            model.WaveSpec(
                name="prod", max_concurrency=model.Count(50, percent=True), approval=model.Approval.BEFORE
            ),
        )
    )
    r = ro.start(
        bundle="web",
        revision=statusdocs.SHA,
        spec=spec,
        waves=[("canary", ("eu-dev-1",)), ("prod", ("eu-prod-1", "us-prod-1"))],
        from_revisions={},
        now=1_000.0,
    )
    r = ro.advance(r, now=1_001.0).rollout
    r = ro.applied(r, "eu-dev-1", now=1_002.0, ok=True)
    r = ro.health(
        r,
        "eu-dev-1",
        now=1_003.0,
        verdict=ro.Verdict.DEGRADED,
        observed_at=1_003.0,
        message="Deployment/web/web: ProgressDeadlineExceeded",
    )
    r = ro.advance(r, now=1_003.0).rollout
    assert r.phase is ro.Phase.HALTED
    return ro.document(r, now=1_010.0)


def progressing_base(*, completed: bool) -> dict[str, Any]:
    r = ro.start(
        bundle="base",
        revision=statusdocs.SHA,
        spec=model.DEFAULT_ROLLOUT,
        waves=[("all", ("eu-dev-1", "eu-prod-1"))],
        from_revisions={},
        now=1_000.0,
    )
    r = ro.advance(r, now=1_000.0).rollout
    if completed:
        for c in ("eu-dev-1", "eu-prod-1"):
            r = ro.applied(r, c, now=1_001.0, ok=True)
            r = ro.health(r, c, now=1_001.0, verdict=ro.Verdict.HEALTHY, observed_at=1_001.0)
            r = ro.advance(r, now=1_001.0).rollout
        assert r.phase is ro.Phase.COMPLETED
    return ro.document(r, now=1_010.0)


def doc_with(rollouts: dict[str, Any]) -> dict[str, Any]:
    doc = statusdocs.demo()
    doc["rollouts"] = rollouts
    return doc


def test_a_halted_rollout_shows_its_waves_clusters_reason_and_the_command_that_resumes_it(
    browser: harness.Page, status_server: StatusServer, artifacts: pathlib.Path
) -> None:
    status_server.set_status(doc_with({"web": halted_web(), "base": progressing_base(completed=True)}))
    browser.goto(status_server.url)
    browser.wait_for("document.querySelectorAll('#rollouts-body article.rollout').length === 2")
    view = browser.evaluate(VIEW_JS)
    assert view["hidden"] is False
    web = view["rollouts"]["web"]
    assert web["state"] == "Halted" and web["inCompleted"] is False
    assert web["next"] == "fleet rollout resume web"
    assert "eu-dev-1: degraded" in web["reason"]
    assert web["waves"]["canary"]["chips"] == {"eu-dev-1": "Failed"}
    assert web["waves"]["canary"]["current"] is True
    assert "ProgressDeadlineExceeded" in web["waves"]["canary"]["failures"][0]
    assert web["waves"]["prod"]["chips"] == {"eu-prod-1": "Pending", "us-prod-1": "Pending"}
    assert view["rollouts"]["base"]["inCompleted"] is True
    browser.screenshot(artifacts / "rollouts-halted.png")


def test_a_rollout_that_completes_moves_to_the_completed_list_without_a_reload(
    browser: harness.Page, status_server: StatusServer
) -> None:
    status_server.set_status(doc_with({"base": progressing_base(completed=False)}))
    browser.goto(status_server.url)
    browser.wait_for("document.querySelector('#rollouts-body article.rollout[data-bundle=base]') !== null")
    view = browser.evaluate(VIEW_JS)
    assert view["rollouts"]["base"]["state"] == "Progressing"
    assert view["rollouts"]["base"]["inCompleted"] is False
    assert view["rollouts"]["base"]["waves"]["all"]["chips"] == {
        "eu-dev-1": "Progressing",
        "eu-prod-1": "Pending",
    }
    status_server.set_status(doc_with({"base": progressing_base(completed=True)}))
    browser.wait_for("document.querySelector('details.rollouts-done article[data-bundle=base]') !== null")
    view = browser.evaluate(VIEW_JS)
    assert view["rollouts"]["base"]["state"] == "Completed"
    assert view["rollouts"]["base"]["next"] is None


def test_without_rollouts_the_view_stays_hidden(browser: harness.Page, status_server: StatusServer) -> None:
    status_server.set_status(statusdocs.demo())
    browser.goto(status_server.url)
    browser.wait_for("document.documentElement.dataset.renders >= 1")
    assert browser.evaluate(VIEW_JS) == {"hidden": True, "rollouts": {}}
