"""What every render step shares: object identity, ordering and marks, the cluster-scoped kinds.

Owns: `identity`, `describe`, `canonical_json`, `hash_objects`, the table of built-in cluster-scoped
kinds (`CLUSTER_SCOPED`, `cluster_scoped_kinds`), default namespaces, the apply order (CRDs, Namespaces,
then the rest), the ownership marks and the revision annotation, and the render errors.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from fleet.core import errors, model

# (group, kind) of the built-in cluster-scoped kinds of Kubernetes 1.35 (core group is "").
CLUSTER_SCOPED: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "Namespace"),
        ("", "Node"),
        ("", "PersistentVolume"),
        ("", "ComponentStatus"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("apiregistration.k8s.io", "APIService"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "CSIDriver"),
        ("storage.k8s.io", "CSINode"),
        ("storage.k8s.io", "VolumeAttachment"),
        ("storage.k8s.io", "VolumeAttributesClass"),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("node.k8s.io", "RuntimeClass"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("certificates.k8s.io", "ClusterTrustBundle"),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "IPAddress"),
        ("networking.k8s.io", "ServiceCIDR"),
        ("resource.k8s.io", "DeviceClass"),
        ("resource.k8s.io", "ResourceSlice"),
        ("authentication.k8s.io", "TokenReview"),
        ("authentication.k8s.io", "SelfSubjectReview"),
        ("authorization.k8s.io", "SubjectAccessReview"),
        ("authorization.k8s.io", "SelfSubjectAccessReview"),
        ("authorization.k8s.io", "SelfSubjectRulesReview"),
        ("storagemigration.k8s.io", "StorageVersionMigration"),
        ("internal.apiserver.k8s.io", "StorageVersion"),
        ("policy", "PodSecurityPolicy"),
    }
)

DEFAULT_NAMESPACE = "default"


class VariableError(errors.RenderError):
    """A ``${cluster.NAME}`` that cannot be substituted; `name` is NAME, `cluster` the cluster the
    message names (a value missing there), if any."""

    def __init__(self, message: str, *, name: str, cluster: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.cluster = cluster


class ObjectRenderError(errors.RenderError):
    """A render error with the file and line it comes from (a manifest or the bundle.yaml field).

    `cluster`: the cluster the message names as lacking a value, if any (a shared render reused for
    another cluster renames it, see `_for_cluster`)."""

    def __init__(self, message: str, *, path: str = "", line: int = 1, cluster: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.cluster = cluster


# ----------------------------------------------------------------------------------------------------------
# Helpers.


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def describe(obj: Mapping[str, Any]) -> str:
    """`Kind/namespace/name` or `Kind/name` of an object (for messages)."""
    return str(model.ObjectRef.of(obj))


def identity(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(group, kind, namespace, name): what makes two objects the same object on a cluster."""
    meta = obj.get("metadata") or {}
    return (
        _group(str(obj.get("apiVersion", ""))),
        str(obj.get("kind", "")),
        str(meta.get("namespace") or ""),
        str(meta.get("name", "")),
    )


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hash_objects(objects: Iterable[Mapping[str, Any]]) -> str:
    """sha256 of the canonical JSON of `objects`, without their `fleet.dev/revision` annotation."""
    stripped = []
    for obj in objects:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if model.ANNOTATION_REVISION in annotations:
            obj = copy.deepcopy(dict(obj))
            ann = obj["metadata"]["annotations"]
            del ann[model.ANNOTATION_REVISION]
            if not ann:
                del obj["metadata"]["annotations"]
        stripped.append(obj)
    return hashlib.sha256(canonical_json(stripped).encode()).hexdigest()


