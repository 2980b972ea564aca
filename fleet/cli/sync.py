"""`fleet sync`: one full reconcile of every cluster; and what `fleet diff` shares with it.

Owns: the flags of both commands (`checked_request`; `diff` is registered by `fleet.cli.diff`), reading,
expanding and rendering the revision for them (`prepare`, through `fleet.core.pipeline`), building `kube.Settings` / `reconcile.Options` from them, progress on
stderr (a live line on a terminal, plain lines otherwise), the summary table or JSON on stdout, and exit
codes. `sync`: 0 only when every placed pair is applied and healthy and the revision has no error (paused
clusters and suspended bundles are reported, not failures), 1 otherwise (a broken bundle is a row of the
table and an entry of the JSON's `bundles` and `errors`, with PATH:LINE), 2 when nothing could be done
(bad input). `diff` exits 0 for no difference, 1 for differences, 2 for an error (`fleet.cli.diff`).
Both name their source (`source.identity` of the repository and `--path`), so another source's
inventories under the same instance are conflicts, never pruned; `sync` claims the revision it read as
seen now and always applies (`claim_of`: a person's explicit run is never superseded; with `--rev`, the
emergency rollback, its claim goes in the revision record before its first write). `sync --waves`
runs each bundle's rollout in the foreground instead of applying every placed cluster at once
(`fleet.cluster.waves`; exit 1 when one halts or waits for an approval). `sync --workers N` reads and
renders the revision here once, then splits the clusters over N processes, this one and N - 1 forked
ones (`fleet.cli.syncworkers`), and reports their results as one run: the same lines, table, JSON and exit codes.
Does not: hold any reconcile logic (`fleet.cluster.reconcile`, `fleet.cluster.diff`).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
import typer

from fleet.cli import common, rendering, statusview, syncworkers
from fleet.clients import kube, source
from fleet.clients import sources as sources_mod
from fleet.cluster import reconcile
from fleet.cluster import waves as waves_mod
from fleet.core import errors, inventory, model, pipeline
from fleet.core import rollout as ro

MAX_WORKERS = 64  # processes of `fleet sync --workers`


@dataclass(frozen=True)
class Request:
    """What `sync`/`diff` read and how they reach clusters (from the flags; tests build it directly)."""

    repo: str
    rev: str | None
    worktree: bool
    path: str
    kubeconfig: str | None
    instance: str
    concurrency: int
    allow_exec_auth: bool
    allow_empty_repo: bool
    request_timeout: float
    retry_budget: float
    round_timeout: float = 600.0
    sources: sources_mod.Settings = field(default_factory=sources_mod.Settings)


def checked_request(
    repo: str,
    rev: str | None,
    worktree: bool,
    path: str,
    kubeconfig: str | None,
    instance: str,
    concurrency: int,
    allow_exec_auth: bool,
    allow_empty_repo: bool,
    request_timeout: str,
    retry_budget: str,
    round_timeout: str,
    helm_binary: str | None = None,
    sops_age_key_file: str | None = None,
    render_timeout: str = "60s",
) -> Request:
    """The flags shared by `sync` and `diff`, checked before anything is read (InputError naming the flag)."""
    common.check_rev(rev)
    source.check_subpath(path)
    common.check_instance(instance)
    common.check_count(concurrency, flag="--concurrency", minimum=1)
    renderers = rendering.settings(
        helm_binary=helm_binary, age_key_file=sops_age_key_file, render_timeout=render_timeout
    )
    return Request(
        repo,
        rev,
        worktree,
        path,
        kubeconfig,
        instance,
        concurrency,
        allow_exec_auth,
        allow_empty_repo,
        common.parse_duration(request_timeout, flag="--request-timeout", minimum=0.1, maximum=common.HOUR),
        common.parse_duration(retry_budget, flag="--retry-budget", maximum=common.HOUR),
        common.parse_duration(round_timeout, flag="--round-timeout", minimum=10.0, maximum=common.DAY),
        renderers,
    )


async def prepare(c: Request) -> tuple[model.Repo, dict[str, dict[str, Any]], kube.Kubeconfig]:
    """Read, expand and render the revision (`fleet.core.pipeline`), load the kubeconfig: the targets of
    every cluster, as `sync` and `diff` start from."""
    repo, targets, kubeconfig, _rendered = await prepare_rendered(c)
    return repo, targets, kubeconfig


async def prepare_rendered(
    c: Request,
) -> tuple[model.Repo, dict[str, dict[str, Any]], kube.Kubeconfig, pipeline.Rendered]:
    """`prepare`, and the rendered revision too (`fleet sync --waves` reads its waves)."""
    common.check_count(c.concurrency, flag="--concurrency", minimum=1)
    common.check_instance(c.instance)
    repo, snapshot = await rendering.load(
        c.repo, rev=c.rev, path=c.path, worktree=c.worktree, worktree_default=False
    )
    for problem in repo.problems:
        common.info(str(problem))
    what = pipeline.emptiness(repo)
    if what is not None and not c.allow_empty_repo:
        raise errors.InputError(
            f"the revision read holds {what} at all; refusing to act on it (a broken checkout looks like "
            "that). Pass --allow-empty-repo if this is really wanted"
        )
    placed, expanded = await rendering.expand(repo, snapshot, c.sources)
    rendered = await anyio.to_thread.run_sync(
        lambda: pipeline.render_revision(
            repo, revision=repo.revision, instance=c.instance, placed=placed, expanded=expanded
        )
    )
    targets = pipeline.targets_for(repo, placed, rendered.desired, rendered.render_errors)
    kubeconfig = await kube.load_kubeconfig(c.kubeconfig, allow_exec_auth=c.allow_exec_auth)
    for name in sorted(repo.clusters):
        ctx = kubeconfig.context(repo.clusters[name].context or name)
        for warning in ctx.warnings:
            common.info(f"warning: cluster {name}: {warning}")
    return repo, dict(targets), kubeconfig, rendered


async def claim_of(c: Request, repo: model.Repo) -> inventory.Claim:
    """`fleet sync`'s claim: this source at the revision read (a work tree: ""), seen now."""
    ident = await anyio.to_thread.run_sync(lambda: source.identity(c.repo, subpath=c.path))
    return inventory.Claim(
        source=ident,
        revision=repo.revision or "",
        observed_at=inventory.now_rfc3339(),
        writer=f"fleet sync on {socket.gethostname()}",
    )


