"""fleet.clients.source against real git repositories made with pygit2: mirror, fetch, resolve, trees, diffs."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pygit2
import pytest

from fleet.clients import source
from fleet.core import errors, model, yamlsafe
from tests.support import repository_builders as rb

T = TypeVar("T")


def run(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    return anyio.run(functools.partial(fn, *args, **kwargs))


@pytest.fixture
def upstream(tmp_path: Path) -> tuple[pygit2.Repository, str]:
    repo = rb.init(tmp_path / "upstream")
    first = rb.commit(repo, dict(rb.SAMPLE), message="first commit\n\nwith a body")
    return repo, first


def test_fetch_clones_into_a_bare_mirror_and_reads_the_commit(
    tmp_path: Path, upstream: tuple[pygit2.Repository, str]
) -> None:
    _, first = upstream
    src = source.Source(tmp_path / "upstream", state_dir=tmp_path / "state")
    run(src.fetch)
    assert src.mirror.is_relative_to(tmp_path / "state")
    assert pygit2.Repository(str(src.mirror)).is_bare
    sha = run(src.resolve, "HEAD")
    assert sha == first
    snap = run(src.snapshot, sha)
    assert snap.revision == first
    assert snap.message == "first commit"
    assert snap.author == "Fleet Tester"
    assert snap.committed_at == "2023-11-14T22:13:20Z"
    assert sorted(snap.files) == sorted(p for p in rb.SAMPLE if p != "README.md")
    assert snap.files["bundles/web/deploy.yaml"] == str(rb.SAMPLE["bundles/web/deploy.yaml"]).encode()
    assert snap.problems == ()


def test_fetch_brings_new_commits_branches_and_tags_into_the_mirror(
    tmp_path: Path, upstream: tuple[pygit2.Repository, str]
) -> None:
    repo, first = upstream
    src = source.Source(str(tmp_path / "upstream"), state_dir=tmp_path / "state")
    run(src.fetch)
    files = dict(rb.SAMPLE)
    files["bundles/web/deploy.yaml"] = rb.configmap("web-config", data="changed")
    del files["bundles/base/ns.json"]
    files["bundles/base/extra.yaml"] = rb.configmap("extra")
    second = rb.commit(repo, files, message="second")
    feature = rb.commit(repo, dict(rb.SAMPLE), message="feature", branch="feature")
    rb.tag(repo, "v1.0", first)
    rb.tag(repo, "light", second, annotated=False)
    assert run(src.resolve, "HEAD") == first  # not fetched yet
    run(src.fetch)
    assert run(src.resolve, "HEAD") == second
    assert run(src.resolve, "main") == second
    assert run(src.resolve, "refs/heads/main") == second
    assert run(src.resolve, "feature") == feature
    assert run(src.resolve, "v1.0") == first
    assert run(src.resolve, "light") == second
    assert run(src.resolve, second[:7]) == second
    assert run(src.resolve, second) == second
    snap = run(src.snapshot, second)
    assert snap.files["bundles/web/deploy.yaml"] == rb.configmap("web-config", data="changed").encode()
    assert "bundles/base/ns.json" not in snap.files
    assert run(src.changed_paths, first, second) == [
        "bundles/base/extra.yaml",
        "bundles/base/ns.json",
        "bundles/web/deploy.yaml",
    ]
    assert run(src.changed_paths, second, second) == []


def test_a_deleted_branch_disappears_from_the_mirror_on_the_next_fetch(
    tmp_path: Path, upstream: tuple[pygit2.Repository, str]
) -> None:
    repo, _ = upstream
    rb.commit(repo, dict(rb.SAMPLE), message="topic", branch="topic")
    src = source.Source(tmp_path / "upstream", state_dir=tmp_path / "state")
    run(src.fetch)
    run(src.resolve, "topic")
    repo.references.delete("refs/heads/topic")
    run(src.fetch)
    with pytest.raises(source.UnknownRevision, match="unknown revision 'topic'"):
        run(src.resolve, "topic")


def test_an_unknown_revision_is_an_error_naming_it(
    tmp_path: Path, upstream: tuple[pygit2.Repository, str]
) -> None:
    src = source.Source(tmp_path / "upstream", state_dir=tmp_path / "state")
    run(src.fetch)
    with pytest.raises(source.UnknownRevision) as info:
        run(src.resolve, "no-such-branch")
    assert str(info.value).endswith("unknown revision 'no-such-branch' (no such branch, tag or commit)")
    assert info.value.retriable is False
    with pytest.raises(source.UnknownRevision):
        run(src.resolve, "0000000000000000000000000000000000000000")
    with pytest.raises(source.UnknownRevision, match="invalid revision '--all'"):
        run(src.resolve, "--all")


def test_file_urls_work_like_local_paths(tmp_path: Path, upstream: tuple[pygit2.Repository, str]) -> None:
    _, first = upstream
    src = source.Source(f"file://{tmp_path / 'upstream'}", state_dir=tmp_path / "state")
    run(src.fetch)
    assert run(src.resolve, "main") == first


def test_read_revision_reads_a_commit_of_a_local_repository_without_a_mirror(
    tmp_path: Path, upstream: tuple[pygit2.Repository, str]
) -> None:
    repo, first = upstream
    second = rb.commit(repo, {**rb.SAMPLE, "clusters/new-1.yaml": rb.cluster_yaml("new-1")}, message="add")
    snap = run(source.read_revision, tmp_path / "upstream", "HEAD")
    assert snap.revision == second and "clusters/new-1.yaml" in snap.files
    old = run(source.read_revision, str(tmp_path / "upstream"), first[:10])
    assert old.revision == first and "clusters/new-1.yaml" not in old.files
    assert not (tmp_path / "state").exists()


def test_path_reads_the_layout_below_a_subfolder(tmp_path: Path) -> None:
    repo = rb.init(tmp_path / "mono")
    files: dict[str, str | bytes] = {f"deploy/fleet/{k}": v for k, v in rb.SAMPLE.items()}
    files["clusters/outside.yaml"] = rb.cluster_yaml("outside")
    sha = rb.commit(repo, files)
    snap = run(source.read_revision, tmp_path / "mono", "main", subpath="deploy/fleet/")
    assert snap.base == "deploy/fleet"
    assert snap.revision == sha
    assert "clusters/eu-prod-1.yaml" in snap.files
    assert "clusters/outside.yaml" not in snap.files
    src = source.Source(tmp_path / "mono", state_dir=tmp_path / "state")
    run(src.fetch)
    assert run(src.snapshot, sha, subpath="deploy/fleet").files == snap.files
    with pytest.raises(errors.InputError, match="no folder 'deploy/nope'"):
        run(source.read_revision, tmp_path / "mono", "main", subpath="deploy/nope")
    with pytest.raises(errors.InputError, match=r"--path '../x': contains \"..\""):
        run(source.read_revision, tmp_path / "mono", "main", subpath="../x")


def test_symlinks_and_submodules_in_a_git_tree_are_reported_and_never_followed(tmp_path: Path) -> None:
    host = tmp_path / "host-secret.txt"
    host.write_text("CANARY-host-file-content\n")
    repo = rb.init(tmp_path / "r")
    sub = rb.init(tmp_path / "sub")
    sub_sha = rb.commit(sub, {"x.yaml": "a: 1\n"})
    sha = rb.commit(
        repo,
        dict(rb.SAMPLE),
        links={"clusters/evil.yaml": str(host), "bundles/web/link.yaml": "../../../etc/passwd"},
        submodules={"bundles/base/vendored": sub_sha},
    )
    snap = run(source.read_revision, tmp_path / "r", sha)
    assert "clusters/evil.yaml" not in snap.files
    assert "bundles/web/link.yaml" not in snap.files
    assert [(p.path, p.line, p.message) for p in snap.problems] == [
        ("bundles/base/vendored", 1, "is a git submodule; fleet does not read submodules"),
        (
            "bundles/web/link.yaml",
            1,
            "is a symbolic link; fleet never follows links (commit the file itself)",
        ),
        ("clusters/evil.yaml", 1, "is a symbolic link; fleet never follows links (commit the file itself)"),
    ]
    text = repr(snap)
    assert "CANARY" not in text and str(host) not in text and "etc/passwd" not in text


def test_an_oversized_blob_is_refused_with_the_limit_named_and_not_read(tmp_path: Path) -> None:
    repo = rb.init(tmp_path / "r")
    big = b"a: " + b"x" * 5000 + b"\n"
    sha = rb.commit(repo, {**rb.SAMPLE, "bundles/web/big.yaml": big})
    limits = yamlsafe.Limits(max_file_bytes=4096)
    snap = run(source.read_revision, tmp_path / "r", sha, limits=limits)
    assert "bundles/web/big.yaml" not in snap.files
    assert snap.problems == (
        model.Problem("bundles/web/big.yaml", 1, "file is 5004 bytes, over the limit max_file_bytes=4096"),
    )


def test_too_many_files_or_bytes_refuse_the_whole_revision_naming_the_limit(tmp_path: Path) -> None:
    repo = rb.init(tmp_path / "r")
    files: dict[str, str | bytes] = {f"bundles/many/m{i}.yaml": rb.configmap(f"m{i}") for i in range(30)}
    sha = rb.commit(repo, files)
    with pytest.raises(yamlsafe.LimitExceeded, match=r"more than 20 files .* max_files=20"):
        run(source.read_revision, tmp_path / "r", sha, limits=yamlsafe.Limits(max_files=20))
    with pytest.raises(yamlsafe.LimitExceeded, match=r"max_total_bytes=1000"):
        run(source.read_revision, tmp_path / "r", sha, limits=yamlsafe.Limits(max_total_bytes=1000))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ext::sh -c touch% /tmp/pwned", "transport helpers such as ext:: are not allowed"),
        ("fd::17", "transport helpers such as ext:: are not allowed"),
        ("ssh://-oProxyCommand=touch%20/tmp/pwned/repo", "looks like a command-line option"),
        ("ssh://git@-oProxyCommand=x/repo", "looks like a command-line option"),
        ("-oProxyCommand=x:repo", "looks like a command-line option"),
        ("git@-oProxyCommand=x:repo", "looks like a command-line option"),
        ("ftp://example.com/repo.git", "scheme 'ftp' is not allowed"),
        ("javascript://example.com/x", "scheme 'javascript' is not allowed"),
        ("https://example.com/repo\n.git", "whitespace or control characters"),
        ("file://otherhost/srv/repo", "file:// URLs must name a local path"),
        ("https://[::1/repo.git", "not a valid URL"),
    ],
)
def test_unsafe_repository_urls_are_refused_before_git_sees_them(
    tmp_path: Path, url: str, reason: str
) -> None:
    with pytest.raises(source.UnsafeURL) as info:
        source.Source(url, state_dir=tmp_path)
    assert reason in str(info.value)
    assert not (tmp_path / "git").exists()


@pytest.mark.parametrize(
    "url",
    ["https://github.com/org/repo.git", "ssh://git@github.com/org/repo.git", "git@github.com:org/repo.git"],
)
def test_ordinary_remote_urls_are_accepted(tmp_path: Path, url: str) -> None:
    assert source.check_url(url).local is False


def test_a_path_that_is_not_a_git_repository_fails_as_not_a_git_repository(tmp_path: Path) -> None:
    with pytest.raises(source.NotARepository, match=r"^/etc/passwd: not a git repository$"):
        run(source.read_revision, "/etc/passwd", "HEAD")
    src = source.Source("/etc/passwd", state_dir=tmp_path)
    with pytest.raises(source.NotARepository) as info:
        run(src.fetch)
    assert str(info.value) == "/etc/passwd: not a git repository"
    assert "root:" not in str(info.value)
    for follow in (source.Follow(branch="main"), source.Follow(rev="HEAD")):  # what fleet serve fetches
        with pytest.raises(source.NotARepository, match=r"^/etc/passwd: not a git repository$"):
            run(src.fetch_tip, follow)
    file_url = source.Source("file:///etc/passwd", state_dir=tmp_path)
    with pytest.raises(source.NotARepository, match=r"^/etc/passwd: not a git repository$"):
        run(file_url.fetch_tip, source.Follow(branch="main"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(source.NotARepository, match="not a git repository"):
        run(source.read_revision, tmp_path / "plain", "HEAD")


def test_credentials_in_a_url_never_appear_in_errors_or_repr(tmp_path: Path) -> None:
    url = "http://fleetuser:SECRET-TOKEN-123@127.0.0.1:9/org/repo.git?token=QUERY-SECRET"
    src = source.Source(url, state_dir=tmp_path)
    assert "SECRET" not in repr(src) and "SECRET" not in str(src.location)
    assert "SECRET" not in str(src.mirror)
    with pytest.raises(errors.SourceError) as info:
        run(src.fetch)
    message = str(info.value)
    assert message.startswith("http://127.0.0.1:9/org/repo.git?token=<redacted>: fetch failed: ")
    assert "SECRET" not in message
    with pytest.raises(errors.SourceError) as info:
        run(src.fetch_tip, source.Follow(branch="main"))
    assert str(info.value).startswith("http://127.0.0.1:9/org/repo.git?token=<redacted>: fetch failed: ")
    assert "SECRET" not in str(info.value)
    assert "SECRET-TOKEN" not in (src.mirror / "config").read_text()


def test_credentials_come_from_a_file_or_a_variable_and_are_not_in_repr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  FILE-SECRET\n")
    creds = source.Credentials(username="bot", password_file=token_file)
    assert creds.secret() == "FILE-SECRET"
    assert "FILE-SECRET" not in repr(creds)
    monkeypatch.setenv("FLEET_TEST_GIT_TOKEN", "ENV-SECRET")
    assert source.Credentials(password_env="FLEET_TEST_GIT_TOKEN").secret() == "ENV-SECRET"
    with pytest.raises(errors.InputError, match="FLEET_TEST_NOT_SET is not set"):
        source.Credentials(password_env="FLEET_TEST_NOT_SET").secret()


def test_redact_strips_user_and_password_from_every_url_in_a_text() -> None:
    text = "fetch https://u:p4ss@host/a.git and ssh://git:x@h2/b then ?access_token=abc&x=1"
    assert source.redact(text) == "fetch https://host/a.git and ssh://h2/b then ?access_token=<redacted>&x=1"
