"""Differential runs: one conformance case against `fleet sim` and against the real API server, compared.

Owns: `Target`, what a case talks to (an HTTP client that records every exchange, kubectl and kr8s
settings with the case's own namespace); the `Transcript` of a run (HTTP exchanges, kubectl runs and
values a case records, in order); its normalisation (`normalise`: what two servers that agree may still
answer differently, e.g. uids, resourceVersions, times; docs/sim.md "Differential tests"); and
`compare`, the readable difference of two transcripts.

Does not: start servers (`fleet.sim.testing`, tests/support/kube.py) or decide which cases run twice
(tests/sim/conftest.py).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from fleet.sim import testing
from fleet.sim.storage import store

KUBECTL = str(Path(sys.executable).parent / "kubectl")
# A test's temporary folder (`tmp_path`); under pytest-xdist inside its worker's folder (`popen-gw0`).
TMP = re.compile(r"/tmp/pytest-of-[^/]+/pytest-\d+/(?:popen-gw\d+/)?[^/\s\"']+")
# The versions a failed delete precondition names (rest.BeforeDelete; the namespace registry's wording).
PRECONDITION_RV = re.compile(
    r"(ResourceVersion in (?:the precondition \(|record \(|precondition: |object meta: ))(\d+)"
)
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
# Keys whose values are times; their values never agree between two servers.
TIME_KEYS = frozenset(
    {
        "creationTimestamp",
        "deletionTimestamp",
        "time",
        "lastTransitionTime",
        "lastUpdateTime",
        "eventTime",
        "firstTimestamp",
        "lastTimestamp",
        "startTime",
        "completionTime",
        "renewTime",
        "acquireTime",
    }
)


# ----- the transcript ------------------------------------------------------------------------------


@dataclass
class Transcript:
    """What one run saw, in the order it happened; `paused` leaves polling out."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    paused: int = 0

    def add(self, entry: dict[str, Any]) -> dict[str, Any]:
        if not self.paused:
            self.entries.append(entry)
        return entry


class _Tee(httpx.SyncByteStream):
    """A response body passed through to the caller and kept for the transcript when it is closed."""

    def __init__(self, inner: httpx.SyncByteStream, entry: dict[str, Any]) -> None:
        self.inner = inner
        self.entry = entry
        self.buf = bytearray()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.buf += chunk
            yield chunk

    def close(self) -> None:
        self.entry["raw"] = bytes(self.buf)
        self.inner.close()


class _Recording(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, transcript: Transcript, base_path: str) -> None:
        self.inner = inner
        self.transcript = transcript
        self.base_path = base_path.rstrip("/")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        path = request.url.path
        if path.startswith(self.base_path):
            path = path[len(self.base_path) :] or "/"
        query = request.url.query.decode()
        entry = self.transcript.add(
            {
                "http": f"{request.method} {path}",
                "query": query,
                "status": response.status_code,
                "type": response.headers.get("content-type", ""),
                "warning": response.headers.get_list("warning"),
            }
        )
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Tee(response.stream, entry),
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        self.inner.close()


# ----- a target --------------------------------------------------------------------------------------