def report_cluster_warnings(
    result: reconcile.FleetResult, repo: model.Repo, kubeconfig: kube.Kubeconfig
) -> None:
    """What a round found about each cluster (an API group version whose discovery fails), on stderr;
    its kubeconfig's warnings were printed before the round (`prepare`)."""
    for name, cluster in sorted(result.clusters.items()):
        known = (
            set(kubeconfig.context(repo.clusters[name].context or name).warnings)
            if name in repo.clusters
            else set()
        )
        for warning in cluster.warnings:
            if warning not in known:
                common.info(f"warning: cluster {name}: {warning}")


def settings_of(c: Request) -> kube.Settings:
    return kube.Settings(
        request_timeout=c.request_timeout,
        connect_timeout=min(5.0, c.request_timeout),
        retry_budget=c.retry_budget,
        allow_exec_auth=c.allow_exec_auth,
    )


class _Progress:
    """Clusters done/total and failures, on stderr: one rewritten line on a terminal, plain lines else."""

    def __init__(self, total: int, *, wait: bool) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.wait = wait
        self.tty = sys.stderr.isatty()

    def __call__(self, result: reconcile.ClusterResult) -> None:
        self.done += 1
        if not result.ok(wait=self.wait):
            self.failed += 1
        if self.tty:
            sys.stderr.write(f"\rclusters {self.done}/{self.total} done, {self.failed} failed ")
            if self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        else:
            changes = result.changes
            counts = ", ".join(
                f"{changes.count(a)} {a}"
                for a in (
                    model.Action.CREATED,
                    model.Action.CONFIGURED,
                    model.Action.DELETED,
                    model.Action.CONFLICT,
                    model.Action.FAILED,
                )
                if changes.count(a)
            )
            detail = f" ({counts})" if counts else ""
            msg = f": {result.message}" if result.message else ""
            common.info(f"[{self.done}/{self.total}] cluster {result.cluster}: {result.state}{detail}{msg}")


def _bundle_json(b: reconcile.BundleResult) -> dict[str, Any]:
    return {
        "state": str(b.state),
        "objects": b.objects,
        "created": b.changes.count(model.Action.CREATED),
        "configured": b.changes.count(model.Action.CONFIGURED),
        "unchanged": b.changes.count(model.Action.UNCHANGED),
        "deleted": b.changes.count(model.Action.DELETED),
        "conflicts": b.changes.count(model.Action.CONFLICT),
        "failed": b.changes.count(model.Action.FAILED),
        "message": b.message or None,
        "changes": [
            {"object": str(ch.ref), "action": str(ch.action), "message": ch.message or None}
            for ch in b.changes.changes
            if ch.action is not model.Action.UNCHANGED
        ],
    }


