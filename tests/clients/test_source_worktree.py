"""fleet.clients.source.read_worktree: files on disk, links and special files never followed, limits."""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from fleet.clients import source
from fleet.core import errors, model, yamlsafe
from tests.support import repository_builders as rb

T = TypeVar("T")

LINK = "is a symbolic link; fleet never follows links (commit the file itself)"


def run(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    return anyio.run(functools.partial(fn, *args, **kwargs))


def test_the_work_tree_is_read_below_clusters_and_bundles_only(tmp_path: Path) -> None:
    rb.write_files(tmp_path, rb.SAMPLE)
    rb.write_files(
        tmp_path, {".git/config": "[core]\n", "bundles/web/.git/HEAD": "x", "other/x.yaml": "a: 1\n"}
    )
    (tmp_path / "bundles/web/.git").rename(tmp_path / "bundles/web/.gitkeep-dir")  # a plain folder
    snap = run(source.read_worktree, tmp_path)
    assert snap.revision is None and snap.base == ""
    assert sorted(snap.files) == sorted(
        [p for p in rb.SAMPLE if p != "README.md"] + ["bundles/web/.gitkeep-dir/HEAD"]
    )
    assert snap.files["clusters/eu-prod-1.yaml"] == str(rb.SAMPLE["clusters/eu-prod-1.yaml"]).encode()
    assert snap.problems == ()


def test_a_symlinked_cluster_file_is_refused_and_its_target_never_read(tmp_path: Path) -> None:
    host = tmp_path / "host.txt"
    host.write_text("CANARY-from-the-host\n")
    repo = tmp_path / "repo"
    rb.write_files(repo, rb.SAMPLE)
    rb.symlink(repo, "clusters/evil.yaml", str(host))
    rb.symlink(repo, "bundles/web/passwd.yaml", "/etc/passwd")
    rb.symlink(repo, "bundles/linked", str(repo / "bundles/web"))
    snap = run(source.read_worktree, repo)
    assert [(p.path, p.message) for p in snap.problems] == [
        ("bundles/linked", LINK),
        ("bundles/web/passwd.yaml", LINK),
        ("clusters/evil.yaml", LINK),
    ]
    assert "clusters/evil.yaml" not in snap.files
    assert not any(p.startswith("bundles/linked") for p in snap.files)
    assert "CANARY" not in repr(snap) and str(host) not in repr(snap)


def test_a_symlinked_clusters_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    rb.write_files(elsewhere, {"a.yaml": rb.cluster_yaml("a")})
    repo = tmp_path / "repo"
    repo.mkdir()
    rb.symlink(repo, "clusters", str(elsewhere))
    snap = run(source.read_worktree, repo)
    assert snap.files == {}
    assert snap.problems == (model.Problem("clusters", 1, LINK),)


def test_a_fifo_in_a_bundle_is_refused_without_being_opened(tmp_path: Path) -> None:
    rb.write_files(tmp_path, rb.SAMPLE)
    os.mkfifo(tmp_path / "bundles/web/pipe.yaml")
    snap = run(source.read_worktree, tmp_path)  # would block forever if the FIFO were opened for reading
    assert snap.problems == (
        model.Problem("bundles/web/pipe.yaml", 1, "is not a regular file (device, FIFO or socket); not read"),
    )


def test_a_nested_repository_on_disk_is_reported_as_a_submodule(tmp_path: Path) -> None:
    rb.write_files(tmp_path, rb.SAMPLE)
    rb.init(tmp_path / "bundles/base/vendored")
    rb.write_files(tmp_path, {"bundles/base/vendored/x.yaml": rb.configmap("x")})
    snap = run(source.read_worktree, tmp_path)
    assert "bundles/base/vendored/x.yaml" not in snap.files
    assert snap.problems == (
        model.Problem(
            "bundles/base/vendored", 1, "holds a nested git repository or submodule; fleet does not read it"
        ),
    )


def test_an_oversized_file_on_disk_is_refused_naming_the_limit(tmp_path: Path) -> None:
    rb.write_files(tmp_path, {**rb.SAMPLE, "bundles/web/big.yaml": b"a: " + b"x" * 2000})
    snap = run(source.read_worktree, tmp_path, limits=yamlsafe.Limits(max_file_bytes=1024))
    assert "bundles/web/big.yaml" not in snap.files
    assert snap.problems == (
        model.Problem("bundles/web/big.yaml", 1, "file is 2003 bytes, over the limit max_file_bytes=1024"),
    )


def test_too_many_files_on_disk_refuse_the_whole_work_tree(tmp_path: Path) -> None:
    rb.write_files(tmp_path, {f"bundles/b/m{i}.yaml": rb.configmap(f"m{i}") for i in range(12)})
    with pytest.raises(yamlsafe.LimitExceeded, match=r"max_files=10"):
        run(source.read_worktree, tmp_path, limits=yamlsafe.Limits(max_files=10))


def test_path_selects_a_subfolder_and_refuses_escapes_and_links(tmp_path: Path) -> None:
    rb.write_files(tmp_path, {f"envs/prod/{k}": v for k, v in rb.SAMPLE.items()})
    snap = run(source.read_worktree, tmp_path, subpath="envs/prod")
    assert snap.base == "envs/prod"
    assert "clusters/eu-prod-1.yaml" in snap.files
    rb.symlink(tmp_path, "envs/link", str(tmp_path / "envs/prod"))
    with pytest.raises(errors.InputError, match="'envs/link' is a symbolic link"):
        run(source.read_worktree, tmp_path, subpath="envs/link")
    for bad, why in [
        ("../outside", 'contains ".."'),
        ("/etc", "is an absolute path"),
        ("envs\\prod", "contains a backslash"),
        ("https://example.com/x", "is a URL"),
        ("envs/\x00", "contains a NUL character"),
    ]:
        with pytest.raises(errors.InputError, match=why):
            run(source.read_worktree, tmp_path, subpath=bad)
    with pytest.raises(errors.InputError, match="no folder 'envs/staging'"):
        run(source.read_worktree, tmp_path, subpath="envs/staging")


def test_a_repo_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.InputError, match=r"^/etc/passwd: not a folder$"):
        run(source.read_worktree, "/etc/passwd")
