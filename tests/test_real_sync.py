"""`fleet sync` against two real API servers (tests/support/kube.py), not the sim.

Each test uses its own fleet instance and namespaces: the clusters live for the whole session.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.reconcile_support import GitOpsRepo, configmap, run_fleet
from tests.support import kube

pytestmark = [pytest.mark.real, pytest.mark.slow]


def configmaps(plane: kube.ControlPlane, cluster: str, namespace: str) -> dict[str, dict[str, Any]]:
    with plane.client(cluster) as api:
        resp = api.get(f"/api/v1/namespaces/{namespace}/configmaps")
        if resp.status_code == 404:
            return {}
        resp.raise_for_status()
        return {item["metadata"]["name"]: item for item in resp.json()["items"]}


def sync(repo: GitOpsRepo, kubeconfig: Path, instance: str) -> tuple[int, dict[str, Any], str]:
    done = run_fleet(
        "sync", str(repo.root), "--kubeconfig", str(kubeconfig), "--instance", instance, "--format", "json"
    )
    report: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, report, done.stderr


@pytest.fixture
def names() -> tuple[str, str, str]:
    suffix = uuid.uuid4().hex[:6]
    return f"i{suffix}", f"web-{suffix}", f"base-{suffix}"


def test_fleet_sync_creates_on_two_real_clusters_and_a_second_sync_rewrites_nothing(
    real_kube: kube.ControlPlane, tmp_path: Path, names: tuple[str, str, str]
) -> None:
    instance, web, base = names
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("real-1", labels={"env": "prod"})
    repo.cluster("real-2", labels={"env": "dev"})
    repo.bundle("web", [configmap("one"), configmap("two", a="1")], namespace=web, selector={"env": "prod"})
    repo.bundle("base", [configmap("shared")], namespace=base, selector={})
    repo.commit("first")
    kubeconfig = real_kube.kubeconfig(["real-1", "real-2"])

    code, report, stderr = sync(repo, kubeconfig, instance)
    assert code == 0, stderr
    assert report["clusters"]["real-1"]["bundles"]["web"]["created"] == 2
    assert report["clusters"]["real-2"]["bundles"]["base"]["state"] == "Synced"
    assert "web" not in report["clusters"]["real-2"]["bundles"]
    places = (("real-1", web), ("real-1", base), ("real-2", base))
    ours = {"one", "two", "shared"}

    def versions() -> dict[tuple[str, str, str], str]:
        return {
            (cluster, ns, name): obj["metadata"]["resourceVersion"]
            for cluster, ns in places
            for name, obj in configmaps(real_kube, cluster, ns).items()
            if name in ours
        }

    before = versions()
    assert len(before) == 4

    code, report, stderr = sync(repo, kubeconfig, instance)
    assert code == 0, stderr
    assert report["clusters"]["real-1"]["bundles"]["web"]["unchanged"] == 2
    assert versions() == before


def test_a_prune_the_limited_user_may_not_do_fails_and_the_next_sync_as_admin_does_it(
    real_kube: kube.ControlPlane, tmp_path: Path, names: tuple[str, str, str]
) -> None:
    instance, web, _ = names
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("real-1")
    repo.bundle("web", [configmap("keep"), configmap("drop")], namespace=web, selector={})
    repo.commit("first")
    admin = real_kube.kubeconfig(["real-1"])
    limited = real_kube.kubeconfig(["real-1"], user=kube.LIMITED_USER)
    code, _, stderr = sync(repo, limited, instance)
    assert code == 0, stderr  # the limited user may create

    repo.bundle("web", [configmap("keep")], namespace=web, selector={})
    repo.commit("drop one")
    code, report, stderr = sync(repo, limited, instance)
    assert code == 1, stderr
    bundle = report["clusters"]["real-1"]["bundles"]["web"]
    assert bundle["state"] == "Failed" and bundle["deleted"] == 0
    assert 'User "limited" cannot delete resource "configmaps"' in bundle["message"]
    assert "drop" in configmaps(real_kube, "real-1", web)

    code, report, stderr = sync(repo, admin, instance)  # still in the inventory: pruned now
    assert code == 0, stderr
    assert report["clusters"]["real-1"]["bundles"]["web"]["deleted"] == 1
    assert set(configmaps(real_kube, "real-1", web)) - {"kube-root-ca.crt"} == {"keep"}
