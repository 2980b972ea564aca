"""`fleet serve`: the controller.

Owns: turning options (each also from a ``FLEET_<OPTION>`` environment variable) into settings, wiring
the engine, the HTTP server, telemetry and signal handling; with `--management-kubeconfig`, this process's
replica (`fleet.cli.replication`, docs/scaling.md) and its state of record in the management cluster
(`fleet.controller.shared`: the records installed before the engine starts); the process's cycle
collector once the engine is ready (`lean_collector`). Does not: hold any
logic of the engine (`fleet.controller.engine`) or of the HTTP API (`fleet.controller.server`).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import typer

from fleet.cli import common, history, rendering, replication
from fleet.clients import kube, source, statedb
from fleet.clients import records as records_client
from fleet.controller import engine, server, shared, telemetry
from fleet.core import errors, model

log = logging.getLogger("fleet.serve")


def _default_state_dir() -> str:
    return str(Path.home() / ".local" / "state" / "fleet")


LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str) -> None:
    """fleet's log lines (and asyncio's and aiohttp's) on stderr, one format, identical lines aggregated."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(telemetry.TRACE_ID_FILTER)
    handler.addFilter(telemetry.RepeatFilter())
    root = logging.getLogger("fleet")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for name in ("asyncio", "aiohttp"):  # their errors are ours to report, at most as often as ours
        other = logging.getLogger(name)
        other.handlers[:] = [handler]
        other.setLevel(max(logging.WARNING, root.level))
        other.propagate = False


async def report_repeats(*, every: float = 10.0) -> None:
    """Log, every `every` seconds, how many identical lines `telemetry.RepeatFilter` held back."""
    filters = [
        f
        for h in logging.getLogger("fleet").handlers
        for f in h.filters
        if isinstance(f, telemetry.RepeatFilter)
    ]
    while True:
        await anyio.sleep(every)
        for f in filters:
            for name, level, line in f.flush():
                logging.getLogger(name).log(level, "%s", line)


# fleet serve's cycle collector, once the engine is ready: a young collection after 50,000 new containers,
# not 700, over a heap whose watch caches, runtimes and rollouts (most of it, and long-lived) were frozen out
# of its reach. At 1,000 clusters with the default thresholds, collections scanning that heap took a large
# share of a commit's CPU (docs/benchmarks.md, "1,000 clusters with two replicas"). What the engine makes
# afterwards is still collected, only less often.
SERVE_GC_THRESHOLDS = (50_000, 20, 20)


async def lean_collector(ready: Callable[[], bool], *, poll: float = 1.0, settle: float = 10.0) -> None:
    """Wait until `ready()` (the repository read and every owned cluster's first round done), then move
    what the process holds out of the cycle collector's reach (`gc.freeze`) and collect less often
    (`SERVE_GC_THRESHOLDS`) at once; `settle` seconds later, freeze again what came since (the watch caches
    list after a cluster's first round). Frozen only after the settle, the first commit after a start ran
    under the default thresholds over the whole heap: a quarter of its CPU in the collector at 250 clusters
    (docs/benchmarks.md). Returns after that; cancelled with the server."""
    while True:  # polled: readiness is a condition over the engine's clusters, no event tells of it
        if ready():
            break
        await anyio.sleep(poll)
    gc.freeze()
    gc.set_threshold(*SERVE_GC_THRESHOLDS)
    await anyio.sleep(settle)
    gc.freeze()


