"""Reading files: a git tree from the object database, or a work tree on disk (`read_worktree`,
`read_revision`), below ``clusters/`` and ``bundles/`` only, under the content limits.

Symbolic links and submodules are never followed: each is a `model.Problem` naming the path, never the
target. On disk, files are opened with ``O_NOFOLLOW`` and special files are refused without being
opened. A file over `Limits.max_file_bytes` is a problem and is not read; more than `Limits.max_files`
files or `Limits.max_total_bytes` bytes refuse the whole revision (`yamlsafe.LimitExceeded`).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pygit2
import pygit2.enums

from fleet.clients.source import revisions, urls
from fleet.core import errors, model, repository, yamlsafe

MODE_TREE = 0o040000
_MODE_LINK = 0o120000
MODE_SUBMODULE = 0o160000


# ----------------------------------------------------------------------------------------------------------
# Reading trees and work trees.


def check_subpath(subpath: str) -> str:
    """Normalise `--path` to a POSIX relative folder ('' for the root); refuse anything that could escape."""
    if not subpath or subpath in (".", "./"):
        return ""
    problem = repository.unsafe_path(subpath)
    if problem:
        raise errors.InputError(f"--path {subpath!r}: {problem}")
    parts = [p for p in PurePosixPath(subpath).parts if p not in (".", "")]
    return "/".join(parts)


class _Collector:
    """Accumulates files and problems while enforcing the per-revision limits.

    `what` names what is read in the error of a limit on the whole of it (``revision 3f2a9c1e0b7d``,
    ``the work tree``): such a refusal is about that content, never a failure to fetch it."""

    def __init__(self, *, base: str, limits: yamlsafe.Limits, what: str) -> None:
        self.base = base
        self.limits = limits
        self.what = what
        self.files: dict[str, bytes] = {}
        self.problems: list[model.Problem] = []
        self.count = 0
        self.total = 0

    def shown(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.base else rel

    def problem(self, rel: str, message: str) -> None:
        self.problems.append(model.Problem(self.shown(rel), 1, message))

    def admit(self, rel: str, size: int) -> bool:
        """Count a file; False (with a problem) when it is too big to read."""
        self.count += 1
        if self.count > self.limits.max_files:
            raise yamlsafe.LimitExceeded(
                f"{self.what} is refused as a whole: more than {self.limits.max_files} files below "
                f"clusters/ and bundles/, over the content limit max_files={self.limits.max_files}",
                path=self.base or ".",
            )
        if size > self.limits.max_file_bytes:
            self.problem(
                rel, f"file is {size} bytes, over the limit max_file_bytes={self.limits.max_file_bytes}"
            )
            return False
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise yamlsafe.LimitExceeded(
                f"{self.what} is refused as a whole: files below clusters/ and bundles/ exceed "
                f"{self.limits.max_total_bytes} bytes, over the content limit "
                f"max_total_bytes={self.limits.max_total_bytes}",
                path=self.base or ".",
            )
        return True


_LINK_MESSAGE = "is a symbolic link; fleet never follows links (commit the file itself)"
_SUBMODULE_MESSAGE = "is a git submodule; fleet does not read submodules"


def tree_of(repo: pygit2.Repository, oid: pygit2.Oid) -> pygit2.Tree:
    obj = repo[oid]
    if not isinstance(obj, pygit2.Tree):
        raise errors.SourceError(f"object {oid} is not a tree (corrupt repository?)")
    return obj


def blob_of(repo: pygit2.Repository, oid: pygit2.Oid) -> bytes:
    obj = repo[oid]
    if not isinstance(obj, pygit2.Blob):
        raise errors.SourceError(f"object {oid} is not a blob (corrupt repository?)")
    return obj.data


def read_tree(
    repo: pygit2.Repository, commit: pygit2.Commit, *, subpath: str, limits: yamlsafe.Limits
) -> model.Snapshot:
    base = check_subpath(subpath)
    col = _Collector(base=base, limits=limits, what=f"revision {str(commit.id)[:12]}")
    tree: pygit2.Tree = commit.tree
    walked = ""
    for part in base.split("/") if base else []:
        walked = f"{walked}/{part}" if walked else part
        try:
            entry = tree[part]
        except KeyError:
            raise errors.InputError(
                f"--path {base!r}: no folder {walked!r} at {str(commit.id)[:12]}"
            ) from None
        if entry.filemode != MODE_TREE:
            raise errors.InputError(f"--path {base!r}: {walked!r} is not a folder at {str(commit.id)[:12]}")
        tree = tree_of(repo, entry.id)
    odb = repo.odb
    stack: list[tuple[pygit2.Tree, str]] = []
    for root in urls.ROOTS:
        try:
            entry = tree[root]
        except KeyError:
            continue
        if entry.filemode == MODE_TREE:
            stack.append((tree_of(repo, entry.id), root))
        elif entry.filemode == _MODE_LINK:
            col.problem(root, _LINK_MESSAGE)
        elif entry.filemode == MODE_SUBMODULE:
            col.problem(root, _SUBMODULE_MESSAGE)
        else:
            col.problem(root, "is a file, expected a folder")
    while stack:
        node, prefix = stack.pop()
        for child in node:
            rel = f"{prefix}/{child.name}"
            mode = child.filemode
            if mode == MODE_TREE:
                stack.append((tree_of(repo, child.id), rel))
            elif mode == _MODE_LINK:
                col.problem(rel, _LINK_MESSAGE)
            elif mode == MODE_SUBMODULE:
                col.problem(rel, _SUBMODULE_MESSAGE)
            else:
                _, size = odb.read_header(child.id)
                if col.admit(rel, size):
                    col.files[rel] = blob_of(repo, child.id)
    author = commit.author
    when = datetime.datetime.fromtimestamp(commit.commit_time, tz=datetime.UTC)
    return model.Snapshot(
        revision=str(commit.id),
        files=dict(sorted(col.files.items())),
        base=base,
        message=(commit.message or "").strip().splitlines()[0] if (commit.message or "").strip() else "",
        author=author.name if author is not None else None,
        committed_at=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        problems=tuple(sorted(col.problems)),
    )


def _read_worktree_sync(path: Path, *, subpath: str, limits: yamlsafe.Limits) -> model.Snapshot:
    base = check_subpath(subpath)
    root = Path(path)
    try:
        st = os.stat(root)
    except OSError as e:
        raise errors.InputError(f"{root}: cannot read ({e.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise errors.InputError(f"{root}: not a folder")
    col = _Collector(base=base, limits=limits, what="the work tree")
    top = root
    walked = ""
    for part in base.split("/") if base else []:
        walked = f"{walked}/{part}" if walked else part
        top = top / part
        try:
            lst = os.lstat(top)
        except OSError:
            raise errors.InputError(f"--path {base!r}: no folder {walked!r} in {root}") from None
        if stat.S_ISLNK(lst.st_mode):
            raise errors.InputError(f"--path {base!r}: {walked!r} is a symbolic link (not followed)")
        if not stat.S_ISDIR(lst.st_mode):
            raise errors.InputError(f"--path {base!r}: {walked!r} is not a folder")
    stack: list[tuple[Path, str]] = []
    for name in urls.ROOTS:
        try:
            lst = os.lstat(top / name)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(lst.st_mode):
            col.problem(name, _LINK_MESSAGE)
        elif stat.S_ISDIR(lst.st_mode):
            stack.append((top / name, name))
        else:
            col.problem(name, "is a file, expected a folder")
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            col.problem(prefix, f"cannot list folder ({e.strerror})")
            continue
        if prefix not in urls.ROOTS and any(e.name == ".git" for e in entries):
            col.problem(prefix, "holds a nested git repository or submodule; fleet does not read it")
            continue
        for entry in entries:
            rel = f"{prefix}/{entry.name}"
            if entry.name == ".git":
                continue
            lst = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(lst.st_mode):
                col.problem(rel, _LINK_MESSAGE)
            elif stat.S_ISDIR(lst.st_mode):
                stack.append((Path(entry.path), rel))
            elif not stat.S_ISREG(lst.st_mode):
                col.problem(rel, "is not a regular file (device, FIFO or socket); not read")
            elif col.admit(rel, lst.st_size):
                data = _read_file_nofollow(entry.path, limit=limits.max_file_bytes)
                if isinstance(data, bytes):
                    col.files[rel] = data
                else:
                    col.problem(rel, data)
    return model.Snapshot(
        revision=None, files=dict(sorted(col.files.items())), base=base, problems=tuple(sorted(col.problems))
    )


def _read_file_nofollow(path: str, *, limit: int) -> bytes | str:
    """Read a regular file without following a link put in its place since it was listed.

    Returns the bytes, or the reason (text) why it was not read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return _LINK_MESSAGE
        return f"cannot be read ({e.strerror})"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "is not a regular file (device, FIFO or socket); not read"
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                return f"grew while being read, over the limit max_file_bytes={limit}"
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    finally:
        os.close(fd)


