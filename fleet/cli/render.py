"""`fleet render`: the exact objects one cluster would receive, as YAML (Secret values shown as
``<redacted>`` unless ``--show-secrets``); exit 1 when a pair is in error or the repository is invalid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer
import yaml

from fleet.cli import common, outcomes, rendering
from fleet.clients import sources

# ----------------------------------------------------------------------------------------------------------
# render


def redact(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `obj` whose Secret `data`/`stringData` values read `<redacted>`."""
    out = dict(obj)
    if obj.get("kind") == "Secret" and str(obj.get("apiVersion", "")) == "v1":
        for key in ("data", "stringData"):
            values = obj.get(key)
            if isinstance(values, Mapping):
                out[key] = {k: outcomes.REDACTED for k in values}
            elif values is not None:
                out[key] = outcomes.REDACTED
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
    repo, snap = await outcomes.load(repo_path, rev=rev, path=path)
    invalid = outcomes.report_problems(repo)
    if cluster not in repo.clusters:
        if cluster in repo.broken_clusters:
            common.fail(f"cluster {cluster!r} is broken; fix the problems above first")
        known = ", ".join(sorted(repo.clusters)) or "none"
        common.fail(f"no cluster named {cluster!r} (clusters: {known})")
    if bundle is not None and bundle not in repo.bundles:
        if bundle in repo.broken_bundles:
            common.fail(f"bundle {bundle!r} is broken; fix the problems above first")
        common.fail(f"no bundle named {bundle!r} (bundles: {', '.join(sorted(repo.bundles)) or 'none'})")
    out = await outcomes.read_outcome(repo, snap, settings)
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
    repo: common.WorktreeRepo = ".",
    cluster: str = typer.Option(..., "--cluster", help="The cluster whose objects to show."),
    bundle: str | None = typer.Option(None, "--bundle", help="Only this bundle."),
    show_secrets: bool = typer.Option(
        False, "--show-secrets", help="Show Secret values (redacted by default)."
    ),
    rev: common.WorktreeRev = None,
    path: common.Subpath = "",
    helm_binary: str | None = rendering.helm_option(),
    sops_age_key_file: str | None = rendering.key_option(),
    render_timeout: str = rendering.timeout_option(),
) -> None:
    """The exact objects a cluster would receive, as YAML; Secret values shown as <redacted>."""
    settings = outcomes.renderer_settings(helm_binary, sops_age_key_file, render_timeout)
    raise typer.Exit(common.run(_render, repo, cluster, bundle, show_secrets, rev, path, settings))