@dataclass
class Target:
    """One server a case runs against: `fleet sim` (`name == "sim"`) or the real API server ("real").

    `ns` is a namespace of the case's own, created before it runs (with its `default` ServiceAccount, as
    a real cluster's controllers make it). `http` is an httpx client rooted at the cluster whose
    exchanges go into `transcript`; `kubectl(...)` runs the real kubectl with `ns` as the context's
    namespace; `kubeconfig_doc` is a one-context kubeconfig (for kr8s)."""

    name: str
    url: str
    ns: str
    kubeconfig: Path
    kubeconfig_doc: dict[str, Any]
    context: str
    verify: ssl.SSLContext | bool
    headers: Mapping[str, str]
    cache_dir: Path
    transcript: Transcript = field(default_factory=Transcript)
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def real(self) -> bool:
        return self.name == "real"

    # HTTP
    def client(self, *, timeout: float = 30.0) -> httpx.Client:
        """A new recording client (closed with the target): for a second connection beside `http`."""
        base_path = httpx.URL(self.url).path
        transport = _Recording(httpx.HTTPTransport(verify=self.verify), self.transcript, base_path)
        c = httpx.Client(base_url=self.url, headers=dict(self.headers), timeout=timeout, transport=transport)
        self._clients.append(c)
        return c

    @property
    def http(self) -> httpx.Client:
        return self._clients[0] if self._clients else self.client()

    def raw_client(self, *, timeout: float = 30.0) -> httpx.Client:
        """A client whose exchanges are not recorded (setup and cleanup)."""
        return httpx.Client(
            base_url=self.url, headers=dict(self.headers), verify=self.verify, timeout=timeout
        )

    def path(self, resource: str, *, group_version: str = "v1", namespace: str | None = None) -> str:
        """The collection path of a namespaced resource in the case's namespace (or `namespace`)."""
        root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        return f"{root}/namespaces/{namespace or self.ns}/{resource}"

    @property
    def cm(self) -> str:
        return self.path("configmaps")

    @property
    def deploy(self) -> str:
        return self.path("deployments", group_version="apps/v1")

    def unique(self, suffix: str) -> str:
        """A name of this case (another namespace, a cluster-scoped object): normalised like `ns`."""
        return f"{self.ns}-{suffix}"

    # recording
    def record(self, label: str, value: Any) -> Any:
        """Put a value a case got (e.g. from kr8s) into the transcript; returns it."""
        self.transcript.add({"value": label, "data": _jsonable(value)})
        return value

    @contextlib.contextmanager
    def quietly(self) -> Iterator[None]:
        """Exchanges inside are not recorded (polling, whose count depends on timing)."""
        self.transcript.paused += 1
        try:
            yield
        finally:
            self.transcript.paused -= 1

    def eventually(self, check: Callable[[], bool], *, what: str, within: float = 60.0) -> None:
        """Poll `check` unrecorded until it holds; the transcript says only that it came to hold."""
        deadline = time.monotonic() + within
        with self.quietly():
            while not check():
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what}: not within {within:g}s on {self.name}")
                time.sleep(0.05)
        self.transcript.add({"eventually": what})

    # kubectl
    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            KUBECTL,
            "--kubeconfig",
            str(self.kubeconfig),
            "--context",
            self.context,
            "--cache-dir",
            str(self.cache_dir),
            *args,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin, check=False)
        self.transcript.add(
            {"kubectl": list(args), "rc": out.returncode, "stdout": out.stdout, "stderr": out.stderr}
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({out.returncode}) on {self.name}: {out.stderr}"
            )
        return out

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def new_namespace_name() -> str:
    return f"diff-{secrets.token_hex(4)}"


def prepare_namespace(t: Target) -> None:
    """The case's namespace and its `default` ServiceAccount, unrecorded."""
    with t.raw_client() as c:
        made = c.post("/api/v1/namespaces", json={"metadata": {"name": t.ns}})
        assert made.status_code == 201, made.text
        sa = c.post(f"/api/v1/namespaces/{t.ns}/serviceaccounts", json={"metadata": {"name": "default"}})
        assert sa.status_code in (201, 409), sa.text


def remove_namespaces(t: Target) -> None:
    """Delete the case's namespaces (its own and those named `unique(...)`), unrecorded, without waiting."""
    with t.raw_client() as c:
        listed = c.get("/api/v1/namespaces")
        for item in listed.json().get("items", []) if listed.status_code == 200 else []:
            name = item["metadata"]["name"]
            if name == t.ns or name.startswith(f"{t.ns}-"):
                c.delete(f"/api/v1/namespaces/{name}")


def one_context(doc: Mapping[str, Any], *, context: str, namespace: str) -> dict[str, Any]:
    """A kubeconfig holding only `context`, whose namespace is `namespace`."""
    ctx = next(c for c in doc["contexts"] if c["name"] == context)
    cluster = next(c for c in doc["clusters"] if c["name"] == ctx["context"]["cluster"])
    user = next(u for u in doc["users"] if u["name"] == ctx["context"]["user"])
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [user],
        "contexts": [{"name": context, "context": {**ctx["context"], "namespace": namespace}}],
        "current-context": context,
    }


def write_kubeconfig(path: Path, doc: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(doc), sort_keys=False))
    path.chmod(0o600)
    return path


# ----- normalisation ---------------------------------------------------------------------------------


