"""The status page (issue 10) in a real headless Chromium, fed status documents by a test server.

The page is the thing under test; its only input is the JSON of ``GET /api/v1/status``, which each test
sets and changes between polls (the page polls every 0.2 s here). Every test also fails if the page
logged an error or threw (see the `browser` fixture).
"""

from __future__ import annotations

import datetime
import json
import pathlib
from typing import Any

from tests.browser import harness, statusdocs
from tests.browser.statusserver import StatusServer

# Everything the matrix shows, read back from the DOM: column order, row order, per-row state and cells.
MATRIX_JS = """(() => {
  const columns = [...document.querySelectorAll('#matrix-head th.bundle')].map(th => th.textContent);
  const rows = {};
  const order = [];
  for (const tr of document.querySelectorAll('#matrix-body tr')) {
    const cells = {};
    tr.querySelectorAll('td.cell').forEach((td, i) => { cells[columns[i]] = td.getAttribute('aria-label'); });
    const state = tr.querySelector('td.state').textContent.replace(/^\\S+\\s/, '');
    rows[tr.dataset.c] = {state, cells};
    order.push(tr.dataset.c);
  }
  return {columns, rows, order};
})()"""

ORDER_JS = "[...document.querySelectorAll('#matrix-body tr')].map(tr => tr.dataset.c)"


def matrix(page: harness.Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(MATRIX_JS)
    return result


def open_page(page: harness.Page, server: StatusServer, doc: dict[str, Any], *, fragment: str = "") -> None:
    server.set_status(doc)
    page.goto(server.url + fragment)
    page.wait_for("document.documentElement.dataset.renders >= 1")


def cell_js(cluster: str, bundle: str) -> str:
    """A JS expression for the cell of (cluster, bundle), or null."""
    return f"""(() => {{
      const columns = [...document.querySelectorAll('#matrix-head th.bundle')].map(th => th.textContent);
      const tr = document.querySelector(`#matrix-body tr[data-c=${{JSON.stringify({json.dumps(cluster)})}}]`);
      const i = columns.indexOf({json.dumps(bundle)});
      return tr && i >= 0 ? tr.querySelectorAll('td.cell')[i] : null;
    }})()"""


def type_selector(page: harness.Page, text: str) -> None:
    """Types a label selector into the filter box as a user would (select all, then type)."""
    page.evaluate("(() => { const i = document.getElementById('selector'); i.focus(); i.select(); })()")
    if text:
        page.type_text(text)
    else:
        page.press("Backspace")


def wait_rows(page: harness.Page, expected: list[str], timeout: float = 5.0) -> None:
    want = json.dumps(json.dumps(expected, separators=(",", ":")))
    page.wait_for(f"JSON.stringify({ORDER_JS}) === {want}", timeout)


def three_clusters() -> dict[str, Any]:
    d = statusdocs
    return d.document(
        {
            "eu-1": d.cluster(
                "Failed",
                {
                    "api": d.bundle("Synced"),
                    "web": d.bundle("Failed", error="Deployment/web/web: image not found"),
                },
                labels={"env": "prod", "region": "eu"},
            ),
            "us-1": d.cluster(
                "Progressing", {"db": d.bundle("Progressing")}, labels={"env": "prod", "region": "us"}
            ),
            "lab-1": d.cluster("Paused", {}, labels={"env": "dev"}),
        }
    )


def test_the_matrix_shows_every_placed_pair_with_its_state_and_not_placed_elsewhere(
    browser: harness.Page, status_server: StatusServer
) -> None:
    open_page(browser, status_server, three_clusters())

    assert matrix(browser) == {
        "columns": ["api", "db", "web"],
        "rows": {
            "eu-1": {"state": "Failed", "cells": {"api": "Synced", "db": "not placed", "web": "Failed"}},
            "lab-1": {
                "state": "Paused",
                "cells": {"api": "not placed", "db": "not placed", "web": "not placed"},
            },
            "us-1": {
                "state": "Progressing",
                "cells": {"api": "not placed", "db": "Progressing", "web": "not placed"},
            },
        },
        "order": ["eu-1", "lab-1", "us-1"],
    }
    # Colour is never the only cue: each cell has a state class (colour) and a glyph.
    cell = browser.evaluate(f"(c => [c.className, c.textContent])({cell_js('eu-1', 'web')})")
    assert cell == ["cell s-failed has-error", "✗"]
    chips = browser.evaluate(
        "[...document.querySelectorAll('tr[data-c=\"eu-1\"] .chip')].map(c => c.textContent)"
    )
    assert chips == ["env=prod", "region=eu"]
    counts = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('.state-btn')]"
        ".map(b => [b.dataset.state, b.querySelector('.count').textContent]))"
    )
    assert counts == {
        "Failed": "1",
        "Unreachable": "0",
        "Progressing": "1",
        "Pending": "0",
        "Paused": "1",
        "Synced": "0",
    }
    assert "3 clusters · 3 bundles · 3 placed pairs" in browser.evaluate(
        "document.getElementById('pairs').textContent"
    )
    assert browser.evaluate("document.title") == "fleet status · 1 Failed"


