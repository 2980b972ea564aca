"""`fleet validate`: check a GitOps repository and print every problem at once.

Owns: the flags of `validate` and its output: ``PATH:LINE: message`` lines on stdout (warnings prefixed
``warning:``), then exit 1 when any is an error; otherwise a one-line summary
``N clusters, M bundles, K objects`` and exit 0. A repository that cannot be read at all (not a git
repository, unknown revision, a nonexistent path, over a whole-revision limit) is one ``PATH:1: message``
line (PATH: the repository as given) and exit 1: docs/repository.md allows validate only 0 or 1.
Does not: parse or decide anything itself (`fleet.core.repository` does, `fleet.clients.sources` renders the bundles
with a Kustomize, Helm or SOPS source, and `fleet.core.validation.check` adds the checks that need placement and
render).
"""

from __future__ import annotations

import functools

import anyio.to_thread
import typer

from fleet.cli import common, rendering
from fleet.clients import sources
from fleet.core import errors, model, validation


def unreadable(repo_path: str, error: errors.FleetError) -> model.Problem:
    """The ``PATH:1: message`` problem of a repository that cannot be read at all.

    PATH is the repository as given (``.`` by default); the message drops its own ``PATH: `` prefix so
    the path is not printed twice.
    """
    shown = repo_path or "."
    message = str(error)
    if message.startswith(f"{shown}: "):
        message = message[len(shown) + 2 :]
    return model.Problem(shown, 1, message)


async def _validate(repo_path: str, rev: str | None, path: str, settings: sources.Settings) -> int:
    try:
        repo, snap = await rendering.load(repo_path, rev=rev, path=path, worktree_default=True)
    except errors.FleetError as e:
        typer.echo(str(unreadable(repo_path, e)))
        common.info("1 error(s), 0 warning(s)")
        return 1
    problems = list(repo.problems)
    expanded: dict[str, model.Expansion] = {}
    # Placement (CEL) and rendering are CPU-bound: off the event loop (docs/placement.md, "Cost").
    placed, expanded = await rendering.expand(repo, snap, settings)
    problems.extend(
        await anyio.to_thread.run_sync(
            functools.partial(validation.check, repo, expanded=expanded, placed=placed)
        )
    )
    problems.sort(key=lambda p: (p.path, p.line))
    for p in problems:
        typer.echo(str(p))
    n_errors = sum(1 for p in problems if p.severity is model.Severity.ERROR)
    if n_errors:
        n_warnings = len(problems) - n_errors
        common.info(f"{n_errors} error(s), {n_warnings} warning(s)")
        return 1
    objects = 0
    for b in repo.bundles.values():
        renders = list(expanded[b.name].renders.values()) if b.name in expanded else []
        # A bundle with a source counts the objects of its largest render (they may differ per cluster).
        objects += max((len(r.manifests) for r in renders), default=0) if b.sourced else len(b.manifests)
    typer.echo(f"{len(repo.clusters)} clusters, {len(repo.bundles)} bundles, {objects} objects")
    return 0


def validate(
    repo: str = typer.Argument(
        ".", help="The repository folder (a git work tree, or any folder with --rev unset)."
    ),
    rev: common.WorktreeRev = None,
    path: common.Subpath = "",
    helm_binary: str | None = rendering.helm_option(),
    sops_age_key_file: str | None = rendering.key_option(),
    render_timeout: str = rendering.timeout_option(),
) -> None:
    """Check the repository: every problem as PATH:LINE: message; exit 1 on any error."""
    try:
        settings = rendering.settings(
            helm_binary=helm_binary, age_key_file=sops_age_key_file, render_timeout=render_timeout
        )
    except errors.InputError as e:
        common.fail(str(e), code=1)  # docs/repository.md: validate exits 0 or 1 only
    code = common.run(_validate, repo, rev, path, settings)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `fleet` app."""
    app.command("validate")(validate)