async def serve_main(
    settings: engine.Settings,
    *,
    kubeconfig_path: str | None,
    allow_exec_auth: bool,
    listen: str,
    server_settings: server.ServerSettings,
    otlp_endpoint: str | None,
    kube_settings: kube.Settings,
    on_ready: Any = None,
    management: replication.Management | None = None,
) -> None:
    """Run the controller until SIGTERM/SIGINT; returns after a clean shutdown."""
    host, port = common.parse_listen(listen)
    replica = None
    if management is not None:
        replica, kube_settings = await replication.connect(
            management,
            instance=settings.instance,
            kube_settings=kube_settings,
            allow_exec_auth=allow_exec_auth,
        )
    tel = telemetry.setup(otlp_endpoint=otlp_endpoint, instance=settings.instance)
    kubeconfig = await kube.load_kubeconfig(kubeconfig_path, allow_exec_auth=allow_exec_auth)
    records = None
    if replica is None:
        store: statedb.StateStore = await anyio.to_thread.run_sync(
            statedb.StateStore, settings.state_dir / "state.db"
        )
    else:  # the state of record in the management cluster (docs/scaling.md, "State of record")
        records = records_client.Records(
            kube.Client(cluster="management", context=replica.client.client.context, settings=kube_settings),
            instance=settings.instance,
            writer=replica.config.me,
        )
        try:
            store = await shared.open_store(settings.state_dir / "state.db", records=records)
        except errors.StateError as e:
            await records.client.aclose()
            raise errors.FleetError(
                f"management cluster: cannot read or install the state of record: {e}"
            ) from e
    eng = engine.Engine(
        settings, kubeconfig=kubeconfig, kube_settings=kube_settings, store=store, replica=replica
    )
    if replica is not None and isinstance(store, shared.ManagedStore):
        eng.share(
            shared.Shared(store, owner=shared.ReplicaOwner(replica), period=replica.config.timings.retry)
        )
    app = server.build_app(eng, server_settings)
    try:
        async with server.Listener(app, limits=server_settings.limits, metrics=eng.metrics) as listener:
            bound = await listener.bind(host, port)
            url = f"http://{bound[0]}:{bound[1]}"
            common.info(
                f"fleet serve: listening on {url} (repo {source.redact(settings.repo)}, "
                f"instance {settings.instance})"
            )
            if replica is not None:
                t = replica.config.timings
                common.info(
                    f"fleet serve: replica {replica.config.me} of {replica.shards} shards, leases in "
                    f"{replica.client.client.context.server} (duration {t.duration:g}s, renew deadline "
                    f"{t.renew_deadline:g}s, retry {t.retry:g}s)"
                )
            if tel.enabled:
                common.info(f"fleet serve: exporting traces to {telemetry.redact_url(tel.settings.endpoint)}")
            if on_ready is not None:
                on_ready(url)
            async with anyio.create_task_group() as tg:

                async def stop_on_signal() -> None:
                    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                        async for signum in signals:
                            common.info(f"fleet serve: {signal.Signals(signum).name}, shutting down")
                            await eng.stop()
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(stop_on_signal)
                tg.start_soon(listener.serve)
                tg.start_soon(report_repeats)
                tg.start_soon(eng.run)
                # Ready with clusters of its own (a replica owns none before its first leases), or none at all.
                tg.start_soon(
                    lean_collector,
                    lambda: eng.ready and (not eng.clusters or bool(eng.ownership.owned(eng.clusters))),
                )
    finally:
        with anyio.CancelScope(shield=True):
            if replica is not None:
                await replica.client.client.aclose()
            if records is not None:
                await records.client.aclose()
            await anyio.to_thread.run_sync(store.close)
            await anyio.to_thread.run_sync(tel.shutdown)
    common.info("fleet serve: stopped")


def register(app: typer.Typer) -> None:
    register_serve(app)


