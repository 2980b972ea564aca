"""PATCH in its four content types, server-side apply included, with the real server's errors.

Owns: `patch` (JSON merge patch with `json-merge-patch`, JSON patch with `jsonpatch`, strategic merge
patch with `fleet.sim.merging.smp` (415 for custom resources), each on the object or its `scale` subresource,
then the shared write steps of `fleet.sim.rest.writes`), `apply` (an `application/apply-patch+yaml`
body: JSON or YAML, the checks of the applied configuration, create or merge through
`fleet.sim.merging.ssa`, the 409 of a conflict shaped like apimachinery's `conflict.go`, the 500 of an
undeclared field), and the 422/500 of a patched or applied Secret whose `data` is not base64 (no value
is ever echoed).

Does not: merge anything itself (`fleet.sim.merging`), or parse options and bodies
(`fleet.sim.rest.requests`).
"""

from __future__ import annotations

from typing import Any

import json_merge_patch
import jsonpatch
import orjson
import yaml
from aiohttp import web

from fleet.sim import preparation, status
from fleet.sim.kinds import types, validation
from fleet.sim.merging import smp, ssa
from fleet.sim.rest import reads, requests, writes
from fleet.sim.storage import objects, store


async def patch(
    cluster: store.Cluster, request: web.BaseRequest, t: requests.Target, ctx: requests.RequestContext
) -> web.Response:
    ct = requests.content_type_of(request)
    rtype = t.rtype
    if ct not in requests.PATCH_TYPES:
        raise status.unsupported_patch_type()
    if rtype.custom and ct not in requests.CR_PATCH_TYPES:
        raise status.unsupported_media_type(ct, list(requests.CR_PATCH_TYPES))
    q = request.query
    is_dry = requests.dry_run(q, "PatchOptions")
    apply_ = ct == "application/apply-patch+yaml"
    manager = requests.field_manager(request, "PatchOptions", required=apply_)
    mode = requests.field_validation(q)
    if "force" in q and not apply_:
        raise status.invalid(
            "PatchOptions",
            "",
            [
                status.field_cause(
                    "FieldValueForbidden", "force", "Forbidden: may not be specified for non-apply patch"
                )
            ],
            group="meta.k8s.io",
        )
    data = await requests.read_body(request)
    assert t.name is not None
    if apply_:
        return apply(cluster, t, data, manager=manager, force=requests.flag(q, "force"), dry=is_dry, ctx=ctx)
    doc = requests.decode_patch(data)
    old = cluster.get(t.rtype, t.ns, t.name)
    base: dict[str, Any] = old.copy() if t.subresource != "scale" else reads.scale_of(old.obj, t.rtype)
    if ct == "application/merge-patch+json":
        if not isinstance(doc, dict):
            raise status.bad_request("json: cannot unmarshal into Go value of type map[string]interface {}")
        patched = json_merge_patch.merge(base, doc)
    elif ct == "application/json-patch+json":
        try:
            operations = jsonpatch.JsonPatch(doc)
            patched = operations.apply(base, in_place=True)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError):
            # Malformed or failing alike: the real server answers its generic 422 without the cause.
            raise status.patch_rejected() from None
    else:
        patched = strategic_patch(rtype, base, doc)
    if not isinstance(patched, dict):
        raise status.bad_request("the patch did not produce an object")
    if t.subresource == "scale":
        return writes.write_scale(cluster, t, patched, manager=manager, dry=is_dry, ctx=ctx)
    requests.check_metadata(patched, patch=True)
    meta = patched.get("metadata")
    if not isinstance(meta, dict):
        raise status.bad_request("metadata must be an object")
    if meta.get("name") != t.name:
        raise status.bad_request(
            f"the name of the object ({meta.get('name')}) does not match the name on the URL ({t.name})"
        )
    if meta.get("resourceVersion") and meta["resourceVersion"] != old.obj["metadata"].get("resourceVersion"):
        raise status.conflict(rtype, t.name, status.OPTIMISTIC_LOCK)
    if not rtype.custom:
        check_patched_bytes(rtype, patched, strategic=ct == "application/strategic-merge-patch+json")
    writes.strict_fields(rtype, patched, mode, ctx)
    result = writes.write_update(
        cluster, rtype, old, patched, manager=manager, subresource=t.subresource, dry=is_dry
    )
    return requests.finish(result, ctx)


