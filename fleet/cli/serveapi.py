"""The client side of `fleet serve`'s HTTP API (docs/operations.md, "HTTP API"), shared by the commands
that ask a running server: `fleet status`, `fleet history` and `fleet rollout`.

Owns: checking their ``--format``, ``--timeout`` and ``--server`` before anything is sent (a usage
error, exit 2), one request within ``--timeout`` (no answer: exit 2, the URL named without
credentials), and the server's refusal as one line (`error`: ``HTTP 409: <its message>``). Does not:
decide what an answer means for the exit code, or render it (each command; `fleet.cli.statusview`).
"""

from __future__ import annotations

import httpx
import typer

from fleet.cli import common
from fleet.controller import telemetry
from fleet.core import errors


def check_format(output: str) -> None:
    """``--format``: table or json."""
    if output not in ("table", "json"):
        common.fail(f"--format {output!r}: expected table or json", code=2)


def api(ctx: typer.Context, server: str, timeout: float, *, server_param: str = "server") -> str:
    """``SERVER/api/v1`` once ``--timeout`` and ``--server`` (the parameter `server_param`) are checked."""
    try:
        common.check_number(timeout, flag=common.flag(ctx, "timeout"), minimum=0.1, maximum=common.HOUR)
        common.check_http_url(server, flag=common.flag(ctx, server_param))
    except errors.InputError as e:
        common.fail(str(e), code=2)
    return server.rstrip("/") + "/api/v1"


def request(
    method: str,
    url: str,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    failing: str = "no answer from fleet serve",
) -> httpx.Response:
    """One request; no answer within `timeout` fails the command (exit 2) with `failing`."""
    try:
        return httpx.request(method, url, timeout=timeout, headers=headers, params=params)
    except httpx.HTTPError as e:
        common.fail(f"{telemetry.redact_url(url)}: {type(e).__name__}: {failing}", code=2)


def error(resp: httpx.Response) -> str:
    """The server's answer as one line: ``HTTP 409``, with its ``error`` message when it has one."""
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    message = body.get("error") if isinstance(body, dict) else None
    return f"HTTP {resp.status_code}: {message}" if message else f"HTTP {resp.status_code}"