def test_a_changed_status_turns_cells_progressing_then_synced_without_a_reload(
    browser: harness.Page, status_server: StatusServer
) -> None:
    d = statusdocs
    labels = {"env": "prod"}
    before = d.document(
        {
            "eu-1": d.cluster("Synced", {"web": d.bundle("Synced", revision=d.OLD_SHA)}, labels=labels),
            "us-1": d.cluster("Synced", {"web": d.bundle("Synced", revision=d.OLD_SHA)}, labels=labels),
        },
        revision=d.OLD_SHA,
        message="first",
    )
    open_page(browser, status_server, before)
    # Marks that a reload would wipe, and that a row rebuild would wipe for that row only.
    browser.evaluate(
        "window.__sameDocument = true; document.querySelector('tr[data-c=\"us-1\"]').__kept = true"
    )

    rolling = d.document(
        {
            "eu-1": d.cluster(
                "Progressing", {"web": d.bundle("Progressing", revision=d.OLD_SHA)}, labels=labels
            ),
            "us-1": d.cluster("Synced", {"web": d.bundle("Synced", revision=d.OLD_SHA)}, labels=labels),
        },
        message="web: bump image",
    )
    status_server.set_status(rolling)
    browser.wait_for(f"{cell_js('eu-1', 'web')}.getAttribute('aria-label') === 'Progressing'")
    assert browser.evaluate("document.querySelector('.sha').textContent") == d.SHA[:7]

    done = d.document(
        {
            "eu-1": d.cluster("Synced", {"web": d.bundle("Synced")}, labels=labels),
            "us-1": d.cluster("Synced", {"web": d.bundle("Synced", revision=d.OLD_SHA)}, labels=labels),
        },
        message="web: bump image",
    )
    status_server.set_status(done)
    browser.wait_for(f"{cell_js('eu-1', 'web')}.getAttribute('aria-label') === 'Synced'")
    assert matrix(browser)["rows"]["eu-1"]["state"] == "Synced"
    assert browser.evaluate("window.__sameDocument === true")
    # The unchanged row is the very same DOM node: rows are diffed by cluster, not rebuilt.
    assert browser.evaluate("document.querySelector('tr[data-c=\"us-1\"]').__kept === true")


def test_a_cluster_turning_unreachable_is_shown(browser: harness.Page, status_server: StatusServer) -> None:
    d = statusdocs
    open_page(
        browser,
        status_server,
        d.document({"eu-1": d.cluster("Synced", {"web": d.bundle("Synced")}, labels={"a": "b"})}),
    )
    refused = "Get https://10.0.0.7:6443/api: connection refused"
    status_server.set_status(
        d.document(
            {
                "eu-1": d.cluster(
                    "Unreachable", {"web": d.bundle("Unreachable", error=refused)}, error=refused, labels={}
                )
            }
        )
    )
    browser.wait_for(
        "document.querySelector('tr[data-c=\"eu-1\"] td.state').textContent.includes('Unreachable')"
    )
    assert matrix(browser)["rows"]["eu-1"]["cells"] == {"web": "Unreachable"}
    browser.hover('tr[data-c="eu-1"] td.cell')
    assert browser.evaluate(f"{cell_js('eu-1', 'web')}.title") == f"web on eu-1: Unreachable\n{refused}"
    browser.hover('tr[data-c="eu-1"] td.state')
    assert browser.evaluate("document.querySelector('tr[data-c=\"eu-1\"] td.state').title") == (
        f"eu-1: Unreachable\n{refused}"
    )
    assert (
        browser.evaluate("document.querySelector('.state-btn[data-state=Unreachable] .count').textContent")
        == "1"
    )


