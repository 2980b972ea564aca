"""What the sources step works with: `Settings` (the helm program, the age identity, the limits of a
run), `Cache` (renders kept by the content they read, across revisions), a job (one renderer run, keyed by
everything it reads), a bundle's plan and a failure (a `model.Problem` per cluster it hits).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from fleet.clients.sources import kustomize as kustomize_mod
from fleet.clients.sources import process
from fleet.core import model, placement, yamlsafe

MiB = 1024 * 1024
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_OUTPUT = 32 * MiB


@dataclass(frozen=True)
class Settings:
    """How renderers are found and bounded. `helm_binary` None: ``helm`` on PATH. `age_key_file`: the age
    identity file SOPS decrypts with (never read from the repository)."""

    helm_binary: str | None = None
    age_key_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_output: int = DEFAULT_MAX_OUTPUT
    concurrency: int = 2


@dataclass(frozen=True)
class Failure:
    path: str
    line: int
    message: str
    transient: bool = False


@dataclass
class Cache:
    """Renders by job key, decrypted files by ciphertext digest, and each bundle's last expansion with the
    stamp of what it read. Not thread-safe: one per controller (or command), used by one `expand` at a
    time. `runner.started` counts renderer processes by tool."""

    runner: process.Runner = field(default_factory=process.Runner)
    renders: dict[str, model.SourceRender | Failure] = field(default_factory=dict)
    plaintext: dict[bytes, bytes] = field(default_factory=dict)
    secrets: dict[bytes, frozenset[str]] = field(default_factory=dict)
    bundles: dict[str, tuple[str, model.Expansion, frozenset[str]]] = field(default_factory=dict)
    helm: dict[str, str | Failure] = field(default_factory=dict)
    max_entries: int = 20_000
    hits: int = 0
    misses: int = 0


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=20).digest()


def job_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Job:
    """One renderer run: what to write, what to run, how to read its output."""

    key: str
    tool: str  # "kustomize" | "helm"
    files: dict[str, bytes]
    argv: list[str]
    bundle: model.Bundle
    where: tuple[str, int]  # the bundle.yaml field a failure of the run is reported at
    shown_top: str  # kustomize: the kustomization file; helm: the chart folder (as users see them)
    secret: bool = False
    secrets: frozenset[str] = frozenset()


@dataclass
class Plan:
    """Per bundle: the stamp of what it read, its clusters' job keys (or failures), the jobs to run, the
    ciphertexts it still needs decrypted, and the repository files it read (for the next stamp)."""

    stamp: str
    assignment: dict[str, str | Failure] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    direct: dict[str, model.SourceRender] = field(default_factory=dict)  # renders made without a process
    needs: dict[bytes, tuple[str, str, bytes]] = field(default_factory=dict)  # digest -> (rel, fmt, data)
    read: set[str] = field(default_factory=set)
    reused: model.Expansion | None = None


class Context:
    def __init__(
        self,
        repo: model.Repo,
        snapshot: model.Snapshot,
        settings: Settings,
        cache: Cache,
        placed: model.PlacementResult,
    ) -> None:
        self.repo = repo
        self.files = snapshot.files
        self.keys = sorted(snapshot.files)
        self.base = snapshot.base
        self.settings = settings
        self.cache = cache
        self.placed = placed
        self.limits = yamlsafe.Limits(
            max_file_bytes=max(settings.max_output, yamlsafe.DEFAULT_LIMITS.max_file_bytes)
        )
        self._registry: str | None = None
        self._folders: frozenset[str] | None = None
        self.helm: tuple[str, str] | Failure | None = None

    def shown(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.base else rel

    @property
    def registry(self) -> str:
        if self._registry is None:
            self._registry = placement.registry_key(self.repo.clusters)
        return self._registry

    @property
    def folders(self) -> frozenset[str]:
        if self._folders is None:
            self._folders = kustomize_mod._folders(self.files)
        return self._folders
