"""Simulated clusters for Python tests: the `fleet sim` server in a background thread.

Owns: `serving(...)` (a sync context manager) and `running(...)` (an async one), which start a
`fleet.sim.server.Sim` on its own event loop in a daemon thread, write its kubeconfig to a file, and
yield a `SimHandle`. The thread lets sync tests run subprocesses (kubectl) and async tests use any
loop; every handle method exists in a sync form (`faults_sync`) and an async form (`await faults`)
that never blocks the caller's loop. Also `write_kubeconfig` (atomic, used by the CLI too).

Does not: implement anything of the server (`fleet.sim.server`, `fleet.sim.rest`, `fleet.sim.storage.store`).

Example::

    with fleet.sim.testing.serving(clusters=2) as sim:
        subprocess.run(["kubectl", "--kubeconfig", str(sim.kubeconfig), "--context", "sim-001", ...])

    async with fleet.sim.testing.running(names=["a"]) as sim:
        api = kr8s.asyncio.Api(kubeconfig=sim.kubeconfig_for("a"), bypass_factory=True)
        await sim.faults("a", {"status": 503, "count": 1})
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fleet.sim import server
from fleet.sim.storage import store

T = TypeVar("T")
START_TIMEOUT = 60.0


def write_kubeconfig(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)


class SimHandle:
    """A running `Sim` in a background thread; safe to use from any thread or event loop."""

    def __init__(self, sim: server.Sim, loop: asyncio.AbstractEventLoop, kubeconfig: Path) -> None:
        self.sim = sim
        self.loop = loop
        self.kubeconfig = kubeconfig
        self.kubeconfig_dict = sim.kubeconfig()
        self.names = list(sim.names)
        self.admin_url = sim.admin_url

    def url(self, name: str) -> str:
        return self.sim.url(name)

    def kubeconfig_for(self, name: str) -> dict[str, Any]:
        """A kubeconfig dict holding only `name` (what kr8s wants: one explicit config per cluster)."""
        doc = self.kubeconfig_dict
        return {
            **doc,
            "clusters": [c for c in doc["clusters"] if c["name"] == name],
            "users": [u for u in doc["users"] if u["name"] == name],
            "contexts": [c for c in doc["contexts"] if c["name"] == name],
            "current-context": name,
        }

    @property
    def ca_pem(self) -> bytes | None:
        return self.sim.ca_pem

    # Run a function on the server's loop (the only thread that may touch cluster state).
    def call_sync(self, fn: Callable[[], T], *, timeout: float = 30.0) -> T:
        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    async def call(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        fut = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(fut), 30.0)

    def cluster(self, name: str) -> store.Cluster:
        """The cluster's state; read it only through `call`/`call_sync`."""
        return self.sim.host_of(name).cluster

    def faults_sync(self, name: str, rule: dict[str, Any]) -> None:
        self.call_sync(lambda: self.sim.add_fault(name, rule))

    def clear_faults_sync(self, name: str) -> None:
        self.call_sync(lambda: self.sim.clear_faults(name))

    def fault_rules_sync(self, name: str) -> list[dict[str, int]]:
        return self.call_sync(lambda: self.sim.rules(name))

    def compact_sync(self, name: str) -> int:
        return self.call_sync(lambda: self.sim.compact(name))

    def journal_sync(self, name: str, *, since: int = 0) -> list[dict[str, Any]]:
        return self.call_sync(lambda: self.sim.journal(name, since=since))

    async def faults(self, name: str, rule: dict[str, Any]) -> None:
        await self.call(lambda: self.sim.add_fault(name, rule))

    async def clear_faults(self, name: str) -> None:
        await self.call(lambda: self.sim.clear_faults(name))

    async def fault_rules(self, name: str) -> list[dict[str, int]]:
        return await self.call(lambda: self.sim.rules(name))

    async def compact(self, name: str) -> int:
        return await self.call(lambda: self.sim.compact(name))

    async def journal(self, name: str, *, since: int = 0) -> list[dict[str, Any]]:
        return await self.call(lambda: self.sim.journal(name, since=since))


def _names(names: list[str] | None, clusters: int | None) -> list[str]:
    if names:
        return list(names)
    return server.cluster_names(clusters or 1)


@contextlib.contextmanager
def serving(
    *,
    names: list[str] | None = None,
    clusters: int | None = None,
    tls: bool = False,
    port_per_cluster: bool = False,
    kubeconfig: Path | None = None,
    settings: store.Settings | None = None,
) -> Iterator[SimHandle]:
    """Start simulated clusters in a background thread; yields a `SimHandle`; stops them on exit."""
    sim = server.Sim(_names(names, clusters), port_per_cluster=port_per_cluster, tls=tls, settings=settings)
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[None] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            await sim.start()
        except BaseException as e:
            started.set_exception(e)
            return
        started.set_result(None)
        await stop.wait()
        await sim.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="fleet-sim", daemon=True)
    thread.start()
    tmpdir: tempfile.TemporaryDirectory[str] | None = None
    try:
        started.result(START_TIMEOUT)
        if kubeconfig is None:
            tmpdir = tempfile.TemporaryDirectory(prefix="fleet-sim-")
            kubeconfig = Path(tmpdir.name) / "kubeconfig"
        write_kubeconfig(kubeconfig, sim.kubeconfig())
        yield SimHandle(sim, loop, kubeconfig)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        if not thread.is_alive():
            loop.close()
        if tmpdir is not None:
            tmpdir.cleanup()


@contextlib.asynccontextmanager
async def running(
    *,
    names: list[str] | None = None,
    clusters: int | None = None,
    tls: bool = False,
    port_per_cluster: bool = False,
    kubeconfig: Path | None = None,
    settings: store.Settings | None = None,
) -> AsyncIterator[SimHandle]:
    """The async form of `serving`: starting and stopping happen in a worker thread."""
    cm = serving(
        names=names,
        clusters=clusters,
        tls=tls,
        port_per_cluster=port_per_cluster,
        kubeconfig=kubeconfig,
        settings=settings,
    )
    handle = await asyncio.to_thread(cm.__enter__)
    try:
        yield handle
    finally:
        await asyncio.to_thread(cm.__exit__, None, None, None)
