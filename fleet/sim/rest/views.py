"""A resource served in a second API group over another one's storage: ``events.k8s.io/v1`` Events.

Owns: `serve`, every verb of a view resource (one whose `ResourceType.stored_as` names the resource it
is stored as): the request body is converted to the stored form (`fleet.sim.kinds.events`) and checked
as the real server checks writes through that group, the ordinary verb runs on the stored resource,
and what it answers (objects, lists, Table rows, watch events) is converted back; errors name the view
resource (``events.events.k8s.io "x" not found``). So `kubectl get events` (core ``v1``) shows the
Events a client wrote through ``events.k8s.io/v1``, and the other way round, as on a real cluster.

Does not: store anything, or hold the conversion rules (`fleet.sim.kinds.events`). Gaps (docs/sim.md):
watch bookmarks carry the stored group's apiVersion; managedFields of a server-side apply name the
stored form's fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import json_merge_patch
import jsonpatch
import orjson
from aiohttp import web

from fleet.sim import status
from fleet.sim.kinds import events, types
from fleet.sim.rest import patches, reads, requests, writes
from fleet.sim.storage import store

Convert = Callable[[dict[str, Any]], dict[str, Any]]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _outward(resp: web.StreamResponse, convert: Convert) -> web.StreamResponse:
    """An answer of the stored resource, with every object in it converted to the view's form."""
    if not isinstance(resp, web.Response) or resp.body is None or resp.content_type != requests.JSON:
        return resp
    doc = orjson.loads(resp.body if isinstance(resp.body, bytes) else bytes(resp.body))  # type: ignore[arg-type]
    if not isinstance(doc, dict):
        return resp
    kind = doc.get("kind")
    if kind == "Table":
        for row in doc.get("rows") or ():
            embedded = row.get("object")
            if isinstance(embedded, dict) and embedded.get("kind") == "Event":
                row["object"] = convert(embedded)
    elif kind == "EventList":
        doc = convert(doc)
        doc["items"] = [convert(i) for i in doc.get("items") or ()]
    elif kind == "Event":
        doc = convert(doc)
    else:
        return resp
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in ("content-type", "content-length")}
    return requests.json_response(orjson.dumps(doc), code=resp.status, headers=headers or None)


def _renamed_error(
    err: status.ApiError, view: types.ResourceType, stored: types.ResourceType
) -> status.ApiError:
    """An error of the stored resource, naming the view resource as the real server would."""
    body = dict(err.status)
    message = str(body.get("message", ""))
    body["message"] = message.replace(f'{stored.group_resource} "', f'{view.group_resource} "', 1)
    details = body.get("details")
    if isinstance(details, dict) and details.get("kind") == stored.plural:
        body["details"] = {**details, "group": view.group} if view.group else details
    elif isinstance(details, dict) and details.get("kind") == stored.kind and not details.get("group"):
        body["details"] = {**details, "group": view.group}
        body["message"] = str(body["message"]).replace(f'{stored.kind} "', f'{view.kind}.{view.group} "', 1)
    return status.ApiError(body, headers=err.headers)


def _invalid(view: types.ResourceType, name: str, causes: list[dict[str, str]]) -> status.ApiError:
    return status.invalid(view.kind, name, causes, group=view.group)


async def serve(
    cluster: store.Cluster, request: web.BaseRequest, t: requests.Target, ctx: requests.RequestContext
) -> web.StreamResponse:
    view = t.rtype
    assert view.stored_as is not None
    stored = cluster.registry.get(*view.stored_as)
    assert stored is not None, f"{view.group_resource}: stored as an unknown resource"
    st = requests.Target(stored, t.namespace, t.name, t.subresource, t.watch_path)
    try:
        return await _verb(cluster, request, t, st, ctx)
    except status.ApiError as err:
        raise _renamed_error(err, view, stored) from None


