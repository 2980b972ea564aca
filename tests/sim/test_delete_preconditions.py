"""DeleteOptions preconditions (`uid`, `resourceVersion`), as fleet's prunes send them (docs/reconcile.md,
"Pruning rules"): differential cases, each run on the sim and on the real API server and compared
(tests/sim/conftest.py, docs/sim.md "Differential tests").

What they were read from: apiserver's `rest.BeforeDelete` (registry/rest/delete.go) checks the
preconditions against the stored object before anything else of a delete and answers a Conflict that
names the *kind* (with its group: `Deployment.apps`), not the resource; the namespace registry
(pkg/registry/core/namespace/storage) checks them itself first, with its own messages, naming the
resource (`namespaces`). A mismatch deletes nothing and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.differential import Target


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


def made(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def options(**preconditions: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}


def refused(target: Target, r: httpx.Response) -> dict[str, Any]:
    """The 409 Conflict Status of a failed precondition, recorded (the transcripts are compared too)."""
    assert r.status_code == 409, r.text
    body: dict[str, Any] = r.json()
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["reason"] == "Conflict"
    assert body["code"] == 409
    target.record("refused", body)
    return body


def test_a_delete_whose_preconditions_hold_deletes(target: Target) -> None:
    c, at = target.http, target.cm
    meta = made(c.post(at, json=configmap("held")))["metadata"]
    r = c.request(
        "DELETE", f"{at}/held", json=options(uid=meta["uid"], resourceVersion=meta["resourceVersion"])
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "Success"
    assert c.get(f"{at}/held").status_code == 404


def test_a_delete_whose_uid_precondition_fails_gets_409_and_deletes_nothing(target: Target) -> None:
    c, at = target.http, target.cm
    meta = made(c.post(at, json=configmap("other-uid")))["metadata"]
    wrong = "0a1b2c3d-0000-4000-8000-000000000000"
    body = refused(target, c.request("DELETE", f"{at}/other-uid", json=options(uid=wrong)))
    assert body["message"] == (
        f'Operation cannot be fulfilled on ConfigMap "other-uid": the UID in the precondition ({wrong}) does '
        f"not match the UID in record ({meta['uid']}). The object might have been deleted and then recreated"
    )
    assert body["details"] == {"name": "other-uid", "kind": "ConfigMap"}
    assert c.get(f"{at}/other-uid").json()["metadata"]["resourceVersion"] == meta["resourceVersion"]


def test_a_delete_whose_resource_version_precondition_fails_gets_409_and_deletes_nothing(
    target: Target,
) -> None:
    c, at = target.http, target.cm
    first = made(c.post(at, json=configmap("moved-on")))["metadata"]
    r = c.patch(
        f"{at}/moved-on",
        json={"data": {"k": "changed"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    now = r.json()["metadata"]
    # Both hold the uid; only the version is stale: the version is what fails.
    pre = options(uid=first["uid"], resourceVersion=first["resourceVersion"])
    body = refused(target, c.request("DELETE", f"{at}/moved-on", json=pre))
    assert body["message"] == (
        f'Operation cannot be fulfilled on ConfigMap "moved-on": the ResourceVersion in the precondition '
        f"({first['resourceVersion']}) does not match the ResourceVersion in record ({now['resourceVersion']}). "
        "The object might have been modified"
    )
    assert c.get(f"{at}/moved-on").json()["data"] == {"k": "changed"}


def test_a_failed_precondition_names_the_kind_with_its_group(target: Target) -> None:
    c, at = target.http, target.deploy
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]},
            },
        },
    }
    with target.quietly():  # what defaulting adds to a Deployment is compared elsewhere
        meta = made(c.post(at, json=deployment))["metadata"]
    body = refused(target, c.request("DELETE", f"{at}/web", json=options(resourceVersion="1")))
    assert body["message"] == (
        'Operation cannot be fulfilled on Deployment.apps "web": the ResourceVersion in the precondition (1) '
        f"does not match the ResourceVersion in record ({meta['resourceVersion']}). The object might have "
        "been modified"
    )
    assert body["details"] == {"name": "web", "group": "apps", "kind": "Deployment"}
    assert c.get(f"{at}/web").json()["metadata"]["uid"] == meta["uid"]


def test_a_namespace_delete_whose_preconditions_fail_gets_409_and_leaves_it_active(target: Target) -> None:
    c = target.http
    name = target.unique("pre")
    meta = made(c.post("/api/v1/namespaces", json={"metadata": {"name": name}}))["metadata"]
    wrong = "0a1b2c3d-0000-4000-8000-000000000000"
    by_uid = refused(target, c.request("DELETE", f"/api/v1/namespaces/{name}", json=options(uid=wrong)))
    assert by_uid["message"] == (
        f'Operation cannot be fulfilled on namespaces "{name}": Precondition failed: UID in precondition: '
        f"{wrong}, UID in object meta: {meta['uid']}"
    )
    pre = options(uid=meta["uid"], resourceVersion="1")
    by_rv = refused(target, c.request("DELETE", f"/api/v1/namespaces/{name}", json=pre))
    assert by_rv["message"] == (
        f'Operation cannot be fulfilled on namespaces "{name}": Precondition failed: ResourceVersion in '
        f"precondition: 1, ResourceVersion in object meta: {meta['resourceVersion']}"
    )
    assert by_uid["details"] == by_rv["details"] == {"name": name, "kind": "namespaces"}
    assert c.get(f"/api/v1/namespaces/{name}").json()["status"]["phase"] == "Active"
    pre = options(uid=meta["uid"], resourceVersion=meta["resourceVersion"])
    r = c.request("DELETE", f"/api/v1/namespaces/{name}", json=pre)
    assert r.status_code == 200, r.text
    assert r.json()["status"]["phase"] == "Terminating"


def test_an_empty_precondition_is_one_and_fails(target: Target) -> None:
    c, at = target.http, target.cm
    meta = made(c.post(at, json=configmap("empty")))["metadata"]
    by_uid = refused(target, c.request("DELETE", f"{at}/empty", json=options(uid="")))
    assert by_uid["message"].startswith(
        'Operation cannot be fulfilled on ConfigMap "empty": the UID in the precondition () does not match'
    )
    by_rv = refused(
        target, c.request("DELETE", f"{at}/empty", json=options(uid=meta["uid"], resourceVersion=""))
    )
    assert by_rv["message"].startswith(
        'Operation cannot be fulfilled on ConfigMap "empty": the ResourceVersion in the precondition () does '
        "not match"
    )
    assert c.get(f"{at}/empty").status_code == 200


def test_a_stale_version_cannot_delete_an_object_already_marked_for_deletion(target: Target) -> None:
    c, at = target.http, target.cm
    body = configmap("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    first = made(c.post(at, json=body))["metadata"]
    r = c.request("DELETE", f"{at}/held", json=options(resourceVersion=first["resourceVersion"]))
    assert r.status_code == 200, r.text
    marked = r.json()["metadata"]
    assert marked["deletionTimestamp"] and marked["resourceVersion"] != first["resourceVersion"]
    refused(target, c.request("DELETE", f"{at}/held", json=options(resourceVersion=first["resourceVersion"])))
    with target.quietly():  # cleanup
        c.patch(
            f"{at}/held",
            json={"metadata": {"finalizers": None}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
