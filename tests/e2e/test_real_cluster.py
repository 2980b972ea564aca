"""The real control plane and Jaeger of tests/support/kube.py do what the `real` tests rely on.

Real kube-apiserver, kube-controller-manager and etcd (one etcd, an API server per cluster under its own
prefix) and Jaeger all-in-one, built by `make tools` (docs/real-cluster.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support import kube

pytestmark = [pytest.mark.real, pytest.mark.slow]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def configmap(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}, "data": {"k": "v"}}


def created(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def eventually(check: Callable[[], bool], *, timeout: float = 60.0, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_the_real_api_server_answers_discovery_as_kubernetes_1_36(real_kube: kube.ControlPlane) -> None:
    with real_kube.client("real-1") as api:
        assert api.get("/version").json()["gitVersion"] == "v1.36.3"
        assert api.get("/api").json()["versions"] == ["v1"]
        groups = {g["name"] for g in api.get("/apis").json()["groups"]}
        assert {
            "apps",
            "rbac.authorization.k8s.io",
            "apiregistration.k8s.io",
            "apiextensions.k8s.io",
        } <= groups
        core = {r["name"] for r in api.get("/api/v1").json()["resources"]}
        assert {"configmaps", "namespaces", "secrets", "services"} <= core


def test_the_limited_user_may_write_but_rbac_forbids_it_a_delete(real_kube: kube.ControlPlane) -> None:
    ns = unique("limited")
    with real_kube.client("real-1") as admin, real_kube.client("real-1", user=kube.LIMITED_USER) as limited:
        created(admin.post("/api/v1/namespaces", json=namespace(ns)))
        created(limited.post(f"/api/v1/namespaces/{ns}/configmaps", json=configmap("mine")))
        assert limited.get(f"/api/v1/namespaces/{ns}/configmaps/mine").status_code == 200

        refused = limited.delete(f"/api/v1/namespaces/{ns}/configmaps/mine")
        assert refused.status_code == 403, refused.text
        assert refused.json()["reason"] == "Forbidden"
        assert 'User "limited" cannot delete resource "configmaps"' in refused.json()["message"]
        assert limited.get(f"/api/v1/namespaces/{ns}/configmaps/mine").status_code == 200

        assert admin.delete(f"/api/v1/namespaces/{ns}/configmaps/mine").status_code == 200
        admin.delete(f"/api/v1/namespaces/{ns}")


def test_a_deleted_namespace_is_emptied_and_removed_by_the_controller_manager(
    real_kube: kube.ControlPlane,
) -> None:
    ns = unique("doomed")
    with real_kube.client("real-1") as api:
        created(api.post("/api/v1/namespaces", json=namespace(ns)))
        created(api.post(f"/api/v1/namespaces/{ns}/configmaps", json=configmap("inside")))
        assert api.delete(f"/api/v1/namespaces/{ns}").status_code == 200
        phase = api.get(f"/api/v1/namespaces/{ns}").json()["status"]["phase"]
        assert phase == "Terminating"
        eventually(
            lambda: api.get(f"/api/v1/namespaces/{ns}").status_code == 404, what=f"namespace {ns} gone"
        )
        assert api.get(f"/api/v1/namespaces/{ns}/configmaps/inside").status_code == 404


def test_garbage_collection_deletes_an_object_whose_owner_was_deleted(real_kube: kube.ControlPlane) -> None:
    ns = unique("gc")
    with real_kube.client("real-1") as api:
        created(api.post("/api/v1/namespaces", json=namespace(ns)))
        owner = created(api.post(f"/api/v1/namespaces/{ns}/configmaps", json=configmap("owner")))
        ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
        created(
            api.post(
                f"/api/v1/namespaces/{ns}/configmaps", json=configmap("dependent", ownerReferences=[ref])
            )
        )
        created(api.post(f"/api/v1/namespaces/{ns}/configmaps", json=configmap("bystander")))
        assert api.delete(f"/api/v1/namespaces/{ns}/configmaps/owner").status_code == 200
        eventually(
            lambda: api.get(f"/api/v1/namespaces/{ns}/configmaps/dependent").status_code == 404,
            what="the garbage collector to delete the dependent",
        )
        assert api.get(f"/api/v1/namespaces/{ns}/configmaps/bystander").status_code == 200
        api.delete(f"/api/v1/namespaces/{ns}")


def test_two_api_servers_over_one_etcd_do_not_see_each_others_objects(real_kube: kube.ControlPlane) -> None:
    one, two = real_kube.clusters(2)
    assert one.url != two.url
    ns = unique("only-on-1")
    with real_kube.client(one.name) as api1, real_kube.client(two.name) as api2:
        created(api1.post("/api/v1/namespaces", json=namespace(ns)))
        created(api1.post(f"/api/v1/namespaces/{ns}/configmaps", json=configmap("here")))
        assert api2.get(f"/api/v1/namespaces/{ns}").status_code == 404
        names2 = {n["metadata"]["name"] for n in api2.get("/api/v1/namespaces").json()["items"]}
        assert ns not in names2 and "default" in names2
        # Each has its own RBAC bootstrap, tokens and service-account issuer keys work on both.
        assert api2.get("/api/v1/namespaces/default").status_code == 200
        api1.delete(f"/api/v1/namespaces/{ns}")


PROBE = """
import json, sys
from opentelemetry import trace
from fleet.controller import telemetry
t = telemetry.setup(otlp_endpoint=sys.argv[1], instance="real-probe")
with trace.get_tracer("fleet.probe").start_as_current_span("probe", attributes={"fleet.probe": "yes"}) as span:
    with trace.get_tracer("fleet.probe").start_as_current_span("probe.child"):
        pass
    trace_id = telemetry.trace_id_hex(span)
t.shutdown()
print(json.dumps({"trace_id": trace_id}))
"""


def test_a_span_exported_by_fleets_otlp_exporter_is_read_back_from_jaeger(real_jaeger: kube.Jaeger) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, real_jaeger.otlp_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    trace_id = json.loads(done.stdout)["trace_id"]
    assert real_jaeger.trace("0" * 31 + "1") is None

    found = real_jaeger.wait_trace(trace_id, spans=2)
    spans = {s["operationName"]: s for s in found["spans"]}
    assert set(spans) == {"probe", "probe.child"}
    child_refs = spans["probe.child"]["references"]
    assert child_refs == [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": spans["probe"]["spanID"]}]
    tags = {t["key"]: t["value"] for t in spans["probe"]["tags"]}
    assert tags["fleet.probe"] == "yes"
    process = found["processes"][spans["probe"]["processID"]]
    assert process["serviceName"] == "fleet"
