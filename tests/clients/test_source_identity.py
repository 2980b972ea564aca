"""The identity of a source, as inventories record it: stable, shared by every spelling of one repository,
and never carrying a credential."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest

from fleet.clients import source


@pytest.mark.parametrize(
    "url",
    [
        "https://git.example.com/team/gitops.git",
        "https://deploy:s3cr3t-TOKEN@Git.Example.com/team/gitops/",
        "https://git.example.com/team/gitops?private_token=s3cr3t-TOKEN#frag",
        "ssh://git@git.example.com:2222/team/gitops.git",
        "git@git.example.com:team/gitops.git",
    ],
)
def test_every_spelling_of_a_remote_names_one_source_without_its_credentials(url: str) -> None:
    assert source.identity(url) == "git.example.com/team/gitops"
    assert "s3cr3t" not in source.identity(url, subpath="deploy")


def test_the_path_option_is_part_of_the_identity() -> None:
    url = "https://git.example.com/team/gitops.git"
    assert source.identity(url, subpath="/staging/") == "git.example.com/team/gitops//staging"
    assert source.identity(url, subpath="staging") != source.identity(url, subpath="prod")


def test_a_local_clone_is_the_same_source_as_the_repository_it_was_cloned_from(tmp_path: Path) -> None:
    upstream = pygit2.init_repository(str(tmp_path / "upstream"), initial_head="main")
    clone = pygit2.init_repository(str(tmp_path / "clone"), initial_head="main")
    clone.remotes.create("origin", upstream.workdir)
    assert source.identity(tmp_path / "clone") == str((tmp_path / "upstream").resolve())
    assert source.identity(tmp_path / "upstream") == str((tmp_path / "upstream").resolve())
    https = pygit2.init_repository(str(tmp_path / "https-clone"), initial_head="main")
    https.remotes.create("origin", "https://user:s3cr3t@git.example.com/team/gitops.git")
    assert source.identity(tmp_path / "https-clone") == "git.example.com/team/gitops"
