"""CustomResourceDefinitions over raw HTTP: establishing, discovery, pruning, defaults, subresources, deletion.

Expected shapes are those of docs/sim.md, "CustomResourceDefinitions" (an apply naming an undeclared
field is a 500 with an empty reason; Strict is a 400; Warn and Ignore prune, Warn with a Warning header).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import CustomResourceDefinition, new_class

from fleet.sim import testing
from fleet.sim.storage import store
from tests.sim.kubectl_runner import eventually

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CRD_NAME = "crontabs.stable.example.com"
CT = "/apis/stable.example.com/v1/namespaces/default/crontabs"
AGG = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
SETTINGS = store.Settings(rv_wait=0.3, workload_delay=0.1)

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": "stable.example.com",
        "scope": "Namespaced",
        "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"], "categories": ["all"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {
                    "status": {},
                    "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"},
                },
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["cronSpec"],
                                "properties": {
                                    "cronSpec": {"type": "string"},
                                    "image": {"type": "string", "default": "busybox"},
                                    "replicas": {"type": "integer", "default": 1},
                                    "mode": {"type": "string", "enum": ["fast", "slow"]},
                                    "policy": {
                                        "type": "object",
                                        "default": {},
                                        "properties": {"retries": {"type": "integer", "default": 3}},
                                    },
                                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"replicas": {"type": "integer"}, "ready": {"type": "boolean"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def crontab(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "stable.example.com/v1",
        "kind": "CronTab",
        "metadata": {"name": name},
        "spec": {"cronSpec": "* * * * *", **spec},
    }


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["c1"], settings=SETTINGS) as handle:
        yield handle


@pytest.fixture
def client(sim: testing.SimHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url("c1"), timeout=10.0) as c:
        yield c


def condition(obj: dict[str, Any], ctype: str) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == ctype:
            return str(cond["status"])
    return None


def install(client: httpx.Client, crd: dict[str, Any] | None = None) -> dict[str, Any]:
    r = client.post(CRDS, json=crd or CRD)
    assert r.status_code == 201, r.text
    name = (crd or CRD)["metadata"]["name"]
    eventually(
        lambda: condition(client.get(f"{CRDS}/{name}").json(), "Established") == "True", what="Established"
    )
    body: dict[str, Any] = client.get(f"{CRDS}/{name}").json()
    return body


def apply(client: httpx.Client, path: str, obj: dict[str, Any], **params: str) -> httpx.Response:
    return client.patch(
        path,
        content=json.dumps(obj),
        headers={"Content-Type": "application/apply-patch+yaml"},
        params={"fieldManager": "tester", **params},
    )


def test_custom_resources_are_404_until_the_crd_is_established() -> None:
    delayed = store.Settings(crd_establish_delay=1.5)
    with (
        testing.serving(names=["c1"], settings=delayed) as sim,
        httpx.Client(base_url=sim.url("c1"), timeout=10.0) as client,
    ):
        assert client.get(CT).status_code == 404
        assert client.post(CRDS, json=CRD).status_code == 201
        eventually(lambda: condition(client.get(f"{CRDS}/{CRD_NAME}").json(), "NamesAccepted") == "True")
        crd = client.get(f"{CRDS}/{CRD_NAME}").json()
        assert condition(crd, "Established") is None
        missing = client.post(CT, json=crontab("early"))
        # No API group serves it yet: the real server's path multiplexer answers, in plain text.
        assert (missing.status_code, missing.text) == (404, "404 page not found\n")
        assert "stable.example.com" not in client.get("/apis").text
        eventually(lambda: condition(client.get(f"{CRDS}/{CRD_NAME}").json(), "Established") == "True")
        assert client.post(CT, json=crontab("late")).status_code == 201


def test_an_established_crd_has_accepted_names_stored_versions_and_conditions(client: httpx.Client) -> None:
    crd = install(client)
    assert crd["spec"]["names"]["singular"] == "crontab"
    assert crd["spec"]["names"]["listKind"] == "CronTabList"
    assert crd["spec"]["conversion"] == {"strategy": "None"}
    st = crd["status"]
    assert st["acceptedNames"] == {
        "plural": "crontabs",
        "singular": "crontab",
        "shortNames": ["ct"],
        "kind": "CronTab",
        "listKind": "CronTabList",
        "categories": ["all"],
    }
    assert st["storedVersions"] == ["v1"]
    reasons = {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}
    assert reasons == {
        "NamesAccepted": ("True", "NoConflicts"),
        "Established": ("True", "InitialNamesAccepted"),
    }
    managers = {(m["manager"], m.get("subresource")) for m in crd["metadata"]["managedFields"]}
    assert ("kube-apiserver", "status") in managers


def test_an_established_crd_is_in_legacy_and_aggregated_discovery_and_openapi(client: httpx.Client) -> None:
    before = client.get("/apis", headers={"Accept": AGG})
    install(client)
    groups = client.get("/apis").json()["groups"]
    ours = [g for g in groups if g["name"] == "stable.example.com"]
    assert ours and ours[0]["preferredVersion"] == {"groupVersion": "stable.example.com/v1", "version": "v1"}
    resources = {r["name"]: r for r in client.get("/apis/stable.example.com/v1").json()["resources"]}
    assert resources["crontabs"]["kind"] == "CronTab" and resources["crontabs"]["namespaced"] is True
    assert resources["crontabs"]["shortNames"] == ["ct"] and resources["crontabs"]["categories"] == ["all"]
    assert "crontabs/status" in resources and resources["crontabs/scale"]["kind"] == "Scale"
    after = client.get("/apis", headers={"Accept": AGG, "If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200 and after.headers["ETag"] != before.headers["ETag"]
    item = next(i for i in after.json()["items"] if i["metadata"]["name"] == "stable.example.com")
    entry = item["versions"][0]["resources"][0]
    assert entry["resource"] == "crontabs" and entry["scope"] == "Namespaced"
    assert {s["subresource"] for s in entry["subresources"]} == {"status", "scale"}
    index = client.get("/openapi/v3").json()["paths"]
    doc = client.get(index["apis/stable.example.com/v1"]["serverRelativeURL"]).json()
    patch = doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "stable.example.com",
        "version": "v1",
        "kind": "CronTab",
    }
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (
            lambda c: c["metadata"].update(name="wrong.stable.example.com"),
            "metadata.name",
            'Invalid value: "wrong.stable.example.com": must be spec.names.plural+"."+spec.group',
        ),
        (
            lambda c: c["spec"]["versions"].append({**c["spec"]["versions"][0], "name": "v2"}),
            "spec.versions",
            "must have exactly one version marked as storage version",
        ),
        (
            lambda c: c["spec"]["versions"][0].pop("schema"),
            "spec.versions[0].schema.openAPIV3Schema",
            "Required value: schemas are required",
        ),
        (
            lambda c: (
                c["spec"].update(group="policy.k8s.io"),
                c["metadata"].update(name="crontabs.policy.k8s.io"),
            ),
            "metadata.annotations[api-approved.kubernetes.io]",
            'protected groups must have approval annotation "api-approved.kubernetes.io"',
        ),
        (
            lambda c: c["spec"].update(scope="Global"),
            "spec.scope",
            'Unsupported value: "Global": supported values: "Cluster", "Namespaced"',
        ),
    ],
)
def test_an_invalid_crd_gets_422_naming_the_field(
    client: httpx.Client, edit: Any, field: str, message: str
) -> None:
    crd = copy.deepcopy(CRD)
    edit(crd)
    r = client.post(CRDS, json=crd)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["reason"] == "Invalid" and body["details"]["kind"] == "CustomResourceDefinition"
    assert body["message"].startswith("CustomResourceDefinition.apiextensions.k8s.io")
    causes = {c["field"]: c["message"] for c in body["details"]["causes"]}
    assert message in causes[field]


def test_custom_resources_get_schema_defaults_on_create_and_update(client: httpx.Client) -> None:
    install(client)
    made = client.post(CT, json=crontab("a"))
    assert made.status_code == 201
    assert made.json()["spec"] == {
        "cronSpec": "* * * * *",
        "image": "busybox",
        "replicas": 1,
        "policy": {"retries": 3},
    }
    obj = made.json()
    obj["spec"] = {"cronSpec": "0 * * * *", "replicas": 4, "policy": {}}
    updated = client.put(f"{CT}/a", json=obj)
    assert updated.status_code == 200, updated.text
    assert updated.json()["spec"] == {
        "cronSpec": "0 * * * *",
        "replicas": 4,
        "policy": {"retries": 3},
        "image": "busybox",
    }
    listed = client.get(CT).json()
    assert listed["kind"] == "CronTabList"
    assert (
        listed["items"][0]["kind"] == "CronTab"
        and listed["items"][0]["apiVersion"] == "stable.example.com/v1"
    )


def test_unknown_fields_are_refused_under_strict_and_pruned_under_warn_and_ignore(
    client: httpx.Client,
) -> None:
    install(client)
    strict = client.post(CT, params={"fieldValidation": "Strict"}, json=crontab("s", bogus=1))
    assert strict.status_code == 400
    assert strict.json()["reason"] == "BadRequest"
    assert strict.json()["message"] == 'strict decoding error: unknown field "spec.bogus"'
    warned = client.post(
        CT, params={"fieldValidation": "Warn"}, json=crontab("w", bogus=1, extra={"any": [1]})
    )
    assert warned.status_code == 201
    assert warned.headers["Warning"] == '299 - "unknown field \\"spec.bogus\\""'
    assert "bogus" not in warned.json()["spec"] and warned.json()["spec"]["extra"] == {"any": [1]}
    ignored = client.post(CT, params={"fieldValidation": "Ignore"}, json=crontab("i", bogus=1))
    assert ignored.status_code == 201 and "Warning" not in ignored.headers
    assert "bogus" not in client.get(f"{CT}/i").json()["spec"]
    patched = client.patch(
        f"{CT}/i",
        params={"fieldValidation": "Strict"},
        content=json.dumps({"spec": {"bogus": 2}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 400 and 'unknown field "spec.bogus"' in patched.json()["message"]


@pytest.mark.parametrize("validation", ["Strict", "Warn", "Ignore"])
def test_server_side_apply_of_an_undeclared_field_fails_with_500_whatever_the_validation(
    client: httpx.Client, validation: str
) -> None:
    install(client)
    r = apply(client, f"{CT}/x", crontab("x", bogus=True), fieldValidation=validation)
    assert r.status_code == 500
    body = r.json()
    assert "reason" not in body  # empty, so left out (omitempty), as the real server encodes it
    assert body["message"] == (
        "failed to create typed patch object (stable.example.com/v1, Kind=CronTab): "
        ".spec.bogus: field not declared in schema"
    )
    assert client.get(f"{CT}/x").status_code == 404


def test_server_side_apply_creates_a_defaulted_custom_resource_and_reapplying_is_a_no_op(
    client: httpx.Client,
) -> None:
    install(client)
    first = apply(client, f"{CT}/x", crontab("x", mode="fast"))
    assert first.status_code == 201, first.text
    assert first.json()["spec"]["replicas"] == 1
    again = apply(client, f"{CT}/x", crontab("x", mode="fast"))
    assert again.status_code == 200
    assert again.json()["metadata"]["resourceVersion"] == first.json()["metadata"]["resourceVersion"]


def test_values_against_the_schema_get_422_with_field_causes(client: httpx.Client) -> None:
    install(client)
    r = client.post(
        CT,
        json={**crontab("bad"), "spec": {"replicas": "two", "mode": "medium"}},
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["message"].startswith('CronTab.stable.example.com "bad" is invalid: ')
    causes = {c["field"]: (c["reason"], c["message"]) for c in body["details"]["causes"]}
    assert causes["spec.replicas"] == (
        "FieldValueTypeInvalid",
        'Invalid value: "string": spec.replicas in body must be of type integer: "string"',
    )
    assert causes["spec.mode"] == (
        "FieldValueNotSupported",
        'Unsupported value: "medium": supported values: "fast", "slow"',
    )
    assert causes["spec.cronSpec"] == ("FieldValueRequired", "Required value")


def test_strategic_merge_patch_on_a_custom_resource_gets_415(client: httpx.Client) -> None:
    install(client)
    client.post(CT, json=crontab("a"))
    r = client.patch(
        f"{CT}/a", content="{}", headers={"Content-Type": "application/strategic-merge-patch+json"}
    )
    assert r.status_code == 415
    assert r.json()["message"] == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )


def test_the_status_subresource_of_a_custom_resource_splits_status_from_the_rest(
    client: httpx.Client,
) -> None:
    install(client)
    made = client.post(CT, json={**crontab("a"), "status": {"ready": True}}).json()
    assert "status" not in made
    obj = client.get(f"{CT}/a/status").json()
    obj["status"] = {"ready": True, "replicas": 2}
    obj["spec"]["replicas"] = 9
    written = client.put(f"{CT}/a/status", json=obj)
    assert written.status_code == 200, written.text
    body = written.json()
    assert body["status"] == {"ready": True, "replicas": 2}
    assert body["spec"]["replicas"] == 1 and body["metadata"]["generation"] == 1
    main = body
    main["status"] = {"ready": False}
    main["spec"]["image"] = "alpine"
    again = client.put(f"{CT}/a", json=main).json()
    assert again["status"] == {"ready": True, "replicas": 2}
    assert again["metadata"]["generation"] == 2 and again["spec"]["image"] == "alpine"


def test_the_scale_subresource_of_a_custom_resource_reads_and_writes_replicas(client: httpx.Client) -> None:
    install(client)
    client.post(CT, json=crontab("a", replicas=2))
    scale = client.get(f"{CT}/a/scale").json()
    assert scale["kind"] == "Scale" and scale["spec"] == {"replicas": 2}
    r = client.patch(
        f"{CT}/a/scale",
        content=json.dumps({"spec": {"replicas": 5}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert client.get(f"{CT}/a").json()["spec"]["replicas"] == 5


def test_a_cluster_scoped_custom_resource_is_404_under_a_namespace(client: httpx.Client) -> None:
    crd = copy.deepcopy(CRD)
    crd["spec"]["scope"] = "Cluster"
    install(client, crd)
    assert client.get(CT).status_code == 404
    made = client.post("/apis/stable.example.com/v1/crontabs", json=crontab("global"))
    assert made.status_code == 201 and "namespace" not in made.json()["metadata"]


def test_a_new_served_version_is_added_to_discovery_when_the_crd_changes(client: httpx.Client) -> None:
    crd = install(client)
    v2 = copy.deepcopy(crd["spec"]["versions"][0])
    v2.update(name="v2", storage=False)
    crd["spec"]["versions"].append(v2)
    assert client.put(f"{CRDS}/{CRD_NAME}", json=crd).status_code == 200
    eventually(lambda: client.get("/apis/stable.example.com/v2").status_code == 200)
    group = client.get("/apis/stable.example.com").json()
    assert [v["version"] for v in group["versions"]] == ["v2", "v1"]
    made = client.post(
        "/apis/stable.example.com/v2/namespaces/default/crontabs",
        json={**crontab("b"), "apiVersion": "stable.example.com/v2"},
    )
    assert made.status_code == 201, made.text


def test_deleting_a_crd_removes_its_resources_then_its_kinds(client: httpx.Client) -> None:
    install(client)
    held = crontab("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    client.post(CT, json=held)
    client.post(CT, json=crontab("plain"))
    with client.stream("GET", CT, params={"watch": "true", "timeoutSeconds": "10"}) as stream:
        r = client.delete(f"{CRDS}/{CRD_NAME}")
        assert r.status_code == 200
        meta = r.json()["metadata"]
        assert meta["deletionTimestamp"] and meta["finalizers"] == [
            "customresourcecleanup.apiextensions.k8s.io"
        ]
        eventually(lambda: condition(client.get(f"{CRDS}/{CRD_NAME}").json(), "Terminating") == "True")
        eventually(lambda: client.get(f"{CT}/plain").status_code == 404)
        refused = client.post(CT, json=crontab("new"))
        assert refused.status_code == 403
        assert refused.json()["message"] == (
            'crontabs.stable.example.com "new" is forbidden: '
            "create not allowed while custom resource definition is terminating"
        )
        assert client.get(f"{CRDS}/{CRD_NAME}").status_code == 200  # held by the resource's finalizer
        released = client.patch(
            f"{CT}/held",
            content=json.dumps({"metadata": {"finalizers": None}}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert released.status_code == 200
        eventually(lambda: client.get(f"{CRDS}/{CRD_NAME}").status_code == 404)
        events = [json.loads(line) for line in stream.iter_lines() if line]
    assert client.get(CT).status_code == 404
    assert "stable.example.com" not in client.get("/apis").text
    deleted = {e["object"]["metadata"]["name"] for e in events if e["type"] == "DELETED"}
    assert deleted == {"held", "plain"}  # and the stream ended when the kind went away


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_kr8s_creates_a_crd_then_its_resources_and_finds_them_by_plural_and_short_name(
    sim: testing.SimHandle,
) -> None:
    api = await kr8s.asyncio.Api(kubeconfig=sim.kubeconfig_for("c1"), bypass_factory=True)
    api.timeout = httpx.Timeout(10.0)
    crd = await CustomResourceDefinition(copy.deepcopy(CRD), api=api)
    await crd.create()
    for _ in range(200):
        await crd.refresh()
        if condition(crd.raw, "Established") == "True":
            break
        await anyio.sleep(0.02)
    crontab_class = new_class(kind="CronTab", version="stable.example.com/v1", namespaced=True, asyncio=True)
    made = await crontab_class(
        {"metadata": {"name": "a", "namespace": "default"}, "spec": {"cronSpec": "x"}}, api=api
    )
    await made.create()
    assert made.raw["spec"]["image"] == "busybox"
    by_plural = [o.name async for o in api.get("crontabs.stable.example.com", namespace="default")]
    by_short = [o.name async for o in api.get("ct", namespace="default")]
    assert by_plural == by_short == ["a"]


def test_deleting_a_custom_resource_answers_with_a_success_status(client: httpx.Client) -> None:
    install(client)
    made = client.post(CT, json=crontab("a")).json()
    r = client.delete(f"{CT}/a")
    assert r.status_code == 200
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": "a",
            "group": "stable.example.com",
            "kind": "crontabs",
            "uid": made["metadata"]["uid"],
        },
    }


def test_the_scale_subresource_follows_the_crds_replica_and_selector_paths(client: httpx.Client) -> None:
    crd = copy.deepcopy(CRD)
    version = crd["spec"]["versions"][0]
    version["subresources"]["scale"] = {
        "specReplicasPath": ".spec.size",
        "statusReplicasPath": ".status.current",
        "labelSelectorPath": ".status.selector",
    }
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    schema["spec"]["properties"]["size"] = {"type": "integer"}
    schema["status"]["properties"].update(current={"type": "integer"}, selector={"type": "string"})
    install(client, crd)
    client.post(CT, json=crontab("a", size=3))
    status_obj = client.get(f"{CT}/a/status").json()
    status_obj["status"] = {"current": 2, "selector": "app=a"}
    assert client.put(f"{CT}/a/status", json=status_obj).status_code == 200
    scale = client.get(f"{CT}/a/scale").json()
    assert scale["spec"] == {"replicas": 3}
    assert scale["status"] == {"replicas": 2, "selector": "app=a"}
    r = client.put(f"{CT}/a/scale", json={**scale, "spec": {"replicas": 7}})
    assert r.status_code == 200, r.text
    assert r.json()["spec"] == {"replicas": 7}
    assert client.get(f"{CT}/a").json()["spec"]["size"] == 7