def labelled_fleet() -> dict[str, Any]:
    d = statusdocs
    fleet = {
        "eu-prod": {"env": "prod", "region": "eu", "tier": "1"},
        "us-prod": {"env": "prod", "region": "us", "tier": "3"},
        "ap-prod": {"env": "prod", "region": "ap"},
        "eu-legacy": {"env": "prod", "region": "eu", "legacy": "true"},
        "eu-dev": {"env": "dev", "region": "eu"},
        "bare": {},
    }
    return d.document(
        {
            name: d.cluster("Synced", {"web": d.bundle("Synced")}, labels=labels)
            for name, labels in fleet.items()
        }
    )


def test_the_label_selector_narrows_rows_with_kubernetes_syntax(
    browser: harness.Page, status_server: StatusServer
) -> None:
    open_page(browser, status_server, labelled_fleet())
    everyone = ["ap-prod", "bare", "eu-dev", "eu-legacy", "eu-prod", "us-prod"]
    wait_rows(browser, everyone)

    for selector, expected in [
        ("env=prod", ["ap-prod", "eu-legacy", "eu-prod", "us-prod"]),
        ("env=prod,region in (eu,us)", ["eu-legacy", "eu-prod", "us-prod"]),
        ("!legacy", ["ap-prod", "bare", "eu-dev", "eu-prod", "us-prod"]),
        ("tier!=3", ["ap-prod", "bare", "eu-dev", "eu-legacy", "eu-prod"]),
        ("env=prod,region in (eu,us),!legacy,tier!=3", ["eu-prod"]),
        ("region notin (eu)", ["ap-prod", "bare", "us-prod"]),
        ("tier", ["eu-prod", "us-prod"]),
        ("", everyone),
    ]:
        type_selector(browser, selector)
        wait_rows(browser, expected)
        assert browser.evaluate("document.getElementById('selector').getAttribute('aria-invalid')") is None

    type_selector(browser, "env in (prod")
    browser.wait_for("document.getElementById('selector').getAttribute('aria-invalid') === 'true'")
    error = browser.evaluate("document.getElementById('selector-error').textContent")
    assert error == 'Label selector: expected "," or ")", found the end at character 13 (not applied)'
    wait_rows(browser, everyone)
    assert browser.evaluate("document.getElementById('shown').textContent") == "Showing 6 of 6 clusters"


def test_the_selector_parser_follows_kubernetes_semantics(
    browser: harness.Page, status_server: StatusServer
) -> None:
    open_page(browser, status_server, labelled_fleet())
    labels = {"env": "prod", "region": "eu", "tier": "2", "example.com/team": "a_b"}
    cases = [
        ("", True),
        ("env", True),
        ("!env", False),
        ("env=prod", True),
        ("env==prod", True),
        ("env = prod , region=eu", True),
        ("env!=prod", False),
        ("missing!=x", True),
        ("region in (us, eu)", True),
        ("region in (us)", False),
        ("missing in (x)", False),
        ("missing notin (x)", True),
        ("region notin (eu)", False),
        ("tier>1", True),
        ("tier<2", False),
        ("example.com/team=a_b", True),
        ("env=", False),
        ("missing=", False),
    ]
    got = browser.evaluate(
        f"{json.dumps(cases)}.map(([s]) => window.fleetUi.matches(window.fleetUi.parseSelector(s), {json.dumps(labels)}))"
    )
    assert got == [expected for _, expected in cases]

    bad = [
        "env=prod,",
        "=prod",
        "env in prod",
        "env in (a",
        "env prod",
        "tier>x",
        "-bad=1",
        "env=a b",
        "env=(x)",
    ]
    errors = browser.evaluate(
        f"{json.dumps(bad)}.map(s => {{ try {{ window.fleetUi.parseSelector(s); return null; }}"
        " catch (e) { return e.message; } })"
    )
    assert all(isinstance(e, str) and " at character " in e for e in errors), errors


