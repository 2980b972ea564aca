"""Built-in Kubernetes schemas for the simulated clusters, from the `kubernetes-validate` package.

Owns: finding and parsing that package's `_definitions.json` for the emulated minor version, once per
process, and indexing it by group/version/kind. Every simulated cluster shares the one `Schemas` value
(`load()` is cached). Does not: walk schemas for merges (that is `fleet.sim.kinds.structure`'s job), default
anything, or describe plurals and scopes (the package has none; `fleet.sim.kinds.types` does).

The definitions are JSON Schema with references of the form ``#/$defs/<name>`` and the Kubernetes
extensions `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`,
`x-kubernetes-patch-merge-key`, `x-kubernetes-patch-strategy` and `x-kubernetes-group-version-kind`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate

DEFAULT_VERSION = "1.35"
REF_PREFIX = "#/$defs/"


@dataclass(frozen=True)
class Schemas:
    """The parsed definitions of one Kubernetes minor version."""

    version: str
    definitions: dict[str, dict[str, Any]]
    by_gvk: dict[tuple[str, str, str], str]

    def name_for(self, group: str, version: str, kind: str) -> str | None:
        """The definition name of a built-in kind, e.g. ``io.k8s.api.apps.v1.Deployment``."""
        return self.by_gvk.get((group, version, kind))

    def get(self, name: str) -> dict[str, Any]:
        return self.definitions[name]

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        """Follow a ``$ref`` (and single-element ``allOf`` wrappers) to the schema it names."""
        seen = 0
        while True:
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(REF_PREFIX):
                node = self.definitions[ref[len(REF_PREFIX) :]]
            elif isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
                node = node["allOf"][0]
            else:
                return node
            seen += 1
            if seen > 64:  # pragma: no cover - a cycle of bare references would be a broken package
                raise ValueError("schema reference cycle")

    def for_kind(self, group: str, version: str, kind: str) -> dict[str, Any] | None:
        name = self.name_for(group, version, kind)
        return self.definitions[name] if name else None


def _schema_dir(version: str) -> Path:
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    wanted = root / f"v{version}.0-local"
    if wanted.is_dir():
        return wanted
    # The package may ship only newer or older minors; take the closest one not newer, else the newest.
    available = sorted(
        (p for p in root.iterdir() if p.name.endswith("-local")),
        key=lambda p: tuple(int(x) for x in p.name[1:].split("-")[0].split(".")),
    )
    if not available:
        raise FileNotFoundError(f"{root}: no schema folders in kubernetes-validate")
    major_minor = tuple(int(x) for x in version.split("."))
    older = [
        p for p in available if tuple(int(x) for x in p.name[1:].split("-")[0].split("."))[:2] <= major_minor
    ]
    return (older or available)[-1]


@functools.cache
def load(version: str = DEFAULT_VERSION) -> Schemas:
    """Parse the definitions of `version` (``"1.35"``) once per process."""
    path = _schema_dir(version) / "_definitions.json"
    with path.open("rb") as f:
        doc = json.load(f)
    definitions: dict[str, dict[str, Any]] = doc.get("$defs") or doc.get("definitions") or {}
    by_gvk: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or ():
            key = (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))
            # Prefer the definition whose name matches the kind (ListMeta-style shared types come later).
            if key not in by_gvk or name.endswith("." + key[2]):
                by_gvk[key] = name
    return Schemas(version=version, definitions=definitions, by_gvk=by_gvk)
