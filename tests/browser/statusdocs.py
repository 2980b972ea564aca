"""Status documents (docs/operations.md) built for the page tests and the UI benchmark.

Owns: small, explicit builders (`cluster`, `bundle`, `document`) and a deterministic large fleet
(`large`). Plain dicts, exactly the JSON shape `GET /api/v1/status` answers.
"""

from __future__ import annotations

import random
from typing import Any

SHA = "3f9c2a7d1e5b4c8a9f0e1d2c3b4a59687766554f"
OLD_SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
NOW = "2026-11-26T15:00:00Z"


def bundle(
    state: str, *, error: str | None = None, revision: str | None = SHA, objects: int | None = 3
) -> dict[str, Any]:
    return {"state": state, "revision": revision, "objects": objects, "lastError": error}


def cluster(
    state: str,
    bundles: dict[str, dict[str, Any]],
    *,
    labels: dict[str, str] | None = None,
    error: str | None = None,
    trace_id: str | None = "4bf92f3577b34da6a3ce929d0e0e4736",
    watch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "state": state,
        "labels": labels or {},
        "revision": SHA if state == "Synced" else OLD_SHA,
        "lastSyncAt": NOW,
        "lastError": error,
        "traceId": trace_id,
        "watch": watch
        if watch is not None
        else {"streams": 4, "lastEventAt": NOW, "reconnects": 0, "relists": 1},
        "bundles": bundles,
    }


def document(
    clusters: dict[str, dict[str, Any]],
    *,
    revision: str | None = SHA,
    message: str | None = "web: bump image to 1.4.2",
    author: str | None = "Ada Lovelace",
    committed_at: str | None = NOW,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "revision": revision,
        "message": message,
        "author": author,
        "committedAt": committed_at,
        "fetchedAt": NOW,
        "errors": errors or [],
        "clusters": clusters,
    }


REGIONS = ("eu", "us", "ap")
ENVS = ("prod", "staging", "dev")


def large(n_clusters: int = 500, n_bundles: int = 30, *, seed: int = 10) -> dict[str, Any]:
    """A deterministic fleet: most pairs Synced, a few Progressing, Failed, Unreachable, Paused."""
    rng = random.Random(seed)
    bundle_names = [f"bundle-{i:02d}" for i in range(n_bundles)]
    clusters: dict[str, dict[str, Any]] = {}
    for i in range(n_clusters):
        region, env = REGIONS[i % 3], ENVS[(i // 3) % 3]
        labels = {"env": env, "region": region, "tier": str(1 + i % 4)}
        roll = rng.random()
        placed = [b for j, b in enumerate(bundle_names) if (i + j) % 7 != 0]
        bundles = {}
        for b in placed:
            r = rng.random()
            state = (
                "Synced"
                if r < 0.975
                else "Progressing"
                if r < 0.99
                else "Failed"
                if r < 0.995
                else "Suspended"
            )
            error = (
                f"Deployment/{b}/app: ImagePullBackOff for registry.example/{b}:1.4.2"
                if state == "Failed"
                else None
            )
            bundles[b] = bundle(state, error=error)
        if roll < 0.02:
            state = "Unreachable"
            bundles = {b: bundle("Unreachable", error="connection refused") for b in placed}
        elif roll < 0.03:
            state = "Paused"
        else:
            present = {v["state"] for v in bundles.values()} - {"Suspended"}
            state = next((s for s in ("Failed", "Progressing") if s in present), "Synced")
        name = f"{region}-{env}-{i:03d}"
        clusters[name] = cluster(
            state, bundles, labels=labels, error="connection refused" if state == "Unreachable" else None
        )
    return document(clusters)


def demo() -> dict[str, Any]:
    """A small fleet mid-rollout, for the screenshot in docs/ui.md."""
    bundles = ["base", "cert-manager", "ingress", "monitoring", "logging", "web", "api", "batch"]
    fleet = {
        "eu-prod-1": {"env": "prod", "region": "eu", "tier": "1"},
        "eu-prod-2": {"env": "prod", "region": "eu", "tier": "1"},
        "us-prod-1": {"env": "prod", "region": "us", "tier": "1"},
        "us-prod-2": {"env": "prod", "region": "us", "tier": "2"},
        "ap-prod-1": {"env": "prod", "region": "ap", "tier": "2"},
        "eu-staging-1": {"env": "staging", "region": "eu"},
        "us-staging-1": {"env": "staging", "region": "us"},
        "edge-1": {"env": "prod", "region": "eu", "edge": "true"},
        "legacy-1": {"env": "prod", "region": "us", "legacy": "true"},
        "dev-1": {"env": "dev"},
        "dev-2": {"env": "dev"},
    }
    clusters: dict[str, dict[str, Any]] = {}
    for name, labels in fleet.items():
        placed = [b for b in bundles if not (b == "batch" and labels["env"] == "prod")]
        if "edge" in labels:
            placed = ["base", "ingress", "web"]
        states = {b: bundle("Synced") for b in placed}
        if "logging" in states:
            states["logging"] = bundle("Suspended", revision=OLD_SHA)
        if labels["env"] == "prod" and "web" in states:
            states["web"] = bundle("Progressing", revision=OLD_SHA)
        if name in ("eu-prod-1", "eu-staging-1", "us-staging-1", "dev-1", "dev-2"):
            states["web"] = bundle("Synced")
        state = "Progressing" if any(v["state"] == "Progressing" for v in states.values()) else "Synced"
        error = None
        if name == "eu-prod-2":
            states["api"] = bundle(
                "Failed",
                revision=OLD_SHA,
                error='Deployment/api/api: admission webhook "policy.example" denied the request: '
                "container api must set resources.limits.memory",
            )
            state = "Failed"
        if name == "edge-1":
            error = "Get https://edge-1.example:6443/api: dial tcp 10.8.0.4:6443: connect: connection refused"
            states = {b: bundle("Unreachable", revision=OLD_SHA, error=error) for b in placed}
            state = "Unreachable"
        if name == "legacy-1":
            state = "Paused"
        if name == "dev-2":
            states["batch"] = bundle("Pending", revision=None, objects=None)
            state = "Pending"
        clusters[name] = cluster(state, states, labels=labels, error=error)
    return document(clusters, message="web: roll out 1.4.2 to prod", author="Ada Lovelace")
