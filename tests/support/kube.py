"""A real Kubernetes control plane and a real Jaeger on loopback, for the `real` tests and for people.

Owns: starting the programs `make tools` builds into tests/tools/bin (etcd, kube-apiserver,
kube-controller-manager, jaeger) as child processes, each in its own process group with a readiness
timeout, and killing them at teardown; the certificates (a generated CA), the service-account key, the
static tokens of an admin and of a limited user, the RBAC that limits that user, and kubeconfig files.
Several API servers share one etcd under different ``--etcd-prefix`` values, one per cluster: a cheap
stand-in for several clusters. `skip_reason()` says why the real tests cannot run here.

Does not: build anything (tests/tools/build does), or know anything of fleet.

For people: ``python -m tests.support.kube up [--clusters N] [--jaeger]`` starts it all, prints the
kubeconfig path and waits for Ctrl-C. See docs/real-cluster.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

TOOLS = Path(__file__).resolve().parent.parent / "tools"
BIN = TOOLS / "bin"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager")
ALL_PROGRAMS = (*CONTROL_PLANE, "jaeger", "helm")
READY_TIMEOUT = 90.0  # seconds for one program to answer ready; the machine may be loaded
STOP_TIMEOUT = 10.0
LIMITED_USER = "limited"
# Controllers of a plain cluster that work without nodes: namespace deletion, garbage collection, the
# `default` ServiceAccount and `kube-root-ca.crt` of every namespace, aggregated ClusterRoles, and the
# Deployment -> ReplicaSet -> Pod chain (Pods stay Pending: there is no scheduler and no kubelet).
CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
)
# A cluster whose controllers write into no namespace and no workload (`ControlPlane.cluster_with`): what a
# test sees there is what it wrote; the differential tests of the sim, and tests that write a workload's
# status themselves, as its controller would, to hold a moment open.
QUIET = "quiet"
QUIET_CONTROLLERS = ("namespace-controller", "garbage-collector-controller")
# The limited user may read and write everything but delete nothing (the RBAC applied at start).
LIMITED_RULES = [
    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch", "create", "update", "patch"]}
]


def binary(name: str) -> Path:
    return BIN / name


def programs_for(fixtures: Sequence[str]) -> tuple[str, ...]:
    """The programs a test needs, from the fixtures it uses (all of them when it uses neither)."""
    needed = (
        *(CONTROL_PLANE if "real_kube" in fixtures else ()),
        *(("jaeger",) if "real_jaeger" in fixtures else ()),
    )
    return needed or ALL_PROGRAMS


def skip_reason(names: Sequence[str] = ALL_PROGRAMS) -> str | None:
    """Why the real programs cannot run here (one line), or None when they all can."""
    for name in names:
        path = binary(name)
        if not os.access(path, os.X_OK):
            return f"real: {path.relative_to(TOOLS.parent.parent)} missing: run `make tools`"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the process that started it dies (even by SIGKILL)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One program in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        with log.open("ab") as sink:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # The death signal follows the starting *thread*: only the main thread's children get it.
                preexec_fn=_die_with_parent
                if threading.current_thread() is threading.main_thread()
                else None,
            )

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, check: Callable[[], bool], *, timeout: float = READY_TIMEOUT) -> float:
        """Poll `check` until it is true; the seconds it took. Fails with the log's tail."""
        start = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode} before ready:\n{self.tail()}")
            try:
                if check():
                    return time.monotonic() - start
            except (httpx.HTTPError, OSError):
                pass
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"{self.name} not ready within {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.1)

    def ready_or_port_taken(self, check: Callable[[], bool]) -> float | None:
        """`wait_ready`, stopping the child when it fails; None when its port was taken (choose another)."""
        try:
            return self.wait_ready(check)
        except RuntimeError:
            self.stop()
            if "address already in use" in self.tail():
                return None
            raise
        except BaseException:
            self.stop()
            raise

    def terminate(self) -> None:
        """SIGTERM to its process group (no wait: `stop` waits)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL to the process group if it is not gone within `timeout`."""
        self.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)


@dataclass
class Cluster:
    """One API server (with its controller-manager) over the shared etcd."""

    name: str
    url: str
    prefix: str
    apiserver: Child
    controller_manager: Child | None
    ready_seconds: float

    def children(self) -> list[Child]:
        return [c for c in (self.controller_manager, self.apiserver) if c is not None]


