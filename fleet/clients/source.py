"""Reading the GitOps repository: a work tree on disk, a commit of a local repository, or a remote
followed through a bare mirror.

Owns: `read_worktree` (files on disk), `read_revision` (a commit of a local repository, no mirror),
`Source` (a bare mirror under a state directory: `fetch`, `resolve`, `snapshot`, `changed_paths`),
`Credentials`, the URL policy (`check_url`), `redact`, and `identity` (the credential-free name of a
repository and ``--path`` that inventories record as their source). Every pygit2 call runs in a worker thread
(`anyio.to_thread.run_sync`); trees are read straight from the object database, never checked out.
Does not: parse or validate files (that is `fleet.core.repository`), decide when to fetch (the engine does).

What a snapshot holds: the files below ``clusters/`` and ``bundles/`` of the repository root (or of the
``--path`` subfolder, then `Snapshot.base`), keyed by POSIX path relative to that folder. Nothing else is
read, so a large unrelated tree (a ``.venv``, docs) costs nothing.

Safety rules, all enforced here before any byte is parsed:

- Symbolic links (tree mode 120000, or a link on disk) and submodules (mode 160000, or a nested ``.git``
  on disk) are never followed: each is a `model.Problem` naming the path, never the target, and the
  target is never opened. On disk, files are opened with ``O_NOFOLLOW`` and special files (FIFOs,
  devices) are refused without being opened.
- A file over `Limits.max_file_bytes` is a problem and is not read (its size comes from the object
  header or ``lstat``); more than `Limits.max_files` files or `Limits.max_total_bytes` bytes refuse the
  whole revision (`yamlsafe.LimitExceeded`, naming the revision and the content limit: never reported
  as a failure to fetch).
- URLs: ``https``, ``http``, ``ssh``, ``git``, ``file`` and scp-style ``user@host:path``, or a local path
  that must be a git repository. Transport helpers (``ext::``, ``fd::``), option-looking hosts, users or
  paths (``ssh://-oProxyCommand=...``) and control characters are refused before libgit2 sees them.
- Errors never carry file content or a remote's response body, and every URL in a message has its
  ``user:password@`` removed (`redact`). Credentials come from a file or an environment variable named
  by an option; they are read when libgit2 asks for them and never stored in the mirror or printed.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import hashlib
import os
import re
import stat
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import anyio.to_thread
import pygit2
import pygit2.enums

from fleet.core import errors, model, repository, yamlsafe

T = TypeVar("T")

ROOTS = ("clusters", "bundles")
"""The folders of a repository that fleet reads; everything else is ignored."""

CONNECT_TIMEOUT_MS = 10_000
SERVER_TIMEOUT_MS = 60_000

_MODE_TREE = 0o040000
_MODE_LINK = 0o120000
_MODE_SUBMODULE = 0o160000


class NotARepository(errors.SourceError):
    """The path or URL does not name a git repository (not retriable)."""

    retriable = False


class UnsafeURL(errors.SourceError):
    """The repository URL is refused by the URL policy (not retriable)."""

    retriable = False


class UnknownRevision(errors.SourceError):
    """The revision does not exist in the repository, or is not written in a form fleet reads (not
    retriable)."""

    retriable = False


class AmbiguousRevision(UnknownRevision):
    """The revision names more than one thing (a branch and a tag, or a name and a short id)."""


# ----------------------------------------------------------------------------------------------------------
# URLs: policy and redaction.

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:access_)?(?:token|password|key|secret)=)[^&\s]*")
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_SCP = re.compile(r"^(?:(?P<user>[^@/:\s]+)@)?(?P<host>[^@/:\s]+):(?P<path>.*)$")
_HOST = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*)$|^\[[0-9A-Fa-f:.]+\]$")
_ALLOWED_SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})


def redact(text: str) -> str:
    """`text` with every ``scheme://user:password@`` reduced to ``scheme://`` and ``?token=`` values hidden."""
    text = _USERINFO.sub(lambda m: m.group("scheme"), text)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + "<redacted>", text)