def cluster_scoped_kinds(
    bundles: Iterable[model.Bundle], expansions: Iterable[model.Expansion] = ()
) -> frozenset[tuple[str, str]]:
    """The built-in table plus the (group, kind) of every CRD in `bundles` (and in what their sources
    rendered, `expansions`) with ``spec.scope: Cluster``."""
    extra: set[tuple[str, str]] = set()
    seen: set[str] = set()
    for expansion in expansions:
        for r in expansion.renders.values():
            if r.key not in seen:
                seen.add(r.key)
                extra |= r.cluster_scoped
    for bundle in bundles:
        for m in bundle.manifests:
            if m.kind == "CustomResourceDefinition" and _group(m.api_version) == "apiextensions.k8s.io":
                spec = m.obj.get("spec") or {}
                names = spec.get("names") or {}
                if (
                    isinstance(spec, Mapping)
                    and spec.get("scope") == "Cluster"
                    and isinstance(names, Mapping)
                ):
                    extra.add((str(spec.get("group", "")), str(names.get("kind", ""))))
    return CLUSTER_SCOPED | extra


def target_matches(target: model.PatchTarget, obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    return (
        (target.kind is None or target.kind == obj.get("kind"))
        and (target.name is None or target.name == meta.get("name"))
        and (target.api_version is None or target.api_version == obj.get("apiVersion"))
        and (target.namespace is None or target.namespace == (meta.get("namespace") or ""))
    )


def describe_target(target: model.PatchTarget) -> str:
    parts = [
        f"{k}={v}"
        for k, v in (
            ("apiVersion", target.api_version),
            ("kind", target.kind),
            ("namespace", target.namespace),
            ("name", target.name),
        )
        if v is not None
    ]
    return "{" + ", ".join(parts) + "}" if parts else "{} (any object)"


def default_namespace(
    obj: dict[str, Any], *, namespace: str, scoped: Collection[tuple[str, str]]
) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    cluster_scoped = (_group(str(obj.get("apiVersion", ""))), str(obj.get("kind", ""))) in scoped
    if cluster_scoped:
        meta.pop("namespace", None)
    elif not meta.get("namespace"):
        meta["namespace"] = namespace
    return obj


def _rank(obj: Mapping[str, Any]) -> int:
    kind = obj.get("kind")
    group = _group(str(obj.get("apiVersion", "")))
    if kind == "CustomResourceDefinition" and group == "apiextensions.k8s.io":
        return 0
    if kind == "Namespace" and group == "":
        return 1
    return 2


def sort_key(obj: Mapping[str, Any]) -> tuple[int, str, str, str, str]:
    g, k, ns, n = identity(obj)
    return (_rank(obj), g, k, ns, n)


def check_object(m: model.Manifest) -> None:
    obj = m.obj
    where = f"{m.path}:{m.line}"
    if not isinstance(obj, Mapping):
        raise ObjectRenderError(f"{where}: document {m.index} is not a mapping", path=m.path, line=m.line)
    meta = obj.get("metadata")
    for what, ok in (
        ("apiVersion", isinstance(obj.get("apiVersion"), str) and obj.get("apiVersion")),
        ("kind", isinstance(obj.get("kind"), str) and obj.get("kind")),
        (
            "metadata.name",
            isinstance(meta, Mapping) and isinstance(meta.get("name"), str) and meta.get("name"),
        ),
    ):
        if not ok:
            raise ObjectRenderError(f"{where}: document {m.index} has no {what}", path=m.path, line=m.line)


def mark(obj: dict[str, Any], *, bundle: str, instance: str) -> None:
    meta = obj.setdefault("metadata", {})
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        labels = {}
    meta["labels"] = {**labels, model.LABEL_BUNDLE: bundle, model.LABEL_OWNER: instance}


def annotate(objects: tuple[Mapping[str, Any], ...], revision: str | None) -> tuple[Mapping[str, Any], ...]:
    if revision is None:
        return objects
    out = []
    for obj in objects:
        new = dict(obj)
        meta = dict(new.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), model.ANNOTATION_REVISION: revision}
        new["metadata"] = meta
        out.append(new)
    return tuple(out)
