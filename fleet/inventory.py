"""Inventories: which objects fleet applied for one bundle on one cluster (pure).

Owns: the shape of the inventory ConfigMap ``<instance>-inventory-<bundle>`` in namespace
``fleet-system`` (SPEC.md section 2), encoding a set of `model.ObjectRef`s into it and decoding it back,
and the label selector that finds every inventory of an instance on a cluster. An inventory that cannot
be decoded raises `InventoryError`: it is never read as empty (an unknown inventory must never lead to a
prune, and must never be overwritten as if empty).

Does not: read or write clusters (`apply` does), or decide what to prune (`plan`).

Layout::

    metadata.labels:  fleet.dev/owner=<instance>, fleet.dev/inventory=true
    data.bundle:      <bundle>
    data.objects:     JSON list of [group, version, kind, namespace, name], sorted
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet import errors, model

LABEL_INVENTORY = "fleet.dev/inventory"
FORMAT = "fleet.dev/inventory-v1"


class InventoryError(errors.ClusterError):
    """An inventory ConfigMap exists but cannot be read: its bundle is left alone."""

    retriable = False


@dataclass(frozen=True)
class Inventory:
    bundle: str
    refs: frozenset[model.ObjectRef]
    resource_version: str | None = None  # of the ConfigMap it was read from; None: not on the cluster

    def union(self, refs: Iterable[model.ObjectRef]) -> frozenset[model.ObjectRef]:
        return self.refs | frozenset(refs)


def selector(*, instance: str) -> str:
    """Label selector of every inventory ConfigMap of `instance`."""
    return f"{model.LABEL_OWNER}={instance},{LABEL_INVENTORY}=true"


def encode(bundle: str, refs: Iterable[model.ObjectRef], *, instance: str) -> dict[str, Any]:
    """The ConfigMap (an apply configuration) holding `refs` for `bundle`."""
    rows = sorted({(r.group, r.version, r.kind, r.namespace, r.name) for r in refs})
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": model.inventory_name(instance=instance, bundle=bundle),
            "namespace": model.INVENTORY_NAMESPACE,
            "labels": {model.LABEL_OWNER: instance, LABEL_INVENTORY: "true"},
            "annotations": {"fleet.dev/format": FORMAT},
        },
        "data": {"bundle": bundle, "objects": json.dumps([list(r) for r in rows], separators=(",", ":"))},
    }


def decode(configmap: Mapping[str, Any], *, instance: str) -> Inventory:
    """Read an inventory ConfigMap; raise `InventoryError` naming it when it is not readable."""
    meta = configmap.get("metadata") or {}
    name = str(meta.get("name", ""))
    where = f"ConfigMap/{model.INVENTORY_NAMESPACE}/{name}"
    data = configmap.get("data")
    if not isinstance(data, dict):
        raise InventoryError(f"{where}: inventory without data (unreadable, not empty)")
    bundle = data.get("bundle")
    prefix = f"{instance}-inventory-"
    if not isinstance(bundle, str) or not bundle:
        if not name.startswith(prefix):
            raise InventoryError(f"{where}: inventory without data.bundle")
        bundle = name[len(prefix) :]
    if name != model.inventory_name(instance=instance, bundle=bundle):
        raise InventoryError(f"{where}: inventory names bundle {bundle!r} but is not called after it")
    if "objects" not in data:
        raise InventoryError(f"{where}: inventory without data.objects (unreadable, not empty)")
    raw = data["objects"]
    try:
        rows = json.loads(raw)
    except (TypeError, ValueError):
        raise InventoryError(f"{where}: data.objects is not JSON") from None
    if not isinstance(rows, list):
        raise InventoryError(f"{where}: data.objects is not a list")
    refs = set()
    for row in rows:
        if not (isinstance(row, list) and len(row) == 5 and all(isinstance(x, str) for x in row)):
            raise InventoryError(f"{where}: data.objects holds an entry that is not 5 strings")
        group, version, kind, namespace, obj_name = row
        if not version or not kind or not obj_name:
            raise InventoryError(f"{where}: data.objects holds an entry without version, kind or name")
        refs.add(model.ObjectRef(group, version, kind, namespace, obj_name))
    rv = meta.get("resourceVersion")
    return Inventory(bundle=bundle, refs=frozenset(refs), resource_version=str(rv) if rv else None)


def decode_all(
    configmaps: Iterable[Mapping[str, Any]], *, instance: str
) -> tuple[dict[str, Inventory], dict[str, str]]:
    """Inventories by bundle, and errors by bundle for those that cannot be read."""
    found: dict[str, Inventory] = {}
    broken: dict[str, str] = {}
    prefix = f"{instance}-inventory-"
    for cm in configmaps:
        try:
            inv = decode(cm, instance=instance)
        except InventoryError as e:
            name = str((cm.get("metadata") or {}).get("name", ""))
            bundle = name[len(prefix) :] if name.startswith(prefix) else name
            broken[bundle] = str(e)
            continue
        found[inv.bundle] = inv
    return found, broken


def same(refs: Iterable[model.ObjectRef], inventory: Inventory | None) -> bool:
    """Whether writing `refs` would change nothing."""
    wanted = frozenset(refs)
    if inventory is None or inventory.resource_version is None:
        return False
    return wanted == inventory.refs