@dataclass(frozen=True)
class Location:
    """Where a repository lives: a local directory (`path`) or a remote URL (`url`)."""

    url: str
    path: Path | None = None

    @property
    def local(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else redact(self.url)


def check_url(url_or_path: str | Path) -> Location:
    """Apply the URL policy; return where the repository is. Raises `UnsafeURL`.

    A local path or ``file://`` URL is not checked for being a repository here (see `open_local`).
    """
    text = str(url_or_path)
    shown = redact(text)
    if not text or text != text.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise UnsafeURL(f"repository {shown!r}: empty, or contains whitespace or control characters")
    if text.startswith("-"):
        raise UnsafeURL(f"repository {shown!r}: looks like a command-line option")
    m = _SCHEME.match(text)
    if m is None and "::" in text.split("/", 1)[0]:
        raise UnsafeURL(f"repository {shown!r}: transport helpers such as ext:: are not allowed")
    if m is not None:
        scheme = m.group("scheme").lower()
        if scheme not in _ALLOWED_SCHEMES:
            raise UnsafeURL(
                f"repository {shown!r}: scheme {scheme!r} is not allowed (use https, http, ssh, git or file)"
            )
        try:
            parts = urllib.parse.urlsplit(text)
            host = parts.hostname or ""
            user = parts.username or ""
        except ValueError:
            raise UnsafeURL(f"repository {shown!r}: not a valid URL") from None
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise UnsafeURL(f"repository {shown!r}: file:// URLs must name a local path")
            return Location(url=text, path=Path(urllib.parse.unquote(parts.path)))
        if host.startswith("-") or user.startswith("-") or parts.path.lstrip("/").startswith("-"):
            raise UnsafeURL(f"repository {shown!r}: host, user or path looks like a command-line option")
        if not host or not _HOST.match(host):
            raise UnsafeURL(f"repository {shown!r}: invalid host")
        return Location(url=text)
    scp = _SCP.match(text)
    if scp is not None and not text.startswith(("/", ".", "~")) and "/" not in scp.group("host"):
        user, host, path = scp.group("user") or "", scp.group("host"), scp.group("path")
        if host.startswith("-") or user.startswith("-") or path.startswith("-") or not _HOST.match(host):
            raise UnsafeURL(f"repository {shown!r}: host, user or path looks like a command-line option")
        return Location(url=text)
    return Location(url=text, path=Path(text))


def open_local(path: Path) -> pygit2.Repository:
    """Open a local repository (work tree root, ``.git`` folder or bare). Raises `NotARepository`."""
    try:
        return pygit2.Repository(str(path), flags=pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
    except (pygit2.GitError, KeyError, OSError, ValueError):
        raise NotARepository(f"{path}: not a git repository") from None


def _git_message(e: BaseException) -> str:
    """A libgit2 error as one short line: URLs redacted, no response body."""
    text = redact(str(e).splitlines()[0] if str(e) else type(e).__name__)
    return text[:200]


# ----------------------------------------------------------------------------------------------------------
# Credentials.


@dataclass(frozen=True)
class Credentials:
    """Where to find git credentials; holds names of files and variables, never the secrets themselves.

    HTTPS: `username` (default ``git``) and a token or password read from `password_file` or from the
    environment variable `password_env`. SSH: `ssh_key_file` (and `ssh_public_key_file`, default the key
    file plus ``.pub``), with an optional passphrase from `password_file`/`password_env`.
    """

    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    ssh_key_file: Path | None = None
    ssh_public_key_file: Path | None = None

    def secret(self) -> str | None:
        """Read the token/password now (from the file, else the variable); None when neither is set."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text().strip()
            except OSError as e:
                raise errors.InputError(
                    f"git credentials file {self.password_file}: cannot read ({e.strerror})"
                ) from None
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise errors.InputError(f"git credentials variable {self.password_env} is not set")
            return value.strip()
        return None


def _userinfo(url: str) -> tuple[str, str] | None:
    """The ``user:password`` embedded in a URL, if any (used through callbacks, never stored)."""
    if not _SCHEME.match(url):
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return None
    return urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password)


class _Callbacks(pygit2.RemoteCallbacks):
    def __init__(self, credentials: Credentials | None, *, userinfo: tuple[str, str] | None = None) -> None:
        super().__init__()
        self._creds = credentials
        self._userinfo = userinfo
        self._attempts = 0

    def credentials(self, url: str, username_from_url: str | None, allowed_types: Any) -> Any:
        self._attempts += 1
        creds = self._creds
        allowed = pygit2.enums.CredentialType(allowed_types)
        if self._attempts > 1:  # no retry loop against a server that refuses us
            raise errors.SourceError("git: authentication refused")
        if self._userinfo is not None and allowed & pygit2.enums.CredentialType.USERPASS_PLAINTEXT:
            return pygit2.UserPass(*self._userinfo)
        if creds is None:
            raise errors.SourceError("git: authentication required (no credentials configured)")
        if creds.ssh_key_file is not None and allowed & pygit2.enums.CredentialType.SSH_KEY:
            pub = creds.ssh_public_key_file or Path(str(creds.ssh_key_file) + ".pub")
            return pygit2.Keypair(
                username_from_url or creds.username or "git",
                str(pub),
                str(creds.ssh_key_file),
                creds.secret() or "",
            )
        if allowed & pygit2.enums.CredentialType.USERPASS_PLAINTEXT:
            secret = creds.secret()
            if secret is not None:
                return pygit2.UserPass(creds.username or username_from_url or "git", secret)
        raise errors.SourceError("git: no usable credentials for this server")


def _set_timeouts() -> None:
    with contextlib.suppress(AttributeError, pygit2.GitError):
        pygit2.settings.server_connect_timeout = CONNECT_TIMEOUT_MS
        pygit2.settings.server_timeout = SERVER_TIMEOUT_MS


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


def _tree(repo: pygit2.Repository, oid: pygit2.Oid) -> pygit2.Tree:
    obj = repo[oid]
    if not isinstance(obj, pygit2.Tree):
        raise errors.SourceError(f"object {oid} is not a tree (corrupt repository?)")
    return obj


def _blob(repo: pygit2.Repository, oid: pygit2.Oid) -> bytes:
    obj = repo[oid]
    if not isinstance(obj, pygit2.Blob):
        raise errors.SourceError(f"object {oid} is not a blob (corrupt repository?)")
    return obj.data


def _read_tree(
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
        if entry.filemode != _MODE_TREE:
            raise errors.InputError(f"--path {base!r}: {walked!r} is not a folder at {str(commit.id)[:12]}")
        tree = _tree(repo, entry.id)
    odb = repo.odb
    stack: list[tuple[pygit2.Tree, str]] = []
    for root in ROOTS:
        try:
            entry = tree[root]
        except KeyError:
            continue
        if entry.filemode == _MODE_TREE:
            stack.append((_tree(repo, entry.id), root))
        elif entry.filemode == _MODE_LINK:
            col.problem(root, _LINK_MESSAGE)
        elif entry.filemode == _MODE_SUBMODULE:
            col.problem(root, _SUBMODULE_MESSAGE)
        else:
            col.problem(root, "is a file, expected a folder")
    while stack:
        node, prefix = stack.pop()
        for child in node:
            rel = f"{prefix}/{child.name}"
            mode = child.filemode
            if mode == _MODE_TREE:
                stack.append((_tree(repo, child.id), rel))
            elif mode == _MODE_LINK:
                col.problem(rel, _LINK_MESSAGE)
            elif mode == _MODE_SUBMODULE:
                col.problem(rel, _SUBMODULE_MESSAGE)
            else:
                _, size = odb.read_header(child.id)
                if col.admit(rel, size):
                    col.files[rel] = _blob(repo, child.id)
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


# ----------------------------------------------------------------------------------------------------------
# Revisions: what `--rev` and `--branch` name, resolved without git's guessing (see docs/repository.md).

REV_FORMS = (
    "a commit id (full, or at least 4 hex digits), a branch or tag name, a full ref (refs/heads/NAME, "
    "refs/tags/NAME), or HEAD, optionally followed by ~N or ^N"
)
"""What a `--rev` may be, as said in errors and help (a name that is both a branch and a tag is refused)."""

REV_HELP = (
    f"REV is {REV_FORMS}. A name that is both a branch and a tag is refused: write refs/heads/NAME or "
    "refs/tags/NAME."
)
"""The `--rev` help shared by the commands that read a local repository (docs/repository.md)."""

SERVE_REV_HELP = (
    "REV is a full commit id, a branch or tag name, a full ref (refs/heads/NAME, refs/tags/NAME) or HEAD, "
    "as the remote advertises them; a local repository also takes abbreviated ids and ~N/^N. A name that "
    "is both a branch and a tag is refused."
)
"""The `--rev` help of `fleet serve` (docs/operations.md)."""

_HEX = re.compile(r"[0-9a-f]{4,64}")
_FULL_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_ANCESTRY = re.compile(r"(?:[~^][0-9]*)+$")


def _split_rev(rev: str, *, where: str) -> tuple[str, str]:
    """`rev` as (base, ancestry suffix): the base is HEAD, ``refs/...`` or a name or hex id, the suffix a
    run of ``~N``/``^N``. Any other syntax (``@{...}``, ``:path``, ``..``, ``^{type}``) is refused."""
    if not rev or rev != rev.strip() or rev.startswith("-") or any(ord(c) < 0x20 or c == "\x7f" for c in rev):
        raise UnknownRevision(f"{where}: invalid revision {rev!r}")
    m = _ANCESTRY.search(rev)
    suffix = m.group(0) if m else ""
    base = rev[: len(rev) - len(suffix)]
    full = base if base.startswith("refs/") else f"refs/heads/{base}"
    if not base or base.startswith("-") or (base != "HEAD" and not pygit2.reference_is_valid_name(full)):
        raise UnknownRevision(f"{where}: unsupported revision {rev!r}: use {REV_FORMS}")
    return base, suffix


def _ref_commit(repo: pygit2.Repository, name: str) -> pygit2.Oid | None:
    """What the ref `name` points at (symbolic refs followed), or None when there is no such ref."""
    ref = repo.references.get(name)
    target = None if ref is None else ref.resolve().target
    return target if isinstance(target, pygit2.Oid) else None


def _ambiguous(where: str, rev: str, candidates: list[str]) -> AmbiguousRevision:
    names = " and ".join(candidates)
    refs = [c.split()[-1] for c in candidates if "refs/" in c]
    hint = " or ".join(refs) + (" (or the full commit id)" if len(refs) < len(candidates) else "")
    return AmbiguousRevision(f"{where}: ambiguous revision {rev!r}: it names {names}; write {hint}")


def _resolve_base(repo: pygit2.Repository, base: str, *, rev: str, where: str) -> pygit2.Oid:
    if base == "HEAD":
        try:
            head = _ref_commit(repo, "HEAD")
        except (pygit2.GitError, KeyError):
            head = None
        if head is None:
            raise UnknownRevision(f"{where}: unknown revision {rev!r} (HEAD names no commit)")
        return head
    if base.startswith("refs/"):
        oid = _ref_commit(repo, base)
        if oid is None:
            raise UnknownRevision(f"{where}: unknown revision {rev!r} (no such ref)")
        return oid
    found: list[tuple[str, pygit2.Oid]] = []
    for kind, ref in (("the branch", f"refs/heads/{base}"), ("the tag", f"refs/tags/{base}")):
        oid = _ref_commit(repo, ref)
        if oid is not None:
            found.append((f"{kind} {ref}", oid))
    if _HEX.fullmatch(base):
        try:
            obj = repo.get(base)
        except ValueError:  # AmbiguousError: the prefix names several objects
            if not found:
                raise AmbiguousRevision(
                    f"{where}: ambiguous revision {rev!r} (ambiguous short id: give more hex digits)"
                ) from None
            obj = None
        if obj is not None:
            kind = "the commit" if isinstance(obj, pygit2.Commit) else "the object"
            found.append((f"{kind} {obj.id}", obj.id))
    if len(found) > 1:
        raise _ambiguous(where, rev, [f for f, _ in found])
    if not found:
        hint = ""
        if _ref_commit(repo, f"refs/remotes/{base}") is not None:
            hint = f"; a remote-tracking branch: write refs/remotes/{base}"
        raise UnknownRevision(f"{where}: unknown revision {rev!r} (no such branch, tag or commit{hint})")
    return found[0][1]


def _resolve(repo: pygit2.Repository, rev: str, *, where: str) -> pygit2.Commit:
    """The commit `rev` names in `repo`, by the rules of `REV_FORMS`; refuses ambiguous names."""
    base, suffix = _split_rev(rev, where=where)
    oid = _resolve_base(repo, base, rev=rev, where=where)
    try:
        commit = repo[oid].peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        raise UnknownRevision(f"{where}: revision {rev!r} does not name a commit") from None
    if suffix:
        try:  # git's ancestry syntax, from an exact commit id: nothing left to guess
            commit = repo.revparse_single(f"{commit.id}{suffix}").peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            shallow = " (the mirror holds no history)" if repo.is_shallow else ""
            raise UnknownRevision(f"{where}: unknown revision {rev!r} (no such ancestor{shallow})") from None
    return commit


def check_branch(branch: str) -> str:
    """`branch` when it is a branch name git accepts (not a ref: ``main``, not ``refs/heads/main``);
    `errors.InputError` otherwise."""
    if branch.startswith("refs/"):
        raise errors.InputError(f"--branch {branch!r}: give the branch's name (main), not a ref")
    if not branch or branch.startswith("-") or not pygit2.reference_is_valid_name(f"refs/heads/{branch}"):
        raise errors.InputError(f"--branch {branch!r}: not a valid branch name")
    return branch


@dataclass(frozen=True)
class Follow:
    """What a controller follows: the tip of `branch` (``refs/heads/<branch>`` only, never a tag of the
    same name), or, when `rev` is set, that revision pinned (resolved once)."""

    branch: str = "main"
    rev: str | None = None

    def __post_init__(self) -> None:
        check_branch(self.branch)
        if self.rev is not None:
            try:
                _split_rev(self.rev, where="--rev")
            except UnknownRevision as e:
                raise errors.InputError(str(e)) from None

    @property
    def keep_ref(self) -> str:
        """The mirror's ref that holds the last good revision of what is followed."""
        if self.rev is None:
            return f"refs/fleet/last-good/branch/{self.branch}"
        return f"refs/fleet/last-good/rev-{hashlib.sha256(self.rev.encode()).hexdigest()[:16]}"

    def __str__(self) -> str:
        return f"branch {self.branch}" if self.rev is None else f"revision {self.rev}"


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
    for name in ROOTS:
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
        if prefix not in ROOTS and any(e.name == ".git" for e in entries):
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


async def _thread(fn: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(fn)


async def read_worktree(
    path: str | Path, *, subpath: str = "", limits: yamlsafe.Limits = yamlsafe.DEFAULT_LIMITS
) -> model.Snapshot:
    """The files on disk below `path` (revision None): ``clusters/`` and ``bundles/`` only, ``.git`` skipped,
    links and special files reported, never followed."""
    return await _thread(functools.partial(_read_worktree_sync, Path(path), subpath=subpath, limits=limits))


@contextlib.contextmanager
def _corrupt(what: str) -> Iterator[None]:
    """libgit2 failing to read objects (a corrupt pack or loose object, a missing object) as
    `errors.SourceError` naming `what`: never a raw pygit2 exception, never file content."""
    try:
        yield
    except (pygit2.GitError, KeyError, ValueError, OSError) as e:
        raise errors.SourceError(f"{what}: {_git_message(e)}") from None


def _read_revision_sync(
    repo_path: Path, rev: str, *, subpath: str, limits: yamlsafe.Limits
) -> model.Snapshot:
    repo = open_local(repo_path)
    with _corrupt(f"{repo_path}: cannot read the repository (corrupt?)"):
        commit = _resolve(repo, rev, where=str(repo_path))
        return _read_tree(repo, commit, subpath=subpath, limits=limits)


async def read_revision(
    repo_path: str | Path, rev: str, *, subpath: str = "", limits: yamlsafe.Limits = yamlsafe.DEFAULT_LIMITS
) -> model.Snapshot:
    """One commit of a local repository (work tree or bare), read from the object database."""
    loc = check_url(repo_path)
    if loc.path is None:
        raise errors.InputError(f"{loc}: read_revision needs a local repository; use Source for URLs")
    return await _thread(
        functools.partial(_read_revision_sync, loc.path, rev, subpath=subpath, limits=limits)
    )


# ----------------------------------------------------------------------------------------------------------
# A remote followed through a bare mirror.

FETCH_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")

_UNSHALLOW = 2147483647  # libgit2's GIT_FETCH_DEPTH_UNSHALLOW: fetch the history a shallow mirror lacks
_PINNED_REF = "refs/fleet/pinned"


def _copy_commit(src: pygit2.Repository, dst: pygit2.Repository, commit: pygit2.Commit) -> None:
    """Copy one commit and its tree, not its history, from a local repository into the mirror.

    libgit2's local transport cannot fetch shallow (it packs the whole history: ~5 s of CPU for 20,000
    commits), so fleet packs what one commit needs with libgit2's pack builder. A tree the mirror already
    holds is skipped with everything below it (a tree always arrives with its content). Parents that stay
    behind are recorded in the mirror's ``shallow`` file, as a shallow fetch does.
    """
    odb = dst.odb
    if commit.id not in odb:
        builder = pygit2.PackBuilder(src)
        builder.add(commit.id)
        stack, seen = [commit.tree_id], set()
        while stack:
            oid = stack.pop()
            if oid in seen or oid in odb:
                continue
            seen.add(oid)
            builder.add(oid)
            for entry in _tree(src, oid):
                if entry.filemode == _MODE_TREE:
                    stack.append(entry.id)
                elif entry.filemode != _MODE_SUBMODULE and entry.id not in odb:
                    builder.add(entry.id)
        builder.write(str(Path(dst.path) / "objects" / "pack"))
    if any(parent not in odb for parent in commit.parent_ids):
        shallow = Path(dst.path) / "shallow"
        roots = shallow.read_text().split() if shallow.exists() else []
        if str(commit.id) not in roots:
            tmp = shallow.with_name("shallow.fleet-tmp")
            tmp.write_text("".join(f"{r}\n" for r in [*roots, str(commit.id)]))
            os.replace(tmp, shallow)


class Source:
    """A repository (URL or local path) mirrored as a bare repository under `state_dir`.

    `fetch_tip(follow)` brings exactly what the controller follows into the mirror and returns its commit
    id: the tip of ``refs/heads/<branch>`` (never a tag of the same name), or a pinned revision. From a
    remote it fetches that one ref with ``depth=1``; from a local repository it copies that one commit
    (`_copy_commit`). `keep(follow, sha)` records a revision the controller accepted under
    ``refs/fleet/last-good/...`` so that `last_good(follow)` finds it after a restart, even with the
    remote unreachable. `fetch()` mirrors every branch and tag with their history (explicit refspecs:
    a bare mirror's plain fetch would only move ``refs/remotes/origin/*``), pruning deleted branches,
    and points the mirror's HEAD at the remote's default branch. `resolve`, `snapshot` and
    `changed_paths` read the mirror only.
    """

    def __init__(
        self,
        url_or_path: str | Path,
        *,
        state_dir: str | Path,
        credentials: Credentials | None = None,
        limits: yamlsafe.Limits = yamlsafe.DEFAULT_LIMITS,
    ) -> None:
        self.location = check_url(url_or_path)
        self.credentials = credentials
        self.limits = limits
        digest = hashlib.sha256(redact(self.location.url).encode()).hexdigest()[:16]
        self.mirror = Path(state_dir) / "git" / f"mirror-{digest}.git"
        self._repo: pygit2.Repository | None = None
        self._lock = threading.Lock()  # one pygit2 call on the mirror at a time

    def __repr__(self) -> str:
        return f"Source({str(self.location)!r}, mirror={str(self.mirror)!r})"

    # -- sync halves, run in threads --

    def _remote_url(self) -> str:
        if self.location.path is not None:
            repo = open_local(self.location.path)  # raises "not a git repository"
            return str(Path(repo.path).resolve())
        # user:password@ goes through the callbacks, never into the mirror's config
        return _USERINFO.sub(lambda m: m.group("scheme"), self.location.url)

    def _callbacks(self) -> _Callbacks:
        return _Callbacks(self.credentials, userinfo=_userinfo(self.location.url))

    def _open_mirror(self) -> pygit2.Repository:
        if self._repo is None:
            if not (self.mirror / "HEAD").exists():
                raise errors.SourceError(f"{self.location}: not fetched yet (call fetch first)")
            self._repo = pygit2.Repository(str(self.mirror))
        return self._repo

    def _init_mirror(self) -> pygit2.Repository:
        if self._repo is None:
            if (self.mirror / "HEAD").exists():
                self._repo = pygit2.Repository(str(self.mirror))
            else:
                self.mirror.parent.mkdir(parents=True, exist_ok=True)
                self._repo = pygit2.init_repository(str(self.mirror), bare=True)
        return self._repo

    def _origin(self, repo: pygit2.Repository) -> pygit2.Remote:
        url = self._remote_url()
        if "origin" in repo.remotes.names():
            if repo.remotes["origin"].url != url:
                repo.remotes.set_url("origin", url)
        else:
            repo.remotes.create("origin", url, "+refs/heads/*:refs/heads/*")
        return repo.remotes["origin"]

    @contextlib.contextmanager
    def _network(self) -> Iterator[None]:
        """Turn what a fetch or a listing raises into `errors.SourceError` ("fetch failed: ...")."""
        try:
            yield
        except errors.InputError as e:  # a credentials file or variable that cannot be read
            raise errors.InputError(f"{self.location}: {e}") from None
        except errors.SourceError as e:  # raised by our credentials callback
            raise errors.SourceError(f"{self.location}: fetch failed: {e}") from None
        except (pygit2.GitError, OSError, ValueError) as e:
            raise errors.SourceError(f"{self.location}: fetch failed: {_git_message(e)}") from None

    def _remote_fetch(self, remote: pygit2.Remote, refspecs: list[str], *, depth: int = 0) -> None:
        prune = pygit2.enums.FetchPrune.PRUNE
        with self._network():
            try:
                remote.fetch(refspecs, callbacks=self._callbacks(), prune=prune, depth=depth)
            except pygit2.GitError as e:
                if not depth or depth == _UNSHALLOW or "shallow" not in str(e).lower():
                    raise
                remote.fetch(refspecs, callbacks=self._callbacks(), prune=prune)  # a server without shallow

    def _fetch_sync(self) -> None:
        _set_timeouts()
        repo = self._init_mirror()
        remote = self._origin(repo)
        self._remote_fetch(remote, list(FETCH_REFSPECS), depth=_UNSHALLOW if repo.is_shallow else 0)
        with self._network():
            heads = remote.list_heads(callbacks=self._callbacks())
        for head in heads:
            if head.name == "HEAD" and head.symref_target:
                target = head.symref_target
                if target in repo.references:
                    repo.set_head(target)
                break

    def _fetch_tip_sync(self, follow: Follow) -> str:
        _set_timeouts()
        if self.location.path is not None:
            return self._copy_tip_sync(self.location.path, follow)
        repo = self._init_mirror()
        remote = self._origin(repo)
        if follow.rev is not None:
            return self._fetch_pinned(repo, remote, follow.rev)
        ref = f"refs/heads/{follow.branch}"
        self._remote_fetch(remote, [f"+{ref}:{ref}"], depth=1)  # pruned when the branch is gone
        oid = _ref_commit(repo, ref)
        if oid is None:
            raise UnknownRevision(f"{self.location}: no branch {follow.branch!r}")
        return str(self._commit(repo, oid, what=ref).id)

    def _commit(self, repo: pygit2.Repository, oid: pygit2.Oid, *, what: str) -> pygit2.Commit:
        try:
            return repo[oid].peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            raise UnknownRevision(f"{self.location}: {what} does not name a commit") from None

    def _copy_tip_sync(self, path: Path, follow: Follow) -> str:
        where = str(self.location)
        src = open_local(path)
        if follow.rev is None:
            ref = f"refs/heads/{follow.branch}"
            oid = _ref_commit(src, ref)
            if oid is None:
                raise UnknownRevision(f"{where}: no branch {follow.branch!r}")
            commit = self._commit(src, oid, what=ref)
        else:
            ref = _PINNED_REF
            commit = _resolve(src, follow.rev, where=where)
        repo = self._init_mirror()
        try:
            _copy_commit(src, repo, commit)
            repo.references.create(ref, commit.id, force=True)
        except (pygit2.GitError, KeyError, OSError, ValueError) as e:
            raise errors.SourceError(f"{where}: fetch failed: {_git_message(e)}") from None
        return str(commit.id)

    def _fetch_pinned(self, repo: pygit2.Repository, remote: pygit2.Remote, rev: str) -> str:
        """Resolve `rev` against what the remote advertises (no guessing), fetch that alone, shallow."""
        where = str(self.location)
        base, suffix = _split_rev(rev, where=where)
        if suffix:
            raise UnknownRevision(
                f"{where}: revision {rev!r}: ~N and ^N need the history, which fleet does not fetch from "
                "a remote; pin the commit id"
            )
        if _FULL_ID.fullmatch(base) and pygit2.Oid(hex=base) in repo.odb:
            return str(self._commit(repo, pygit2.Oid(hex=base), what=base).id)  # held already: no network
        with self._network():
            heads = remote.list_heads(callbacks=self._callbacks())
        advertised = {h.name: h.oid for h in heads if h.name}
        ref: str | None = None
        if base == "HEAD":
            head = next((h for h in heads if h.name == "HEAD"), None)
            if head is None:
                raise UnknownRevision(f"{where}: unknown revision 'HEAD' (the remote has no HEAD)")
            ref = head.symref_target or None
            base = str(head.oid)
        elif base.startswith("refs/"):
            if base not in advertised:
                raise UnknownRevision(f"{where}: unknown revision {rev!r} (the remote has no {base})")
            ref = base
        else:
            names = [r for r in (f"refs/heads/{base}", f"refs/tags/{base}") if r in advertised]
            candidates = [f"the {'branch' if r.startswith('refs/heads/') else 'tag'} {r}" for r in names]
            if _FULL_ID.fullmatch(base):
                candidates.append(f"the commit {base}")
            if len(candidates) > 1:
                raise _ambiguous(where, rev, candidates)
            if not candidates:
                if _HEX.fullmatch(base):
                    raise UnknownRevision(
                        f"{where}: unknown revision {rev!r}: no branch or tag of that name at the remote, "
                        "and an abbreviated id cannot be looked up there: pin the full commit id"
                    )
                raise UnknownRevision(
                    f"{where}: unknown revision {rev!r}: no branch or tag {base!r} at the remote"
                )
            ref = names[0] if names else None
        if ref is None:  # a commit id: the ref that points at it, else the id itself, else the history
            peeled = {oid: name.removesuffix("^{}") for name, oid in advertised.items()}
            ref = peeled.get(pygit2.Oid(hex=base))
        if ref is not None:
            self._remote_fetch(remote, [f"+{ref}:{ref}"], depth=1)
            oid = _ref_commit(repo, ref)
            if oid is None:
                raise UnknownRevision(f"{where}: unknown revision {rev!r} (the remote has no {ref})")
            return str(self._commit(repo, oid, what=ref).id)
        wanted = pygit2.Oid(hex=base)
        try:
            self._remote_fetch(remote, [f"+{base}:{_PINNED_REF}"], depth=1)
        except errors.SourceError:  # the server refuses wants that no ref advertises
            self._remote_fetch(remote, list(FETCH_REFSPECS), depth=_UNSHALLOW)
        if wanted not in repo.odb:
            raise UnknownRevision(f"{where}: unknown revision {rev!r} (no such commit at the remote)")
        return str(self._commit(repo, wanted, what=base).id)

    def _keep_sync(self, follow: Follow, sha: str) -> None:
        repo = self._open_mirror()
        try:
            repo.references.create(follow.keep_ref, pygit2.Oid(hex=sha), force=True)
        except (pygit2.GitError, OSError, ValueError) as e:
            raise errors.SourceError(
                f"{self.mirror}: cannot record the last good revision: {_git_message(e)}"
            ) from None

    def _last_good_sync(self, follow: Follow) -> str | None:
        if not (self.mirror / "HEAD").exists():
            return None
        with self._reading_mirror():
            repo = self._open_mirror()
            oid = _ref_commit(repo, follow.keep_ref)
            if oid is None or oid not in repo.odb:
                return None
            return str(repo[oid].peel(pygit2.Commit).id)

    def _reading_mirror(self) -> contextlib.AbstractContextManager[None]:
        return _corrupt(f"{self.location}: cannot read the local mirror {self.mirror} (corrupt?)")

    def _resolve_sync(self, rev: str) -> str:
        with self._reading_mirror():
            return str(_resolve(self._open_mirror(), rev, where=str(self.location)).id)

    def _snapshot_sync(self, sha: str, subpath: str) -> model.Snapshot:
        with self._reading_mirror():
            repo = self._open_mirror()
            commit = _resolve(repo, sha, where=str(self.location))
            return _read_tree(repo, commit, subpath=subpath, limits=self.limits)

    def _changed_sync(self, old: str, new: str) -> list[str]:
        with self._reading_mirror():
            repo = self._open_mirror()
            a = _resolve(repo, old, where=str(self.location))
            b = _resolve(repo, new, where=str(self.location))
            paths: set[str] = set()
            for delta in repo.diff(a, b).deltas:
                paths.add(delta.old_file.path)
                paths.add(delta.new_file.path)
            return sorted(paths)

    # -- async API --

    def _locked(self, fn: Callable[..., T], *args: Any) -> Callable[[], T]:
        def call() -> T:
            with self._lock:
                return fn(*args)

        return call

    async def fetch(self) -> None:
        """Mirror every branch and tag with its history (network I/O in a worker thread; libgit2 timeouts
        apply). The controller uses `fetch_tip`, which fetches only what it follows."""
        await _thread(self._locked(self._fetch_sync))

    async def fetch_tip(self, follow: Follow) -> str:
        """Bring the commit `follow` names into the mirror, without history; its full id.

        Raises `errors.SourceError` when the remote cannot be read ("fetch failed: ..."),
        `UnknownRevision`/`AmbiguousRevision` when the branch or revision is not there or not unique."""
        return await _thread(self._locked(self._fetch_tip_sync, follow))

    async def keep(self, follow: Follow, sha: str) -> None:
        """Record `sha` (held in the mirror) as the last good revision of `follow`."""
        await _thread(self._locked(self._keep_sync, follow, sha))

    async def last_good(self, follow: Follow) -> str | None:
        """The last good revision recorded for `follow`, when the mirror still holds it; None otherwise."""
        return await _thread(self._locked(self._last_good_sync, follow))

    async def resolve(self, rev: str) -> str:
        """The full commit id `rev` names in the mirror (`REV_FORMS`; HEAD is the remote's default branch)."""
        return await _thread(self._locked(self._resolve_sync, rev))

    async def snapshot(self, sha: str, *, subpath: str = "") -> model.Snapshot:
        """The files of one commit (``clusters/`` and ``bundles/``), with its subject, author and time."""
        return await _thread(self._locked(self._snapshot_sync, sha, subpath))

    async def changed_paths(self, old_sha: str, new_sha: str) -> list[str]:
        """Paths (relative to the repository root) that differ between two commits, sorted."""
        return await _thread(self._locked(self._changed_sync, old_sha, new_sha))


# ----------------------------------------------------------------------------------------------------------
# Identity: which source wrote an inventory (docs/reconcile.md, "Several controllers on one cluster").


def _remote_identity(url: str) -> str:
    """``host/path`` of a remote URL: no scheme, user, password, port, query or fragment, no trailing
    ``.git`` or ``/``, host in lower case (https and ssh spellings of one repository agree)."""
    if _SCHEME.match(url):
        try:
            parts = urllib.parse.urlsplit(url)
            host, path = (parts.hostname or "").lower(), parts.path
        except ValueError:
            host, path = "", url
    else:
        scp = _SCP.match(url)
        host, path = (scp.group("host").lower(), scp.group("path")) if scp else ("", url)
    path = path.strip("/")
    path = path.removeprefix("~/")
    path = path.removesuffix(".git").rstrip("/")
    return f"{host}/{path}" if host else redact(path)


def _local_identity(path: Path) -> str:
    """A local repository: its ``origin`` remote's identity when it has one (a person's clone and the
    controller following that remote are one source), else its absolute path."""
    try:
        repo = open_local(path)
    except NotARepository:
        return str(path.resolve())
    root = Path(repo.workdir or repo.path).resolve()
    try:
        origin = repo.remotes["origin"].url if "origin" in repo.remotes.names() else None
    except (KeyError, pygit2.GitError, ValueError):
        origin = None
    if not origin:
        return str(root)
    try:
        where = check_url(origin)
    except UnsafeURL:
        return str(root)
    if where.path is None:
        return _remote_identity(where.url)
    target = where.path if where.path.is_absolute() else root / where.path
    resolved = target.resolve()
    return str(resolved.parent if resolved.name == ".git" else resolved)


def identity(url_or_path: str | Path, *, subpath: str = "") -> str:
    """A stable name of a repository (and ``--path`` folder) that carries no credential: what inventories
    record as the source that wrote them. ``https://user:TOKEN@Git.example.com/team/gitops.git?x=1``,
    ``ssh://git@git.example.com:22/team/gitops`` and ``git@git.example.com:team/gitops.git`` all read
    ``git.example.com/team/gitops``; a local repository reads as its ``origin`` remote, else its absolute
    path; ``--path deploy`` appends ``//deploy``. Blocking for a local repository (reads its config)."""
    text = str(url_or_path)
    try:
        where = check_url(text)
    except UnsafeURL:
        base = _remote_identity(redact(text))
    else:
        base = _local_identity(where.path) if where.path is not None else _remote_identity(where.url)
    sub = subpath.strip("/")
    return f"{base}//{sub}" if sub else base
