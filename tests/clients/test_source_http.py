"""fleet.clients.source over smart HTTP with authentication: a real `git http-backend` behind a small HTTP server
on 127.0.0.1 that demands Basic credentials (`tests.support.githttp`). Checks that credentials from a
file, a variable or the URL work, that refusals are clear, and that no secret and no response body ever
reaches a message or the mirror's configuration."""

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
from tests.support.githttp import TOKEN, USER

T = TypeVar("T")


def run(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    return anyio.run(functools.partial(fn, *args, **kwargs))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str]]:
    root = tmp_path_factory.mktemp("served")
    repo = rb.init(root / "fleet.git", bare=True)
    sha = rb.commit(repo, dict(rb.SAMPLE), message="served commit")
    with githttp.serving(root) as url:
        yield url, root, sha


@pytest.mark.slow  # starts processes: git-http-backend
def test_a_token_from_a_file_authenticates_the_fetch(tmp_path: Path, server: tuple[str, Path, str]) -> None:
    url, _, sha = server
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    src = source.Source(
        f"{url}/fleet.git",
        state_dir=tmp_path / "state",
        credentials=source.Credentials(username=USER, password_file=token_file),
    )
    run(src.fetch)
    assert run(src.resolve, "HEAD") == sha
    snap = run(src.snapshot, sha)
    assert snap.message == "served commit" and "clusters/eu-prod-1.yaml" in snap.files
    assert TOKEN not in (src.mirror / "config").read_text()


@pytest.mark.slow  # starts processes: git-http-backend
def test_a_token_from_a_variable_authenticates_the_fetch(
    tmp_path: Path, server: tuple[str, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _, sha = server
    monkeypatch.setenv("FLEET_TEST_GIT_TOKEN", TOKEN)
    src = source.Source(
        f"{url}/fleet.git",
        state_dir=tmp_path / "state",
        credentials=source.Credentials(username=USER, password_env="FLEET_TEST_GIT_TOKEN"),
    )
    run(src.fetch)
    assert run(src.resolve, "main") == sha


@pytest.mark.slow  # starts processes: git-http-backend
def test_credentials_in_the_url_work_and_stay_out_of_messages_and_the_mirror(
    tmp_path: Path, server: tuple[str, Path, str]
) -> None:
    url, _, sha = server
    with_creds = url.replace("http://", f"http://{USER}:{TOKEN}@") + "/fleet.git"
    src = source.Source(with_creds, state_dir=tmp_path / "state")
    assert TOKEN not in repr(src)
    run(src.fetch)
    assert run(src.resolve, "HEAD") == sha
    assert TOKEN not in (src.mirror / "config").read_text()
    run(src.fetch)  # a second fetch still authenticates


def test_a_wrong_token_is_refused_without_leaking_it_or_the_response_body(
    tmp_path: Path, server: tuple[str, Path, str]
) -> None:
    url, _, _ = server
    token_file = tmp_path / "token"
    token_file.write_text("WRONG-TOKEN-777")
    src = source.Source(
        f"{url}/fleet.git",
        state_dir=tmp_path / "state",
        credentials=source.Credentials(username=USER, password_file=token_file),
    )
    with pytest.raises(errors.SourceError) as info:
        run(src.fetch)
    message = str(info.value)
    assert message.startswith(f"{url}/fleet.git: fetch failed: ")
    assert "WRONG-TOKEN" not in message and "SECRET-BODY" not in message
    assert info.value.retriable is True


def test_no_credentials_against_a_protected_repository_says_authentication_is_required(
    tmp_path: Path, server: tuple[str, Path, str]
) -> None:
    url, _, _ = server
    src = source.Source(f"{url}/fleet.git", state_dir=tmp_path / "state")
    with pytest.raises(errors.SourceError) as info:
        run(src.fetch)
    assert "authentication required" in str(info.value)
    assert "SECRET-BODY" not in str(info.value)


def test_a_server_error_body_never_reaches_the_message(tmp_path: Path, server: tuple[str, Path, str]) -> None:
    url, _, _ = server
    src = source.Source(f"{url}/broken/fleet.git", state_dir=tmp_path / "state")
    with pytest.raises(errors.SourceError) as info:
        run(src.fetch)
    assert "SECRET-BODY" not in str(info.value)
    assert str(info.value).startswith(f"{url}/broken/fleet.git: fetch failed: ")


@pytest.mark.slow  # starts processes: git-http-backend
def test_new_commits_arrive_over_http(tmp_path: Path, server: tuple[str, Path, str]) -> None:
    url, root, first = server
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    src = source.Source(
        f"{url}/fleet.git",
        state_dir=tmp_path / "state",
        credentials=source.Credentials(username=USER, password_file=token_file),
    )
    run(src.fetch)
    upstream = pygit2.Repository(str(root / "fleet.git"))
    second = rb.commit(
        upstream, {**rb.SAMPLE, "clusters/new-1.yaml": rb.cluster_yaml("new-1")}, message="more"
    )
    try:
        run(src.fetch)
        assert run(src.resolve, "HEAD") == second
        assert run(src.changed_paths, first, second) == ["clusters/new-1.yaml"]
    finally:
        upstream.references["refs/heads/main"].set_target(first)
