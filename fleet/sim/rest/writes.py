"""The write verbs of the REST surface, except PATCH: create, update, delete, and the reviews.

Owns: `create` (POST), `update` (PUT, with the `scale` subresource and a Namespace's `finalize`),
`delete` and `delete_collection` (DeleteOptions: dryRun, propagationPolicy, preconditions), the
SelfSubjectAccessReview/SelfSubjectReview/TokenReview answers (every caller is an allowed cluster
admin), and the steps every write shares (`write_update`): unknown and duplicate fields per
`fieldValidation` (`strict_fields`), defaulting and managedFields (`fleet.sim.preparation`), metadata
and Secret validation and Service address allocation (`server_fields`), generation, then the store's
commit.

Does not: handle PATCH or server-side apply (`fleet.sim.rest.patches`), parse options
(`fleet.sim.rest.requests`), or keep state (`fleet.sim.storage.store`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from fleet.sim import preparation, status
from fleet.sim.kinds import allocation, apiservices, customresources, types, validation
from fleet.sim.rest import reads, requests
from fleet.sim.storage import objects, selectors, store, strategy


async def create(
    cluster: store.Cluster, request: web.BaseRequest, t: requests.Target, ctx: requests.RequestContext
) -> web.Response:
    ct = requests.content_type_of(request)
    if ct not in requests.BODY_TYPES:
        raise status.unsupported_media_type(ct, ["application/json", "application/yaml"])
    q = request.query
    is_dry = requests.dry_run(q, "CreateOptions")
    manager = requests.field_manager(request, "CreateOptions")
    mode = requests.field_validation(q)
    data = await requests.read_body(request)
    obj = requests.decode_object(data, ct, kind=t.rtype.kind)
    requests.check_body_type(t.rtype, obj)
    strict_fields(t.rtype, obj, mode, ctx, raw=data if ct == requests.JSON else None, body=True)
    namespace = t.namespace or ""
    if t.rtype.namespaced and not namespace:
        raise status.resource_not_found()
    result = cluster.create(
        t.rtype,
        namespace,
        obj,
        manager=manager,
        dry_run=is_dry,
        prepare=prepare_new(cluster, t.rtype, None, manager, None),
    )
    return requests.finish(result, ctx)


async def update(
    cluster: store.Cluster, request: web.BaseRequest, t: requests.Target, ctx: requests.RequestContext
) -> web.Response:
    ct = requests.content_type_of(request)
    if ct not in requests.BODY_TYPES:
        raise status.unsupported_media_type(ct, ["application/json", "application/yaml"])
    q = request.query
    is_dry = requests.dry_run(q, "UpdateOptions")
    manager = requests.field_manager(request, "UpdateOptions")
    mode = requests.field_validation(q)
    data = await requests.read_body(request)
    body = requests.decode_object(data, ct, kind=t.rtype.kind)
    assert t.name is not None
    if t.subresource == "scale":
        return write_scale(cluster, t, body, manager=manager, dry=is_dry, ctx=ctx)
    if t.subresource == "finalize":
        # Namespace finalize (registry/core/namespace FinalizeREST): an update of everything but the
        # status, recorded as subresource `finalize`.
        spec = body.get("spec")
        finalizers = spec.get("finalizers") if isinstance(spec, dict) else None
        if finalizers is not None and not (
            isinstance(finalizers, list) and all(isinstance(f, str) for f in finalizers)
        ):
            raise status.bad_request("spec.finalizers must be a list of strings")
        if finalizers == [] and isinstance(spec, dict):
            del spec["finalizers"]  # an empty list is left out (omitempty)
        old_ns = cluster.get(t.rtype, "", t.name)
        if "status" in old_ns.obj:
            body["status"] = old_ns.obj["status"]
        else:
            body.pop("status", None)
    requests.check_body_type(t.rtype, body)
    strict_fields(t.rtype, body, mode, ctx, raw=data if ct == requests.JSON else None, body=True)
    meta = body.get("metadata") or {}
    if not isinstance(meta, dict):
        raise status.bad_request("metadata must be an object")
    if meta.get("name") and meta["name"] != t.name:
        raise status.bad_request(
            f"the name of the object ({meta['name']}) does not match the name on the URL ({t.name})"
        )
    if t.rtype.namespaced and meta.get("namespace") and meta["namespace"] != t.namespace:
        raise status.bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    old = cluster.get(t.rtype, t.ns, t.name)
    body_rv = meta.get("resourceVersion")
    if body_rv:
        if body_rv != old.obj["metadata"].get("resourceVersion"):
            raise status.conflict(t.rtype, t.name, status.OPTIMISTIC_LOCK)
    elif t.rtype.custom:
        raise status.invalid(
            t.rtype.kind,
            t.name,
            [
                status.field_cause(
                    "FieldValueInvalid",
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                )
            ],
            group=t.rtype.group,
        )
    result = write_update(cluster, t.rtype, old, body, manager=manager, subresource=t.subresource, dry=is_dry)
    return requests.finish(result, ctx)


async def delete(
    cluster: store.Cluster, request: web.BaseRequest, t: requests.Target, ctx: requests.RequestContext
) -> web.Response:
    opts = await requests.delete_options(request)
    assert t.name is not None
    result = cluster.delete(
        t.rtype,
        t.ns,
        t.name,
        dry_run=opts["dry"],
        propagation=opts["propagation"],
        precondition_uid=opts["uid"],
        precondition_rv=opts["rv"],
    )
    return requests.finish(result, ctx, deleted=True)


async def delete_collection(
    cluster: store.Cluster, request: web.BaseRequest, t: requests.Target, ctx: requests.RequestContext
) -> web.Response:
    opts = await requests.delete_options(request)
    q = request.query
    try:
        labels = selectors.parse_labels(q.get("labelSelector"))
        fields = selectors.parse_fields(q.get("fieldSelector"), known=t.rtype.field_paths())
    except selectors.SelectorError as e:
        raise status.bad_request(str(e)) from None
    namespace = t.namespace if t.rtype.namespaced else None
    listed = cluster.list(t.rtype, namespace, labels=labels, fields=fields)
    items = []
    for stored in listed.items:
        meta = stored.obj["metadata"]
        try:
            result = cluster.delete(
                t.rtype,
                meta.get("namespace", ""),
                meta["name"],
                dry_run=opts["dry"],
                propagation=opts["propagation"],
            )
        except status.ApiError:
            continue
        ctx.mutated = ctx.mutated or result.mutated
        # An object deleted at once is listed as it was (its last resourceVersion), one held by
        # finalizers as it is now, as the real DeleteCollection answers.
        gone = opts["dry"] or cluster.find(t.rtype, meta.get("namespace", ""), meta["name"]) is None
        items.append(stored if gone and not meta.get("finalizers") else result.stored)
    head = orjson.dumps(
        {
            "kind": t.rtype.list_kind,
            "apiVersion": t.rtype.api_version,
            "metadata": {"resourceVersion": str(cluster.rv)},
        }
    )
    encode = objects.Stored.full if t.rtype.custom else objects.Stored.item
    return requests.json_response(head[:-1] + b',"items":[' + b",".join(encode(s) for s in items) + b"]}")


async def review(request: web.BaseRequest, t: requests.Target) -> web.Response:
    """SelfSubjectAccessReview / SelfSubjectReview: every caller is an allowed cluster admin."""
    ct = requests.content_type_of(request)
    if ct not in requests.BODY_TYPES:
        raise status.unsupported_media_type(ct, ["application/json", "application/yaml"])
    manager = requests.field_manager(request, "CreateOptions")
    body = requests.decode_object(await requests.read_body(request), ct, kind=t.rtype.kind)
    requests.check_body_type(t.rtype, body)
    body["apiVersion"], body["kind"] = t.rtype.api_version, t.rtype.kind
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    body["metadata"] = dict(meta or {})
    if t.rtype.kind == "SelfSubjectReview":  # answered by its own handler: a timestamp, no managedFields
        body["metadata"].setdefault("creationTimestamp", objects.now())
        body["status"] = {"userInfo": dict(requests.ADMIN_USER)}
        return requests.json_response(body, code=201)
    # The reviews go through the create handler: managedFields of the spec sent, no timestamp.
    body.setdefault("spec", {})
    body = objects.order(preparation.record_update(t.rtype, None, body, manager=manager, subresource=None))
    if t.rtype.kind == "SelfSubjectAccessReview":
        body["status"] = {"allowed": True}  # every caller is a member of system:masters
    else:
        body["status"] = {"authenticated": True, "user": dict(requests.ADMIN_USER)}
    return requests.json_response(body, code=201)


def write_update(
    cluster: store.Cluster,
    rtype: types.ResourceType,
    old: objects.Stored,
    new: dict[str, Any],
    *,
    manager: str,
    subresource: str | None,
    dry: bool,
    applied: bool = False,
    managed_as: str | None = None,
) -> store.WriteResult:
    new = strategy.prepare_update(rtype, old, new, subresource=subresource)
    new = preparation.apply_defaults(rtype, new)
    strategy.bump_generation(rtype, old.obj, new)

    def record(obj: dict[str, Any]) -> dict[str, Any]:
        return preparation.record_update(
            rtype, old.obj, obj, manager=manager, subresource=managed_as or subresource
        )

    new = server_fields(cluster, rtype, new, old.obj, record=None if applied else record)
    return cluster.commit_update(rtype, old, new, dry_run=dry)


def write_scale(
    cluster: store.Cluster,
    t: requests.Target,
    body: dict[str, Any],
    *,
    manager: str,
    dry: bool,
    ctx: requests.RequestContext,
) -> web.Response:
    assert t.name is not None
    old = cluster.get(t.rtype, t.ns, t.name)
    body_rv = (body.get("metadata") or {}).get("resourceVersion")
    if body_rv and body_rv != old.obj["metadata"].get("resourceVersion"):
        raise status.conflict(t.rtype, t.name, status.OPTIMISTIC_LOCK)
    replicas = (body.get("spec") or {}).get("replicas")
    new = old.copy()
    if isinstance(replicas, int):
        if t.rtype.scale_paths is not None:
            customresources.set_path(new, t.rtype.scale_paths[0], replicas)
        else:
            new.setdefault("spec", {})["replicas"] = replicas
    result = write_update(
        cluster, t.rtype, old, new, manager=manager, subresource=None, dry=dry, managed_as="scale"
    )
    ctx.mutated = result.mutated
    return requests.json_response(reads.scale_of(result.stored.obj, t.rtype))


def strict_fields(
    rtype: types.ResourceType,
    obj: dict[str, Any],
    mode: str,
    ctx: requests.RequestContext,
    *,
    raw: bytes | None = None,
    body: bool = False,
) -> None:
    if rtype.custom:
        unknown = customresources.unknown_fields(rtype, obj, prune=mode != "Strict")
    else:
        problem = validation.type_error(obj, group=rtype.group, version=rtype.version, kind=rtype.kind)
        if problem is not None:
            raise status.bad_request(problem)
        unknown = validation.unknown_fields(
            obj, group=rtype.group, version=rtype.version, kind=rtype.kind, prune=mode != "Strict"
        )
    problems = [f'unknown field "{p}"' for p in unknown]
    if raw is not None and mode != "Ignore":
        problems += [f'duplicate field "{p}"' for p in validation.duplicate_fields(raw)]
    if not problems:
        return
    if mode == "Strict":
        message = "strict decoding error: " + ", ".join(problems)
        if body and not rtype.custom:  # the typed decoder of a request body names the kind
            message = requests.undecodable(rtype, message)
        raise status.bad_request(message)
    if mode == "Warn":
        ctx.warnings.extend(problems)


def server_fields(
    cluster: store.Cluster,
    rtype: types.ResourceType,
    obj: dict[str, Any],
    old: dict[str, Any] | None,
    *,
    record: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Metadata validation, the managedFields of a non-apply write (`record`), then what the registry sets
    after field management, which no manager owns, as on a real server: a Service's cluster IPs, IP
    families and node ports and its empty `status.loadBalancer`, a new Namespace's `kubernetes` finalizer;
    and what storage does to a Role's empty `rules` (null)."""
    causes = validation.metadata_causes(obj)
    if rtype.group == "" and rtype.kind == "Secret" and not rtype.custom:
        before = validation.secret_update_causes(obj, old) if old is not None else []
        causes = before + causes + validation.secret_causes(obj)
    if causes:
        raise status.invalid(rtype.kind, obj.get("metadata", {}).get("name", ""), causes, group=rtype.group)
    if record is not None:
        obj = record(obj)
    if (
        (rtype.group, rtype.kind) == (apiservices.GROUP, apiservices.KIND)
        and old is None
        and apiservices.is_local(obj)
    ):
        # A local APIService is available from its create on (a remote one is judged by the controller).
        obj["status"] = {"conditions": [_condition_now(*apiservices.availability(obj, None, []))]}
    if rtype.group == "rbac.authorization.k8s.io" and obj.get("rules") == []:
        # `rules` has no omitempty and etcd holds protobuf, in which an empty list is no list: null.
        obj["rules"] = None
    if rtype.group == "" and not rtype.custom:
        if rtype.kind == "Service":
            allocation.allocate(cluster.allocator, obj, old)
            status_ = obj.get("status")
            if isinstance(status_, dict):
                status_.setdefault("loadBalancer", {})
        elif rtype.kind == "Namespace" and old is None:
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                spec["finalizers"] = ["kubernetes"]
    return obj


def _condition_now(cstatus: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": "Available",
        "status": cstatus,
        "lastTransitionTime": objects.now(),
        "reason": reason,
        "message": message,
    }


def prepare_new(
    cluster: store.Cluster,
    rtype: types.ResourceType,
    old: dict[str, Any] | None,
    manager: str,
    subresource: str | None,
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def record(obj: dict[str, Any]) -> dict[str, Any]:
        return preparation.record_update(rtype, old, obj, manager=manager, subresource=subresource)

    def prepare(obj: dict[str, Any]) -> dict[str, Any]:
        return server_fields(cluster, rtype, preparation.apply_defaults(rtype, obj), old, record=record)

    return prepare