def test_the_state_filter_narrows_rows(browser: harness.Page, status_server: StatusServer) -> None:
    open_page(browser, status_server, three_clusters())
    browser.click('.state-btn[data-state="Failed"]')
    wait_rows(browser, ["eu-1"])
    assert browser.evaluate(
        "document.querySelector('.state-btn[data-state=Failed]').getAttribute('aria-pressed')"
    ) == ("true")
    browser.click('.state-btn[data-state="Paused"]')
    wait_rows(browser, ["eu-1", "lab-1"])
    browser.click('.state-btn[data-state="Failed"]')
    wait_rows(browser, ["lab-1"])
    browser.click("#clear")
    wait_rows(browser, ["eu-1", "lab-1", "us-1"])


def test_filters_and_sort_live_in_the_url_fragment(
    browser: harness.Page, status_server: StatusServer
) -> None:
    open_page(browser, status_server, labelled_fleet(), fragment="#selector=region%3Deu&sort=-name")
    wait_rows(browser, ["eu-prod", "eu-legacy", "eu-dev"])
    assert browser.evaluate("document.getElementById('selector').value") == "region=eu"
    type_selector(browser, "env=dev")
    wait_rows(browser, ["eu-dev"])
    assert browser.evaluate("location.hash") == "#selector=env%3Ddev&sort=-name"


def test_sorting_by_name_and_by_state(browser: harness.Page, status_server: StatusServer) -> None:
    d = statusdocs
    states = ["Synced", "Paused", "Failed", "Pending", "Unreachable", "Progressing"]
    doc = d.document({f"c{i}-{s.lower()}": d.cluster(s, {"web": d.bundle(s)}) for i, s in enumerate(states)})
    doc["clusters"]["c6-failed"] = d.cluster("Failed", {"web": d.bundle("Failed")})
    open_page(browser, status_server, doc)
    by_name = sorted(doc["clusters"])
    wait_rows(browser, by_name)

    def sort(value: str) -> None:
        browser.evaluate(
            f"(() => {{ const s = document.getElementById('sort'); s.value = {json.dumps(value)};"
            " s.dispatchEvent(new Event('change')); })()"
        )

    sort("-name")
    wait_rows(browser, by_name[::-1])
    sort("state")
    worst_first = [
        "c2-failed",
        "c6-failed",
        "c4-unreachable",
        "c5-progressing",
        "c3-pending",
        "c1-paused",
        "c0-synced",
    ]
    wait_rows(browser, worst_first)
    assert (
        browser.evaluate("document.querySelector('#matrix-head th.state').getAttribute('aria-sort')")
        == "ascending"
    )
    sort("-state")
    best_first = [
        "c0-synced",
        "c1-paused",
        "c3-pending",
        "c5-progressing",
        "c4-unreachable",
        "c2-failed",
        "c6-failed",
    ]
    wait_rows(browser, best_first)

    # The column headers sort too: a click sorts by that column, a second click reverses.
    browser.click('#matrix-head .sort-btn[data-sort="name"]')
    wait_rows(browser, by_name)
    browser.click('#matrix-head .sort-btn[data-sort="name"]')
    wait_rows(browser, by_name[::-1])
    browser.click('#matrix-head .sort-btn[data-sort="state"]')
    wait_rows(browser, worst_first)
    assert browser.evaluate("document.getElementById('sort').value") == "state"


