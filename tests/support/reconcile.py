"""Helpers for the reconcile tests (sync, diff, faults): GitOps repositories made with pygit2.

`GitOpsRepo` writes files into a real git work tree and commits them, so `fleet sync` reads a real
commit. Manifests are given as Python objects and written as YAML.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pygit2
import yaml

FLEET = [sys.executable, "-m", "fleet.cli"]


class GitOpsRepo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = pygit2.init_repository(str(root), initial_head="main")

    def write(self, path: str, content: Any) -> None:
        full = self.root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            full.write_text(content)
        elif isinstance(content, list):
            full.write_text(yaml.safe_dump_all(content, sort_keys=False))
        else:
            full.write_text(yaml.safe_dump(content, sort_keys=False))

    def remove(self, path: str) -> None:
        full = self.root / path
        if full.is_dir():
            for p in sorted(full.rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            full.rmdir()
        else:
            full.unlink()

    def cluster(self, name: str, *, labels: Mapping[str, str] | None = None, paused: bool = False) -> None:
        self.write(
            f"clusters/{name}.yaml",
            {
                "apiVersion": "fleet.dev/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": name, "labels": dict(labels or {})},
                "spec": {"paused": paused},
            },
        )

    def bundle(
        self,
        name: str,
        manifests: Sequence[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        selector: Mapping[str, str] | None = None,
        clusters: Sequence[str] | None = None,
        **spec: Any,
    ) -> None:
        placement: dict[str, Any] = {}
        if selector is not None:
            placement["clusterSelector"] = {"matchLabels": dict(selector)}
        if clusters is not None:
            placement["clusters"] = list(clusters)
        body: dict[str, Any] = {"placement": placement, **spec}
        if namespace:
            body["namespace"] = namespace
        self.write(
            f"bundles/{name}/bundle.yaml",
            {"apiVersion": "fleet.dev/v1alpha1", "kind": "Bundle", "metadata": {"name": name}, "spec": body},
        )
        folder = self.root / "bundles" / name / "manifests"
        if folder.exists():
            for p in folder.iterdir():
                p.unlink()
        if manifests:
            self.write(f"bundles/{name}/manifests/all.yaml", list(manifests))

    def commit(self, message: str = "change", *, author: str = "Test") -> str:
        index = self.repo.index
        index.clear()  # rebuilt from the work tree, so removed files leave the commit too
        index.add_all()
        index.write()
        tree = index.write_tree()
        sig = pygit2.Signature(author, f"{author.split()[0].lower()}@example.com")
        parents = [] if self.repo.head_is_unborn else [self.repo.head.target]
        oid = self.repo.create_commit("HEAD", sig, sig, message, tree, parents)
        return str(oid)


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                        },
                    }
                },
            }
        ],
    },
}
WIDGET = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}


def configmap(name: str, *, namespace: str | None = None, **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data or {"key": "value"})}


def run_fleet(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 110
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("KUBECONFIG", None)
    return subprocess.run(
        [*FLEET, *args], capture_output=True, text=True, timeout=timeout, env=full_env, check=False
    )


def writes(journal: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Journal entries that changed stored state."""
    return [r for r in journal if r.get("mutated")]


def object_writes(journal: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Writes of objects: `writes` less fleet's Kubernetes Events (reports, written after a round and
    aggregated, so one may trail the round it tells of)."""
    return [r for r in writes(journal) if not str(r.get("path", "")).startswith("/apis/events.k8s.io/")]


def sync_request(root: Path, kubeconfig: Path, *, instance: str, **overrides: Any) -> Any:
    from fleet.cli import sync

    fields: dict[str, Any] = {
        "repo": str(root),
        "rev": None,
        "worktree": False,
        "path": "",
        "kubeconfig": str(kubeconfig),
        "instance": instance,
        "concurrency": 4,
        "allow_exec_auth": False,
        "allow_empty_repo": False,
        "request_timeout": 5.0,
        "retry_budget": 3.0,
    }
    fields.update(overrides)
    return sync.Request(**fields)


def sync_in_process(
    root: Path,
    kubeconfig: Path,
    *,
    instance: str,
    wait: bool = False,
    health_timeout: float = 10.0,
    **overrides: Any,
) -> Any:
    """One `fleet sync` in this process (the same code path as the command, minus printing)."""
    import anyio

    from fleet.cli import sync
    from fleet.cluster import reconcile

    request = sync_request(root, kubeconfig, instance=instance, **overrides)

    async def main() -> reconcile.FleetResult:
        repo, targets, kc = await sync.prepare(request)
        options = reconcile.Options(
            instance=instance,
            wait=wait,
            health_timeout=health_timeout,
            health_interval=0.2,
            cluster_deadline=request.round_timeout,
            claim=await sync.claim_of(request, repo),
            yield_to_newer=False,
            record_first=request.rev is not None,
        )
        return await sync.run_sync(repo, targets, kc, request=request, options=options)

    return anyio.run(main)


def live_objects(
    sim: Any, cluster: str, plural: str = "configmaps", *, namespace: str
) -> dict[str, dict[str, Any]]:
    """Objects of one kind in one namespace, read over HTTP from the simulated cluster."""
    import httpx

    url = f"{sim.url(cluster)}/api/v1/namespaces/{namespace}/{plural}"
    with httpx.Client(timeout=10) as client:
        resp = client.get(url)
        resp.raise_for_status()
        return {item["metadata"]["name"]: item for item in resp.json()["items"]}


def send(sim: Any, cluster: str, method: str, path: str, body: Any = None, **params: str) -> Any:
    """A raw request to a simulated cluster (to set up objects fleet does not own)."""
    import httpx

    headers = {"Content-Type": "application/json"}
    if method == "PATCH":
        headers["Content-Type"] = "application/merge-patch+json"
    with httpx.Client(timeout=10) as client:
        resp = client.request(method, f"{sim.url(cluster)}{path}", json=body, params=params, headers=headers)
        return resp
