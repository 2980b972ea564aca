"""`fleet rollout`: look at and act on the rollouts of a running `fleet serve` (docs/rollouts.md).

Owns: the flags and output of `fleet rollout status|pause|resume|approve|skip|abort|rollback`, which
call the HTTP API (`GET /api/v1/rollouts[/BUNDLE]`, `POST /api/v1/rollouts/BUNDLE/ACTION`). Does not:
decide anything (the server's rollouts do) or format tables itself (`fleet.cli.statusview`).

Exit codes: 0 done (an action accepted, a status shown with nothing halted); 1 the server refused the
action (409: it does not apply to the rollout's state; 404: no such bundle or rollout; 401), or a status
shows a halted rollout; 2 a usage error or no answer from the server.
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import Any

import typer

from fleet.cli import common, serveapi, statusview
from fleet.controller import telemetry

rollout_app = typer.Typer(
    name="rollout",
    help="Look at and act on the rollouts of a running fleet serve (docs/rollouts.md).",
    no_args_is_help=True,
)

REASON = typer.Option("", "--reason", help="Why: recorded with the action.")
ACTOR = typer.Option(None, "--actor", help="Who acts (default: your login name); recorded with the action.")
TOKEN = typer.Option(
    None, "--api-token-file", help="File holding the server's bearer token (--api-token-file of fleet serve)."
)


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "unknown"


def _token(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        value = path.read_text().strip()
    except OSError as e:
        common.fail(f"--api-token-file {path}: cannot read: {e.strerror}", code=2)
    if not value:
        common.fail(f"--api-token-file {path}: the file is empty", code=2)
    return {"Authorization": f"Bearer {value}"}


@rollout_app.command("status")
def status(
    ctx: typer.Context,
    bundle: str | None = typer.Argument(
        None, help="One bundle's rollout in detail; all bundles when omitted."
    ),
    server: common.ServerUrl = common.DEFAULT_SERVER,
    output: common.OutputFormat = "table",
    revision: str | None = typer.Option(
        None, "--revision", help="An earlier rollout of BUNDLE, by its revision."
    ),
    timeout: common.AnswerTimeout = 10.0,
) -> None:
    """Show the rollouts: waves, which clusters are where, soak and deadlines left, why one halted."""
    serveapi.check_format(output)
    if revision is not None and bundle is None:
        common.fail("--revision needs a BUNDLE", code=2)
    base = serveapi.api(ctx, server, timeout) + "/rollouts"
    url = f"{base}/{bundle}" if bundle else base
    resp = serveapi.request("GET", url, timeout=timeout, params={"revision": revision} if revision else None)
    if resp.status_code == 404:
        common.fail(serveapi.error(resp), code=1)
    if resp.status_code != 200:
        common.fail(f"{telemetry.redact_url(url)}: {serveapi.error(resp)}", code=2)
    try:
        doc: Any = resp.json()
    except ValueError:
        common.fail(f"{telemetry.redact_url(url)}: the answer is not JSON", code=2)
    if output == "json":
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
    elif bundle:
        typer.echo(statusview.rollout_detail(doc))
    elif doc:
        typer.echo(statusview.rollouts_table(doc))
    else:
        typer.echo("no rollouts yet")
    shown = [doc] if bundle else list(doc.values())
    if any(r.get("state") == "Halted" for r in shown):
        raise typer.Exit(1)


def _act(
    ctx: typer.Context,
    action: str,
    bundle: str,
    *,
    server: str,
    timeout: float,
    reason: str,
    actor: str | None,
    token_file: Path | None,
    extra: dict[str, str] | None = None,
) -> None:
    base = serveapi.api(ctx, server, timeout) + "/rollouts"
    params = {"reason": reason, "actor": _actor(actor), **(extra or {})}
    url = f"{base}/{bundle}/{action}"
    resp = serveapi.request("POST", url, timeout=timeout, headers=_token(token_file), params=params)
    if resp.status_code in (401, 404, 409):
        common.fail(serveapi.error(resp), code=1)
    if resp.status_code != 202:
        common.fail(f"{telemetry.redact_url(url)}: {serveapi.error(resp)}", code=2)
    try:
        doc = resp.json()
    except ValueError:
        common.fail(f"{telemetry.redact_url(url)}: the answer is not JSON", code=2)
    typer.echo(
        f"{action}: accepted; rollout of {bundle} at {str(doc.get('revision'))[:12]} is {doc.get('state')}"
    )
    if doc.get("reason"):
        typer.echo(f"  {doc['reason']}")


def _simple(action: str, summary: str) -> None:
    def command(
        ctx: typer.Context,
        bundle: str = typer.Argument(..., help="The bundle whose latest rollout to act on."),
        server: common.ServerUrl = common.DEFAULT_SERVER,
        reason: str = REASON,
        actor: str | None = ACTOR,
        token_file: Path | None = TOKEN,
        timeout: common.AnswerTimeout = 10.0,
    ) -> None:
        _act(
            ctx,
            action,
            bundle,
            server=server,
            timeout=timeout,
            reason=reason,
            actor=actor,
            token_file=token_file,
        )

    command.__doc__ = summary
    rollout_app.command(action)(command)


_simple("pause", "Halt the rollout (latched): nothing more is sent until resume.")
_simple("resume", "Lift a halt or pause; the clusters whose failure halted it get another try.")
_simple("abort", "End the rollout: moved clusters keep the new revision, the others keep theirs.")
_simple("rollback", "Return every cluster the rollout moved to the revision it had before, at once.")


@rollout_app.command("approve")
def approve(
    ctx: typer.Context,
    bundle: str = typer.Argument(..., help="The bundle whose latest rollout to act on."),
    wave: str | None = typer.Option(None, "--wave", help="The wave to approve (default: the one waiting)."),
    server: common.ServerUrl = common.DEFAULT_SERVER,
    reason: str = REASON,
    actor: str | None = ACTOR,
    token_file: Path | None = TOKEN,
    timeout: common.AnswerTimeout = 10.0,
) -> None:
    """Approve the wave waiting for approval, or the named one in advance."""
    _act(
        ctx,
        "approve",
        bundle,
        server=server,
        timeout=timeout,
        reason=reason,
        actor=actor,
        token_file=token_file,
        extra={"wave": wave} if wave else None,
    )


@rollout_app.command("skip")
def skip(
    ctx: typer.Context,
    bundle: str = typer.Argument(..., help="The bundle whose latest rollout to act on."),
    cluster: str = typer.Argument(..., help="The cluster the rollout should no longer wait for."),
    server: common.ServerUrl = common.DEFAULT_SERVER,
    reason: str = REASON,
    actor: str | None = ACTOR,
    token_file: Path | None = TOKEN,
    timeout: common.AnswerTimeout = 10.0,
) -> None:
    """Stop waiting for one cluster (it keeps what it has); lifts a halt it alone caused."""
    _act(
        ctx,
        "skip",
        bundle,
        server=server,
        timeout=timeout,
        reason=reason,
        actor=actor,
        token_file=token_file,
        extra={"cluster": cluster},
    )


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_app)
