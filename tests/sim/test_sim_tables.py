"""Server-side printing: meta.k8s.io/v1 Tables for kubectl's human-readable output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fleet.sim import testing
from fleet.sim.rest import tables

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
CM = "/api/v1/namespaces/default/configmaps"
KUBECTL = str(Path(sys.executable).parent / "kubectl")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (45, "45s"),
        (119, "119s"),
        (182, "3m2s"),
        (600, "10m"),
        (4 * 3600 + 300, "4h5m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 7200, "3d2h"),
        (300 * 86400, "300d"),
        (3 * 365 * 86400 + 20 * 86400, "3y20d"),
    ],
)
def test_ages_read_like_kubectl_prints_them(seconds: float, text: str) -> None:
    assert tables.human_duration(seconds) == text


def test_a_table_request_gets_the_columns_of_the_kinds_printer(client: httpx.Client) -> None:
    client.post(CM, json={"metadata": {"name": "two"}, "data": {"a": "1", "b": "2"}})
    table = client.get(CM, headers={"Accept": TABLE}).json()
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["metadata"]["resourceVersion"]
    row = table["rows"][0]
    assert row["cells"][:2] == ["two", 2]
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["name"] == "two"
    whole = client.get(CM, headers={"Accept": TABLE}, params={"includeObject": "Object"}).json()
    assert whole["rows"][0]["object"]["data"] == {"a": "1", "b": "2"}
    one = client.get(CM + "/two", headers={"Accept": TABLE}).json()
    assert one["kind"] == "Table" and len(one["rows"]) == 1


def test_a_kind_without_a_printer_answers_plain_json(client: httpx.Client) -> None:
    r = client.get("/apis/networking.k8s.io/v1/namespaces/default/networkpolicies", headers={"Accept": TABLE})
    assert r.json()["kind"] == "NetworkPolicyList"


def test_only_the_first_table_watch_event_carries_column_definitions(client: httpx.Client) -> None:
    rv = client.get(CM).json()["metadata"]["resourceVersion"]
    for name in ("a", "b"):
        client.post(CM, json={"metadata": {"name": name}})
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"}
    with client.stream("GET", CM, params=params, headers={"Accept": TABLE}) as r:
        events = [json.loads(x) for x in r.iter_lines() if x]
    assert [e["object"]["kind"] for e in events] == ["Table", "Table"]
    assert events[0]["object"]["columnDefinitions"] and events[1]["object"]["columnDefinitions"] is None
    assert [e["object"]["rows"][0]["cells"][0] for e in events] == ["a", "b"]


@pytest.mark.slow  # starts processes: kubectl
def test_kubectl_prints_the_server_columns_for_deployments(sim: testing.SimHandle, tmp_path: Path) -> None:
    body = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }
    with httpx.Client(base_url=sim.url("c1"), timeout=10) as c:
        assert c.post("/apis/apps/v1/namespaces/default/deployments", json=body).status_code == 201
    cmd = [
        KUBECTL,
        "--kubeconfig",
        str(sim.kubeconfig),
        "--context",
        "c1",
        "--cache-dir",
        str(tmp_path),
        "get",
        "deployments",
        "-o",
        "wide",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert out[0].split() == [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]
    assert out[1].split()[:2] == ["web", "0/3"] and out[1].split()[-3:] == ["c", "nginx", "app=web"]
