"""Builders for real GitOps repositories in tests: git commits made with pygit2 (no work tree needed),
and folders on disk. Shared by the source, repository and validate tests."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pygit2
import pygit2.enums

SIG = pygit2.Signature("Fleet Tester", "tester@example.com", 1_700_000_000, 0)

LINK = 0o120000
SUBMODULE = 0o160000


def cluster_yaml(name: str, *, labels: dict[str, str] | None = None, extra: str = "") -> str:
    lab = labels if labels is not None else {"env": "prod"}
    lines = "".join(f"    {k}: {v}\n" for k, v in lab.items())
    return (
        "apiVersion: fleet.dev/v1alpha1\n"
        "kind: Cluster\n"
        "metadata:\n"
        f"  name: {name}\n" + ("  labels:\n" + lines if lab else "") + extra
    )


def bundle_yaml(name: str, *, spec: str = "  placement:\n    clusterSelector: {}\n") -> str:
    return f"apiVersion: fleet.dev/v1alpha1\nkind: Bundle\nmetadata:\n  name: {name}\nspec:\n{spec}"


def configmap(name: str, *, namespace: str | None = None, data: str = "x") -> str:
    ns = f"  namespace: {namespace}\n" if namespace else ""
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{ns}data:\n  key: {data}\n"


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def init(path: Path, *, bare: bool = False) -> pygit2.Repository:
    return pygit2.init_repository(str(path), bare=bare, initial_head="main")


def _tree(
    repo: pygit2.Repository,
    files: dict[str, str | bytes],
    links: dict[str, str],
    submodules: dict[str, str],
) -> pygit2.Oid:
    """Build a nested tree from flat POSIX paths (files, symlinks to targets, submodule commits)."""
    entries: dict[str, tuple[int, pygit2.Oid]] = {}
    blobs: dict[bytes, pygit2.Oid] = {}
    for path, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        if data not in blobs:
            blobs[data] = repo.create_blob(data)
        entries[path] = (pygit2.enums.FileMode.BLOB, blobs[data])
    for path, target in links.items():
        entries[path] = (LINK, repo.create_blob(target.encode()))
    for path, sha in submodules.items():
        entries[path] = (SUBMODULE, pygit2.Oid(hex=sha))
    return _write_level(repo, entries)


def _write_level(repo: pygit2.Repository, entries: dict[str, tuple[int, pygit2.Oid]]) -> pygit2.Oid:
    builder = repo.TreeBuilder()
    folders: dict[str, dict[str, tuple[int, pygit2.Oid]]] = {}
    for path, (mode, oid) in entries.items():
        head, sep, rest = path.partition("/")
        if sep:
            folders.setdefault(head, {})[rest] = (mode, oid)
        else:
            builder.insert(head, oid, mode)
    for name, sub in folders.items():
        builder.insert(name, _write_level(repo, sub), pygit2.enums.FileMode.TREE)
    return builder.write()


def commit(
    repo: pygit2.Repository,
    files: dict[str, str | bytes],
    *,
    message: str = "change",
    branch: str = "main",
    links: dict[str, str] | None = None,
    submodules: dict[str, str] | None = None,
    when: int = 1_700_000_000,
) -> str:
    """Commit exactly `files` (the whole tree) on `branch`, parented on its tip; return the commit id."""
    tree = _tree(repo, files, links or {}, submodules or {})
    ref = f"refs/heads/{branch}"
    parents = [repo.references[ref].target] if ref in repo.references else []
    sig = pygit2.Signature(SIG.name, SIG.email, when, 0)
    oid = repo.create_commit(ref, sig, sig, message, tree, parents)
    return str(oid)


def tag(repo: pygit2.Repository, name: str, sha: str, *, annotated: bool = True) -> None:
    if annotated:
        repo.create_tag(name, pygit2.Oid(hex=sha), pygit2.enums.ObjectType.COMMIT, SIG, f"tag {name}")
    else:
        repo.references.create(f"refs/tags/{name}", pygit2.Oid(hex=sha))


def write_files(root: Path, files: dict[str, str | bytes]) -> None:
    """Write `files` below `root` on disk (a work tree)."""
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            target.write_text(content)
        else:
            target.write_bytes(content)


def symlink(root: Path, rel: str, target: str) -> None:
    link = root / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


SAMPLE: dict[str, str | bytes] = {
    "clusters/eu-prod-1.yaml": cluster_yaml("eu-prod-1", labels={"env": "prod", "region": "eu"}),
    "clusters/us-dev-1.yaml": cluster_yaml("us-dev-1", labels={"env": "dev", "region": "us"}),
    "bundles/web/bundle.yaml": bundle_yaml(
        "web", spec="  namespace: web\n  placement:\n    clusterSelector:\n      matchLabels: {env: prod}\n"
    ),
    "bundles/web/deploy.yaml": configmap("web-config") + "---\n" + configmap("web-extra"),
    "bundles/base/bundle.yaml": bundle_yaml("base"),
    "bundles/base/ns.json": '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "base"}}',
    "README.md": "not read\n",
}
