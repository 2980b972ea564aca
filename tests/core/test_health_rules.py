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


# A Deployment past its progress deadline changed in template and replicas at once: the real deployment
# controller first reports the new generation observed with the old ProgressDeadlineExceeded, and starts
# the new rollout a moment later (docs/real-cluster.md).
OLD_DEADLINE = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": 'ReplicaSet "api-5d8f" has timed out progressing.',
    "lastUpdateTime": "2026-12-07T08:00:05Z",
    "lastTransitionTime": "2026-12-07T08:00:05Z",
}


def fixed(*, generation: int = 4, observed: int = 4, uid: str = "u1", **condition: Any) -> dict[str, Any]:
    obj = deployment(
        want=0, generation=generation, observed=observed, conditions=[{**OLD_DEADLINE, **condition}]
    )
    obj["metadata"]["uid"] = uid
    obj["spec"]["progressDeadlineSeconds"] = 30
    return obj


def test_a_deadline_exceeded_the_deployment_carried_into_fleets_apply_is_not_a_verdict_on_the_new_generation() -> (
    None
):
    answer = fixed(observed=3)  # fleet's apply answer: generation 4, not observed, the old condition
    memory = health.Memory()
    memory.note([answer], now=100.0)
    assert memory.assess(answer, now=100.0).status is health.Status.PROGRESSING
    window = fixed()  # the controller's first status of generation 4: the old condition still there
    assert health.assess(window).status is health.Status.FAILED  # what fleet judged without the memory
    judged = memory.assess(window, now=101.0)
    assert judged.status is health.Status.PROGRESSING and "older" in judged.message
    assert memory.summarize([window], now=101.0) == (
        health.Status.PROGRESSING,
        (f"Deployment/web/api: {judged.message}",),
    )


def test_a_deadline_exceeded_anew_after_the_apply_is_a_verdict() -> None:
    memory = health.Memory()
    memory.note([fixed(observed=3)], now=100.0)
    later = {"lastUpdateTime": "2026-12-07T08:00:40Z", "lastTransitionTime": "2026-12-07T08:00:40Z"}
    assert memory.assess(fixed(**later), now=140.0).status is health.Status.FAILED
    renamed = fixed(message='ReplicaSet "api-77c4" has timed out progressing.')
    assert memory.assess(renamed, now=101.0).status is health.Status.FAILED


def test_a_carried_deadline_exceeded_is_a_verdict_once_the_progress_deadline_has_passed_since_fleet_saw_it() -> (
    None
):
    """A scaling of a stuck Deployment (no new ReplicaSet) keeps the old condition for good: it counts
    again once the new generation has had its progressDeadlineSeconds (30 here)."""
    memory = health.Memory()
    memory.note([fixed(observed=3)], now=100.0)
    memory.note([fixed(observed=3)], now=125.0)  # seen again: the deadline still runs from the first time
    assert memory.assess(fixed(), now=129.0).status is health.Status.PROGRESSING
    assert memory.assess(fixed(), now=130.0).status is health.Status.FAILED


def test_a_condition_carried_by_another_object_or_generation_is_no_excuse() -> None:
    memory = health.Memory()
    memory.note([fixed(observed=3)], now=100.0)
    assert memory.assess(fixed(generation=5, observed=5), now=101.0).status is health.Status.FAILED
    assert memory.assess(fixed(uid="recreated"), now=101.0).status is health.Status.FAILED
    memory = health.Memory()
    memory.note([fixed(observed=4)], now=100.0)  # an observed generation carries nothing: a verdict
    assert memory.carried == {}
    assert memory.assess(fixed(), now=101.0).status is health.Status.FAILED


def test_the_memory_forgets_a_deployment_once_its_controller_moved_on() -> None:
    memory = health.Memory()
    memory.note([fixed(observed=3)], now=100.0)
    started = fixed(
        status="True",
        reason="NewReplicaSetCreated",
        message='Created new replica set "api-77c4"',
        lastUpdateTime="2026-12-07T08:00:09Z",
        lastTransitionTime="2026-12-07T08:00:09Z",
    )
    assert memory.assess(started, now=101.0).status is health.Status.HEALTHY  # 0 replicas wanted
    assert memory.carried == {}
    assert memory.assess(fixed(), now=102.0).status is health.Status.FAILED
