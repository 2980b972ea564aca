"""The status page served by the real `fleet serve` (child process) over `fleet sim` clusters and a real
git repository, in real headless Chromium: the matrix agrees cell by cell with `GET /api/v1/status`,
follows a new commit (Progressing, then Synced) and a hung cluster (Unreachable) without a reload, its
filters narrow the rows, and `fleet demo` prints the page's URL and serves it there.

One simulated fleet and one `fleet serve` are shared by the tests of this module. They run in file
order; each leaves the fleet at rest as it found it, but the last one using them stops `fleet serve`.
Each test opens its own tab.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.sim import testing
from fleet.sim.storage import store
from tests.browser import demoprocess, harness
from tests.support import serve
from tests.support.reconcile import GitOpsRepo, configmap

JAEGER = "http://jaeger.example:16686"
LABELS = {
    "eu-1": {"region": "eu", "env": "prod"},
    "eu-2": {"region": "eu", "env": "staging"},
    "us-1": {"region": "us", "env": "prod"},
    "ap-1": {"region": "ap", "env": "prod"},
}
PAUSED = "ap-1"
# Where each bundle is placed (the repository below says so; the status document must agree).
PLACED = {
    "settings": {"eu-1", "eu-2", "us-1", "ap-1"},
    "eu-only": {"eu-1", "eu-2"},
    "web": {"eu-1", "us-1", "ap-1"},
}
# Seconds from a Deployment's new spec until the sim reports it available: while they pass, the
# Deployment's health is Progressing, and fleet re-checks it every 2 s, so the status document shows
# Progressing for at least this long, twice the page's poll interval (2 s).
WORKLOAD_DELAY = 4.0

# The page's matrix as {cluster: {"state": cluster state, bundle: cell's state word, ...}}.
MATRIX_JS = """(() => {
  const columns = [...document.querySelectorAll('#matrix-head th.bundle')].map(th => th.textContent);
  const rows = {};
  for (const tr of document.querySelectorAll('#matrix-body tr')) {
    const badge = tr.querySelector('td.state .badge');
    const cells = {state: badge ? badge.lastChild.textContent.trim() : null};
    tr.querySelectorAll('td.cell').forEach((td, i) => { cells[columns[i]] = td.getAttribute('aria-label'); });
    rows[tr.dataset.c] = cells;
  }
  return rows;
})()"""
ROWS_JS = "[...document.querySelectorAll('#matrix-body tr')].map(tr => tr.dataset.c)"
SHA_JS = "(s => s ? s.textContent : null)(document.querySelector('#revision .sha'))"

# Records every distinct (revision, matrix) the page shows from now on, as it draws it, with the
# page's clock (`t`, ms) for failure messages.
RECORDER_JS = f"""(() => {{
  window.__seen = [];
  let last = null;
  const record = () => {{
    const now = JSON.stringify({{sha: {SHA_JS}, matrix: {MATRIX_JS}}});
    if (now !== last) {{ last = now; window.__seen.push({{...JSON.parse(now), t: Math.round(performance.now())}}); }}
  }};
  record();
  new MutationObserver(record).observe(document.body,
    {{subtree: true, childList: true, characterData: true, attributes: true}});
  return true;
}})()"""


def deployment(name: str, *, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
        },
    }


def expected_matrix(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    """What the page must show for a status document: every placed pair's state, "not placed" else."""
    clusters = doc["clusters"]
    bundles = sorted({b for c in clusters.values() for b in c["bundles"]})
    return {
        name: {
            "state": c["state"],
            **{b: c["bundles"][b]["state"] if b in c["bundles"] else "not placed" for b in bundles},
        }
        for name, c in clusters.items()
    }


def settled_at(sha: str) -> Any:
    """Every cluster Synced at `sha`, the paused one Paused."""

    def check(doc: dict[str, Any]) -> bool:
        clusters = doc.get("clusters") or {}
        return set(clusters) == set(LABELS) and all(
            c["state"] == ("Paused" if name == PAUSED else "Synced")
            and (name == PAUSED or c["revision"] == sha)
            and all(b["state"] == c["state"] for b in c["bundles"].values())
            for name, c in clusters.items()
        )

    return check


