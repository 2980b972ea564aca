"""The simulated API server over raw HTTP: one test per behaviour of docs/sim.md, "What is faithful".

Expected shapes (Status messages, list and event forms) are those of the apimachinery/apiserver source
files the behaviours were read from. A test that takes `target` is a differential case: it runs on the
sim and, marked `real`, on the real API server too, where its transcript is compared with the sim's
(tests/sim/conftest.py, docs/sim.md "Differential tests"). Tests that take `client` or `sim` check what only
the sim has (compaction on demand, its own resourceVersion counter, its settings).
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
from tests.support.differential import Target

CM = "/api/v1/namespaces/default/configmaps"
AGG = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
APPLY = {"Content-Type": "application/apply-patch+yaml"}


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


def create(client: httpx.Client, name: str, *, at: str = CM, **kw: Any) -> dict[str, Any]:
    r = client.post(at, json=cm(name, **kw))
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


def names(items: list[dict[str, Any]]) -> list[str]:
    return [i["metadata"]["name"] for i in items]


def unique_causes(body: dict[str, Any]) -> list[dict[str, str]]:
    """A Status's causes, each once (a real server repeats a cause each validation pass finds)."""
    out: list[dict[str, str]] = []
    for cause in body["details"]["causes"]:
        if cause not in out:
            out.append(cause)
    return out


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


def test_version_reports_integer_major_and_minor_and_the_build_fields(target: Target) -> None:
    with target.quietly():
        body = target.http.get("/version").json()
    target.record("version fields", sorted(body))
    assert body["major"] == "1" and body["minor"].isdigit()
    assert body["gitVersion"] == f"v{body['major']}.{body['minor']}.{body['gitVersion'].split('.')[-1]}"
    for key in ("gitCommit", "gitTreeState", "buildDate", "goVersion", "compiler", "platform"):
        assert key in body


@pytest.mark.parametrize("path", ["/version", "/version/", "/api", "/api/", "/apis", "/apis/"])
def test_roots_answer_with_and_without_a_trailing_slash(target: Target, path: str) -> None:
    with target.quietly():  # what /version and /apis list is compared elsewhere
        r = target.http.get(path)
    target.record(path, [r.status_code, r.headers["content-type"]])
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz"])
def test_health_endpoints_answer_ok(target: Target, path: str) -> None:
    r = target.http.get(path)
    assert (r.status_code, r.text) == (200, "ok")


def test_a_v1beta1_only_table_request_gets_a_v1beta1_table(target: Target) -> None:
    accept = "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    body = target.http.get(target.cm, headers={"Accept": accept}).json()
    assert (body["kind"], body["apiVersion"]) == ("Table", "meta.k8s.io/v1beta1")
    assert [c["name"] for c in body["columnDefinitions"]] == ["Name", "Data", "Age"]


@pytest.mark.parametrize("path", ["/api/v1/widgets", "/apis/apps/v9/deployments", "/api/v2/pods"])
def test_unknown_resources_of_served_groups_get_the_404_status(target: Target, path: str) -> None:
    body = assert_status(
        target.http.get(path), 404, "NotFound", "the server could not find the requested resource"
    )
    assert body["details"] == {}


@pytest.mark.parametrize(
    "path", ["/apis/nope.example.com/v1/things", "/apis/nope.example.com", "/nothing/here"]
)
def test_paths_outside_every_served_group_get_a_plain_text_404(target: Target, path: str) -> None:
    r = target.http.get(path)
    assert (r.status_code, r.headers["content-type"], r.text) == (
        404,
        "text/plain; charset=utf-8",
        "404 page not found\n",
    )


# ----- B. discovery ------------------------------------------------------------------------------


def test_api_lists_the_core_version(target: Target) -> None:
    body = target.http.get("/api").json()
    assert body["kind"] == "APIVersions" and body["versions"] == ["v1"]
    assert body["serverAddressByClientCIDRs"]


def test_apis_lists_groups_whose_preferred_version_is_one_of_their_versions(target: Target) -> None:
    with target.quietly():  # the groups served differ: test_known_difference_the_groups_served
        body = target.http.get("/apis").json()
    expected = {"apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io", "coordination.k8s.io"}
    found = {g["name"] for g in body["groups"]}
    target.record("kind", [body["kind"], body["apiVersion"]])
    target.record("common groups", sorted(expected & found))
    target.record(
        "preferred among versions", all(g["preferredVersion"] in g["versions"] for g in body["groups"])
    )
    assert body["kind"] == "APIGroupList" and body["apiVersion"] == "v1"
    assert expected <= found
    assert "apiextensions.k8s.io" in found
    for group in body["groups"]:
        assert group["preferredVersion"] in group["versions"]


def test_a_group_document_is_served_and_an_unknown_group_is_404(target: Target) -> None:
    body = target.http.get("/apis/apps").json()
    assert body["kind"] == "APIGroup" and body["name"] == "apps"
    assert target.http.get("/apis/nope.example.com").status_code == 404


def test_resource_lists_name_scope_kind_verbs_and_subresources(target: Target) -> None:
    c = target.http
    body = c.get("/apis/apps/v1").json()
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
    with target.quietly():  # the core kinds served differ: test_known_difference_the_groups_served
        core = {r["name"]: r for r in c.get("/api/v1").json()["resources"]}
    target.record("namespaces, configmaps", [core["namespaces"], core["configmaps"]])
    assert core["namespaces"]["namespaced"] is False
    assert core["configmaps"]["shortNames"] == ["cm"]


def test_aggregated_discovery_is_served_when_asked_first(target: Target) -> None:
    c = target.http
    with target.quietly():  # the groups served differ: test_known_difference_the_groups_served
        r = c.get("/apis", headers={"Accept": AGG})
        core = c.get("/api", headers={"Accept": AGG}).json()
    assert r.status_code == 200
    ct = r.headers["content-type"]
    assert "g=apidiscovery.k8s.io" in ct and "v=v2" in ct and "as=APIGroupDiscoveryList" in ct
    body = r.json()
    assert body["kind"] == "APIGroupDiscoveryList" and body["apiVersion"] == "apidiscovery.k8s.io/v2"
    apps = target.record("apps", next(i for i in body["items"] if i["metadata"]["name"] == "apps"))
    v1 = apps["versions"][0]
    assert v1["freshness"] == "Current"
    deploy = next(x for x in v1["resources"] if x["resource"] == "deployments")
    assert deploy["scope"] == "Namespaced" and deploy["responseKind"]["kind"] == "Deployment"
    assert {s["subresource"] for s in deploy["subresources"]} == {"status", "scale"}
    assert target.record("core groups", [i["metadata"] for i in core["items"]]) == [{}]  # no name: ""


def test_aggregated_discovery_answers_if_none_match_with_304(target: Target) -> None:
    with target.quietly():
        first = target.http.get("/apis", headers={"Accept": AGG})
    etag = first.headers["etag"]
    again = target.http.get("/apis", headers={"Accept": AGG, "If-None-Match": etag})
    assert again.status_code == 304


def test_v2beta1_aggregated_discovery_is_not_honoured(target: Target) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
    with target.quietly():
        kind = target.http.get("/apis", headers={"Accept": accept}).json()["kind"]
    assert target.record("kind", kind) == "APIGroupList"


