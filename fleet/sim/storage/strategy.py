"""The strategy of the real registry: what the server sets and keeps on a write, whatever the client sent.

Owns: `prepare_create` (PrepareForCreate + BeforeCreate: kind and apiVersion, namespace from the URL,
name or `generateName` with the server's random suffix, the RFC 1123 name rules per kind, uid,
creationTimestamp, generation 1, the initial status of a Namespace, a Pod (with its QoS class,
`pod_qos`) or any kind with a status subresource), `prepare_update` (PrepareForUpdate: immutable
metadata kept, a status-subresource write that changes only `.status`, a main-resource write that keeps
the old `.status`, no new finalizers on an object being deleted) and `bump_generation` (generation moves
when anything outside metadata and status changes, or annotations for the kinds that count them).
Pure functions over plain dicts; they raise `status.ApiError` for what the server refuses.

Does not: store, check existence or namespaces (`fleet.sim.storage.store.Cluster`), default
(`fleet.sim.preparation`) or record managedFields.
"""

from __future__ import annotations

import random
import re
import uuid
from typing import Any

from fleet.sim import status
from fleet.sim.kinds import types
from fleet.sim.storage import objects

GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _diff_outside(old: dict[str, Any], new: dict[str, Any], skip: tuple[str, ...]) -> bool:
    keys = (set(old) | set(new)) - set(skip)
    return any(old.get(k) != new.get(k) for k in keys)


