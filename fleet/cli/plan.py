"""`fleet plan`: which bundle goes to which cluster, on a repository (the pure half of fleet).

Owns: the flags and the output of `plan` (table or JSON; `--explain`, `--diff-rev`); it also registers
`fleet render` (`fleet.cli.render`) right after it.
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

from typing import Any

import typer

from fleet.cli import common, outcomes, render, rendering
from fleet.clients import sources
from fleet.core import durations, model, placement

# ----------------------------------------------------------------------------------------------------------
# plan


def _plan_table(out: outcomes.Outcome) -> None:
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


def _explain(out: outcomes.Outcome, bundle: str, fmt: outcomes.Format) -> None:
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
    if fmt is outcomes.Format.JSON:
        outcomes.print_json({"revision": out.repo.revision, "bundle": bundle, "clusters": rows})
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


def _diff(old: outcomes.Outcome, new: outcomes.Outcome) -> dict[str, dict[str, str]]:
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
    fmt: outcomes.Format,
    explain: str | None,
    diff_rev: str | None,
    settings: sources.Settings,
) -> int:
    repo, snap = await outcomes.load(repo_path, rev=rev, path=path, code=1)  # plan: exit 0 or 1 only
    invalid = outcomes.report_problems(
        repo
    )  # includes the warning for a revision without clusters or bundles
    out = await outcomes.read_outcome(repo, snap, settings)
    if explain is not None:
        _explain(out, explain, fmt)
    elif diff_rev is not None:
        base_repo, base_snap = await outcomes.load(repo_path, rev=diff_rev, path=path, code=1)
        base = await outcomes.read_outcome(base_repo, base_snap, settings)
        changes = _diff(base, out)
        if fmt is outcomes.Format.JSON:
            # docs/placement.md: the same three keys as plain `plan --format json`, `bundles` listing only
            # the changed pairs; every bundle of either revision appears, possibly with [].
            names = sorted(set(base.bundles) | set(out.bundles))
            outcomes.print_json(
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
    elif fmt is outcomes.Format.JSON:
        outcomes.print_json(
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
    repo: common.WorktreeRepo = ".",
    rev: common.WorktreeRev = None,
    path: common.Subpath = "",
    fmt: outcomes.Format = typer.Option(outcomes.Format.TABLE, "--format", help="table or json."),
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
    settings = outcomes.renderer_settings(
        helm_binary, sops_age_key_file, render_timeout, code=1
    )  # plan exits 0 or 1
    raise typer.Exit(common.run(_plan, repo, rev, path, fmt, explain, diff_rev, settings))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `fleet` app."""
    app.command("plan")(plan)
    app.command("render")(render.render_cmd)
