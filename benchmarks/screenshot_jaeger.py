"""The screenshot in docs/tracing.md: a commit's trace in Jaeger's UI, made from real parts.

Starts the real control plane (etcd, two kube-apiservers, their controller-managers) and Jaeger all-in-one
of tests/support/kube.py, serving the Jaeger UI from `--ui` (the binary `make tools` builds has no UI
assets: see docs/tracing.md for how they were built), runs the scenario of tests/support/traced.py
(`fleet serve` exporting to that Jaeger: two commits and a drift repair), opens the second commit's trace
at `<jaeger>/trace/<id>` in headless Chromium (tests/browser/harness.py), waits until the trace view
lists every span of it, and saves a PNG of the viewport.

Run: ``python -m benchmarks.screenshot_jaeger --ui DIR [--out docs/jaeger-trace.png] [--width 1400]
[--height 820]``. Not a benchmark: ``python -m benchmarks`` does not run it (its name does not start with
``bench_``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

import anyio.from_thread
import httpx

from tests.browser import harness
from tests.support import kube, traced

SPANS = 13  # the second commit's trace: docs/tracing.md, tests/e2e/test_real_tracing.py


def trace_of(jaeger: kube.Jaeger, sha: str) -> str:
    resp = httpx.get(
        f"{jaeger.query_url}/api/traces",
        params={"service": "fleet", "operation": f"revision {sha[:7]}", "lookback": "1h"},
        timeout=10,
    )
    resp.raise_for_status()
    (found,) = resp.json()["data"]
    trace_id = str(found["traceID"])
    jaeger.wait_trace(trace_id, spans=SPANS)
    return trace_id


def screenshot(ui: pathlib.Path, out: pathlib.Path, *, width: int, height: int) -> str:
    """Runs it all and saves the PNG to `out`; returns the trace id shown."""
    with tempfile.TemporaryDirectory(prefix="fleet-jaeger-shot-") as tmp:
        work = pathlib.Path(tmp)
        with (
            kube.control_plane(work / "kube", clusters=2) as plane,
            kube.jaeger(work / "jaeger", ui_assets=ui) as jaeger,
        ):
            run = traced.run(plane, jaeger, work / "fleet")
            trace_id = trace_of(jaeger, run.second)
            with (
                anyio.from_thread.start_blocking_portal() as portal,
                harness.running_browser(portal) as browser,
            ):
                page = browser.new_page(width=width, height=height)
                page.goto(f"{jaeger.query_url}/trace/{trace_id}", timeout=60)
                # Every span's name is in the trace view's rows once it has rendered the whole trace.
                names = json.dumps(["fetch", "parse", "placement", "rollout web", "prune web", "health web"])
                page.wait_for(
                    f"""(() => {{
                      const text = document.body.innerText;
                      return {names}.every(n => text.includes(n))
                        && text.includes('revision {run.second[:7]}')
                        && text.includes('cluster real-2');
                    }})()""",
                    60,
                )
                # Open the details of the canary cluster's span: its attributes (fleet.clients.statedb, counts).
                page.evaluate(
                    """(() => {
                      const row = [...document.querySelectorAll('.span-name')]
                        .find(e => e.textContent.includes('cluster real-1'));
                      row.click();
                    })()"""
                )
                page.wait_for("document.body.innerText.includes('fleet.objects.deleted')", 10)
                page.screenshot(out)
                if page.problems:
                    print(f"the page reported: {page.problems}", file=sys.stderr)
                browser.close_page(page)
    return trace_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ui", type=pathlib.Path, required=True, help="a built Jaeger UI (index.html, static/)"
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/jaeger-trace.png"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=820)
    args = parser.parse_args()
    reason = kube.skip_reason((*kube.CONTROL_PLANE, "jaeger"))
    if reason:
        raise SystemExit(reason)
    if not (args.ui / "index.html").is_file():
        raise SystemExit(f"--ui {args.ui}: no index.html there (a built Jaeger UI is needed)")
    trace_id = screenshot(args.ui, args.out, width=args.width, height=args.height)
    print(f"trace {trace_id}: screenshot {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