def _invalid_name(rtype: types.ResourceType, name: str, namespace_like: bool) -> dict[str, str] | None:
    if namespace_like:
        if len(name) > 63 or not _DNS_LABEL.match(name):
            return status.field_cause(
                "FieldValueInvalid",
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case alphanumeric '
                "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
                "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            )
        return None
    if rtype.group in ("rbac.authorization.k8s.io", "apiregistration.k8s.io"):  # path segment names ("v1.")
        if "/" in name or "%" in name or name in (".", ".."):
            return status.field_cause(
                "FieldValueInvalid", "metadata.name", f"Invalid value: \"{name}\": may not contain '/'"
            )
        return None
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return status.field_cause(
            "FieldValueInvalid",
            "metadata.name",
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
            "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
            "'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    return None


def prepare_create(rtype: types.ResourceType, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Checks and server-set fields of a create (PrepareForCreate + BeforeCreate); no store access."""
    obj["apiVersion"] = rtype.api_version
    obj["kind"] = rtype.kind
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise status.bad_request("metadata must be an object")
    if rtype.namespaced:
        body_ns = meta.get("namespace") or ""
        if body_ns and namespace and body_ns != namespace:
            raise status.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = namespace or body_ns
    else:
        meta.pop("namespace", None)
    if meta.get("resourceVersion"):
        raise status.internal("resourceVersion should not be set on objects to be created")
    name = meta.get("name") or ""
    if not name:
        prefix = meta.get("generateName") or ""
        if not prefix:
            raise status.invalid(
                rtype.kind,
                "",
                [
                    status.field_cause(
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )
                ],
                group=rtype.group,
            )
        name = prefix + "".join(random.choice(GENERATE_ALPHABET) for _ in range(5))
        meta["name"] = name
    cause = _invalid_name(rtype, name, rtype.kind == "Namespace")
    if cause is not None:
        raise status.invalid(rtype.kind, name, [cause], group=rtype.group)
    if rtype.namespaced and not meta["namespace"]:
        raise status.bad_request("the server could not find the requested resource: namespace is required")
    for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
        meta.pop(k, None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = objects.now()
    if rtype.generation or rtype.custom:
        meta["generation"] = 1
    else:
        meta.pop("generation", None)
    if rtype.custom:
        if rtype.has_status:
            obj.pop("status", None)
    elif rtype.kind == "Namespace":
        spec = obj.get("spec")
        if isinstance(spec, dict):  # its `kubernetes` finalizer comes after field management (rest.writes)
            spec.pop("finalizers", None)
        obj["status"] = {"phase": "Active"}
    elif rtype.kind == "Pod" and rtype.group == "":
        obj["status"] = {"phase": "Pending", "qosClass": pod_qos(obj)}
    elif rtype.has_status:
        obj["status"] = {}
    return obj


def prepare_update(
    rtype: types.ResourceType,
    old: objects.Stored,
    new: dict[str, Any],
    *,
    subresource: str | None = None,
) -> dict[str, Any]:
    """PrepareForUpdate + BeforeUpdate: what the server keeps whatever the client sent."""
    old_obj = old.obj
    old_meta = old_obj["metadata"]
    if subresource == "status":
        result = {k: v for k, v in old_obj.items() if k != "status"}
        result["metadata"] = dict(old_meta)
        if "managedFields" in (new.get("metadata") or {}):
            result["metadata"]["managedFields"] = new["metadata"]["managedFields"]
        if "status" in new:
            result["status"] = new["status"]
        return result
    new["apiVersion"] = rtype.api_version
    new["kind"] = rtype.kind
    meta = new.get("metadata")
    if not isinstance(meta, dict):
        meta = new["metadata"] = {}
    uid = meta.get("uid")
    if uid and uid != old_meta.get("uid"):
        raise status.invalid(
            rtype.kind,
            old_meta["name"],
            [
                status.field_cause(
                    "FieldValueInvalid", "metadata.uid", f'Invalid value: "{uid}": field is immutable'
                )
            ],
            group=rtype.group,
        )
    for k in (
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ):
        if k in old_meta:
            meta[k] = old_meta[k]
        else:
            meta.pop(k, None)
    meta["name"] = old_meta["name"]
    if rtype.namespaced:
        meta["namespace"] = old_meta.get("namespace", "")
    else:
        meta.pop("namespace", None)
    if not meta.get("managedFields") and old_meta.get("managedFields"):
        meta["managedFields"] = old_meta["managedFields"]
    if old_meta.get("deletionTimestamp"):
        added = [f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
        if added:
            raise status.invalid(
                rtype.kind,
                old_meta["name"],
                [
                    status.field_cause(
                        "FieldValueForbidden",
                        "metadata.finalizers",
                        "Forbidden: no new finalizers can be added if the object is being deleted, "
                        "found new finalizers []string{" + ", ".join(f'"{f}"' for f in added) + "}",
                    )
                ],
                group=rtype.group,
            )
    if rtype.has_status:
        if "status" in old_obj:
            new["status"] = old_obj["status"]
        else:
            new.pop("status", None)
    if rtype.kind == "Namespace" and subresource != "finalize":  # only `finalize` writes the spec
        new["spec"] = old_obj.get("spec", {})
    return new


def bump_generation(rtype: types.ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
    if not (rtype.generation or rtype.custom):
        return
    skip: tuple[str, ...] = ("metadata", "status") if rtype.has_status else ("metadata",)
    changed = _diff_outside(old, new, skip)
    if not changed and rtype.generation_on_annotations:
        changed = (old["metadata"].get("annotations") or {}) != (new["metadata"].get("annotations") or {})
    if changed:
        new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1


def pod_qos(pod: dict[str, Any]) -> str:
    """The QoS class a Pod is created with (pkg/apis/core/helper/qos): Guaranteed, Burstable or BestEffort."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    containers = [
        c
        for key in ("containers", "initContainers")
        for c in (spec or {}).get(key) or []
        if isinstance(c, dict)
    ]
    any_set = False
    guaranteed = bool(containers)
    for c in containers:
        res = c.get("resources") if isinstance(c.get("resources"), dict) else {}
        requests = (res or {}).get("requests") or {}
        limits = (res or {}).get("limits") or {}
        if requests or limits:
            any_set = True
        for name in ("cpu", "memory"):
            limit = limits.get(name)
            if limit is None or str(requests.get(name, limit)) != str(limit):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
