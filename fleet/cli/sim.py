"""`fleet sim`: serve simulated Kubernetes clusters until SIGTERM/SIGINT.

Owns: the flags of SIM.md (`--clusters`, `--names`, `--from`, `--listen`, `--kubeconfig-out`,
`--port-per-cluster`, `--tls`, `--kube-version`), reading cluster names from a repository's
`clusters/*.yaml` files on disk, the `ready <kubeconfig path>` line on stdout, exit 0 on a signal, and the
process's cycle-collector settings (`lean_collector`). Does not: implement the server (`fleet.sim.server`).
"""

from __future__ import annotations

import dataclasses
import gc
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import typer
import yaml

from fleet.cli import common
from fleet.core import errors

if TYPE_CHECKING:
    from fleet.sim.storage import store


def names_from_repo(repo: Path) -> list[str]:
    """Context names of the Cluster files in `repo/clusters/` (`spec.context`, else `metadata.name`).

    The repository parser (`fleet.core.repository.parse`) reads the files, so names match what fleet itself
    uses; a file it finds broken still gets a cluster, named by a minimal read of the same fields.
    """
    folder = repo / "clusters"
    if not folder.is_dir():
        common.fail(f"{folder}: no clusters/ folder in the repository")
    paths = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    from fleet.core import model, repository

    files = {f"clusters/{p.name}": p.read_bytes() for p in paths}
    parsed = repository.parse(model.Snapshot(revision=None, files=files))
    by_path = {c.path: c.context or c.name for c in parsed.clusters.values()}
    names: list[str] = []
    for path in paths:
        known = by_path.get(f"clusters/{path.name}")
        if known is not None:
            if known not in names:
                names.append(known)
            continue
        try:
            doc = yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)
        except yaml.YAMLError as e:
            common.fail(f"{path}: not valid YAML: {e}")
        if not isinstance(doc, dict):
            common.fail(f"{path}: a Cluster file must be a YAML mapping")
        spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        name = (spec or {}).get("context") or (meta or {}).get("name") or path.stem
        if not isinstance(name, str):
            common.fail(f"{path}: spec.context / metadata.name must be a string")
        if name not in names:
            names.append(name)
    if not names:
        common.fail(f"{folder}: no Cluster files (*.yaml)")
    return names


def _parse_listen(listen: str) -> tuple[str, int]:
    try:
        return common.parse_listen(listen)
    except errors.InputError as e:
        common.fail(str(e), code=2)


async def _serve(
    names: list[str],
    host: str,
    port: int,
    kubeconfig_out: Path,
    port_per_cluster: bool,
    tls: bool,
    kube_version: str,
    settings: store.Settings | None = None,
) -> None:
    from fleet.sim import server, testing

    sim = server.Sim(
        names,
        host=host,
        port=port,
        port_per_cluster=port_per_cluster,
        tls=tls,
        git_version=kube_version,
        settings=settings,
    )
    try:
        await sim.start()
    except OSError as e:
        common.fail(f"cannot listen on {host}:{port}: {e}")
    lean_collector()
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            testing.write_kubeconfig(kubeconfig_out, sim.kubeconfig())
            sys.stdout.write(f"ready {kubeconfig_out}\n")
            sys.stdout.flush()
            common.info(f"fleet sim: {len(names)} cluster(s), admin at {sim.admin_url}/_sim/clusters")
            async for _ in signals:
                break
    finally:
        with anyio.CancelScope(shield=True):
            await sim.stop()


# The sim process's cycle collector: a young collection after 50,000 new containers, not 700. Under a load
# of applies the default thresholds spent 15 % of the sim's CPU in collections (a full one scans every
# stored object, and the store is most of the heap), these 3 % (docs/benchmarks.md, "The sim's own CPU
# per request"). Stored objects are plain JSON trees: no cycles to find in them.
SIM_GC_THRESHOLDS = (50_000, 20, 20)


