"""Health of live objects (pure): is what fleet applied actually working yet?

Owns: `assess(obj) -> Health` for one live object, and `summarize` over many. The rules, like kstatus /
Flux's health checks:

- Deployment: observedGeneration caught up, updatedReplicas == availableReplicas == replicas (default 1),
  no old replicas left, condition Progressing not ``ProgressDeadlineExceeded`` (that one is Failed).
- StatefulSet: observedGeneration caught up, readyReplicas == updatedReplicas == replicas (currentRevision
  == updateRevision when both are reported).
- DaemonSet: observedGeneration caught up, desired == updated == available number scheduled.
- Job: condition Complete True is healthy, Failed True is failed, anything else progressing.
- CustomResourceDefinition: condition Established True.
- Anything with ``status.conditions`` of type Ready or Available: True is healthy (for the current
  generation when the object reports observedGeneration), False is progressing (Failed when its reason
  says so), Unknown progressing.
- Everything else is healthy once applied.

Does not: read clusters or wait; `reconcile` polls and calls this.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.core import model


class Status(enum.StrEnum):
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    FAILED = "Failed"


@dataclass(frozen=True)
class Health:
    status: Status
    message: str = ""


HEALTHY = Health(Status.HEALTHY)
_FAILED_REASONS = ("Failed", "Error", "ProgressDeadlineExceeded", "CrashLoopBackOff")


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and isinstance(cond.get("type"), str):
            out[cond["type"]] = cond
    return out


def _generation_pending(obj: Mapping[str, Any]) -> bool:
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    if not isinstance(generation, int):
        return False
    return not isinstance(observed, int) or observed < generation


def assess(obj: Mapping[str, Any]) -> Health:
    """The health of one live object."""
    kind = str(obj.get("kind", ""))
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    check = _BY_KIND.get((group, kind))
    if check is not None:
        return check(obj)
    return _generic(obj)


def _deployment(obj: Mapping[str, Any]) -> Health:
    if _generation_pending(obj):
        return Health(Status.PROGRESSING, "waiting for the rollout to be observed")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    progressing = _conditions(obj).get("Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health(Status.FAILED, "progress deadline exceeded")
    want = _int(spec.get("replicas"), 1)
    updated = _int(status.get("updatedReplicas"))
    available = _int(status.get("availableReplicas"))
    total = _int(status.get("replicas"))
    if updated < want:
        return Health(Status.PROGRESSING, f"{updated} of {want} replicas updated")
    if total > updated:
        return Health(Status.PROGRESSING, f"{total - updated} old replicas pending termination")
    if available < want:
        return Health(Status.PROGRESSING, f"{available} of {want} replicas available")
    return HEALTHY


def _statefulset(obj: Mapping[str, Any]) -> Health:
    if _generation_pending(obj):
        return Health(Status.PROGRESSING, "waiting for the rollout to be observed")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    want = _int(spec.get("replicas"), 1)
    ready = _int(status.get("readyReplicas"))
    if ready < want:
        return Health(Status.PROGRESSING, f"{ready} of {want} replicas ready")
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if strategy == "RollingUpdate":
        updated = status.get("updatedReplicas")
        if isinstance(updated, int) and updated < want:
            return Health(Status.PROGRESSING, f"{updated} of {want} replicas updated")
        current, update = status.get("currentRevision"), status.get("updateRevision")
        if current and update and current != update:
            return Health(Status.PROGRESSING, "waiting for the update to finish")
    return HEALTHY


def _daemonset(obj: Mapping[str, Any]) -> Health:
    if _generation_pending(obj):
        return Health(Status.PROGRESSING, "waiting for the rollout to be observed")
    status = obj.get("status") or {}
    want = _int(status.get("desiredNumberScheduled"))
    updated = _int(status.get("updatedNumberScheduled"))
    available = _int(status.get("numberAvailable"))
    if updated < want:
        return Health(Status.PROGRESSING, f"{updated} of {want} pods updated")
    if available < want:
        return Health(Status.PROGRESSING, f"{available} of {want} pods available")
    return HEALTHY


def _job(obj: Mapping[str, Any]) -> Health:
    conds = _conditions(obj)
    failed = conds.get("Failed")
    if failed is not None and failed.get("status") == "True":
        return Health(Status.FAILED, f"job failed: {failed.get('reason') or 'Failed'}")
    complete = conds.get("Complete")
    if complete is not None and complete.get("status") == "True":
        return HEALTHY
    return Health(Status.PROGRESSING, "job not complete")


def _crd(obj: Mapping[str, Any]) -> Health:
    established = _conditions(obj).get("Established")
    if established is not None and established.get("status") == "True":
        return HEALTHY
    return Health(Status.PROGRESSING, "not Established yet")


def _generic(obj: Mapping[str, Any]) -> Health:
    conds = _conditions(obj)
    for kind in ("Ready", "Available"):
        cond = conds.get(kind)
        if cond is None:
            continue
        if _generation_pending(obj) and (obj.get("status") or {}).get("observedGeneration") is not None:
            return Health(Status.PROGRESSING, "status is for an older generation")
        gen = (obj.get("metadata") or {}).get("generation")
        cond_gen = cond.get("observedGeneration")
        if isinstance(gen, int) and isinstance(cond_gen, int) and cond_gen < gen:
            return Health(Status.PROGRESSING, f"{kind} is for an older generation")
        status = cond.get("status")
        if status == "True":
            return HEALTHY
        reason = str(cond.get("reason") or "")
        text = f"{kind}={status}" + (f" ({reason})" if reason else "")
        if status == "False" and reason in _FAILED_REASONS:
            return Health(Status.FAILED, text)
        return Health(Status.PROGRESSING, text)
    return HEALTHY


_BY_KIND = {
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("batch", "Job"): _job,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
}


def summarize(objects: Iterable[Mapping[str, Any]]) -> tuple[Status, tuple[str, ...]]:
    """The worst health of `objects`, and a message per object that is not healthy."""
    worst = Status.HEALTHY
    messages = []
    rank = {Status.HEALTHY: 0, Status.PROGRESSING: 1, Status.FAILED: 2}
    for obj in objects:
        h = assess(obj)
        if h.status is Status.HEALTHY:
            continue
        messages.append(f"{model.ObjectRef.of(obj)}: {h.message}")
        if rank[h.status] > rank[worst]:
            worst = h.status
    return worst, tuple(sorted(messages))
