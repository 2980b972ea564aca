"""The real kubectl with CustomResourceDefinitions on `fleet sim`, as on a real cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.sim import testing
from fleet.sim.storage import store
from tests.sim.kubectl_runner import Runner, eventually

# Every test here starts processes (kubectl): `slow`, outside the fast inner loop.
pytestmark = pytest.mark.slow

CRD_AND_CR = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              cronSpec: {type: string, description: "When to run."}
              replicas: {type: integer, default: 1}
---
apiVersion: stable.example.com/v1
kind: CronTab
metadata:
  name: nightly
  namespace: default
spec:
  cronSpec: "0 3 * * *"
"""


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["c1"], settings=store.Settings(workload_delay=0.1)) as handle:
        yield handle


@pytest.fixture
def kubectl(sim: testing.SimHandle, tmp_path: Path) -> Runner:
    return Runner(sim, tmp_path / "cache", "c1")


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "crontab.yaml"
    path.write_text(CRD_AND_CR)
    return path


@pytest.mark.parametrize("mode", [[], ["--server-side"]], ids=["client-side", "server-side"])
def test_kubectl_applying_a_crd_with_its_resources_fails_them_first_and_succeeds_on_a_second_run(
    kubectl: Runner, manifest: Path, mode: list[str]
) -> None:
    first = kubectl("apply", *mode, "-f", str(manifest), check=False)
    assert first.returncode != 0
    assert "customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com" in first.stdout
    assert 'no matches for kind "CronTab" in version "stable.example.com/v1"' in first.stderr
    assert "ensure CRDs are installed first" in first.stderr
    assert kubectl("get", "crontabs", "-o", "name").stdout.strip() == ""
    second = kubectl("apply", *mode, "-f", str(manifest))
    assert "crontab.stable.example.com/nightly" in second.stdout
    got = json.loads(kubectl("get", "ct", "nightly", "-o", "json").stdout)
    assert got["spec"] == {"cronSpec": "0 3 * * *", "replicas": 1}


def test_kubectl_waits_for_established_explains_and_lists_the_new_kind(
    kubectl: Runner, manifest: Path
) -> None:
    kubectl("apply", "-f", str(manifest), check=False)
    out = kubectl("wait", "--for=condition=Established", "crd/crontabs.stable.example.com", "--timeout=20s")
    assert "condition met" in out.stdout
    resources = kubectl("api-resources", "--api-group=stable.example.com", "-o", "name").stdout.split()
    assert resources == ["crontabs.stable.example.com"]
    explained = kubectl("explain", "crontab.spec").stdout
    assert "cronSpec" in explained and "When to run." in explained


def test_kubectl_server_side_apply_of_an_undeclared_field_reports_the_servers_500(
    kubectl: Runner, manifest: Path, tmp_path: Path
) -> None:
    kubectl("apply", "-f", str(manifest), check=False)
    kubectl("wait", "--for=condition=Established", "crd/crontabs.stable.example.com", "--timeout=20s")
    bad = tmp_path / "bad.yaml"
    bad.write_text(CRD_AND_CR.split("---\n")[1].replace('cronSpec: "0 3 * * *"', "bogus: 1"))
    out = kubectl("apply", "--server-side", "-f", str(bad), check=False)
    assert out.returncode != 0
    assert ".spec.bogus: field not declared in schema" in out.stderr
    strict = kubectl("apply", "-f", str(bad), check=False)
    assert strict.returncode != 0
    assert 'unknown field "spec.bogus"' in strict.stderr


def test_kubectl_deleting_a_crd_removes_its_resources_and_the_kind(
    kubectl: Runner, manifest: Path, sim: testing.SimHandle
) -> None:
    kubectl("apply", "-f", str(manifest), check=False)
    kubectl("apply", "-f", str(manifest))
    out = kubectl("delete", "crd", "crontabs.stable.example.com")
    assert 'customresourcedefinition.apiextensions.k8s.io "crontabs.stable.example.com" deleted' in out.stdout
    cluster = sim.cluster("c1")
    eventually(
        lambda: sim.call_sync(lambda: cluster.registry.get("stable.example.com", "v1", "crontabs")) is None,
        what="the kind leaving the registry",
    )
    gone = kubectl("get", "crontabs.stable.example.com", check=False)
    assert gone.returncode != 0
    assert "the server doesn't have a resource type" in gone.stderr