def lean_collector() -> None:
    """What the started sim holds (modules, schemas, every cluster's first objects) moves out of the cycle
    collector's reach, and the collector runs less often (`SIM_GC_THRESHOLDS`). For the `fleet sim`
    process only: an in-process sim (`fleet.sim.testing`) leaves its host's collector alone."""
    gc.freeze()
    gc.set_threshold(*SIM_GC_THRESHOLDS)


def sim_command(
    clusters: int = typer.Option(0, "--clusters", help="Serve N clusters named sim-001 ... sim-NNN."),
    names: str = typer.Option("", "--names", help="Comma-separated cluster names."),
    from_repo: Path | None = typer.Option(
        None, "--from", help="Serve one cluster per clusters/*.yaml of this repository folder."
    ),
    listen: str = typer.Option(
        "127.0.0.1:0", "--listen", help="HOST:PORT to listen on (port 0: any free port)."
    ),
    kubeconfig_out: Path | None = typer.Option(
        None, "--kubeconfig-out", help="Write the kubeconfig here (default: a file in a new temp folder)."
    ),
    port_per_cluster: bool = typer.Option(
        False, "--port-per-cluster", help="Give each cluster its own port."
    ),
    tls: bool = typer.Option(False, "--tls", help="Serve HTTPS with a CA made at start (in the kubeconfig)."),
    kube_version: str = typer.Option("v1.35.2", "--kube-version", help="gitVersion reported by /version."),
    workload_delay: str = typer.Option(
        "1s",
        "--workload-delay",
        help="Delay before workloads (Deployments, StatefulSets, DaemonSets, ReplicaSets) become available "
        "and Jobs complete, e.g. 0.5s, 200ms, 2; 'off' turns workload status simulation off.",
    ),
    crd_establish_delay: str = typer.Option(
        "0s", "--crd-establish-delay", help="Delay from creating a CRD to it being Established and served."
    ),
    rv_base: int = typer.Option(
        1000,
        "--rv-base",
        min=1,
        help="Starting resourceVersion of the first cluster (cluster i starts at BASE + 10000*i); "
        "above 2147483647 it catches clients that parse resourceVersions as 32-bit integers.",
    ),
) -> None:
    """Serve simulated Kubernetes API servers; prints `ready <kubeconfig>` once every cluster answers."""
    from fleet.sim import server

    try:
        common.check_count(clusters, flag="--clusters", minimum=0)
    except errors.InputError as e:
        common.fail(str(e), code=2)

    chosen = [n.strip() for n in names.split(",") if n.strip()]
    if from_repo is not None:
        chosen += [n for n in names_from_repo(from_repo) if n not in chosen]
    if clusters:
        chosen += [n for n in server.cluster_names(clusters) if n not in chosen]
    if not chosen:
        chosen = server.cluster_names(1)
    host, port = _parse_listen(listen)
    if kubeconfig_out is None:
        import tempfile

        kubeconfig_out = Path(tempfile.mkdtemp(prefix="fleet-sim-")) / "kubeconfig"
    try:
        settings = dataclasses.replace(_sim_settings(workload_delay, crd_establish_delay), rv_base=rv_base)
        common.run(
            _serve,
            chosen,
            host,
            port,
            kubeconfig_out.absolute(),
            port_per_cluster,
            tls,
            kube_version,
            settings,
        )
    except ValueError as e:
        common.fail(str(e))


def parse_duration(text: str, *, flag: str) -> float:
    """`common.parse_duration`, failing the command with the message on bad input."""
    try:
        return common.parse_duration(text, flag=flag)
    except errors.InputError as e:
        common.fail(str(e), code=2)


def _sim_settings(workload_delay: str, crd_establish_delay: str) -> store.Settings:
    from fleet.sim.storage import store

    off = workload_delay.strip().lower() in ("off", "none", "false")
    return store.Settings(
        workload_status=not off,
        workload_delay=0.0 if off else parse_duration(workload_delay, flag="--workload-delay"),
        crd_establish_delay=parse_duration(crd_establish_delay, flag="--crd-establish-delay"),
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `fleet` app."""
    app.command("sim")(sim_command)
