"""`fleet plan` and `fleet render`: the pure half of fleet (placement and render) on a repository.

Owns: the flags and the output of `plan` (table or JSON; `--explain`, `--diff-rev`) and `render` (YAML of
the exact objects one cluster would receive, Secret values redacted unless `--show-secrets`).
Does not: place or render anything itself (`fleet.core.placement`, `fleet.core.render` do, in worker threads), read
git (`fleet.cli.rendering.load` does and says on stderr what it read), run renderers
(`fleet.clients.sources` does, through `fleet.cli.rendering.expand`), or talk to clusters.

Output contract (docs/placement.md): `plan --format json` prints only
``{"revision": SHA|null, "bundles": {BUNDLE: [CLUSTER, ...sorted]}, "errors": {BUNDLE: {CLUSTER: MESSAGE}}}``
on stdout. A pair in error (CEL, dependsOn, render, an object claimed twice) is in `errors`, not in
`bundles`. With `--diff-rev OLD`, the same three keys, `bundles` listing only the clusters whose pair the
change adds, removes or whose rendered objects change (every bundle of either revision, possibly `[]`);
the kind of change (added/removed/changed) is in the table format only. Exit 0, or 1 when any pair is in error or the repository has errors (printed on stderr as
``PATH:LINE: message``), and 1 too when the repository (or the `--diff-rev` base) cannot be read at all
(the reason on stderr). `render` exits 2 in that case.
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
import yaml

from fleet.cli import common, rendering
from fleet.clients import source, sources
from fleet.core import durations, errors, model, pipeline, placement, rollout

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


async def _load(
    repo_path: str, *, rev: str | None, path: str, code: int = 2
) -> tuple[model.Repo, model.Snapshot]:
    """The parsed repository and its files; when it cannot be read at all, the reason on stderr and exit
    `code`."""
    try:
        return await rendering.load(repo_path, rev=rev, path=path, worktree_default=True)
    except errors.FleetError as e:
        common.fail(str(e), code=code)


async def _outcome(repo: model.Repo, snapshot: model.Snapshot, settings: sources.Settings) -> Outcome:
    """Placement, the sources step, then render (what would be applied, exactly)."""
    placed, expanded = await rendering.expand(repo, snapshot, settings)
    return await anyio.to_thread.run_sync(functools.partial(outcome, repo, placed=placed, expanded=expanded))


def _report_problems(repo: model.Repo) -> bool:
    """Print the repository's problems on stderr; True when any is an error."""
    for p in repo.problems:
        common.info(str(p))
    return bool(repo.errors)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


# ----------------------------------------------------------------------------------------------------------
# plan


def _plan_table(out: Outcome) -> None:
    width = max([len("BUNDLE"), *(len(b) for b in out.bundles)])
    typer.echo(f"{'BUNDLE':<{width}}  CLUSTERS")
    for b, clusters in out.bundles.items():
        note = " (broken)" if b in out.repo.broken_bundles else ""
        shown = ", ".join(clusters) if clusters else "-"
        typer.echo(f"{b:<{width}}  {shown}{note}")
    if out.errors:
        typer.echo("")
        typer.echo("ERRORS")
        for b, per in out.errors.items():
            for c, msg in per.items():
                typer.echo(f"{b} on {c}: {msg}")
    rolled = {b: m for b, m in out.waves.items() if out.bundles.get(b)}
    if rolled:
        typer.echo("")
        typer.echo("WAVES (in order; see docs/rollouts.md)")
        for b, membership in rolled.items():
            specs = {w.name: w for w in out.repo.bundles[b].rollout.waves}
            parts = []
            for name, clusters in membership.waves:
                w = specs[name]
                notes = [f"{w.max_concurrency} at a time"]
                if w.soak:
                    notes.append(f"soak {durations.show(w.soak)}")
                if w.approval is not model.Approval.NONE:
                    notes.append(f"approval {w.approval}")
                parts.append(f"{name} ({', '.join(notes)}): {', '.join(clusters) or '-'}")
            typer.echo(f"{b:<{width}}  " + " -> ".join(parts))


