"""`fleet diff` as the real CLI against `fleet sim`: server-side dry-run diffs, exit codes, no writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.sim import testing
from tests.support.reconcile import CRD, WIDGET, GitOpsRepo, configmap, run_fleet, sync_in_process, writes

CANARY = "canary-s3cr3t-value-42"


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["prod-1"]) as handle:
        yield handle


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    r = GitOpsRepo(tmp_path / "repo")
    r.cluster("prod-1", labels={"env": "prod"})
    return r


def secret(name: str, value: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"password": value},
    }


def diff(repo: GitOpsRepo, sim: testing.SimHandle, *extra: str) -> tuple[int, str, str]:
    proc = run_fleet("diff", str(repo.root), "--kubeconfig", str(sim.kubeconfig), *extra)
    return proc.returncode, proc.stdout, proc.stderr


def test_no_difference_exits_0_and_a_change_exits_1_with_a_unified_diff_and_no_write(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    code, out, err = diff(repo, sim)
    assert code == 0, err
    assert out == ""

    repo.bundle("web", [configmap("one", key="changed"), configmap("three")], namespace="web", selector={})
    repo.commit("change one, add three, drop two")
    since = sim.journal_sync("prod-1")[-1]["seq"]
    code, out, err = diff(repo, sim)
    assert code == 1, err
    assert "--- live/ConfigMap/web/one" in out and "+++ desired/ConfigMap/web/one" in out
    assert "-  key: value" in out and "+  key: changed" in out
    assert "ConfigMap/web/three (new)" in out
    assert "ConfigMap/web/two (removed)" in out
    for noise in ("managedFields", "resourceVersion", "creationTimestamp", "fleet.dev/revision", "uid:"):
        assert noise not in out
    journal = sim.journal_sync("prod-1", since=since)
    assert writes(journal) == []
    patches = [r for r in journal if r["method"] == "PATCH"]
    assert patches and all("dryRun=All" in r["query"] for r in patches)
    assert not [r for r in journal if r["method"] in ("POST", "PUT", "DELETE")]


def test_objects_in_a_namespace_that_does_not_exist_yet_are_shown_as_new(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one")], namespace="brand-new", selector={})
    repo.commit("first")
    code, out, err = diff(repo, sim)
    assert code == 1, err
    assert "ConfigMap/brand-new/one (new)" in out
    assert "+  key: value" in out
    assert writes(sim.journal_sync("prod-1")) == []


def test_secret_values_are_never_shown(sim: testing.SimHandle, repo: GitOpsRepo) -> None:
    repo.bundle("web", [secret("db", CANARY)], namespace="web", selector={})
    repo.commit("first")
    code, out, err = diff(repo, sim)
    assert code == 1
    assert CANARY not in out + err
    assert "<redacted>" in out
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle("web", [secret("db", CANARY + "-rotated")], namespace="web", selector={})
    repo.commit("rotate")
    code, out, err = diff(repo, sim)
    assert code == 1, err
    assert CANARY not in out + err
    assert "<redacted: changed>" in out


def test_an_unreachable_cluster_is_an_error_exit(sim: testing.SimHandle, repo: GitOpsRepo) -> None:
    repo.bundle("web", [configmap("one")], namespace="web", selector={})
    repo.commit("first")
    sim.faults_sync("prod-1", {"refuse": True})
    code, _out, err = diff(repo, sim, "--request-timeout", "1s", "--retry-budget", "1s")
    assert code == 2
    assert "cluster prod-1" in err and "unreachable" in err


def test_custom_resources_of_a_crd_in_the_same_commit_are_shown_as_new(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("widgets", [CRD, WIDGET], namespace="web", selector={})
    repo.commit("crd and cr")
    code, out, err = diff(repo, sim)
    assert code == 1, err
    assert "CustomResourceDefinition/widgets.example.com (new)" in out
    assert "Widget/web/w1 (new)" in out
    assert writes(sim.journal_sync("prod-1")) == []


def test_worktree_mode_diffs_the_files_on_disk(sim: testing.SimHandle, repo: GitOpsRepo) -> None:
    repo.bundle("web", [configmap("one")], namespace="web", selector={})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle("web", [configmap("one", key="uncommitted")], namespace="web", selector={})
    code, _out, err = diff(repo, sim)
    assert code == 0, err  # HEAD is what is live
    code, out, err = diff(repo, sim, "--worktree")
    assert code == 1, err
    assert "+  key: uncommitted" in out
    assert "reading work tree" in err


def test_a_broken_cluster_file_is_an_error_exit_and_the_other_clusters_are_still_diffed(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one")], namespace="web", selector={})
    repo.write(
        "clusters/prod-2.yaml",
        {
            "apiVersion": "fleet.dev/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "prod-2", "labels": {"env": "bad value!"}},
        },
    )
    repo.commit("first, with a broken cluster file")
    code, out, err = diff(repo, sim)
    assert code == 2, err
    assert "ConfigMap/web/one (new)" in out
    assert "clusters/prod-2.yaml:" in err
    assert "error: cluster prod-2: its cluster file is broken" in err


def test_a_bundle_in_error_is_named_once_on_stderr_and_is_an_error_exit(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("base", [configmap("two")], namespace="web", selector={})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle("web", [configmap("one")], namespace="web", selector={})
    repo.bundle("base", [configmap("two")], namespace="web", selector={}, dependsOn=["missing"])
    repo.commit("add web; base now depends on a bundle that does not exist (broken)")
    code, out, err = diff(repo, sim)
    assert code == 2, err
    assert "ConfigMap/web/one (new)" in out
    errors_of_base = [
        line for line in err.splitlines() if line.startswith("error: cluster prod-1: bundle base")
    ]
    assert errors_of_base, err
    assert all("bundle base: bundle base:" not in line for line in errors_of_base), errors_of_base


def test_a_bundle_with_broken_yaml_is_an_error_exit_even_when_nothing_of_it_was_ever_synced(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one")], namespace="web", selector={})
    repo.bundle("new", [configmap("two")], namespace="web", selector={})
    repo.write("bundles/new/manifests/all.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n")
    repo.commit("web, and a new bundle whose YAML is broken")
    code, out, err = diff(repo, sim)
    assert code == 2, err
    assert "ConfigMap/web/one (new)" in out
    assert "error: bundle new: broken at this revision" in err
