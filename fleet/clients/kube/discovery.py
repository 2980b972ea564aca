"""The types a cluster serves: kind -> plural and scope, from legacy or aggregated discovery.

Owns: `ResourceType`, `TypeTable` and reading both discovery formats. Does not: request them
(`requests.Client.types`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.core import model

# ----------------------------------------------------------------------------------------------------------
# Types served by a cluster


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{root}/{self.plural}"

    def object_path(self, namespace: str | None, name: str) -> str:
        return f"{self.collection_path(namespace if self.namespaced else None)}/{name}"


@dataclass(frozen=True)
class TypeTable:
    """(apiVersion, kind) -> ResourceType for what one cluster serves; `unavailable`: the group versions
    discovery lists but cannot describe (an APIService whose backend does not answer), with why."""

    types: Mapping[tuple[str, str], ResourceType]
    unavailable: Mapping[str, str] = field(default_factory=dict)

    def lookup(self, api_version: str, kind: str) -> ResourceType | None:
        return self.types.get((api_version, kind))

    def of(self, ref: model.ObjectRef) -> ResourceType | None:
        return self.types.get((ref.api_version, ref.kind))

    def namespaced_listable(self) -> tuple[ResourceType, ...]:
        seen: dict[tuple[str, str], ResourceType] = {}
        for rt in self.types.values():
            if rt.namespaced and "list" in rt.verbs:
                seen.setdefault((rt.group, rt.plural), rt)
        return tuple(seen.values())


def types_from_resource_list(doc: Mapping[str, Any]) -> list[ResourceType]:
    """The kinds of one APIResourceList (subresources left out)."""
    group_version = str(doc.get("groupVersion", ""))
    group, _, version = group_version.rpartition("/")
    out = []
    for res in _objects(doc.get("resources")):
        name = str(res.get("name", ""))
        if not name or "/" in name:
            continue
        out.append(
            ResourceType(
                group=group,
                version=version,
                kind=str(res.get("kind", "")),
                plural=name,
                namespaced=bool(res.get("namespaced")),
                verbs=tuple(str(v) for v in _list(res.get("verbs"))),
            )
        )
    return out


AGGREGATED_ACCEPT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"


def is_aggregated(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "APIGroupDiscoveryList"


def types_from_aggregated(doc: Mapping[str, Any]) -> list[ResourceType]:
    """The kinds of an aggregated discovery document (apidiscovery.k8s.io/v2 APIGroupDiscoveryList)."""
    out = []
    for item in _objects(doc.get("items")):
        meta = item.get("metadata")
        group = str((meta if isinstance(meta, dict) else {}).get("name") or "")
        for version in _objects(item.get("versions")):
            v = str(version.get("version", ""))
            for res in _objects(version.get("resources")):
                response_kind = res.get("responseKind")
                kind = response_kind.get("kind") if isinstance(response_kind, dict) else None
                plural = res.get("resource")
                if not kind or not plural:
                    continue
                out.append(
                    ResourceType(
                        group=group,
                        version=v,
                        kind=str(kind),
                        plural=str(plural),
                        namespaced=res.get("scope") == "Namespaced",
                        verbs=tuple(str(v) for v in _list(res.get("verbs"))),
                    )
                )
    return out


UNAVAILABLE = "its discovery fails (an APIService whose backend does not answer)"


def unavailable_from_aggregated(doc: Mapping[str, Any]) -> dict[str, str]:
    """The group versions an aggregated discovery document lists as `Stale`: their discovery failed."""
    out = {}
    for item in _objects(doc.get("items")):
        meta = item.get("metadata")
        group = str((meta if isinstance(meta, dict) else {}).get("name") or "")
        for version in _objects(item.get("versions")):
            if version.get("freshness") == "Stale" and version.get("version"):
                v = str(version["version"])
                out[f"{group}/{v}" if group else v] = UNAVAILABLE
    return out


def unavailable_warning(group_version: str, reason: str) -> str:
    return (
        f"API group version {group_version} is unavailable: {reason}; objects of its kinds can be neither "
        "applied, pruned nor checked on this cluster"
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _objects(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list (anything else in it, or a non-list, is left out)."""
    return [v for v in _list(value) if isinstance(v, dict)]