def test_keyboard_focus_and_enter_show_the_error_text(
    browser: harness.Page, status_server: StatusServer
) -> None:
    open_page(browser, status_server, three_clusters())
    active = "(() => { const a = document.activeElement; const tr = a.closest('tr'); return [tr && tr.dataset.c, a.cellIndex]; })()"

    # Tab from the last filter control passes the two sort buttons of the header, then lands on the
    # grid's single tab stop: the first row's name.
    browser.evaluate("document.getElementById('clear').focus()")
    browser.press("Tab")
    assert browser.evaluate("document.activeElement.textContent") == "Cluster"
    browser.press("Tab")
    assert browser.evaluate("document.activeElement.textContent") == "State"
    browser.press("Tab")
    assert browser.evaluate(active) == ["eu-1", 0]
    assert browser.evaluate("document.querySelectorAll('#matrix-body [tabindex=\"0\"]').length") == 1

    for key in ("ArrowRight", "ArrowRight", "ArrowRight", "ArrowRight"):  # name -> state -> api -> db -> web
        browser.press(key)
    assert browser.evaluate(active) == ["eu-1", 4]
    browser.press("Enter")
    browser.wait_for("!document.getElementById('details').hidden")
    assert browser.evaluate("document.getElementById('details-title').textContent") == "web on eu-1"
    assert browser.evaluate("document.querySelector('#details .error-text').textContent") == (
        "Deployment/web/web: image not found"
    )
    # With details open, moving through the grid updates them.
    browser.press("ArrowDown")
    browser.wait_for("document.getElementById('details-title').textContent === 'web on lab-1'")
    assert "not placed" in browser.evaluate("document.getElementById('details-body').textContent")

    browser.press("Escape")
    browser.wait_for("document.getElementById('details').hidden")
    assert browser.evaluate(active) == ["lab-1", 4]
    # Hovering shows the error too: it is the cell's tooltip.
    browser.hover('tr[data-c="eu-1"] td.cell.s-failed')
    assert (
        browser.evaluate(f"{cell_js('eu-1', 'web')}.title")
        == "web on eu-1: Failed\nDeployment/web/web: image not found"
    )


def test_a_click_on_a_cell_shows_its_details(browser: harness.Page, status_server: StatusServer) -> None:
    open_page(browser, status_server, three_clusters())
    browser.click('tr[data-c="us-1"] td.cell.s-progressing')
    browser.wait_for("document.getElementById('details-title').textContent === 'db on us-1'")
    text = browser.evaluate("document.getElementById('details-body').textContent")
    assert "Progressing" in text
    assert "4 streams · last event" in text


def test_the_details_link_to_the_recent_history_of_the_cluster_and_the_bundle(
    browser: harness.Page, status_server: StatusServer
) -> None:
    open_page(browser, status_server, three_clusters())
    browser.click('tr[data-c="us-1"] td.cell.s-progressing')
    browser.wait_for("document.getElementById('details-title').textContent === 'db on us-1'")
    links = browser.evaluate(
        "[...document.querySelectorAll('#details a.history')].map(a => [a.textContent, a.getAttribute('href')])"
    )
    assert links == [
        ["changes of db on us-1", "api/v1/history?cluster=us-1&bundle=db"],
        ["changes on us-1", "api/v1/history?cluster=us-1"],
        ["changes of db everywhere", "api/v1/history?bundle=db"],
    ]
    assert "fleet history --cluster us-1 --bundle db" in browser.evaluate(
        "document.getElementById('details-body').textContent"
    )
    browser.press("Escape")
    browser.wait_for("document.getElementById('details').hidden")
    browser.click('tr[data-c="lab-1"] th.name')
    browser.wait_for("document.getElementById('details-title').textContent === 'lab-1'")
    assert browser.evaluate(
        "[...document.querySelectorAll('#details a.history')].map(a => a.getAttribute('href'))"
    ) == ["api/v1/history?cluster=lab-1"]


def test_cells_link_to_the_cluster_trace_in_jaeger_when_it_is_configured(
    browser: harness.Page, jaeger_server: StatusServer, status_server: StatusServer
) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    open_page(browser, jaeger_server, three_clusters())
    browser.click('tr[data-c="eu-1"] td.cell.s-failed')
    browser.wait_for("document.querySelector('#details a.trace')")
    assert browser.evaluate("document.querySelector('#details a.trace').href") == (
        f"http://jaeger.example:16686/trace/{trace}"
    )

    open_page(browser, status_server, three_clusters())
    browser.click('tr[data-c="eu-1"] td.cell.s-failed')
    browser.wait_for("!document.getElementById('details').hidden")
    assert browser.evaluate("document.querySelector('#details a.trace')") is None
    assert trace in browser.evaluate("document.getElementById('details-body').textContent")


