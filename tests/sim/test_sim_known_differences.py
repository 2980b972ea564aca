"""Where `fleet sim` and a real API server are known to differ: one pinning test per row of the table in
docs/sim.md ("Differential tests", known differences).

Each test runs on both (it takes `target`), asserts what each side answers, and is marked `differs`: its
`[real]` run fails if the two come to agree, and its assertions fail if either side changes, so a change on
either side is noticed and the table is kept true (tests/sim/conftest.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import kr8s
import kr8s.asyncio
import pytest

from tests.support.differential import Target

REAL_ONLY_GROUPS = {"certificates.k8s.io", "node.k8s.io", "resource.k8s.io", "flowcontrol.apiserver.k8s.io"}


def by_target(target: Target, sim: Any, real: Any) -> Any:
    return real if target.real else sim


@pytest.mark.differs("the version: the sim reports 1.35 (its schemas are kubernetes-validate 1.35's)")
def test_known_difference_the_version_reported(target: Target) -> None:
    body = target.http.get("/version").json()
    assert (body["major"], body["minor"]) == ("1", by_target(target, "35", "36"))
    assert body["gitVersion"] == by_target(target, "v1.35.2", "v1.36.3")


@pytest.mark.differs("the groups served: a real server serves more")
def test_known_difference_the_groups_served(target: Target) -> None:
    groups = {g["name"] for g in target.http.get("/apis").json()["groups"]}
    assert target.record("real-only groups served", sorted(REAL_ONLY_GROUPS & groups)) == by_target(
        target, [], sorted(REAL_ONLY_GROUPS)
    )
    autoscaling = next(g for g in target.http.get("/apis").json()["groups"] if g["name"] == "autoscaling")
    assert [v["version"] for v in autoscaling["versions"]] == by_target(target, ["v2"], ["v2", "v1"])
    core = {r["name"] for r in target.http.get("/api/v1").json()["resources"]}
    assert target.record(
        "core kinds only real ones serve", sorted({"podtemplates", "replicationcontrollers"} & core)
    ) == (by_target(target, [], ["podtemplates", "replicationcontrollers"]))


@pytest.mark.slow  # starts processes: kubectl
@pytest.mark.differs("protobuf: the sim speaks JSON only")
def test_known_difference_protobuf(target: Target) -> None:
    r = target.http.get(target.cm, headers={"Accept": "application/vnd.kubernetes.protobuf"})
    assert (r.status_code, r.headers["content-type"]) == by_target(
        target, (406, "application/json"), (200, "application/vnd.kubernetes.protobuf")
    )
    # kubectl's generator commands send protobuf bodies: the sim answers 415, so they fail there.
    made = target.kubectl("create", "configmap", "gen", "--from-literal=a=b", check=False)
    assert made.returncode == by_target(target, 1, 0)
    if not target.real:
        assert "the body of the request was in an unknown format" in made.stderr
        assert target.kubectl("get", "configmap", "gen", check=False).returncode != 0


@pytest.mark.differs("authentication: the sim accepts any token and knows one user")
@pytest.mark.anyio
async def test_known_difference_authentication(target: Target) -> None:
    with target.raw_client() as c:
        r = c.get(target.cm, headers={"Authorization": "Bearer not-a-token"})
    assert target.record("unknown token", r.status_code) == by_target(target, 200, 401)
    api = await kr8s.asyncio.Api(kubeconfig=target.kubeconfig_doc, bypass_factory=True)
    api.timeout = httpx.Timeout(30.0)
    assert target.record("whoami", await api.whoami()) == by_target(target, "kubernetes-admin", "admin")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.differs("field sets: the sim owns no new struct or list as a whole ('.') in a non-apply write")
def test_known_difference_field_sets(target: Target) -> None:
    deployment = {
        "metadata": {"name": "web", "finalizers": ["example.com/keep"]},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }
    made = target.http.post(target.deploy, json=deployment).json()
    fields = made["metadata"]["managedFields"][0]["fieldsV1"]
    owned = {
        "rollingUpdate": "." in fields["f:spec"]["f:strategy"]["f:rollingUpdate"],
        "finalizers": "." in fields["f:metadata"]["f:finalizers"],
    }
    assert target.record("owned as a whole", owned) == by_target(
        target, {"rollingUpdate": False, "finalizers": False}, {"rollingUpdate": True, "finalizers": True}
    )
    target.http.patch(
        target.deploy + "/web",
        content=json.dumps({"metadata": {"finalizers": None}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )


@pytest.mark.differs("JSON syntax errors: the words after the prefix are Python's, not Go's")
def test_known_difference_json_syntax_errors(target: Target) -> None:
    r = target.http.post(target.cm, content=b"{not json", headers={"Content-Type": "application/json"})
    detail = r.json()["message"].split("json parse error: ", 1)[1]
    assert detail == by_target(
        target,
        "unexpected character, expected a string key: line 1 column 2 (char 1) ({not json)",
        "invalid character 'n' looking for beginning of object key string ({not json)",
    )


@pytest.mark.differs("repeated causes: a real update repeats a cause once per validation pass that finds it")
def test_known_difference_repeated_causes(target: Target) -> None:
    c, at = target.http, target.cm
    c.post(at, json={"metadata": {"name": "fine", "finalizers": ["example.com/hold"]}})
    labels = c.patch(
        at + "/fine",
        content=json.dumps({"metadata": {"labels": {"app": "has space"}}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    c.delete(at + "/fine")
    finalizers = c.patch(
        at + "/fine",
        content=json.dumps({"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    counts = [len(labels.json()["details"]["causes"]), len(finalizers.json()["details"]["causes"])]
    assert target.record("causes", counts) == by_target(target, [1, 1], [4, 2])
    c.patch(
        at + "/fine",
        content=json.dumps({"metadata": {"finalizers": None}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )


@pytest.mark.differs(
    "a patched object that cannot be decoded: the real message quotes it, the sim's does not"
)
def test_known_difference_patch_value(target: Target) -> None:
    target.http.post(target.cm, json={"metadata": {"name": "fine"}, "data": {"secret-ish": "value"}})
    r = target.http.patch(
        target.cm + "/fine",
        content=json.dumps({"metadata": {"labels": {"a": 1}}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    message = r.json()["details"]["causes"][0]["message"]
    assert target.record("quotes the object", '\\"secret-ish\\":\\"value\\"' in message) == target.real


@pytest.mark.differs("Pod admission: the sim adds no service account token volume, tolerations or priority")
def test_known_difference_pod_admission(target: Target) -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    spec = target.http.post(target.path("pods"), json=pod).json()["spec"]
    added = sorted(
        k
        for k in ("serviceAccountName", "tolerations", "priority", "preemptionPolicy", "volumes")
        if k in spec
    )
    assert target.record("added by admission", added) == by_target(
        target, [], ["preemptionPolicy", "priority", "serviceAccountName", "tolerations", "volumes"]
    )
    target.http.delete(target.path("pods") + "/p")


@pytest.mark.differs("PersistentVolumeClaims: a real server's admission adds the pvc-protection finalizer")
def test_known_difference_pvc_protection(target: Target) -> None:
    pvc = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    made = target.http.post(target.path("persistentvolumeclaims"), json=pvc).json()
    assert target.record("finalizers", made["metadata"].get("finalizers")) == by_target(
        target, None, ["kubernetes.io/pvc-protection"]
    )


@pytest.mark.differs(
    "a CRD's kind: the sim serves it right after the CRD's create, a real server a moment later"
)
def test_known_difference_a_crd_kind_is_served_at_once(target: Target) -> None:
    group = f"{target.ns}.example.com"
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"things.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    try:
        assert target.http.post(crds, json=crd).status_code == 201
        thing = {"apiVersion": f"{group}/v1", "kind": "Thing", "metadata": {"name": "first"}}
        first = target.http.post(f"/apis/{group}/v1/namespaces/{target.ns}/things", json=thing)
        assert target.record("first create", first.status_code) == by_target(target, 201, 404)
        if target.real:
            assert first.text == "404 page not found\n"
    finally:
        with target.raw_client() as c:
            c.delete(f"{crds}/things.{group}")
            deadline = time.monotonic() + 60
            while c.get(f"{crds}/things.{group}").status_code != 404 and time.monotonic() < deadline:
                time.sleep(0.2)


@pytest.mark.differs("Table columns: the sim describes a column its printer computes by the column's name")
def test_known_difference_table_column_descriptions(target: Target) -> None:
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    columns = target.http.get(target.deploy, headers={"Accept": accept}).json()["columnDefinitions"]
    ready = next(c for c in columns if c["name"] == "Ready")
    assert target.record("Ready", ready["description"]) == by_target(
        target, "Ready", "Number of the pod with ready state"
    )
