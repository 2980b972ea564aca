"""What every command module shares: running async code under typer, reporting errors, checking options.

Owns: `run` (anyio.run with typer.Exit unwrapped from exception groups), `fail` (message on stderr and a
non-zero exit), `info` (progress and "what was read" lines on stderr), and the checks every command runs
on its options before doing anything (`parse_duration` with bounds, `check_count`, `check_number`,
`check_instance`, `parse_listen`, `check_choice`, `check_http_url`, `check_rev`, `check_branch`): each
raises `errors.InputError` whose message starts with the option (`--interval: ...`, or `--interval (from
FLEET_INTERVAL): ...` when the value came from the environment, see `flag`); commands turn it into exit 2,
the code of a usage error; `read_repository` and `load_repository`, how the commands read a local
repository (its work tree or a commit) and say on stderr what they read; the options more than one
command declares, each once as an ``Annotated`` type (`Subpath`, `ServerUrl`, ...; the default stays in
the command's signature, as typer wants). Does not: hold settings, or parse a repository itself
(`fleet.core.repository.parse`).
"""

from __future__ import annotations

import math
import os
import re
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import anyio
import pygit2
import typer

from fleet.clients import source
from fleet.core import durations, errors, model, repository, yamlsafe

T = TypeVar("T")


def _first_exit(exc: BaseException) -> BaseException | None:
    """Find a typer.Exit / SystemExit / KeyboardInterrupt inside (nested) exception groups."""
    if isinstance(exc, typer.Exit | SystemExit | KeyboardInterrupt | typer.Abort):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _first_exit(sub)
            if found is not None:
                return found
    return None


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run an async function from a typer command; `typer.Exit` raised inside task groups keeps its code."""
    try:
        return anyio.run(fn, *args)
    except BaseExceptionGroup as group:
        found = _first_exit(group)
        if found is not None:
            raise found from None
        raise


def info(message: str) -> None:
    """A line for the user on stderr (progress, what was read); stdout stays for results."""
    typer.echo(message, err=True)


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print an error on stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    sys.stderr.flush()
    raise typer.Exit(code)


MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


def flag(ctx: typer.Context, name: str) -> str:
    """How a message names the option of parameter `name`: ``--interval``, or ``--interval (from
    FLEET_INTERVAL)`` when the command took the value from the option's environment variable."""
    for param in ctx.command.params:
        if param.name != name:
            continue
        option = max(param.opts, key=len) if param.opts else name
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "ENVIRONMENT" and isinstance(param.envvar, str):
            return f"{option} (from {param.envvar})"
        return option
    return name


def parse_duration(text: str, *, flag: str, minimum: float = 0.0, maximum: float | None = None) -> float:
    """Seconds from ``1h``, ``5m``, ``90s``, ``1m30s``, ``200ms``, ``0.5s`` or a bare number of seconds
    (`fleet.core.durations`), within bounds.

    Raises `errors.InputError` naming the flag for anything else: not a duration, not finite (``nan``,
    ``inf``), negative, below `minimum` or above `maximum`.
    """
    try:
        value = durations.parse(text)
    except ValueError as e:
        raise errors.InputError(f"{flag}: {e}") from None
    if value < minimum:
        raise errors.InputError(f"{flag}: {text!r} is below the minimum of {durations.show(minimum)}")
    if maximum is not None and value > maximum:
        raise errors.InputError(f"{flag}: {text!r} is above the maximum of {durations.show(maximum)}")
    return value


def check_count(value: int, *, flag: str, minimum: int, maximum: int | None = None) -> int:
    """An integer option within bounds."""
    if value < minimum:
        raise errors.InputError(f"{flag}: {value} is below the minimum of {minimum}")
    if maximum is not None and value > maximum:
        raise errors.InputError(f"{flag}: {value} is above the maximum of {maximum}")
    return value


def check_number(value: float, *, flag: str, minimum: float, maximum: float | None = None) -> float:
    """A finite number option within bounds (``nan`` and ``inf`` are refused)."""
    if not math.isfinite(value):
        raise errors.InputError(f"{flag}: {value} is not a finite number")
    if value < minimum:
        raise errors.InputError(f"{flag}: {value:g} is below the minimum of {minimum:g}")
    if maximum is not None and value > maximum:
        raise errors.InputError(f"{flag}: {value:g} is above the maximum of {maximum:g}")
    return value


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def check_instance(value: str, *, flag: str = "--instance") -> str:
    """The instance name: a DNS-1123 label, since it is a label value and part of ConfigMap names."""
    if not _DNS_LABEL.fullmatch(value):
        raise errors.InputError(
            f"{flag}: {value!r} is not a DNS-1123 label (lower-case letters, digits and '-', starting and "
            "ending with a letter or digit, at most 63 characters): it becomes a label value and part of "
            "ConfigMap names"
        )
    return value


def parse_listen(text: str, *, flag: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (port 0 to 65535; 0 picks a free one); an empty host is 127.0.0.1."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise errors.InputError(
            f"{flag} {text!r}: expected HOST:PORT with a port from 0 to 65535 (e.g. 127.0.0.1:8080)"
        )
    return host.strip("[]") or "127.0.0.1", int(port)


def check_choice(value: str, *, flag: str, choices: Iterable[str]) -> str:
    """One of `choices`, compared without case; returns it lower-cased."""
    options = list(choices)
    if value.strip().lower() not in options:
        raise errors.InputError(f"{flag}: {value!r} is not one of {', '.join(options)}")
    return value.strip().lower()


def check_http_url(text: str, *, flag: str) -> str:
    """An absolute ``http://`` or ``https://`` URL with a host. The message never repeats the URL (it
    might carry a credential)."""
    try:
        parts = urllib.parse.urlsplit(text.strip())
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number from 0 to 65535
    except ValueError:
        ok = False
    if not ok:
        raise errors.InputError(f"{flag}: expected an absolute http:// or https:// URL with a host")
    return text.strip()


