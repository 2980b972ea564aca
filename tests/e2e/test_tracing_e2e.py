"""One trace per commit: the real `fleet serve` exporting to a real OTLP/HTTP receiver (protobuf decoded)."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.sim import testing
from tests.support import otlp, serve
from tests.support.reconcile import GitOpsRepo, configmap, send

CLUSTERS = ["eu-1", "eu-2", "us-1"]
CANARY = "canary-s3cr3t-7f3a9c"


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=CLUSTERS) as handle:
        yield handle


@pytest.fixture
def receiver() -> Iterator[otlp.Receiver]:
    with otlp.running() as r:
        yield r


def secret(name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"password": value},
    }


@pytest.fixture
def gitops(tmp_path: Path) -> GitOpsRepo:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("eu-1", labels={"region": "eu"})
    repo.cluster("eu-2", labels={"region": "eu"})
    repo.cluster("us-1", labels={"region": "us"})
    repo.bundle(
        "settings",
        [configmap("settings", colour="blue"), secret("db", CANARY)],
        namespace="apps",
        selector={},
    )
    repo.bundle("eu-only", [configmap("eu-only", zone="eu")], namespace="apps", selector={"region": "eu"})
    repo.commit("first")
    return repo


def start(
    tmp_path: Path, repo: GitOpsRepo, sim: testing.SimHandle, endpoint: str, name: str = "serve"
) -> Any:
    return serve.serving(
        repo=repo.root,
        kubeconfig=sim.kubeconfig,
        state_dir=tmp_path / "state",
        log=tmp_path / f"{name}.log",
        args=["--interval", "1s", "--otlp-endpoint", endpoint],
        env={"OTEL_SDK_DISABLED": "false", "OTEL_BSP_SCHEDULE_DELAY": "100"},
    )


def synced_at(sha: str) -> Any:
    def check(doc: dict[str, Any]) -> bool:
        cs = doc.get("clusters") or {}
        return bool(cs) and all(c["state"] == "Synced" and c["revision"] == sha for c in cs.values())

    return check


def wait_spans(receiver: otlp.Receiver, predicate: Any, *, timeout: float = 30.0) -> list[otlp.ReceivedSpan]:
    deadline = time.monotonic() + timeout
    spans = receiver.snapshot()
    while time.monotonic() < deadline:
        spans = receiver.snapshot()
        if predicate(spans):
            return spans
        time.sleep(0.1)
    raise AssertionError(f"spans never matched; got {[(s.name, s.trace_id[:8]) for s in spans]}")


def revision_trace(spans: list[otlp.ReceivedSpan], sha: str) -> list[otlp.ReceivedSpan]:
    roots = [s for s in spans if s.name == f"revision {sha[:7]}"]
    assert len(roots) == 1, [s.name for s in spans]
    return [s for s in spans if s.trace_id == roots[0].trace_id]


def has_cluster_spans(sha: str, clusters: set[str]) -> Any:
    def check(spans: list[otlp.ReceivedSpan]) -> bool:
        roots = [s for s in spans if s.name == f"revision {sha[:7]}"]
        if not roots:
            return False
        names = {s.name for s in spans if s.trace_id == roots[0].trace_id}
        return {f"cluster {c}" for c in clusters} <= names

    return check


def test_a_first_revision_is_one_trace_with_one_cluster_span_per_placed_cluster(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle, receiver: otlp.Receiver
) -> None:
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim, receiver.url) as fleet:
        doc = fleet.wait_for(synced_at(head), what="Synced")
        spans = wait_spans(receiver, has_cluster_spans(head, set(CLUSTERS)))
    tree = revision_trace(spans, head)
    root = next(s for s in tree if s.name.startswith("revision "))
    assert root.parent_span_id == ""
    assert root.attributes["fleet.revision"] == head
    children = {s.name for s in tree if s.parent_span_id == root.span_id}
    assert {"fetch", "parse", "placement"} <= children
    cluster_spans = [s for s in tree if s.name.startswith("cluster ")]
    assert sorted(s.name for s in cluster_spans) == [f"cluster {c}" for c in CLUSTERS]
    assert all(s.parent_span_id == root.span_id for s in cluster_spans)
    for span in cluster_spans:
        applies = [s.name for s in tree if s.parent_span_id == span.span_id and s.name.startswith("apply ")]
        assert "apply settings" in applies, (span.name, applies)
        assert span.attributes["fleet.state"] == "Synced"
        assert span.resource["service.name"] == "fleet"
    eu1 = next(s for s in cluster_spans if s.name == "cluster eu-1")
    assert doc["clusters"]["eu-1"]["traceId"] == eu1.trace_id


def test_a_commit_traces_exactly_the_clusters_whose_desired_state_it_changes(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle, receiver: otlp.Receiver
) -> None:
    with start(tmp_path, gitops, sim, receiver.url) as fleet:
        fleet.wait_for(synced_at(str(gitops.repo.head.target)), what="first revision")
        gitops.bundle(
            "eu-only", [configmap("eu-only", zone="eu-west")], namespace="apps", selector={"region": "eu"}
        )
        second = gitops.commit("eu only")
        fleet.wait_for(synced_at(second), what="second revision")
        spans = wait_spans(receiver, has_cluster_spans(second, {"eu-1", "eu-2"}))
        time.sleep(0.5)  # let a stray third cluster span arrive, if fleet wrongly made one
        spans = receiver.snapshot()
    tree = revision_trace(spans, second)
    assert sorted(s.name for s in tree if s.name.startswith("cluster ")) == ["cluster eu-1", "cluster eu-2"]
    eu1 = next(s for s in tree if s.name == "cluster eu-1")
    under = sorted(s.name for s in tree if s.parent_span_id == eu1.span_id)
    assert "apply eu-only" in under and "apply settings" not in under  # only the bundle the commit changed


def test_a_failing_cluster_is_marked_on_its_cluster_span(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle, receiver: otlp.Receiver
) -> None:
    sim.faults_sync("us-1", {"status": 403, "method": "PATCH"})
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim, receiver.url) as fleet:
        fleet.wait_for(lambda d: d["clusters"].get("us-1", {}).get("state") == "Failed", what="us-1 Failed")
        spans = wait_spans(receiver, has_cluster_spans(head, set(CLUSTERS)))
    tree = revision_trace(spans, head)
    by_name = {s.name: s for s in tree}
    assert by_name["cluster us-1"].status_code == 2  # STATUS_CODE_ERROR
    assert by_name["cluster eu-1"].status_code != 2


def test_a_secret_value_never_reaches_any_exported_byte(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle, receiver: otlp.Receiver
) -> None:
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim, receiver.url) as fleet:
        fleet.wait_for(synced_at(head), what="Synced")
        wait_spans(receiver, has_cluster_spans(head, set(CLUSTERS)))
        logs = fleet.logs()
    exported = receiver.all_bytes()
    assert exported  # something was exported, so the check below means something
    for form in (CANARY.encode(), base64.b64encode(CANARY.encode())):
        assert form not in exported
        assert form.decode() not in logs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_otlp_endpoint_never_breaks_reconciling(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with start(tmp_path, gitops, sim, dead) as fleet:
        fleet.wait_for(synced_at(str(gitops.repo.head.target)), what="first revision with a dead collector")
        gitops.bundle("settings", [configmap("settings", colour="green")], namespace="apps", selector={})
        second = gitops.commit("green")
        fleet.wait_for(synced_at(second), what="second revision with a dead collector")
        assert fleet.get("/healthz").status_code == 200


def test_a_drift_repair_is_its_own_trace_linked_to_the_revision(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle, receiver: otlp.Receiver
) -> None:
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim, receiver.url) as fleet:
        fleet.wait_for(synced_at(head), what="Synced")
        fleet.wait_for(lambda d: d["clusters"]["us-1"]["watch"]["streams"] >= 1, what="watch open")
        resp = send(
            sim, "us-1", "PATCH", "/api/v1/namespaces/apps/configmaps/settings", {"data": {"colour": "x"}}
        )
        assert resp.status_code == 200
        spans = wait_spans(receiver, lambda ss: any(s.name == "drift us-1" for s in ss))
        doc = fleet.status()
    root = next(s for s in spans if s.name == f"revision {head[:7]}")
    drift_span = next(s for s in spans if s.name == "drift us-1")
    assert drift_span.parent_span_id == ""
    assert drift_span.trace_id != root.trace_id
    assert (root.trace_id, root.span_id) in drift_span.links
    assert doc["clusters"]["us-1"]["traceId"] == drift_span.trace_id
    # The targeted re-apply is under it, one `apply <bundle>` span per bundle repaired (docs/tracing.md).
    spans = wait_spans(receiver, lambda ss: any(s.parent_span_id == drift_span.span_id for s in ss))
    under = [s for s in spans if s.parent_span_id == drift_span.span_id]
    assert [s.name for s in under] == ["apply settings"]
    assert under[0].attributes["fleet.objects.configured"] == 1
    assert under[0].attributes["fleet.cluster"] == "us-1"


def test_openmetrics_scrapes_carry_the_trace_id_of_the_last_reconcile_as_an_exemplar(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle, receiver: otlp.Receiver
) -> None:
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim, receiver.url) as fleet:
        doc = fleet.wait_for(synced_at(head), what="Synced")
        text = fleet.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text
        plain = fleet.get("/metrics").text
    trace_ids = {c["traceId"] for c in doc["clusters"].values()}
    exemplars = [
        line
        for line in text.splitlines()
        if "fleet_reconcile_duration_seconds_bucket" in line and "#" in line
    ]
    assert any(f'trace_id="{t}"' in line for line in exemplars for t in trace_ids), exemplars[:5]
    assert "trace_id" not in plain  # the classic text format has no exemplars


def test_each_rollout_is_a_span_of_its_revision_with_events_for_waves_halts_and_actions(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle, receiver: otlp.Receiver
) -> None:
    rollout = {
        "waves": [
            {"name": "canary", "placement": {"clusters": ["eu-1"]}},
            {"name": "rest", "maxConcurrency": "100%", "approval": "before"},
        ]
    }
    gitops.bundle(
        "settings", [configmap("settings", colour="green")], namespace="apps", selector={}, rollout=rollout
    )
    head = gitops.commit("waves")
    with start(tmp_path, gitops, sim, receiver.url) as fleet:
        fleet.wait_for(
            lambda d: (d.get("rollouts") or {}).get("settings", {}).get("state") == "WaitingApproval",
            what="waiting for approval",
        )
        assert (
            fleet.post(
                "/api/v1/rollouts/settings/approve", params={"actor": "ada", "reason": "ok"}
            ).status_code
            == 202
        )
        fleet.wait_for(synced_at(head), what="Synced")
        spans = wait_spans(receiver, lambda ss: any(s.name == "rollout settings" for s in ss))
    tree = revision_trace(spans, head)
    root = next(s for s in tree if s.name.startswith("revision "))
    rollout_spans = [s for s in tree if s.name == "rollout settings"]
    assert len(rollout_spans) == 1
    span = rollout_spans[0]
    assert span.parent_span_id == root.span_id
    assert span.attributes["fleet.revision"] == head
    assert [
        e
        for e in span.events
        if e in ("started", "waiting for approval", "action approve", "approved", "wave started", "completed")
    ] == [
        "started",
        "wave started",
        "waiting for approval",
        "action approve",
        "approved",
        "wave started",
        "completed",
    ]
    action = next(s for s in spans if s.name == "rollout approve settings")
    assert (span.trace_id, span.span_id) in action.links