def result_json(result: reconcile.FleetResult) -> dict[str, Any]:
    return {
        "revision": result.revision,
        "ok": result.ok,
        "errors": [{"path": p.path, "line": p.line, "message": p.message} for p in result.errors],
        "bundles": {
            name: {"state": str(model.State.FAILED), "message": message}
            for name, message in sorted(result.broken_bundles.items())
        },
        "clusters": {
            name: {
                "state": str(c.state),
                "message": c.message or None,
                "warnings": list(c.warnings),
                "requests": c.requests,
                "seconds": round(c.seconds, 3),
                "bundles": {b: _bundle_json(r) for b, r in sorted(c.bundles.items())},
                "removed": {b: _bundle_json(r) for b, r in sorted(c.removed.items())},
            }
            for name, c in result.clusters.items()
        },
    }


def json_text(doc: Any) -> str:
    """`doc` as `json.dumps(doc, indent=2)` writes it, byte for byte, but 20x faster (orjson: 1.6 ms
    against 36 ms for the report of 50 clusters x 100 objects, at the end of every run); the standard
    library where orjson's text would differ (non-ASCII, which it does not escape) or that it refuses.
    (fleet's reports hold no NaN or infinity, which orjson would write as null.)"""
    try:
        raw = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(doc, indent=2)
    if raw.isascii():
        return raw.decode()
    return json.dumps(doc, indent=2)


