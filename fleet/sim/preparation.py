"""What the server does to every object on its way to the store, whoever writes it.

Owns: `apply_defaults` (by kind: built-in defaults and normalisation through `fleet.sim.kinds.defaults`; a
CRD's defaults and 422 validation and a custom resource's pruning, schema defaults and 422 validation
through `fleet.sim.kinds.customresources`, an APIService's through `fleet.sim.kinds.apiservices`) and `record_update` (the `metadata.managedFields` of a non-apply
write, through `fleet.sim.merging.ssa.update`). Both the REST surface (`fleet.sim.rest`, for client
writes) and the sim's own controllers (`fleet.sim.controllers`) call these, so a controller's write is
processed exactly like a client's.

Does not: merge applies (`fleet.sim.merging.ssa.apply`, called by the REST layer), set the server-kept
metadata or check preconditions (`fleet.sim.storage`), validate metadata or allocate Service addresses
(the REST layer), or touch a cluster: functions over plain dicts (and the clock).
"""

from __future__ import annotations

from typing import Any

from fleet.sim.kinds import apiservices, customresources, defaults, types
from fleet.sim.merging import ssa
from fleet.sim.storage import objects


def apply_defaults(rtype: types.ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """The object as stored after defaulting (and, for CRDs and custom resources, validation)."""
    if rtype.custom:
        return customresources.prepare_object(rtype, obj)  # pruned, schema defaults, 422 validation
    if customresources.is_definition(rtype):
        return customresources.prepare_definition(obj)  # CRD defaults and validation
    if (rtype.group, rtype.kind) == (apiservices.GROUP, apiservices.KIND):
        return apiservices.prepare(obj)  # APIService defaults and validation
    return defaults.default(obj, group=rtype.group, kind=rtype.kind)


def record_update(
    rtype: types.ResourceType,
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    subresource: str | None,
) -> dict[str, Any]:
    """`new` with the managedFields of a non-apply write (create, update, patch) by `manager`."""
    # A write through `/scale` is recorded without a time, as the real server's scale handler does.
    now = None if subresource == "scale" else objects.now()
    result = ssa.update(
        old, new, manager=manager, structure=rtype.structure(), now=now, subresource=subresource
    )
    if "status" in new and "status" not in result:
        result["status"] = new["status"]  # an empty status struct is part of the object (`status: {}`)
    return result
