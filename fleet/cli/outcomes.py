"""What `fleet plan` and `fleet render` print from: a revision read, expanded, placed and rendered
(`outcome`, through `fleet.core.pipeline`), its problems on stderr, and the options they share.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import typer

from fleet.cli import common, rendering
from fleet.clients import sources
from fleet.core import errors, model, pipeline, rollout

REDACTED = "<redacted>"


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


@dataclass(frozen=True)
class Outcome:
    """Placement and render of one revision: placed pairs (rendered), errors per pair."""

    repo: model.Repo
    placed: model.PlacementResult
    desired: Mapping[tuple[str, str], model.DesiredSet]
    bundles: Mapping[str, tuple[str, ...]]
    errors: Mapping[str, Mapping[str, str]]
    waves: Mapping[str, rollout.Membership]


def outcome(
    repo: model.Repo,
    *,
    placed: model.PlacementResult | None = None,
    expanded: Mapping[str, model.Expansion] | None = None,
) -> Outcome:
    """Place (unless `placed` is given) and render every pair of `repo`, the sourced bundles from
    `expanded` (`fleet.clients.sources.expand`). Blocking; run in a thread."""
    rendered = pipeline.render_revision(repo, revision=repo.revision, placed=placed, expanded=expanded)
    placed, desired, waves = rendered.placed, rendered.desired, rendered.waves
    errs: dict[str, dict[str, str]] = {b: dict(cs) for b, cs in placed.errors.items()}
    for (b, c), msg in rendered.render_errors.items():
        errs.setdefault(b, {})[c] = msg
    for (b, c), msg in rendered.wave_errors().items():
        errs.setdefault(b, {}).setdefault(c, msg)
    names = sorted(set(repo.bundles) | set(repo.broken_bundles))
    bundles = {b: tuple(c for c in placed.bundles.get(b, ()) if c not in errs.get(b, {})) for b in names}
    return Outcome(
        repo=repo,
        placed=placed,
        desired=desired,
        bundles=bundles,
        errors={b: dict(sorted(cs.items())) for b, cs in sorted(errs.items()) if cs},
        waves=waves,
    )


async def load(
    repo_path: str, *, rev: str | None, path: str, code: int = 2
) -> tuple[model.Repo, model.Snapshot]:
    """The parsed repository and its files; when it cannot be read at all, the reason on stderr and exit
    `code`."""
    try:
        return await rendering.load(repo_path, rev=rev, path=path, worktree_default=True)
    except errors.FleetError as e:
        common.fail(str(e), code=code)


async def read_outcome(repo: model.Repo, snapshot: model.Snapshot, settings: sources.Settings) -> Outcome:
    """Placement, the sources step, then render (what would be applied, exactly)."""
    placed, expanded = await rendering.expand(repo, snapshot, settings)
    return await anyio.to_thread.run_sync(functools.partial(outcome, repo, placed=placed, expanded=expanded))


def report_problems(repo: model.Repo) -> bool:
    """Print the repository's problems on stderr; True when any is an error."""
    for p in repo.problems:
        common.info(str(p))
    return bool(repo.errors)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def renderer_settings(
    helm_binary: str | None, key_file: str | None, render_timeout: str, *, code: int = 2
) -> sources.Settings:
    try:
        return rendering.settings(
            helm_binary=helm_binary, age_key_file=key_file, render_timeout=render_timeout
        )
    except errors.InputError as e:
        common.fail(str(e), code=code)