def rows_are(names: list[str]) -> str:
    """A JavaScript predicate: the matrix shows exactly these clusters, in this order."""
    return f"JSON.stringify({ROWS_JS}) === {json.dumps(json.dumps(names, separators=(',', ':')))}"


def same_as(expected: Any) -> str:
    """A JavaScript predicate: the page's matrix equals `expected` (key order aside)."""
    return f"""(() => {{
      const sort = v => v && typeof v === 'object' && !Array.isArray(v)
        ? Object.fromEntries(Object.keys(v).sort().map(k => [k, sort(v[k])])) : v;
      return JSON.stringify(sort({MATRIX_JS})) === JSON.stringify(sort({json.dumps(expected)}));
    }})()"""


def wait_until_page_shows_status(browser: harness.Page, fleet: serve.ServeProcess) -> dict[str, Any]:
    """Waits until the page's matrix equals the status document of `fleet serve`; returns that document."""
    return page_follows_status(browser, fleet.status, timeout=20)


def page_follows_status(
    browser: harness.Page, status: Callable[[], dict[str, Any]], *, timeout: float
) -> dict[str, Any]:
    """Waits until the page's matrix equals the status document fetched at that moment, fetching it
    again while it changes (a fleet rolling out); returns the document the page matched."""
    deadline = time.monotonic() + timeout
    while True:
        doc = status()
        if doc.get("clusters") and not any(c["state"] == "Pending" for c in doc["clusters"].values()):
            try:
                browser.wait_for(same_as(expected_matrix(doc)), 2.5)
                return doc
            except harness.BrowserError:
                pass
        if time.monotonic() > deadline:
            shown = browser.evaluate(MATRIX_JS)
            raise AssertionError(f"the page shows {shown}, the status says {doc}")
        time.sleep(0.2)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def sim() -> Iterator[testing.SimHandle]:
    settings = store.Settings(workload_delay=WORKLOAD_DELAY)
    with testing.serving(names=list(LABELS), settings=settings) as handle:
        yield handle