class _Normaliser:
    """One pass over a transcript, in order: values that vary between servers become placeholders.

    uids, resourceVersions, cluster IPs and node ports become ordinals in order of first appearance
    (`<uid:1>`, `<rv:3>`), so "the same value again" and "a new value" still compare; a list's and a
    bookmark's resourceVersion become `<list-rv>` (on a real server it is the shared etcd revision, which
    other writers move); times, continue tokens and the server's address become fixed placeholders; the
    case's namespace becomes `<ns>` and generated name suffixes `<generated:N>` in every string."""

    def __init__(self, ns: str, generated: Sequence[str]) -> None:
        self.ns = ns
        self.ordinals: dict[str, dict[Any, str]] = {}
        self.generated = {name: f"<generated:{i}>" for i, name in enumerate(generated, 1)}
        self.rvs: set[str] = set()

    def ordinal(self, kind: str, value: Any) -> str:
        table = self.ordinals.setdefault(kind, {})
        if value not in table:
            table[value] = f"<{kind}:{len(table) + 1}>"
        return table[value]

    def text(self, s: str) -> str:
        s = TMP.sub("<tmp>", s)  # each run has its own temporary directory (a file kubectl read)
        for name, placeholder in self.generated.items():
            s = s.replace(name, placeholder)
        s = s.replace(self.ns, "<ns>")
        s = UUID.sub(lambda m: self.ordinal("uid", m.group(0)), s)
        s = re.sub(r"(Too large resource version: \d+, current: )\d+", r"\1<rv>", s)
        # A failed delete precondition names both versions: ordinals, like the objects' own.
        s = PRECONDITION_RV.sub(lambda m: m.group(1) + self.ordinal("rv", m.group(2)), s)
        return s

    def query(self, query: str) -> str:
        parts = []
        for part in query.split("&") if query else []:
            key, sep, value = part.partition("=")
            if key == "continue" and value:
                value = "<continue>"
            elif key == "resourceVersion" and value in self.rvs:
                value = "<rv>"
            parts.append(f"{key}{sep}{self.text(value)}")
        return "&".join(parts)

    def value(self, v: Any, key: str | None = None, parent: Mapping[str, Any] | None = None) -> Any:
        if isinstance(v, dict):
            return self.mapping(v)
        if isinstance(v, list):
            if key == "clusterIPs":
                return [self.ip(x) for x in v]
            return [self.value(x, key) for x in v]
        if isinstance(v, str):
            if key in TIME_KEYS:
                return "<time>"
            if key == "uid":
                return self.ordinal("uid", v)
            if key == "clusterIP":
                return self.ip(v)
            if key == "serverAddress":
                return "<address>"
            return self.text(v)
        if key == "nodePort" and isinstance(v, int):
            return self.ordinal("node-port", v)
        return v

    def ip(self, v: Any) -> Any:
        return v if v in ("None", "", None) else self.ordinal("ip", v)

    def mapping(self, d: Mapping[str, Any]) -> dict[str, Any]:
        is_list = ("items" in d or "rows" in d) and isinstance(d.get("metadata"), dict)
        is_bookmark = d.get("type") == "BOOKMARK" and isinstance(d.get("object"), dict)
        out: dict[str, Any] = {}
        for k, v in d.items():
            if k == "metadata" and isinstance(v, dict) and is_list:
                out[k] = self.list_meta(v)
            elif k == "object" and is_bookmark:
                obj = dict(v)
                meta = dict(obj.get("metadata") or {})
                if "resourceVersion" in meta:
                    self.rvs.add(str(meta["resourceVersion"]))
                    meta["resourceVersion"] = "<list-rv>"
                obj["metadata"] = meta
                out[k] = self.value(obj, k)
            elif k == "resourceVersion" and isinstance(v, str) and v:
                self.rvs.add(v)
                out[k] = self.ordinal("rv", v)
            elif k == "fieldsV1" and isinstance(v, dict):
                out[k] = _without_self(v)
            elif k == "managedFields" and isinstance(v, list):
                # Ordered by time to the second, then manager: entries written in one second or two
                # come in either order, so they are compared in manager order.
                entries = [self.value(e, k) for e in v]
                out[k] = sorted(entries, key=lambda e: json.dumps(e, sort_keys=True))
            else:
                out[k] = self.value(v, k, d)
        return out

    def list_meta(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in meta.items():
            if k == "resourceVersion":
                self.rvs.add(str(v))
                out[k] = "<list-rv>"
            elif k == "continue" and v:
                out[k] = "<continue>"
            else:
                out[k] = self.value(v, k)
        return out


def _without_self(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A FieldsV1 set without its "." members (a map, list or struct owned as a whole besides its
    fields): the sim does not know which Go fields are pointers or lack `omitempty`, so it cannot tell
    when a real server adds them (docs/sim.md, known differences; test_known_difference_field_sets)."""
    return {k: _without_self(v) if isinstance(v, dict) else v for k, v in fields.items() if k != "."}


def _parse_body(raw: bytes | None, content_type: str) -> Any:
    if raw is None:
        return "<unread>"
    text = raw.decode("utf-8", errors="replace")
    if "json" in content_type:
        try:
            return json.loads(text)
        except ValueError:
            lines = [line for line in text.splitlines() if line.strip()]
            try:
                return {"stream": [json.loads(line) for line in lines]}
            except ValueError:
                return text
    return text


AGE = re.compile(r"(?<=\s)\d+(?:s|m|h|d|y)(?:\d+(?:s|m|h))?(?=\s|$)")


def _parse_output(text: str) -> Any:
    """kubectl's stdout: JSON documents parsed (so they normalise field by field); else the text with the
    ages of table rows (`3s`, `5m2s`) as `<age>` and column padding as two spaces."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(stripped)
        except ValueError:
            pass
    text = re.sub(r"\b(LIVE|MERGED)-\d+", r"\1-<n>", text)  # kubectl diff's temporary directories
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? [+-]\d{4}", "<time>", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<time>", text)  # YAML or table timestamps
    text = re.sub(r'(resourceVersion: )"\d+"', r'\1"<rv>"', text)
    return re.sub(r" {2,}", "  ", AGE.sub("<age>", text))


def _generated_names(value: Any, found: list[str]) -> None:
    if isinstance(value, dict):
        meta = value.get("metadata")
        if isinstance(meta, dict) and meta.get("generateName") and isinstance(meta.get("name"), str):
            if meta["name"] not in found and meta["name"] != meta["generateName"]:
                found.append(meta["name"])
        for v in value.values():
            _generated_names(v, found)
    elif isinstance(value, list):
        for v in value:
            _generated_names(v, found)


def normalise(transcript: Transcript, ns: str) -> list[dict[str, Any]]:
    """The transcript with every value that may differ between agreeing servers replaced (see `_Normaliser`)."""
    parsed: list[dict[str, Any]] = []
    for entry in transcript.entries:
        e = {k: v for k, v in entry.items() if k != "raw"}
        if "http" in entry:
            e["body"] = _parse_body(entry.get("raw"), entry.get("type", ""))
            if not e["warning"]:
                del e["warning"]
        elif "kubectl" in entry:
            e["stdout"] = _parse_output(entry["stdout"])
        parsed.append(e)
    generated: list[str] = []
    _generated_names(parsed, generated)
    n = _Normaliser(ns, generated)
    out = []
    for e in parsed:
        if "http" in e:
            e["http"] = n.text(e["http"])
            e["query"] = n.query(e["query"])
            if not e["query"]:
                del e["query"]
        out.append(n.value(e))
    return out


def compare(sim: list[dict[str, Any]], real: list[dict[str, Any]], *, limit: int = 120) -> str:
    """The unified difference of two normalised transcripts ('' when they agree)."""
    if sim == real:
        return ""

    def lines(t: list[dict[str, Any]]) -> list[str]:
        return json.dumps(t, indent=1, sort_keys=True).splitlines()

    diff = list(difflib.unified_diff(lines(sim), lines(real), "sim", "real", n=4, lineterm=""))
    if len(diff) > limit:
        diff = [*diff[:limit], f"... ({len(diff) - limit} more lines)"]
    return "\n".join(diff)


# ----- the two kinds of target --------------------------------------------------------------------


@contextlib.contextmanager
def sim_target(workdir: Path, *, settings: Any = None) -> Iterator[Target]:
    """A fresh one-cluster `fleet sim` (controllers off, as the real quiet cluster has none that write)."""
    # The real server's timings (bookmarks, the wait for a future resourceVersion); no controller writes
    # into namespaces or workloads, as in the real quiet cluster.
    quiet = settings or store.Settings(namespace_defaults=False, workload_status=False)
    with testing.serving(names=["c1"], settings=quiet) as sim:
        ns = new_namespace_name()
        doc = one_context(sim.kubeconfig_dict, context="c1", namespace=ns)
        t = Target(
            name="sim",
            url=sim.url("c1"),
            ns=ns,
            kubeconfig=write_kubeconfig(workdir / "sim.kubeconfig", doc),
            kubeconfig_doc=doc,
            context="c1",
            verify=False,
            headers={},
            cache_dir=workdir / "sim-cache",
        )
        prepare_namespace(t)
        try:
            yield t
        finally:
            t.close()


@contextlib.contextmanager
def real_target(plane: Any, cluster: str, workdir: Path) -> Iterator[Target]:
    """The real API server `cluster` of `plane` (tests/support/kube.py), as admin, in a new namespace."""
    ns = new_namespace_name()
    doc = one_context(plane.kubeconfig_dict([cluster]), context=cluster, namespace=ns)
    t = Target(
        name="real",
        url=plane.cluster(cluster).url,
        ns=ns,
        kubeconfig=write_kubeconfig(workdir / "real.kubeconfig", doc),
        kubeconfig_doc=doc,
        context=cluster,
        verify=plane.ssl_context(),
        headers={"Authorization": f"Bearer {plane.admin_token}"},
        cache_dir=workdir / "real-cache",
    )
    prepare_namespace(t)
    try:
        yield t
    finally:
        t.close()
        remove_namespaces(t)
