"""APIServices (`apiregistration.k8s.io/v1`): what a simulated cluster registers and how one is judged.

Owns: the kind's names, the priorities of the built-in group versions (the local APIServices a real
kube-apiserver registers at start, automanaged `onstart`, and those of CRD groups, automanaged `true`),
`local_apiservice` (such an object), `prepare` (defaults and the real server's 422 validation of a
written APIService), and `availability` (the `Available` condition the real availability controller
writes: `Local`, or, since no aggregated API server ever runs behind a simulated cluster,
`ServiceNotFound`, `EndpointsNotFound` or `FailedDiscoveryCheck` with their real messages).

Does not: write anything or keep the registry's aggregated group versions (`fleet.sim.controllers.apiservices`),
or answer discovery (`fleet.sim.rest.discovery`, `fleet.sim.rest.routing`: a group version served by an
unavailable APIService is listed, `Stale` in aggregated discovery, and answers 503 `service unavailable`).
Pure: functions over plain dicts.
"""

from __future__ import annotations

import copy
from typing import Any

from fleet.sim import status

GROUP = "apiregistration.k8s.io"
VERSION = "v1"
KIND = "APIService"
PLURAL = "apiservices"
AUTOMANAGED = "kube-aggregator.kubernetes.io/automanaged"
MANAGER = "kube-apiserver"

# (group, version) -> (groupPriorityMinimum, versionPriority) of the local APIServices of Kubernetes 1.36.
LOCAL_PRIORITIES: dict[tuple[str, str], tuple[int, int]] = {
    ("", "v1"): (18000, 1),
    ("apps", "v1"): (17800, 15),
    ("events.k8s.io", "v1"): (17750, 15),
    ("authentication.k8s.io", "v1"): (17700, 15),
    ("authorization.k8s.io", "v1"): (17600, 15),
    ("autoscaling", "v2"): (17500, 30),
    ("autoscaling", "v1"): (17500, 15),
    ("batch", "v1"): (17400, 15),
    ("certificates.k8s.io", "v1"): (17300, 15),
    ("networking.k8s.io", "v1"): (17200, 15),
    ("policy", "v1"): (17100, 15),
    ("rbac.authorization.k8s.io", "v1"): (17000, 15),
    ("storage.k8s.io", "v1"): (16800, 15),
    ("admissionregistration.k8s.io", "v1"): (16700, 15),
    ("apiextensions.k8s.io", "v1"): (16700, 15),
    ("scheduling.k8s.io", "v1"): (16600, 15),
    ("coordination.k8s.io", "v1"): (16500, 15),
    ("node.k8s.io", "v1"): (16300, 15),
    ("discovery.k8s.io", "v1"): (16200, 15),
    ("resource.k8s.io", "v1"): (16200, 21),
    ("flowcontrol.apiserver.k8s.io", "v1"): (16100, 21),
}
# The aggregator's own group comes first in `/apis`; it has no APIService object.
OWN_GROUP_PRIORITY = 18100
CRD_PRIORITIES = (1000, 100)  # what the CRD registration controller gives a CRD's group version


def name_of(group: str, version: str) -> str:
    return f"{version}.{group}"


def group_priority(group: str) -> int:
    """The group's place in `/apis` (higher first) when it is served by the cluster itself."""
    if group == GROUP:
        return OWN_GROUP_PRIORITY
    found = [p[0] for (g, _), p in LOCAL_PRIORITIES.items() if g == group]
    return max(found) if found else CRD_PRIORITIES[0]


def local_apiservice(group: str, version: str, *, crd: bool = False) -> dict[str, Any]:
    """The APIService kube-apiserver registers for a group version it serves itself."""
    group_min, version_prio = CRD_PRIORITIES if crd else LOCAL_PRIORITIES[(group, version)]
    spec: dict[str, Any] = {
        "version": version,
        "groupPriorityMinimum": group_min,
        "versionPriority": version_prio,
    }
    if group:
        spec = {"group": group, **spec}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name_of(group, version), "labels": {AUTOMANAGED: "true" if crd else "onstart"}},
        "spec": spec,
    }


def is_local(obj: dict[str, Any]) -> bool:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    return not (spec or {}).get("service")


def prepare(obj: dict[str, Any]) -> dict[str, Any]:
    """A written APIService defaulted (`service.port` 443) and validated (422 with the real causes)."""
    out = copy.deepcopy(obj)
    spec = out.get("spec")
    if not isinstance(spec, dict):
        spec = out["spec"] = {}
    service = spec.get("service")
    if isinstance(service, dict):
        service.setdefault("port", 443)
    causes = []
    name = str((out.get("metadata") or {}).get("name") or "")
    wanted = name_of(str(spec.get("group") or ""), str(spec.get("version") or ""))
    if name != wanted:
        causes.append(
            status.field_cause(
                "FieldValueInvalid",
                "metadata.name",
                f'Invalid value: "{name}": must be `spec.version+"."+spec.group`: "{wanted}"',
            )
        )
    for field, limit in (("groupPriorityMinimum", 20000), ("versionPriority", 1000)):
        value = spec.get(field) or 0
        if not isinstance(value, int) or not 0 < value < limit:
            causes.append(
                status.field_cause(
                    "FieldValueInvalid",
                    f"spec.{field}",
                    f"Invalid value: {value}: must be positive and less than {limit}",
                )
            )
    if causes:
        raise status.invalid(KIND, name, causes, group=GROUP)
    return out


def availability(
    obj: dict[str, Any], service: dict[str, Any] | None, slices: list[dict[str, Any]]
) -> tuple[str, str, str]:
    """The (status, reason, message) of the `Available` condition, as the availability controller says
    it. No aggregated API server answers behind a simulated cluster, so a non-local one never is."""
    if is_local(obj):
        return "True", "Local", "Local APIServices are always available"
    spec = obj["spec"]
    ref = spec["service"]
    where = f'service/{ref.get("name", "")} in "{ref.get("namespace", "")}"'
    if service is None:
        return "False", "ServiceNotFound", f"{where} is not present"
    address = next(
        (
            (str(addr), _slice_port(s, ref.get("port", 443)))
            for s in slices
            for ep in s.get("endpoints") or []
            if isinstance(ep, dict)
            for addr in ep.get("addresses") or []
        ),
        None,
    )
    if address is None:
        return "False", "EndpointsNotFound", f"cannot find endpointslices for {where}"
    host, port = address
    url = f"https://{host}:{port}/apis/{spec.get('group', '')}/{spec.get('version', '')}"
    return (
        "False",
        "FailedDiscoveryCheck",
        f'failing or missing response from {url}: Get "{url}": dial tcp {host}:{port}: connect: connection refused',
    )


def _slice_port(endpoint_slice: dict[str, Any], default: Any) -> Any:
    ports = [p for p in endpoint_slice.get("ports") or [] if isinstance(p, dict) and p.get("port")]
    return ports[0]["port"] if ports else default
