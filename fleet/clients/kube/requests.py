"""The requests fleet makes of a cluster: discovery, get, list (paged), apply, create (`create_namespace`: a
namespace of its own, labelled with its instance), delete, watch.

Owns: `Client` (one cluster; its transport underneath) and `Clients` (one client per cluster of a
kubeconfig, closed together). Each request names what it asks for and reads the answer as what it must be;
each write is told to `Client.on_write` when set (the watch cache keeps up with fleet's own writes).
Does not: retry, limit or map errors itself (`transport`, `answers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio

from fleet.clients.kube import answers, config, discovery, streams, transport
from fleet.core import model

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
NAMESPACES = discovery.ResourceType(
    "", "v1", "Namespace", "namespaces", False, ("create", "get", "list", "delete")
)

# Told of every write this client made (verb "apply", "create", "exists": a create that found the object
# there, "delete"; the object; the answer when it is the object): a cache of the cluster keeps up with them.
WriteHook = Callable[[str, model.ObjectRef, Mapping[str, Any] | None], None]


class Client(transport.Transport):
    """One cluster: a kr8s Api made once from that cluster's own kubeconfig, limits, discovery."""

    on_write: WriteHook | None = None  # see `WriteHook`; dry runs are not writes

    # -- discovery ---------------------------------------------------------------------------------

    async def types(self, *, refresh: bool = False) -> discovery.TypeTable:
        """The kinds this cluster serves, discovered once (again with `refresh`, e.g. after a CRD).

        Aggregated discovery (two requests: ``/api`` and ``/apis``) when the server offers it, else the
        legacy walk (``/api/v1``, ``/apis``, then every group version)."""
        if self._types is not None and not refresh:
            return self._types
        what = f"cluster {self.cluster}: discovery"
        found: list[discovery.ResourceType] = []
        docs: dict[str, Any] = {}

        async def fetch(path: str) -> None:
            docs[path] = (
                await self.request(
                    "GET", path, what=what, media=discovery.AGGREGATED_ACCEPT, check=answers.is_discovery_root
                )
            )[1]

        with answers.unwrap_group():
            async with anyio.create_task_group() as tg:
                tg.start_soon(fetch, "/api")
                tg.start_soon(fetch, "/apis")
        core, groups = docs["/api"], docs["/apis"]
        unavailable: dict[str, str] = {}
        if discovery.is_aggregated(core) and discovery.is_aggregated(groups):
            found.extend(discovery.types_from_aggregated(core))
            found.extend(discovery.types_from_aggregated(groups))
            unavailable.update(discovery.unavailable_from_aggregated(core))
            unavailable.update(discovery.unavailable_from_aggregated(groups))
        else:
            _, core_v1 = await self.request("GET", "/api/v1", what=what, check=answers.is_resource_list)
            found.extend(discovery.types_from_resource_list(core_v1))
            versions = []
            for group in groups.get("groups") or []:
                for v in group.get("versions") or []:
                    if isinstance(v, dict) and v.get("groupVersion"):
                        versions.append(str(v["groupVersion"]))

            async def one(gv: str) -> None:
                status, doc = await self.request(
                    "GET", f"/apis/{gv}", what=what, accept_any=(404, 503), check=answers.is_resource_list
                )
                if status == 200:
                    found.extend(discovery.types_from_resource_list(doc))
                else:  # listed in /apis, yet not described: its APIService's backend does not answer
                    unavailable[gv] = (
                        discovery.UNAVAILABLE if status == 503 else f"its discovery answers {status}"
                    )

            with answers.unwrap_group():
                async with anyio.create_task_group() as tg:
                    for gv in versions:
                        tg.start_soon(one, gv)
        self._types = discovery.TypeTable(
            types={(t.api_version, t.kind): t for t in found}, unavailable=unavailable
        )
        return self._types

    # -- verbs -------------------------------------------------------------------------------------

    async def list(
        self,
        rt: discovery.ResourceType,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every object of a kind (in a namespace or all), following pages; items get kind/apiVersion."""
        params: dict[str, str] = {"limit": str(self.settings.page_size)}
        if label_selector:
            params["labelSelector"] = label_selector
        where = f" in {namespace}" if namespace else ""
        what = f"cluster {self.cluster}: list {rt.plural}{where}"
        items, _ = await self.list_pages(rt, rt.collection_path(namespace), what=what, params=params)
        return items

    async def list_pages(
        self, rt: discovery.ResourceType, path: str, *, what: str, params: Mapping[str, str]
    ) -> tuple[answers.Items, str]:
        """(every item, the resourceVersion of the first page) of a paged list at `path`.

        Bounded: at most `max_list_pages` pages and `max_list_bytes` bytes over all of them; a continue
        token the server already gave is an error (a paging loop), as is any page that is not a list
        (`is_list`). A 410 on a continue token raises `ContinueExpired` (the caller decides when to
        start again). Items get kind/apiVersion."""
        s = self.settings
        items: answers.Items = []
        query = dict(params)
        seen: set[str] = set()
        total = 0
        rv = ""
        for page in range(1, s.max_list_pages + 1):
            try:
                _, doc, size = await self._request(
                    "GET", path, what=what, params=query, check=answers.is_list
                )
            except answers.RejectedError as e:
                if e.status == 410 and "continue" in query:
                    raise answers.ContinueExpired(str(e), status=e.status, reason=e.reason) from None
                raise
            total += size
            if total > s.max_list_bytes:
                raise answers.BadAnswer(
                    f"{what}: the list holds more than {s.max_list_bytes} bytes ({page} pages); refused"
                )
            meta = doc.get("metadata") or {}
            if page == 1:
                rv = str(meta.get("resourceVersion") or "")
            for item in doc["items"]:
                item.setdefault("apiVersion", rt.api_version)
                item.setdefault("kind", rt.kind)
                items.append(item)
            token = meta.get("continue")
            if not token:
                return items, rv
            if token in seen:
                raise answers.BadAnswer(
                    f"{what}: the server gave the same continue token again (a paging loop)"
                )
            seen.add(token)
            query = {**query, "continue": token}
        raise answers.BadAnswer(
            f"{what}: more than {s.max_list_pages} pages; refused (a server that pages forever?)"
        )

    async def get(
        self, rt: discovery.ResourceType, *, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        ref = f"{rt.kind}/{namespace}/{name}" if namespace else f"{rt.kind}/{name}"
        status, doc = await self.request(
            "GET", rt.object_path(namespace, name), what=ref, accept=(404,), check=answers.is_object
        )
        return doc if status == 200 else None

    async def apply(
        self,
        rt: discovery.ResourceType,
        obj: Mapping[str, Any],
        *,
        force: bool,
        dry_run: bool = False,
        secrets: Iterable[str] = (),
    ) -> tuple[dict[str, Any], bool]:
        """Server-side apply with field manager `fleet`; returns (object, created)."""
        ref = model.ObjectRef.of(obj)
        params = {"fieldManager": model.FIELD_MANAGER, "force": "true" if force else "false"}
        if dry_run:
            params["dryRun"] = "All"
        status, doc = await self.request(
            "PATCH",
            rt.object_path(ref.namespace or None, ref.name),
            what=str(ref),
            params=params,
            body=obj,
            content_type=APPLY_CONTENT_TYPE,
            secrets=secrets,
            check=answers.is_object,
        )
        if not dry_run:
            self._wrote("apply", ref, doc)
        return doc, status == 201

    async def create(
        self, rt: discovery.ResourceType, obj: Mapping[str, Any], *, check: answers.Check | None = None
    ) -> bool:
        """Plain create; False when the object already exists (`check`: what its answer must be)."""
        ref = model.ObjectRef.of(obj)
        status, doc = await self.request(
            "POST",
            rt.collection_path(ref.namespace or None),
            what=str(ref),
            params={"fieldManager": model.FIELD_MANAGER},
            body=obj,
            accept=(409,),
            check=check,
        )
        if status == 409:
            self._wrote("exists", ref, None)
        else:
            self._wrote("create", ref, doc if answers.is_object(doc) is None else None)
        return status != 409

    async def create_namespace(self, name: str, *, instance: str) -> bool:
        """Create namespace `name`, labelled as `instance`'s (`model.LABEL_OWNER`), when it is missing; False
        when it exists (then it is left as it is: never updated)."""
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {model.LABEL_OWNER: instance}},
        }
        return await self.create(NAMESPACES, body, check=answers.is_object)

    async def delete(
        self,
        rt: discovery.ResourceType,
        *,
        namespace: str | None,
        name: str,
        uid: str | None,
        resource_version: str | None,
    ) -> bool:
        """Delete (background propagation) the object only if it still has `uid` and `resource_version`
        (DeleteOptions preconditions; None: not checked): a 409 `ConflictError` when it changed since it
        was read, and nothing is deleted. False when it was already gone."""
        ref = f"{rt.kind}/{namespace}/{name}" if namespace else f"{rt.kind}/{name}"
        preconditions = {}
        if uid is not None:
            preconditions["uid"] = uid
        if resource_version is not None:
            preconditions["resourceVersion"] = resource_version
        status, _ = await self.request(
            "DELETE",
            rt.object_path(namespace, name),
            what=ref,
            params={"propagationPolicy": "Background"},
            body={"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}
            if preconditions
            else None,
            accept=(404,),
        )
        self._wrote("delete", model.ObjectRef(rt.group, rt.version, rt.kind, namespace or "", name), None)
        return status != 404

    def _wrote(self, verb: str, ref: model.ObjectRef, answer: Mapping[str, Any] | None) -> None:
        if self.on_write is not None:
            self.on_write(verb, ref, answer)

    def stream(
        self, path: str, *, what: str, params: Mapping[str, str], read_timeout: float
    ) -> streams.WatchStream:
        """A streaming GET (a watch), used as ``async with client.stream(...) as s``; see `WatchStream`.

        No retries here (the watch loop owns reconnects and backoff); the rate limit applies to opening
        it, the in-flight limit does not (a stream is long-lived). `read_timeout`: the longest silence
        tolerated on the connection (headers included) before it is declared dead.
        """
        return streams.WatchStream(self, path, what=what, params=params, read_timeout=read_timeout)


class Clients:
    """The clients of a run, one per cluster, made on first use and closed together."""

    def __init__(self, kubeconfig: config.Kubeconfig, *, settings: config.Settings) -> None:
        self.kubeconfig = kubeconfig
        self.settings = settings
        self._clients: dict[str, Client] = {}
        self._tls = config.TlsDefaults()

    def client(self, cluster: str, *, context: str | None = None) -> Client:
        found = self._clients.get(cluster)
        if found is None:
            ctx = self.kubeconfig.context(context or cluster)
            found = Client(cluster=cluster, context=ctx, settings=self.settings, tls=self._tls)
            self._clients[cluster] = found
        return found

    def all(self) -> tuple[Client, ...]:
        return tuple(self._clients.values())

    async def aclose(self) -> None:
        for client in list(self._clients.values()):
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