def check_rev(value: str | None, *, flag: str = "--rev") -> str | None:
    """A revision option: absent, or a non-empty name without whitespace or control characters."""
    if value is None:
        return None
    if not value or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise errors.InputError(
            f"{flag}: {value!r} is not a revision (empty, or contains whitespace or control characters)"
        )
    if value.startswith("-"):
        raise errors.InputError(f"{flag}: {value!r} looks like a command-line option, not a revision")
    return value


def check_branch(value: str, *, flag: str = "--branch") -> str:
    """A branch name git accepts (``git check-ref-format --branch``)."""
    if value.startswith("refs/"):
        raise errors.InputError(f"{flag}: {value!r}: give the branch's name (main), not a ref")
    if not value or value.startswith("-") or not pygit2.reference_is_valid_name(f"refs/heads/{value}"):
        raise errors.InputError(f"{flag}: {value!r} is not a valid branch name")
    return value


# ----------------------------------------------------------------------------------------------------------
# Options more than one command declares (the renderer options: `fleet.cli.rendering`).

# validate, plan, render: the work tree unless --rev.
WorktreeRepo = Annotated[str, typer.Argument(help="The repository folder (a git work tree).")]
WorktreeRev = Annotated[
    str | None, typer.Option("--rev", help=f"Read this commit instead of the work tree. {source.REV_HELP}")
]
Subpath = Annotated[str, typer.Option("--path", help="Subfolder holding clusters/ and bundles/.")]

# sync, diff: a commit unless --worktree, and how the clusters are reached.
GitopsRepo = Annotated[str, typer.Argument(help="The GitOps repository (a local git repository).")]
CommitRev = Annotated[
    str | None, typer.Option("--rev", help=f"Commit to read (default HEAD). {source.REV_HELP}")
]
Worktree = Annotated[bool, typer.Option("--worktree", help="Read the files on disk instead of a commit.")]
Kubeconfig = Annotated[
    str | None, typer.Option("--kubeconfig", help="Kubeconfig (default $KUBECONFIG, then ~/.kube/config).")
]
Instance = Annotated[str, typer.Option("--instance", help="Owner label value.")]
AllowExecAuth = Annotated[
    bool,
    typer.Option("--allow-exec-auth", help="Allow kubeconfig users that run exec/auth-provider plugins."),
]
AllowEmptyRepo = Annotated[
    bool, typer.Option("--allow-empty-repo", help="Act on a revision with no cluster file or no bundle.")
]
RequestTimeout = Annotated[
    str, typer.Option("--request-timeout", help="Deadline of one API request attempt, first to last byte.")
]
RetryBudget = Annotated[
    str,
    typer.Option(
        "--retry-budget", help="Time one request may spend retrying before its cluster is given up."
    ),
]
RoundTimeout = Annotated[
    str, typer.Option("--round-timeout", help="Deadline of one cluster's round (health waits excluded).")
]

# status, history, rollout: a running fleet serve's API.
DEFAULT_SERVER = "http://127.0.0.1:8080"
ServerUrl = Annotated[str, typer.Option("--server", help="URL of a running fleet serve.")]
AnswerTimeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the answer.")]
OutputFormat = Annotated[str, typer.Option("--format", help="table or json.")]


# ----------------------------------------------------------------------------------------------------------
# Reading a local repository for a command (validate, plan, render, diff, sync).


async def read_repository(
    repo: str | Path,
    *,
    rev: str | None,
    path: str = "",
    worktree: bool = False,
    worktree_default: bool = True,
    limits: yamlsafe.Limits = yamlsafe.DEFAULT_LIMITS,
    say: Callable[[str], None] | None = info,
) -> model.Snapshot:
    """Read the snapshot `load_repository` would parse, and say on stderr what was read."""
    if rev is not None and worktree:
        raise errors.InputError("--rev and --worktree exclude each other")
    use_worktree = rev is None and (worktree or worktree_default)
    where = Path(repo)
    sub = f" --path {path}" if path else ""
    shown_root = await anyio.to_thread.run_sync(os.path.abspath, where)
    if use_worktree:
        snap = await source.read_worktree(where, subpath=path, limits=limits)
        if say is not None:
            say(f"reading work tree {shown_root}{sub} (revision null)")
        return snap
    wanted = rev if rev is not None else "HEAD"
    snap = await source.read_revision(where, wanted, subpath=path, limits=limits)
    if say is not None:
        short = (snap.revision or "")[:12]
        say(f"reading revision {short} ({wanted}) of {shown_root}{sub}: {snap.message or ''}".rstrip(": "))
    return snap


async def load_repository(
    repo: str | Path,
    *,
    rev: str | None,
    path: str = "",
    worktree: bool = False,
    worktree_default: bool = True,
    limits: yamlsafe.Limits = yamlsafe.DEFAULT_LIMITS,
    say: Callable[[str], None] | None = info,
) -> model.Repo:
    """Read and parse a local repository for a command.

    `rev` given: that commit. Otherwise the work tree when `worktree` (``--worktree``) or
    `worktree_default` (validate, plan, render), else ``HEAD`` (diff, sync). Says on stderr which revision
    or work tree it read. Raises `errors.SourceError` / `errors.InputError` when it cannot read at all
    (not a git repository, unknown revision, a limit on the whole revision); problems of the content are
    in the returned `Repo`.
    """
    snap = await read_repository(
        repo, rev=rev, path=path, worktree=worktree, worktree_default=worktree_default, limits=limits, say=say
    )
    return await repository.parse_in_thread(snap, limits=limits)
