"""One trace per commit, read back from a real Jaeger (all-in-one, memory storage, OTLP/HTTP) through its
query API: `fleet serve` against two real API servers exports to it, and the trace of a commit has the
span tree docs/tracing.md draws.

One `fleet serve` run for the module (`traced`): a first commit, a second one that changes and removes
objects of a bundle rolled out canary first, then a drift made with kubectl edit; the tests read what
Jaeger stored of it.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.support import kube
from tests.support import traced as traced_scenario

pytestmark = [pytest.mark.real, pytest.mark.slow]

BOTH = traced_scenario.BOTH


@pytest.fixture(scope="module")
def traced(
    real_kube: kube.ControlPlane, real_jaeger: kube.Jaeger, tmp_path_factory: pytest.TempPathFactory
) -> traced_scenario.Traced:
    return traced_scenario.run(real_kube, real_jaeger, tmp_path_factory.mktemp("traced"))


def find_trace(jaeger: kube.Jaeger, operation: str, *, timeout: float = 30.0) -> str:
    """The id of the one trace with a span named `operation`, from Jaeger's search API."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        resp = httpx.get(
            f"{jaeger.query_url}/api/traces",
            params={"service": "fleet", "operation": operation, "limit": "20", "lookback": "1h"},
            timeout=10,
        )
        resp.raise_for_status()
        found = resp.json()["data"] or []
        if found:
            assert len(found) == 1, [t["traceID"] for t in found]
            return str(found[0]["traceID"])
        time.sleep(0.3)
    raise AssertionError(f"no trace with a span {operation!r} in Jaeger within {timeout}s")


def tree(trace: dict[str, Any]) -> list[Any]:
    """The trace as nested (name, [children]) lists, siblings in the order they started."""
    spans = {s["spanID"]: s for s in trace["spans"]}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in trace["spans"]:
        parent = next((r["spanID"] for r in s["references"] if r["refType"] == "CHILD_OF"), None)
        children.setdefault(parent if parent in spans else None, []).append(s)

    def build(span_id: str | None) -> list[Any]:
        ordered = sorted(children.get(span_id, []), key=lambda s: (s["startTime"], s["operationName"]))
        return [(s["operationName"], build(s["spanID"])) for s in ordered]

    return build(None)


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


def test_the_trace_of_a_commit_read_back_from_jaeger_has_the_span_tree_of_docs_tracing(
    traced: traced_scenario.Traced, real_jaeger: kube.Jaeger
) -> None:
    trace_id = find_trace(real_jaeger, f"revision {traced.second[:7]}")
    found = real_jaeger.wait_trace(trace_id, spans=13)
    bundle_web = [("apply web", []), ("prune web", []), ("health web", [])]
    assert tree(found) == [
        (
            f"revision {traced.second[:7]}",
            [
                ("fetch", []),
                ("parse", []),
                ("placement", []),
                ("rollout web", []),
                ("cluster real-1", bundle_web),  # the canary wave first
                ("cluster real-2", bundle_web),
            ],
        )
    ]
    spans = {(s["operationName"], tags(s).get("fleet.cluster")): s for s in found["spans"]}
    assert tags(spans[(f"revision {traced.second[:7]}", None)])["fleet.revision"] == traced.second
    for cluster in BOTH:
        span = tags(spans[(f"cluster {cluster}", cluster)])
        assert span["fleet.state"] in ("Synced", "Progressing")  # health is judged again in later rounds
        counts = {k: span[f"fleet.objects.{k}"] for k in ("configured", "unchanged", "deleted", "created")}
        assert counts == {"configured": 2, "unchanged": 1, "deleted": 1, "created": 0}
        assert tags(spans[("prune web", cluster)])["fleet.objects.deleted"] == 1
    rollout = spans[("rollout web", None)]
    events = [f["value"] for log in rollout["logs"] for f in log["fields"] if f["key"] == "event"]
    assert events[0] == "started" and events[-2:] == ["completed", "ended"], events
    assert events.count("wave started") == 2, events
    process = found["processes"][rollout["processID"]]
    assert process["serviceName"] == "fleet"
    assert {t["key"]: t["value"] for t in process["tags"]}["service.instance.id"] == traced.instance


def test_a_drift_repair_read_back_from_jaeger_is_a_trace_of_its_own_that_follows_from_the_revision(
    traced: traced_scenario.Traced, real_jaeger: kube.Jaeger
) -> None:
    revision = find_trace(real_jaeger, f"revision {traced.second[:7]}")
    root = next(
        s for s in real_jaeger.wait_trace(revision)["spans"] if s["operationName"].startswith("revision")
    )
    drift = real_jaeger.wait_trace(traced.drift_trace, spans=2)
    assert [name for name, _ in tree(drift)] == ["drift real-1"]
    ((_, under),) = tree(drift)
    assert under == [("apply web", [])]
    span = next(s for s in drift["spans"] if s["operationName"] == "drift real-1")
    assert {"refType": "FOLLOWS_FROM", "traceID": revision, "spanID": root["spanID"]} in span["references"]
    assert tags(span)["fleet.revision"] == traced.second
    assert f"ConfigMap/{traced.namespace}/web" in tags(span)["fleet.refs"]
