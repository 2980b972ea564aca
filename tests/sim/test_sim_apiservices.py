"""APIServices (`apiregistration.k8s.io/v1`) on `fleet sim`, and on the real API server for comparison.

A real cluster serves APIServices out of the box: one local APIService per group version it serves, one
per CRD group version, and those a user adds for an aggregated API server (metrics-server). When such a
server's backend is missing, its group stays listed but its discovery fails (`Stale` in aggregated
discovery, 503 `service unavailable` for the group version), which clients must survive. Every test here
is a differential case (tests/sim/conftest.py, docs/sim.md "Differential tests").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.support.differential import Target

APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"
AGG = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
# Local APIServices of group versions both the sim and a real 1.36 API server serve.
COMMON = ("v1.", "v1.apps", "v1.batch", "v1.rbac.authorization.k8s.io", "v1.apiextensions.k8s.io")


def apiservice(group: str, *, service: dict[str, Any] | None, version: str = "v1beta1") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "group": group,
        "version": version,
        "groupPriorityMinimum": 100,
        "versionPriority": 100,
    }
    if service is not None:
        spec["service"] = service
        spec["insecureSkipTLSVerify"] = True
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"{version}.{group}"},
        "spec": spec,
    }


def available(obj: dict[str, Any]) -> dict[str, Any] | None:
    conds = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Available"]
    return conds[0] if conds else None


@contextmanager
def registered(target: Target, obj: dict[str, Any]) -> Iterator[str]:
    """An APIService created for the test and deleted after it, whatever happens (a broken group on the
    shared real cluster would stall its namespace deletions)."""
    name = obj["metadata"]["name"]
    made = target.http.post(APISERVICES, json=obj)
    assert made.status_code == 201, made.text
    try:
        yield name
    finally:
        with target.raw_client() as c:
            c.delete(f"{APISERVICES}/{name}")


def test_every_served_group_version_has_a_local_apiservice_that_is_available(target: Target) -> None:
    with target.quietly():  # a real server serves more group versions: test_known_difference_groups_served
        items = target.http.get(APISERVICES).json()["items"]
    mine = {i["metadata"]["name"]: i for i in items if i["metadata"]["name"] in COMMON}
    assert sorted(mine) == sorted(COMMON)
    target.record("local apiservices", [mine[name] for name in COMMON])
    for obj in mine.values():
        assert obj["metadata"]["labels"] == {"kube-aggregator.kubernetes.io/automanaged": "onstart"}
        assert "service" not in obj["spec"]
        cond = available(obj)
        assert cond is not None and (cond["status"], cond["reason"]) == ("True", "Local")
    apps = target.http.get(f"{APISERVICES}/v1.apps").json()
    assert apps["spec"] == {
        "group": "apps",
        "version": "v1",
        "groupPriorityMinimum": 17800,
        "versionPriority": 15,
    }


def test_an_apiservice_name_is_its_version_and_group_and_its_priorities_are_positive(target: Target) -> None:
    group = f"{target.ns}.example.com"
    wrong = apiservice(group, service=None)
    wrong["metadata"]["name"] = target.unique("wrong")
    r = target.http.post(APISERVICES, json=wrong)
    assert r.status_code == 422
    assert r.json()["details"]["causes"][0]["message"] == (
        f'Invalid value: "{target.unique("wrong")}": must be `spec.version+"."+spec.group`: "v1beta1.{group}"'
    )
    no_priority = apiservice(group, service=None)
    del no_priority["spec"]["groupPriorityMinimum"], no_priority["spec"]["versionPriority"]
    r = target.http.post(APISERVICES, json=no_priority)
    assert r.status_code == 422
    assert [c["field"] for c in r.json()["details"]["causes"]] == [
        "spec.groupPriorityMinimum",
        "spec.versionPriority",
    ]


def test_an_apiservice_whose_service_is_missing_is_unavailable_and_its_group_fails_discovery(
    target: Target,
) -> None:
    group = f"{target.ns}.example.com"
    c = target.http
    backend = {"namespace": target.ns, "name": "metrics-server"}
    with registered(target, apiservice(group, service=backend)) as name:
        target.eventually(
            lambda: (available(c.get(f"{APISERVICES}/{name}").json()) or {}).get("status") == "False",
            what="the APIService is judged",
        )
        got = c.get(f"{APISERVICES}/{name}").json()
        assert got["spec"]["service"] == {**backend, "port": 443}  # the port is defaulted
        cond = available(got)
        assert cond is not None
        assert (cond["reason"], cond["message"]) == (
            "ServiceNotFound",
            f'service/metrics-server in "{target.ns}" is not present',
        )
        # The group is listed, its group document served, but its version fails discovery.
        with target.quietly():
            groups = c.get("/apis").json()["groups"]
            aggregated = c.get("/apis", headers={"Accept": AGG}).json()["items"]
        assert target.record("listed", [g for g in groups if g["name"] == group]) == [
            {
                "name": group,
                "versions": [{"groupVersion": f"{group}/v1beta1", "version": "v1beta1"}],
                "preferredVersion": {"groupVersion": f"{group}/v1beta1", "version": "v1beta1"},
            }
        ]
        assert target.record("aggregated", [i for i in aggregated if i["metadata"].get("name") == group]) == [
            {"metadata": {"name": group}, "versions": [{"version": "v1beta1", "freshness": "Stale"}]}
        ]
        assert c.get(f"/apis/{group}").json()["kind"] == "APIGroup"
        for path in (f"/apis/{group}/v1beta1", f"/apis/{group}/v1beta1/namespaces/{target.ns}/things"):
            r = c.get(path)
            assert (r.status_code, r.headers["content-type"], r.text) == (
                503,
                "text/plain; charset=utf-8",
                "service unavailable\n",
            )
        # Every other group still answers.
        assert c.get(target.cm).status_code == 200
        # A Service without endpoints: still unavailable, for another reason.
        svc = {"metadata": {"name": "metrics-server"}, "spec": {"ports": [{"port": 443, "targetPort": 4443}]}}
        assert c.post(target.path("services"), json=svc).status_code == 201
        target.eventually(
            lambda: (
                (available(c.get(f"{APISERVICES}/{name}").json()) or {}).get("reason") == "EndpointsNotFound"
            ),
            what="the APIService is judged again",
        )
        cond = available(c.get(f"{APISERVICES}/{name}").json())
        assert cond is not None and cond["message"] == (
            f'cannot find endpointslices for service/metrics-server in "{target.ns}"'
        )
        assert c.delete(f"{APISERVICES}/{name}").status_code == 200
    target.eventually(
        lambda: group not in {g["name"] for g in c.get("/apis").json()["groups"]},
        what="the group leaves discovery with its APIService",
    )
    r = c.get(f"/apis/{group}/v1beta1")
    assert (r.status_code, r.text) == (404, "404 page not found\n")


@pytest.mark.slow  # starts processes: kubectl
def test_kubectl_lists_apiservices_with_their_service_and_availability(target: Target) -> None:
    group = f"{target.ns}.example.com"
    backend = {"namespace": target.ns, "name": "metrics-server"}
    with registered(target, apiservice(group, service=backend)) as name:
        target.eventually(
            lambda: available(target.http.get(f"{APISERVICES}/{name}").json()) is not None,
            what="the APIService is judged",
        )
        out = target.kubectl("get", "apiservice", name, "v1.apps", "--no-headers").stdout
        rows = [line.split()[:4] for line in out.splitlines()]
        assert rows == [
            [name, f"{target.ns}/metrics-server", "False", "(ServiceNotFound)"],
            ["v1.apps", "Local", "True", rows[1][3]],  # the fourth column is its age
        ]
        # kubectl goes on working with the broken group registered.
        made = target.kubectl(
            "create", "--dry-run=server", "-o", "name", "-f", "-", stdin=json.dumps(cm_doc())
        )
        assert made.stdout.strip() == "configmap/probe"


def cm_doc() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}, "data": {"k": "v"}}


def test_a_crd_group_version_gets_an_automanaged_apiservice_while_it_is_served(target: Target) -> None:
    group = f"{target.ns}.example.com"
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
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    c = target.http
    assert c.post(crds, json=crd).status_code == 201
    try:
        target.eventually(
            lambda: c.get(f"{APISERVICES}/v1.{group}").status_code == 200, what="the APIService"
        )
        got = c.get(f"{APISERVICES}/v1.{group}").json()
        assert got["metadata"]["labels"] == {"kube-aggregator.kubernetes.io/automanaged": "true"}
        assert got["spec"] == {
            "group": group,
            "version": "v1",
            "groupPriorityMinimum": 1000,
            "versionPriority": 100,
        }
        assert c.delete(f"{crds}/things.{group}").status_code == 200
        target.eventually(
            lambda: c.get(f"{APISERVICES}/v1.{group}").status_code == 404, what="it goes with the CRD"
        )
    finally:
        with target.raw_client() as raw:
            raw.delete(f"{crds}/things.{group}")


def test_the_apiservice_kind_is_discovered(target: Target) -> None:
    body = target.http.get("/apis/apiregistration.k8s.io/v1").json()
    assert [r["name"] for r in body["resources"]] == ["apiservices", "apiservices/status"]
    assert body["resources"][0]["categories"] == ["api-extensions"]
