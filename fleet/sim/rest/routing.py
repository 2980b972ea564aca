"""The Kubernetes REST surface of one simulated cluster: from a path to a verb.

Owns: `Api`, one cluster's request handler: `handle` maps a path below the cluster prefix to an answer
(`/version`, health, `/openapi/v2` and `/openapi/v3`, legacy and aggregated discovery, resource URLs
`/api/v1/namespaces/x/configmaps/y`, `/apis/<group>/<version>/...`, the legacy `/watch/` prefix,
subresources), negotiates Tables, dispatches the method to a verb, and renders every failure as a real
Status body (`status.ApiError`; a bug answers 500, never a dropped connection), except where the real
server's own answers are plain text: `404 page not found` for a path no group serves and `503 service
unavailable` for a group version whose APIService is unavailable.

Does not: listen on sockets, inject faults or journal requests (`fleet.sim.server`); run the verbs
(`fleet.sim.rest.reads`, `writes`, `patches`); build discovery documents (`fleet.sim.rest.discovery`).
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web

from fleet.sim import status
from fleet.sim.kinds import types
from fleet.sim.rest import discovery, patches, reads, requests, tables, views, writes
from fleet.sim.storage import store

log = logging.getLogger(__name__)


def parse_target(registry: types.Registry, segments: list[str], group: str, version: str) -> requests.Target:
    watch_path = False
    if segments and segments[0] == "watch":
        watch_path = True
        segments = segments[1:]
    namespace: str | None = None
    if (
        len(segments) >= 3
        and segments[0] == "namespaces"
        and not (len(segments) == 3 and segments[2] in ("status", "finalize") and group == "")
    ):
        namespace = segments[1]
        segments = segments[2:]
    if not segments or len(segments) > 3:
        raise status.resource_not_found()
    rtype = registry.get(group, version, segments[0])
    if rtype is None:
        raise status.resource_not_found()
    name = segments[1] if len(segments) > 1 else None
    sub = segments[2] if len(segments) > 2 else None
    if namespace is not None and not rtype.namespaced:
        raise status.resource_not_found()
    if rtype.namespaced and namespace is None and name is not None:
        raise status.resource_not_found()
    if sub is not None and sub not in rtype.subresources:
        raise status.resource_not_found()
    if name == "" or namespace == "":
        raise status.resource_not_found()
    return requests.Target(rtype, namespace, name, sub, watch_path)


def _listed(registry: types.Registry) -> set[str]:
    return {g for g, _ in registry.aggregated}


def service_unavailable() -> web.Response:
    """The aggregator's answer for a group version whose APIService is not available: plain text."""
    return web.Response(status=503, text="service unavailable\n", content_type="text/plain", charset="utf-8")


def page_not_found() -> web.Response:
    """What the real server's path multiplexer answers for a path no API group serves: plain text."""
    return web.Response(status=404, text="404 page not found\n", content_type="text/plain", charset="utf-8")