def test_the_header_shows_the_revision_message_author_age_and_revision_errors(
    browser: harness.Page, status_server: StatusServer
) -> None:
    d = statusdocs
    five_minutes_ago = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    doc = d.document(
        {"eu-1": d.cluster("Synced", {"web": d.bundle("Synced")})},
        committed_at=five_minutes_ago,
        errors=[{"path": "clusters/eu-2.yaml", "line": 4, "message": "metadata.labels: invalid key 'a b'"}],
    )
    open_page(browser, status_server, doc)
    header = browser.evaluate("document.getElementById('revision').textContent")
    assert header.startswith(
        f"Rolling out {d.SHA[:7]} web: bump image to 1.4.2 by Ada Lovelace committed 5 minutes ago"
    )
    assert browser.evaluate("document.querySelector('.sha').title") == d.SHA
    assert browser.evaluate("document.getElementById('revision-errors').hidden") is False
    assert browser.evaluate("document.getElementById('revision-errors-list').textContent") == (
        "clusters/eu-2.yaml:4 metadata.labels: invalid key 'a b'"
    )


def test_a_document_of_nulls_and_empty_maps_still_renders(
    browser: harness.Page, status_server: StatusServer
) -> None:
    empty = {
        "revision": None,
        "message": None,
        "author": None,
        "committedAt": None,
        "fetchedAt": None,
        "errors": None,
    }
    open_page(browser, status_server, {**empty, "clusters": {}})
    assert browser.evaluate("document.getElementById('revision').textContent") == "No revision fetched yet"
    browser.wait_for(
        "document.getElementById('empty').textContent === 'No clusters are registered in this revision.'"
    )

    nulls = {
        "state": None,
        "revision": None,
        "lastSyncAt": None,
        "lastError": None,
        "traceId": None,
        "watch": None,
    }
    status_server.set_status(
        {
            **empty,
            "clusters": {
                "odd": {**nulls, "bundles": None},
                "new": {**nulls, "state": "Degraded", "bundles": {"web": {"state": None, "objects": None}}},
            },
        }
    )
    browser.wait_for("document.querySelectorAll('#matrix-body tr').length === 2")
    assert matrix(browser)["rows"] == {
        "new": {"state": "Degraded", "cells": {"web": "Pending"}},
        "odd": {"state": "Pending", "cells": {"web": "not placed"}},
    }
    browser.click('tr[data-c="odd"] th.name')
    browser.wait_for("document.getElementById('details-title').textContent === 'odd'")
    text = browser.evaluate("document.getElementById('details-body').textContent")
    for expected in ("not watching", "Last syncnever", "no trace recorded", "none placed"):
        assert expected in text


def test_markup_in_the_status_is_shown_as_text_and_never_runs(
    browser: harness.Page, status_server: StatusServer
) -> None:
    d = statusdocs
    evil = '<img src=x onerror="window.__pwned = 1"><script>window.__pwned = 2</script>'
    doc = d.document(
        {
            "eu-1": d.cluster(
                "Failed", {"web": d.bundle("Failed", error=evil)}, labels={"team": "a"}, error=evil
            )
        },
        message=evil,
        author=evil,
        errors=[{"path": evil, "line": 1, "message": evil}],
    )
    open_page(browser, status_server, doc)
    browser.click('tr[data-c="eu-1"] td.cell')
    browser.wait_for("!document.getElementById('details').hidden")
    assert browser.evaluate("document.querySelectorAll('img').length") == 0
    assert browser.evaluate("document.querySelectorAll('body script').length") == 0
    assert browser.evaluate("typeof window.__pwned") == "undefined"
    assert browser.evaluate("document.querySelector('#details .error-text').textContent") == evil
    assert evil in browser.evaluate("document.getElementById('revision').textContent")


def test_an_unreadable_status_keeps_the_last_matrix_and_says_so(
    browser: harness.Page, status_server: StatusServer
) -> None:
    open_page(browser, status_server, three_clusters())
    browser.wait_for("document.getElementById('conn').textContent.startsWith('Live')")
    browser.ignore_problems("status of 503")
    status_server.fail_with(503)
    browser.wait_for("document.getElementById('conn').textContent.includes('HTTP 503')")
    assert sorted(matrix(browser)["rows"]) == ["eu-1", "lab-1", "us-1"]
    # Screen readers hear the change (a status live region), not every poll's time stamp.
    assert (
        browser.evaluate("document.getElementById('conn-alert').textContent")
        == "Cannot read the status: HTTP 503"
    )
    assert browser.evaluate("document.getElementById('conn').getAttribute('role')") is None
    status_server.set_status(three_clusters())
    browser.wait_for("document.getElementById('conn').textContent.startsWith('Live')")
    assert (
        browser.evaluate("document.getElementById('conn-alert').textContent")
        == "The status is readable again."
    )


