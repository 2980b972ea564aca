"""The screenshot in docs/ui.md, made from the real demo: `fleet demo` (simulated clusters from
fleet/demo, the demo repository, `fleet serve`) in a child process, its status page in headless Chromium.

Starts `fleet demo --dir <temporary folder> --listen 127.0.0.1:0`, reads the page's URL from the
instructions the demo prints, waits until every cluster is Synced (the paused one Paused; after
`--settle-timeout` seconds without that it fails and writes nothing), opens the page, waits until its
matrix shows the status document's states, opens the details of one cell, and saves a PNG of the
viewport.

Run: ``python -m benchmarks.screenshot_demo [--out docs/ui.png] [--width 1200] [--height 700]
[--scheme light|dark] [--cell eu-prod-1/web] [--settle-timeout 90]`` (needs Chromium:
``.ci/install-browser``). Not a benchmark: ``python -m benchmarks`` does not run it (its name does not
start with ``bench_``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
from typing import Any

import anyio.from_thread

from tests.browser import demoprocess, harness

MATRIX_JS = """(() => {
  const columns = [...document.querySelectorAll('#matrix-head th.bundle')].map(th => th.textContent);
  const rows = {};
  for (const tr of document.querySelectorAll('#matrix-body tr')) {
    const cells = {};
    tr.querySelectorAll('td.cell').forEach((td, i) => { cells[columns[i]] = td.getAttribute('aria-label'); });
    rows[tr.dataset.c] = cells;
  }
  return rows;
})()"""


def _expected(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    clusters = doc["clusters"]
    bundles = sorted({b for c in clusters.values() for b in c["bundles"]})
    return {
        name: {b: c["bundles"][b]["state"] if b in c["bundles"] else "not placed" for b in bundles}
        for name, c in clusters.items()
    }


def screenshot(
    out: pathlib.Path, *, width: int, height: int, scheme: str, cell: str, settle_timeout: float = 90.0
) -> dict[str, int]:
    """Runs the demo, saves the PNG to `out`; returns the demo's cluster count by state."""
    cluster, _, bundle = cell.partition("/")
    with tempfile.TemporaryDirectory(prefix="fleet-demo-shot-") as tmp:
        with demoprocess.running(pathlib.Path(tmp) / "demo") as demo:
            doc = demo.wait_for(
                demoprocess.healthy, timeout=settle_timeout, what="every demo cluster Synced or Paused"
            )
            with (
                anyio.from_thread.start_blocking_portal() as portal,
                harness.running_browser(portal) as browser,
            ):
                page = browser.new_page(width=width, height=height)
                page.set_color_scheme(scheme)
                page.goto(demo.url + "/")
                page.wait_for(
                    f"""(() => {{
                      const sort = v => v && typeof v === 'object'
                        ? Object.fromEntries(Object.keys(v).sort().map(k => [k, sort(v[k])])) : v;
                      return JSON.stringify(sort({MATRIX_JS})) === JSON.stringify(sort({json.dumps(_expected(doc))}));
                    }})()""",
                    30,
                )
                column = page.evaluate(
                    "[...document.querySelectorAll('#matrix-head th.bundle')].map(th => th.textContent)"
                    f".indexOf({json.dumps(bundle)})"
                )
                if column < 0:
                    raise SystemExit(f"--cell {cell}: the demo has no bundle {bundle!r}")
                page.click(f'tr[data-c="{cluster}"] td.cell:nth-of-type({column + 2})')
                page.wait_for(
                    f"document.getElementById('details-title').textContent === '{bundle} on {cluster}'"
                )
                # The click scrolled its cell to the middle; show the matrix from its first row again.
                page.evaluate(
                    "document.activeElement && document.activeElement.blur();"
                    "document.getElementById('matrix-wrap').scrollTop = 0; window.scrollTo(0, 0)"
                )
                page.screenshot(out)
                if page.problems:
                    raise SystemExit(f"the page reported errors: {page.problems}")
                browser.close_page(page)
    counts: dict[str, int] = {}
    for c in doc["clusters"].values():
        counts[c["state"]] = counts.get(c["state"], 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/ui.png"))
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=700)
    parser.add_argument("--scheme", choices=("light", "dark"), default="light")
    parser.add_argument("--cell", default="eu-prod-1/web", help="CLUSTER/BUNDLE whose details are open")
    parser.add_argument("--settle-timeout", type=float, default=90.0, help="seconds to wait for the demo")
    args = parser.parse_args()
    counts = screenshot(
        args.out,
        width=args.width,
        height=args.height,
        scheme=args.scheme,
        cell=args.cell,
        settle_timeout=args.settle_timeout,
    )
    print(f"demo clusters by state: {counts}")
    print(f"screenshot {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