def result_table(result: reconcile.FleetResult) -> str:
    head = ("CLUSTER", "BUNDLE", "STATE", "CREATED", "CONFIGURED", "UNCHANGED", "DELETED", "MESSAGE")
    rows: list[tuple[str, ...]] = []
    for name, c in result.clusters.items():
        entries = [(b, r, "") for b, r in sorted(c.bundles.items())]
        entries += [(b, r, " (removed)") for b, r in sorted(c.removed.items())]
        if not entries:
            rows.append((name, "-", str(c.state), "", "", "", "", c.message))
        for b, r, suffix in entries:
            ch = r.changes
            rows.append(
                (
                    name,
                    b + suffix,
                    str(r.state),
                    str(ch.count(model.Action.CREATED)),
                    str(ch.count(model.Action.CONFIGURED)),
                    str(ch.count(model.Action.UNCHANGED)),
                    str(ch.count(model.Action.DELETED)),
                    (r.message or "").replace("\n", " "),
                )
            )
    for name, message in sorted(result.broken_bundles.items()):  # placed nowhere: its cluster is unknown
        rows.append(("-", name, str(model.State.FAILED), "", "", "", "", message.replace("\n", " ")))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(col.ljust(widths[i]) for i, col in enumerate(row)).rstrip() for row in (head, *rows)]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add `sync` to the `fleet` app."""

    @app.command("sync")
    def sync_command(
        repo: common.GitopsRepo = ".",
        rev: common.CommitRev = None,
        worktree: common.Worktree = False,
        path: common.Subpath = "",
        kubeconfig: common.Kubeconfig = None,
        instance: common.Instance = model.DEFAULT_INSTANCE,
        concurrency: int = typer.Option(16, "--concurrency", help="Clusters reconciled at once."),
        allow_exec_auth: common.AllowExecAuth = False,
        allow_empty_repo: common.AllowEmptyRepo = False,
        output: common.OutputFormat = "table",
        no_wait: bool = typer.Option(False, "--no-wait", help="Do not wait for health."),
        waves: bool = typer.Option(
            False,
            "--waves",
            help="Run each bundle's rollout in the foreground (its waves, halts, deadlines; docs/rollouts.md)"
            " instead of applying every placed cluster at once; exit 1 on a halt.",
        ),
        timeout: str = typer.Option("5m", "--timeout", help="Bound of the health wait (e.g. 90s, 5m)."),
        request_timeout: common.RequestTimeout = "30s",
        retry_budget: common.RetryBudget = "60s",
        round_timeout: common.RoundTimeout = "10m",
        helm_binary: str | None = rendering.helm_option(),
        sops_age_key_file: str | None = rendering.key_option(),
        render_timeout: str = rendering.timeout_option(),
        workers: int = typer.Option(
            1,
            "--workers",
            help="Processes the clusters are split over, balanced by their objects, so a cold sync of many"
            " clusters uses every core (--concurrency is shared among them); 1: this process alone.",
        ),
    ) -> None:
        """One full reconcile of every cluster, then exit (0: every placed pair applied and healthy)."""
        if output not in ("table", "json"):
            common.fail("--format must be table or json", code=2)
        try:
            c = checked_request(
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
            health_timeout = common.parse_duration(timeout, flag="--timeout", minimum=1.0, maximum=common.DAY)
            common.check_count(workers, flag="--workers", minimum=1, maximum=MAX_WORKERS)
        except errors.InputError as e:
            common.fail(str(e), code=2)
        if waves and no_wait:
            common.fail(
                "--waves waits for health by its nature: it cannot be combined with --no-wait", code=2
            )
        if waves and workers > 1:
            common.fail(
                "--waves runs the rollouts in one process: it cannot be combined with --workers", code=2
            )
        if waves:
            raise typer.Exit(common.run(_sync_waves, c, health_timeout, not no_wait, output))
        # Workers are forked here, before the event loop and any thread exist (`syncworkers.Workers.start`);
        # this process is the first of them.
        pool = syncworkers.Workers.start(workers) if workers > 1 else None
        syncworkers.lean_collector()  # as a forked worker's (docs/benchmarks.md, "fleet sync")
        try:
            code = common.run(_sync, c, health_timeout, not no_wait, output, pool)
        finally:
            if pool is not None:
                pool.stop()
        raise typer.Exit(code)


async def run_sync(
    repo: model.Repo,
    targets: dict[str, dict[str, Any]],
    kubeconfig: kube.Kubeconfig,
    *,
    request: Request,
    options: reconcile.Options,
    on_done: Any = None,
) -> reconcile.FleetResult:
    """The reconcile half of `fleet sync`, after `prepare`."""
    async with kube.Clients(kubeconfig, settings=settings_of(request)) as clients:
        return await reconcile.reconcile_fleet(
            repo, targets, clients=clients, options=options, on_done=on_done
        )


async def _sync(
    c: Request, health_timeout: float, wait: bool, output: str, pool: syncworkers.Workers | None = None
) -> int:
    try:
        repo, targets, kubeconfig = await prepare(c)
    except (errors.InputError, errors.SourceError) as e:
        common.fail(str(e), code=2)
    options = reconcile.Options(
        instance=c.instance,
        concurrency=c.concurrency,
        wait=wait,
        health_timeout=health_timeout,
        cluster_deadline=c.round_timeout,
        claim=await claim_of(c, repo),
        yield_to_newer=False,
        record_first=c.rev is not None,
    )
    progress = _Progress(len(repo.clusters), wait=wait)
    if pool is None:
        result = await run_sync(repo, targets, kubeconfig, request=c, options=options, on_done=progress)
    else:
        done = await pool.run(
            repo,
            targets,
            pipeline.all_protected(repo),
            kubeconfig=kubeconfig,
            settings=settings_of(c),
            options=options,
            on_done=progress,
        )
        result = reconcile.fleet_result(repo, done, wait=wait)
    report_cluster_warnings(result, repo, kubeconfig)
    if output == "json":
        typer.echo(json_text(result_json(result)))
    else:
        typer.echo(result_table(result))
    return 0 if result.ok else 1


async def _sync_waves(c: Request, health_timeout: float, wait: bool, output: str) -> int:
    """`fleet sync --waves`: every bundle's rollout in the foreground (`fleet.cluster.waves`)."""
    try:
        repo, targets, kubeconfig, rendered = await prepare_rendered(c)
    except (errors.InputError, errors.SourceError) as e:
        common.fail(str(e), code=2)
    membership = await anyio.to_thread.run_sync(lambda: rendered.waves)
    options = reconcile.Options(
        instance=c.instance,
        concurrency=c.concurrency,
        wait=False,
        health_timeout=health_timeout,
        health_interval=0.5,
        cluster_deadline=c.round_timeout,
        claim=await claim_of(c, repo),
        yield_to_newer=False,
        record_first=c.rev is not None,
    )
    common.info(f"fleet sync --waves: {len(membership)} bundles roll out in waves (docs/rollouts.md)")
    async with kube.Clients(kubeconfig, settings=settings_of(c)) as clients:
        done = await waves_mod.run(repo, targets, membership, clients=clients, options=options)
    report_cluster_warnings(done.fleet, repo, kubeconfig)
    now = time.time()
    documents = {b: ro.document(r, now=now) for b, r in sorted(done.rollouts.items())}
    if output == "json":
        doc = result_json(done.fleet)
        doc["ok"] = done.ok
        doc["rollouts"] = documents
        doc["stopped"] = done.stopped
        typer.echo(json_text(doc))
    else:
        typer.echo(result_table(done.fleet))
        typer.echo("")
        typer.echo(statusview.rollouts_table(documents) if documents else "no rollouts")
    if done.stopped:
        common.info(f"stopped: {done.stopped}")
    return 0 if done.ok else 1
