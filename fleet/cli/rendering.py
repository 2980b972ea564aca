"""What every command that renders shares: the renderer options, checked at start, and the sources step.

Owns: the options ``--helm-binary``, ``--sops-age-key-file`` (also ``SOPS_AGE_KEY_FILE``) and
``--render-timeout`` of `validate`, `plan`, `render`, `diff`, `sync` and `serve` (docs/sources.md),
`settings` (checks them before anything is read: a missing helm program named by the option, a key file
that holds no age identity, a time limit out of bounds, each an `errors.InputError` naming the option and
never a key), `load` (a revision's snapshot and its parsed `Repo`, since a source reads files the parser
does not keep) and `expand` (placement, then `fleet.clients.sources.expand`, off the event loop where it blocks).
Does not: render (`fleet.core.render`) or run a renderer itself (`fleet.clients.sources`).
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio.to_thread
import typer

from fleet.cli import common
from fleet.clients import sources
from fleet.core import errors, model, placement, repository

HELM_HELP = "The helm program (Helm 4) that renders spec.source.helm charts (default: helm on PATH)."
KEY_HELP = "age identity file SOPS decrypts spec.decrypt: sops files with (never kept in the repository)."
TIMEOUT_HELP = "Time limit of one renderer run (helm, kustomize, sops), e.g. 60s."


def helm_option(*, serve: bool = False) -> str | None:
    return typer.Option(None, "--helm-binary", envvar="FLEET_HELM_BINARY" if serve else None, help=HELM_HELP)


def key_option(*, serve: bool = False) -> str | None:
    env = ["FLEET_SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY_FILE"] if serve else ["SOPS_AGE_KEY_FILE"]
    return typer.Option(None, "--sops-age-key-file", envvar=env, help=KEY_HELP)


def timeout_option(*, serve: bool = False) -> str:
    return typer.Option(
        "60s", "--render-timeout", envvar="FLEET_RENDER_TIMEOUT" if serve else None, help=TIMEOUT_HELP
    )


def _age_identities(text: str) -> int:
    """How many age identities (``AGE-SECRET-KEY-1...`` lines) `text` holds; raises ValueError naming the
    line number of one that does not parse (never its content)."""
    import pyrage

    count = 0
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("AGE-SECRET-KEY-"):
            raise ValueError(f"line {n} is not an age identity (AGE-SECRET-KEY-1...)")
        try:
            pyrage.x25519.Identity.from_str(line)
        except Exception:  # pyrage raises its own error types
            raise ValueError(f"line {n} is not a valid age identity") from None
        count += 1
    return count


def settings(
    *,
    helm_binary: str | None,
    age_key_file: str | None,
    render_timeout: str,
    concurrency: int = 2,
    flags: dict[str, str] | None = None,
) -> sources.Settings:
    """The renderer settings from the options, checked (see the module docstring)."""
    names = {"helm": "--helm-binary", "key": "--sops-age-key-file", "timeout": "--render-timeout"}
    names.update(flags or {})
    timeout = common.parse_duration(render_timeout, flag=names["timeout"], minimum=1.0, maximum=common.HOUR)
    if helm_binary is not None:
        path = Path(helm_binary)
        if not helm_binary.strip() or not path.is_file():
            raise errors.InputError(f"{names['helm']} {helm_binary}: no such file")
        if not os.access(path, os.X_OK):
            raise errors.InputError(f"{names['helm']} {helm_binary}: not executable")
    if age_key_file is not None:
        try:
            text = Path(age_key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else "cannot read it as text"
            raise errors.InputError(f"{names['key']} {age_key_file}: {reason}") from None
        try:
            found = _age_identities(text)
        except ValueError as e:
            raise errors.InputError(f"{names['key']} {age_key_file}: {e}") from None
        if not found:
            raise errors.InputError(f"{names['key']} {age_key_file}: holds no age identity")
    return sources.Settings(
        helm_binary=helm_binary,
        age_key_file=age_key_file,
        timeout=timeout,
        concurrency=max(1, concurrency),
    )


async def load(
    repo_path: str, *, rev: str | None, path: str, worktree: bool = False, worktree_default: bool = True
) -> tuple[model.Repo, model.Snapshot]:
    """Read (saying on stderr what) and parse a revision; the snapshot too, for the sources step."""
    snap = await common.read_repository(
        repo_path, rev=rev, path=path, worktree=worktree, worktree_default=worktree_default
    )
    return await repository.parse_in_thread(snap), snap


async def expand(
    repo: model.Repo, snapshot: model.Snapshot, settings: sources.Settings
) -> tuple[model.PlacementResult, dict[str, model.Expansion]]:
    """Placement (in a worker thread), then the sources step for the placed bundles that need it."""
    placed = await anyio.to_thread.run_sync(placement.place, repo)
    expanded = await sources.expand(repo, placed, snapshot, settings=settings)
    return placed, expanded
