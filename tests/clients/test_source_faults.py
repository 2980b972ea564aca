"""fleet.clients.source against broken git data: a corrupt object in the repository followed (local or served over
smart HTTP), a corrupt mirror, a corrupt local repository read by `--rev`. Each is a clear
`errors.SourceError` without file content, never a raw libgit2 exception (which would end the
controller's fetch loop or print a traceback), and the last good revision stays readable."""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pygit2
import pytest

from fleet.clients import source
from fleet.core import errors
from tests.support import githttp
from tests.support import repository_builders as rb
from tests.support.reconcile import run_fleet

T = TypeVar("T")

CANARY = "CANARY-content-of-a-corrupt-object"


def run(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    return anyio.run(functools.partial(fn, *args, **kwargs))


def corrupt_loose(repo: pygit2.Repository, oid: pygit2.Oid) -> None:
    """Overwrite one loose object of `repo` with garbage (a bad disk, a half-written file)."""
    path = Path(repo.path) / "objects" / str(oid)[:2] / str(oid)[2:]
    os.chmod(path, 0o644)
    path.write_bytes(b"garbage " + CANARY.encode())


def commit_with_new_blob(repo: pygit2.Repository) -> tuple[str, pygit2.Oid]:
    content = rb.configmap("brand-new", data=CANARY)
    sha = rb.commit(repo, {**rb.SAMPLE, "bundles/web/new.yaml": content}, message="new")
    return sha, repo.create_blob(content.encode())


def test_a_corrupt_object_in_a_local_repository_fails_the_fetch_and_keeps_the_last_good(
    tmp_path: Path,
) -> None:
    repo = rb.init(tmp_path / "upstream")
    first = rb.commit(repo, dict(rb.SAMPLE))
    follow = source.Follow(branch="main")
    src = source.Source(tmp_path / "upstream", state_dir=tmp_path / "state")
    run(src.keep, follow, run(src.fetch_tip, follow))
    _, blob = commit_with_new_blob(repo)
    corrupt_loose(repo, blob)
    with pytest.raises(errors.SourceError) as info:
        run(src.fetch_tip, follow)
    assert str(info.value).startswith(f"{tmp_path / 'upstream'}: fetch failed: ")
    assert CANARY not in str(info.value)
    assert run(src.last_good, follow) == first
    assert run(src.snapshot, first).revision == first


@pytest.mark.slow  # starts processes: git-http-backend
def test_a_corrupt_object_served_over_http_fails_the_fetch_cleanly(tmp_path: Path) -> None:
    served = tmp_path / "served"
    repo = rb.init(served / "fleet.git", bare=True)
    rb.commit(repo, dict(rb.SAMPLE))
    _, blob = commit_with_new_blob(repo)
    corrupt_loose(repo, blob)
    token = tmp_path / "token"
    token.write_text(githttp.TOKEN)
    creds = source.Credentials(username=githttp.USER, password_file=token)
    with githttp.serving(served) as url:
        src = source.Source(f"{url}/fleet.git", state_dir=tmp_path / "state", credentials=creds)
        with pytest.raises(errors.SourceError) as info:
            run(src.fetch_tip, source.Follow(branch="main"))
    assert str(info.value).startswith(f"{url}/fleet.git: fetch failed: ")
    assert CANARY not in str(info.value) and githttp.TOKEN not in str(info.value)


def _corrupt_packs(folder: Path) -> None:
    for pack in (folder / "objects" / "pack").glob("*.pack"):
        data = bytearray(pack.read_bytes())
        for i in range(32, len(data) - 32):  # the header and the trailing checksum stay
            data[i] ^= 0x5A
        pack.write_bytes(bytes(data))


def test_a_corrupt_mirror_is_a_source_error_naming_it_never_a_raw_git_error(tmp_path: Path) -> None:
    repo = rb.init(tmp_path / "upstream")
    first = rb.commit(repo, dict(rb.SAMPLE))
    follow = source.Follow(branch="main")
    src = source.Source(tmp_path / "upstream", state_dir=tmp_path / "state")
    run(src.keep, follow, run(src.fetch_tip, follow))
    _corrupt_packs(src.mirror)
    restarted = source.Source(tmp_path / "upstream", state_dir=tmp_path / "state")
    with pytest.raises(errors.SourceError) as info:
        run(restarted.snapshot, first)
    assert str(info.value).startswith(f"{tmp_path / 'upstream'}: cannot read the local mirror {src.mirror}")
    with pytest.raises(errors.SourceError, match="cannot read the local mirror"):
        run(restarted.changed_paths, first, first)


@pytest.mark.slow  # starts processes: python -m fleet.cli
def test_a_corrupt_local_repository_read_with_rev_is_one_clear_error(tmp_path: Path) -> None:
    repo = rb.init(tmp_path / "r")
    rb.commit(repo, dict(rb.SAMPLE))
    _, blob = commit_with_new_blob(repo)
    corrupt_loose(repo, blob)
    with pytest.raises(errors.SourceError) as info:
        run(source.read_revision, tmp_path / "r", "HEAD")
    assert str(info.value).startswith(f"{tmp_path / 'r'}: cannot read the repository (corrupt?): ")
    out = run_fleet("validate", str(tmp_path / "r"), "--rev", "HEAD", timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "cannot read the repository (corrupt?)" in out.stdout
    assert "Traceback" not in out.stderr and CANARY not in out.stdout + out.stderr
