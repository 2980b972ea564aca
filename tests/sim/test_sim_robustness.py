"""Arbitrary request bodies never break the simulated server: every answer is an object or a real Status."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.sim import testing
from fleet.sim.storage import store

CM = "/api/v1/namespaces/default/configmaps"
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.sampled_from(["v1", "apps/v1", ""]) | st.text(max_size=5),
        "kind": st.sampled_from(["ConfigMap", "Secret"]) | st.text(max_size=5),
        "metadata": st.fixed_dictionaries({}, optional={"name": st.sampled_from(["x", "y"]) | JSON_VALUES})
        | JSON_VALUES,
        "data": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3) | JSON_VALUES,
        "extra": JSON_VALUES,
    },
)
BODIES = OBJECTS | JSON_VALUES
REQUESTS = st.sampled_from(
    [
        ("POST", CM, "application/json"),
        ("PUT", CM + "/x", "application/json"),
        ("PATCH", CM + "/x", "application/merge-patch+json"),
        ("PATCH", CM + "/x", "application/json-patch+json"),
        ("PATCH", CM + "/x", "application/strategic-merge-patch+json"),
        ("PATCH", CM + "/x", "application/apply-patch+yaml"),
        ("DELETE", CM + "/x", "application/json"),
    ]
)
QUIET = store.Settings(namespace_defaults=False, workload_status=False)


@pytest.mark.slow  # seconds: generated requests over HTTP
def test_arbitrary_bodies_get_objects_or_real_statuses() -> None:
    with (
        testing.serving(names=["fuzz"], settings=QUIET) as sim,
        httpx.Client(base_url=sim.url("fuzz"), timeout=10) as client,
    ):
        client.post(CM, json={"metadata": {"name": "x"}, "data": {"a": "b"}})

        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(request=REQUESTS, body=BODIES)
        def check(request: tuple[str, str, str], body: Any) -> None:
            method, path, content_type = request
            params = {"fieldManager": "fuzz"} if content_type.startswith("application/apply") else {}
            r = client.request(
                method, path, content=json.dumps(body), headers={"Content-Type": content_type}, params=params
            )
            assert r.headers["content-type"].startswith("application/json"), r.text
            answer = r.json()
            if r.status_code >= 400:
                assert answer["kind"] == "Status" and answer["code"] == r.status_code, answer
            # Decoding, metadata checks, merge and JSON patch are this server's own code: no internal errors.
            if content_type in (
                "application/json",
                "application/merge-patch+json",
                "application/json-patch+json",
            ):
                assert answer.get("reason") != "InternalError", answer
            if client.get(CM + "/x").status_code == 404:
                client.post(CM, json={"metadata": {"name": "x"}, "data": {"a": "b"}})

        check()
        assert client.get("/version").status_code == 200


PARAM_NAMES = st.sampled_from(
    [
        "resourceVersion",
        "resourceVersionMatch",
        "limit",
        "continue",
        "labelSelector",
        "fieldSelector",
        "watch",
        "timeoutSeconds",
        "allowWatchBookmarks",
        "sendInitialEvents",
        "dryRun",
        "fieldManager",
        "fieldValidation",
        "propagationPolicy",
        "force",
    ]
)
PARAM_VALUES = st.sampled_from(
    ["", "0", "1", "-1", "true", "All", "Exact", "NotOlderThan", "a=b", "!x", "99999999999999999999"]
) | st.text(max_size=8)


@pytest.mark.slow  # seconds: generated requests over HTTP
def test_arbitrary_query_parameters_get_answers_or_real_statuses() -> None:
    with (
        testing.serving(names=["fuzz"], settings=QUIET) as sim,
        httpx.Client(base_url=sim.url("fuzz"), timeout=10) as client,
    ):
        client.post(CM, json={"metadata": {"name": "x"}, "data": {"a": "b"}})

        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            method=st.sampled_from(["GET", "DELETE", "PATCH"]),
            path=st.sampled_from([CM, CM + "/x", "/api/v1/configmaps"]),
            params=st.dictionaries(PARAM_NAMES, PARAM_VALUES, max_size=4),
        )
        def check(method: str, path: str, params: dict[str, str]) -> None:
            if params.get("watch") in ("true", "1"):
                params["timeoutSeconds"] = "1"  # a watch must end: the server default is 30 minutes
            headers = {"Content-Type": "application/merge-patch+json"}
            r = client.request(method, path, params=params, content=b"{}", headers=headers)
            # A 500 only where the real server answers one: a GET of one object at a resourceVersion
            # that is no number ("resourceVersion: Invalid value: ...", no reason).
            real_500 = r.status_code == 500 and r.json()["message"].startswith(
                "resourceVersion: Invalid value:"
            )
            assert r.status_code < 500 or r.status_code == 504 or real_500, r.text
            if r.status_code >= 400:
                answer = r.json()
                assert answer["kind"] == "Status" and answer["code"] == r.status_code, answer
            if client.get(CM + "/x").status_code == 404:
                client.post(CM, json={"metadata": {"name": "x"}, "data": {"a": "b"}})

        check()