def _explain(out: Outcome, bundle: str, fmt: Format) -> None:
    if bundle not in out.repo.bundles:
        if bundle in out.repo.broken_bundles:
            common.fail(f"bundle {bundle!r} is broken; fix the problems above first")
        known = ", ".join(sorted(out.repo.bundles)) or "none"
        common.fail(f"no bundle named {bundle!r} (bundles: {known})")
    per_cluster = out.placed.explanations.get(bundle, {})
    errs = out.errors.get(bundle, {})
    placed = set(out.bundles.get(bundle, ()))
    rows: dict[str, dict[str, Any]] = {}
    membership = out.waves.get(bundle)
    wave_of = {c: name for name, cs in (membership.waves if membership else ()) for c in cs}
    for c in sorted(per_cluster):
        state = "error" if c in errs else "selected" if c in placed else "not selected"
        rows[c] = {
            "result": state,
            "clauses": [{"clause": r.clause, "held": r.held, "reason": r.reason} for r in per_cluster[c]],
            "error": errs.get(c),
        }
        if c in placed or c in wave_of or (membership and c in membership.errors):
            cluster = out.repo.clusters[c]
            rows[c]["wave"] = wave_of.get(c)
            rows[c]["waveReasons"] = placement.explain_wave(out.repo.bundles[bundle], cluster)
    if fmt is Format.JSON:
        _print_json({"revision": out.repo.revision, "bundle": bundle, "clusters": rows})
        return
    typer.echo(f"bundle {bundle}")
    for c, row in rows.items():
        typer.echo(f"  {c}: {row['result']}")
        for r in row["clauses"]:
            verdict = "held" if r["held"] is True else "failed" if r["held"] is False else "error"
            typer.echo(f"    {r['clause']}: {verdict}: {r['reason']}")
        wave_error = str(row["error"] or "").startswith(("no wave ", "rollout wave "))
        clause_error = any(r["held"] is None or r["clause"] == "dependsOn" for r in row["clauses"])
        if row["error"] and not clause_error and not wave_error:
            typer.echo(f"    render: error: {row['error']}")
        for reason in row.get("waveReasons", ()):
            typer.echo(f"    {reason}")


def _diff(old: Outcome, new: Outcome) -> dict[str, dict[str, str]]:
    """Pairs a change adds, removes, or whose rendered objects change (hash without the revision)."""
    changes: dict[str, dict[str, str]] = {}
    old_pairs = {(b, c) for b, cs in old.bundles.items() for c in cs}
    new_pairs = {(b, c) for b, cs in new.bundles.items() for c in cs}
    for b, c in sorted(old_pairs | new_pairs):
        if (b, c) not in old_pairs:
            kind = "added"
        elif (b, c) not in new_pairs:
            if c in new.errors.get(b, {}):
                continue  # an error now: reported under errors, nothing is removed for it
            kind = "removed"
        elif old.desired[(b, c)].hash != new.desired[(b, c)].hash:
            kind = "changed"
        else:
            continue
        changes.setdefault(b, {})[c] = kind
    return changes


async def _plan(
    repo_path: str,
    rev: str | None,
    path: str,
    fmt: Format,
    explain: str | None,
    diff_rev: str | None,
    settings: sources.Settings,
) -> int:
    repo, snap = await _load(
        repo_path, rev=rev, path=path, code=1
    )  # docs/placement.md: plan exits only 0 or 1
    invalid = _report_problems(repo)  # includes the warning for a revision without clusters or bundles
    out = await _outcome(repo, snap, settings)
    if explain is not None:
        _explain(out, explain, fmt)
    elif diff_rev is not None:
        base_repo, base_snap = await _load(repo_path, rev=diff_rev, path=path, code=1)
        base = await _outcome(base_repo, base_snap, settings)
        changes = _diff(base, out)
        if fmt is Format.JSON:
            # docs/placement.md: the same three keys as plain `plan --format json`, `bundles` listing only
            # the changed pairs; every bundle of either revision appears, possibly with [].
            names = sorted(set(base.bundles) | set(out.bundles))
            _print_json(
                {
                    "revision": repo.revision,
                    "bundles": {b: sorted(changes.get(b, {})) for b in names},
                    "errors": out.errors,
                }
            )
        else:
            marks = {"added": "+", "removed": "-", "changed": "~"}
            for b, per in changes.items():
                for c, kind in per.items():
                    typer.echo(f"{marks[kind]} {b} on {c} ({kind})")
            if not changes:
                typer.echo("no placed pair changes")
            for b, per_err in out.errors.items():
                for c, msg in per_err.items():
                    typer.echo(f"! {b} on {c}: {msg}")
    elif fmt is Format.JSON:
        _print_json(
            {
                "revision": repo.revision,
                "bundles": {b: list(cs) for b, cs in out.bundles.items()},
                "errors": out.errors,
            }
        )
    else:
        _plan_table(out)
    return 1 if invalid or out.errors else 0


