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

from fleet.clients.source.mirror import FETCH_REFSPECS, Source, identity
from fleet.clients.source.revisions import REV_FORMS, REV_HELP, SERVE_REV_HELP, Follow, check_branch
from fleet.clients.source.trees import check_subpath, read_revision, read_worktree
from fleet.clients.source.urls import (
    CONNECT_TIMEOUT_MS,
    ROOTS,
    SERVER_TIMEOUT_MS,
    AmbiguousRevision,
    Credentials,
    Location,
    NotARepository,
    T,
    UnknownRevision,
    UnsafeURL,
    check_url,
    open_local,
    redact,
)

__all__ = [
    "CONNECT_TIMEOUT_MS",
    "FETCH_REFSPECS",
    "REV_FORMS",
    "REV_HELP",
    "ROOTS",
    "SERVER_TIMEOUT_MS",
    "SERVE_REV_HELP",
    "AmbiguousRevision",
    "Credentials",
    "Follow",
    "Location",
    "NotARepository",
    "Source",
    "T",
    "UnknownRevision",
    "UnsafeURL",
    "check_branch",
    "check_subpath",
    "check_url",
    "identity",
    "open_local",
    "read_revision",
    "read_worktree",
    "redact",
]
