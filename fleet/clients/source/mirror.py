"""A remote followed through a bare mirror: `Source` (`fetch`, `fetch_tip`, `resolve`, `snapshot`,
`changed_paths`, `keep`/`last_good`), and `identity` (the credential-free name of a repository and
``--path`` that inventories record as their source, docs/reconcile.md).

Every pygit2 call runs in a worker thread, one at a time per mirror; a tip is fetched alone (shallow from
a remote, one commit copied from a local repository).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pygit2
import pygit2.enums

from fleet.clients.source import revisions, trees, urls
from fleet.core import errors, model, yamlsafe

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
            for entry in trees.tree_of(src, oid):
                if entry.filemode == trees.MODE_TREE:
                    stack.append(entry.id)
                elif entry.filemode != trees.MODE_SUBMODULE and entry.id not in odb:
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
        credentials: urls.Credentials | None = None,
        limits: yamlsafe.Limits = yamlsafe.DEFAULT_LIMITS,
    ) -> None:
        self.location = urls.check_url(url_or_path)
        self.credentials = credentials
        self.limits = limits
        digest = hashlib.sha256(urls.redact(self.location.url).encode()).hexdigest()[:16]
        self.mirror = Path(state_dir) / "git" / f"mirror-{digest}.git"
        self._repo: pygit2.Repository | None = None
        self._lock = threading.Lock()  # one pygit2 call on the mirror at a time

    def __repr__(self) -> str:
        return f"Source({str(self.location)!r}, mirror={str(self.mirror)!r})"

    # -- sync halves, run in threads --

    def _remote_url(self) -> str:
        if self.location.path is not None:
            repo = urls.open_local(self.location.path)  # raises "not a git repository"
            return str(Path(repo.path).resolve())
        # user:password@ goes through the callbacks, never into the mirror's config
        return urls.USERINFO.sub(lambda m: m.group("scheme"), self.location.url)

    def _callbacks(self) -> urls.Callbacks:
        return urls.Callbacks(self.credentials, userinfo=urls.userinfo(self.location.url))

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
            raise errors.SourceError(f"{self.location}: fetch failed: {urls.git_message(e)}") from None

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
        urls.set_timeouts()
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

    def _fetch_tip_sync(self, follow: revisions.Follow) -> str:
        urls.set_timeouts()
        if self.location.path is not None:
            return self._copy_tip_sync(self.location.path, follow)
        repo = self._init_mirror()
        remote = self._origin(repo)
        if follow.rev is not None:
            return self._fetch_pinned(repo, remote, follow.rev)
        ref = f"refs/heads/{follow.branch}"
        self._remote_fetch(remote, [f"+{ref}:{ref}"], depth=1)  # pruned when the branch is gone
        oid = revisions.ref_commit(repo, ref)
        if oid is None:
            raise urls.UnknownRevision(f"{self.location}: no branch {follow.branch!r}")
        return str(self._commit(repo, oid, what=ref).id)

    def _commit(self, repo: pygit2.Repository, oid: pygit2.Oid, *, what: str) -> pygit2.Commit:
        try:
            return repo[oid].peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            raise urls.UnknownRevision(f"{self.location}: {what} does not name a commit") from None

    def _copy_tip_sync(self, path: Path, follow: revisions.Follow) -> str:
        where = str(self.location)
        src = urls.open_local(path)
        if follow.rev is None:
            ref = f"refs/heads/{follow.branch}"
            oid = revisions.ref_commit(src, ref)
            if oid is None:
                raise urls.UnknownRevision(f"{where}: no branch {follow.branch!r}")
            commit = self._commit(src, oid, what=ref)
        else:
            ref = _PINNED_REF
            commit = revisions.resolve_rev(src, follow.rev, where=where)
        repo = self._init_mirror()
        try:
            _copy_commit(src, repo, commit)
            repo.references.create(ref, commit.id, force=True)
        except (pygit2.GitError, KeyError, OSError, ValueError) as e:
            raise errors.SourceError(f"{where}: fetch failed: {urls.git_message(e)}") from None
        return str(commit.id)

    def _fetch_pinned(self, repo: pygit2.Repository, remote: pygit2.Remote, rev: str) -> str:
        """Resolve `rev` against what the remote advertises (no guessing), fetch that alone, shallow."""
        where = str(self.location)
        base, suffix = revisions.split_rev(rev, where=where)
        if suffix:
            raise urls.UnknownRevision(
                f"{where}: revision {rev!r}: ~N and ^N need the history, which fleet does not fetch from "
                "a remote; pin the commit id"
            )
        if revisions.FULL_ID.fullmatch(base) and pygit2.Oid(hex=base) in repo.odb:
            return str(self._commit(repo, pygit2.Oid(hex=base), what=base).id)  # held already: no network
        with self._network():
            heads = remote.list_heads(callbacks=self._callbacks())
        advertised = {h.name: h.oid for h in heads if h.name}
        ref: str | None = None
        if base == "HEAD":
            head = next((h for h in heads if h.name == "HEAD"), None)
            if head is None:
                raise urls.UnknownRevision(f"{where}: unknown revision 'HEAD' (the remote has no HEAD)")
            ref = head.symref_target or None
            base = str(head.oid)
        elif base.startswith("refs/"):
            if base not in advertised:
                raise urls.UnknownRevision(f"{where}: unknown revision {rev!r} (the remote has no {base})")
            ref = base
        else:
            names = [r for r in (f"refs/heads/{base}", f"refs/tags/{base}") if r in advertised]
            candidates = [f"the {'branch' if r.startswith('refs/heads/') else 'tag'} {r}" for r in names]
            if revisions.FULL_ID.fullmatch(base):
                candidates.append(f"the commit {base}")
            if len(candidates) > 1:
                raise revisions.ambiguous(where, rev, candidates)
            if not candidates:
                if revisions.HEX.fullmatch(base):
                    raise urls.UnknownRevision(
                        f"{where}: unknown revision {rev!r}: no branch or tag of that name at the remote, "
                        "and an abbreviated id cannot be looked up there: pin the full commit id"
                    )
                raise urls.UnknownRevision(
                    f"{where}: unknown revision {rev!r}: no branch or tag {base!r} at the remote"
                )
            ref = names[0] if names else None
        if ref is None:  # a commit id: the ref that points at it, else the id itself, else the history
            peeled = {oid: name.removesuffix("^{}") for name, oid in advertised.items()}
            ref = peeled.get(pygit2.Oid(hex=base))
        if ref is not None:
            self._remote_fetch(remote, [f"+{ref}:{ref}"], depth=1)
            oid = revisions.ref_commit(repo, ref)
            if oid is None:
                raise urls.UnknownRevision(f"{where}: unknown revision {rev!r} (the remote has no {ref})")
            return str(self._commit(repo, oid, what=ref).id)
        wanted = pygit2.Oid(hex=base)
        try:
            self._remote_fetch(remote, [f"+{base}:{_PINNED_REF}"], depth=1)
        except errors.SourceError:  # the server refuses wants that no ref advertises
            self._remote_fetch(remote, list(FETCH_REFSPECS), depth=_UNSHALLOW)
        if wanted not in repo.odb:
            raise urls.UnknownRevision(f"{where}: unknown revision {rev!r} (no such commit at the remote)")
        return str(self._commit(repo, wanted, what=base).id)

    def _keep_sync(self, follow: revisions.Follow, sha: str) -> None:
        repo = self._open_mirror()
        try:
            repo.references.create(follow.keep_ref, pygit2.Oid(hex=sha), force=True)
        except (pygit2.GitError, OSError, ValueError) as e:
            raise errors.SourceError(
                f"{self.mirror}: cannot record the last good revision: {urls.git_message(e)}"
            ) from None

    def _last_good_sync(self, follow: revisions.Follow) -> str | None:
        if not (self.mirror / "HEAD").exists():
            return None
        with self._reading_mirror():
            repo = self._open_mirror()
            oid = revisions.ref_commit(repo, follow.keep_ref)
            if oid is None or oid not in repo.odb:
                return None
            return str(repo[oid].peel(pygit2.Commit).id)

    def _reading_mirror(self) -> contextlib.AbstractContextManager[None]:
        return trees.corrupt(f"{self.location}: cannot read the local mirror {self.mirror} (corrupt?)")

    def _resolve_sync(self, rev: str) -> str:
        with self._reading_mirror():
            return str(revisions.resolve_rev(self._open_mirror(), rev, where=str(self.location)).id)

    def _snapshot_sync(self, sha: str, subpath: str) -> model.Snapshot:
        with self._reading_mirror():
            repo = self._open_mirror()
            commit = revisions.resolve_rev(repo, sha, where=str(self.location))
            return trees.read_tree(repo, commit, subpath=subpath, limits=self.limits)

    def _changed_sync(self, old: str, new: str) -> list[str]:
        with self._reading_mirror():
            repo = self._open_mirror()
            a = revisions.resolve_rev(repo, old, where=str(self.location))
            b = revisions.resolve_rev(repo, new, where=str(self.location))
            paths: set[str] = set()
            for delta in repo.diff(a, b).deltas:
                paths.add(delta.old_file.path)
                paths.add(delta.new_file.path)
            return sorted(paths)

    # -- async API --

    def _locked(self, fn: Callable[..., urls.T], *args: Any) -> Callable[[], urls.T]:
        def call() -> urls.T:
            with self._lock:
                return fn(*args)

        return call

    async def fetch(self) -> None:
        """Mirror every branch and tag with its history (network I/O in a worker thread; libgit2 timeouts
        apply). The controller uses `fetch_tip`, which fetches only what it follows."""
        await urls.in_thread(self._locked(self._fetch_sync))

    async def fetch_tip(self, follow: revisions.Follow) -> str:
        """Bring the commit `follow` names into the mirror, without history; its full id.

        Raises `errors.SourceError` when the remote cannot be read ("fetch failed: ..."),
        `UnknownRevision`/`AmbiguousRevision` when the branch or revision is not there or not unique."""
        return await urls.in_thread(self._locked(self._fetch_tip_sync, follow))

    async def keep(self, follow: revisions.Follow, sha: str) -> None:
        """Record `sha` (held in the mirror) as the last good revision of `follow`."""
        await urls.in_thread(self._locked(self._keep_sync, follow, sha))

    async def last_good(self, follow: revisions.Follow) -> str | None:
        """The last good revision recorded for `follow`, when the mirror still holds it; None otherwise."""
        return await urls.in_thread(self._locked(self._last_good_sync, follow))

    async def resolve(self, rev: str) -> str:
        """The full commit id `rev` names in the mirror (`REV_FORMS`; HEAD is the remote's default branch)."""
        return await urls.in_thread(self._locked(self._resolve_sync, rev))

    async def snapshot(self, sha: str, *, subpath: str = "") -> model.Snapshot:
        """The files of one commit (``clusters/`` and ``bundles/``), with its subject, author and time."""
        return await urls.in_thread(self._locked(self._snapshot_sync, sha, subpath))

    async def changed_paths(self, old_sha: str, new_sha: str) -> list[str]:
        """Paths (relative to the repository root) that differ between two commits, sorted."""
        return await urls.in_thread(self._locked(self._changed_sync, old_sha, new_sha))


# ----------------------------------------------------------------------------------------------------------
# Identity: which source wrote an inventory (docs/reconcile.md, "Several controllers on one cluster").


def _remote_identity(url: str) -> str:
    """``host/path`` of a remote URL: no scheme, user, password, port, query or fragment, no trailing
    ``.git`` or ``/``, host in lower case (https and ssh spellings of one repository agree)."""
    if urls.SCHEME.match(url):
        try:
            parts = urllib.parse.urlsplit(url)
            host, path = (parts.hostname or "").lower(), parts.path
        except ValueError:
            host, path = "", url
    else:
        scp = urls.SCP.match(url)
        host, path = (scp.group("host").lower(), scp.group("path")) if scp else ("", url)
    path = path.strip("/")
    path = path.removeprefix("~/")
    path = path.removesuffix(".git").rstrip("/")
    return f"{host}/{path}" if host else urls.redact(path)


def _local_identity(path: Path) -> str:
    """A local repository: its ``origin`` remote's identity when it has one (a person's clone and the
    controller following that remote are one source), else its absolute path."""
    try:
        repo = urls.open_local(path)
    except urls.NotARepository:
        return str(path.resolve())
    root = Path(repo.workdir or repo.path).resolve()
    try:
        origin = repo.remotes["origin"].url if "origin" in repo.remotes.names() else None
    except (KeyError, pygit2.GitError, ValueError):
        origin = None
    if not origin:
        return str(root)
    try:
        where = urls.check_url(origin)
    except urls.UnsafeURL:
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
        where = urls.check_url(text)
    except urls.UnsafeURL:
        base = _remote_identity(urls.redact(text))
    else:
        base = _local_identity(where.path) if where.path is not None else _remote_identity(where.url)
    sub = subpath.strip("/")
    return f"{base}//{sub}" if sub else base
