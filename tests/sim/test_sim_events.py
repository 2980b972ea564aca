"""Events in both API versions: written through events.k8s.io/v1, read through core v1 (and back)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.sim import testing
from tests.sim.kubectl_runner import Runner

EVENTS = "/apis/events.k8s.io/v1/namespaces/default/events"
CORE = "/api/v1/namespaces/default/events"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def event(name: str = "applied.1", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "fleet.dev/fleet",
        "reportingInstance": "fleet",
        "action": "Apply",
        "reason": "Applied",
        "type": "Normal",
        "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "default", "name": "settings"},
        "note": "revision abc: 1 created",
        **extra,
    }


def test_an_event_written_through_events_k8s_io_is_a_core_event_and_reads_back_in_its_own_form(
    client: httpx.Client,
) -> None:
    created = client.post(EVENTS, json=event())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["apiVersion"] == "events.k8s.io/v1" and body["note"] == "revision abc: 1 created"
    assert body["regarding"]["name"] == "settings" and "involvedObject" not in body
    core = client.get(CORE + "/applied.1").json()
    assert core["apiVersion"] == "v1" and core["kind"] == "Event"
    assert core["involvedObject"]["name"] == "settings" and core["message"] == "revision abc: 1 created"
    assert core["reportingComponent"] == "fleet.dev/fleet" and "note" not in core
    listed = client.get(EVENTS).json()
    assert listed["kind"] == "EventList" and listed["apiVersion"] == "events.k8s.io/v1"
    assert [i["note"] for i in listed["items"]] == ["revision abc: 1 created"]


def test_a_series_is_merge_patched_through_events_k8s_io_and_other_fields_are_immutable(
    client: httpx.Client,
) -> None:
    client.post(EVENTS, json=event())
    series = {"series": {"count": 3, "lastObservedTime": "2026-01-01T00:05:00.000000Z"}}
    patched = client.patch(
        EVENTS + "/applied.1",
        content=json.dumps(series),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["series"] == series["series"]
    assert client.get(CORE + "/applied.1").json()["series"]["count"] == 3
    refused = client.patch(
        EVENTS + "/applied.1",
        content=json.dumps({"note": "rewritten"}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert refused.status_code == 422
    assert (
        refused.json()["message"]
        == 'Event.events.k8s.io "applied.1" is invalid: note: Invalid value: field is immutable'
    )


def test_an_event_without_what_events_k8s_io_requires_is_refused_naming_each_field(
    client: httpx.Client,
) -> None:
    bad = event(series={"count": 1, "lastObservedTime": "2026-01-01T00:00:00Z"})
    for name in ("reportingController", "action", "eventTime"):
        del bad[name]
    bad["regarding"] = {"kind": "Namespace", "name": "apps"}  # cluster-scoped, in namespace default: allowed
    r = client.post(EVENTS, json=bad)
    assert r.status_code == 422
    fields = [c["field"] for c in r.json()["details"]["causes"]]
    assert fields == ["reportingController", "action", "series.count", "eventTime"]
    elsewhere = event()
    elsewhere["metadata"]["namespace"] = "fleet-system"
    elsewhere["regarding"] = {"kind": "Namespace", "name": "apps"}
    client.post("/api/v1/namespaces", json={"metadata": {"name": "fleet-system"}})
    r = client.post("/apis/events.k8s.io/v1/namespaces/fleet-system/events", json=elsewhere)
    assert r.status_code == 422 and "does not match event.namespace" in r.text


def test_a_missing_event_is_not_found_under_its_own_group(client: httpx.Client) -> None:
    r = client.get(EVENTS + "/nothing")
    assert r.status_code == 404
    assert r.json()["message"] == 'events.events.k8s.io "nothing" not found'
    assert r.json()["details"] == {"name": "nothing", "group": "events.k8s.io", "kind": "events"}


def test_a_watch_through_events_k8s_io_sends_the_events_form(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    rv = client.get(EVENTS).json()["metadata"]["resourceVersion"]
    client.post(EVENTS, json=event())
    with httpx.stream(
        "GET", sim.url("c1") + EVENTS, params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "2"}
    ) as stream:
        first = json.loads(next(stream.iter_lines()))
    assert first["type"] == "ADDED"
    assert first["object"]["apiVersion"] == "events.k8s.io/v1" and first["object"]["note"].startswith(
        "revision"
    )


@pytest.mark.slow  # starts processes: kubectl
def test_kubectl_get_events_prints_what_was_written_through_events_k8s_io_with_its_count(
    sim: testing.SimHandle, client: httpx.Client, tmp_path: Path
) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    client.post(EVENTS, json=event(eventTime=now))
    client.patch(
        EVENTS + "/applied.1",
        content=json.dumps({"series": {"count": 4, "lastObservedTime": now}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    kubectl = Runner(sim, tmp_path / "cache", "c1")
    lines = kubectl("get", "events", "-n", "default").stdout.splitlines()
    assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert lines[1].split()[1:] == [
        "Normal",
        "Applied",
        "configmap/settings",
        "revision",
        "abc:",
        "1",
        "created",
    ]
    wide = kubectl("get", "events", "-n", "default", "-o", "wide").stdout.splitlines()
    header = wide[0].split()
    assert "COUNT" in header and "fleet.dev/fleet," in wide[1].split()
    assert wide[1].split()[-2:] == ["4", "applied.1"]
    grouped = kubectl("get", "events.events.k8s.io", "-n", "default", "-o", "json").stdout
    assert json.loads(grouped)["items"][0]["series"]["count"] == 4


def test_a_table_of_events_has_the_columns_of_the_real_printer(client: httpx.Client) -> None:
    client.post(EVENTS, json=event())
    table = client.get(CORE, headers={"Accept": TABLE}).json()
    assert [(c["name"], c["priority"]) for c in table["columnDefinitions"]] == [
        ("Last Seen", 0),
        ("Type", 0),
        ("Reason", 0),
        ("Object", 0),
        ("Subobject", 1),
        ("Source", 1),
        ("Message", 0),
        ("First Seen", 1),
        ("Count", 1),
        ("Name", 1),
    ]
    assert table["rows"][0]["cells"][1:] == [
        "Normal",
        "Applied",
        "configmap/settings",
        "",
        "fleet.dev/fleet, fleet",
        "revision abc: 1 created",
        table["rows"][0]["cells"][0],
        1,
        "applied.1",
    ]
