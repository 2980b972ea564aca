"""The real HTTP API of `fleet serve` in-process: `fleet.controller.server`'s app over a real socket, in front of a
real (not started) `fleet.controller.engine.Engine`, on an event loop in a background thread (anyio's blocking
portal). Tests talk to it with raw sockets (to send bytes no HTTP client would) or httpx.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyio.abc import TaskStatus
from anyio.from_thread import start_blocking_portal

from fleet.clients import kube, statedb
from fleet.controller import engine, server


@dataclass
class Api:
    url: str
    host: str
    port: int
    engine: engine.Engine

    def raw(self, request: bytes, *, timeout: float = 10.0) -> bytes:
        """Send raw bytes on a new connection; return the status line of the answer."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(request)
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.split(b"\r\n", 1)[0]


async def _serve(
    app: Any, settings: server.ServerSettings, *, task_status: TaskStatus[tuple[str, int]]
) -> None:
    async with server.Listener(app, limits=settings.limits) as listener:
        task_status.started(await listener.bind("127.0.0.1", 0))
        await listener.serve()


@contextmanager
def serving(tmp_path: Path, settings: server.ServerSettings | None = None) -> Iterator[Api]:
    settings = settings or server.ServerSettings()
    store = statedb.StateStore(tmp_path / "api-state" / "state.db")
    eng = engine.Engine(
        engine.Settings(repo=str(tmp_path / "no-repo"), state_dir=tmp_path / "api-state"),
        kubeconfig=kube.Kubeconfig(contexts={}),
        kube_settings=kube.Settings(),
        store=store,
    )
    app = server.build_app(eng, settings)
    try:
        with start_blocking_portal() as portal:
            future, (host, port) = portal.start_task(_serve, app, settings)
            try:
                yield Api(url=f"http://{host}:{port}", host=host, port=port, engine=eng)
            finally:
                future.cancel()
    finally:
        store.close()
