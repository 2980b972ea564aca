"""fleet serve with a Kustomize bundle and a SOPS-decrypted bundle against fleet sim: what is rendered is
applied, and a commit that touches no source starts no renderer and writes nothing (issue 18)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.sim import testing
from tests.support import serve
from tests.support import sources as ss
from tests.support.reconcile import GitOpsRepo, live_objects, object_writes

CLUSTERS = ["eu-1", "us-1"]
PASSWORD = "tangerine-quartz-42"


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=CLUSTERS) as handle:
        yield handle


def synced_at(sha: str) -> object:
    def check(doc: dict) -> bool:  # type: ignore[type-arg]
        return (
            doc["revision"] == sha
            and all(c in doc["clusters"] for c in CLUSTERS)
            and all(doc["clusters"][c].get("bundles") for c in CLUSTERS)  # listed before its first round: no
            and all(
                b["state"] == "Synced" and b["revision"] == sha
                for c in CLUSTERS
                for b in doc["clusters"][c]["bundles"].values()
            )
        )

    return check


@pytest.mark.slow
def test_a_no_change_commit_starts_no_renderer_and_writes_nothing(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    recipient = ss.age_identity(tmp_path / "key.txt")
    gitops = GitOpsRepo(tmp_path / "repo")
    gitops.cluster("eu-1", labels={"region": "eu"})
    gitops.cluster("us-1", labels={"region": "us"})
    gitops.write(
        "bundles/shop/bundle.yaml",
        ss.bundle(
            "shop",
            "  namespace: shop\n  source:\n    kustomize: {path: deploy}\n  placement: {clusterSelector: {}}\n",
        ),
    )
    gitops.write(
        "bundles/shop/deploy/kustomization.yaml",
        'resources: [cm.yaml]\nconfigMapGenerator:\n- name: shop-settings\n  literals: ["region=${cluster.labels.region}"]\n'
        "generatorOptions: {disableNameSuffixHash: true}\n",
    )
    gitops.write(
        "bundles/shop/deploy/cm.yaml",
        ss.dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop"}, "data": {"a": "1"}}),
    )
    gitops.write(
        "bundles/db/bundle.yaml",
        ss.bundle("db", "  namespace: shop\n  decrypt: sops\n  placement: {clusterSelector: {}}\n"),
    )
    gitops.write(
        "bundles/db/secret.yaml",
        ss.sops_encrypt(
            ss.dump(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "db"},
                    "stringData": {"password": PASSWORD},
                }
            ),
            recipient=recipient,
            regex="^(data|stringData)$",
        ),
    )
    first = gitops.commit("shop and db")
    with serve.serving(
        repo=gitops.root,
        kubeconfig=sim.kubeconfig,
        state_dir=tmp_path / "state",
        log=tmp_path / "serve.log",
        args=["--interval", "1s", "--sops-age-key-file", str(tmp_path / "key.txt")],
    ) as fleet:
        fleet.wait_for(synced_at(first), what="first revision synced")  # type: ignore[arg-type]
        started = fleet.metric("fleet_renderer_processes_total")
        assert started == 2  # one kustomize build (the region is substituted after it), one sops decryption
        marks = {c: (sim.journal_sync(c) or [{"seq": 0}])[-1]["seq"] for c in CLUSTERS}
        gitops.write("README.md", "a commit that touches no bundle\n")
        second = gitops.commit("readme")
        fleet.wait_for(lambda d: d["revision"] == second, what="second revision read")
        fleet.wait_for(synced_at(second), what="second revision synced")  # type: ignore[arg-type]
        assert fleet.metric("fleet_renderer_processes_total") == started
        logs = fleet.logs()
    for c in CLUSTERS:
        assert object_writes(sim.journal_sync(c, since=marks[c])) == [], c
    eu = live_objects(sim, "eu-1", namespace="shop")
    assert eu["shop-settings"]["data"] == {"region": "eu"}
    assert live_objects(sim, "us-1", namespace="shop")["shop-settings"]["data"] == {"region": "us"}
    secret = live_objects(sim, "eu-1", "secrets", namespace="shop")["db"]
    stored = secret.get("data", {}).get("password")
    assert base64.b64decode(stored).decode() == PASSWORD
    assert PASSWORD not in logs