def register_serve(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        ctx: typer.Context,
        repo: str = typer.Option(..., "--repo", envvar="FLEET_REPO", help="Git URL or local path to follow."),
        branch: str = typer.Option(
            "main",
            "--branch",
            envvar="FLEET_BRANCH",
            help="Branch to follow: refs/heads/BRANCH only, never a tag of the same name.",
        ),
        rev: str | None = typer.Option(
            None,
            "--rev",
            envvar="FLEET_REV",
            help=f"Pin this revision instead of --branch. {source.SERVE_REV_HELP}",
        ),
        path: str = typer.Option(
            "", "--path", envvar="FLEET_PATH", help="Subfolder holding clusters/, bundles/."
        ),
        kubeconfig: str | None = typer.Option(
            None, "--kubeconfig", envvar="FLEET_KUBECONFIG", help="Default $KUBECONFIG, then ~/.kube/config."
        ),
        interval: str = typer.Option("30s", "--interval", envvar="FLEET_INTERVAL", help="Poll period."),
        resync: str = typer.Option("5m", "--resync", envvar="FLEET_RESYNC", help="Full resync period."),
        concurrency: int = typer.Option(
            8, "--concurrency", envvar="FLEET_CONCURRENCY", help="Clusters at once."
        ),
        listen: str = typer.Option(
            "127.0.0.1:8080", "--listen", envvar="FLEET_LISTEN", help="HOST:PORT of the API."
        ),
        webhook_secret_file: str | None = typer.Option(
            None, "--webhook-secret-file", envvar="FLEET_WEBHOOK_SECRET_FILE", help="Shared webhook secret."
        ),
        api_token_file: str | None = typer.Option(
            None, "--api-token-file", envvar="FLEET_API_TOKEN_FILE", help="Bearer token for mutating calls."
        ),
        state_dir: str = typer.Option(
            _default_state_dir(),
            "--state-dir",
            envvar="FLEET_STATE_DIR",
            help="Git mirror and state database.",
        ),
        instance: str = typer.Option(
            model.DEFAULT_INSTANCE, "--instance", envvar="FLEET_INSTANCE", help="Owner label value."
        ),
        allow_exec_auth: bool = typer.Option(
            False, "--allow-exec-auth", envvar="FLEET_ALLOW_EXEC_AUTH", help="Allow kubeconfig exec plugins."
        ),
        allow_empty_repo: bool = typer.Option(
            False,
            "--allow-empty-repo",
            envvar="FLEET_ALLOW_EMPTY_REPO",
            help="Accept a revision with nothing.",
        ),
        otlp_endpoint: str | None = typer.Option(
            None, "--otlp-endpoint", envvar="FLEET_OTLP_ENDPOINT", help="OTLP/HTTP base URL for traces."
        ),
        jaeger_url: str | None = typer.Option(
            None, "--jaeger-url", envvar="FLEET_JAEGER_URL", help="Jaeger UI base URL for trace links."
        ),
        git_username: str | None = typer.Option(None, "--git-username", envvar="FLEET_GIT_USERNAME"),
        git_password_file: str | None = typer.Option(
            None,
            "--git-password-file",
            envvar="FLEET_GIT_PASSWORD_FILE",
            help="HTTPS token or password file.",
        ),
        git_password_env: str | None = typer.Option(
            None, "--git-password-env", envvar="FLEET_GIT_PASSWORD_ENV", help="Variable holding the token."
        ),
        git_ssh_key: str | None = typer.Option(None, "--git-ssh-key", envvar="FLEET_GIT_SSH_KEY"),
        qps: float = typer.Option(50.0, "--qps", envvar="FLEET_QPS", help="Requests per second per cluster."),
        burst: int = typer.Option(300, "--burst", envvar="FLEET_BURST", help="Request burst per cluster."),
        health_timeout: str = typer.Option("2m", "--health-timeout", envvar="FLEET_HEALTH_TIMEOUT"),
        request_timeout: str = typer.Option(
            "30s",
            "--request-timeout",
            envvar="FLEET_REQUEST_TIMEOUT",
            help="Deadline of one API request attempt, first to last byte.",
        ),
        retry_budget: str = typer.Option(
            "60s", "--retry-budget", envvar="FLEET_RETRY_BUDGET", help="Time one request may spend retrying."
        ),
        round_timeout: str = typer.Option(
            "10m",
            "--round-timeout",
            envvar="FLEET_ROUND_TIMEOUT",
            help="Deadline of one cluster's round (health waits excluded).",
        ),
        log_level: str = typer.Option("info", "--log-level", envvar="FLEET_LOG_LEVEL"),
        helm_binary: str | None = rendering.helm_option(serve=True),
        sops_age_key_file: str | None = rendering.key_option(serve=True),
        render_timeout: str = rendering.timeout_option(serve=True),
        history_retention: str = typer.Option(
            "30d",
            "--history-retention",
            envvar="FLEET_HISTORY_RETENTION",
            help="How long the history of changes is kept (1h to 3650d).",
        ),
        notify_url: list[str] = typer.Option(
            [],
            "--notify-url",
            envvar="FLEET_NOTIFY_URL",
            help="POST revision notifications here (repeatable).",
        ),
        notify_format: str = typer.Option(
            "json",
            "--notify-format",
            envvar="FLEET_NOTIFY_FORMAT",
            help="json or slack (for every --notify-url).",
        ),
        commit_status: str | None = typer.Option(
            None,
            "--commit-status",
            envvar="FLEET_COMMIT_STATUS",
            help="Set commit status on github or gitlab.",
        ),
        commit_status_url: str | None = typer.Option(
            None,
            "--commit-status-url",
            envvar="FLEET_COMMIT_STATUS_URL",
            help="API base URL (GitHub Enterprise: https://HOST/api/v3; GitLab: https://HOST/api/v4).",
        ),
        commit_status_token_file: str | None = typer.Option(
            None,
            "--commit-status-token-file",
            envvar="FLEET_COMMIT_STATUS_TOKEN_FILE",
            help="API token file.",
        ),
        commit_status_repo: str | None = typer.Option(
            None,
            "--commit-status-repo",
            envvar="FLEET_COMMIT_STATUS_REPO",
            help="OWNER/NAME or GitLab project path (default: from --repo).",
        ),
        external_url: str | None = typer.Option(
            None, "--external-url", envvar="FLEET_EXTERNAL_URL", help="This server's URL for people (linked)."
        ),
        management_kubeconfig: str | None = typer.Option(
            None,
            "--management-kubeconfig",
            envvar="FLEET_MANAGEMENT_KUBECONFIG",
            help="Share the fleet with other replicas through Leases on this cluster (docs/scaling.md).",
        ),
        management_context: str | None = typer.Option(
            None,
            "--management-context",
            envvar="FLEET_MANAGEMENT_CONTEXT",
            help="Its context (default: the file's only one).",
        ),
        shards: int | None = typer.Option(
            None, "--shards", envvar="FLEET_SHARDS", help="Virtual shards, the same on every replica (32)."
        ),
        lease_duration: str | None = typer.Option(
            None,
            "--lease-duration",
            envvar="FLEET_LEASE_DURATION",
            help="Lease duration, whole seconds (15s).",
        ),
        lease_renew_deadline: str | None = typer.Option(
            None,
            "--lease-renew-deadline",
            envvar="FLEET_LEASE_RENEW_DEADLINE",
            help="A replica stops writing this long after its last renewal (10s).",
        ),
        lease_retry_period: str | None = typer.Option(
            None,
            "--lease-retry-period",
            envvar="FLEET_LEASE_RETRY_PERIOD",
            help="How often leases are read and renewed (2s).",
        ),
    ) -> None:
        """Run the controller: follow a branch, reconcile every cluster, serve the API and status page."""

        def f(name: str) -> str:
            return common.flag(ctx, name)

        try:
            # Every option is checked before anything runs: nothing created, read or bound on a bad value.
            log_level = common.check_choice(log_level, flag=f("log_level"), choices=LOG_LEVELS)
            common.parse_listen(listen, flag=f("listen"))
            try:
                source.check_url(repo)
            except errors.FleetError as e:
                raise errors.InputError(f"{f('repo')}: {e}") from None
            common.check_branch(branch, flag=f("branch"))
            common.check_rev(rev, flag=f("rev"))
            try:
                source.Follow(branch=branch, rev=rev)
            except errors.InputError as e:
                raise errors.InputError(str(e).replace("--rev", f("rev"), 1)) from None
            try:
                source.check_subpath(path)
            except errors.InputError as e:
                raise errors.InputError(str(e).replace("--path", f("path"), 1)) from None
            common.check_instance(instance, flag=f("instance"))
            state_path = _check_state_dir(state_dir, flag=f("state_dir"))
            durations = {
                "interval": common.parse_duration(
                    interval, flag=f("interval"), minimum=1.0, maximum=common.DAY
                ),
                "resync": common.parse_duration(resync, flag=f("resync"), minimum=1.0, maximum=common.DAY),
                "health_timeout": common.parse_duration(
                    health_timeout, flag=f("health_timeout"), minimum=1.0, maximum=common.HOUR
                ),
                "request_timeout": common.parse_duration(
                    request_timeout, flag=f("request_timeout"), minimum=0.1, maximum=common.HOUR
                ),
                "retry_budget": common.parse_duration(
                    retry_budget, flag=f("retry_budget"), minimum=0.0, maximum=common.HOUR
                ),
                "round_timeout": common.parse_duration(
                    round_timeout, flag=f("round_timeout"), minimum=10.0, maximum=common.DAY
                ),
            }
            common.check_count(concurrency, flag=f("concurrency"), minimum=1)
            common.check_number(qps, flag=f("qps"), minimum=0.1)
            common.check_count(burst, flag=f("burst"), minimum=1)
            if otlp_endpoint is not None:
                common.check_http_url(otlp_endpoint, flag=f("otlp_endpoint"))
            if jaeger_url is not None:
                from fleet.controller import ui

                try:
                    jaeger_url = ui.check_jaeger_url(jaeger_url)
                except errors.InputError as e:
                    raise errors.InputError(str(e).replace("--jaeger-url", f("jaeger_url"), 1)) from None
            credentials = None
            if git_username is not None or git_password_file or git_password_env or git_ssh_key:
                if git_username is not None and not git_username.strip():
                    raise errors.InputError(f"{f('git_username')}: empty")
                if git_password_file:
                    server.read_secret_file(git_password_file, option=f("git_password_file"))
                if git_password_env and not os.environ.get(git_password_env, "").strip():
                    raise errors.InputError(
                        f"{f('git_password_env')}: the variable {git_password_env} is not set or empty"
                    )
                if git_ssh_key:
                    server.read_secret_file(git_ssh_key, option=f("git_ssh_key"))
                credentials = source.Credentials(
                    username=git_username,
                    password_file=Path(git_password_file) if git_password_file else None,
                    password_env=git_password_env,
                    ssh_key_file=Path(git_ssh_key) if git_ssh_key else None,
                )
            history_settings = history.history_settings(
                instance=instance, retention=history_retention, flag=f("history_retention")
            )
            notify_settings = history.notify_settings(
                repo=repo,
                instance=instance,
                notify_urls=list(notify_url),
                notify_format=notify_format,
                commit_status=commit_status,
                commit_status_url=commit_status_url,
                commit_status_token_file=commit_status_token_file,
                commit_status_repo=commit_status_repo,
                external_url=external_url,
                flags={
                    name: f(name)
                    for name in (
                        "notify_url",
                        "notify_format",
                        "commit_status",
                        "commit_status_url",
                        "commit_status_token_file",
                        "commit_status_repo",
                        "external_url",
                    )
                },
            )
            server_settings = server.ServerSettings(
                api_token=server.read_secret_file(api_token_file, option=f("api_token_file")),
                webhook_secret=server.read_secret_file(webhook_secret_file, option=f("webhook_secret_file")),
                jaeger_url=jaeger_url,
            )
            renderers = rendering.settings(
                helm_binary=helm_binary,
                age_key_file=sops_age_key_file,
                render_timeout=render_timeout,
                flags={
                    "helm": f("helm_binary"),
                    "key": f("sops_age_key_file"),
                    "timeout": f("render_timeout"),
                },
            )
            settings = engine.Settings(
                repo=repo,
                state_dir=state_path,
                branch=branch,
                rev=rev,
                path=path,
                instance=instance,
                interval=durations["interval"],
                resync_interval=durations["resync"],
                concurrency=concurrency,
                allow_empty_repo=allow_empty_repo,
                credentials=credentials,
                health_timeout=durations["health_timeout"],
                round_timeout=durations["round_timeout"],
                sources=renderers,
                history=history_settings,
                notify=notify_settings,
                watch_cache=os.environ.get("FLEET_WATCH_CACHE", "1") != "0",  # hidden: benchmarks' baseline
            )
            management = replication.check(
                kubeconfig=management_kubeconfig,
                context=management_context,
                shards=shards,
                duration=lease_duration,
                renew_deadline=lease_renew_deadline,
                retry=lease_retry_period,
                flags={
                    "kubeconfig": f("management_kubeconfig"),
                    "context": f("management_context"),
                    "shards": f("shards"),
                    "duration": f("lease_duration"),
                    "renew_deadline": f("lease_renew_deadline"),
                    "retry": f("lease_retry_period"),
                },
            )
            kube_settings = kube.Settings(
                qps=qps,
                burst=burst,
                allow_exec_auth=allow_exec_auth,
                request_timeout=durations["request_timeout"],
                connect_timeout=min(5.0, durations["request_timeout"]),
                retry_budget=durations["retry_budget"],
            )
        except errors.FleetError as e:
            common.fail(str(e), code=2)
        configure_logging(log_level)
        try:
            common.run(
                lambda: serve_main(
                    settings,
                    kubeconfig_path=kubeconfig,
                    allow_exec_auth=allow_exec_auth,
                    listen=listen,
                    server_settings=server_settings,
                    otlp_endpoint=otlp_endpoint,
                    kube_settings=kube_settings,
                    management=management,
                )
            )
        except errors.FleetError as e:
            common.fail(str(e), code=2)


def _check_state_dir(text: str, *, flag: str) -> Path:
    """The state directory: a directory (created later if missing) that this process can write."""
    if not text.strip():
        raise errors.InputError(f"{flag}: empty")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise errors.InputError(f"{flag} {text}: not a directory")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise errors.InputError(f"{flag} {text}: not writable by this process")
    return path