def apply(
    cluster: store.Cluster,
    t: requests.Target,
    data: bytes,
    *,
    manager: str,
    force: bool,
    dry: bool,
    ctx: requests.RequestContext,
) -> web.Response:
    rtype = t.rtype
    assert t.name is not None
    config: Any = None
    try:
        config = orjson.loads(data)  # most appliers (kubectl, fleet) send JSON: 10x cheaper than YAML
    except orjson.JSONDecodeError:
        try:
            config = yaml.load(data, Loader=yaml.CSafeLoader) if data.strip() else None
        except yaml.YAMLError as e:
            raise status.bad_request(f"error decoding YAML: {e}") from None
    if not isinstance(config, dict):
        raise status.bad_request("invalid object type: the apply patch must be a single object")
    if config.get("apiVersion") != rtype.api_version or config.get("kind") != rtype.kind:
        api_version = str(config.get("apiVersion") or "")
        gv = api_version if "/" in api_version else f"/{api_version}"  # a GroupVersionKind's String()
        raise status.bad_request(f"invalid object type: {gv}, Kind={config.get('kind') or ''}")
    meta = config.get("metadata") or {}
    if not isinstance(meta, dict):
        raise status.bad_request("metadata must be an object")
    requests.check_metadata(config)
    if meta.get("managedFields") is not None:
        raise status.bad_request("metadata.managedFields must be nil")
    if meta.get("name") and meta["name"] != t.name:
        raise status.bad_request(
            f"the name of the object ({meta['name']}) does not match the name on the URL ({t.name})"
        )
    if rtype.namespaced and meta.get("namespace") and meta["namespace"] != t.namespace:
        raise status.bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    ns = t.ns
    old = cluster.find(rtype, ns, t.name)
    stamp = objects.now()
    structure = rtype.structure()
    try:
        if old is None:
            if t.subresource is not None:
                raise status.not_found(rtype, t.name)
            if rtype.namespaced and cluster.namespace_phase(ns) is None:
                raise status.namespace_not_found(ns)
            config.setdefault("metadata", {})["name"] = t.name
            new = ssa.apply(None, config, manager=manager, force=force, structure=structure, now=stamp)
            check_applied_bytes(rtype, new, meta)
            new.get("metadata", {}).pop("resourceVersion", None)
            result = cluster.create(
                rtype,
                ns,
                new,
                manager=manager,
                dry_run=dry,
                prepare=lambda o: writes.server_fields(
                    cluster, rtype, preparation.apply_defaults(rtype, o), None
                ),
            )
        else:
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != old.obj["metadata"].get("resourceVersion"):
                raise status.conflict(rtype, t.name, status.OPTIMISTIC_LOCK)  # a precondition, as in patches
            live = old.copy()
            new = ssa.apply(
                live,
                config,
                manager=manager,
                force=force,
                structure=structure,
                now=stamp,
                subresource=t.subresource,
            )
            check_applied_bytes(rtype, new, meta)
            result = writes.write_update(
                cluster, rtype, old, new, manager=manager, subresource=t.subresource, dry=dry, applied=True
            )
    except ssa.ApplyConflict as e:
        raise conflict_error(e.conflicts, old.obj if old else None, applier=manager) from None
    except ssa.FieldNotDeclared as e:
        raise status.internal(f"failed to create typed patch object ({gvk_string(rtype)}): {e}") from None
    return requests.finish(result, ctx)


