"""`fleet history`, `fleet status --revision`, and the history and notification options of `fleet serve`.

Owns: the flags and output of ``fleet history [--cluster C] [--bundle B] [--since 24h] [--revision SHA]
[--limit N]`` (``GET /api/v1/history``) and of the revision view of ``fleet status --revision SHA``
(``GET /api/v1/revisions/SHA``: which clusters hold a commit, for which bundles, since when); and the
checks of `fleet serve`'s ``--history-retention``, ``--notify-url``, ``--notify-format``,
``--commit-status*`` and ``--external-url`` into `fleet.controller.audit.Settings` and `fleet.controller.notify.Settings`
(docs/notifications.md). Does not: query the database or send anything itself.

Exit codes of `fleet history`: 0 an answer (possibly no entry), 2 a usage error or no answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import typer

from fleet.cli import common, serveapi
from fleet.controller import audit, notify, server, telemetry
from fleet.core import errors, notices
from fleet.core import history as hist

DAY = 86400.0
_DAYS = re.compile(r"^\s*(\d+(?:\.\d+)?)d\s*$")


def _get(
    ctx: typer.Context, server_url: str, path: str, *, timeout: float, params: dict[str, str]
) -> httpx.Response:
    url = serveapi.api(ctx, server_url, timeout, server_param="server_url") + path
    return serveapi.request("GET", url, timeout=timeout, params=params)


def _short(rev: Any) -> str:
    return str(rev)[:12] if rev else "-"


def _objects(objects: Any) -> str:
    if not isinstance(objects, dict) or not objects:
        return "-"
    marks = {"created": "+", "configured": "~", "deleted": "-", "failed": "!", "conflict": "!c"}
    return " ".join(f"{marks.get(k, k)}{v}" for k, v in objects.items())


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def history_table(entries: list[dict[str, Any]]) -> str:
    """The entries of ``GET /api/v1/history`` as a table (newest first)."""
    rows = [["TIME", "CLUSTER", "BUNDLE", "OUTCOME", "FROM", "TO", "OBJECTS", "ACTOR", "NOTE"]]
    for e in entries:
        note = " ".join(p for p in (e.get("reason") or "", e.get("message") or "") if p)
        rows.append(
            [
                str(e.get("at") or ""),
                e.get("cluster") or "*",
                e.get("bundle") or "*",
                str(e.get("outcome") or ""),
                _short(e.get("fromRevision")),
                _short(e.get("toRevision")),
                _objects(e.get("objects")),
                str(e.get("actor") or "-"),
                note[:80],
            ]
        )
    return _table(rows)


def revision_table(doc: dict[str, Any]) -> str:
    """``GET /api/v1/revisions/SHA`` as text: who holds it since when, and where it has not arrived."""
    lines = [f"revision {doc.get('revision')}" + (" (the newest)" if doc.get("newest") else "")]
    rollouts = doc.get("rollouts") or {}
    if rollouts:
        lines.append("rollouts: " + ", ".join(f"{b} {s}" for b, s in sorted(rollouts.items())))
    holders = doc.get("holders") or {}
    rows = [["CLUSTER", "BUNDLE", "STATE", "SINCE"]]
    for c, per in sorted(holders.items()):
        for b, v in sorted(per.items()):
            rows.append([c, b, str(v.get("state") or ""), str(v.get("since") or "-")])
    lines.append("")
    lines.append(_table(rows) if len(rows) > 1 else "no cluster holds it")
    elsewhere = doc.get("elsewhere") or {}
    if elsewhere:
        rows = [["CLUSTER", "BUNDLE", "STATE", "HOLDS"]]
        for c, per in sorted(elsewhere.items()):
            for b, v in sorted(per.items()):
                rows.append([c, b, str(v.get("state") or ""), _short(v.get("revision"))])
        lines += ["", "not there yet:", _table(rows)]
    unknown = doc.get("unknown") or {}
    if unknown:  # several replicas: clusters no shard's status summary holds (docs/scaling.md)
        rows = [["CLUSTER", "WHY"]] + [[c, str(why)] for c, why in sorted(unknown.items())]
        lines += ["", "status unknown (these clusters may hold it or not):", _table(rows)]
    for e in doc.get("errors") or []:
        lines.append(f"error: {e.get('path')}: {e.get('message')}")
    return "\n".join(lines)


def history_command(
    ctx: typer.Context,
    cluster: str | None = typer.Option(None, "--cluster", help="Only this cluster."),
    bundle: str | None = typer.Option(None, "--bundle", help="Only this bundle."),
    since: str | None = typer.Option(
        None, "--since", help="A duration back from now (24h) or an RFC 3339 time."
    ),
    revision: str | None = typer.Option(
        None, "--revision", help="Only changes to or from this commit (an abbreviation works)."
    ),
    limit: int = typer.Option(
        hist.DEFAULT_LIMIT, "--limit", help=f"At most this many entries (1 to {hist.MAX_LIMIT})."
    ),
    server_url: common.ServerUrl = common.DEFAULT_SERVER,
    output: common.OutputFormat = "table",
    timeout: common.AnswerTimeout = 10.0,
) -> None:
    """Which revision reached which cluster, when, and who caused it (newest first)."""
    serveapi.check_format(output)
    try:
        hist.query(cluster=cluster, bundle=bundle, since=since, revision=revision, limit=limit, now=0.0)
    except ValueError as e:
        common.fail(f"--{e!s}", code=2)
    params = {"limit": str(limit)}
    for name, value in (("cluster", cluster), ("bundle", bundle), ("since", since), ("revision", revision)):
        if value:
            params[name] = value
    resp = _get(ctx, server_url, "/history", timeout=timeout, params=params)
    if resp.status_code != 200:
        common.fail(f"{telemetry.redact_url(str(resp.url))}: {serveapi.error(resp)}", code=2)
    try:
        doc = resp.json()
        entries = doc["entries"]
    except (ValueError, KeyError, TypeError):
        common.fail("fleet serve answered something that is not a history", code=2)
    if output == "json":
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    if not entries:
        typer.echo("no change recorded" + (" matching these filters" if len(params) > 1 else ""))
        return
    typer.echo(history_table(entries))
    if doc.get("more"):
        common.info(f"(more entries: raise --limit above {limit} or narrow the filters)")


def revision_status(
    ctx: typer.Context, server_url: str, revision: str, *, output: str, timeout: float
) -> None:
    """`fleet status --revision SHA`: exit 0 when known, 1 when fleet knows nothing of it or the answer is
    incomplete (several replicas: a cluster no status summary holds, the state of record unreadable), 2
    when the server cannot be asked."""
    try:
        hist.check_revision(revision)
    except ValueError as e:
        common.fail(f"--{e}", code=2)
    resp = _get(ctx, server_url, f"/revisions/{revision.strip().lower()}", timeout=timeout, params={})
    if resp.status_code == 404:
        common.fail(serveapi.error(resp), code=1)
    if resp.status_code != 200:
        common.fail(f"{telemetry.redact_url(str(resp.url))}: {serveapi.error(resp)}", code=2)
    try:
        doc = resp.json()
    except ValueError:
        common.fail("fleet serve answered something that is not JSON", code=2)
    if output == "json":
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        typer.echo(revision_table(doc))
    if doc.get("unknown") or doc.get("errors"):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("history")(history_command)


# -- fleet serve's options ---------------------------------------------------------------------------------


def parse_retention(text: str, *, flag: str) -> float:
    """``30d``, ``720h`` or any duration `fleet.core.durations` reads; from one hour to ten years."""
    m = _DAYS.match(text)
    if m is not None:
        seconds = float(m.group(1)) * DAY
        if not 3600 <= seconds <= 3650 * DAY:
            raise errors.InputError(f"{flag}: {text!r} is not between 1h and 3650d")
        return seconds
    return common.parse_duration(text, flag=flag, minimum=3600.0, maximum=3650 * DAY)


def history_settings(*, instance: str, retention: str, flag: str) -> audit.Settings:
    return audit.Settings(instance=instance, retention=parse_retention(retention, flag=flag))


def notify_settings(
    *,
    repo: str,
    instance: str,
    notify_urls: list[str],
    notify_format: str,
    commit_status: str | None,
    commit_status_url: str | None,
    commit_status_token_file: str | None,
    commit_status_repo: str | None,
    external_url: str | None,
    flags: dict[str, str],
) -> notify.Settings:
    """The receivers and their settings; `errors.InputError` naming the option for anything wrong (never
    repeating a URL: a webhook URL may carry a token)."""
    fmt = common.check_choice(
        notify_format, flag=flags["notify_format"], choices=(notices.JSON_FORMAT, notices.SLACK_FORMAT)
    )
    receivers: list[notices.Receiver] = []
    seen: set[str] = set()
    for i, url in enumerate(notify_urls, 1):
        url = common.check_http_url(url, flag=f"{flags['notify_url']} (number {i})")
        key = "webhook-" + hashlib.sha256(url.encode()).hexdigest()[:12]
        if key in seen:
            raise errors.InputError(f"{flags['notify_url']} (number {i}): given twice")
        seen.add(key)
        receivers.append(
            notices.Receiver(
                key=key, kind=notices.WEBHOOK, url=url, format=fmt, label=f"webhook {notices.label_of(url)}"
            )
        )
    token_files: dict[str, Path] = {}
    if commit_status is not None:
        kind = common.check_choice(
            commit_status, flag=flags["commit_status"], choices=(notices.GITHUB, notices.GITLAB)
        )
        base = commit_status_url or (notices.GITHUB_API if kind == notices.GITHUB else notices.GITLAB_API)
        base = common.check_http_url(base, flag=flags["commit_status_url"]).rstrip("/")
        if not commit_status_token_file:
            raise errors.InputError(
                f"{flags['commit_status_token_file']}: needed with {flags['commit_status']}"
            )
        server.read_secret_file(commit_status_token_file, option=flags["commit_status_token_file"])
        path = commit_status_repo or notices.repo_path(repo)
        if not path:
            raise errors.InputError(
                f"{flags['commit_status_repo']}: needed: the --repo of fleet serve names no repository "
                f"({'OWNER/NAME' if kind == notices.GITHUB else 'the GitLab project path'})"
            )
        parts = path.strip("/").split("/")
        if (
            len(parts) < 2
            or any(not p or p in (".", "..") or not re.fullmatch(r"[A-Za-z0-9_.-]+", p) for p in parts)
            or (kind == notices.GITHUB and len(parts) != 2)
        ):
            raise errors.InputError(
                f"{flags['commit_status_repo']}: {path!r} is not "
                + ("OWNER/NAME" if kind == notices.GITHUB else "a GitLab project path (group/project)")
            )
        receivers.append(
            notices.Receiver(
                key=kind, kind=kind, url=base, repo="/".join(parts), label=f"{kind} {notices.label_of(base)}"
            )
        )
        token_files[kind] = Path(commit_status_token_file)
    elif commit_status_url or commit_status_token_file or commit_status_repo:
        raise errors.InputError(
            f"{flags['commit_status_url']}, {flags['commit_status_token_file']} and "
            f"{flags['commit_status_repo']} need {flags['commit_status']} github|gitlab"
        )
    if external_url is not None:
        external_url = common.check_http_url(external_url, flag=flags["external_url"])
    return notify.Settings(
        receivers=tuple(receivers), token_files=token_files, instance=instance, external_url=external_url
    )
