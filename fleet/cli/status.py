"""`fleet status`: what a running `fleet serve` reports (its status document as a table or JSON,
`--revision`: where a commit is), exit 1 when anything is not well.
"""

from __future__ import annotations

import json

import httpx
import typer

from fleet.cli import common, history, statusview
from fleet.controller import telemetry
from fleet.core import errors


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status_command(
        ctx: typer.Context,
        server_url: common.ServerUrl = common.DEFAULT_SERVER,
        output: common.OutputFormat = "table",
        timeout: common.AnswerTimeout = 10.0,
        revision: str | None = typer.Option(
            None,
            "--revision",
            help="Where is this commit: which clusters hold it, for which bundles, since when.",
        ),
    ) -> None:
        """Show what a running `fleet serve` reports."""
        if output not in ("table", "json"):
            common.fail(f"--format {output!r}: expected table or json", code=2)
        if revision is not None:
            history.revision_status(ctx, server_url, revision, output=output, timeout=timeout)
            return
        try:
            common.check_number(timeout, flag=common.flag(ctx, "timeout"), minimum=0.1, maximum=common.HOUR)
            common.check_http_url(server_url, flag=common.flag(ctx, "server_url"))
        except errors.InputError as e:
            common.fail(str(e), code=2)
        url = server_url.rstrip("/") + "/api/v1/status"
        try:
            resp = httpx.get(url, timeout=timeout)
            resp.raise_for_status()
            doc = resp.json()
        except httpx.HTTPStatusError as e:
            common.fail(f"{telemetry.redact_url(url)}: HTTP {e.response.status_code}", code=2)
        except (httpx.HTTPError, ValueError) as e:
            common.fail(f"{telemetry.redact_url(url)}: {type(e).__name__}: cannot read the status", code=2)
        if output == "json":
            typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        else:
            typer.echo(statusview.table(doc))
        states = [c.get("state") for c in (doc.get("clusters") or {}).values()]
        saving = (doc.get("stateStore") or {}).get("saving", True)
        if any(s in ("Failed", "Unreachable") for s in states) or doc.get("errors") or not saving:
            raise typer.Exit(1)
