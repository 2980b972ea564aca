"""End-to-end: what the real `fleet serve` does with git edge cases, against `fleet sim` clusters and real
repositories. A tag named like the followed branch, a restart while the repository is unreachable (with
and without a mirror), a tip over a content limit, and what `fleet validate`/`sync` say about the latter.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest

from fleet.sim import testing
from tests.support import serve
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, run_fleet, send

pytestmark = pytest.mark.slow

CLUSTERS = ["eu-1", "us-1"]


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=CLUSTERS) as handle:
        yield handle


@pytest.fixture
def gitops(tmp_path: Path) -> GitOpsRepo:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("eu-1", labels={"region": "eu"})
    repo.cluster("us-1", labels={"region": "us"})
    repo.bundle("settings", [configmap("settings", colour="blue")], namespace="apps", selector={})
    repo.commit("first")
    return repo


def start(tmp_path: Path, repo: GitOpsRepo, sim: testing.SimHandle, *args: str, name: str = "serve") -> Any:
    return serve.serving(
        repo=repo.root,
        kubeconfig=sim.kubeconfig,
        state_dir=tmp_path / "state",
        log=tmp_path / f"{name}.log",
        args=["--interval", "1s", *args],
    )


def all_synced_at(sha: str) -> Any:
    def check(doc: dict[str, Any]) -> bool:
        clusters = doc.get("clusters") or {}
        return bool(clusters) and all(
            c["state"] == "Synced" and c["revision"] == sha for c in clusters.values()
        )

    return check


def colour(sim: testing.SimHandle, cluster: str) -> str | None:
    found = live_objects(sim, cluster, namespace="apps").get("settings")
    return None if found is None else found["data"].get("colour")


def messages(doc: dict[str, Any]) -> list[str]:
    return [e["message"] for e in doc["errors"]]


def mirror(tmp_path: Path) -> pygit2.Repository:
    (found,) = (tmp_path / "state" / "git").glob("mirror-*.git")
    return pygit2.Repository(str(found))


def test_serve_follows_the_branch_never_a_tag_of_the_same_name_and_fetches_only_its_tip(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    first = str(gitops.repo.head.target)
    gitops.bundle("settings", [configmap("settings", colour="green")], namespace="apps", selector={})
    second = gitops.commit("green")
    gitops.repo.references.create("refs/tags/main", pygit2.Oid(hex=first))  # `git tag main <old commit>`
    with start(tmp_path, gitops, sim, "--branch", "main") as fleet:
        fleet.wait_for(all_synced_at(second), timeout=45, what="the branch's tip, not the tag")
    assert colour(sim, "eu-1") == "green"
    held = mirror(tmp_path)
    assert pygit2.Oid(hex=first) not in held.odb  # the tip alone, no history
    assert "refs/tags/main" not in held.references


def test_serve_pinned_to_a_name_that_is_a_branch_and_a_tag_applies_nothing_and_says_why(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    first = str(gitops.repo.head.target)
    gitops.repo.references.create("refs/tags/main", pygit2.Oid(hex=first))
    with start(tmp_path, gitops, sim, "--rev", "main") as fleet:
        doc = fleet.wait_for(lambda d: bool(d["errors"]), timeout=45, what="an error in the status")
        assert fleet.get("/readyz").status_code != 200
    text = " ".join(messages(doc))
    assert "ambiguous revision 'main'" in text and "refs/tags/main" in text
    assert "nothing is enforced" in text
    assert colour(sim, "eu-1") is None


def test_after_a_restart_with_the_repository_unreachable_the_last_good_revision_is_enforced(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim, name="first") as fleet:
        fleet.wait_for(all_synced_at(head), what="first run converged")
        fleet.kill()
    gitops.root.rename(gitops.root.with_name("repo-away"))  # the git server is gone
    drifted = send(
        sim, "eu-1", "PATCH", "/api/v1/namespaces/apps/configmaps/settings", {"data": {"colour": "x"}}
    )
    assert drifted.status_code == 200
    with start(tmp_path, gitops, sim, name="second") as fleet:
        deadline = time.monotonic() + 45
        while colour(sim, "eu-1") != "blue" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert colour(sim, "eu-1") == "blue", fleet.logs()[-3000:]  # drift repaired from the mirror
        doc = fleet.wait_for(
            lambda d: any("enforcing" in m for m in messages(d)), timeout=30, what="enforcing in the status"
        )
        doc = fleet.wait_for(all_synced_at(head), timeout=30, what="Synced at the last good revision")
        assert fleet.get("/readyz").status_code == 200
    (message,) = messages(doc)
    assert message.startswith("fetch failed")
    assert f"enforcing the last good revision {head[:12]} from the local mirror" in message
    assert "committed " in message and "fetched " in message
    assert doc["revision"] == head and doc["committedAt"] and doc["fetchedAt"]


def test_after_a_restart_with_neither_repository_nor_mirror_status_says_nothing_is_enforced(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim, name="first") as fleet:
        fleet.wait_for(all_synced_at(head), what="first run converged")
        fleet.kill()
    gitops.root.rename(gitops.root.with_name("repo-away"))
    shutil.rmtree(tmp_path / "state" / "git")  # the mirror is lost too; the state database remains
    with start(tmp_path, gitops, sim, name="second") as fleet:
        doc = fleet.wait_for(
            lambda d: any("nothing is enforced" in m for m in messages(d)),
            timeout=45,
            what="nothing is enforced",
        )
        assert fleet.get("/readyz").status_code != 200
    assert any(m.startswith("fetch failed") for m in messages(doc))
    for name, cluster in doc["clusters"].items():
        assert cluster["state"] != "Synced", name
        assert "nothing is enforced" in (cluster["lastError"] or ""), name


def test_after_a_restart_with_a_corrupt_mirror_and_no_repository_the_controller_stays_up_and_says_why(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim, name="first") as fleet:
        fleet.wait_for(all_synced_at(head), what="first run converged")
        fleet.kill()
    gitops.root.rename(gitops.root.with_name("repo-away"))
    for pack in (tmp_path / "state" / "git").glob("mirror-*.git/objects/pack/*.pack"):
        data = bytearray(pack.read_bytes())
        for i in range(32, len(data) - 32):
            data[i] ^= 0x5A
        pack.write_bytes(bytes(data))
    with start(tmp_path, gitops, sim, name="second") as fleet:
        doc = fleet.wait_for(
            lambda d: any("nothing is enforced" in m for m in messages(d)),
            timeout=45,
            what="nothing is enforced",
        )
        time.sleep(2)  # a few more fetch rounds: the process stays up
        assert fleet.proc.poll() is None
    assert any("cannot read the local mirror" in m for m in messages(doc)), messages(doc)
    assert all(c["state"] != "Synced" for c in doc["clusters"].values())


def _commit_over_max_files(gitops: GitOpsRepo) -> str:
    """A commit adding 20,001 files below bundles/bulk/ (one blob, built in the object database)."""
    repo = gitops.repo
    head = repo[repo.head.target]
    assert isinstance(head, pygit2.Commit)
    blob = repo.create_blob(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bulk}\n")
    bulk = repo.TreeBuilder()
    for i in range(20_001):
        bulk.insert(f"cm-{i:05}.yaml", blob, pygit2.enums.FileMode.BLOB)
    bundles = repo.TreeBuilder(repo[head.tree["bundles"].id])
    bundles.insert("bulk", bulk.write(), pygit2.enums.FileMode.TREE)
    root = repo.TreeBuilder(head.tree)
    root.insert("bundles", bundles.write(), pygit2.enums.FileMode.TREE)
    sig = pygit2.Signature("Test", "test@example.com")
    return str(repo.create_commit("HEAD", sig, sig, "too many files", root.write(), [head.id]))


def test_a_tip_over_max_files_is_a_content_limit_of_that_revision_not_a_fetch_failure(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    first = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(all_synced_at(first), what="first revision")
        big = _commit_over_max_files(gitops)
        doc = fleet.wait_for(lambda d: bool(d["errors"]), timeout=45, what="the refusal in the status")
        (message,) = messages(doc)
        assert "fetch failed" not in message
        assert f"revision {big[:12]} is refused as a whole" in message
        assert "content limit max_files=20000" in message
        assert "last good revision stays enforced" in message
        assert all(c["state"] == "Synced" and c["revision"] == first for c in doc["clusters"].values())
        assert fleet.metric("fleet_fetches_total") > 0
        gitops.bundle("settings", [configmap("settings", colour="teal")], namespace="apps", selector={})
        fixed = gitops.commit("back under the limit")
        doc = fleet.wait_for(all_synced_at(fixed), timeout=45, what="the next good revision")
    assert doc["errors"] == []
    assert colour(sim, "eu-1") == "teal"


def test_the_cli_names_a_content_limit_of_the_revision_it_read(tmp_path: Path, gitops: GitOpsRepo) -> None:
    big = _commit_over_max_files(gitops)
    for command, code in (("validate", 1), ("sync", 2)):
        out = run_fleet(command, str(gitops.root), "--rev", "HEAD", timeout=60)
        text = out.stdout + out.stderr
        assert out.returncode == code, text
        assert f"revision {big[:12]} is refused as a whole" in text, command
        assert "content limit max_files=20000" in text and "fetch" not in text, command


@pytest.mark.parametrize(
    ("repo", "why"),
    [
        ("ext::sh -c touch% {canary}", "transport helpers such as ext:: are not allowed"),
        ("ssh://-oProxyCommand=touch%20{canary}/repo", "looks like a command-line option"),
        ("ftp://example.com/repo.git", "scheme 'ftp' is not allowed"),
    ],
)
def test_serve_refuses_an_unsafe_repository_url_at_start_and_runs_nothing(
    tmp_path: Path, repo: str, why: str
) -> None:
    canary = tmp_path / "pwned"
    out = run_fleet("serve", "--repo", repo.format(canary=canary), "--state-dir", str(tmp_path / "s"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert why in out.stderr and "Traceback" not in out.stderr
    assert not canary.exists() and not (tmp_path / "s").exists()
