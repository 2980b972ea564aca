"""`fleet diff`: a server-side dry-run diff of every cluster against what the revision wants (exit 0: no
difference, 1: differences, 2: an error); it writes nothing (`fleet.cluster.diff`).
Does not: read, expand or render the revision itself (`fleet.cli.sync.prepare`, shared with `fleet sync`).
"""

from __future__ import annotations

import typer

from fleet.cli import common, rendering, sync
from fleet.clients import kube
from fleet.cluster import diff as diff_mod
from fleet.core import errors, model


def register(app: typer.Typer) -> None:
    """Add `diff` to the `fleet` app."""

    @app.command("diff")
    def diff_command(
        repo: common.GitopsRepo = ".",
        rev: common.CommitRev = None,
        worktree: common.Worktree = False,
        path: common.Subpath = "",
        kubeconfig: common.Kubeconfig = None,
        instance: common.Instance = model.DEFAULT_INSTANCE,
        concurrency: int = typer.Option(16, "--concurrency", help="Clusters compared at once."),
        allow_exec_auth: common.AllowExecAuth = False,
        allow_empty_repo: common.AllowEmptyRepo = False,
        request_timeout: common.RequestTimeout = "30s",
        retry_budget: common.RetryBudget = "60s",
        round_timeout: common.RoundTimeout = "10m",
        helm_binary: str | None = rendering.helm_option(),
        sops_age_key_file: str | None = rendering.key_option(),
        render_timeout: str = rendering.timeout_option(),
    ) -> None:
        """Server-side dry-run diff against the live clusters (exit 0 none, 1 differences, 2 error)."""
        try:
            c = sync.checked_request(
                repo,
                rev,
                worktree,
                path,
                kubeconfig,
                instance,
                concurrency,
                allow_exec_auth,
                allow_empty_repo,
                request_timeout,
                retry_budget,
                round_timeout,
                helm_binary,
                sops_age_key_file,
                render_timeout,
            )
        except errors.InputError as e:
            common.fail(str(e), code=2)
        code = common.run(_diff, c)
        raise typer.Exit(code)


def _about_bundle(bundle: str, text: str) -> str:
    """``bundle B: text``, without repeating ``bundle B:`` when `text` already starts with it."""
    head = f"bundle {bundle}: "
    return text if text.startswith(head) else head + text


async def _diff(c: sync.Request) -> int:
    try:
        repo, targets, kubeconfig = await sync.prepare(c)
    except (errors.InputError, errors.SourceError) as e:
        common.fail(str(e), code=2)
    claim = await sync.claim_of(c, repo)
    async with kube.Clients(kubeconfig, settings=sync.settings_of(c)) as clients:
        result = await diff_mod.diff_fleet(
            repo,
            targets,
            clients=clients,
            instance=c.instance,
            concurrency=c.concurrency,
            deadline=c.round_timeout,
            source=claim.source,
        )
    for name, cd in result.clusters.items():
        if cd.error:
            common.info(f"error: cluster {name}: {cd.error}")
        for d in cd.diffs:
            if d.kind in ("conflict", "error"):
                common.info(f"{d.kind}: cluster {name}: {_about_bundle(d.bundle, d.text)}")
            else:
                typer.echo(f"# cluster {name}, bundle {d.bundle}: {d.ref} ({d.kind})")
                typer.echo(d.text, nl=False)
    # A broken cluster file means that cluster was not compared: an error, never "no differences".
    for name in sorted(repo.broken_clusters):
        common.info(f"error: cluster {name}: its cluster file is broken (problems above); not compared")
    # Likewise a broken bundle: what it wants at this revision is unknown, so it was not compared.
    for name in sorted(repo.broken_bundles):
        common.info(f"error: bundle {name}: broken at this revision (problems above); not compared")
    if result.failed or repo.broken_clusters or repo.broken_bundles:
        return 2
    return 1 if result.changed else 0
