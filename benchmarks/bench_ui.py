"""Status page speed in a real headless Chromium: how long the matrix takes to draw at fleet scale.

Measures, for a status document of N clusters x M bundles (default 500 x 30), the page's own
`performance.now()` numbers (see `window.fleetUi.lastRender` in fleet/controller/ui/app.js):

- first render: building the whole matrix, including style and layout (`ms`), and until the next
  frame was produced (`framedMs`, includes paint);
- load to matrix: from navigation start to the end of the first render (fetch, parse, render);
- live update: a poll in which 5% of the clusters changed (rows diffed by cluster);
- filter: typing a label selector that keeps about a third of the rows.

Run: ``python -m benchmarks.bench_ui [--clusters 500] [--bundles 30] [--runs 5] [--screenshot docs/ui.png]``
(needs Chromium: ``.ci/install-browser``). Prints medians; writes nothing unless asked for a screenshot.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import statistics
import sys
from typing import Any

import anyio.from_thread

from tests.browser import harness, statusdocs, statusserver


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _render(page: harness.Page) -> dict[str, Any]:
    page.wait_for(
        "window.fleetUi && window.fleetUi.lastRender && window.fleetUi.lastRender.framedMs !== null", 30
    )
    result: dict[str, Any] = page.evaluate("window.fleetUi.lastRender")
    return result


def _changed(doc: dict[str, Any], fraction: float, state: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    names = sorted(out["clusters"])
    for name in names[:: max(1, round(1 / fraction))]:
        c = out["clusters"][name]
        c["state"] = state
        for b in c["bundles"].values():
            b["state"] = state
    return out


def measure(*, clusters: int, bundles: int, runs: int) -> dict[str, Any]:
    doc = statusdocs.large(clusters, bundles)
    size = len(json.dumps(doc))
    first, framed, load, update, filtering = [], [], [], [], []
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        harness.running_browser(portal) as browser,
        statusserver.running(portal, poll_interval=0.25) as server,
    ):
        for _ in range(runs):
            page = browser.new_page(width=1280, height=800)
            server.set_status(doc)
            page.goto(server.url)
            r = _render(page)
            first.append(r["ms"])
            framed.append(r["framedMs"])
            load.append(r["at"])

            renders = page.evaluate("window.fleetUi.renders")
            server.set_status(_changed(doc, 0.05, "Progressing"))
            page.wait_for(f"window.fleetUi.renders > {renders}", 10)
            r = _render(page)
            assert r["kind"] == "diff", r
            update.append(r["ms"])

            renders = page.evaluate("window.fleetUi.renders")
            page.evaluate("document.getElementById('selector').focus()")
            page.type_text("region=eu")
            page.wait_for(
                f"window.fleetUi.renders > {renders} && window.fleetUi.lastRender.reason === 'filter'", 10
            )
            filtering.append(_render(page)["ms"])
            browser.close_page(page)
    return {
        "clusters": clusters,
        "bundles": bundles,
        "runs": runs,
        "status_bytes": size,
        "first_render_ms": _median(first),
        "first_frame_ms": _median(framed),
        "load_to_matrix_ms": _median(load),
        "live_update_5pct_ms": _median(update),
        "filter_ms": _median(filtering),
    }


def screenshot(path: pathlib.Path, *, scheme: str) -> None:
    """The demo fleet with one failed cell's details open, as a PNG for docs/ui.md."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        harness.running_browser(portal) as browser,
        statusserver.running(portal, poll_interval=2.0, jaeger_url="http://localhost:16686") as server,
    ):
        page = browser.new_page(width=1200, height=720)
        page.set_color_scheme(scheme)
        server.set_status(statusdocs.demo())
        page.goto(server.url)
        page.wait_for("document.documentElement.dataset.renders >= 1")
        page.click('tr[data-c="eu-prod-2"] td.cell.s-failed')
        page.wait_for("!document.getElementById('details').hidden")
        page.evaluate("document.activeElement.blur()")
        page.screenshot(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_ui", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--bundles", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--screenshot", type=pathlib.Path, help="also save the demo page as a PNG here")
    parser.add_argument("--scheme", choices=["light", "dark"], default="light")
    args = parser.parse_args(argv or [])  # `python -m benchmarks` calls main() with none
    result = measure(clusters=args.clusters, bundles=args.bundles, runs=args.runs)
    print(
        f"status page, {result['clusters']} clusters x {result['bundles']} bundles, median of {result['runs']} runs"
    )
    print(f"  status document          {result['status_bytes'] / 1e6:.2f} MB")
    print(f"  first render             {result['first_render_ms']:.0f} ms (script, style, layout)")
    print(f"  first render to frame    {result['first_frame_ms']:.0f} ms (plus paint)")
    print(f"  navigation to matrix     {result['load_to_matrix_ms']:.0f} ms")
    print(f"  live update (5% changed) {result['live_update_5pct_ms']:.0f} ms")
    print(f"  label filter             {result['filter_ms']:.0f} ms")
    if args.screenshot:
        screenshot(args.screenshot, scheme=args.scheme)
        print(f"  screenshot               {args.screenshot} ({args.screenshot.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
