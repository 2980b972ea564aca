"""`fleet demo`: simulated clusters, a demo Git repository and `fleet serve`, on one machine.

Owns: creating the demo repository from the content shipped beside this module (`clusters/` — the same
registrations as the project's own `clusters/` folder — and `bundles/`: a namespace and a ConfigMap for
every cluster, a Deployment with per-region overrides, a CRD with a custom resource placed by CEL, an
edge DaemonSet, dev tools placed by name, `shop`, a Kustomize overlay per environment, and `metrics`, a
vendored Helm chart with values per environment: docs/sources.md), starting `fleet sim --from` on it in a child process, and
telling the user what to try. Does not: reconcile anything itself (it runs the real `fleet serve` code).
"""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path

import pygit2

AUTHOR = pygit2.Signature("fleet demo", "demo@fleet.invalid")


def content_root() -> Path:
    """The folder holding the shipped demo `clusters/` and `bundles/`."""
    return Path(str(resources.files("fleet.demo")))


def create_repository(path: Path) -> str:
    """Create the demo repository at `path` (a new folder) with one commit on `main`; returns its sha."""
    root = content_root()
    path.mkdir(parents=True)
    for folder in ("clusters", "bundles"):
        shutil.copytree(root / folder, path / folder)
    repo = pygit2.init_repository(str(path), initial_head="main")
    index = repo.index
    index.add_all()
    index.write()
    tree = index.write_tree()
    sig = pygit2.Signature(AUTHOR.name, AUTHOR.email, int(time.time()), 0)
    oid = repo.create_commit("refs/heads/main", sig, sig, "Demo fleet: 12 clusters, 7 bundles", tree, [])
    return str(oid)


def commit_all(path: Path, message: str) -> str:
    """Commit every change of the work tree at `path` on its current branch (used by tests and the demo)."""
    repo = pygit2.Repository(str(path))
    index = repo.index
    index.add_all()
    index.write()
    tree = index.write_tree()
    sig = pygit2.Signature(AUTHOR.name, AUTHOR.email, int(time.time()), 0)
    parents = [] if repo.head_is_unborn else [repo.head.target]
    oid = repo.create_commit("HEAD", sig, sig, message, tree, parents)
    return str(oid)
