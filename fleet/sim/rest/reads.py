"""The read verbs of the REST surface: get, list and watch, with the real server's resourceVersion rules.

Owns: `get` (an object, its `scale` subresource, or a Table row), `list_` (paginated, at a
resourceVersion, selectors; built-in items encoded without kind/apiVersion, or a Table), `watch` (the
stream: initial events or a resume point, `sendInitialEvents` with its end bookmark, periodic and final
bookmarks, `timeoutSeconds` or the server's randomised request timeout, Table watches) and `scale_of`
(the `autoscaling/v1` Scale of a built-in workload or of a custom resource).

Does not: parse query options (`fleet.sim.rest.requests`), keep watch state or history
(`fleet.sim.storage.store`), or print Tables (`fleet.sim.rest.tables`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from fleet.sim import status
from fleet.sim.kinds import customresources, types
from fleet.sim.rest import requests, tables
from fleet.sim.storage import objects, selectors, store, watches


async def get(
    cluster: store.Cluster, request: web.BaseRequest, t: requests.Target, ctx: requests.RequestContext
) -> web.Response:
    q = request.query  # a GET of one object ignores label and field selectors, as the real one does
    rv = q.get("resourceVersion")
    if rv not in (None, "", "0"):
        try:
            target_rv = int(rv)
        except ValueError:
            raise status.internal(
                f'resourceVersion: Invalid value: "{rv}": strconv.ParseUint: parsing "{rv}": invalid syntax'
            ) from None
        if target_rv > cluster.rv and not await cluster.wait_for_rv(target_rv):
            raise cluster.too_large(target_rv)
    assert t.name is not None
    if t.rtype.namespaced and cluster.namespace_phase(t.namespace or "") is None:
        raise status.not_found(t.rtype, t.name)
    stored = cluster.get(t.rtype, t.ns, t.name)
    if t.subresource == "scale":
        return requests.json_response(scale_of(stored.obj, t.rtype))
    if ctx.table:
        meta = {"resourceVersion": stored.obj["metadata"].get("resourceVersion", "")}
        return requests.json_response(
            tables.table(
                t.rtype,
                [stored],
                metadata=meta,
                include=requests.include_object(request.query),
                version=ctx.table_version,
            )
        )
    return requests.json_response(stored.full())


async def list_(
    cluster: store.Cluster, request: web.BaseRequest, t: requests.Target, ctx: requests.RequestContext
) -> web.Response:
    opts = requests.list_options(request, t, watch=False)
    at = opts["at"]
    exact = opts["match"] == "Exact" or (not opts["match"] and at is not None and opts["limit"] > 0)
    if at is not None and at > cluster.rv and not await cluster.wait_for_rv(at):
        raise cluster.too_large(at)
    namespace = t.namespace if t.rtype.namespaced else None
    result = cluster.list(
        t.rtype,
        namespace,
        labels=opts["labels"],
        fields=opts["fields"],
        limit=opts["limit"],
        continue_token=opts["cont"],
        at=at,
        exact=exact,
    )
    meta: dict[str, Any] = {"resourceVersion": str(result.rv)}
    if result.continue_token:
        meta["continue"] = result.continue_token
    if result.remaining is not None:
        meta["remainingItemCount"] = result.remaining
    if ctx.table:
        return requests.json_response(
            tables.table(
                t.rtype,
                result.items,
                metadata=meta,
                include=requests.include_object(request.query),
                version=ctx.table_version,
            )
        )
    head = orjson.dumps({"kind": t.rtype.list_kind, "apiVersion": t.rtype.api_version, "metadata": meta})
    encode = objects.Stored.full if t.rtype.custom else objects.Stored.item
    body = head[:-1] + b',"items":[' + b",".join(encode(s) for s in result.items) + b"]}"
    return requests.json_response(body)


async def watch(
    cluster: store.Cluster, request: web.BaseRequest, t: requests.Target, ctx: requests.RequestContext
) -> web.StreamResponse:
    q = request.query
    opts = requests.list_options(request, t, watch=True)
    ctx.watch = True
    bookmarks = requests.flag(q, "allowWatchBookmarks")
    send_initial = opts["send_initial"]
    rv = opts["rv"]
    since: int | None = None
    initial_end = False
    if send_initial is not None:
        if send_initial.lower() == "true":
            initial_end = bookmarks
            if opts["at"] is not None and opts["at"] > cluster.rv:
                await cluster.wait_for_rv(opts["at"])
        else:
            since = opts["at"] if opts["at"] is not None else cluster.rv
    elif rv in (None, "", "0"):
        initial_end = bookmarks  # WatchList defaulting of legacy watches with bookmarks (1.34+)
    else:
        since = opts["at"]
        assert since is not None
        if since > cluster.rv:
            await cluster.wait_for_rv(since)
    timeout_s = requests.integer(q, "timeoutSeconds")
    if timeout_s <= 0:
        base = cluster.settings.min_request_timeout
        timeout_s = int(base + random.random() * base)
    namespace = t.namespace if t.rtype.namespaced else None
    if t.name is not None:
        # /watch/namespaces/x/configmaps/y: a watch on one object.
        name_sel = selectors.FieldSelector(
            (
                *opts["fields"].terms,
                selectors.FieldTerm("metadata.name", ("metadata", "name"), t.name, False),
            )
        )
        opts["fields"] = name_sel
    watcher = cluster.watch(
        t.rtype,
        namespace,
        labels=opts["labels"],
        fields=opts["fields"],
        since=since,
        initial_events_end=initial_end,
        encode=(
            tables.watch_encoder(t.rtype, include=requests.include_object(q), version=ctx.table_version)
            if ctx.table
            else _converted(ctx.convert)
            if ctx.convert is not None
            else None
        ),
    )
    watcher.path = ctx.path or request.path
    ctx.watchers.append(watcher)
    resp = web.StreamResponse(
        status=200, headers={"Content-Type": requests.JSON, "Cache-Control": "no-cache, private"}
    )
    resp.enable_chunked_encoding()
    try:
        await resp.prepare(request)
        if ctx.drop_watch:
            return resp
        await _pump(cluster, resp, watcher, t.rtype, timeout_s=timeout_s, bookmarks=bookmarks)
    except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
        cluster.unwatch(watcher)
        raise
    finally:
        cluster.unwatch(watcher)
    return resp


def _converted(convert: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[str, objects.Stored], bytes]:
    """Watch events with each object in a view resource's form (`fleet.sim.rest.views`)."""

    def encode(etype: str, stored: objects.Stored) -> bytes:
        return orjson.dumps({"type": etype, "object": convert(stored.obj)}) + b"\n"

    return encode