@dataclass
class ControlPlane:
    """etcd plus API servers started on demand; `clusters(n)` starts the missing ones."""

    workdir: Path
    controllers: Sequence[str] = CONTROLLERS
    ca: trustme.CA = field(default_factory=trustme.CA)
    _ssl: ssl.SSLContext | None = None
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    limited_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    etcd: Child | None = None
    etcd_url: str = ""
    started: dict[str, Cluster] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # Files shared by every API server.
    def _prepare(self) -> None:
        d = self.workdir
        d.mkdir(parents=True, exist_ok=True)
        self.ca.cert_pem.write_to_path(str(d / "ca.crt"))
        serving = self.ca.issue_cert("127.0.0.1", "localhost")
        serving.cert_chain_pems[0].write_to_path(str(d / "serving.crt"))
        serving.private_key_pem.write_to_path(str(d / "serving.key"))
        key = ec.generate_private_key(ec.SECP256R1())
        (d / "sa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (d / "sa.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        # token,user,uid,"group,..." — the controller-manager acts as a cluster admin too.
        (d / "tokens.csv").write_text(
            f'{self.admin_token},admin,admin,"system:masters"\n'
            f"{self.limited_token},{LIMITED_USER},{LIMITED_USER}\n"
        )
        (d / "tokens.csv").chmod(0o600)

    def start_etcd(self) -> None:
        self._prepare()
        for _attempt in range(3):
            client, peer = free_port(), free_port()
            data = self.workdir / "etcd-data"
            shutil.rmtree(data, ignore_errors=True)
            child = Child(
                "etcd",
                [
                    str(binary("etcd")),
                    "--name=fleet-test",
                    f"--data-dir={data}",
                    f"--listen-client-urls=http://127.0.0.1:{client}",
                    f"--advertise-client-urls=http://127.0.0.1:{client}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-cluster=fleet-test=http://127.0.0.1:{peer}",
                    "--unsafe-no-fsync",  # a test store: losing it in a crash is fine
                    "--log-level=warn",
                ],
                self.workdir / "etcd.log",
            )
            url = f"http://127.0.0.1:{client}"
            if (
                child.ready_or_port_taken(
                    lambda url=url: httpx.get(f"{url}/health", timeout=2).status_code == 200
                )
                is None
            ):
                continue
            self.etcd, self.etcd_url = child, url
            return
        raise RuntimeError(f"etcd could not bind free ports:\n{child.tail()}")

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the generated CA (every serving certificate here)."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))
        return self._ssl

    def _admin(self, url: str) -> httpx.Client:
        return httpx.Client(
            base_url=url,
            verify=self.ssl_context(),
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10,
        )

    def _start_cluster(self, name: str, controllers: Sequence[str] | None = None) -> Cluster:
        controllers = self.controllers if controllers is None else controllers
        d = self.workdir / name
        d.mkdir(parents=True, exist_ok=True)
        w = self.workdir
        prefix = f"/clusters/{name}"
        for _attempt in range(3):
            port = free_port()
            url = f"https://127.0.0.1:{port}"
            apiserver = Child(
                f"kube-apiserver ({name})",
                [
                    str(binary("kube-apiserver")),
                    f"--etcd-servers={self.etcd_url}",
                    f"--etcd-prefix={prefix}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    "--endpoint-reconciler-type=none",  # Endpoints may not hold a loopback address
                    f"--secure-port={port}",
                    f"--cert-dir={d}",
                    f"--tls-cert-file={w / 'serving.crt'}",
                    f"--tls-private-key-file={w / 'serving.key'}",
                    f"--client-ca-file={w / 'ca.crt'}",
                    f"--token-auth-file={w / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={w / 'sa.pub'}",
                    f"--service-account-signing-key-file={w / 'sa.key'}",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    "--profiling=false",
                    "--v=1",
                ],
                d / "kube-apiserver.log",
            )
            with self._admin(url) as admin:
                seconds = apiserver.ready_or_port_taken(
                    lambda admin=admin: admin.get("/readyz").status_code == 200
                )
                if seconds is None:
                    continue
                try:
                    self._apply_rbac(admin)
                except BaseException:
                    apiserver.stop()
                    raise
            break
        else:
            raise RuntimeError(f"kube-apiserver ({name}) could not bind a free port:\n{apiserver.tail()}")
        kubeconfig = d / "controller-manager.kubeconfig"
        write_kubeconfig(kubeconfig, self._kubeconfig_doc([(name, url)], token=self.admin_token))
        cm = None
        if controllers:
            try:
                cm = self._start_controller_manager(name, d, kubeconfig, controllers)
            except BaseException:
                apiserver.stop()
                raise
        return Cluster(name, url, prefix, apiserver, cm, seconds)

    def _start_controller_manager(
        self, name: str, d: Path, kubeconfig: Path, controllers: Sequence[str]
    ) -> Child:
        w = self.workdir
        ca = self.ssl_context()
        for _attempt in range(3):
            port = free_port()
            child = Child(
                f"kube-controller-manager ({name})",
                [
                    str(binary("kube-controller-manager")),
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={port}",
                    f"--cert-dir={d}",
                    f"--tls-cert-file={w / 'serving.crt'}",
                    f"--tls-private-key-file={w / 'serving.key'}",
                    f"--controllers={','.join(controllers)}",
                    f"--root-ca-file={w / 'ca.crt'}",
                    f"--service-account-private-key-file={w / 'sa.key'}",
                    "--leader-elect=false",
                    "--profiling=false",
                    "--v=1",
                ],
                d / "kube-controller-manager.log",
            )
            health = f"https://127.0.0.1:{port}/healthz"
            if (
                child.ready_or_port_taken(
                    lambda health=health: httpx.get(health, verify=ca, timeout=2).status_code == 200
                )
                is None
            ):
                continue
            return child
        raise RuntimeError(f"kube-controller-manager ({name}) could not bind a free port:\n{child.tail()}")

    @staticmethod
    def _apply_rbac(admin: httpx.Client) -> None:
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "fleet-test-limited"},
            "rules": LIMITED_RULES,
        }
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "fleet-test-limited"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role["metadata"]["name"],
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": LIMITED_USER}],
        }
        for plural, doc in (("clusterroles", role), ("clusterrolebindings", binding)):
            resp = admin.post(f"/apis/rbac.authorization.k8s.io/v1/{plural}", json=doc)
            if resp.status_code not in (201, 409):
                raise RuntimeError(
                    f"could not create {plural}/{doc['metadata']['name']}: {resp.status_code} {resp.text}"
                )

    # Public API.
    def clusters(self, n: int) -> list[Cluster]:
        """The first `n` clusters (`real-1` ... `real-N`), starting those not yet running."""
        names = [f"real-{i}" for i in range(1, n + 1)]
        with self.lock:
            for name in names:
                if name not in self.started:
                    self.started[name] = self._start_cluster(name)
        return [self.started[name] for name in names]

    def cluster(self, name: str) -> Cluster:
        return self.started[name]

    def cluster_with(self, name: str, *, controllers: Sequence[str]) -> Cluster:
        """A cluster of its own name running only `controllers` (started on first use, kept after)."""
        with self.lock:
            if name not in self.started:
                self.started[name] = self._start_cluster(name, controllers)
        return self.started[name]

    def _kubeconfig_doc(
        self, entries: Sequence[tuple[str, str]], *, token: str, suffix: str = ""
    ) -> dict[str, Any]:
        ca_data = base64.b64encode(self.ca.cert_pem.bytes()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": name, "cluster": {"server": url, "certificate-authority-data": ca_data}}
                for name, url in entries
            ],
            "users": [{"name": f"{name}{suffix}", "user": {"token": token}} for name, _ in entries],
            "contexts": [
                {"name": name, "context": {"cluster": name, "user": f"{name}{suffix}"}} for name, _ in entries
            ],
            "current-context": entries[0][0] if entries else "",
        }

    def kubeconfig_dict(self, names: Sequence[str], *, user: str = "admin") -> dict[str, Any]:
        """A kubeconfig with one context per cluster, named after it, as `user` (admin or limited)."""
        token = {"admin": self.admin_token, LIMITED_USER: self.limited_token}[user]
        entries = [(name, self.started[name].url) for name in names]
        return self._kubeconfig_doc(entries, token=token, suffix=f"-{user}")

    def kubeconfig(self, names: Sequence[str], *, user: str = "admin", path: Path | None = None) -> Path:
        """The same, written to a file (in the work dir unless `path` is given)."""
        target = path or self.workdir / f"kubeconfig-{user}-{'-'.join(names)}.yaml"
        write_kubeconfig(target, self.kubeconfig_dict(names, user=user))
        return target

    def client(self, name: str, *, user: str = "admin") -> httpx.Client:
        token = {"admin": self.admin_token, LIMITED_USER: self.limited_token}[user]
        return httpx.Client(
            base_url=self.started[name].url,
            verify=self.ssl_context(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def stop(self) -> None:
        """Every API server and controller-manager at once, then etcd (they need it to exit cleanly)."""
        children = [child for cluster in self.started.values() for child in cluster.children()]
        for child in children:
            child.terminate()
        for child in children:
            child.stop()
        if self.etcd is not None:
            self.etcd.stop()


def write_kubeconfig(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.chmod(0o600)
    os.replace(tmp, path)


@contextlib.contextmanager
def control_plane(
    workdir: Path, *, clusters: int = 1, controllers: Sequence[str] = CONTROLLERS
) -> Iterator[ControlPlane]:
    """etcd and `clusters` API servers (more on demand with `.clusters(n)`); all killed on exit."""
    plane = ControlPlane(workdir=workdir, controllers=controllers)
    try:
        plane.start_etcd()
        plane.clusters(clusters)
        yield plane
    finally:
        plane.stop()


# Jaeger all-in-one (the v2 binary: an OpenTelemetry collector with Jaeger's storage and query
# extensions), memory storage, OTLP/HTTP in and the query API out, each on a free loopback port.
JAEGER_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memory_store:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memory_store
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
{ui}receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memory_store
"""


@dataclass
class Jaeger:
    otlp_url: str  # base URL: fleet's --otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT
    query_url: str  # Jaeger's UI and HTTP query API
    child: Child

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """The trace as Jaeger's query API answers it (`/api/traces/<id>`), None while it is unknown."""
        resp = httpx.get(f"{self.query_url}/api/traces/{trace_id}", timeout=10)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        data: list[dict[str, Any]] = resp.json().get("data") or []
        return data[0] if data else None

    def wait_trace(self, trace_id: str, *, spans: int = 1, timeout: float = 30.0) -> dict[str, Any]:
        """Poll until the trace holds at least `spans` spans."""
        deadline = time.monotonic() + timeout
        found: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            found = self.trace(trace_id)
            if found is not None and len(found.get("spans", [])) >= spans:
                return found
            time.sleep(0.2)
        raise AssertionError(f"trace {trace_id} not in Jaeger within {timeout}s (last answer: {found})")


@contextlib.contextmanager
def jaeger(workdir: Path, *, ui_assets: Path | None = None) -> Iterator[Jaeger]:
    """Jaeger all-in-one; `ui_assets`: a built Jaeger UI (its `index.html` and `static/`) for the query
    service to serve, since the binary `make tools` builds has none (docs/tracing.md)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ui = f"    ui:\n      assets_path: {ui_assets.resolve()}\n" if ui_assets is not None else ""
    for _attempt in range(3):
        otlp, query, query_grpc = free_port(), free_port(), free_port()
        config = workdir / "jaeger.yaml"
        config.write_text(JAEGER_CONFIG.format(otlp=otlp, query=query, query_grpc=query_grpc, ui=ui))
        child = Child("jaeger", [str(binary("jaeger")), f"--config={config}"], workdir / "jaeger.log")
        handle = Jaeger(f"http://127.0.0.1:{otlp}", f"http://127.0.0.1:{query}", child)

        def ready(handle: Jaeger = handle) -> bool:
            # The OTLP receiver answers 405 to a GET once it listens.
            return (
                httpx.get(f"{handle.query_url}/api/services", timeout=2).status_code == 200
                and httpx.get(f"{handle.otlp_url}/v1/traces", timeout=2).status_code < 500
            )

        if child.ready_or_port_taken(ready) is not None:
            break
    else:
        raise RuntimeError(f"jaeger could not bind free ports:\n{child.tail()}")
    try:
        yield handle
    finally:
        child.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.kube", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start etcd, API servers and controller-managers; wait for Ctrl-C")
    up.add_argument("--clusters", type=int, default=1, help="API servers over the one etcd (default 1)")
    up.add_argument("--dir", type=Path, help="work directory (default: a new temporary one, removed at exit)")
    up.add_argument("--jaeger", action="store_true", help="also start Jaeger all-in-one")
    args = parser.parse_args(argv)
    needed = (*CONTROL_PLANE, "jaeger") if args.jaeger else CONTROL_PLANE
    reason = skip_reason(needed)
    if reason:
        print(reason, file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        workdir = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-kube-")))
        started = time.monotonic()
        plane = stack.enter_context(control_plane(workdir, clusters=args.clusters))
        names = [c.name for c in plane.clusters(args.clusters)]
        admin = plane.kubeconfig(names, path=workdir / "kubeconfig")
        limited = plane.kubeconfig(names, user=LIMITED_USER, path=workdir / "kubeconfig-limited")
        print(f"ready in {time.monotonic() - started:.1f}s: clusters {', '.join(names)}", file=sys.stderr)
        print(f"limited user's kubeconfig: {limited}", file=sys.stderr)
        if args.jaeger:
            j = stack.enter_context(jaeger(workdir / "jaeger"))
            print(f"jaeger: OTLP/HTTP {j.otlp_url}, UI and query API {j.query_url}", file=sys.stderr)
        print(f"logs in {workdir}; Ctrl-C stops everything", file=sys.stderr)
        print(admin, flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
