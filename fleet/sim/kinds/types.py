"""The table of kinds a simulated cluster serves, and the per-cluster registry that CRDs extend.

Owns: `ResourceType` (plural, singular, kind, scope, verbs, subresources, short names, categories,
generation and status behaviour, selectable fields) for every built-in kind, and `Registry`, the
per-cluster index by (group, version, plural) and (group, kind) that discovery and the request router
read. CRD serving adds entries at run time with `Registry.add` / `Registry.remove`, which bump
`Registry.generation` so cached discovery documents are rebuilt; the APIService controller sets the
group versions APIServices register (`Aggregated`, `Registry.set_aggregated`) the same way.

Does not: hold objects (`fleet.sim.storage.store`), know schemas (`fleet.sim.kinds.schemas` has them; the
merge structure comes from `fleet.sim.kinds.structure`), or default anything (`fleet.sim.kinds.defaults`).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from fleet.sim.kinds import structure as structure_mod

STANDARD_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
SUBRESOURCE_VERBS: tuple[str, ...] = ("get", "patch", "update")

# Field selectors every resource supports.
COMMON_FIELDS: dict[str, tuple[str, ...]] = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
}


@dataclass
class ResourceType:
    """One served resource (a group/version/plural), as the type registry of a real server has it."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...] = STANDARD_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale"
    list_kind: str = ""
    generation: bool = False  # metadata.generation is set and bumped on spec changes
    generation_on_annotations: bool = False  # Deployments also bump on annotation changes
    return_deleted_object: bool = False  # DELETE answers with the object instead of a Status
    selectable_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    custom: bool = False  # a custom resource served from a CRD
    virtual: bool = False  # create-only review kinds: answered, never stored (SelfSubjectAccessReview)
    schema: dict[str, Any] | None = None  # openAPIV3Schema of a custom resource
    # A CRD's scale subresource: JSON paths of spec replicas, status replicas, label selector (or "").
    scale_paths: tuple[str, str, str] | None = None
    # A view: served in this group and version over the storage of (group, version, plural), converted
    # on the way in and out (`fleet.sim.rest.views`): events.k8s.io/v1 Events are core v1 Events.
    stored_as: tuple[str, str, str] | None = None
    _structure: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.list_kind:
            self.list_kind = self.kind + "List"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """`configmaps` or `deployments.apps`: the form Status messages use."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> tuple[str, str]:
        """The storage identity (group, plural): one object set per resource, whatever the version."""
        return (self.group, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def field_paths(self) -> dict[str, tuple[str, ...]]:
        return {**COMMON_FIELDS, **self.selectable_fields}

    def storage_version_hash(self) -> str:
        digest = hashlib.sha256(f"{self.group}/{self.version}/{self.kind}".encode()).digest()
        return base64.b64encode(digest[:8]).decode()

    def structure(self) -> Any:
        """The merge structure for SSA/SMP, from `fleet.sim.kinds.structure`, built once per type."""
        if self._structure is None:
            if self.custom:
                self._structure = structure_mod.for_schema(
                    self.schema, status_subresource=self.has_status, name=f"{self.plural}.{self.group}"
                )
            else:
                self._structure = structure_mod.builtin(self.group, self.version, self.kind)
        return self._structure


def _t(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    generation: bool = False,
    fields: dict[str, tuple[str, ...]] | None = None,
    **kw: Any,
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        short_names=short,
        categories=categories,
        subresources=sub,
        generation=generation,
        selectable_fields=dict(fields or {}),
        **kw,
    )


def builtin_types() -> list[ResourceType]:
    """A fresh list of the built-in kinds (each cluster gets its own objects, so CRDs never leak)."""
    all_ = ("all",)
    return [
        _t(
            "",
            "v1",
            "Namespace",
            "namespaces",
            namespaced=False,
            verbs=tuple(v for v in STANDARD_VERBS if v != "deletecollection"),
            short=("ns",),
            sub=("status", "finalize"),
            fields={"status.phase": ("status", "phase")},
        ),
        _t(
            "",
            "v1",
            "Pod",
            "pods",
            short=("po",),
            categories=all_,
            sub=("status",),
            generation=True,
            return_deleted_object=True,
            fields={
                "spec.nodeName": ("spec", "nodeName"),
                "spec.restartPolicy": ("spec", "restartPolicy"),
                "spec.schedulerName": ("spec", "schedulerName"),
                "spec.serviceAccountName": ("spec", "serviceAccountName"),
                "status.phase": ("status", "phase"),
                "status.podIP": ("status", "podIP"),
                "status.nominatedNodeName": ("status", "nominatedNodeName"),
            },
        ),
        _t("", "v1", "ConfigMap", "configmaps", short=("cm",)),
        _t("", "v1", "Secret", "secrets", fields={"type": ("type",)}),
        _t("", "v1", "Service", "services", short=("svc",), categories=all_, sub=("status",)),
        _t("", "v1", "ServiceAccount", "serviceaccounts", short=("sa",)),
        _t(
            "",
            "v1",
            "Event",
            "events",
            short=("ev",),
            fields={
                "involvedObject.kind": ("involvedObject", "kind"),
                "involvedObject.name": ("involvedObject", "name"),
                "involvedObject.namespace": ("involvedObject", "namespace"),
                "involvedObject.uid": ("involvedObject", "uid"),
                "reason": ("reason",),
                "type": ("type",),
            },
        ),
        _t(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            short=("ev",),
            stored_as=("", "v1", "events"),
        ),
        _t(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            short=("deploy",),
            categories=all_,
            sub=("status", "scale"),
            generation=True,
            generation_on_annotations=True,
        ),
        _t(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            short=("rs",),
            categories=all_,
            sub=("status", "scale"),
            generation=True,
            fields={"status.replicas": ("status", "replicas")},
        ),
        _t(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            short=("sts",),
            categories=all_,
            sub=("status", "scale"),
            generation=True,
        ),
        _t(
            "apps",
            "v1",
            "DaemonSet",
            "daemonsets",
            short=("ds",),
            categories=all_,
            sub=("status",),
            generation=True,
        ),
        _t(
            "batch",
            "v1",
            "Job",
            "jobs",
            categories=all_,
            sub=("status",),
            generation=True,
            fields={"status.successful": ("status", "succeeded")},
        ),
        _t(
            "batch",
            "v1",
            "CronJob",
            "cronjobs",
            short=("cj",),
            categories=all_,
            sub=("status",),
            generation=True,
        ),
        _t(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            short=("ing",),
            sub=("status",),
            generation=True,
        ),
        _t(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            short=("netpol",),
            generation=True,
        ),
        _t("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        _t("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        _t("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
        _t("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
        _t("coordination.k8s.io", "v1", "Lease", "leases"),
        # Kinds GitOps repositories commonly carry besides workloads (no controllers behind them here).
        _t("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",), sub=("status",)),
        _t(
            "",
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            namespaced=False,
            short=("pv",),
            sub=("status",),
        ),
        _t("", "v1", "LimitRange", "limitranges", short=("limits",)),
        _t("", "v1", "ResourceQuota", "resourcequotas", short=("quota",), sub=("status",)),
        _t("", "v1", "Endpoints", "endpoints", short=("ep",)),
        _t(
            "",
            "v1",
            "Node",
            "nodes",
            namespaced=False,
            short=("no",),
            sub=("status",),
            fields={"spec.unschedulable": ("spec", "unschedulable")},
        ),
        _t("apps", "v1", "ControllerRevision", "controllerrevisions"),
        _t(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            short=("pdb",),
            sub=("status",),
            generation=True,
        ),
        _t(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            short=("hpa",),
            categories=all_,
            sub=("status",),
            generation=True,
        ),
        _t("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", generation=True),
        _t("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False, generation=True),
        _t("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False, short=("sc",)),
        _t("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", namespaced=False, short=("pc",)),
        _t(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            namespaced=False,
            categories=("api-extensions",),
            generation=True,
        ),
        _t(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            namespaced=False,
            categories=("api-extensions",),
            generation=True,
        ),
        ResourceType(
            group="authorization.k8s.io",
            version="v1",
            kind="SelfSubjectAccessReview",
            plural="selfsubjectaccessreviews",
            singular="selfsubjectaccessreview",
            namespaced=False,
            verbs=("create",),
            virtual=True,
        ),
        ResourceType(
            group="authentication.k8s.io",
            version="v1",
            kind="TokenReview",
            plural="tokenreviews",
            singular="tokenreview",
            namespaced=False,
            verbs=("create",),
            virtual=True,
        ),
        ResourceType(
            group="authentication.k8s.io",
            version="v1",
            kind="SelfSubjectReview",
            plural="selfsubjectreviews",
            singular="selfsubjectreview",
            namespaced=False,
            verbs=("create",),
            virtual=True,
        ),
        _t(
            "apiregistration.k8s.io",
            "v1",
            "APIService",
            "apiservices",
            namespaced=False,
            categories=("api-extensions",),
            sub=("status",),
        ),
        _t(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            namespaced=False,
            short=("crd", "crds"),
            categories=("api-extensions",),
            sub=("status",),
            generation=True,
        ),
    ]


@dataclass(frozen=True)
class Aggregated:
    """A group version an APIService registers besides what the cluster serves itself: listed in discovery,
    and, when not `available`, `Stale` there and answered 503 (`fleet.sim.controllers.apiservices`)."""

    group: str
    version: str
    group_priority: int
    version_priority: int
    available: bool


class Registry:
    """The kinds one cluster serves: built-ins plus whatever CRDs add. Lookups are dict hits."""

    def __init__(self, types: list[ResourceType] | None = None) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._by_gk: dict[tuple[str, str], ResourceType] = {}
        self.aggregated: dict[tuple[str, str], Aggregated] = {}
        self.generation = 0
        self.cache: dict[Any, Any] = {}  # documents derived from the registry (discovery, OpenAPI)
        for rtype in types if types is not None else builtin_types():
            self.add(rtype)

    def add(self, rtype: ResourceType) -> None:
        self._by_gvr[(rtype.group, rtype.version, rtype.plural)] = rtype
        self._by_gk.setdefault((rtype.group, rtype.kind), rtype)
        self.generation += 1
        self.cache.clear()

    def remove(self, group: str, version: str, plural: str) -> ResourceType | None:
        rtype = self._by_gvr.pop((group, version, plural), None)
        if rtype is not None:
            if self._by_gk.get((group, rtype.kind)) is rtype:
                del self._by_gk[(group, rtype.kind)]
                for other in self._by_gvr.values():
                    if (other.group, other.kind) == (group, rtype.kind):
                        self._by_gk[(group, rtype.kind)] = other
                        break
            self.generation += 1
            self.cache.clear()
        return rtype

    def set_aggregated(self, entries: dict[tuple[str, str], Aggregated]) -> None:
        """Replace the APIServices' group versions; discovery documents are rebuilt when they changed."""
        if entries != self.aggregated:
            self.aggregated = dict(entries)
            self.generation += 1
            self.cache.clear()

    def unavailable(self, group: str, version: str) -> bool:
        """A group version whose APIService is not available (and which the cluster does not serve)."""
        entry = self.aggregated.get((group, version))
        return entry is not None and not entry.available and not self.in_group_version(group, version)

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def by_kind(self, group: str, kind: str) -> ResourceType | None:
        return self._by_gk.get((group, kind))

    def all(self) -> list[ResourceType]:
        return list(self._by_gvr.values())

    def groups(self) -> dict[str, list[str]]:
        """Group name -> served versions (preferred first), in first-registration order."""
        out: dict[str, list[str]] = {}
        for rtype in self._by_gvr.values():
            versions = out.setdefault(rtype.group, [])
            if rtype.version not in versions:
                versions.append(rtype.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self._by_gvr.values() if t.group == group and t.version == version]