class Api:
    """One cluster's request handler."""

    def __init__(self, cluster: store.Cluster, *, git_version: str = discovery.KUBE_VERSION) -> None:
        self.cluster = cluster
        self.git_version = git_version
        self._version = orjson.dumps(discovery.version_info(git_version))

    async def handle(
        self, request: web.BaseRequest, path: str, ctx: requests.RequestContext
    ) -> web.StreamResponse:
        try:
            return await self._route(request, path, ctx)
        except status.ApiError as err:
            return requests.error_response(err)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as e:  # a bug must still answer a Status, never kill the connection silently
            log.exception("fleet sim: unexpected error for %s %s", request.method, path)
            return requests.error_response(status.internal_error(f"{type(e).__name__}: {e}"))

    async def _route(
        self, request: web.BaseRequest, path: str, ctx: requests.RequestContext
    ) -> web.StreamResponse:
        segments = [s for s in path.split("/") if s]
        registry = self.cluster.registry
        if not segments:
            return requests.json_response(
                {"paths": ["/api", "/api/v1", "/apis", "/openapi/v3", "/version", "/healthz"]}
            )
        head = segments[0]
        if head == "apis" and len(segments) >= 2:
            if len(segments) >= 3 and registry.unavailable(segments[1], segments[2]):
                return service_unavailable()  # an APIService whose backend does not answer
            if segments[1] not in registry.groups() and (
                len(segments) > 2 or segments[1] not in _listed(registry)
            ):
                return page_not_found()  # a group nobody serves: the mux's own 404, not a Status
        if head == "version" and len(segments) == 1:
            return requests.json_response(self._version)
        if head in ("healthz", "livez", "readyz"):
            return web.Response(text="ok", content_type="text/plain")
        if head == "openapi":
            if segments[1:2] == ["v3"]:
                if len(segments) == 2:
                    return requests.json_response(discovery.openapi_index(registry))
                doc = discovery.openapi_document(registry, "/".join(segments[2:]))
                if doc is not None:
                    return requests.json_response(doc, headers={"Cache-Control": "public, immutable"})
                return web.Response(status=404)  # an unknown group version: no body at all
            if segments[1:] == ["v2"]:
                # kubectl's fallback for a kind in neither OpenAPI v3 nor a CRD (fleet.sim.rest.discovery).
                body, content_type = discovery.openapi_v2(request.headers.get("Accept", ""))
                return web.Response(body=body, headers={"Content-Type": content_type})
            return page_not_found()
        if head == "api":
            if len(segments) == 1:
                return self._discovery_root(request, legacy=True)
            group, version, rest = "", segments[1], segments[2:]
        elif head == "apis":
            if len(segments) == 1:
                # `/apis/`, with the slash, is the legacy APIGroupList whatever Accept asks (`/api/` is not).
                return self._discovery_root(request, legacy=False, aggregated=not path.endswith("/"))
            group = segments[1]
            if len(segments) == 2:
                requests.negotiate(request.headers.get("Accept", ""))
                doc = discovery.api_group(registry, group)
                if doc is None:
                    raise status.resource_not_found()
                return requests.json_response(doc)
            version, rest = segments[2], segments[3:]
        else:
            return page_not_found()
        if not rest:
            requests.negotiate(request.headers.get("Accept", ""))
            doc = discovery.resource_list(registry, group, version)
            if doc is None:
                raise status.resource_not_found()
            return requests.json_response(doc)
        target = parse_target(registry, rest, group, version)
        printable = target.subresource is None and tables.has_printer(target.rtype)
        answer = requests.negotiate(request.headers.get("Accept", ""), table=printable)
        ctx.table = answer.startswith("table")
        ctx.table_version = "v1beta1" if answer == "table-v1beta1" else "v1"
        return await self._resource(request, target, ctx)

    def _discovery_root(
        self, request: web.BaseRequest, *, legacy: bool, aggregated: bool = True
    ) -> web.Response:
        registry = self.cluster.registry
        answer = requests.negotiate(request.headers.get("Accept", ""), discovery_doc=aggregated)
        if answer == "aggregated":
            body, etag = discovery.aggregated(registry, legacy=legacy)
            headers = {"ETag": etag, "Vary": "Accept"}
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers=headers)
            resp = web.Response(body=body, headers=headers)
            resp.headers["Content-Type"] = requests.AGGREGATED_CT
            return resp
        return requests.json_response(
            discovery.api_versions(registry) if legacy else discovery.group_list(registry)
        )

    # ----- verbs ----------------------------------------------------------------------------------

    async def _resource(
        self, request: web.BaseRequest, t: requests.Target, ctx: requests.RequestContext
    ) -> web.StreamResponse:
        method = request.method
        q = request.query
        if t.rtype.stored_as is not None:
            return await views.serve(self.cluster, request, t, ctx)
        if t.rtype.virtual:
            if method != "POST" or t.name is not None:
                raise status.method_not_allowed()
            return await writes.review(request, t)
        if method == "GET":
            # `?watch=true` on one object's URL is a plain GET; only `/watch/` paths watch one object.
            if t.subresource is None and (t.watch_path or (t.name is None and requests.flag(q, "watch"))):
                return await reads.watch(self.cluster, request, t, ctx)
            if t.name is None:
                return await reads.list_(self.cluster, request, t, ctx)
            return await reads.get(self.cluster, request, t, ctx)
        if method == "POST":
            if t.name is not None:
                raise status.method_not_allowed()
            return await writes.create(self.cluster, request, t, ctx)
        if method == "PUT" and t.name is not None:
            return await writes.update(self.cluster, request, t, ctx)
        if method == "PATCH" and t.name is not None:
            return await patches.patch(self.cluster, request, t, ctx)
        if method == "DELETE":
            if t.name is None:
                if "deletecollection" not in t.rtype.verbs:
                    raise status.method_not_allowed()
                return await writes.delete_collection(self.cluster, request, t, ctx)
            return await writes.delete(self.cluster, request, t, ctx)
        raise status.method_not_allowed()