async def _verb(
    cluster: store.Cluster,
    request: web.BaseRequest,
    t: requests.Target,
    st: requests.Target,
    ctx: requests.RequestContext,
) -> web.StreamResponse:
    method, q = request.method, request.query
    out = events.to_events
    if method == "GET":
        if t.watch_path or requests.flag(q, "watch"):
            ctx.convert = out
            return await reads.watch(cluster, request, st, ctx)
        if t.name is None:
            return _outward(await reads.list_(cluster, request, st, ctx), out)
        return _outward(await reads.get(cluster, request, st, ctx), out)
    if method == "DELETE":
        if t.name is None:
            return await writes.delete_collection(cluster, request, st, ctx)
        return _outward(await writes.delete(cluster, request, st, ctx), out)
    if method == "POST":
        if t.name is not None:
            raise status.method_not_allowed()
        ct = requests.content_type_of(request)
        if ct not in requests.BODY_TYPES:
            raise status.unsupported_media_type(ct, ["application/json", "application/yaml"])
        obj = requests.decode_object(await requests.read_body(request), ct)
        requests.check_body_type(t.rtype, obj)
        meta = _dict(obj.get("metadata"))
        causes = events.create_causes(obj, namespace=t.namespace or "")
        if causes:
            raise _invalid(t.rtype, str(meta.get("name") or ""), causes)
        request[requests.BODY_OVERRIDE] = orjson.dumps(events.to_core(obj))
        return _outward(await writes.create(cluster, request, st, ctx), out)
    if method == "PUT" and t.name is not None:
        ct = requests.content_type_of(request)
        if ct not in requests.BODY_TYPES:
            raise status.unsupported_media_type(ct, ["application/json", "application/yaml"])
        obj = requests.decode_object(await requests.read_body(request), ct)
        requests.check_body_type(t.rtype, obj)
        old = cluster.get(st.rtype, st.ns, t.name)
        causes = events.update_causes(obj, events.to_events(old.copy()), namespace=t.namespace or "")
        if causes:
            raise _invalid(t.rtype, t.name, causes)
        request[requests.BODY_OVERRIDE] = orjson.dumps(events.to_core(obj))
        return _outward(await writes.update(cluster, request, st, ctx), out)
    if method == "PATCH" and t.name is not None:
        return _outward(await _patch(cluster, request, t, st, ctx), out)
    raise status.method_not_allowed()


async def _patch(
    cluster: store.Cluster,
    request: web.BaseRequest,
    t: requests.Target,
    st: requests.Target,
    ctx: requests.RequestContext,
) -> web.StreamResponse:
    ct = requests.content_type_of(request)
    if ct not in requests.PATCH_TYPES:
        raise status.unsupported_patch_type()
    data = await requests.read_body(request)
    if ct == "application/apply-patch+yaml":
        config = requests.decode_object(data, "application/yaml")
        if config.get("apiVersion") == events.EVENTS_API_VERSION:
            config = events.to_core(config)
        request[requests.BODY_OVERRIDE] = orjson.dumps(config)
        return await patches.patch(cluster, request, st, ctx)
    q = request.query
    is_dry = requests.dry_run(q, "PatchOptions")
    manager = requests.field_manager(request, "PatchOptions")
    mode = requests.field_validation(q)
    assert t.name is not None
    doc = requests.decode_patch(data)
    old = cluster.get(st.rtype, st.ns, t.name)
    base = events.to_events(old.copy())
    if ct == "application/json-patch+json":
        try:
            patched = jsonpatch.JsonPatch(doc).apply(base, in_place=False)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError):
            raise status.patch_rejected() from None
    else:  # merge and strategic merge patches: an Event has no list a strategy would merge
        if not isinstance(doc, dict):
            raise status.bad_request("json: cannot unmarshal into Go value of type map[string]interface {}")
        patched = json_merge_patch.merge(events.to_events(old.copy()), doc)  # merges in place
    if not isinstance(patched, dict):
        raise status.bad_request("the patch did not produce an object")
    requests.check_metadata(patched, patch=True)
    meta = patched.get("metadata")
    if not isinstance(meta, dict) or meta.get("name") != t.name:
        raise status.bad_request(
            f"the name of the object ({(meta or {}).get('name')}) does not match the name on the URL ({t.name})"
        )
    if meta.get("resourceVersion") and meta["resourceVersion"] != old.obj["metadata"].get("resourceVersion"):
        raise status.conflict(st.rtype, t.name, status.OPTIMISTIC_LOCK)
    causes = events.update_causes(patched, base, namespace=t.namespace or "")
    if causes:
        raise _invalid(t.rtype, t.name, causes)
    new = events.to_core(patched)
    writes.strict_fields(st.rtype, new, mode, ctx)
    result = writes.write_update(cluster, st.rtype, old, new, manager=manager, subresource=None, dry=is_dry)
    return requests.finish(result, ctx)