def test_the_page_asks_for_nothing_but_itself_and_the_status(
    browser: harness.Page, status_server: StatusServer
) -> None:
    open_page(browser, status_server, three_clusters())
    reads = status_server.status_reads
    browser.wait_for(f"window.fleetUi.polls > 2 && {reads} < {status_server.status_reads} + 1")
    assert set(status_server.paths) <= {"/", "/ui/app.js", "/ui/style.css", "/api/v1/status"}
    assert browser.evaluate("window.fleetUi.pollIntervalMs") == 200


def test_a_fleet_of_500_clusters_and_30_bundles_renders_every_cell(
    browser: harness.Page, status_server: StatusServer, artifacts: pathlib.Path
) -> None:
    doc = statusdocs.large(500, 30)
    placed = sum(len(c["bundles"]) for c in doc["clusters"].values())
    for scheme in ("light", "dark"):
        browser.set_color_scheme(scheme)
        open_page(browser, status_server, doc)
        counts = browser.evaluate(
            "[document.querySelectorAll('#matrix-body tr').length, document.querySelectorAll('#matrix-body td.cell').length,"
            " document.querySelectorAll('#matrix-body td.cell:not(.s-none)').length]"
        )
        assert counts == [500, 500 * 30, placed]
        render = browser.evaluate("window.fleetUi.lastRender")
        print(
            f"\n500x30 first render ({scheme}): {render['ms']:.0f} ms in the page (script, style and layout)"
        )
        browser.click("#matrix-body td.cell.s-failed")
        browser.wait_for("!document.getElementById('details').hidden")
        shot = browser.screenshot(artifacts / f"ui-500x30-{scheme}.png")
        assert shot.stat().st_size > 10_000
    # The header row stays in view when the matrix scrolls (sticky headers).
    browser.evaluate("document.getElementById('matrix-wrap').scrollTop = 5000")
    top = browser.evaluate(
        "document.querySelector('#matrix-head th.bundle').getBoundingClientRect().top"
        " - document.getElementById('matrix-wrap').getBoundingClientRect().top"
    )
    assert 0 <= top <= 2
    # So do the cluster and state columns when it scrolls sideways.
    browser.set_viewport(700, 600)
    browser.evaluate("document.getElementById('matrix-wrap').scrollLeft = 400")
    left = browser.evaluate(
        "[document.querySelector('#matrix-body th.name').getBoundingClientRect().left"
        " - document.getElementById('matrix-wrap').getBoundingClientRect().left,"
        " document.getElementById('matrix-wrap').scrollLeft]"
    )
    assert 0 <= left[0] <= 2 and left[1] == 400


# WCAG contrast ratio of each legend badge's text against its background (or the page's, if transparent).
CONTRAST_JS = """(() => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const page = getComputedStyle(document.body).backgroundColor;
  const out = {};
  for (const badge of document.querySelectorAll('#legend .badge')) {
    const s = getComputedStyle(badge);
    const bg = rgb(s.backgroundColor).length === 4 && rgb(s.backgroundColor)[3] === 0 ? page : s.backgroundColor;
    const [a, b] = [lum(rgb(s.color)), lum(rgb(bg))];
    out[badge.textContent.replace(/^\\S+\\s/, '')] = Math.round(((Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)) * 10) / 10;
  }
  return {page, contrast: out};
})()"""


