"""Health of live objects (pure): is what fleet applied actually working yet?

Owns: `assess(obj) -> Health` for one live object, and `summarize` over many; `Memory`, what fleet saw
of objects whose status had not yet observed their generation (its own apply answers), which `assess`
needs to tell a condition of an older generation from a verdict on the current one. The rules, like
kstatus / Flux's health checks:

- Deployment: observedGeneration caught up, updatedReplicas == availableReplicas == replicas (default 1),
  no old replicas left, condition Progressing not ``ProgressDeadlineExceeded`` (that one is Failed) —
  unless it is the very condition (same times, same message) the object carried when fleet saw this
  generation unobserved, less than progressDeadlineSeconds ago: the real deployment controller handles a
  change of template and replicas first as a scaling, whose status observes the new generation with the
  old condition, and starts the new rollout a moment later (docs/real-cluster.md). A new deadline
  exceeded always has newer times (at least a second after the change).
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
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


_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
_DEFAULT_PROGRESS_DEADLINE = 600  # seconds: a Deployment's progressDeadlineSeconds when unset


@dataclass(frozen=True)
class Carried:
    """The Progressing condition an object's status still held from an older generation when fleet saw
    its generation `generation` not yet observed (at `seen_at`, fleet's clock, in seconds)."""

    uid: str
    generation: int
    condition: Mapping[str, Any]
    seen_at: float


@dataclass
class Memory:
    """Carried conditions per object (group, kind, namespace, name), kept by whoever judges an object's
    health more than once: a `fleet sync` round, or a cluster of `fleet serve` across rounds and probes.
    Only a Deployment past its progress deadline whose new generation is unobserved is remembered."""

    carried: dict[tuple[str, str, str, str], Carried] = field(default_factory=dict)

    def note(self, objects: Iterable[Mapping[str, Any]], *, now: float) -> None:
        """Remember what these objects (e.g. fleet's apply answers) carry into an unobserved generation."""
        for obj in objects:
            found = _carried(obj, now=now)
            if found is None:
                continue
            k = _key(obj)
            known = self.carried.get(k)
            if known is None or (known.uid, known.generation) != (found.uid, found.generation):
                self.carried[k] = found  # the first sighting counts: the deadline runs from it

    def assess(self, obj: Mapping[str, Any], *, now: float) -> Health:
        """`assess`, telling a condition of an older generation from a verdict (see the module's rules)."""
        k = _key(obj)
        known = self.carried.get(k)
        if known is not None and not _still_carried(obj, known):
            del self.carried[k]  # the controller moved on: forget it
            known = None
        return assess(obj, carried=known, now=now)

    def summarize(
        self, objects: Iterable[Mapping[str, Any]], *, now: float
    ) -> tuple[Status, tuple[str, ...]]:
        return summarize(objects, judge=lambda o: self.assess(o, now=now))


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (
        str(obj.get("apiVersion", "")).rpartition("/")[0],
        str(obj.get("kind", "")),
        str(meta.get("namespace") or ""),
        str(meta.get("name", "")),
    )


def _deadline_exceeded(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    progressing = _conditions(obj).get("Progressing")
    if progressing is not None and progressing.get("reason") == _DEADLINE_EXCEEDED:
        return progressing
    return None


def _carried(obj: Mapping[str, Any], *, now: float) -> Carried | None:
    """What a Deployment whose status has not observed its generation carries from an older one."""
    if (str(obj.get("apiVersion", "")).rpartition("/")[0], obj.get("kind")) != ("apps", "Deployment"):
        return None
    meta = obj.get("metadata") or {}
    generation = meta.get("generation")
    condition = _deadline_exceeded(obj)
    if condition is None or not isinstance(generation, int) or not _generation_pending(obj):
        return None
    return Carried(str(meta.get("uid") or ""), generation, dict(condition), now)


def _still_carried(obj: Mapping[str, Any], known: Carried) -> bool:
    """The object is still at that generation, with that very condition (or its generation unobserved)."""
    meta = obj.get("metadata") or {}
    if (str(meta.get("uid") or ""), meta.get("generation")) != (known.uid, known.generation):
        return False
    return _generation_pending(obj) or _deadline_exceeded(obj) == known.condition


def assess(obj: Mapping[str, Any], *, carried: Carried | None = None, now: float = 0.0) -> Health:
    """The health of one live object. `carried`: what fleet saw the object carry into its generation
    before the controller observed it (`Memory` keeps it), with `now` on the same clock."""
    kind = str(obj.get("kind", ""))
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    if (group, kind) == ("apps", "Deployment"):
        return _deployment(obj, carried=carried, now=now)
    check = _BY_KIND.get((group, kind))
    if check is not None:
        return check(obj)
    return _generic(obj)


def _deployment(obj: Mapping[str, Any], *, carried: Carried | None = None, now: float = 0.0) -> Health:
    if _generation_pending(obj):
        return Health(Status.PROGRESSING, "waiting for the rollout to be observed")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    exceeded = _deadline_exceeded(obj)
    if exceeded is not None:
        meta = obj.get("metadata") or {}
        deadline = _int(spec.get("progressDeadlineSeconds"), _DEFAULT_PROGRESS_DEADLINE)
        if (
            carried is None
            or (str(meta.get("uid") or ""), meta.get("generation")) != (carried.uid, carried.generation)
            or exceeded != carried.condition
            or now - carried.seen_at >= deadline
        ):
            return Health(Status.FAILED, "progress deadline exceeded")
        return Health(
            Status.PROGRESSING,
            "waiting for the new rollout (the progress deadline exceeded is an older one's)",
        )
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
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("batch", "Job"): _job,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
}


def summarize(
    objects: Iterable[Mapping[str, Any]], *, judge: Callable[[Mapping[str, Any]], Health] = assess
) -> tuple[Status, tuple[str, ...]]:
    """The worst health of `objects`, and a message per object that is not healthy."""
    worst = Status.HEALTHY
    messages = []
    rank = {Status.HEALTHY: 0, Status.PROGRESSING: 1, Status.FAILED: 2}
    for obj in objects:
        h = judge(obj)
        if h.status is Status.HEALTHY:
            continue
        messages.append(f"{model.ObjectRef.of(obj)}: {h.message}")
        if rank[h.status] > rank[worst]:
            worst = h.status
    return worst, tuple(sorted(messages))