def test_openapi_v3_index_points_to_documents_with_gvk_patch_operations(target: Target) -> None:
    c = target.http
    with target.quietly():  # the documents differ in what they describe; the parts below agree
        index = c.get("/openapi/v3").json()
        url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        doc = c.get(url).json()
    assert "api/v1" in index["paths"] and "apis/apps/v1" in index["paths"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert target.record("gvk", patch["x-kubernetes-group-version-kind"]) == {
        "group": "apps",
        "version": "v1",
        "kind": "Deployment",
    }
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    spec = doc["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]
    assert "replicas" in spec["properties"]
    containers = doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert target.record("merge key", containers["x-kubernetes-patch-merge-key"]) == "name"


# ----- C. Status errors -----------------------------------------------------------------------


def test_a_missing_object_gets_not_found_naming_the_plural(target: Target) -> None:
    c = target.http
    body = assert_status(c.get(target.cm + "/nope"), 404, "NotFound", 'configmaps "nope" not found')
    assert body["details"] == {"name": "nope", "kind": "configmaps"}
    body = assert_status(c.get(target.deploy + "/nope"), 404, "NotFound", 'deployments.apps "nope" not found')
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


def test_a_duplicate_create_gets_already_exists(target: Target) -> None:
    create(target.http, "dup", at=target.cm)
    r = target.http.post(target.cm, json=cm("dup"))
    assert_status(r, 409, "AlreadyExists", 'configmaps "dup" already exists')


def test_a_stale_resource_version_on_update_gets_the_optimistic_lock_conflict(target: Target) -> None:
    c, at = target.http, target.deploy
    c.post(at, json=deployment("web"))
    live = c.get(at + "/web").json()
    stale = dict(live, metadata=dict(live["metadata"], resourceVersion="1"))
    body = assert_status(c.put(at + "/web", json=stale), 409, "Conflict")
    assert body["message"] == (
        'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; please apply '
        "your changes to the latest version and try again"
    )


# ----- D. get and list -------------------------------------------------------------------------


def test_list_items_of_builtin_types_carry_no_kind_or_api_version(target: Target) -> None:
    c = target.http
    create(c, "a", at=target.cm)
    body = c.get(target.cm).json()
    assert body["kind"] == "ConfigMapList" and body["apiVersion"] == "v1"
    assert body["items"] and all("kind" not in i and "apiVersion" not in i for i in body["items"])
    assert c.get(target.cm + "/a").json()["kind"] == "ConfigMap"


def test_a_list_resource_version_is_the_clusters_own_counter(client: httpx.Client) -> None:
    before = int(client.get(CM).json()["metadata"]["resourceVersion"])
    client.post("/apis/apps/v1/namespaces/default/deployments", json=deployment("web"))
    after = int(client.get(CM).json()["metadata"]["resourceVersion"])
    assert after == before + 1


def test_lists_are_ordered_by_namespace_then_name(target: Target) -> None:
    c = target.http
    for name in ("b", "c", "a"):
        create(c, name, at=target.cm)
    other = target.unique("z")
    c.post("/api/v1/namespaces", json={"metadata": {"name": other}})
    c.post(target.path("configmaps", namespace=other), json=cm("a"))
    with target.quietly():  # a real server also lists the other namespaces of the session
        items = c.get("/api/v1/configmaps").json()["items"]
    keys = [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items]
    mine = target.record("keys", [k for k in keys if k[0] in (target.ns, other)])
    # Storage-key order, "<namespace>/<name>": "NS-z/a" comes before "NS/a" ("-" sorts before "/").
    assert mine == [(other, "a"), (target.ns, "a"), (target.ns, "b"), (target.ns, "c")]


def test_pages_come_from_one_consistent_snapshot(target: Target) -> None:
    c, at = target.http, target.cm
    for i in range(5):
        create(c, f"p{i}", at=at)
    first = c.get(at, params={"limit": "2"}).json()
    assert names(first["items"]) == ["p0", "p1"]
    assert first["metadata"]["remainingItemCount"] == 3
    token = first["metadata"]["continue"]
    # Changes after the first page must not show in later pages.
    assert c.delete(at + "/p3").status_code == 200
    create(c, "p5", at=at)
    second = c.get(at, params={"limit": "2", "continue": token}).json()
    assert names(second["items"]) == ["p2", "p3"]
    third = c.get(at, params={"limit": "2", "continue": second["metadata"]["continue"]}).json()
    assert names(third["items"]) == ["p4"]
    assert not third["metadata"].get("continue")
    assert third["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


def test_the_continue_token_has_the_real_servers_form(target: Target) -> None:
    for i in range(3):
        create(target.http, f"t{i}", at=target.cm)
    token = target.http.get(target.cm, params={"limit": "1"}).json()["metadata"]["continue"]
    decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert decoded["v"] == "meta.k8s.io/v1" and isinstance(decoded["rv"], int) and decoded["start"]
    target.record("token fields", sorted(decoded))


def test_a_garbage_continue_token_gets_400(target: Target) -> None:
    body = assert_status(target.http.get(target.cm, params={"continue": "!!garbage"}), 400, "BadRequest")
    assert body["message"].startswith("invalid continue token")


def test_continue_with_a_resource_version_gets_400(target: Target) -> None:
    c, at = target.http, target.cm
    for i in range(3):
        create(c, f"t{i}", at=at)
    token = c.get(at, params={"limit": "1"}).json()["metadata"]["continue"]
    r = c.get(at, params={"continue": token, "resourceVersion": "5"})
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
    assert names(rest["items"]) == ["t1", "t2", "t3", "t9"]


def test_an_exact_list_at_an_older_resource_version_shows_the_state_then(target: Target) -> None:
    c, at = target.http, target.cm
    created = create(c, "old", at=at, data={"v": "1"})
    merge(c, at + "/old", {"data": {"v": "2"}})
    create(c, "newer", at=at)
    then = c.get(at, params={"resourceVersion": str(rv_of(created)), "resourceVersionMatch": "Exact"}).json()
    assert [(i["metadata"]["name"], i["data"]["v"]) for i in then["items"]] == [("old", "1")]
    assert then["metadata"]["resourceVersion"] == str(rv_of(created))
    legacy = c.get(at, params={"resourceVersion": str(rv_of(created)), "limit": "10"}).json()
    assert names(legacy["items"]) == ["old"]
    not_older = c.get(at, params={"resourceVersion": str(rv_of(created))}).json()
    assert set(names(not_older["items"])) == {"old", "newer"}


def test_an_exact_list_at_a_compacted_resource_version_gets_410(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    created = create(client, "old")
    create(client, "newer")
    sim.compact_sync("c1")
    r = client.get(CM, params={"resourceVersion": str(rv_of(created)), "resourceVersionMatch": "Exact"})
    assert_status(r, 410, "Expired", "The resourceVersion for the provided list is too old.")


def test_a_non_numeric_resource_version_gets_400(target: Target) -> None:
    body = assert_status(target.http.get(target.cm, params={"resourceVersion": "abc"}), 400, "BadRequest")
    assert body["message"].startswith("invalid resource version")


@pytest.mark.slow  # waits out the server's wait for a future resourceVersion
def test_a_resource_version_ahead_of_the_cluster_gets_the_too_large_timeout(target: Target) -> None:
    r = target.http.get(target.cm, params={"resourceVersion": "999999999"})
    body = assert_status(r, 504, "Timeout")
    assert body["message"].startswith("Timeout: Too large resource version: 999999999, current: ")
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
def test_invalid_list_options_get_422(target: Target, params: dict[str, str]) -> None:
    body = assert_status(target.http.get(target.cm, params=params), 422, "Invalid")
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
    target: Target, selector: str, expected: set[str]
) -> None:
    c, at = target.http, target.cm
    create(c, "web1", at=at, labels={"app": "web", "tier": "front", "rank": "1"})
    create(c, "web2", at=at, labels={"app": "web", "rank": "2"})
    create(c, "db", at=at, labels={"app": "db"})
    create(c, "bare", at=at)
    items = c.get(at, params={"labelSelector": selector}).json()["items"]
    assert set(names(items)) == expected


@pytest.mark.parametrize("selector", ["app=in valid", "app in (", "=x", "app=" + "x" * 64])
def test_an_invalid_label_selector_gets_400(target: Target, selector: str) -> None:
    assert_status(target.http.get(target.cm, params={"labelSelector": selector}), 400, "BadRequest")


def test_field_selectors_match_name_and_namespace_and_skip_empty_terms(target: Target) -> None:
    c, at = target.http, target.cm
    create(c, "a", at=at)
    create(c, "b", at=at)
    items = c.get(at, params={"fieldSelector": "metadata.name=a,metadata.name=a,"}).json()["items"]
    assert names(items) == ["a"]
    items = c.get(at, params={"fieldSelector": "metadata.name!=a"}).json()["items"]
    assert names(items) == ["b"]
    found = c.get("/api/v1/configmaps", params={"fieldSelector": f"metadata.namespace=={target.ns}"}).json()
    assert set(names(found["items"])) == {"a", "b"}


def test_a_type_specific_field_selector_is_supported(target: Target) -> None:
    c, at = target.http, target.path("secrets")
    # A tls Secret needs both keys (ValidateSecret), empty values are fine.
    secret = {
        "metadata": {"name": "tls"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "", "tls.key": ""},
    }
    assert c.post(at, json=secret).status_code == 201
    c.post(at, json={"metadata": {"name": "plain"}})
    items = c.get(at, params={"fieldSelector": "type=kubernetes.io/tls"})
    assert names(items.json()["items"]) == ["tls"]


def test_an_unknown_field_selector_gets_400(target: Target) -> None:
    r = target.http.get(target.cm, params={"fieldSelector": "spec.foo=bar"})
    assert_status(
        r,
        400,
        "BadRequest",
        '"spec.foo" is not a known field selector: only "metadata.name", "metadata.namespace"',
    )


def test_a_get_of_one_object_ignores_selectors(target: Target) -> None:
    create(target.http, "a", at=target.cm)
    params = {"fieldSelector": "metadata.name=b", "labelSelector": "nope"}
    r = target.http.get(target.cm + "/a", params=params)
    assert r.status_code == 200 and r.json()["metadata"]["name"] == "a"


def test_in_a_missing_namespace_a_get_is_404_and_a_list_is_empty(target: Target) -> None:
    ghost = target.path("configmaps", namespace=target.unique("ghost"))
    assert target.http.get(ghost + "/x").status_code == 404
    r = target.http.get(ghost)
    assert r.status_code == 200 and r.json()["items"] == []


def test_a_cluster_scoped_resource_under_a_namespace_is_404(target: Target) -> None:
    path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{target.ns}/clusterroles"
    assert target.http.get(path).status_code == 404


# ----- E. watch -----------------------------------------------------------------------------------


def test_a_watch_without_resource_version_starts_with_synthetic_added_events_in_key_order(
    target: Target,
) -> None:
    for name in ("b", "a"):
        create(target.http, name, at=target.cm)
    events = watch(target.http, target.cm)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a"), ("ADDED", "b")]
    assert all(e["object"]["kind"] == "ConfigMap" and e["object"]["apiVersion"] == "v1" for e in events)


def test_a_watch_from_a_resource_version_sees_only_later_changes_with_increasing_rvs(target: Target) -> None:
    c, at = target.http, target.cm
    first = create(c, "a", at=at)
    create(c, "b", at=at)
    merge(c, at + "/a", {"data": {"x": "y"}})
    c.delete(at + "/b")
    events = watch(c, at, resourceVersion=str(rv_of(first)))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    rvs = [rv_of(e["object"]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3


def test_a_list_then_watch_from_its_resource_version_loses_no_change(target: Target) -> None:
    c, at = target.http, target.cm
    create(c, "a", at=at)
    listed = c.get(at).json()
    create(c, "b", at=at)
    events = watch(c, at, resourceVersion=listed["metadata"]["resourceVersion"])
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]


def test_a_live_watch_sees_a_change_made_while_it_is_open(target: Target) -> None:
    c, at = target.http, target.cm
    rv = c.get(at).json()["metadata"]["resourceVersion"]
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "5"}
    with c.stream("GET", at, params=params) as r:
        create(target.client(), "live", at=at)
        line = next(line for line in r.iter_lines() if line.strip())
    event = json.loads(line)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "live")


def test_a_deleted_event_carries_the_last_state_at_the_deletion_resource_version(target: Target) -> None:
    c, at = target.http, target.cm
    created = create(c, "gone", at=at, data={"last": "state"})
    before = int(c.get(at).json()["metadata"]["resourceVersion"])
    c.delete(at + "/gone")
    after = int(c.get(at).json()["metadata"]["resourceVersion"])
    events = watch(c, at, resourceVersion=str(rv_of(created)))
    assert events[-1]["type"] == "DELETED"
    assert events[-1]["object"]["data"] == {"last": "state"}
    assert before < rv_of(events[-1]["object"]) <= after


def test_the_deletion_resource_version_is_the_next_of_the_clusters_counter(client: httpx.Client) -> None:
    created = create(client, "gone", data={"last": "state"})
    deleted_at = int(client.get(CM).json()["metadata"]["resourceVersion"]) + 1
    client.delete(CM + "/gone")
    events = watch(client, CM, resourceVersion=str(rv_of(created)))
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


@pytest.mark.slow  # waits out watches of timeoutSeconds=1
def test_a_watch_from_a_resource_version_not_reached_yet_waits_without_an_error(target: Target) -> None:
    create(target.http, "a", at=target.cm)
    assert watch(target.http, target.cm, resourceVersion="999999999", timeoutSeconds="1") == []


def test_a_watch_from_a_resource_version_not_reached_yet_starts_once_it_is(client: httpx.Client) -> None:
    rv = int(client.get(CM).json()["metadata"]["resourceVersion"])
    params = {"watch": "true", "resourceVersion": str(rv + 1), "timeoutSeconds": "5"}
    with client.stream("GET", CM, params=params) as r:
        with httpx.Client(base_url=str(client.base_url), timeout=10) as other:
            create(other, "skipped")  # at rv + 1: not after it
            create(other, "seen")
        line = next(line for line in r.iter_lines() if line.strip())
    assert json.loads(line)["object"]["metadata"]["name"] == "seen"


@pytest.mark.slow  # two 3 s watches (timeoutSeconds, chosen for the real API server too)
def test_bookmarks_are_never_sent_unless_asked(target: Target) -> None:
    c, at = target.http, target.cm
    for bookmarks in ("false", "true"):
        rv = c.get(at).json()["metadata"]["resourceVersion"]
        params = {
            "watch": "true",
            "resourceVersion": rv,
            "timeoutSeconds": "3",
            "allowWatchBookmarks": bookmarks,
        }
        with target.quietly(), c.stream("GET", at, params=params) as r:
            with target.raw_client() as writer:
                create(writer, f"change-{bookmarks}", at=at)
            events = [json.loads(x) for x in r.iter_lines() if x.strip()]
        # When bookmarks come is the server's choice (test_known_difference_bookmark_timing); what else
        # comes is compared.
        marks = [e for e in events if e["type"] == "BOOKMARK"]
        other = [e for e in events if e["type"] != "BOOKMARK"]
        assert target.record("events", [(e["type"], e["object"]["metadata"]["name"]) for e in other]) == [
            ("ADDED", f"change-{bookmarks}")
        ]
        assert bool(marks) == (bookmarks == "true")
        for mark in marks:
            assert mark["object"]["kind"] == "ConfigMap" and mark["object"]["apiVersion"] == "v1"
            assert int(mark["object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_send_initial_events_ends_with_the_initial_events_end_bookmark(target: Target) -> None:
    create(target.http, "a", at=target.cm)
    events = watch(
        target.http,
        target.cm,
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks="true",
        timeoutSeconds="1",
    )
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_send_initial_events_without_not_older_than_gets_422(target: Target) -> None:
    r = target.http.get(target.cm, params={"watch": "true", "sendInitialEvents": "true"})
    assert_status(r, 422, "Invalid")


def test_objects_entering_and_leaving_a_label_selector_arrive_as_added_and_deleted(target: Target) -> None:
    c, at = target.http, target.cm
    created = create(c, "x", at=at, labels={"sel": "no"})
    merge(c, at + "/x", {"metadata": {"labels": {"sel": "yes"}}})
    merge(c, at + "/x", {"data": {"more": "data"}})
    left = merge(c, at + "/x", {"metadata": {"labels": {"sel": "no"}}}).json()
    merge(c, at + "/x", {"data": {"unseen": "change"}})
    events = watch(c, at, resourceVersion=str(rv_of(created)), labelSelector="sel=yes")
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    # The DELETED for a selector exit carries the previous state with the new resourceVersion.
    assert events[2]["object"]["metadata"]["labels"] == {"sel": "yes"}
    assert rv_of(events[2]["object"]) == rv_of(left)


@pytest.mark.slow  # waits out watches of timeoutSeconds
def test_a_namespaced_watch_sees_only_its_namespace(target: Target) -> None:
    c, at = target.http, target.cm
    rv = c.get(at).json()["metadata"]["resourceVersion"]
    other = target.unique("other")
    c.post("/api/v1/namespaces", json={"metadata": {"name": other}})
    c.post(target.path("configmaps", namespace=other), json=cm("there"))
    create(c, "here", at=at)
    events = watch(c, at, resourceVersion=rv)
    assert names([e["object"] for e in events]) == ["here"]
    with target.quietly():  # a real server also streams the other namespaces of the session
        everywhere = watch(c, "/api/v1/configmaps", resourceVersion=rv)
    mine = [e["object"] for e in everywhere if e["object"]["metadata"]["namespace"] in (target.ns, other)]
    assert target.record("everywhere", names(mine)) == ["there", "here"]


@pytest.mark.slow  # waits out watches of timeoutSeconds
def test_concurrent_watches_see_identical_event_sequences(target: Target) -> None:
    c, at = target.http, target.cm
    rv = c.get(at).json()["metadata"]["resourceVersion"]
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "2"}
    with c.stream("GET", at, params=params) as r1, target.client().stream("GET", at, params=params) as r2:
        writer = target.client()
        for i in range(5):
            create(writer, f"w{i}", at=at)
            merge(writer, at + f"/w{i}", {"data": {"i": str(i)}})
        seq1 = [(json.loads(x)["type"], rv_of(json.loads(x)["object"])) for x in r1.iter_lines() if x]
        seq2 = [(json.loads(x)["type"], rv_of(json.loads(x)["object"])) for x in r2.iter_lines() if x]
    assert len(seq1) == 10 and seq1 == seq2


def test_the_legacy_watch_path_streams_events(target: Target) -> None:
    create(target.http, "a", at=target.cm)
    path = f"/api/v1/watch/namespaces/{target.ns}/configmaps"
    with target.http.stream("GET", path, params={"timeoutSeconds": "1"}) as r:
        events = [json.loads(x) for x in r.iter_lines() if x]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


def test_timeout_seconds_ends_the_stream_cleanly_without_an_error_event(target: Target) -> None:
    create(target.http, "a", at=target.cm)
    events = watch(target.http, target.cm, timeoutSeconds="1")
    assert [e["type"] for e in events] == ["ADDED"]


# ----- F. create, update, metadata ------------------------------------------------------------


def test_create_sets_uid_timestamp_resource_version_and_generation_for_workloads(target: Target) -> None:
    r = target.http.post(target.deploy, json=deployment("web"))
    assert r.status_code == 201
    meta = r.json()["metadata"]
    assert len(meta["uid"]) == 36 and meta["namespace"] == target.ns
    assert meta["creationTimestamp"].endswith("Z") and len(meta["creationTimestamp"]) == 20
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    assert "generation" not in create(target.http, "plain", at=target.cm)["metadata"]


def test_create_needs_a_name_or_generate_name(target: Target) -> None:
    c = target.http
    body = assert_status(c.post(target.cm, json={"metadata": {}}), 422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    made = c.post(target.cm, json={"metadata": {"generateName": "gen-"}}).json()
    name = made["metadata"]["name"]
    assert name.startswith("gen-") and len(name) == 9
    assert set(name[4:]) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_an_invalid_object_name_gets_422(target: Target) -> None:
    body = assert_status(target.http.post(target.cm, json=cm("Not_Valid")), 422, "Invalid")
    assert body["message"].startswith('ConfigMap "Not_Valid" is invalid: metadata.name: Invalid value')


def test_a_body_namespace_different_from_the_url_gets_400(target: Target) -> None:
    body = cm("x")
    body["metadata"]["namespace"] = "kube-system"
    r = target.http.post(target.cm, json=body)
    assert_status(
        r,
        400,
        "BadRequest",
        "the namespace of the provided object does not match the namespace sent on the request",
    )


def test_a_namespace_on_a_cluster_scoped_object_is_cleared(target: Target) -> None:
    body = {"metadata": {"name": target.unique("viewer"), "namespace": "default"}, "rules": []}
    path = "/apis/rbac.authorization.k8s.io/v1/clusterroles"
    r = target.http.post(path, json=body)
    assert r.status_code == 201 and "namespace" not in r.json()["metadata"]
    assert target.http.delete(f"{path}/{target.unique('viewer')}").status_code == 200


def test_a_resource_version_in_a_create_body_gets_a_500_without_reason(target: Target) -> None:
    body = cm("x")
    body["metadata"]["resourceVersion"] = "12"
    r = target.http.post(target.cm, json=body)
    assert r.status_code == 500
    assert "reason" not in r.json()  # empty: left out
    assert r.json()["message"] == "resourceVersion should not be set on objects to be created"


def test_creating_in_a_missing_namespace_gets_namespace_not_found(target: Target) -> None:
    ghost = target.unique("ghost")
    r = target.http.post(target.path("configmaps", namespace=ghost), json=cm("x"))
    assert_status(r, 404, "NotFound", f'namespaces "{ghost}" not found')


def test_update_keeps_the_metadata_the_server_owns(target: Target) -> None:
    c, at = target.http, target.deploy
    live = c.post(at, json=deployment("web")).json()
    sent = json.loads(json.dumps(live))
    sent["metadata"].update(creationTimestamp="2000-01-01T00:00:00Z", generation=99)
    del sent["metadata"]["uid"]
    sent["spec"]["replicas"] = 3
    got = c.put(at + "/web", json=sent).json()
    assert got["metadata"]["uid"] == live["metadata"]["uid"]
    assert got["metadata"]["creationTimestamp"] == live["metadata"]["creationTimestamp"]
    assert got["metadata"]["generation"] == 2


def test_an_update_without_resource_version_is_unconditional_for_builtins(target: Target) -> None:
    create(target.http, "a", at=target.cm)
    r = target.http.put(target.cm + "/a", json=cm("a", data={"new": "data"}))
    assert r.status_code == 200 and r.json()["data"] == {"new": "data"}


def test_an_update_of_a_missing_object_gets_404_and_a_name_mismatch_400(target: Target) -> None:
    c, at = target.http, target.cm
    assert_status(c.put(at + "/nope", json=cm("nope")), 404, "NotFound")
    create(c, "a", at=at)
    assert_status(
        c.put(at + "/a", json=cm("b")),
        400,
        "BadRequest",
        "the name of the object (b) does not match the name on the URL (a)",
    )


def test_a_spec_change_bumps_generation_and_a_label_change_does_not(target: Target) -> None:
    c, at = target.http, target.deploy
    c.post(at, json=deployment("web"))
    labelled = merge(c, at + "/web", {"metadata": {"labels": {"x": "y"}}}).json()
    assert labelled["metadata"]["generation"] == 1
    scaled = merge(c, at + "/web", {"spec": {"replicas": 4}}).json()
    assert scaled["metadata"]["generation"] == 2


def test_a_no_op_write_keeps_the_resource_version_and_emits_no_event(target: Target) -> None:
    c, at = target.http, target.cm
    created = create(c, "same", at=at, data={"a": "1"})
    again = merge(c, at + "/same", {"data": {"a": "1"}})
    assert again.status_code == 200 and rv_of(again.json()) == rv_of(created)
    put = c.put(at + "/same", json=created)
    assert rv_of(put.json()) == rv_of(created)
    assert watch(c, at, resourceVersion=str(rv_of(created))) == []


def test_dry_run_create_stores_nothing_and_returns_no_resource_version(target: Target) -> None:
    c, at = target.http, target.cm
    before = c.get(at).json()["metadata"]["resourceVersion"]
    r = c.post(at, json=cm("dry"), params={"dryRun": "All"})
    assert r.status_code == 201 and "resourceVersion" not in r.json()["metadata"]
    assert c.get(at + "/dry").status_code == 404
    assert watch(c, at, resourceVersion=before) == []


def test_dry_run_update_patch_and_delete_change_nothing(target: Target) -> None:
    c, at = target.http, target.cm
    created = create(c, "keep", at=at, data={"a": "1"})
    r = merge(c, at + "/keep", {"data": {"a": "2"}}, dryRun="All")
    assert r.json()["data"] == {"a": "2"} and rv_of(r.json()) == rv_of(created)
    assert c.delete(at + "/keep", params={"dryRun": "All"}).status_code == 200
    live = c.get(at + "/keep").json()
    assert live["data"] == {"a": "1"} and rv_of(live) == rv_of(created)


def test_an_unsupported_dry_run_value_gets_422(target: Target) -> None:
    assert_status(target.http.post(target.cm, json=cm("x"), params={"dryRun": "Some"}), 422, "Invalid")


def test_the_default_field_manager_is_the_user_agent_prefix(target: Target) -> None:
    c, at = target.http, target.cm
    r = c.post(at, json=cm("ua"), headers={"User-Agent": "kr8s/0.20.15 (python)"})
    managers = [e["manager"] for e in r.json()["metadata"]["managedFields"]]
    assert managers == ["kr8s"]
    r = c.post(at, json=cm("named"), params={"fieldManager": "fleet"})
    assert [e["manager"] for e in r.json()["metadata"]["managedFields"]] == ["fleet"]


def test_a_field_manager_over_128_characters_gets_422(target: Target) -> None:
    r = target.http.post(target.cm, json=cm("x"), params={"fieldManager": "m" * 129})
    assert_status(r, 422, "Invalid")


def test_main_resource_writes_keep_status_and_status_writes_keep_spec(target: Target) -> None:
    c, at = target.http, target.deploy
    c.post(at, json=deployment("web"))
    st = merge(c, at + "/web/status", {"status": {"replicas": 1}, "spec": {"replicas": 9}}).json()
    assert st["status"]["replicas"] == 1 and st["spec"]["replicas"] == 1
    assert st["metadata"]["generation"] == 1
    main = merge(c, at + "/web", {"status": {"replicas": 7}, "spec": {"replicas": 2}}).json()
    assert main["status"]["replicas"] == 1 and main["spec"]["replicas"] == 2


def test_create_resets_the_status_of_kinds_with_a_status_subresource(target: Target) -> None:
    body = deployment("web")
    body["status"] = {"replicas": 5}
    assert target.http.post(target.deploy, json=body).json()["status"] == {}


def test_the_scale_subresource_reads_and_writes_replicas(target: Target) -> None:
    c, at = target.http, target.deploy
    c.post(at, json=deployment("web", replicas=2))
    scale = c.get(at + "/web/scale").json()
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"]["replicas"] == 2 and scale["status"]["selector"] == "app=web"
    r = merge(c, at + "/web/scale", {"spec": {"replicas": 5}})
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 5
    assert c.get(at + "/web").json()["spec"]["replicas"] == 5


# ----- G. patches ---------------------------------------------------------------------------------


def test_merge_patch_deletes_keys_with_null_and_replaces_lists(target: Target) -> None:
    c = target.http
    c.post(target.deploy, json=deployment("web"))
    create(c, "m", at=target.cm, data={"a": "1", "b": "2"})
    got = merge(c, target.cm + "/m", {"data": {"a": None, "c": "3"}}).json()
    assert got["data"] == {"b": "2", "c": "3"}
    containers = [{"name": "other", "image": "busybox"}]
    d = merge(c, target.deploy + "/web", {"spec": {"template": {"spec": {"containers": containers}}}}).json()
    assert [c["name"] for c in d["spec"]["template"]["spec"]["containers"]] == ["other"]


def test_json_patch_applies_rfc_6902_operations(target: Target) -> None:
    create(target.http, "j", at=target.cm, data={"a": "1"})
    ops = [
        {"op": "add", "path": "/data/b", "value": "2"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "copy", "from": "/data/a", "path": "/data/c"},
        {"op": "move", "from": "/data/b", "path": "/data/d"},
        {"op": "test", "path": "/data/a", "value": "10"},
        {"op": "remove", "path": "/data/c"},
    ]
    r = target.http.patch(
        target.cm + "/j", content=json.dumps(ops), headers={"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 200 and r.json()["data"] == {"a": "10", "d": "2"}


def test_a_json_patch_that_fails_to_apply_or_is_malformed_gets_the_generic_422(target: Target) -> None:
    c, at = target.http, target.cm + "/j"
    create(c, "j", at=target.cm)
    headers = {"Content-Type": "application/json-patch+json"}
    failing = [{"op": "test", "path": "/data/k", "value": "other"}]
    missing = [{"op": "remove", "path": "/data/nope"}]
    malformed = [{"op": "explode", "path": "/data"}]
    for ops in (failing, missing, malformed):
        body = assert_status(
            c.patch(at, content=json.dumps(ops), headers=headers),
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        )
        assert body["details"] == {}


def test_a_patch_to_a_missing_object_gets_404(target: Target) -> None:
    assert_status(merge(target.http, target.cm + "/nope", {"data": {}}), 404, "NotFound")


def test_a_resource_version_inside_a_merge_patch_is_a_precondition(target: Target) -> None:
    c, at = target.http, target.cm
    created = create(c, "p", at=at)
    r = merge(c, at + "/p", {"metadata": {"resourceVersion": "1"}, "data": {"x": "y"}})
    assert_status(r, 409, "Conflict")
    ok = merge(c, at + "/p", {"metadata": {"resourceVersion": str(rv_of(created))}, "data": {"x": "y"}})
    assert ok.status_code == 200


def test_force_on_a_non_apply_patch_gets_422(target: Target) -> None:
    create(target.http, "f", at=target.cm)
    body = assert_status(merge(target.http, target.cm + "/f", {"data": {}}, force="true"), 422, "Invalid")
    assert "force" in body["message"]


def test_an_unknown_patch_content_type_gets_415(target: Target) -> None:
    create(target.http, "u", at=target.cm)
    r = target.http.patch(target.cm + "/u", content=b"{}", headers={"Content-Type": "text/plain"})
    body = assert_status(r, 415, "UnsupportedMediaType", "415: Unsupported Media Type")
    assert body["details"] == {}


def test_apply_without_a_field_manager_gets_422(target: Target) -> None:
    r = target.http.patch(target.cm + "/a", content=json.dumps(cm("a")), headers=APPLY)
    body = assert_status(r, 422, "Invalid")
    assert body["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    )


def test_apply_of_a_missing_object_creates_it_with_201(target: Target) -> None:
    r = target.http.patch(
        target.cm + "/applied",
        content=json.dumps(cm("applied")),
        headers=APPLY,
        params={"fieldManager": "fleet"},
    )
    assert r.status_code == 201, r.text
    entry = r.json()["metadata"]["managedFields"][0]
    assert (entry["manager"], entry["operation"]) == ("fleet", "Apply")


def test_apply_with_a_wrong_api_version_gets_400(target: Target) -> None:
    body = cm("x")
    body["apiVersion"] = "v2"
    r = target.http.patch(
        target.cm + "/x", content=json.dumps(body), headers=APPLY, params={"fieldManager": "fleet"}
    )
    assert_status(r, 400, "BadRequest")


def test_strict_field_validation_rejects_unknown_fields_and_warn_reports_them(target: Target) -> None:
    body = deployment("web")
    body["spec"]["bogus"] = 1
    r = target.http.post(target.deploy, json=body, params={"fieldValidation": "Strict"})
    assert_status(
        r,
        400,
        "BadRequest",
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field '
        '"spec.bogus"',
    )
    r = target.http.post(target.deploy, json=body, params={"fieldValidation": "Warn"})
    assert r.status_code == 201
    assert r.headers["Warning"] == '299 - "unknown field \\"spec.bogus\\""'
    assert "bogus" not in r.json()["spec"]


# ----- bad input ----------------------------------------------------------------------------------


def test_malformed_json_gets_400(target: Target) -> None:
    with target.quietly():  # the JSON parser's words differ: test_known_difference_json_syntax_errors
        r = target.http.post(target.cm, content=b"{not json", headers={"Content-Type": "application/json"})
    body = assert_status(r, 400, "BadRequest")
    prefix = (
        "the object provided is unrecognized (must be of type ConfigMap): couldn't get version/kind; json parse "
        "error: "
    )
    assert target.record("prefix", body["message"][: len(prefix)]) == prefix
    assert body["message"].endswith(" ({not json)")


def test_a_json_body_that_is_not_an_object_gets_400(target: Target) -> None:
    r = target.http.post(target.cm, content=b"[1,2]", headers={"Content-Type": "application/json"})
    assert_status(r, 400, "BadRequest")


def test_a_body_over_3_mib_gets_413_and_the_server_keeps_serving(target: Target) -> None:
    big = cm("big", data={"blob": "x" * (3 * 1024 * 1024 + 10)})
    r = target.http.post(target.cm, content=orjson.dumps(big), headers={"Content-Type": "application/json"})
    assert_status(r, 413, "RequestEntityTooLarge")
    assert target.http.get("/healthz").status_code == 200


def test_post_to_a_named_object_gets_405(target: Target) -> None:
    assert_status(target.http.post(target.cm + "/x", json=cm("x")), 405, "MethodNotAllowed")


# ----- delete and namespaces -------------------------------------------------------------------------


def test_delete_without_finalizers_removes_at_once_and_answers_a_success_status(target: Target) -> None:
    c, at = target.http, target.cm
    made = create(c, "d", at=at)
    r = c.delete(at + "/d")
    assert r.status_code == 200
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": "d", "kind": "configmaps", "uid": made["metadata"]["uid"]},
    }
    assert c.get(at + "/d").status_code == 404
    assert_status(c.delete(at + "/d"), 404, "NotFound")


def test_deleting_a_pod_answers_with_the_deleted_object(target: Target) -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    with target.quietly():  # what admission adds to a Pod differs: test_known_difference_pod_admission
        target.http.post(target.path("pods"), json=pod)
        r = target.http.delete(target.path("pods") + "/p")
    assert target.record("deleted", [r.status_code, r.json()["kind"]]) == [200, "Pod"]


def test_finalizers_hold_a_deleted_object_until_the_last_one_is_removed(target: Target) -> None:
    c, at = target.http, target.cm
    body = cm("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    c.post(at, json=body)
    r = c.delete(at + "/held")
    assert r.status_code == 200
    meta = r.json()["metadata"]
    assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == 0
    assert c.get(at + "/held").status_code == 200
    again = c.delete(at + "/held").json()
    assert again["metadata"]["resourceVersion"] == meta["resourceVersion"]
    with target.quietly():  # the real one repeats the cause: test_known_difference_repeated_causes
        blocked = merge(
            c, at + "/held", {"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}}
        )
    body = assert_status(blocked, 422, "Invalid")
    assert target.record("causes", unique_causes(body)) == [
        {
            "reason": "FieldValueForbidden",
            "message": "Forbidden: no new finalizers can be added if the object is being deleted, found new "
            'finalizers []string{"example.com/new"}',
            "field": "metadata.finalizers",
        }
    ]
    done = merge(c, at + "/held", {"metadata": {"finalizers": None}})
    assert done.status_code == 200
    assert done.json()["metadata"]["resourceVersion"] == meta["resourceVersion"]  # as it was deleted
    assert c.get(at + "/held").status_code == 404


def test_a_delete_precondition_mismatch_gets_409(target: Target) -> None:
    create(target.http, "pre", at=target.cm)
    r = target.http.request("DELETE", target.cm + "/pre", json={"preconditions": {"uid": "not-the-uid"}})
    body = assert_status(r, 409, "Conflict")
    assert body["message"].startswith(
        'Operation cannot be fulfilled on ConfigMap "pre": the UID in the precondition (not-the-uid) does not '
        "match the UID in record ("
    )
    assert body["details"] == {"name": "pre", "kind": "ConfigMap"}


def test_an_invalid_propagation_policy_gets_422(target: Target) -> None:
    create(target.http, "pp", at=target.cm)
    r = target.http.delete(target.cm + "/pp", params={"propagationPolicy": "Sideways"})
    assert_status(r, 422, "Invalid")


def test_delete_collection_honours_the_label_selector(target: Target) -> None:
    c, at = target.http, target.cm
    create(c, "keep", at=at, labels={"team": "a"})
    create(c, "drop1", at=at, labels={"team": "b"})
    create(c, "drop2", at=at, labels={"team": "b"})
    r = c.delete(at, params={"labelSelector": "team=b"})
    assert r.status_code == 200 and r.json()["kind"] == "ConfigMapList"
    assert names(c.get(at).json()["items"]) == ["keep"]


def test_the_default_namespaces_exist(target: Target) -> None:
    defaults = {"default", "kube-system", "kube-public", "kube-node-lease"}
    with target.quietly():  # a real server also lists the namespaces of the session
        found = {i["metadata"]["name"] for i in target.http.get("/api/v1/namespaces").json()["items"]}
    assert target.record("defaults", sorted(defaults & found)) == sorted(defaults)
    ns = target.http.get("/api/v1/namespaces/default").json()
    assert ns["spec"]["finalizers"] == ["kubernetes"] and ns["status"]["phase"] == "Active"


def test_only_the_default_namespaces_exist_in_a_new_cluster(client: httpx.Client) -> None:
    names_ = {i["metadata"]["name"] for i in client.get("/api/v1/namespaces").json()["items"]}
    assert names_ == {"default", "kube-system", "kube-public", "kube-node-lease"}


def test_deleting_default_namespaces_is_forbidden(target: Target) -> None:
    r = target.http.delete("/api/v1/namespaces/default")
    assert_status(r, 403, "Forbidden", 'namespaces "default" is forbidden: this namespace may not be deleted')


def test_deleting_a_namespace_terminates_it_and_removes_its_content(target: Target) -> None:
    c = target.http
    doomed = target.unique("doomed")
    c.post("/api/v1/namespaces", json={"metadata": {"name": doomed}})
    c.post(target.path("configmaps", namespace=doomed), json=cm("inside"))
    r = c.delete(f"/api/v1/namespaces/{doomed}")
    assert r.status_code == 200 and r.json()["status"]["phase"] == "Terminating"
    target.eventually(
        lambda: c.get(f"/api/v1/namespaces/{doomed}").status_code == 404, what="the namespace is gone"
    )
    assert c.get(target.path("configmaps", namespace=doomed) + "/inside").status_code == 404


def test_a_deleted_namespace_leaves_with_one_deleted_event(client: httpx.Client) -> None:
    client.post("/api/v1/namespaces", json={"metadata": {"name": "doomed"}})
    client.post("/api/v1/namespaces/doomed/configmaps", json=cm("inside"))
    r = client.delete("/api/v1/namespaces/doomed")
    events = watch(client, "/api/v1/namespaces", resourceVersion=r.json()["metadata"]["resourceVersion"])
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("DELETED", "doomed")]


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


def test_a_self_subject_access_review_is_allowed_and_not_stored(target: Target) -> None:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": "default"}},
    }
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    r = target.http.post(path, json=review)
    assert r.status_code == 201 and r.json()["status"]["allowed"] is True
    assert r.json()["spec"] == review["spec"]
    assert_status(target.http.get(path), 405, "MethodNotAllowed")


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


def test_creates_in_a_terminating_namespace_are_forbidden_until_it_is_gone(target: Target) -> None:
    c = target.http
    ending = target.unique("ending")
    at = target.path("configmaps", namespace=ending)
    c.post("/api/v1/namespaces", json={"metadata": {"name": ending}})
    held = cm("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    c.post(at, json=held)
    c.delete(f"/api/v1/namespaces/{ending}")
    r = c.post(at, json=cm("late"))
    body = assert_status(r, 403, "Forbidden")
    assert body["message"] == (
        f'configmaps "late" is forbidden: unable to create new content in namespace {ending} because it is '
        "being terminated"
    )
    assert body["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    assert c.get(f"/api/v1/namespaces/{ending}").json()["status"]["phase"] == "Terminating"
    target.eventually(
        lambda: "deletionTimestamp" in c.get(at + "/held").json()["metadata"],
        what="the namespace's content is being deleted",
    )
    merge(c, at + "/held", {"metadata": {"finalizers": None}})
    target.eventually(
        lambda: c.get(f"/api/v1/namespaces/{ending}").status_code == 404, what="the namespace is gone"
    )


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
    target: Target, metadata: Any
) -> None:
    c, at = target.http, target.cm
    r = c.post(at, json={"metadata": metadata, "data": {}})
    body = assert_status(r, 400, "BadRequest")
    assert body["message"].startswith(
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal'
    )
    create(c, "fine", at=at)
    with target.quietly():  # the real one quotes the patched object: test_known_difference_patch_value
        patched = merge(c, at + "/fine", {"metadata": {"labels": {"a": 1}}})
    body = assert_status(patched, 422, "Invalid")
    (cause,) = body["details"]["causes"]
    assert target.record("patch cause", [cause["reason"], cause["field"]]) == ["FieldValueInvalid", "patch"]
    assert cause["message"].startswith("Invalid value: ") and cause["message"].endswith(
        ": json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string"
    )


def test_a_field_of_the_wrong_json_type_gets_the_go_decoders_400(target: Target) -> None:
    body = deployment("web")
    body["spec"]["replicas"] = "3"
    r = target.http.post(target.deploy, json=body)
    assert_status(
        r,
        400,
        "BadRequest",
        'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal string into Go '
        "struct field DeploymentSpec.spec.replicas of type int32",
    )
    svc = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}]}}
    assert target.http.post(target.path("services"), json=svc).status_code == 201


def test_duplicate_fields_fail_strict_validation_and_warn_otherwise(target: Target) -> None:
    raw = b'{"metadata": {"name": "dup", "name": "dup"}, "data": {"a": "1"}, "data": {"a": "2"}}'
    headers = {"Content-Type": "application/json"}
    r = target.http.post(target.cm, content=raw, headers=headers, params={"fieldValidation": "Strict"})
    assert_status(
        r,
        400,
        "BadRequest",
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: duplicate field '
        '"metadata.name", duplicate field "data"',
    )
    r = target.http.post(target.cm, content=raw, headers=headers)
    assert r.status_code == 201 and r.json()["data"] == {"a": "2"}
    assert 'duplicate field \\"data\\"' in r.headers["Warning"]


@pytest.mark.slow  # waits out watches of timeoutSeconds
def test_a_watch_of_one_object_sees_only_that_object(target: Target) -> None:
    c, at = target.http, target.cm
    rv = c.get(at).json()["metadata"]["resourceVersion"]
    create(c, "mine", at=at)
    create(c, "other", at=at)
    events = watch(c, at, resourceVersion=rv, fieldSelector="metadata.name=mine")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "mine")]
    legacy = f"/api/v1/watch/namespaces/{target.ns}/configmaps/mine"
    with c.stream("GET", legacy, params={"resourceVersion": rv, "timeoutSeconds": "1"}) as r:
        assert [json.loads(x)["object"]["metadata"]["name"] for x in r.iter_lines() if x] == ["mine"]
    # `?watch=true` on the object's own URL is a plain GET.
    plain = c.get(at + "/mine", params={"watch": "true", "timeoutSeconds": "1"})
    assert plain.json()["kind"] == "ConfigMap" and plain.json()["metadata"]["name"] == "mine"


def test_a_resource_version_in_an_apply_is_a_precondition(target: Target) -> None:
    def apply(body: dict[str, Any]) -> httpx.Response:
        return target.http.patch(
            target.cm + "/ap", content=json.dumps(body), headers=APPLY, params={"fieldManager": "fleet"}
        )

    made = apply(cm("ap")).json()
    stale = cm("ap", data={"k": "new"})
    stale["metadata"]["resourceVersion"] = "1"
    assert_status(apply(stale), 409, "Conflict")
    stale["metadata"]["resourceVersion"] = made["metadata"]["resourceVersion"]
    assert apply(stale).status_code == 200


@pytest.mark.slow  # waits out watches of timeoutSeconds
def test_conformance_multiple_watchers_observe_add_update_and_delete_by_label(target: Target) -> None:
    """Port of the conformance test "should observe add, update, and delete watch notifications"."""
    c, at = target.http, target.cm
    key = "watch-this-configmap"
    start = c.get(at).json()["metadata"]["resourceVersion"]
    c.post(at, json=cm("cm-a", labels={key: "multiple-watchers-A"}))
    merge(c, at + "/cm-a", {"data": {"mutation": "1"}})
    merge(c, at + "/cm-a", {"data": {"mutation": "2"}})
    c.delete(at + "/cm-a")
    c.post(at, json=cm("cm-b", labels={key: "multiple-watchers-B"}))
    c.delete(at + "/cm-b")

    def seen(selector: str) -> list[tuple[str, str, str]]:
        events = watch(c, at, resourceVersion=start, labelSelector=selector)
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


def test_services_get_a_cluster_ip_and_node_ports_that_updates_keep(target: Target) -> None:
    c, svc = target.http, target.path("services")
    body = {"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}
    made = c.post(svc, json=body).json()["spec"]
    assert made["clusterIP"].startswith("10.96.") and made["clusterIPs"] == [made["clusterIP"]]
    assert 30000 <= made["ports"][0]["nodePort"] <= 32767
    other = c.post(svc, json={"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}}).json()
    assert other["spec"]["clusterIP"] != made["clusterIP"]
    headless = {"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}
    assert c.post(svc, json=headless).json()["spec"]["clusterIP"] == "None"
    # A client that does not send the allocated values back (a PUT of its own manifest) keeps them.
    kept = c.put(svc + "/web", json=body).json()["spec"]
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
    target: Target, resources: dict[str, Any], qos: str
) -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]},
    }
    with target.quietly():  # what admission adds to a Pod differs: test_known_difference_pod_admission
        made = target.http.post(target.path("pods"), json=pod).json()
    assert target.record("status", made["status"]) == {"phase": "Pending", "qosClass": qos}


@pytest.mark.parametrize(
    ("labels", "annotations", "fragment"),
    [
        ({"app": "has space"}, None, 'metadata.labels: Invalid value: "has space": a valid label must be'),
        ({"app": "x" * 64}, None, "must be no more than 63 bytes"),
        ({"bad key!": "v"}, None, 'metadata.labels: Invalid value: "bad key!": name part must consist'),
        ({"Example.COM/app": "v"}, None, "prefix part a lowercase RFC 1123 subdomain"),
        (None, {"no good/x/y": "v"}, "metadata.annotations: Invalid value"),
        (
            None,
            {"big": "x" * (256 * 1024 + 1)},
            "metadata.annotations: Too long: may not be more than 262144 bytes",
        ),
    ],
)
def test_invalid_labels_and_annotations_get_422_on_every_write_path(
    target: Target, labels: Any, annotations: Any, fragment: str
) -> None:
    c, at = target.http, target.cm
    body = cm("bad")
    if labels:
        body["metadata"]["labels"] = labels
    if annotations:
        body["metadata"]["annotations"] = annotations
    created = assert_status(c.post(at, json=body), 422, "Invalid")
    assert created["message"].startswith('ConfigMap "bad" is invalid: ') and fragment in created["message"]
    create(c, "fine", at=at)
    patch = {"metadata": {k: v for k, v in (("labels", labels), ("annotations", annotations)) if v}}
    with target.quietly():  # the real one repeats causes: test_known_difference_repeated_causes
        patched = assert_status(merge(c, at + "/fine", patch), 422, "Invalid")
    target.record("patch causes", unique_causes(patched))
    applied = c.patch(
        at + "/applied",
        content=json.dumps(body | {"metadata": {**body["metadata"], "name": "applied"}}),
        headers=APPLY,
        params={"fieldManager": "fleet"},
    )
    assert_status(applied, 422, "Invalid")


def test_the_namespace_finalize_subresource_writes_all_but_the_status(target: Target) -> None:
    c = target.http
    fin = target.unique("fin")
    c.post("/api/v1/namespaces", json={"metadata": {"name": fin}})
    live = c.get(f"/api/v1/namespaces/{fin}").json()
    sent = json.loads(json.dumps(live))
    sent["spec"]["finalizers"] = []
    sent["metadata"]["labels"] = {"added": "yes"}
    sent["status"] = {"phase": "Terminating"}
    r = c.put(f"/api/v1/namespaces/{fin}/finalize", json=sent)
    assert r.status_code == 200
    got = r.json()
    assert "finalizers" not in got["spec"]
    assert got["metadata"]["labels"] == {"added": "yes", "kubernetes.io/metadata.name": fin}
    assert got["status"] == {"phase": "Active"}
    assert [m.get("subresource") for m in got["metadata"]["managedFields"]] == [None, "finalize"]


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


def test_apis_with_a_trailing_slash_answers_the_legacy_group_list_even_when_asked_for_aggregated(
    target: Target,
) -> None:
    with target.quietly():  # the groups served differ: test_known_difference_the_groups_served
        slashed = target.http.get("/apis/", headers={"Accept": AGG})
        core = target.http.get("/api/", headers={"Accept": AGG})
    kinds = [slashed.json()["kind"], slashed.headers["content-type"], core.json()["kind"]]
    assert target.record("kinds", kinds) == ["APIGroupList", "application/json", "APIGroupDiscoveryList"]
