"""Workload status simulation: the simulated cluster's stand-in for the workload controllers and kubelets.

Owns: `install(cluster)` and `WorkloadController`, which give Deployments, StatefulSets, DaemonSets and
ReplicaSets the status their real controllers write once every pod is ready (`observedGeneration`,
replica counts, a Deployment's `Available` and `Progressing` conditions with reason
`NewReplicaSetAvailable`; DaemonSets count `Settings.nodes` notional nodes) and complete Jobs
(`SuccessCriteriaMet` and `Complete` conditions, `succeeded`, `completionTime`), each
`Settings.workload_delay` seconds after the object's last new spec. Until then the status still
describes the previous generation (`observedGeneration` behind `generation`), which is how a rollout
in progress looks to kubectl and health checks.

A Deployment's new spec with other replicas is first handled as a scaling, as the real deployment
controller does: at once, a status that observes the new generation but keeps the old conditions (a
`ProgressDeadlineExceeded` of the old template included) and, when the template changed too, no updated
replica; the rollout's status follows after the delay.

Annotations make one workload misbehave so health checks can be tested:
- `sim.fleet.dev/unavailable: "true"`: no replica ever becomes ready (a Deployment's `Available` is
  False with `MinimumReplicasUnavailable`; a Job stays active);
- `sim.fleet.dev/failed: "true"`: a Deployment's `Progressing` is False with `ProgressDeadlineExceeded`;
  a Job fails with `BackoffLimitExceeded`.

Status is written through the status subresource path as `kube-controller-manager` (its own
managedFields entry, never a client's), is not journaled, and a write that changes nothing bumps no
resourceVersion. Nothing runs while idle: the controller reacts to committed events and keeps one
timer per workload only while that workload's status is due.

Does not: create ReplicaSets or Pods, or simulate rolling updates step by step.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from fleet.sim.controllers import updates
from fleet.sim.kinds import types
from fleet.sim.storage import objects, store

MANAGER = "kube-controller-manager"
UNAVAILABLE = "sim.fleet.dev/unavailable"
FAILED = "sim.fleet.dev/failed"
KINDS = frozenset(
    {
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "ReplicaSet"),
        ("batch/v1", "Job"),
    }
)
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _flag(obj: dict[str, Any], name: str) -> bool:
    annotations = obj["metadata"].get("annotations") or {}
    return str(annotations.get(name, "")).lower() == "true"


def template_hash(obj: dict[str, Any]) -> str:
    """A stable 10-character hash of the pod template (the shape of pod-template-hash)."""
    template = (obj.get("spec") or {}).get("template") or {}
    digest = hashlib.sha256(orjson.dumps(template, option=orjson.OPT_SORT_KEYS)).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:10])


def _counts(status: dict[str, Any], **counts: int) -> dict[str, Any]:
    """Integer status fields, leaving out zeros (they are `omitempty` in the real types)."""
    status.update((k, v) for k, v in counts.items() if v)
    return status


def deployment_status(obj: dict[str, Any], *, now: str) -> dict[str, Any]:
    old = obj.get("status") or {}
    replicas = _int((obj.get("spec") or {}).get("replicas"), 1)
    rs_name = f"{obj['metadata']['name']}-{template_hash(obj)}"
    conditions = list(old.get("conditions") or [])
    out: dict[str, Any] = {"observedGeneration": obj["metadata"].get("generation", 1)}
    failed = _flag(obj, FAILED)
    if _flag(obj, UNAVAILABLE) or failed:
        _counts(out, replicas=replicas, updatedReplicas=replicas, unavailableReplicas=replicas)
        conditions = updates.set_condition(
            conditions,
            "Available",
            "False" if replicas else "True",
            "MinimumReplicasUnavailable" if replicas else "MinimumReplicasAvailable",
            "Deployment does not have minimum availability."
            if replicas
            else "Deployment has minimum availability.",
            now=now,
            update_time=True,
        )
        if failed:
            progressing = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        conditions = updates.set_condition(conditions, "Progressing", *progressing, now=now, update_time=True)
    else:
        _counts(
            out,
            replicas=replicas,
            updatedReplicas=replicas,
            readyReplicas=replicas,
            availableReplicas=replicas,
        )
        conditions = updates.set_condition(
            conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now=now,
            update_time=True,
        )
        conditions = updates.set_condition(
            conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs_name}" has successfully progressed.',
            now=now,
            update_time=True,
        )
    order = {"Available": 0, "Progressing": 1}
    out["conditions"] = sorted(conditions, key=lambda c: order.get(str(c.get("type")), 2))
    return out


def scaling_status(obj: dict[str, Any], *, new_template: bool) -> dict[str, Any]:
    """A Deployment's status when its controller handled a change of replicas as a scaling: the new
    generation observed, the replica counts and conditions of the old one (a `ProgressDeadlineExceeded`
    stays), and no updated replica when the template changed too (its ReplicaSet does not exist yet)."""
    out = dict(obj.get("status") or {})
    out["observedGeneration"] = obj["metadata"].get("generation", 1)
    if new_template:
        out.pop("updatedReplicas", None)
    return out


def statefulset_status(obj: dict[str, Any], *, now: str) -> dict[str, Any]:
    replicas = _int((obj.get("spec") or {}).get("replicas"), 1)
    revision = f"{obj['metadata']['name']}-{template_hash(obj)}"
    ready = 0 if _flag(obj, UNAVAILABLE) or _flag(obj, FAILED) else replicas
    out: dict[str, Any] = {"observedGeneration": obj["metadata"].get("generation", 1), "replicas": replicas}
    _counts(out, readyReplicas=ready, currentReplicas=replicas, updatedReplicas=replicas)
    out["currentRevision"] = revision
    out["updateRevision"] = revision
    out["collisionCount"] = 0
    out["availableReplicas"] = ready
    return out


def daemonset_status(obj: dict[str, Any], *, nodes: int, now: str) -> dict[str, Any]:
    ready = 0 if _flag(obj, UNAVAILABLE) or _flag(obj, FAILED) else nodes
    out: dict[str, Any] = {
        "currentNumberScheduled": nodes,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": nodes,
        "numberReady": ready,
        "observedGeneration": obj["metadata"].get("generation", 1),
    }
    return _counts(out, updatedNumberScheduled=nodes, numberAvailable=ready, numberUnavailable=nodes - ready)


def replicaset_status(obj: dict[str, Any], *, now: str) -> dict[str, Any]:
    replicas = _int((obj.get("spec") or {}).get("replicas"), 1)
    ready = 0 if _flag(obj, UNAVAILABLE) or _flag(obj, FAILED) else replicas
    out: dict[str, Any] = {"replicas": replicas}
    _counts(out, fullyLabeledReplicas=replicas, readyReplicas=ready, availableReplicas=ready)
    out["observedGeneration"] = obj["metadata"].get("generation", 1)
    return out


def _job_condition(
    ctype: str, reason: str, message: str, old: list[dict[str, Any]], now: str
) -> dict[str, Any]:
    for cond in old:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return cond
    return {
        "type": ctype,
        "status": "True",
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def job_status(obj: dict[str, Any], *, now: str) -> dict[str, Any]:
    old = obj.get("status") or {}
    conditions = list(old.get("conditions") or [])
    finished = {c.get("type") for c in conditions if c.get("status") == "True"} & {"Complete", "Failed"}
    if finished:
        return old  # a finished Job stays finished
    spec = obj.get("spec") or {}
    start = old.get("startTime") or obj["metadata"].get("creationTimestamp") or now
    base: dict[str, Any] = {"startTime": start}
    if _flag(obj, FAILED):
        reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        base["conditions"] = [
            _job_condition("FailureTarget", reason, message, conditions, now),
            _job_condition("Failed", reason, message, conditions, now),
        ]
        base["failed"] = _int(spec.get("backoffLimit"), 6) + 1
    elif _flag(obj, UNAVAILABLE):
        base["active"] = _int(spec.get("parallelism"), 1)
    else:
        reason, message = "CompletionsReached", "Reached expected number of succeeded pods"
        base["conditions"] = [
            _job_condition("SuccessCriteriaMet", reason, message, conditions, now),
            _job_condition("Complete", reason, message, conditions, now),
        ]
        base["completionTime"] = old.get("completionTime") or now
        base["succeeded"] = _int(spec.get("completions"), 1)
    base["terminating"] = 0
    base["uncountedTerminatedPods"] = {}
    base["ready"] = 0
    return base


class WorkloadController:
    """Writes the status of one cluster's workloads `delay` seconds after each new spec."""

    def __init__(self, cluster: store.Cluster) -> None:
        self.cluster = cluster
        self.delay = cluster.settings.workload_delay
        self.nodes = cluster.settings.nodes
        # (apiVersion, kind, namespace, name) -> (what the timer was set for, the timer)
        self.timers: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    def desired(self, obj: dict[str, Any], *, now: str) -> dict[str, Any]:
        kind = obj.get("kind")
        if kind == "Deployment":
            return deployment_status(obj, now=now)
        if kind == "StatefulSet":
            return statefulset_status(obj, now=now)
        if kind == "DaemonSet":
            return daemonset_status(obj, nodes=self.nodes, now=now)
        if kind == "ReplicaSet":
            return replicaset_status(obj, now=now)
        return job_status(obj, now=now)

    def on_event(self, cluster: store.Cluster, event: objects.Event) -> None:
        if event.new is None:
            return
        obj = event.new.obj
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        if (api_version, kind) not in KINDS:
            return
        key = (api_version, kind, event.ns, event.name)
        if event.type == objects.DELETED or obj["metadata"].get("deletionTimestamp"):
            self._cancel(key)
            return
        if kind == "Deployment" and event.prev is not None:
            self._scaling_first(key, event.prev.obj, obj)
        if self.desired(obj, now=objects.now()) == (obj.get("status") or {}):
            return
        meta = obj["metadata"]
        token = (meta.get("uid"), meta.get("generation"), orjson.dumps(meta.get("annotations") or {}))
        pending = self.timers.get(key)
        if pending is not None and pending[0] == token:
            return  # already due for this spec
        self._cancel(key)
        timer = updates.run_later(self.delay, self._fire, key, meta.get("uid"))
        if timer is not None:
            self.timers[key] = (token, timer)

    def _scaling_first(
        self, key: tuple[str, str, str, str], prev: dict[str, Any], obj: dict[str, Any]
    ) -> None:
        """A new spec of a Deployment with other replicas: as the real deployment controller, handle it
        first as a scaling, at once (before the next request), with a status that observes the new
        generation and keeps the old conditions, no replica updated when the template changed too
        (`scaling_status`); the rollout's status follows after the delay (docs/real-cluster.md)."""
        meta, status = obj["metadata"], obj.get("status") or {}
        generation = meta.get("generation")
        if (
            not status
            or generation == prev["metadata"].get("generation")
            or status.get("observedGeneration") == generation
            or _int((obj.get("spec") or {}).get("replicas"), 1)
            == _int((prev.get("spec") or {}).get("replicas"), 1)
        ):
            return
        new_template = template_hash(obj) != template_hash(prev)
        self.cluster.schedule(self._fire_scaling, key, meta.get("uid"), generation, new_template)

    def _fire_scaling(
        self, key: tuple[str, str, str, str], uid: str, generation: int, new_template: bool
    ) -> None:
        api_version, kind, ns, name = key
        rtype = self._rtype(api_version, kind)
        stored = self.cluster.find(rtype, ns, name) if rtype is not None else None
        if rtype is None or stored is None:
            return
        meta = stored.obj["metadata"]
        if meta.get("uid") != uid or meta.get("generation") != generation or meta.get("deletionTimestamp"):
            return
        status = stored.obj.get("status") or {}
        if status.get("observedGeneration") == generation:
            return
        updates.write_status(
            self.cluster,
            rtype,
            stored,
            scaling_status(stored.obj, new_template=new_template),
            manager=MANAGER,
        )

    def _cancel(self, key: tuple[str, str, str, str]) -> None:
        pending = self.timers.pop(key, None)
        if pending is not None and pending[1] is not None:
            pending[1].cancel()

    def _rtype(self, api_version: str, kind: str) -> types.ResourceType | None:
        group = api_version.rpartition("/")[0]
        return self.cluster.registry.by_kind(group, kind)

    def _fire(self, key: tuple[str, str, str, str], uid: str) -> None:
        self.timers.pop(key, None)
        api_version, kind, ns, name = key
        rtype = self._rtype(api_version, kind)
        if rtype is None:
            return
        stored = self.cluster.find(rtype, ns, name)
        if stored is None or stored.obj["metadata"].get("uid") != uid:
            return
        if stored.obj["metadata"].get("deletionTimestamp"):
            return
        new_status = self.desired(stored.obj, now=objects.now())
        updates.write_status(self.cluster, rtype, stored, new_status, manager=MANAGER)


def install(cluster: store.Cluster) -> WorkloadController | None:
    """Attach the workload status controller (unless `Settings.workload_status` is off)."""
    if not cluster.settings.workload_status:
        return None
    controller = WorkloadController(cluster)
    cluster.hooks.append(controller.on_event)
    return controller