async def read_worktree(
    path: str | Path, *, subpath: str = "", limits: yamlsafe.Limits = yamlsafe.DEFAULT_LIMITS
) -> model.Snapshot:
    """The files on disk below `path` (revision None): ``clusters/`` and ``bundles/`` only, ``.git`` skipped,
    links and special files reported, never followed."""
    return await urls.in_thread(
        functools.partial(_read_worktree_sync, Path(path), subpath=subpath, limits=limits)
    )


@contextlib.contextmanager
def corrupt(what: str) -> Iterator[None]:
    """libgit2 failing to read objects (a corrupt pack or loose object, a missing object) as
    `errors.SourceError` naming `what`: never a raw pygit2 exception, never file content."""
    try:
        yield
    except (pygit2.GitError, KeyError, ValueError, OSError) as e:
        raise errors.SourceError(f"{what}: {urls.git_message(e)}") from None


def _read_revision_sync(
    repo_path: Path, rev: str, *, subpath: str, limits: yamlsafe.Limits
) -> model.Snapshot:
    repo = urls.open_local(repo_path)
    with corrupt(f"{repo_path}: cannot read the repository (corrupt?)"):
        commit = revisions.resolve_rev(repo, rev, where=str(repo_path))
        return read_tree(repo, commit, subpath=subpath, limits=limits)


async def read_revision(
    repo_path: str | Path, rev: str, *, subpath: str = "", limits: yamlsafe.Limits = yamlsafe.DEFAULT_LIMITS
) -> model.Snapshot:
    """One commit of a local repository (work tree or bare), read from the object database."""
    loc = urls.check_url(repo_path)
    if loc.path is None:
        raise errors.InputError(f"{loc}: read_revision needs a local repository; use Source for URLs")
    return await urls.in_thread(
        functools.partial(_read_revision_sync, loc.path, rev, subpath=subpath, limits=limits)
    )