def test_every_state_is_readable_in_light_and_dark_mode(
    browser: harness.Page, status_server: StatusServer, artifacts: pathlib.Path
) -> None:
    backgrounds = {}
    for scheme in ("light", "dark"):
        browser.set_color_scheme(scheme)
        open_page(browser, status_server, statusdocs.demo())
        browser.click('tr[data-c="eu-prod-2"] td.cell.s-failed')
        browser.wait_for("!document.getElementById('details').hidden")
        result = browser.evaluate(CONTRAST_JS)
        backgrounds[scheme] = result["page"]
        assert sorted(result["contrast"]) == sorted(
            ["Failed", "Unreachable", "Progressing", "Pending", "Paused", "Suspended", "Synced", "not placed"]
        )
        low = {state: ratio for state, ratio in result["contrast"].items() if ratio < 4.5}
        assert low == {}, f"{scheme}: text contrast under 4.5:1 for {low}"
        browser.screenshot(artifacts / f"ui-demo-{scheme}.png")
    assert backgrounds == {"light": "rgb(255, 255, 255)", "dark": "rgb(13, 17, 23)"}


def test_keyboard_focus_survives_a_live_update_of_its_row(
    browser: harness.Page, status_server: StatusServer
) -> None:
    d = statusdocs
    open_page(browser, status_server, three_clusters())
    browser.click('tr[data-c="us-1"] td.cell.s-progressing')
    browser.press("Escape")
    browser.wait_for("document.getElementById('details').hidden")
    active = "(a => [a.closest('tr').dataset.c, a.cellIndex, a.getAttribute('aria-label')])(document.activeElement)"
    assert browser.evaluate(active) == ["us-1", 3, "Progressing"]

    doc = three_clusters()
    doc["clusters"]["us-1"] = d.cluster(
        "Synced", {"db": d.bundle("Synced")}, labels={"env": "prod", "region": "us"}
    )
    status_server.set_status(doc)
    browser.wait_for("document.querySelector('tr[data-c=\"us-1\"] td.state').textContent.includes('Synced')")
    assert browser.evaluate(active) == ["us-1", 3, "Synced"]
    browser.press("ArrowUp")
    assert browser.evaluate(active) == ["lab-1", 3, "not placed"]


def test_an_unchanged_status_is_revalidated_not_downloaded_again(
    browser: harness.Page, status_server: StatusServer
) -> None:
    open_page(browser, status_server, three_clusters())
    before = status_server.not_modified
    browser.wait_for("window.fleetUi.polls > 3")
    assert status_server.not_modified > before
    assert browser.evaluate("window.fleetUi.renders") == 1  # nothing changed, nothing redrawn
    doc = three_clusters()
    doc["clusters"]["lab-1"]["state"] = "Failed"
    status_server.set_status(doc)
    browser.wait_for("document.querySelector('tr[data-c=\"lab-1\"] td.state').textContent.includes('Failed')")


def test_a_cluster_gone_from_the_status_leaves_the_matrix(
    browser: harness.Page, status_server: StatusServer
) -> None:
    open_page(browser, status_server, three_clusters())
    browser.click('tr[data-c="us-1"] th.name')
    browser.wait_for("document.getElementById('details-title').textContent === 'us-1'")
    doc = three_clusters()
    del doc["clusters"]["us-1"]
    status_server.set_status(doc)
    wait_rows(browser, ["eu-1", "lab-1"])
    assert matrix(browser)["columns"] == ["api", "web"]
    assert browser.evaluate("document.getElementById('details-body').textContent") == (
        "This cluster is no longer in the status document."
    )


def test_live_updates_do_not_shift_the_layout(browser: harness.Page, status_server: StatusServer) -> None:
    doc = statusdocs.large(60, 12)
    open_page(browser, status_server, doc)
    browser.evaluate(
        "window.__shift = 0; new PerformanceObserver(list => { for (const e of list.getEntries()) window.__shift += e.value; })"
        ".observe({type: 'layout-shift', buffered: false})"
    )
    long_error = "Deployment/x/y: " + "a very long error " * 20
    for state, error in [("Progressing", None), ("Failed", long_error), ("Synced", None)]:
        changed = json.loads(json.dumps(doc))
        for name in sorted(changed["clusters"])[::3]:
            changed["clusters"][name]["state"] = state
            for b in changed["clusters"][name]["bundles"].values():
                b["state"], b["lastError"] = state, error
        renders = browser.evaluate("window.fleetUi.renders")
        status_server.set_status(changed)
        browser.wait_for(f"window.fleetUi.renders > {renders}")
    browser.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)))")
    assert browser.evaluate("window.__shift") == 0