def plan(
    repo: str = typer.Argument(".", help="The repository folder (a git work tree)."),
    rev: str | None = typer.Option(
        None, "--rev", help=f"Read this commit instead of the work tree. {source.REV_HELP}"
    ),
    path: str = typer.Option("", "--path", help="Subfolder holding clusters/ and bundles/."),
    fmt: Format = typer.Option(Format.TABLE, "--format", help="table or json."),
    explain: str | None = typer.Option(
        None, "--explain", metavar="BUNDLE", help="Say per cluster which placement clause held or failed."
    ),
    diff_rev: str | None = typer.Option(
        None,
        "--diff-rev",
        metavar="OLD",
        help="List only the pairs that change from OLD (a revision, written like --rev): added, removed, or "
        "with changed objects.",
    ),
    helm_binary: str | None = rendering.helm_option(),
    sops_age_key_file: str | None = rendering.key_option(),
    render_timeout: str = rendering.timeout_option(),
) -> None:
    """Which bundle goes to which cluster; exit 1 when any pair is in error or the repo is invalid."""
    if explain is not None and diff_rev is not None:
        common.fail("--explain and --diff-rev exclude each other", code=2)
    settings = _settings(helm_binary, sops_age_key_file, render_timeout, code=1)  # plan exits 0 or 1
    raise typer.Exit(common.run(_plan, repo, rev, path, fmt, explain, diff_rev, settings))


def _settings(
    helm_binary: str | None, key_file: str | None, render_timeout: str, *, code: int = 2
) -> sources.Settings:
    try:
        return rendering.settings(
            helm_binary=helm_binary, age_key_file=key_file, render_timeout=render_timeout
        )
    except errors.InputError as e:
        common.fail(str(e), code=code)


# ----------------------------------------------------------------------------------------------------------
# render


def redact(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `obj` whose Secret `data`/`stringData` values read `<redacted>`."""
    out = dict(obj)
    if obj.get("kind") == "Secret" and str(obj.get("apiVersion", "")) == "v1":
        for key in ("data", "stringData"):
            values = obj.get(key)
            if isinstance(values, Mapping):
                out[key] = {k: REDACTED for k in values}
            elif values is not None:
                out[key] = REDACTED
    return out


def _dump(obj: Mapping[str, Any]) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return str(
        yaml.dump(dict(obj), Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    )


async def _render(
    repo_path: str,
    cluster: str,
    bundle: str | None,
    show_secrets: bool,
    rev: str | None,
    path: str,
    settings: sources.Settings,
) -> int:
    repo, snap = await _load(repo_path, rev=rev, path=path)
    invalid = _report_problems(repo)
    if cluster not in repo.clusters:
        if cluster in repo.broken_clusters:
            common.fail(f"cluster {cluster!r} is broken; fix the problems above first")
        known = ", ".join(sorted(repo.clusters)) or "none"
        common.fail(f"no cluster named {cluster!r} (clusters: {known})")
    if bundle is not None and bundle not in repo.bundles:
        if bundle in repo.broken_bundles:
            common.fail(f"bundle {bundle!r} is broken; fix the problems above first")
        common.fail(f"no bundle named {bundle!r} (bundles: {', '.join(sorted(repo.bundles)) or 'none'})")
    out = await _outcome(repo, snap, settings)
    wanted = [bundle] if bundle is not None else sorted(repo.bundles)
    failed = False
    docs: list[str] = []
    for b in wanted:
        err = out.errors.get(b, {}).get(cluster)
        if err is not None:
            common.info(f"error: bundle {b} on cluster {cluster}: {err}")
            failed = True
            continue
        ds = out.desired.get((b, cluster))
        if ds is None:
            if bundle is not None:
                common.info(f"bundle {b} is not placed on cluster {cluster} (see: fleet plan --explain {b})")
            continue
        head = f"# bundle {b}, hash {ds.hash[:12]}"
        if ds.namespace:
            head += f"; fleet creates namespace {ds.namespace} if missing (not owned)"
        for i, obj in enumerate(ds.objects):
            shown = obj if show_secrets else redact(obj)
            docs.append((head + "\n" if i == 0 else "") + _dump(shown))
    if docs:
        typer.echo("---\n" + "---\n".join(docs), nl=False)
    return 1 if failed or invalid else 0


def render_cmd(
    repo: str = typer.Argument(".", help="The repository folder (a git work tree)."),
    cluster: str = typer.Option(..., "--cluster", help="The cluster whose objects to show."),
    bundle: str | None = typer.Option(None, "--bundle", help="Only this bundle."),
    show_secrets: bool = typer.Option(
        False, "--show-secrets", help="Show Secret values (redacted by default)."
    ),
    rev: str | None = typer.Option(
        None, "--rev", help=f"Read this commit instead of the work tree. {source.REV_HELP}"
    ),
    path: str = typer.Option("", "--path", help="Subfolder holding clusters/ and bundles/."),
    helm_binary: str | None = rendering.helm_option(),
    sops_age_key_file: str | None = rendering.key_option(),
    render_timeout: str = rendering.timeout_option(),
) -> None:
    """The exact objects a cluster would receive, as YAML; Secret values shown as <redacted>."""
    settings = _settings(helm_binary, sops_age_key_file, render_timeout)
    raise typer.Exit(common.run(_render, repo, cluster, bundle, show_secrets, rev, path, settings))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `fleet` app."""
    app.command("plan")(plan)
    app.command("render")(render_cmd)
