"""What ``--rev`` and ``--branch`` name, resolved without git's guessing (docs/repository.md): a commit
id, a branch or tag name, ``refs/...`` or ``HEAD`` with ``~N``/``^N``; a name that is both a branch and a
tag is refused naming both. `Follow`: the branch (``refs/heads/<branch>`` only) or the pinned revision
that `fleet serve` follows.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pygit2
import pygit2.enums

from fleet.clients.source import urls
from fleet.core import errors

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

HEX = re.compile(r"[0-9a-f]{4,64}")
FULL_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_ANCESTRY = re.compile(r"(?:[~^][0-9]*)+$")


def split_rev(rev: str, *, where: str) -> tuple[str, str]:
    """`rev` as (base, ancestry suffix): the base is HEAD, ``refs/...`` or a name or hex id, the suffix a
    run of ``~N``/``^N``. Any other syntax (``@{...}``, ``:path``, ``..``, ``^{type}``) is refused."""
    if not rev or rev != rev.strip() or rev.startswith("-") or any(ord(c) < 0x20 or c == "\x7f" for c in rev):
        raise urls.UnknownRevision(f"{where}: invalid revision {rev!r}")
    m = _ANCESTRY.search(rev)
    suffix = m.group(0) if m else ""
    base = rev[: len(rev) - len(suffix)]
    full = base if base.startswith("refs/") else f"refs/heads/{base}"
    if not base or base.startswith("-") or (base != "HEAD" and not pygit2.reference_is_valid_name(full)):
        raise urls.UnknownRevision(f"{where}: unsupported revision {rev!r}: use {REV_FORMS}")
    return base, suffix


def ref_commit(repo: pygit2.Repository, name: str) -> pygit2.Oid | None:
    """What the ref `name` points at (symbolic refs followed), or None when there is no such ref."""
    ref = repo.references.get(name)
    target = None if ref is None else ref.resolve().target
    return target if isinstance(target, pygit2.Oid) else None


def ambiguous(where: str, rev: str, candidates: list[str]) -> urls.AmbiguousRevision:
    names = " and ".join(candidates)
    refs = [c.split()[-1] for c in candidates if "refs/" in c]
    hint = " or ".join(refs) + (" (or the full commit id)" if len(refs) < len(candidates) else "")
    return urls.AmbiguousRevision(f"{where}: ambiguous revision {rev!r}: it names {names}; write {hint}")


def _resolve_base(repo: pygit2.Repository, base: str, *, rev: str, where: str) -> pygit2.Oid:
    if base == "HEAD":
        try:
            head = ref_commit(repo, "HEAD")
        except (pygit2.GitError, KeyError):
            head = None
        if head is None:
            raise urls.UnknownRevision(f"{where}: unknown revision {rev!r} (HEAD names no commit)")
        return head
    if base.startswith("refs/"):
        oid = ref_commit(repo, base)
        if oid is None:
            raise urls.UnknownRevision(f"{where}: unknown revision {rev!r} (no such ref)")
        return oid
    found: list[tuple[str, pygit2.Oid]] = []
    for kind, ref in (("the branch", f"refs/heads/{base}"), ("the tag", f"refs/tags/{base}")):
        oid = ref_commit(repo, ref)
        if oid is not None:
            found.append((f"{kind} {ref}", oid))
    if HEX.fullmatch(base):
        try:
            obj = repo.get(base)
        except ValueError:  # AmbiguousError: the prefix names several objects
            if not found:
                raise urls.AmbiguousRevision(
                    f"{where}: ambiguous revision {rev!r} (ambiguous short id: give more hex digits)"
                ) from None
            obj = None
        if obj is not None:
            kind = "the commit" if isinstance(obj, pygit2.Commit) else "the object"
            found.append((f"{kind} {obj.id}", obj.id))
    if len(found) > 1:
        raise ambiguous(where, rev, [f for f, _ in found])
    if not found:
        hint = ""
        if ref_commit(repo, f"refs/remotes/{base}") is not None:
            hint = f"; a remote-tracking branch: write refs/remotes/{base}"
        raise urls.UnknownRevision(f"{where}: unknown revision {rev!r} (no such branch, tag or commit{hint})")
    return found[0][1]


def resolve_rev(repo: pygit2.Repository, rev: str, *, where: str) -> pygit2.Commit:
    """The commit `rev` names in `repo`, by the rules of `REV_FORMS`; refuses ambiguous names."""
    base, suffix = split_rev(rev, where=where)
    oid = _resolve_base(repo, base, rev=rev, where=where)
    try:
        commit = repo[oid].peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        raise urls.UnknownRevision(f"{where}: revision {rev!r} does not name a commit") from None
    if suffix:
        try:  # git's ancestry syntax, from an exact commit id: nothing left to guess
            commit = repo.revparse_single(f"{commit.id}{suffix}").peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            shallow = " (the mirror holds no history)" if repo.is_shallow else ""
            raise urls.UnknownRevision(
                f"{where}: unknown revision {rev!r} (no such ancestor{shallow})"
            ) from None
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
                split_rev(self.rev, where="--rev")
            except urls.UnknownRevision as e:
                raise errors.InputError(str(e)) from None

    @property
    def keep_ref(self) -> str:
        """The mirror's ref that holds the last good revision of what is followed."""
        if self.rev is None:
            return f"refs/fleet/last-good/branch/{self.branch}"
        return f"refs/fleet/last-good/rev-{hashlib.sha256(self.rev.encode()).hexdigest()[:16]}"

    def __str__(self) -> str:
        return f"branch {self.branch}" if self.rev is None else f"revision {self.rev}"