async def _pump(
    cluster: store.Cluster,
    resp: web.StreamResponse,
    w: watches.Watcher,
    rtype: types.ResourceType,
    *,
    timeout_s: float,
    bookmarks: bool,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    interval = cluster.settings.bookmark_interval
    next_bookmark = loop.time() + interval if bookmarks else float("inf")
    final_bookmark_sent = False
    # One timer for the next bookmark or the end of the stream, re-armed only when that moment changes
    # or the timer rang: not one per event delivered (a stream wakes for every event of its watch).
    timer: asyncio.TimerHandle | None = None
    timer_at = 0.0
    rang = False

    def ring() -> None:
        nonlocal rang
        rang = True
        w.wake.set()

    try:
        while True:
            if w.queue:
                data = b"".join(w.queue)
                w.queue.clear()
                w.wake.clear()
                await resp.write(data)
                if w.close_after_drain:
                    return
                continue
            if w.closed:
                return
            now_ = loop.time()
            if now_ >= deadline:
                return
            if bookmarks and not final_bookmark_sent and deadline - now_ <= 2.0 and timeout_s > 2.0:
                final_bookmark_sent = True
                await resp.write(watches.bookmark(rtype, cluster.rv))
                continue
            if now_ >= next_bookmark:
                next_bookmark = now_ + interval
                await resp.write(watches.bookmark(rtype, cluster.rv))
                continue
            wake_at = min(deadline, next_bookmark)
            if bookmarks and not final_bookmark_sent and timeout_s > 2.0:
                wake_at = min(wake_at, deadline - 2.0)
            if timer is None or rang or timer_at != wake_at:
                if timer is not None:
                    timer.cancel()
                rang = False
                timer, timer_at = loop.call_at(wake_at, ring), wake_at
            w.wake.clear()
            await w.wake.wait()
    finally:
        if timer is not None:
            timer.cancel()


def scale_of(obj: dict[str, Any], rtype: types.ResourceType | None = None) -> dict[str, Any]:
    if rtype is not None and rtype.scale_paths is not None:
        return customresources.scale_of(obj, rtype.scale_paths)
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    st = obj.get("status") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": {
            "replicas": st.get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        },
    }
