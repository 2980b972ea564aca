"""End-to-end: no revision's content ends the real `fleet serve` (issue 13, item 5). Keys that YAML 1.1
reads as booleans or numbers are applied as Kubernetes writes them; a null key fails its bundle with
PATH:LINE; and an unexpected error while reading a revision (a bug, injected) refuses that revision
with the error in status while the controller keeps running and enforcing the last good revision."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.sim import testing
from tests.support import serve
from tests.support.reconcile import GitOpsRepo, configmap, live_objects

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


def start(tmp_path: Path, repo: GitOpsRepo, sim: testing.SimHandle, env: dict[str, str] | None = None) -> Any:
    return serve.serving(
        repo=repo.root,
        kubeconfig=sim.kubeconfig,
        state_dir=tmp_path / "state",
        log=tmp_path / "serve.log",
        args=["--interval", "1s"],
        env=env,
    )


def synced_at(sha: str) -> Any:
    def check(doc: dict[str, Any]) -> bool:
        clusters = doc.get("clusters") or {}
        return bool(clusters) and all(
            c["state"] == "Synced" and c["revision"] == sha for c in clusters.values()
        )

    return check


def countries(sim: testing.SimHandle, cluster: str) -> Any:
    return live_objects(sim, cluster, namespace="apps").get("countries", {}).get("data")


@pytest.mark.slow
def test_keys_yaml_reads_as_booleans_or_numbers_are_applied_as_kubernetes_writes_them(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(synced_at(str(gitops.repo.head.target)), what="first revision")
        gitops.write(
            "bundles/settings/manifests/countries.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: countries}\n"
            "data: {SE: Sweden, NO: Norway, 9000: port}\n",
        )
        second = gitops.commit("countries")
        doc = fleet.wait_for(synced_at(second), what="the countries revision Synced")
        assert fleet.proc.poll() is None
    assert doc["errors"] == []
    for cluster in CLUSTERS:
        assert countries(sim, cluster) == {"SE": "Sweden", "false": "Norway", "9000": "port"}


@pytest.mark.slow
def test_a_null_key_fails_its_bundle_with_path_and_line_and_the_controller_keeps_running(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    first = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(synced_at(first), what="first revision")
        gitops.write(
            "bundles/settings/manifests/countries.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: countries}\ndata: {~: a, b: c}\n",
        )
        broken = gitops.commit("null key")
        doc = fleet.wait_for(
            lambda d: (
                d["revision"] == broken and d["clusters"]["us-1"]["bundles"]["settings"]["state"] == "Failed"
            ),
            what="settings Failed at the broken revision",
        )
        assert fleet.proc.poll() is None
    assert {
        "path": "bundles/settings/manifests/countries.yaml",
        "line": 4,
        "message": "invalid YAML: a mapping key that is null (~, null or nothing) cannot be a JSON key "
        "(Kubernetes refuses it; quote it)",
    } in doc["errors"]
    assert doc["clusters"]["eu-1"]["bundles"]["settings"]["revision"] == first


@pytest.mark.slow
def test_an_unexpected_error_reading_a_revision_is_its_error_and_the_last_good_revision_stays(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    first = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim, env=serve.injecting("render-bug")) as fleet:
        fleet.wait_for(synced_at(first), what="first revision")
        gitops.bundle("bug", [configmap("bug", x="y")], namespace="apps", selector={})
        gitops.bundle("settings", [configmap("settings", colour="red")], namespace="apps", selector={})
        buggy = gitops.commit("a revision fleet cannot read (injected bug)")
        doc = fleet.wait_for(lambda d: d["revision"] == buggy, what="the buggy revision refused")
        ((path, line, message),) = [(e["path"], e["line"], e["message"]) for e in doc["errors"]]
        assert (path, line) == (".", 1)
        assert re.fullmatch(
            r"internal error ZeroDivisionError at pipeline\.py:\d+ while reading this revision: refused as a "
            r"whole, the last good revision stays enforced \(a bug in fleet: the controller log has the "
            r"details\)",
            message,
        ), message
        assert all(c["revision"] == first for c in doc["clusters"].values())
        for cluster in CLUSTERS:
            assert live_objects(sim, cluster, namespace="apps")["settings"]["data"] == {"colour": "blue"}
        gitops.remove("bundles/bug")
        fixed = gitops.commit("without the bug")
        fleet.wait_for(synced_at(fixed), what="the next good revision Synced")
        assert fleet.proc.poll() is None
        assert "ZeroDivisionError" in fleet.logs() and "Traceback" not in fleet.logs()
    for cluster in CLUSTERS:
        assert live_objects(sim, cluster, namespace="apps")["settings"]["data"] == {"colour": "red"}


@pytest.mark.slow
def test_a_revision_without_bundles_or_without_clusters_is_refused_as_a_whole_and_nothing_is_pruned(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    first = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(synced_at(first), what="first revision")
        for folder, message in (
            ("bundles", "no bundle at this revision: refused as a whole (a broken checkout looks like this)"),
            (
                "clusters",
                "no cluster file at this revision: refused as a whole (a broken checkout looks like this)",
            ),
        ):
            saved = {p: p.read_bytes() for p in (gitops.root / folder).rglob("*") if p.is_file()}
            gitops.remove(folder)
            empty = gitops.commit(f"without {folder}")
            doc = fleet.wait_for(
                lambda d, sha=empty: d["revision"] == sha, what=f"the revision without {folder}"
            )
            assert doc["errors"][0] == {"path": ".", "line": 1, "message": message}
            assert all(c["revision"] == first for c in doc["clusters"].values())
            for path, data in saved.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        fleet.wait_for(lambda d: d["clusters"]["eu-1"]["state"] == "Synced", what="still Synced")
        assert fleet.proc.poll() is None
    for cluster in CLUSTERS:
        assert live_objects(sim, cluster, namespace="apps")["settings"]["data"] == {"colour": "blue"}
    assert [r for r in sim.journal_sync("eu-1") if r["method"] == "DELETE"] == []
