"""Health rules for live objects."""

from __future__ import annotations

from typing import Any

from fleet.core import health


def deployment(*, want: int = 2, generation: int = 3, observed: int = 3, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "web", "generation": generation},
        "spec": {"replicas": want},
        "status": {"observedGeneration": observed, **status},
    }


def test_a_rolled_out_deployment_is_healthy() -> None:
    obj = deployment(updatedReplicas=2, availableReplicas=2, replicas=2)
    assert health.assess(obj).status is health.Status.HEALTHY


def test_a_deployment_whose_new_generation_is_not_observed_is_progressing() -> None:
    obj = deployment(observed=2, updatedReplicas=2, availableReplicas=2, replicas=2)
    assert health.assess(obj).status is health.Status.PROGRESSING


def test_a_deployment_with_too_few_available_replicas_is_progressing() -> None:
    obj = deployment(updatedReplicas=2, availableReplicas=1, replicas=2)
    result = health.assess(obj)
    assert result.status is health.Status.PROGRESSING
    assert "1 of 2" in result.message


def test_a_deployment_past_its_progress_deadline_has_failed() -> None:
    obj = deployment(
        updatedReplicas=1,
        availableReplicas=0,
        replicas=2,
        conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
    )
    assert health.assess(obj).status is health.Status.FAILED


def test_statefulsets_and_daemonsets_need_their_pods_ready() -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"generation": 1},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 3},
    }
    assert health.assess(sts).status is health.Status.PROGRESSING
    sts["status"]["readyReplicas"] = 3
    assert health.assess(sts).status is health.Status.HEALTHY
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"generation": 1},
        "status": {
            "observedGeneration": 1,
            "desiredNumberScheduled": 2,
            "updatedNumberScheduled": 2,
            "numberAvailable": 1,
        },
    }
    assert health.assess(ds).status is health.Status.PROGRESSING
    ds["status"]["numberAvailable"] = 2
    assert health.assess(ds).status is health.Status.HEALTHY


def test_jobs_are_healthy_when_complete_and_failed_when_failed() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {}, "status": {}}
    assert health.assess(job).status is health.Status.PROGRESSING
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert health.assess(job).status is health.Status.HEALTHY
    job["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    assert health.assess(job).status is health.Status.FAILED


def test_a_crd_is_healthy_once_established() -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {}}
    assert health.assess(crd).status is health.Status.PROGRESSING
    crd["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
    assert health.assess(crd).status is health.Status.HEALTHY


def test_ready_conditions_count_only_for_the_current_generation() -> None:
    obj = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"generation": 4},
        "status": {"observedGeneration": 3, "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert health.assess(obj).status is health.Status.PROGRESSING
    obj["status"]["observedGeneration"] = 4
    assert health.assess(obj).status is health.Status.HEALTHY
    obj["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "Failed"}]
    assert health.assess(obj).status is health.Status.FAILED


def test_objects_without_health_rules_are_healthy_once_applied() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}}
    assert health.assess(cm) == health.HEALTHY


def test_summarize_reports_the_worst_state_and_names_the_objects() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "web"}}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "namespace": "web"},
        "status": {},
    }
    status, messages = health.summarize([cm, job])
    assert status is health.Status.PROGRESSING
    assert messages == ("Job/web/j: job not complete",)