@pytest.fixture(scope="module")
def gitops(tmp_path_factory: pytest.TempPathFactory) -> GitOpsRepo:
    repo = GitOpsRepo(tmp_path_factory.mktemp("page") / "repo")
    for name, labels in LABELS.items():
        repo.cluster(name, labels=labels, paused=name == PAUSED)
    repo.bundle("settings", [configmap("settings", colour="blue")], namespace="apps", selector={})
    repo.bundle("eu-only", [configmap("eu-only", zone="eu")], namespace="apps", selector={"region": "eu"})
    repo.bundle("web", [deployment("web", image="nginx:1.27")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    return repo


@pytest.fixture(scope="module")
def fleet(
    gitops: GitOpsRepo, sim: testing.SimHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[serve.ServeProcess]:
    """`fleet serve` on the fleet above, settled at the first commit; fails fast on a hung cluster."""
    tmp = tmp_path_factory.mktemp("serve")
    args = ["--interval", "1s", "--jaeger-url", JAEGER, "--request-timeout", "1s", "--retry-budget", "2s"]
    with serve.serving(
        repo=gitops.root, kubeconfig=sim.kubeconfig, state_dir=tmp / "state", log=tmp / "serve.log", args=args
    ) as process:
        process.wait_for(
            settled_at(str(gitops.repo.head.target)), timeout=60, what="the first commit settled"
        )
        yield process


def test_the_matrix_shows_every_placed_pair_with_its_state_from_the_status_api(
    browser: harness.Page, fleet: serve.ServeProcess, gitops: GitOpsRepo
) -> None:
    browser.goto(fleet.url + "/")
    doc = wait_until_page_shows_status(browser, fleet)
    # The status document itself places the bundles as the repository says, so "not placed" cells are
    # exactly the pairs outside PLACED.
    assert {b: {c for c, s in doc["clusters"].items() if b in s["bundles"]} for b in PLACED} == PLACED
    shown = browser.evaluate(MATRIX_JS)
    for cluster in LABELS:
        for bundle, where in PLACED.items():
            want = doc["clusters"][cluster]["bundles"][bundle]["state"] if cluster in where else "not placed"
            assert shown[cluster][bundle] == want, (cluster, bundle)
    assert shown["us-1"]["eu-only"] == "not placed"
    assert shown[PAUSED]["web"] == "Paused"
    assert shown["eu-1"]["web"] == "Synced"

    head = str(gitops.repo.head.target)
    assert doc["revision"] == head
    assert browser.evaluate(SHA_JS) == head[:7]
    assert "first" in browser.evaluate("document.getElementById('revision').textContent")
    for cluster, labels in LABELS.items():
        chips = browser.evaluate(
            f"[...document.querySelectorAll('tr[data-c=\"{cluster}\"] .chip')].map(c => c.textContent)"
        )
        assert chips == [f"{k}={v}" for k, v in sorted(labels.items())]
        assert doc["clusters"][cluster]["labels"] == labels

    # At rest the document does not change: later polls are revalidated with the server's ETag and
    # answered 304, so only headers travel (resource timing: transfer smaller than the cached body).
    browser.wait_for("window.fleetUi.polls >= 3", 10)
    sizes = browser.evaluate(
        "performance.getEntriesByType('resource').filter(e => e.name.includes('api/v1/status'))"
        ".map(e => [e.transferSize, e.encodedBodySize])"
    )
    assert sizes[0][0] > sizes[0][1] > 0, sizes  # the first one was downloaded
    assert any(0 < transfer < body for transfer, body in sizes[1:]), sizes

    # A cell's details link to the trace of that cluster's last reconcile (when one was recorded).
    browser.click('tr[data-c="eu-2"] td.cell')
    browser.wait_for("!document.getElementById('details').hidden")
    trace_id = fleet.status()["clusters"]["eu-2"]["traceId"]
    link = browser.evaluate("(a => a && a.href)(document.querySelector('#details a.trace'))")
    if trace_id:
        assert link == f"{JAEGER}/trace/{trace_id}"
    else:
        assert link is None
        assert "no trace recorded" in browser.evaluate("document.getElementById('details-body').textContent")


def test_the_label_and_state_filters_narrow_the_rows(
    browser: harness.Page, fleet: serve.ServeProcess
) -> None:
    browser.goto(fleet.url + "/")
    doc = wait_until_page_shows_status(browser, fleet)
    assert browser.evaluate(ROWS_JS) == sorted(LABELS)

    def select(selector: str) -> None:
        browser.click("#clear")
        browser.click("#selector")
        browser.type_text(selector)

    select("region=eu")
    browser.wait_for(rows_are(["eu-1", "eu-2"]))
    assert (
        browser.evaluate("document.getElementById('shown').textContent")
        == "Showing 2 of 4 clusters (filtered)"
    )
    select("env=prod,region notin (eu)")
    browser.wait_for(rows_are(["ap-1", "us-1"]))

    # The state buttons: clusters whose state (from the status document) is among those pressed.
    browser.click("#clear")
    browser.wait_for(rows_are(sorted(LABELS)))
    states = {name: c["state"] for name, c in doc["clusters"].items()}
    assert states[PAUSED] == "Paused"
    browser.click('.state-btn[data-state="Paused"]')
    browser.wait_for(rows_are([PAUSED]))
    browser.click('.state-btn[data-state="Synced"]')
    browser.wait_for(rows_are(sorted(LABELS)))
    browser.click('.state-btn[data-state="Paused"]')
    synced = sorted(n for n, s in states.items() if s == "Synced")
    assert len(synced) == 3
    browser.wait_for(rows_are(synced))
    assert "state=Synced" in browser.evaluate("location.hash")
    # Both at once: a label selector and a state.
    browser.click("#selector")
    browser.type_text("region=eu")
    browser.wait_for(rows_are(["eu-1", "eu-2"]))
    browser.click('.state-btn[data-state="Synced"]')
    browser.click('.state-btn[data-state="Paused"]')
    browser.wait_for("document.getElementById('empty').textContent === 'No cluster matches the filters.'")
    assert browser.evaluate(ROWS_JS) == []


def test_a_new_commit_turns_cells_progressing_then_synced_without_a_reload(
    browser: harness.Page, fleet: serve.ServeProcess, gitops: GitOpsRepo
) -> None:
    browser.goto(fleet.url + "/")
    first = wait_until_page_shows_status(browser, fleet)["revision"]
    assert browser.evaluate(SHA_JS) == first[:7]
    browser.evaluate(RECORDER_JS)  # lives as long as the document: a reload would lose it

    gitops.bundle("web", [deployment("web", image="nginx:1.28")], namespace="web", selector={"env": "prod"})
    gitops.bundle("settings", [configmap("settings", colour="green")], namespace="apps", selector={})
    second = gitops.commit("web: nginx 1.28, settings: green")
    fleet.wait_for(settled_at(second), timeout=60, what="the second commit settled")
    doc = wait_until_page_shows_status(browser, fleet)
    assert doc["revision"] == second
    assert browser.evaluate(SHA_JS) == second[:7]

    seen: list[dict[str, Any]] | None = browser.evaluate("window.__seen")
    assert seen is not None, "the page was reloaded: the recorder is gone"
    assert seen[0]["sha"] == first[:7], "the recorder started before the commit"
    for cluster in sorted(PLACED["web"] - {PAUSED}):
        states = [s["matrix"][cluster]["web"] for s in seen if s["sha"] == second[:7]]
        assert "Progressing" in states, f"web on {cluster} never showed Progressing: {seen}"
        assert "Synced" in states[states.index("Progressing") :], f"no Synced after Progressing: {seen}"
    # The paused cluster was never touched.
    assert {s["matrix"][PAUSED]["web"] for s in seen} == {"Paused"}
    # What the page shows last is the new revision, every pair Synced (Paused on the paused cluster).
    assert seen[-1]["sha"] == second[:7]
    assert seen[-1]["matrix"] == expected_matrix(doc)


def test_a_broken_file_is_named_and_its_bundle_fails_keeping_the_last_good_revision(
    browser: harness.Page, fleet: serve.ServeProcess, gitops: GitOpsRepo
) -> None:
    browser.goto(fleet.url + "/")
    good = wait_until_page_shows_status(browser, fleet)["revision"]
    assert browser.evaluate("document.getElementById('revision-errors').hidden") is True
    path = "bundles/eu-only/manifests/all.yaml"
    gitops.write(path, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: eu-only\n data: [\n")
    broken = gitops.commit("eu-only: broken YAML")
    try:
        doc = fleet.wait_for(
            lambda d: (
                d["revision"] == broken
                and all(
                    d["clusters"][c]["bundles"]["eu-only"]["state"] == "Failed" for c in PLACED["eu-only"]
                )
            ),
            timeout=30,
            what="eu-only Failed at the broken commit",
        )
        [problem] = doc["errors"]
        assert problem["path"] == path
        doc = wait_until_page_shows_status(browser, fleet)
        assert {
            c["bundles"]["eu-only"]["state"] for c in doc["clusters"].values() if "eu-only" in c["bundles"]
        } == {"Failed"}
        browser.wait_for("!document.getElementById('revision-errors').hidden")
        listed = browser.evaluate("document.getElementById('revision-errors-list').textContent")
        assert listed == f"{path}:{problem['line']} {problem['message']}"
        assert browser.evaluate(SHA_JS) == broken[:7]
        # The failed cell's details: the error naming the file, and the last good revision it still holds.
        column = sorted(PLACED).index("eu-only")
        browser.click(f'tr[data-c="eu-1"] td.cell:nth-of-type({column + 2})')
        browser.wait_for("document.getElementById('details-title').textContent === 'eu-only on eu-1'")
        details = browser.evaluate("document.getElementById('details-body').textContent")
        assert path in details
        assert doc["clusters"]["eu-1"]["bundles"]["eu-only"]["revision"] == good
        assert browser.evaluate("document.querySelector('#details-body dd code').textContent") == good[:7]
        assert browser.evaluate("document.title") == "fleet status · 2 Failed"
    finally:
        gitops.bundle(
            "eu-only", [configmap("eu-only", zone="eu")], namespace="apps", selector={"region": "eu"}
        )
        fixed = gitops.commit("eu-only: fixed")
    fleet.wait_for(settled_at(fixed), timeout=30, what="the fixed commit settled")
    doc = wait_until_page_shows_status(browser, fleet)
    assert doc["errors"] == []
    browser.wait_for("document.getElementById('revision-errors').hidden")


def test_a_hung_cluster_turns_unreachable_without_a_reload(
    browser: harness.Page,
    fleet: serve.ServeProcess,
    sim: testing.SimHandle,
    gitops: GitOpsRepo,
    artifacts: Path,
) -> None:
    browser.goto(fleet.url + "/")
    wait_until_page_shows_status(browser, fleet)
    assert browser.evaluate("document.title") == "fleet status"
    browser.evaluate("window.__sameDocument = true")
    sim.faults_sync("us-1", {"hang": True})
    try:
        # Fleet notices at its next round on us-1: ask for one now instead of waiting for a resync.
        assert fleet.post("/api/v1/reconcile?cluster=us-1").status_code == 202
        # First what the server says (a clear message if it never says Unreachable), then the page.
        doc = fleet.wait_for(
            lambda d: d["clusters"]["us-1"]["state"] == "Unreachable",
            timeout=30,
            what="us-1 Unreachable in the status document",
        )
        assert doc["clusters"]["us-1"]["lastError"]
        browser.wait_for(
            "(b => b && b.textContent.includes('Unreachable'))"
            "(document.querySelector('tr[data-c=\"us-1\"] td.state .badge'))",
            10,
        )
        assert browser.evaluate("window.__sameDocument") is True
        doc = wait_until_page_shows_status(browser, fleet)
        assert doc["clusters"]["us-1"]["state"] == "Unreachable"
        assert browser.evaluate("document.title") == "fleet status · 1 Unreachable"
        # The others are untouched.
        assert {n: c["state"] for n, c in doc["clusters"].items() if n != "us-1"} == {
            "eu-1": "Synced",
            "eu-2": "Synced",
            PAUSED: "Paused",
        }
        browser.click('tr[data-c="us-1"] td.state')
        browser.wait_for("document.getElementById('details-title').textContent === 'us-1'")
        shot = browser.screenshot(artifacts / "serve-page-unreachable.png")
        width, height = png_size(shot)
        assert (width, height) == (1280, 800)
    finally:
        sim.clear_faults_sync("us-1")
    # Answering again, us-1 is Synced at its next round; leave the fleet at rest for the next test.
    assert fleet.post("/api/v1/reconcile?cluster=us-1").status_code == 202
    head = str(gitops.repo.head.target)
    fleet.wait_for(settled_at(head), timeout=30, what="us-1 back to Synced")
    wait_until_page_shows_status(browser, fleet)


def test_when_fleet_serve_stops_the_page_keeps_the_last_matrix_and_says_so(
    browser: harness.Page, fleet: serve.ServeProcess
) -> None:
    browser.goto(fleet.url + "/")
    doc = wait_until_page_shows_status(browser, fleet)
    browser.wait_for("document.getElementById('conn').textContent.startsWith('Live')")
    browser.ignore_problems("net::ERR_CONNECTION_REFUSED")  # Chromium logs each failed poll
    assert fleet.terminate() == 0
    browser.wait_for("document.getElementById('conn').textContent.startsWith('Cannot read the status')", 10)
    conn = browser.evaluate("document.getElementById('conn').textContent")
    assert "showing the status read at" in conn and conn.endswith("Retrying…"), conn
    assert browser.evaluate(MATRIX_JS) == expected_matrix(doc)
    assert browser.evaluate(SHA_JS) == doc["revision"][:7]


def test_fleet_demo_prints_the_status_page_url_and_serves_the_page_there(
    browser: harness.Page, tmp_path: Path
) -> None:
    with demoprocess.running(tmp_path / "demo") as demo:
        out = demo.output()
        assert f"status page   {demo.url}/\n" in out
        assert f"status API    {demo.url}/api/v1/status" in out
        assert demo.url.startswith("http://127.0.0.1:") and not demo.url.endswith(":0"), demo.url
        page = httpx.get(demo.url + "/", timeout=10)
        assert page.status_code == 200
        assert page.headers["Content-Type"].startswith("text/html")
        browser.goto(demo.url + "/")
        # While the demo rolls out, the page keeps up with the status document as it is at each moment.
        doc = page_follows_status(browser, demo.status, timeout=30)
        assert len(doc["clusters"]) >= 10
        assert browser.evaluate(SHA_JS) == doc["revision"][:7]
        # And the demo fleet becomes healthy: every cluster Synced, the paused one Paused (what the
        # screenshot in docs/ui.md shows).
        demo.wait_for(demoprocess.healthy, timeout=45, what="every demo cluster Synced or Paused")
        assert demoprocess.healthy(page_follows_status(browser, demo.status, timeout=20))
        browser.goto("about:blank")  # no more polls: the demo stops next
