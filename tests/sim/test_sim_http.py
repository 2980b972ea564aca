"""The simulated API server over raw HTTP: one test per behaviour of docs/sim.md, "What is faithful".

Expected shapes (Status messages, list and event forms) are those of the apimachinery/apiserver source
files the behaviours were read from.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from typing import Any

import httpx
import orjson
import pytest

from fleet.sim import testing
from fleet.sim.storage import store

CM = "/api/v1/namespaces/default/configmaps"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"
AGG = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"


def cm(
    name: str, *, labels: dict[str, str] | None = None, data: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {"k": "v"}}


def deployment(name: str, *, replicas: int = 1, image: str = "nginx:1.27") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


def create(client: httpx.Client, name: str, **kw: Any) -> dict[str, Any]:
    r = client.post(CM, json=cm(name, **kw))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def merge(client: httpx.Client, path: str, patch: Any, **params: str) -> httpx.Response:
    return client.patch(
        path,
        content=json.dumps(patch),
        headers={"Content-Type": "application/merge-patch+json"},
        params=params,
    )


def assert_status(r: httpx.Response, code: int, reason: str, message: str | None = None) -> dict[str, Any]:
    assert r.status_code == code, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == code and body["reason"] == reason and isinstance(body["metadata"], dict)
    if message is not None:
        assert body["message"] == message
    return body


def watch(client: httpx.Client, path: str, **params: str) -> list[dict[str, Any]]:
    """Read a whole watch stream (the caller passes timeoutSeconds) into a list of events."""
    params.setdefault("timeoutSeconds", "1")
    with client.stream("GET", path, params={"watch": "true", **params}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        return [json.loads(line) for line in r.iter_lines() if line.strip()]


def rv_of(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


# ----- A. transport, URLs, version ---------------------------------------------------------------


def test_each_cluster_answers_below_its_own_path_prefix(sim: testing.SimHandle) -> None:
    assert sim.url("c1").endswith("/clusters/c1")
    with httpx.Client(timeout=10) as c:
        one = c.post(sim.url("c1") + CM, json=cm("only-in-c1"))
        assert one.status_code == 201
        assert c.get(sim.url("c2") + CM + "/only-in-c1").status_code == 404
        assert c.get(sim.url("c1") + CM + "/only-in-c1").status_code == 200


def test_clusters_start_at_distinct_resource_versions(sim: testing.SimHandle) -> None:
    with httpx.Client(timeout=10) as c:
        rvs = {c.get(sim.url(n) + CM).json()["metadata"]["resourceVersion"] for n in ("c1", "c2")}
    assert len(rvs) == 2


def test_version_reports_1_35_with_integer_major_and_minor(client: httpx.Client) -> None:
    body = client.get("/version").json()
    assert body["major"] == "1" and body["minor"] == "35"
    assert body["gitVersion"].startswith("v1.35.")
    for key in ("gitCommit", "gitTreeState", "buildDate", "goVersion", "compiler", "platform"):
        assert key in body


@pytest.mark.parametrize("path", ["/version", "/version/", "/api", "/api/", "/apis", "/apis/"])
def test_roots_answer_with_and_without_a_trailing_slash(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz"])
def test_health_endpoints_answer_ok(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert (r.status_code, r.text) == (200, "ok")


def test_an_accept_header_with_only_protobuf_gets_406(client: httpx.Client) -> None:
    r = client.get(CM, headers={"Accept": "application/vnd.kubernetes.protobuf"})
    assert_status(r, 406, "NotAcceptable")


def test_a_v1beta1_only_table_request_falls_back_to_a_plain_json_list(client: httpx.Client) -> None:
    accept = "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    body = client.get(CM, headers={"Accept": accept}).json()
    assert body["kind"] == "ConfigMapList"


@pytest.mark.parametrize(
    "path",
    ["/api/v1/widgets", "/apis/nope.example.com/v1/things", "/apis/apps/v9/deployments", "/nothing/here"],
)
def test_unknown_paths_get_the_404_status(client: httpx.Client, path: str) -> None:
    assert_status(client.get(path), 404, "NotFound", "the server could not find the requested resource")


def test_any_bearer_token_is_accepted(client: httpx.Client) -> None:
    assert client.get(CM, headers={"Authorization": "Bearer whatever"}).status_code == 200


# ----- B. discovery ------------------------------------------------------------------------------


def test_api_lists_the_core_version(client: httpx.Client) -> None:
    body = client.get("/api").json()
    assert body["kind"] == "APIVersions" and body["versions"] == ["v1"]
    assert body["serverAddressByClientCIDRs"]


def test_apis_lists_groups_whose_preferred_version_is_one_of_their_versions(client: httpx.Client) -> None:
    body = client.get("/apis").json()
    assert body["kind"] == "APIGroupList" and body["apiVersion"] == "v1"
    names = {g["name"] for g in body["groups"]}
    assert {"apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io", "coordination.k8s.io"} <= names
    assert "apiextensions.k8s.io" in names
    for group in body["groups"]:
        assert group["preferredVersion"] in group["versions"]


def test_a_group_document_is_served_and_an_unknown_group_is_404(client: httpx.Client) -> None:
    body = client.get("/apis/apps").json()
    assert body["kind"] == "APIGroup" and body["name"] == "apps"
    assert client.get("/apis/nope.example.com").status_code == 404


def test_resource_lists_name_scope_kind_verbs_and_subresources(client: httpx.Client) -> None:
    body = client.get("/apis/apps/v1").json()
    assert body["kind"] == "APIResourceList" and body["groupVersion"] == "apps/v1"
    by_name = {r["name"]: r for r in body["resources"]}
    deploy = by_name["deployments"]
    assert deploy["namespaced"] is True and deploy["kind"] == "Deployment"
    assert deploy["singularName"] == "deployment" and deploy["shortNames"] == ["deploy"]
    assert set(deploy["verbs"]) == {
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    }
    assert "all" in deploy["categories"]
    assert set(by_name["deployments/status"]["verbs"]) == {"get", "patch", "update"}
    assert by_name["deployments/scale"]["kind"] == "Scale"
    core = {r["name"]: r for r in client.get("/api/v1").json()["resources"]}
    assert core["namespaces"]["namespaced"] is False
    assert core["configmaps"]["shortNames"] == ["cm"]


def test_aggregated_discovery_is_served_when_asked_first(client: httpx.Client) -> None:
    r = client.get("/apis", headers={"Accept": AGG})
    assert r.status_code == 200
    ct = r.headers["content-type"]
    assert "g=apidiscovery.k8s.io" in ct and "v=v2" in ct and "as=APIGroupDiscoveryList" in ct
    body = r.json()
    assert body["kind"] == "APIGroupDiscoveryList" and body["apiVersion"] == "apidiscovery.k8s.io/v2"
    apps = next(i for i in body["items"] if i["metadata"]["name"] == "apps")
    v1 = apps["versions"][0]
    assert v1["freshness"] == "Current"
    deploy = next(x for x in v1["resources"] if x["resource"] == "deployments")
    assert deploy["scope"] == "Namespaced" and deploy["responseKind"]["kind"] == "Deployment"
    assert {s["subresource"] for s in deploy["subresources"]} == {"status", "scale"}
    core = client.get("/api", headers={"Accept": AGG}).json()
    assert [i["metadata"]["name"] for i in core["items"]] == [""]


def test_aggregated_discovery_answers_if_none_match_with_304(client: httpx.Client) -> None:
    first = client.get("/apis", headers={"Accept": AGG})
    etag = first.headers["etag"]
    again = client.get("/apis", headers={"Accept": AGG, "If-None-Match": etag})
    assert again.status_code == 304


def test_v2beta1_aggregated_discovery_is_not_honoured(client: httpx.Client) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
    assert client.get("/apis", headers={"Accept": accept}).json()["kind"] == "APIGroupList"


def test_openapi_v3_index_points_to_documents_with_gvk_patch_operations(client: httpx.Client) -> None:
    index = client.get("/openapi/v3").json()
    assert "api/v1" in index["paths"] and "apis/apps/v1" in index["paths"]
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    doc = client.get(url).json()
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "apps",
        "version": "v1",
        "kind": "Deployment",
    }
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    spec = doc["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]
    assert "replicas" in spec["properties"]
    containers = doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"


# ----- C. Status errors -----------------------------------------------------------------------


def test_a_missing_object_gets_not_found_naming_the_plural(client: httpx.Client) -> None:
    body = assert_status(client.get(CM + "/nope"), 404, "NotFound", 'configmaps "nope" not found')
    assert body["details"] == {"name": "nope", "kind": "configmaps"}
    body = assert_status(client.get(DEPLOY + "/nope"), 404, "NotFound", 'deployments.apps "nope" not found')
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


def test_a_duplicate_create_gets_already_exists(client: httpx.Client) -> None:
    create(client, "dup")
    assert_status(client.post(CM, json=cm("dup")), 409, "AlreadyExists", 'configmaps "dup" already exists')


def test_a_stale_resource_version_on_update_gets_the_optimistic_lock_conflict(client: httpx.Client) -> None:
    client.post(DEPLOY, json=deployment("web"))
    live = client.get(DEPLOY + "/web").json()
    stale = dict(live, metadata=dict(live["metadata"], resourceVersion="1"))
    body = assert_status(client.put(DEPLOY + "/web", json=stale), 409, "Conflict")
    assert body["message"] == (
        'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; please apply '
        "your changes to the latest version and try again"
    )


# ----- D. get and list -------------------------------------------------------------------------


def test_list_items_of_builtin_types_carry_no_kind_or_api_version(client: httpx.Client) -> None:
    create(client, "a")
    body = client.get(CM).json()
    assert body["kind"] == "ConfigMapList" and body["apiVersion"] == "v1"
    assert body["items"] and all("kind" not in i and "apiVersion" not in i for i in body["items"])
    assert client.get(CM + "/a").json()["kind"] == "ConfigMap"


def test_a_list_resource_version_is_the_cluster_wide_current_one(client: httpx.Client) -> None:
    before = int(client.get(CM).json()["metadata"]["resourceVersion"])
    client.post(DEPLOY, json=deployment("web"))
    after = int(client.get(CM).json()["metadata"]["resourceVersion"])
    assert after == before + 1


def test_lists_are_ordered_by_namespace_then_name(client: httpx.Client) -> None:
    for name in ("b", "c", "a"):
        create(client, name)
    client.post("/api/v1/namespaces", json={"metadata": {"name": "aaa"}})
    client.post("/api/v1/namespaces/aaa/configmaps", json=cm("z"))
    items = client.get("/api/v1/configmaps").json()["items"]
    keys = [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items]
    assert keys == [("aaa", "z"), ("default", "a"), ("default", "b"), ("default", "c")]


def test_pages_come_from_one_consistent_snapshot(client: httpx.Client) -> None:
    for i in range(5):
        create(client, f"p{i}")
    first = client.get(CM, params={"limit": "2"}).json()
    assert [i["metadata"]["name"] for i in first["items"]] == ["p0", "p1"]
    assert first["metadata"]["remainingItemCount"] == 3
    token = first["metadata"]["continue"]
    # Changes after the first page must not show in later pages.
    assert client.delete(CM + "/p3").status_code == 200
    create(client, "p5")
    second = client.get(CM, params={"limit": "2", "continue": token}).json()
    assert [i["metadata"]["name"] for i in second["items"]] == ["p2", "p3"]
    third = client.get(CM, params={"limit": "2", "continue": second["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in third["items"]] == ["p4"]
    assert not third["metadata"].get("continue")
    assert third["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


def test_the_continue_token_has_the_real_servers_form(client: httpx.Client) -> None:
    for i in range(3):
        create(client, f"t{i}")
    token = client.get(CM, params={"limit": "1"}).json()["metadata"]["continue"]
    decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert decoded["v"] == "meta.k8s.io/v1" and isinstance(decoded["rv"], int) and decoded["start"]


def test_a_garbage_continue_token_gets_400(client: httpx.Client) -> None:
    body = assert_status(client.get(CM, params={"continue": "!!garbage"}), 400, "BadRequest")
    assert body["message"].startswith("invalid continue token")


def test_continue_with_a_resource_version_gets_400(client: httpx.Client) -> None:
    for i in range(3):
        create(client, f"t{i}")
    token = client.get(CM, params={"limit": "1"}).json()["metadata"]["continue"]
    r = client.get(CM, params={"continue": token, "resourceVersion": "5"})
    assert_status(r, 400, "BadRequest", "specifying resource version is not allowed when using continue")


def test_a_continue_token_older_than_compaction_gets_410_with_an_inconsistent_token(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    for i in range(4):
        create(client, f"t{i}")
    token = client.get(CM, params={"limit": "1"}).json()["metadata"]["continue"]
    create(client, "t9")
    sim.compact_sync("c1")
    body = assert_status(client.get(CM, params={"limit": "1", "continue": token}), 410, "Expired")
    assert "continue parameter is too old" in body["message"]
    fresh = body["metadata"]["continue"]
    rest = client.get(CM, params={"limit": "10", "continue": fresh}).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["t1", "t2", "t3", "t9"]


def test_an_exact_list_at_an_older_resource_version_shows_the_state_then(client: httpx.Client) -> None:
    created = create(client, "old", data={"v": "1"})
    merge(client, CM + "/old", {"data": {"v": "2"}})
    create(client, "newer")
    then = client.get(
        CM, params={"resourceVersion": str(rv_of(created)), "resourceVersionMatch": "Exact"}
    ).json()
    assert [(i["metadata"]["name"], i["data"]["v"]) for i in then["items"]] == [("old", "1")]
    assert then["metadata"]["resourceVersion"] == str(rv_of(created))
    legacy = client.get(CM, params={"resourceVersion": str(rv_of(created)), "limit": "10"}).json()
    assert [i["metadata"]["name"] for i in legacy["items"]] == ["old"]
    not_older = client.get(CM, params={"resourceVersion": str(rv_of(created))}).json()
    assert {i["metadata"]["name"] for i in not_older["items"]} == {"old", "newer"}


def test_an_exact_list_at_a_compacted_resource_version_gets_410(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    created = create(client, "old")
    create(client, "newer")
    sim.compact_sync("c1")
    r = client.get(CM, params={"resourceVersion": str(rv_of(created)), "resourceVersionMatch": "Exact"})
    assert_status(r, 410, "Expired", "The resourceVersion for the provided list is too old.")


def test_a_non_numeric_resource_version_gets_400(client: httpx.Client) -> None:
    body = assert_status(client.get(CM, params={"resourceVersion": "abc"}), 400, "BadRequest")
    assert body["message"].startswith("invalid resource version")


def test_a_resource_version_ahead_of_the_cluster_gets_the_too_large_timeout(client: httpx.Client) -> None:
    r = client.get(CM, params={"resourceVersion": "999999999"})
    body = assert_status(r, 504, "Timeout")
    assert body["message"].startswith("Too large resource version: 999999999, current: ")
    assert body["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
    assert r.headers["Retry-After"] == str(body["details"]["retryAfterSeconds"])


@pytest.mark.parametrize(
    "params",
    [
        {"resourceVersionMatch": "Exact"},
        {"resourceVersion": "0", "resourceVersionMatch": "Exact"},
        {"sendInitialEvents": "true"},
        {"resourceVersion": "5", "resourceVersionMatch": "Sometimes"},
    ],
)
def test_invalid_list_options_get_422(client: httpx.Client, params: dict[str, str]) -> None:
    body = assert_status(client.get(CM, params=params), 422, "Invalid")
    assert body["details"]["kind"] == "ListOptions"
    assert body["details"]["causes"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", {"web1", "web2"}),
        ("app==web", {"web1", "web2"}),
        ("app!=web", {"db", "bare"}),
        ("app in (web,db)", {"web1", "web2", "db"}),
        ("app notin (web)", {"db", "bare"}),
        ("app", {"web1", "web2", "db"}),
        ("!app", {"bare"}),
        ("app=web,tier=front", {"web1"}),
        ("rank>1", {"web2"}),
        ("rank<2", {"web1"}),
    ],
)
def test_label_selectors_follow_the_kubernetes_grammar(
    client: httpx.Client, selector: str, expected: set[str]
) -> None:
    create(client, "web1", labels={"app": "web", "tier": "front", "rank": "1"})
    create(client, "web2", labels={"app": "web", "rank": "2"})
    create(client, "db", labels={"app": "db"})
    create(client, "bare")
    items = client.get(CM, params={"labelSelector": selector}).json()["items"]
    assert {i["metadata"]["name"] for i in items} == expected


@pytest.mark.parametrize("selector", ["app=in valid", "app in (", "=x", "app=" + "x" * 64])
def test_an_invalid_label_selector_gets_400(client: httpx.Client, selector: str) -> None:
    assert_status(client.get(CM, params={"labelSelector": selector}), 400, "BadRequest")


def test_field_selectors_match_name_and_namespace_and_skip_empty_terms(client: httpx.Client) -> None:
    create(client, "a")
    create(client, "b")
    items = client.get(CM, params={"fieldSelector": "metadata.name=a,metadata.name=a,"}).json()["items"]
    assert [i["metadata"]["name"] for i in items] == ["a"]
    items = client.get(CM, params={"fieldSelector": "metadata.name!=a"}).json()["items"]
    assert [i["metadata"]["name"] for i in items] == ["b"]
    items = client.get("/api/v1/configmaps", params={"fieldSelector": "metadata.namespace==default"}).json()
    assert {i["metadata"]["name"] for i in items["items"]} == {"a", "b"}


def test_a_type_specific_field_selector_is_supported(client: httpx.Client) -> None:
    # A tls Secret needs both keys (ValidateSecret), empty values are fine.
    secret = {
        "metadata": {"name": "tls"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "", "tls.key": ""},
    }
    assert client.post("/api/v1/namespaces/default/secrets", json=secret).status_code == 201
    client.post("/api/v1/namespaces/default/secrets", json={"metadata": {"name": "plain"}})
    items = client.get(
        "/api/v1/namespaces/default/secrets", params={"fieldSelector": "type=kubernetes.io/tls"}
    )
    assert [i["metadata"]["name"] for i in items.json()["items"]] == ["tls"]


def test_an_unknown_field_selector_gets_400(client: httpx.Client) -> None:
    r = client.get(CM, params={"fieldSelector": "spec.foo=bar"})
    assert_status(
        r,
        400,
        "BadRequest",
        '"spec.foo" is not a known field selector: only "metadata.name", "metadata.namespace"',
    )


def test_a_get_whose_field_selector_names_another_object_gets_400(client: httpx.Client) -> None:
    create(client, "a")
    r = client.get(CM + "/a", params={"fieldSelector": "metadata.name=b"})
    assert_status(r, 400, "BadRequest", "fieldSelector metadata.name doesn't match requested name")


def test_in_a_missing_namespace_a_get_is_404_and_a_list_is_empty(client: httpx.Client) -> None:
    assert client.get("/api/v1/namespaces/ghost/configmaps/x").status_code == 404
    r = client.get("/api/v1/namespaces/ghost/configmaps")
    assert r.status_code == 200 and r.json()["items"] == []


def test_a_cluster_scoped_resource_under_a_namespace_is_404(client: httpx.Client) -> None:
    assert client.get("/apis/rbac.authorization.k8s.io/v1/namespaces/default/clusterroles").status_code == 404


# ----- E. watch -----------------------------------------------------------------------------------


def test_a_watch_without_resource_version_starts_with_synthetic_added_events_in_key_order(
    client: httpx.Client,
) -> None:
    for name in ("b", "a"):
        create(client, name)
    events = watch(client, CM)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a"), ("ADDED", "b")]
    assert all(e["object"]["kind"] == "ConfigMap" and e["object"]["apiVersion"] == "v1" for e in events)


def test_a_watch_from_a_resource_version_sees_only_later_changes_with_increasing_rvs(
    client: httpx.Client,
) -> None:
    first = create(client, "a")
    create(client, "b")
    merge(client, CM + "/a", {"data": {"x": "y"}})
    client.delete(CM + "/b")
    events = watch(client, CM, resourceVersion=str(rv_of(first)))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    rvs = [rv_of(e["object"]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3


def test_a_list_then_watch_from_its_resource_version_loses_no_change(client: httpx.Client) -> None:
    create(client, "a")
    listed = client.get(CM).json()
    create(client, "b")
    events = watch(client, CM, resourceVersion=listed["metadata"]["resourceVersion"])
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]


def test_a_live_watch_sees_a_change_made_while_it_is_open(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    rv = client.get(CM).json()["metadata"]["resourceVersion"]
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "5"}
    with client.stream("GET", CM, params=params) as r:
        with httpx.Client(base_url=sim.url("c1"), timeout=10) as other:
            create(other, "live")
        line = next(line for line in r.iter_lines() if line.strip())
    event = json.loads(line)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "live")


def test_a_deleted_event_carries_the_last_state_at_the_deletion_resource_version(
    client: httpx.Client,
) -> None:
    created = create(client, "gone", data={"last": "state"})
    deleted_at = int(client.get(CM).json()["metadata"]["resourceVersion"]) + 1
    client.delete(CM + "/gone")
    events = watch(client, CM, resourceVersion=str(rv_of(created)))
    assert events[-1]["type"] == "DELETED"
    assert events[-1]["object"]["data"] == {"last": "state"}
    assert rv_of(events[-1]["object"]) == deleted_at


def test_a_resume_after_compaction_gets_one_410_error_event_with_http_200(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    created = create(client, "a")
    create(client, "b")
    sim.compact_sync("c1")
    events = watch(client, CM, resourceVersion=str(rv_of(created)), timeoutSeconds="5")
    assert len(events) == 1
    err = events[0]
    assert err["type"] == "ERROR"
    status = err["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"].startswith(f"too old resource version: {rv_of(created)} (")


def test_a_watch_ahead_of_the_cluster_gets_a_too_large_error_event(client: httpx.Client) -> None:
    events = watch(client, CM, resourceVersion="999999999", timeoutSeconds="5")
    assert [e["type"] for e in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 504
    assert events[0]["object"]["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


def test_bookmarks_are_never_sent_unless_asked(client: httpx.Client) -> None:
    rv = client.get(CM).json()["metadata"]["resourceVersion"]
    plain = watch(client, CM, resourceVersion=rv, timeoutSeconds="1")
    assert plain == []
    with_bookmarks = watch(client, CM, resourceVersion=rv, timeoutSeconds="1", allowWatchBookmarks="true")
    assert with_bookmarks and all(e["type"] == "BOOKMARK" for e in with_bookmarks)
    mark = with_bookmarks[0]["object"]
    assert mark["kind"] == "ConfigMap" and mark["apiVersion"] == "v1"
    assert int(mark["metadata"]["resourceVersion"]) >= int(rv)


def test_send_initial_events_ends_with_the_initial_events_end_bookmark(client: httpx.Client) -> None:
    create(client, "a")
    events = watch(
        client,
        CM,
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks="true",
        timeoutSeconds="1",
    )
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_send_initial_events_without_not_older_than_gets_422(client: httpx.Client) -> None:
    r = client.get(CM, params={"watch": "true", "sendInitialEvents": "true"})
    assert_status(r, 422, "Invalid")


def test_objects_entering_and_leaving_a_label_selector_arrive_as_added_and_deleted(
    client: httpx.Client,
) -> None:
    created = create(client, "x", labels={"sel": "no"})
    merge(client, CM + "/x", {"metadata": {"labels": {"sel": "yes"}}})
    merge(client, CM + "/x", {"data": {"more": "data"}})
    left = merge(client, CM + "/x", {"metadata": {"labels": {"sel": "no"}}}).json()
    merge(client, CM + "/x", {"data": {"unseen": "change"}})
    events = watch(client, CM, resourceVersion=str(rv_of(created)), labelSelector="sel=yes")
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    # The DELETED for a selector exit carries the previous state with the new resourceVersion.
    assert events[2]["object"]["metadata"]["labels"] == {"sel": "yes"}
    assert rv_of(events[2]["object"]) == rv_of(left)


def test_a_namespaced_watch_sees_only_its_namespace(client: httpx.Client) -> None:
    rv = client.get(CM).json()["metadata"]["resourceVersion"]
    client.post("/api/v1/namespaces", json={"metadata": {"name": "other"}})
    client.post("/api/v1/namespaces/other/configmaps", json=cm("there"))
    create(client, "here")
    events = watch(client, CM, resourceVersion=rv)
    assert [e["object"]["metadata"]["name"] for e in events] == ["here"]
    everywhere = watch(client, "/api/v1/configmaps", resourceVersion=rv)
    assert [e["object"]["metadata"]["name"] for e in everywhere] == ["there", "here"]


def test_concurrent_watches_see_identical_event_sequences(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    rv = client.get(CM).json()["metadata"]["resourceVersion"]
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "2"}
    with (
        client.stream("GET", CM, params=params) as r1,
        httpx.Client(base_url=sim.url("c1"), timeout=10) as c2,
    ):
        with c2.stream("GET", CM, params=params) as r2:
            with httpx.Client(base_url=sim.url("c1"), timeout=10) as writer:
                for i in range(5):
                    create(writer, f"w{i}")
                    merge(writer, CM + f"/w{i}", {"data": {"i": str(i)}})
            seq1 = [(json.loads(x)["type"], rv_of(json.loads(x)["object"])) for x in r1.iter_lines() if x]
            seq2 = [(json.loads(x)["type"], rv_of(json.loads(x)["object"])) for x in r2.iter_lines() if x]
    assert len(seq1) == 10 and seq1 == seq2


def test_the_legacy_watch_path_streams_events(client: httpx.Client) -> None:
    create(client, "a")
    with client.stream(
        "GET", "/api/v1/watch/namespaces/default/configmaps", params={"timeoutSeconds": "1"}
    ) as r:
        events = [json.loads(x) for x in r.iter_lines() if x]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


def test_timeout_seconds_ends_the_stream_cleanly_without_an_error_event(client: httpx.Client) -> None:
    create(client, "a")
    events = watch(client, CM, timeoutSeconds="1")
    assert [e["type"] for e in events] == ["ADDED"]


# ----- F. create, update, metadata ------------------------------------------------------------


def test_create_sets_uid_timestamp_resource_version_and_generation_for_workloads(
    client: httpx.Client,
) -> None:
    r = client.post(DEPLOY, json=deployment("web"))
    assert r.status_code == 201
    meta = r.json()["metadata"]
    assert len(meta["uid"]) == 36 and meta["namespace"] == "default"
    assert meta["creationTimestamp"].endswith("Z") and len(meta["creationTimestamp"]) == 20
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    assert "generation" not in create(client, "plain")["metadata"]


def test_create_needs_a_name_or_generate_name(client: httpx.Client) -> None:
    body = assert_status(client.post(CM, json={"metadata": {}}), 422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    made = client.post(CM, json={"metadata": {"generateName": "gen-"}}).json()
    name = made["metadata"]["name"]
    assert name.startswith("gen-") and len(name) == 9
    assert set(name[4:]) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_an_invalid_object_name_gets_422(client: httpx.Client) -> None:
    body = assert_status(client.post(CM, json=cm("Not_Valid")), 422, "Invalid")
    assert body["message"].startswith('ConfigMap "Not_Valid" is invalid: metadata.name: Invalid value')


def test_a_body_namespace_different_from_the_url_gets_400(client: httpx.Client) -> None:
    body = cm("x")
    body["metadata"]["namespace"] = "kube-system"
    r = client.post(CM, json=body)
    assert_status(
        r,
        400,
        "BadRequest",
        "the namespace of the provided object does not match the namespace sent on the request",
    )


def test_a_namespace_on_a_cluster_scoped_object_is_cleared(client: httpx.Client) -> None:
    body = {"metadata": {"name": "viewer", "namespace": "default"}, "rules": []}
    r = client.post("/apis/rbac.authorization.k8s.io/v1/clusterroles", json=body)
    assert r.status_code == 201 and "namespace" not in r.json()["metadata"]


def test_a_resource_version_in_a_create_body_gets_a_500_without_reason(client: httpx.Client) -> None:
    body = cm("x")
    body["metadata"]["resourceVersion"] = "12"
    r = client.post(CM, json=body)
    assert r.status_code == 500
    assert (
        r.json()["reason"] == ""
        and r.json()["message"] == "resourceVersion should not be set on objects to be created"
    )


def test_creating_in_a_missing_namespace_gets_namespace_not_found(client: httpx.Client) -> None:
    r = client.post("/api/v1/namespaces/ghost/configmaps", json=cm("x"))
    assert_status(r, 404, "NotFound", 'namespaces "ghost" not found')


def test_update_keeps_the_metadata_the_server_owns(client: httpx.Client) -> None:
    live = client.post(DEPLOY, json=deployment("web")).json()
    sent = json.loads(json.dumps(live))
    sent["metadata"].update(creationTimestamp="2000-01-01T00:00:00Z", generation=99)
    del sent["metadata"]["uid"]
    sent["spec"]["replicas"] = 3
    got = client.put(DEPLOY + "/web", json=sent).json()
    assert got["metadata"]["uid"] == live["metadata"]["uid"]
    assert got["metadata"]["creationTimestamp"] == live["metadata"]["creationTimestamp"]
    assert got["metadata"]["generation"] == 2


def test_an_update_without_resource_version_is_unconditional_for_builtins(client: httpx.Client) -> None:
    create(client, "a")
    body = cm("a", data={"new": "data"})
    r = client.put(CM + "/a", json=body)
    assert r.status_code == 200 and r.json()["data"] == {"new": "data"}


def test_an_update_of_a_missing_object_gets_404_and_a_name_mismatch_400(client: httpx.Client) -> None:
    assert_status(client.put(CM + "/nope", json=cm("nope")), 404, "NotFound")
    create(client, "a")
    assert_status(
        client.put(CM + "/a", json=cm("b")),
        400,
        "BadRequest",
        "the name of the object (b) does not match the name on the URL (a)",
    )


def test_a_spec_change_bumps_generation_and_a_label_change_does_not(client: httpx.Client) -> None:
    client.post(DEPLOY, json=deployment("web"))
    labelled = merge(client, DEPLOY + "/web", {"metadata": {"labels": {"x": "y"}}}).json()
    assert labelled["metadata"]["generation"] == 1
    scaled = merge(client, DEPLOY + "/web", {"spec": {"replicas": 4}}).json()
    assert scaled["metadata"]["generation"] == 2


def test_a_no_op_write_keeps_the_resource_version_and_emits_no_event(client: httpx.Client) -> None:
    created = create(client, "same", data={"a": "1"})
    again = merge(client, CM + "/same", {"data": {"a": "1"}})
    assert again.status_code == 200 and rv_of(again.json()) == rv_of(created)
    put = client.put(CM + "/same", json=created)
    assert rv_of(put.json()) == rv_of(created)
    assert watch(client, CM, resourceVersion=str(rv_of(created))) == []


def test_dry_run_create_stores_nothing_and_returns_no_resource_version(client: httpx.Client) -> None:
    before = client.get(CM).json()["metadata"]["resourceVersion"]
    r = client.post(CM, json=cm("dry"), params={"dryRun": "All"})
    assert r.status_code == 201 and "resourceVersion" not in r.json()["metadata"]
    assert client.get(CM + "/dry").status_code == 404
    assert client.get(CM).json()["metadata"]["resourceVersion"] == before


def test_dry_run_update_patch_and_delete_change_nothing(client: httpx.Client) -> None:
    created = create(client, "keep", data={"a": "1"})
    r = merge(client, CM + "/keep", {"data": {"a": "2"}}, dryRun="All")
    assert r.json()["data"] == {"a": "2"} and rv_of(r.json()) == rv_of(created)
    assert client.delete(CM + "/keep", params={"dryRun": "All"}).status_code == 200
    live = client.get(CM + "/keep").json()
    assert live["data"] == {"a": "1"} and rv_of(live) == rv_of(created)


def test_an_unsupported_dry_run_value_gets_422(client: httpx.Client) -> None:
    assert_status(client.post(CM, json=cm("x"), params={"dryRun": "Some"}), 422, "Invalid")


def test_the_default_field_manager_is_the_user_agent_prefix(client: httpx.Client) -> None:
    r = client.post(CM, json=cm("ua"), headers={"User-Agent": "kr8s/0.20.15 (python)"})
    managers = [e["manager"] for e in r.json()["metadata"]["managedFields"]]
    assert managers == ["kr8s"]
    r = client.post(CM, json=cm("named"), params={"fieldManager": "fleet"})
    assert [e["manager"] for e in r.json()["metadata"]["managedFields"]] == ["fleet"]


def test_a_field_manager_over_128_characters_gets_422(client: httpx.Client) -> None:
    assert_status(client.post(CM, json=cm("x"), params={"fieldManager": "m" * 129}), 422, "Invalid")


def test_main_resource_writes_keep_status_and_status_writes_keep_spec(client: httpx.Client) -> None:
    client.post(DEPLOY, json=deployment("web"))
    st = merge(client, DEPLOY + "/web/status", {"status": {"replicas": 1}, "spec": {"replicas": 9}}).json()
    assert st["status"]["replicas"] == 1 and st["spec"]["replicas"] == 1
    assert st["metadata"]["generation"] == 1
    main = merge(client, DEPLOY + "/web", {"status": {"replicas": 7}, "spec": {"replicas": 2}}).json()
    assert main["status"]["replicas"] == 1 and main["spec"]["replicas"] == 2


def test_create_resets_the_status_of_kinds_with_a_status_subresource(client: httpx.Client) -> None:
    body = deployment("web")
    body["status"] = {"replicas": 5}
    assert client.post(DEPLOY, json=body).json()["status"] == {}


def test_the_scale_subresource_reads_and_writes_replicas(client: httpx.Client) -> None:
    client.post(DEPLOY, json=deployment("web", replicas=2))
    scale = client.get(DEPLOY + "/web/scale").json()
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"]["replicas"] == 2 and scale["status"]["selector"] == "app=web"
    r = merge(client, DEPLOY + "/web/scale", {"spec": {"replicas": 5}})
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 5
    assert client.get(DEPLOY + "/web").json()["spec"]["replicas"] == 5


# ----- G. patches ---------------------------------------------------------------------------------


def test_merge_patch_deletes_keys_with_null_and_replaces_lists(client: httpx.Client) -> None:
    client.post(DEPLOY, json=deployment("web"))
    create(client, "m", data={"a": "1", "b": "2"})
    got = merge(client, CM + "/m", {"data": {"a": None, "c": "3"}}).json()
    assert got["data"] == {"b": "2", "c": "3"}
    containers = [{"name": "other", "image": "busybox"}]
    d = merge(client, DEPLOY + "/web", {"spec": {"template": {"spec": {"containers": containers}}}}).json()
    assert [c["name"] for c in d["spec"]["template"]["spec"]["containers"]] == ["other"]


def test_json_patch_applies_rfc_6902_operations(client: httpx.Client) -> None:
    create(client, "j", data={"a": "1"})
    ops = [
        {"op": "add", "path": "/data/b", "value": "2"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "copy", "from": "/data/a", "path": "/data/c"},
        {"op": "move", "from": "/data/b", "path": "/data/d"},
        {"op": "test", "path": "/data/a", "value": "10"},
        {"op": "remove", "path": "/data/c"},
    ]
    r = client.patch(
        CM + "/j", content=json.dumps(ops), headers={"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 200 and r.json()["data"] == {"a": "10", "d": "2"}


def test_a_json_patch_that_fails_to_apply_gets_422_and_a_malformed_one_400(client: httpx.Client) -> None:
    create(client, "j")
    headers = {"Content-Type": "application/json-patch+json"}
    failing = [{"op": "test", "path": "/data/k", "value": "other"}]
    assert_status(client.patch(CM + "/j", content=json.dumps(failing), headers=headers), 422, "Invalid")
    missing = [{"op": "remove", "path": "/data/nope"}]
    assert_status(client.patch(CM + "/j", content=json.dumps(missing), headers=headers), 422, "Invalid")
    malformed = [{"op": "explode", "path": "/data"}]
    assert_status(client.patch(CM + "/j", content=json.dumps(malformed), headers=headers), 400, "BadRequest")


def test_a_patch_to_a_missing_object_gets_404(client: httpx.Client) -> None:
    assert_status(merge(client, CM + "/nope", {"data": {}}), 404, "NotFound")


def test_a_resource_version_inside_a_merge_patch_is_a_precondition(client: httpx.Client) -> None:
    created = create(client, "p")
    r = merge(client, CM + "/p", {"metadata": {"resourceVersion": "1"}, "data": {"x": "y"}})
    assert_status(r, 409, "Conflict")
    ok = merge(client, CM + "/p", {"metadata": {"resourceVersion": str(rv_of(created))}, "data": {"x": "y"}})
    assert ok.status_code == 200


def test_force_on_a_non_apply_patch_gets_422(client: httpx.Client) -> None:
    create(client, "f")
    body = assert_status(merge(client, CM + "/f", {"data": {}}, force="true"), 422, "Invalid")
    assert "force" in body["message"]


def test_an_unknown_patch_content_type_gets_415(client: httpx.Client) -> None:
    create(client, "u")
    r = client.patch(CM + "/u", content=b"{}", headers={"Content-Type": "text/plain"})
    body = assert_status(r, 415, "UnsupportedMediaType")
    assert body["message"].startswith(
        "the body of the request was in an unknown format - accepted media types"
    )


def test_apply_without_a_field_manager_gets_422(client: httpx.Client) -> None:
    r = client.patch(
        CM + "/a", content=json.dumps(cm("a")), headers={"Content-Type": "application/apply-patch+yaml"}
    )
    body = assert_status(r, 422, "Invalid")
    assert body["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    )


def test_apply_of_a_missing_object_creates_it_with_201(client: httpx.Client) -> None:
    r = client.patch(
        CM + "/applied",
        content=json.dumps(cm("applied")),
        headers={"Content-Type": "application/apply-patch+yaml"},
        params={"fieldManager": "fleet"},
    )
    assert r.status_code == 201, r.text
    entry = r.json()["metadata"]["managedFields"][0]
    assert (entry["manager"], entry["operation"]) == ("fleet", "Apply")


def test_apply_with_a_wrong_api_version_gets_400(client: httpx.Client) -> None:
    body = cm("x")
    body["apiVersion"] = "v2"
    r = client.patch(
        CM + "/x",
        content=json.dumps(body),
        headers={"Content-Type": "application/apply-patch+yaml"},
        params={"fieldManager": "fleet"},
    )
    assert_status(r, 400, "BadRequest")


def test_strict_field_validation_rejects_unknown_fields_and_warn_reports_them(client: httpx.Client) -> None:
    body = deployment("web")
    body["spec"]["bogus"] = 1
    r = client.post(DEPLOY, json=body, params={"fieldValidation": "Strict"})
    assert_status(r, 400, "BadRequest", 'strict decoding error: unknown field "spec.bogus"')
    r = client.post(DEPLOY, json=body, params={"fieldValidation": "Warn"})
    assert r.status_code == 201
    assert r.headers["Warning"] == '299 - "unknown field \\"spec.bogus\\""'
    assert "bogus" not in r.json()["spec"]


# ----- bad input ----------------------------------------------------------------------------------


def test_malformed_json_gets_400(client: httpx.Client) -> None:
    r = client.post(CM, content=b"{not json", headers={"Content-Type": "application/json"})
    assert_status(r, 400, "BadRequest")


def test_a_json_body_that_is_not_an_object_gets_400(client: httpx.Client) -> None:
    r = client.post(CM, content=b"[1,2]", headers={"Content-Type": "application/json"})
    assert_status(r, 400, "BadRequest")


def test_a_protobuf_body_gets_a_415_status(client: httpx.Client) -> None:
    r = client.post(CM, content=b"k8s\x00\n", headers={"Content-Type": "application/vnd.kubernetes.protobuf"})
    body = assert_status(r, 415, "UnsupportedMediaType")
    assert "application/json" in body["message"]


def test_a_body_over_3_mib_gets_413_and_the_server_keeps_serving(client: httpx.Client) -> None:
    big = cm("big", data={"blob": "x" * (3 * 1024 * 1024 + 10)})
    r = client.post(CM, content=orjson.dumps(big), headers={"Content-Type": "application/json"})
    assert_status(r, 413, "RequestEntityTooLarge")
    assert client.get("/version").status_code == 200


def test_post_to_a_named_object_gets_405(client: httpx.Client) -> None:
    assert_status(client.post(CM + "/x", json=cm("x")), 405, "MethodNotAllowed")


# ----- delete and namespaces -------------------------------------------------------------------------


def test_delete_without_finalizers_removes_at_once_and_answers_a_success_status(client: httpx.Client) -> None:
    made = create(client, "d")
    r = client.delete(CM + "/d")
    assert r.status_code == 200
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": "d", "kind": "configmaps", "uid": made["metadata"]["uid"]},
    }
    assert client.get(CM + "/d").status_code == 404
    assert_status(client.delete(CM + "/d"), 404, "NotFound")


def test_deleting_a_pod_answers_with_the_deleted_object(client: httpx.Client) -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    client.post("/api/v1/namespaces/default/pods", json=pod)
    r = client.delete("/api/v1/namespaces/default/pods/p")
    assert r.status_code == 200 and r.json()["kind"] == "Pod"


def test_finalizers_hold_a_deleted_object_until_the_last_one_is_removed(client: httpx.Client) -> None:
    body = cm("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    client.post(CM, json=body)
    r = client.delete(CM + "/held")
    assert r.status_code == 200
    meta = r.json()["metadata"]
    assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == 0
    assert client.get(CM + "/held").status_code == 200
    again = client.delete(CM + "/held").json()
    assert again["metadata"]["resourceVersion"] == meta["resourceVersion"]
    blocked = merge(
        client, CM + "/held", {"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}}
    )
    assert_status(blocked, 422, "Invalid")
    done = merge(client, CM + "/held", {"metadata": {"finalizers": None}})
    assert done.status_code == 200
    assert client.get(CM + "/held").status_code == 404


def test_a_delete_precondition_mismatch_gets_409(client: httpx.Client) -> None:
    create(client, "pre")
    r = client.request("DELETE", CM + "/pre", json={"preconditions": {"uid": "not-the-uid"}})
    body = assert_status(r, 409, "Conflict")
    assert "Precondition failed: UID in precondition: not-the-uid" in body["message"]


def test_an_invalid_propagation_policy_gets_422(client: httpx.Client) -> None:
    create(client, "pp")
    assert_status(client.delete(CM + "/pp", params={"propagationPolicy": "Sideways"}), 422, "Invalid")


def test_delete_collection_honours_the_label_selector(client: httpx.Client) -> None:
    create(client, "keep", labels={"team": "a"})
    create(client, "drop1", labels={"team": "b"})
    create(client, "drop2", labels={"team": "b"})
    r = client.delete(CM, params={"labelSelector": "team=b"})
    assert r.status_code == 200 and r.json()["kind"] == "ConfigMapList"
    assert [i["metadata"]["name"] for i in client.get(CM).json()["items"]] == ["keep"]


def test_the_default_namespaces_exist(client: httpx.Client) -> None:
    names = {i["metadata"]["name"] for i in client.get("/api/v1/namespaces").json()["items"]}
    assert names == {"default", "kube-system", "kube-public", "kube-node-lease"}
    ns = client.get("/api/v1/namespaces/default").json()
    assert ns["spec"]["finalizers"] == ["kubernetes"] and ns["status"]["phase"] == "Active"


def test_deleting_default_namespaces_is_forbidden(client: httpx.Client) -> None:
    r = client.delete("/api/v1/namespaces/default")
    assert_status(r, 403, "Forbidden", 'namespaces "default" is forbidden: this namespace may not be deleted')


def test_deleting_a_namespace_terminates_it_and_removes_its_content(client: httpx.Client) -> None:
    client.post("/api/v1/namespaces", json={"metadata": {"name": "doomed"}})
    client.post("/api/v1/namespaces/doomed/configmaps", json=cm("inside"))
    r = client.delete("/api/v1/namespaces/doomed")
    assert r.status_code == 200 and r.json()["status"]["phase"] == "Terminating"
    events = watch(client, "/api/v1/namespaces", resourceVersion=r.json()["metadata"]["resourceVersion"])
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("DELETED", "doomed")]
    assert client.get("/api/v1/namespaces/doomed/configmaps/inside").status_code == 404


def test_every_namespace_gets_a_default_service_account_and_the_root_ca_config_map() -> None:
    with testing.serving(names=["real"]) as sim, httpx.Client(base_url=sim.url("real"), timeout=10) as c:
        c.post("/api/v1/namespaces", json={"metadata": {"name": "fresh"}})
        for ns in ("default", "kube-system", "fresh"):
            for path in (
                f"/api/v1/namespaces/{ns}/serviceaccounts/default",
                f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt",
            ):
                deadline = time.monotonic() + 5
                while c.get(path).status_code != 200:
                    assert time.monotonic() < deadline, path
                    time.sleep(0.02)
        root_ca = c.get("/api/v1/namespaces/fresh/configmaps/kube-root-ca.crt").json()
        assert root_ca["data"]["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")
        assert root_ca["metadata"]["managedFields"][0]["manager"] == "kube-controller-manager"


def test_a_self_subject_access_review_is_allowed_and_not_stored(client: httpx.Client) -> None:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": "default"}},
    }
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    r = client.post(path, json=review)
    assert r.status_code == 201 and r.json()["status"]["allowed"] is True
    assert r.json()["spec"] == review["spec"]
    assert_status(client.get(path), 405, "MethodNotAllowed")


def test_a_watcher_that_falls_behind_has_its_stream_closed() -> None:
    settings = store.Settings(watch_queue=5, namespace_defaults=False, workload_status=False)
    with testing.serving(names=["slow"], settings=settings) as sim:
        with httpx.Client(base_url=sim.url("slow"), timeout=5) as c:
            for i in range(10):
                create(c, f"o{i}")
            rv = c.get(CM).json()["metadata"]["resourceVersion"]
            params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "60"}
            with c.stream("GET", CM, params=params) as r:
                # One request deletes ten objects at once: ten events arrive before the watcher can drain.
                with httpx.Client(base_url=sim.url("slow"), timeout=5) as other:
                    assert other.delete(CM).status_code == 200
                events = [json.loads(x) for x in r.iter_lines() if x]
    assert len(events) < 10


def test_creates_in_a_terminating_namespace_are_forbidden_until_it_is_gone(client: httpx.Client) -> None:
    client.post("/api/v1/namespaces", json={"metadata": {"name": "ending"}})
    held = cm("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    client.post("/api/v1/namespaces/ending/configmaps", json=held)
    client.delete("/api/v1/namespaces/ending")
    r = client.post("/api/v1/namespaces/ending/configmaps", json=cm("late"))
    body = assert_status(r, 403, "Forbidden")
    assert body["message"] == (
        'configmaps "late" is forbidden: unable to create new content in namespace ending because it is being '
        "terminated"
    )
    assert body["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    assert client.get("/api/v1/namespaces/ending").json()["status"]["phase"] == "Terminating"
    merge(client, "/api/v1/namespaces/ending/configmaps/held", {"metadata": {"finalizers": None}})
    deadline = time.monotonic() + 5
    while client.get("/api/v1/namespaces/ending").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        {"name": 5},
        {"name": "x", "labels": ["a"]},
        {"name": "x", "labels": {"a": 1}},
        {"name": "x", "annotations": "a=b"},
        {"name": "x", "finalizers": "f"},
        {"name": "x", "ownerReferences": ["u"]},
    ],
)
def test_metadata_of_the_wrong_json_type_gets_400_and_the_server_keeps_serving(
    client: httpx.Client, metadata: Any
) -> None:
    r = client.post(CM, json={"metadata": metadata, "data": {}})
    body = assert_status(r, 400, "BadRequest")
    assert body["message"].startswith("json: cannot unmarshal")
    create(client, "fine")
    patched = merge(client, CM + "/fine", {"metadata": {"labels": {"a": 1}}})
    assert_status(patched, 400, "BadRequest")


def test_a_field_of_the_wrong_json_type_gets_the_go_decoders_400(client: httpx.Client) -> None:
    body = deployment("web")
    body["spec"]["replicas"] = "3"
    r = client.post(DEPLOY, json=body)
    assert_status(
        r,
        400,
        "BadRequest",
        'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal string into Go '
        "struct field DeploymentSpec.spec.replicas of type int32",
    )
    svc = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}]}}
    assert client.post("/api/v1/namespaces/default/services", json=svc).status_code == 201


def test_duplicate_fields_fail_strict_validation_and_warn_otherwise(client: httpx.Client) -> None:
    raw = b'{"metadata": {"name": "dup", "name": "dup"}, "data": {"a": "1"}, "data": {"a": "2"}}'
    headers = {"Content-Type": "application/json"}
    r = client.post(CM, content=raw, headers=headers, params={"fieldValidation": "Strict"})
    assert_status(
        r, 400, "BadRequest", 'strict decoding error: duplicate field "metadata.name", duplicate field "data"'
    )
    r = client.post(CM, content=raw, headers=headers)
    assert r.status_code == 201 and r.json()["data"] == {"a": "2"}
    assert 'duplicate field \\"data\\"' in r.headers["Warning"]


def test_a_watch_on_a_named_object_sees_only_that_object(client: httpx.Client) -> None:
    rv = client.get(CM).json()["metadata"]["resourceVersion"]
    create(client, "mine")
    create(client, "other")
    events = watch(client, CM + "/mine", resourceVersion=rv)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "mine")]


def test_a_resource_version_in_an_apply_is_a_precondition(client: httpx.Client) -> None:
    def apply(body: dict[str, Any]) -> httpx.Response:
        return client.patch(
            CM + "/ap",
            content=json.dumps(body),
            headers={"Content-Type": "application/apply-patch+yaml"},
            params={"fieldManager": "fleet"},
        )

    made = apply(cm("ap")).json()
    stale = cm("ap", data={"k": "new"})
    stale["metadata"]["resourceVersion"] = "1"
    assert_status(apply(stale), 409, "Conflict")
    stale["metadata"]["resourceVersion"] = made["metadata"]["resourceVersion"]
    assert apply(stale).status_code == 200


def test_conformance_multiple_watchers_observe_add_update_and_delete_by_label(client: httpx.Client) -> None:
    """Port of the conformance test "should observe add, update, and delete watch notifications"."""
    key = "watch-this-configmap"
    start = client.get(CM).json()["metadata"]["resourceVersion"]
    client.post(CM, json=cm("cm-a", labels={key: "multiple-watchers-A"}))
    merge(client, CM + "/cm-a", {"data": {"mutation": "1"}})
    merge(client, CM + "/cm-a", {"data": {"mutation": "2"}})
    client.delete(CM + "/cm-a")
    client.post(CM, json=cm("cm-b", labels={key: "multiple-watchers-B"}))
    client.delete(CM + "/cm-b")

    def seen(selector: str) -> list[tuple[str, str, str]]:
        events = watch(client, CM, resourceVersion=start, labelSelector=selector)
        return [
            (e["type"], e["object"]["metadata"]["name"], e["object"].get("data", {}).get("mutation", ""))
            for e in events
        ]

    a_events = [
        ("ADDED", "cm-a", ""),
        ("MODIFIED", "cm-a", "1"),
        ("MODIFIED", "cm-a", "2"),
        ("DELETED", "cm-a", "2"),
    ]
    b_events = [("ADDED", "cm-b", ""), ("DELETED", "cm-b", "")]
    assert seen(f"{key}=multiple-watchers-A") == a_events
    assert seen(f"{key}=multiple-watchers-B") == b_events
    assert seen(f"{key} in (multiple-watchers-A,multiple-watchers-B)") == a_events + b_events


def test_services_get_a_cluster_ip_and_node_ports_that_updates_keep(client: httpx.Client) -> None:
    svc = "/api/v1/namespaces/default/services"
    body = {"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}
    made = client.post(svc, json=body).json()["spec"]
    assert made["clusterIP"].startswith("10.96.") and made["clusterIPs"] == [made["clusterIP"]]
    assert 30000 <= made["ports"][0]["nodePort"] <= 32767
    other = client.post(svc, json={"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}}).json()
    assert other["spec"]["clusterIP"] != made["clusterIP"]
    headless = {"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}
    assert client.post(svc, json=headless).json()["spec"]["clusterIP"] == "None"
    # A client that does not send the allocated values back (a PUT of its own manifest) keeps them.
    kept = client.put(svc + "/web", json=body).json()["spec"]
    assert (
        kept["clusterIP"] == made["clusterIP"]
        and kept["ports"][0]["nodePort"] == made["ports"][0]["nodePort"]
    )


@pytest.mark.parametrize(
    ("resources", "qos"),
    [
        ({}, "BestEffort"),
        ({"requests": {"cpu": "100m"}}, "Burstable"),
        ({"limits": {"cpu": "1", "memory": "1Gi"}}, "Guaranteed"),
        ({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}, "Burstable"),
    ],
)
def test_a_created_pod_is_pending_with_its_qos_class(
    client: httpx.Client, resources: dict[str, Any], qos: str
) -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]},
    }
    made = client.post("/api/v1/namespaces/default/pods", json=pod).json()
    assert made["status"] == {"phase": "Pending", "qosClass": qos}


@pytest.mark.parametrize(
    ("labels", "annotations", "fragment"),
    [
        ({"app": "has space"}, None, 'metadata.labels: Invalid value: "has space": a valid label must be'),
        ({"app": "x" * 64}, None, "must be no more than 63 characters"),
        ({"bad key!": "v"}, None, 'metadata.labels: Invalid value: "bad key!": name part must consist'),
        ({"Example.COM/app": "v"}, None, "prefix part a lowercase RFC 1123 subdomain"),
        (None, {"no good/x/y": "v"}, "metadata.annotations: Invalid value"),
        (
            None,
            {"big": "x" * (256 * 1024 + 1)},
            "metadata.annotations: Too long: must have at most 262144 bytes",
        ),
    ],
)
def test_invalid_labels_and_annotations_get_422_on_every_write_path(
    client: httpx.Client, labels: Any, annotations: Any, fragment: str
) -> None:
    body = cm("bad")
    if labels:
        body["metadata"]["labels"] = labels
    if annotations:
        body["metadata"]["annotations"] = annotations
    created = assert_status(client.post(CM, json=body), 422, "Invalid")
    assert created["message"].startswith('ConfigMap "bad" is invalid: ') and fragment in created["message"]
    create(client, "fine")
    patch = {"metadata": {k: v for k, v in (("labels", labels), ("annotations", annotations)) if v}}
    assert_status(merge(client, CM + "/fine", patch), 422, "Invalid")
    applied = client.patch(
        CM + "/applied",
        content=json.dumps(body | {"metadata": {**body["metadata"], "name": "applied"}}),
        headers={"Content-Type": "application/apply-patch+yaml"},
        params={"fieldManager": "fleet"},
    )
    assert_status(applied, 422, "Invalid")


def test_the_namespace_finalize_subresource_changes_only_spec_finalizers(client: httpx.Client) -> None:
    client.post("/api/v1/namespaces", json={"metadata": {"name": "fin"}})
    live = client.get("/api/v1/namespaces/fin").json()
    sent = json.loads(json.dumps(live))
    sent["spec"]["finalizers"] = []
    sent["metadata"]["labels"] = {"ignored": "yes"}
    r = client.put("/api/v1/namespaces/fin/finalize", json=sent)
    assert r.status_code == 200
    got = r.json()
    assert "finalizers" not in got["spec"]
    assert "ignored" not in got["metadata"].get("labels", {})


def test_with_tls_the_root_ca_config_map_holds_the_serving_ca() -> None:
    with testing.serving(names=["secure"], tls=True) as sim:
        assert sim.ca_pem is not None
        with httpx.Client(
            base_url=sim.url("secure"),
            verify=ssl.create_default_context(cadata=sim.ca_pem.decode()),
            timeout=10,
        ) as c:
            path = "/api/v1/namespaces/default/configmaps/kube-root-ca.crt"
            deadline = time.monotonic() + 5
            while (r := c.get(path)).status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert r.json()["data"]["ca.crt"] == sim.ca_pem.decode()
