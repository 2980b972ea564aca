"""URLs and credentials: the URL policy (`check_url`), `redact`, `Credentials` and libgit2's callbacks.

``https``, ``http``, ``ssh``, ``git``, ``file`` and scp-style ``user@host:path``, or a local path that must
be a git repository. Transport helpers (``ext::``, ``fd::``), option-looking hosts, users or paths
(``ssh://-oProxyCommand=...``) and control characters are refused before libgit2 sees them. Every URL in a
message has its ``user:password@`` removed (`redact`). Credentials come from a file or an environment
variable named by an option; they are read when libgit2 asks for them and never stored or printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import pygit2
import pygit2.enums

from fleet.core import errors

T = TypeVar("T")

ROOTS = ("clusters", "bundles")
"""The folders of a repository that fleet reads; everything else is ignored."""

CONNECT_TIMEOUT_MS = 10_000
SERVER_TIMEOUT_MS = 60_000


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

USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:access_)?(?:token|password|key|secret)=)[^&\s]*")
SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
SCP = re.compile(r"^(?:(?P<user>[^@/:\s]+)@)?(?P<host>[^@/:\s]+):(?P<path>.*)$")
_HOST = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*)$|^\[[0-9A-Fa-f:.]+\]$")
_ALLOWED_SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})


def redact(text: str) -> str:
    """`text` with every ``scheme://user:password@`` reduced to ``scheme://`` and ``?token=`` values hidden."""
    text = USERINFO.sub(lambda m: m.group("scheme"), text)
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
    m = SCHEME.match(text)
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
    scp = SCP.match(text)
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


def git_message(e: BaseException) -> str:
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


def userinfo(url: str) -> tuple[str, str] | None:
    """The ``user:password`` embedded in a URL, if any (used through callbacks, never stored)."""
    if not SCHEME.match(url):
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return None
    return urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password)


class Callbacks(pygit2.RemoteCallbacks):
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


def set_timeouts() -> None:
    with contextlib.suppress(AttributeError, pygit2.GitError):
        pygit2.settings.server_connect_timeout = CONNECT_TIMEOUT_MS
        pygit2.settings.server_timeout = SERVER_TIMEOUT_MS


async def in_thread(fn: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(fn)
