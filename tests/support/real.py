"""Reading and changing the real clusters of tests/support/kube.py the way a person would, for fleet's tests.

Owns: small helpers the `real` end-to-end tests share: unique names (the clusters live for the whole test
session), reading objects over HTTP as the admin, fleet's inventory ConfigMap read by its documented
layout (docs/reconcile.md: `fleet-system/<instance>-inventory-<bundle>`, `data.objects` a JSON list of
``[group, version, kind, namespace, name]``), the real kubectl binary of the virtualenv against a
cluster, and a watch on one namespace's objects in a background thread (what a test uses to act at the
moment fleet has written part of a change: there is no request journal on a real API server).

Does not: start anything (tests/support/kube.py does), or import fleet: these tests see fleet only from
outside, as a person or another controller would.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import kube

KUBECTL = str(Path(sys.executable).parent / "kubectl")
INVENTORY_NAMESPACE = "fleet-system"
OWNER = "fleet.dev/owner"
# Put into every namespace by the controller-manager's root-ca publisher: not fleet's, never in a bundle.
ROOT_CA = "kube-root-ca.crt"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def objects(
    plane: kube.ControlPlane, cluster: str, namespace: str, plural: str = "configmaps", *, group: str = ""
) -> dict[str, dict[str, Any]]:
    """Objects of one kind in one namespace by name (a missing namespace: none), the root CA left out."""
    base = f"/apis/{group}" if group else "/api/v1"
    with plane.client(cluster) as api:
        resp = api.get(f"{base}/namespaces/{namespace}/{plural}")
        if resp.status_code == 404:
            return {}
        resp.raise_for_status()
        return {i["metadata"]["name"]: i for i in resp.json()["items"] if i["metadata"]["name"] != ROOT_CA}


def get(plane: kube.ControlPlane, cluster: str, path: str) -> dict[str, Any] | None:
    with plane.client(cluster) as api:
        resp = api.get(path)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body


def uids(found: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: obj["metadata"]["uid"] for name, obj in found.items()}


def owned_by(found: dict[str, dict[str, Any]], instance: str) -> set[str]:
    return {n for n, o in found.items() if (o["metadata"].get("labels") or {}).get(OWNER) == instance}


def inventory(plane: kube.ControlPlane, cluster: str, *, instance: str, bundle: str) -> set[str] | None:
    """The refs of a bundle's inventory as ``Kind/namespace/name`` (None: no inventory ConfigMap)."""
    cm = objects(plane, cluster, INVENTORY_NAMESPACE).get(f"{instance}-inventory-{bundle}")
    if cm is None:
        return None
    return {
        f"{kind}/{ns}/{name}" if ns else f"{kind}/{name}"
        for _g, _v, kind, ns, name in json.loads(cm["data"]["objects"])
    }


def kubectl(
    plane: kube.ControlPlane,
    cluster: str,
    *args: str,
    user: str = "admin",
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """The real kubectl against one cluster (its own kubeconfig file, never the caller's KUBECONFIG)."""
    config = plane.kubeconfig([cluster], user=user)
    done = subprocess.run(
        [KUBECTL, "--kubeconfig", str(config), "--context", cluster, "--request-timeout=30s", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(config.parent), **(env or {})},
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def eventually(check: Callable[[], bool], *, timeout: float = 60.0, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Watch:
    """Events (type, name) of one namespace's objects of one kind, from a real watch, as they come."""

    events: list[tuple[str, str]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def count(self, kind: str, prefix: str = "") -> int:
        with self.changed:
            return sum(1 for t, n in self.events if t == kind and n.startswith(prefix))

    def wait(self, kind: str, n: int, *, prefix: str = "", timeout: float = 60.0) -> None:
        """Block until `n` events of `kind` (ADDED, MODIFIED, DELETED) for names with `prefix` arrived."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while sum(1 for t, name in self.events if t == kind and name.startswith(prefix)) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{n} {kind} events for {prefix}* not seen in {timeout:.0f}s")
                self.changed.wait(left)


@contextlib.contextmanager
def watching(
    plane: kube.ControlPlane, cluster: str, namespace: str, plural: str = "configmaps"
) -> Iterator[Watch]:
    """A watch from now on (the list's resourceVersion) until the block ends; its thread ends with it."""
    found = Watch()
    stop = threading.Event()
    with plane.client(cluster) as api:
        listed = api.get(f"/api/v1/namespaces/{namespace}/{plural}")
        listed.raise_for_status()
        version = listed.json()["metadata"]["resourceVersion"]
    started = threading.Event()

    def run() -> None:
        # A short read timeout, so the thread sees `stop` within a second: a silent stream is reopened
        # from the last resourceVersion seen, which loses no event.
        last = version
        with plane.client(cluster) as client:
            while not stop.is_set():
                params = {"watch": "1", "resourceVersion": last, "allowWatchBookmarks": "true"}
                try:
                    with client.stream(
                        "GET",
                        f"/api/v1/namespaces/{namespace}/{plural}",
                        params=params,
                        timeout=httpx.Timeout(10.0, read=0.5),
                    ) as resp:
                        resp.raise_for_status()
                        started.set()
                        for line in resp.iter_lines():
                            if not line:
                                continue
                            event = json.loads(line)
                            meta = event["object"]["metadata"]
                            last = meta.get("resourceVersion", last)
                            if event["type"] == "BOOKMARK":
                                continue
                            with found.changed:
                                found.events.append((event["type"], meta.get("name", "")))
                                found.changed.notify_all()
                except httpx.ReadTimeout:
                    continue

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(timeout=10)
    try:
        yield found
    finally:
        stop.set()
        thread.join(timeout=10)


def fleet_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
    return body


def names(items: Sequence[dict[str, Any]]) -> set[str]:
    return {i["metadata"]["name"] for i in items}
