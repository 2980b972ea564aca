"""Which commit a revision names, with no guessing: `--rev` for the commands that read a local repository,
and `--branch`/`--rev` for the controller's mirror (local repositories and smart HTTP), fetching only
the commit that is followed. Real repositories made with pygit2; the HTTP remote is `git http-backend`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
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


def run(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    return anyio.run(functools.partial(fn, *args, **kwargs))


def history(repo: pygit2.Repository, n: int, *, branch: str = "main") -> list[str]:
    """`n` commits on `branch`, each changing one manifest; their ids, oldest first."""
    shas = []
    for i in range(n):
        files = {**rb.SAMPLE, "bundles/web/deploy.yaml": rb.configmap("web-config", data=f"v{i}")}
        shas.append(rb.commit(repo, files, message=f"commit {i}", branch=branch, when=1_700_000_000 + i))
    return shas


@pytest.fixture
def tagged(tmp_path: Path) -> tuple[Path, list[str]]:
    """Branch `main` at its third commit, and a tag also named `main` at the first (an old commit)."""
    root = tmp_path / "upstream"
    repo = rb.init(root)
    shas = history(repo, 3)
    rb.tag(repo, "main", shas[0])
    return root, shas


# -- --rev of the commands that read a local repository ------------------------------------------------


def test_a_name_that_is_both_a_branch_and_a_tag_is_refused_and_full_refs_pick_each(
    tagged: tuple[Path, list[str]],
) -> None:
    root, shas = tagged
    with pytest.raises(source.AmbiguousRevision) as info:
        run(source.read_revision, root, "main")
    message = str(info.value)
    assert "ambiguous revision 'main'" in message
    assert "refs/heads/main" in message and "refs/tags/main" in message
    assert info.value.retriable is False
    assert run(source.read_revision, root, "refs/heads/main").revision == shas[2]
    assert run(source.read_revision, root, "refs/tags/main").revision == shas[0]


def test_every_documented_form_of_a_revision_names_one_commit(tmp_path: Path) -> None:
    repo = rb.init(tmp_path / "r")
    shas = history(repo, 3)
    feature = rb.commit(repo, dict(rb.SAMPLE), message="feature", branch="feature")
    rb.tag(repo, "v1.0", shas[1])
    rb.tag(repo, "light", shas[0], annotated=False)
    expected = {
        "HEAD": shas[2],
        "main": shas[2],
        "feature": feature,
        "v1.0": shas[1],
        "light": shas[0],
        "refs/heads/feature": feature,
        "refs/tags/v1.0": shas[1],
        shas[1]: shas[1],
        shas[1][:7]: shas[1],
        "HEAD~1": shas[1],
        "main~2": shas[0],
        "main^": shas[1],
        "v1.0^1": shas[0],
        f"{shas[2][:10]}~2": shas[0],
    }
    for rev, sha in expected.items():
        assert run(source.read_revision, tmp_path / "r", rev).revision == sha, rev


@pytest.mark.parametrize(
    "rev",
    [
        ":/commit 0",
        "HEAD:clusters",
        "main@{1}",
        "main..feature",
        "main^{tree}",
        "HEAD@{yesterday}",
        "main:bundles",
    ],
)
def test_revision_syntax_beyond_the_documented_forms_is_refused_with_what_is_accepted(
    tmp_path: Path, rev: str
) -> None:
    repo = rb.init(tmp_path / "r")
    history(repo, 2)
    with pytest.raises(source.UnknownRevision) as info:
        run(source.read_revision, tmp_path / "r", rev)
    assert f"unsupported revision {rev!r}" in str(info.value)
    assert "a branch or tag name" in str(info.value)


def test_a_short_id_that_is_also_a_branch_name_is_ambiguous(tmp_path: Path) -> None:
    repo = rb.init(tmp_path / "r")
    shas = history(repo, 2)
    short = shas[0][:8]
    rb.commit(repo, dict(rb.SAMPLE), message="hex-named branch", branch=short)
    with pytest.raises(source.AmbiguousRevision, match=rf"refs/heads/{short}.*commit {shas[0]}"):
        run(source.read_revision, tmp_path / "r", short)


def test_a_remote_tracking_branch_needs_its_full_ref_and_the_error_says_so(tmp_path: Path) -> None:
    repo = rb.init(tmp_path / "r")
    shas = history(repo, 1)
    repo.references.create("refs/remotes/origin/main", pygit2.Oid(hex=shas[0]))
    with pytest.raises(source.UnknownRevision, match="write refs/remotes/origin/main"):
        run(source.read_revision, tmp_path / "r", "origin/main")
    assert run(source.read_revision, tmp_path / "r", "refs/remotes/origin/main").revision == shas[0]


@pytest.mark.slow  # starts processes: python -m fleet.cli
@pytest.mark.parametrize("command", ["validate", "plan", "render", "sync", "diff"])
def test_the_commands_refuse_an_ambiguous_rev_and_their_help_says_what_rev_takes(
    tagged: tuple[Path, list[str]], command: str
) -> None:
    root, _ = tagged
    extra = ["--cluster", "eu-prod-1"] if command == "render" else []
    out = run_fleet(command, str(root), "--rev", "main", *extra, timeout=60)
    assert out.returncode in (1, 2), out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "ambiguous revision 'main'" in text and "refs/tags/main" in text
    assert "Traceback" not in text
    shown = run_fleet(command, "--help", timeout=60).stdout
    help_text = " ".join(shown.replace("│", " ").split())  # unwrapped from typer's boxes
    assert "refs/heads/NAME" in help_text and "both a branch and a tag" in help_text


# -- the controller's mirror: following a branch, pinning a revision, fetching only the tip ------------


def test_following_a_branch_takes_the_branch_never_a_tag_of_the_same_name(
    tmp_path: Path, tagged: tuple[Path, list[str]]
) -> None:
    root, shas = tagged
    src = source.Source(root, state_dir=tmp_path / "state")
    assert run(src.fetch_tip, source.Follow(branch="main")) == shas[2]
    assert run(src.snapshot, shas[2]).revision == shas[2]
    mirror = pygit2.Repository(str(src.mirror))
    assert "refs/tags/main" not in mirror.references


def test_the_first_fetch_of_a_long_local_history_copies_only_the_followed_tip(tmp_path: Path) -> None:
    repo = rb.init(tmp_path / "upstream")
    shas = history(repo, 40)
    rb.commit(repo, dict(rb.SAMPLE), message="elsewhere", branch="other")
    src = source.Source(tmp_path / "upstream", state_dir=tmp_path / "state")
    follow = source.Follow(branch="main")
    assert run(src.fetch_tip, follow) == shas[-1]
    mirror = pygit2.Repository(str(src.mirror))
    assert pygit2.Oid(hex=shas[-1]) in mirror.odb
    assert all(pygit2.Oid(hex=s) not in mirror.odb for s in shas[:-1])
    assert mirror.is_shallow
    assert set(mirror.references) == {"refs/heads/main"}
    newer = history(repo, 1)[0]
    assert run(src.fetch_tip, follow) == newer
    assert run(src.changed_paths, shas[-1], newer) == ["bundles/web/deploy.yaml"]
    assert (
        run(src.snapshot, newer).files["bundles/web/deploy.yaml"]
        == rb.configmap("web-config", data="v0").encode()
    )


def test_a_pinned_revision_of_a_local_repository_is_resolved_there_and_copied_alone(
    tmp_path: Path, tagged: tuple[Path, list[str]]
) -> None:
    root, shas = tagged
    src = source.Source(root, state_dir=tmp_path / "state")
    assert run(src.fetch_tip, source.Follow(rev="refs/tags/main")) == shas[0]
    assert run(src.fetch_tip, source.Follow(rev=shas[1][:9])) == shas[1]
    with pytest.raises(source.AmbiguousRevision):
        run(src.fetch_tip, source.Follow(rev="main"))
    mirror = pygit2.Repository(str(src.mirror))
    assert pygit2.Oid(hex=shas[2]) not in mirror.odb


def test_a_missing_branch_is_an_error_naming_it(tmp_path: Path, tagged: tuple[Path, list[str]]) -> None:
    root, _ = tagged
    src = source.Source(root, state_dir=tmp_path / "state")
    with pytest.raises(source.UnknownRevision, match="no branch 'release'"):
        run(src.fetch_tip, source.Follow(branch="release"))


def test_the_last_good_revision_is_kept_in_the_mirror_per_followed_branch_or_revision(
    tmp_path: Path, tagged: tuple[Path, list[str]]
) -> None:
    root, shas = tagged
    follow = source.Follow(branch="main")
    src = source.Source(root, state_dir=tmp_path / "state")
    assert run(src.last_good, follow) is None  # no mirror yet
    run(src.fetch_tip, follow)
    assert run(src.last_good, follow) is None  # fetched is not yet good
    run(src.keep, follow, shas[2])
    again = source.Source(root, state_dir=tmp_path / "state")  # a restarted controller
    assert run(again.last_good, follow) == shas[2]
    assert run(again.last_good, source.Follow(branch="other")) is None
    assert run(again.last_good, source.Follow(rev="v9")) is None
    assert run(again.snapshot, shas[2]).revision == shas[2]


@pytest.mark.parametrize(
    ("branch", "why"),
    [
        ("a..b", "not a valid branch name"),
        ("main~1", "not a valid branch name"),
        ("-main", "not a valid branch name"),
        ("refs/tags/v1", "give the branch's name"),
        ("refs/heads/main", "give the branch's name"),
        ("", "not a valid branch name"),
    ],
)
def test_a_branch_that_is_not_a_branch_name_is_refused(branch: str, why: str) -> None:
    with pytest.raises(errors.InputError, match=why):
        source.Follow(branch=branch)


# -- the same over smart HTTP: shallow fetches, names advertised by the remote -------------------------


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[str, pygit2.Repository, list[str]]]:
    served = tmp_path / "served"
    repo = rb.init(served / "fleet.git", bare=True)
    shas = history(repo, 5)
    rb.tag(repo, "main", shas[0])
    rb.tag(repo, "v1.0", shas[1])
    with githttp.serving(served) as url:
        yield f"{url}/fleet.git", repo, shas


def _http_source(tmp_path: Path, url: str) -> source.Source:
    token = tmp_path / "token"
    token.write_text(githttp.TOKEN)
    creds = source.Credentials(username=githttp.USER, password_file=token)
    return source.Source(url, state_dir=tmp_path / "state", credentials=creds)


@pytest.mark.slow  # starts processes: git-http-backend
def test_a_remote_branch_is_fetched_shallow_and_never_confused_with_a_tag(
    tmp_path: Path, remote: tuple[str, pygit2.Repository, list[str]]
) -> None:
    url, repo, shas = remote
    src = _http_source(tmp_path, url)
    follow = source.Follow(branch="main")
    assert run(src.fetch_tip, follow) == shas[-1]
    mirror = pygit2.Repository(str(src.mirror))
    assert mirror.is_shallow
    assert all(pygit2.Oid(hex=s) not in mirror.odb for s in shas[:-1])
    newer = history(repo, 1)[0]
    assert run(src.fetch_tip, follow) == newer
    assert run(src.changed_paths, shas[-1], newer) == ["bundles/web/deploy.yaml"]
    repo.references.delete("refs/heads/main")
    with pytest.raises(source.UnknownRevision, match="no branch 'main'"):
        run(src.fetch_tip, follow)


@pytest.mark.slow  # starts processes: git-http-backend
def test_a_pinned_remote_revision_is_resolved_from_what_the_remote_advertises(
    tmp_path: Path, remote: tuple[str, pygit2.Repository, list[str]]
) -> None:
    url, _, shas = remote
    src = _http_source(tmp_path, url)
    assert run(src.fetch_tip, source.Follow(rev="v1.0")) == shas[1]
    assert run(src.fetch_tip, source.Follow(rev="refs/tags/main")) == shas[0]
    assert run(src.fetch_tip, source.Follow(rev="refs/heads/main")) == shas[-1]
    assert run(src.fetch_tip, source.Follow(rev="HEAD")) == shas[-1]
    # A commit no ref points at: fetched by id, or with the history when the server refuses that.
    assert run(src.fetch_tip, source.Follow(rev=shas[2])) == shas[2]
    with pytest.raises(source.AmbiguousRevision, match=r"refs/heads/main.*refs/tags/main"):
        run(src.fetch_tip, source.Follow(rev="main"))
    with pytest.raises(source.UnknownRevision, match="full commit id"):
        run(src.fetch_tip, source.Follow(rev=shas[3][:8]))
    with pytest.raises(source.UnknownRevision, match="no branch or tag 'v2'"):
        run(src.fetch_tip, source.Follow(rev="v2"))