def strategic_patch(rtype: types.ResourceType, base: dict[str, Any], doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise status.bad_request("json: cannot unmarshal into Go value of type map[string]interface {}")
    try:
        return smp.patch(base, doc, structure=rtype.structure())
    except smp.UnsupportedPatch:
        raise status.unsupported_media_type(
            "application/strategic-merge-patch+json", list(requests.CR_PATCH_TYPES)
        ) from None
    except smp.InvalidPatch as e:
        raise status.error(422, "Invalid", str(e)) from None


def check_patched_bytes(rtype: types.ResourceType, patched: dict[str, Any], *, strategic: bool) -> None:
    """A patched built-in object whose []byte field (Secret `data`) is not base64: the real 422.

    The real server decodes the patched object and answers `NewInvalid(GroupKind{}, "", patch: Invalid
    value: <patched object>: <decode error>)` (apiserver handlers/patch.go; the strategic path converts
    from unstructured, prefixing `error decoding from json: `). Its bad value is the whole patched
    object, Secret values included; the sim omits it, as apimachinery renders an omitted value
    (`Invalid value: <detail>`), so no secret is ever echoed.
    """
    found = validation.byte_field_error(patched, group=rtype.group, version=rtype.version, kind=rtype.kind)
    if found is None:
        return
    detail = validation.base64_message(found[1])
    if strategic:
        detail = "error decoding from json: " + detail
    cause = status.field_cause("FieldValueInvalid", "patch", f"Invalid value: {detail}")
    raise status.error(
        422, "Invalid", f' "" is invalid: patch: {cause["message"]}', details={"causes": [cause]}
    )


def check_applied_bytes(rtype: types.ResourceType, merged: dict[str, Any], meta: dict[str, Any]) -> None:
    """A server-side apply whose merged object has a []byte field that is not base64: the real 500.

    The real field manager converts the merged object to the typed version and fails there (managedfields
    structuredmerge.go `failed to convert new object (...) to proper version`, runtime scheme.go
    `unable to convert unstructured object to ...`, converter.go `error decoding from json: ...`); the
    error is not a Status, so it is rendered as 500 with an empty reason. The offset only, no value.
    """
    if rtype.custom:
        return
    found = validation.byte_field_error(merged, group=rtype.group, version=rtype.version, kind=rtype.kind)
    if found is None:
        return
    gvk = gvk_string(rtype)
    where = f"{meta.get('namespace') or ''}/{meta.get('name') or ''}; {gvk}"
    raise status.internal(
        f"failed to convert new object ({where}) to proper version: unable to convert unstructured object "
        f"to {gvk}: error decoding from json: {validation.base64_message(found[1])}"
    )


def gvk_string(rtype: types.ResourceType) -> str:
    return f"{rtype.group}/{rtype.version}, Kind={rtype.kind}"


def _manager_label(manager: str, live: dict[str, Any] | None, applier: str = "") -> str:
    for entry in (live or {}).get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == manager and not (manager == applier and entry.get("operation") == "Apply"):
            label = f'"{manager}"'
            if entry.get("subresource"):
                label += f' with subresource "{entry["subresource"]}"'
            if entry.get("operation") == "Update":
                label += f" using {entry.get('apiVersion', '')}"
                if entry.get("time"):
                    label += f" at {entry['time']}"
            return label
    return f'"{manager}"'


def conflict_error(
    conflicts: list[tuple[str, str]], live: dict[str, Any] | None, *, applier: str = ""
) -> status.ApiError:
    """The 409 of an apply conflict, shaped like apimachinery internal/conflict.go."""
    causes = [
        {
            "type": "FieldManagerConflict",
            "message": f"conflict with {_manager_label(m, live, applier)}",
            "field": path,
        }
        for m, path in conflicts
    ]
    if len(conflicts) == 1:
        m, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {_manager_label(m, live, applier)}: {path}"
    else:
        by_manager: dict[str, list[str]] = {}
        for m, path in conflicts:
            by_manager.setdefault(m, []).append(path)
        lines = []
        for m, paths in by_manager.items():
            lines.append(f"conflicts with {_manager_label(m, live, applier)}:")
            lines.extend(f"- {p}" for p in paths)
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return status.ApiError(status.status(409, "Conflict", message, details={"causes": causes}))
