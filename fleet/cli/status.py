"""`fleet status`: what a running `fleet serve` reports (its status document as a table or JSON,
`--revision`: where a commit is), exit 1 when anything is not well.
"""

from __future__ import annotations

import json

import typer

from fleet.cli import common, history, serveapi, statusview
from fleet.controller import telemetry


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
        serveapi.check_format(output)
        if revision is not None:
            history.revision_status(ctx, server_url, revision, output=output, timeout=timeout)
            return
        url = serveapi.api(ctx, server_url, timeout, server_param="server_url") + "/status"
        resp = serveapi.request("GET", url, timeout=timeout, failing="cannot read the status")
        if not resp.is_success:
            common.fail(f"{telemetry.redact_url(url)}: HTTP {resp.status_code}", code=2)
        try:
            doc = resp.json()
        except ValueError as e:
            common.fail(f"{telemetry.redact_url(url)}: {type(e).__name__}: cannot read the status", code=2)
        if output == "json":
            typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        else:
            typer.echo(statusview.table(doc))
        states = [c.get("state") for c in (doc.get("clusters") or {}).values()]
        saving = (doc.get("stateStore") or {}).get("saving", True)
        if any(s in ("Failed", "Unreachable") for s in states) or doc.get("errors") or not saving:
            raise typer.Exit(1)
