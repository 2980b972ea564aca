"""`fleet demo`: simulated clusters from the demo fleet (`fleet.demo`), a demo repository and
`fleet serve`, with the list of things to try; runs until Ctrl-C.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import typer

from fleet.cli import common, rendering, serve
from fleet.clients import kube, sources
from fleet.controller import engine, server
from fleet.core import errors


def _demo_instructions(*, url: str, repo: Path, kubeconfig: Path, secret_file: Path, kubectl: str) -> str:
    return f"""
fleet demo is running.

  status page   {url}/
  status API    {url}/api/v1/status      (or: fleet status --server {url})
  metrics       {url}/metrics
  demo repo     {repo}
  kubeconfig    {kubeconfig}

Try:
  1. Change a bundle and commit; fleet polls every few seconds, or announce it with the signed webhook:
       sed -i 's/replicas: 2/replicas: 6/' {repo}/bundles/web/deployment.yaml
       git -C {repo} commit -qam "web: 6 replicas"
       body='{{"ref":"refs/heads/main"}}'
       sig=$(printf %s "$body" | openssl dgst -sha256 -hmac "$(cat {secret_file})" | sed 's/^.* //')
       curl -s -XPOST -H "X-Hub-Signature-256: sha256=$sig" -d "$body" {url}/api/v1/webhook
  2. Edit a managed object behind fleet's back and watch it repaired:
       {kubectl} --kubeconfig {kubeconfig} --context eu-prod-1 -n platform \\
         patch configmap cluster-info --type merge -p '{{"data":{{"region":"mars"}}}}'
       {kubectl} --kubeconfig {kubeconfig} --context eu-prod-1 -n platform get configmap cluster-info -o yaml
       {kubectl} --kubeconfig {kubeconfig} --context eu-prod-1 -n fleet-system get events
       fleet history --server {url} --cluster eu-prod-1      (who changed what, when: docs/notifications.md)
  3. Break a file (invalid YAML) and commit: the status page names it, the last good revision stays.
  4. Roll out a bad revision: the web bundle goes to the staging clusters first and halts there, every
     prod cluster keeps the revision it has:
       sed -i '0,/^  labels:/s//  annotations: {{sim.fleet.dev\\/failed: "true"}}\\n  labels:/' \\
         {repo}/bundles/web/deployment.yaml
       git -C {repo} commit -qam "web: a broken release"
       fleet rollout status web --server {url}      (Halted: why, and what to run)
     then fix forward (git -C {repo} revert --no-edit HEAD) or: fleet rollout rollback web --server {url}

Ctrl-C stops the demo.
"""


def prepare_demo(workdir: Path) -> tuple[Path, Path, Path]:
    """Create (or reuse) the demo repository and webhook secret; blocking, run off the event loop."""
    import secrets

    from fleet import demo

    workdir.mkdir(parents=True, exist_ok=True)
    repo = workdir / "repo"
    if not (repo / ".git").exists():
        if repo.exists():
            raise errors.InputError(f"{repo}: exists but is not a git repository; remove it or pick --dir")
        demo.create_repository(repo)
        common.info(f"fleet demo: created the demo repository {repo}")
    else:
        common.info(f"fleet demo: reusing the demo repository {repo}")
    secret_file = workdir / "webhook-secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_hex(16) + "\n")
        secret_file.chmod(0o600)
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.unlink(missing_ok=True)
    return repo, secret_file, kubeconfig


async def demo_main(
    *, workdir: Path, listen: str, interval: float, renderers: sources.Settings | None = None
) -> None:
    repo, secret_file, kubeconfig = await anyio.to_thread.run_sync(prepare_demo, workdir)
    secret = await anyio.to_thread.run_sync(secret_file.read_bytes)
    common.info("fleet demo: starting simulated clusters ...")
    sim = await anyio.open_process(
        [sys.executable, "-m", "fleet.cli", "sim", "--from", str(repo), "--kubeconfig-out", str(kubeconfig)],
        stdin=None,
        stderr=None,
    )
    try:
        assert sim.stdout is not None
        line = b""
        with anyio.fail_after(60):
            while not line.endswith(b"\n"):
                chunk = await sim.stdout.receive(1)
                line += chunk
        if not line.startswith(b"ready "):
            raise errors.FleetError(f"fleet sim did not start: {line.decode(errors='replace').strip()}")
        common.info(f"fleet demo: simulated clusters ready ({kubeconfig})")
        kubectl = str(Path(sys.executable).parent / "kubectl")
        settings = engine.Settings(
            repo=str(repo),
            state_dir=workdir / "state",
            interval=interval,
            recheck_interval=1.0,
            resync_interval=60,
            sources=renderers or sources.Settings(),
        )

        def ready(url: str) -> None:
            typer.echo(
                _demo_instructions(
                    url=url, repo=repo, kubeconfig=kubeconfig, secret_file=secret_file, kubectl=kubectl
                )
            )

        await serve.serve_main(
            settings,
            kubeconfig_path=str(kubeconfig),
            allow_exec_auth=False,
            listen=listen,
            server_settings=server.ServerSettings(webhook_secret=secret.strip()),
            otlp_endpoint=None,
            kube_settings=kube.Settings(),
            on_ready=ready,
        )
    except TimeoutError:
        raise errors.FleetError("fleet sim did not report ready within 60 s") from None
    finally:
        with anyio.CancelScope(shield=True):
            if sim.returncode is None:
                sim.terminate()
                with anyio.move_on_after(10):
                    await sim.wait()
                if sim.returncode is None:
                    sim.kill()


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command(
        workdir: str = typer.Option(".fleet/demo", "--dir", help="Where the demo repo and state live."),
        listen: str = typer.Option(
            "127.0.0.1:8080", "--listen", help="HOST:PORT of the API and status page."
        ),
        interval: str = typer.Option("5s", "--interval", help="Poll period of the demo controller."),
        helm_binary: str | None = typer.Option(
            None, "--helm-binary", help="Helm 4 for the demo's Helm bundle (default: helm on PATH)."
        ),
    ) -> None:
        """Simulated clusters from the demo fleet, a demo repo and `fleet serve`; runs until Ctrl-C."""
        try:
            common.parse_listen(listen)
            seconds = common.parse_duration(interval, flag="--interval", minimum=1.0, maximum=common.DAY)
            renderers = rendering.settings(helm_binary=helm_binary, age_key_file=None, render_timeout="60s")
        except errors.InputError as e:
            common.fail(str(e), code=2)
        serve.configure_logging("info")
        try:
            common.run(
                lambda: demo_main(workdir=Path(workdir), listen=listen, interval=seconds, renderers=renderers)
            )
        except errors.FleetError as e:
            common.fail(str(e), code=2)
