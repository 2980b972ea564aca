"""Discovery and OpenAPI documents of a simulated cluster, generated from its type registry.

Owns: `/version`, legacy discovery (`/api`, `/apis`, `/apis/<g>`, `/api/v1`, `/apis/<g>/<v>`),
aggregated discovery (`apidiscovery.k8s.io/v2` APIGroupDiscoveryList, with an ETag), groups in the
aggregator's priority order with the group versions APIServices register (an unavailable one `Stale`),
and `/openapi/v3`
(an index plus one document per group/version whose schemas come from kubernetes-validate via
`fleet.sim.kinds.schemas`, with a PATCH operation carrying `x-kubernetes-group-version-kind` and a
`fieldValidation` parameter for each kind, which is what kubectl checks before it validates on the server),
and `/openapi/v2` without definitions (kubectl's fallback for a kind it finds nowhere else).
Documents are encoded once and cached on the registry until CRDs change it.

Does not: route requests or decide content negotiation (`fleet.sim.rest.routing` and
`fleet.sim.rest.requests` do).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import orjson

from fleet.sim.kinds import apiservices, schemas, types

KUBE_VERSION = "v1.35.2"
SERVER_ADDRESSES = [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]


def version_info(git_version: str = KUBE_VERSION) -> dict[str, str]:
    major, minor = git_version.lstrip("v").split(".")[:2]
    return {
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "minCompatibilityMajor": major,
        "minCompatibilityMinor": str(max(int(minor) - 1, 0)),
        "gitVersion": git_version,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _cached(registry: types.Registry, key: Any, build: Any) -> bytes:
    hit = registry.cache.get(key)
    if hit is None:
        hit = registry.cache[key] = orjson.dumps(build())
    assert isinstance(hit, bytes)
    return hit


def api_versions(registry: types.Registry) -> bytes:
    return _cached(
        registry,
        "api",
        lambda: {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": SERVER_ADDRESSES},
    )


def _group_doc(name: str, versions: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{name}/{versions[0]}", "version": versions[0]},
    }


def discovered_groups(registry: types.Registry) -> dict[str, list[str]]:
    """Group -> versions as discovery lists them: what the cluster serves and what APIServices register,
    groups by priority (highest first, then by name) as the aggregator orders them, a group's own
    versions first, then its APIServices' by version priority."""
    served = registry.groups()
    versions = {g: list(vs) for g, vs in served.items()}
    priority = {g: apiservices.group_priority(g) for g in served}
    for (g, v), entry in sorted(registry.aggregated.items(), key=lambda kv: -kv[1].version_priority):
        if v not in versions.setdefault(g, []):
            versions[g].append(v)
        if g not in served:
            priority[g] = max(priority.get(g, 0), entry.group_priority)
    return {g: versions[g] for g in sorted(versions, key=lambda g: (-priority[g], g))}


def group_list(registry: types.Registry) -> bytes:
    def build() -> dict[str, Any]:
        groups = [_group_doc(g, vs) for g, vs in discovered_groups(registry).items() if g]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    return _cached(registry, "apis", build)


def api_group(registry: types.Registry, group: str) -> bytes | None:
    versions = discovered_groups(registry).get(group)
    if not group or not versions:
        return None
    return _cached(
        registry,
        ("group", group),
        lambda: {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)},
    )


def _subresource_entries(rtype: types.ResourceType) -> list[dict[str, Any]]:
    out = []
    for sub in sorted(rtype.subresources):  # the real lists are sorted by name: scale before status
        entry: dict[str, Any] = {
            "name": f"{rtype.plural}/{sub}",
            "singularName": "",
            "namespaced": rtype.namespaced,
            "kind": rtype.kind,
            "verbs": list(types.SUBRESOURCE_VERBS),
        }
        if sub == "scale":
            entry["group"] = "autoscaling"
            entry["version"] = "v1"
            entry["kind"] = "Scale"
        elif sub == "finalize":
            entry["verbs"] = ["update"]
        out.append(entry)
    return out


def resource_list(registry: types.Registry, group: str, version: str) -> bytes | None:
    rtypes = registry.in_group_version(group, version)
    if not rtypes:
        return None

    def build() -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for t in sorted(rtypes, key=lambda t: t.plural):
            entry: dict[str, Any] = {
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": list(t.verbs),
            }
            if t.short_names:
                entry["shortNames"] = list(t.short_names)
            if t.categories:
                entry["categories"] = list(t.categories)
            entry["storageVersionHash"] = t.storage_version_hash()
            resources.append(entry)
            resources.extend(_subresource_entries(t))
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    return _cached(registry, ("resources", group, version), build)


def _aggregated_resource(t: types.ResourceType) -> dict[str, Any]:
    # A built-in kind of the group itself is named without group and version (as the real server's
    # aggregated discovery does); a custom resource with them.
    own = (
        {"group": t.group, "version": t.version, "kind": t.kind}
        if t.custom
        else {"group": "", "version": "", "kind": t.kind}
    )
    entry: dict[str, Any] = {
        "resource": t.plural,
        "responseKind": own,
        "scope": "Namespaced" if t.namespaced else "Cluster",
        "singularResource": t.singular,
        "verbs": list(t.verbs),
    }
    if t.short_names:
        entry["shortNames"] = list(t.short_names)
    if t.categories:
        entry["categories"] = list(t.categories)
    subs = []
    for sub in sorted(t.subresources):
        kind = dict(own)
        verbs = list(types.SUBRESOURCE_VERBS)
        if sub == "scale":
            kind = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
        elif sub == "finalize":
            verbs = ["update"]
        subs.append({"subresource": sub, "responseKind": kind, "verbs": verbs})
    if subs:
        entry["subresources"] = subs
    return entry


def aggregated(registry: types.Registry, *, legacy: bool) -> tuple[bytes, str]:
    """The APIGroupDiscoveryList for `/api` (legacy, core group only) or `/apis`, and its ETag."""

    def build() -> dict[str, Any]:
        items = []
        for group, versions in discovered_groups(registry).items():
            if (group == "") != legacy:
                continue
            vdocs: list[dict[str, Any]] = []
            for v in versions:
                if registry.unavailable(group, v):  # its APIService's backend does not answer
                    vdocs.append({"version": v, "freshness": "Stale"})
                    continue
                rtypes = sorted(registry.in_group_version(group, v), key=lambda t: t.plural)
                vdocs.append(
                    {
                        "version": v,
                        "resources": [_aggregated_resource(t) for t in rtypes],
                        "freshness": "Current",
                    }
                )
            items.append({"metadata": {"name": group} if group else {}, "versions": vdocs})
        return {
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        }

    body = _cached(registry, ("aggregated", legacy), build)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32].upper() + '"'
    return body, etag


# ----- OpenAPI v3 -------------------------------------------------------------------------------

_REF = "#/$defs/"
_COMPONENT_REF = "#/components/schemas/"


def _convert(node: Any) -> Any:
    """kubernetes-validate's JSON Schema -> OpenAPI v3 component form (refs, nullable types)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith(_REF):
                out[k] = _COMPONENT_REF + v[len(_REF) :]
            elif k == "type" and isinstance(v, list):
                non_null = [t for t in v if t != "null"]
                out[k] = non_null[0] if non_null else "object"
            else:
                out[k] = _convert(v)
        return out
    if isinstance(node, list):
        return [_convert(x) for x in node]
    return node


@functools.cache
def _components(version: str) -> dict[str, Any]:
    defs = schemas.load(version).definitions
    converted: dict[str, Any] = {name: _convert(schema) for name, schema in defs.items()}
    return converted


def _closure(components: dict[str, Any], roots: list[str]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in components:
            continue
        seen[name] = components[name]

        def refs(node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == "$ref" and isinstance(v, str) and v.startswith(_COMPONENT_REF):
                        stack.append(v[len(_COMPONENT_REF) :])
                    else:
                        refs(v)
            elif isinstance(node, list):
                for x in node:
                    refs(x)

        refs(components[name])
    return dict(sorted(seen.items()))


_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")


def _operation(t: types.ResourceType, verb: str, schema_ref: dict[str, Any], *, body: bool) -> dict[str, Any]:
    params = [
        {
            "name": p,
            "in": "query",
            "schema": {"type": "boolean" if p == "force" else "string", "uniqueItems": True},
        }
        for p in _QUERY_PARAMS
        if verb in ("post", "put", "patch") or p == "pretty"
    ]
    op: dict[str, Any] = {
        "operationId": f"{verb}{t.kind}",
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}},
        "x-kubernetes-action": {
            "get": "get",
            "put": "put",
            "patch": "patch",
            "post": "post",
            "delete": "delete",
        }[verb],
        "x-kubernetes-group-version-kind": {"group": t.group, "version": t.version, "kind": t.kind},
    }
    if body:
        types_ = (
            ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
            + ([] if t.custom else ["application/strategic-merge-patch+json"])
            if verb == "patch"
            else ["application/json"]
        )
        op["requestBody"] = {"content": {ct: {"schema": schema_ref} for ct in types_}, "required": True}
    return op


def _gv_document(registry: types.Registry, group: str, version: str, kube_minor: str) -> dict[str, Any]:
    components = _components(kube_minor)
    loaded = schemas.load(kube_minor)
    paths: dict[str, Any] = {}
    roots: list[str] = []
    extra: dict[str, Any] = {}
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    for t in sorted(registry.in_group_version(group, version), key=lambda t: t.plural):
        name = None if t.custom else loaded.name_for(t.group, t.version, t.kind)
        if name is None:
            name = ".".join(reversed((t.group or "core").split("."))) + f".{t.version}.{t.kind}"
            schema = _convert(
                dict(t.schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
            )
            schema["x-kubernetes-group-version-kind"] = [
                {"group": t.group, "version": t.version, "kind": t.kind}
            ]
            extra[name] = schema
            roots.append("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        else:
            roots.append(name)
        ref = {"$ref": _COMPONENT_REF + name}
        coll = f"{base}/namespaces/{{namespace}}/{t.plural}" if t.namespaced else f"{base}/{t.plural}"
        paths[coll] = {
            "get": _operation(t, "get", ref, body=False),
            "post": _operation(t, "post", ref, body=True),
        }
        paths[coll + "/{name}"] = {
            "get": _operation(t, "get", ref, body=False),
            "put": _operation(t, "put", ref, body=True),
            "patch": _operation(t, "patch", ref, body=True),
            "delete": _operation(t, "delete", ref, body=False),
        }
        for sub in t.subresources:
            if sub in ("status", "scale"):
                paths[f"{coll}/{{name}}/{sub}"] = {
                    "get": _operation(t, "get", ref, body=False),
                    "put": _operation(t, "put", ref, body=True),
                    "patch": _operation(t, "patch", ref, body=True),
                }
    schemas_out = _closure(components, roots)
    schemas_out.update(extra)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION},
        "paths": paths,
        "components": {"schemas": schemas_out},
    }


def openapi_document(
    registry: types.Registry, gv_path: str, *, kube_minor: str = schemas.DEFAULT_VERSION
) -> bytes | None:
    """The document for `api/v1` or `apis/<g>/<v>`, or None when that group/version is not served."""
    parts = gv_path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[:1] == ["apis"] and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        return None
    if not registry.in_group_version(group, version):
        return None
    # Built-in documents are identical in every cluster: share them across registries.
    if not any(t.custom for t in registry.in_group_version(group, version)):
        return _builtin_document(
            tuple(sorted((t.group, t.version, t.plural) for t in registry.in_group_version(group, version))),
            group,
            version,
            kube_minor,
        )
    return _cached(
        registry, ("openapi", group, version), lambda: _gv_document(registry, group, version, kube_minor)
    )


@functools.cache
def _builtin_document(
    _key: tuple[tuple[str, str, str], ...], group: str, version: str, kube_minor: str
) -> bytes:
    return orjson.dumps(_gv_document(types.Registry(), group, version, kube_minor))


def openapi_index(registry: types.Registry, *, kube_minor: str = schemas.DEFAULT_VERSION) -> bytes:
    def build() -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for group, versions in registry.groups().items():
            for v in versions:
                gv_path = f"apis/{group}/{v}" if group else f"api/{v}"
                doc = openapi_document(registry, gv_path, kube_minor=kube_minor) or b""
                digest = hashlib.sha512(doc).hexdigest().upper()[:128]
                paths[gv_path] = {"serverRelativeURL": f"/openapi/v3/{gv_path}?hash={digest}"}
        return {"paths": dict(sorted(paths.items()))}

    return _cached(registry, "openapi-index", build)


# ----- OpenAPI v2 -------------------------------------------------------------------------------

OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def openapi_v2(accept: str) -> tuple[bytes, str]:
    """`/openapi/v2` without definitions: the body and its Content-Type.

    kubectl validates an object whose kind is neither in `/openapi/v3` nor defined by a CRD (a custom
    resource applied in the same file as its CRD) against the OpenAPI v2 document, which it asks for
    as protobuf. A document with no definitions makes it skip that validation, as a real server's does
    for an unknown kind, so the object then fails where it does on a real cluster: "no matches for
    kind ... ensure CRDs are installed first". An empty protobuf message is a valid, empty
    `openapi_v2.Document`; JSON clients get the equivalent JSON.
    """
    if OPENAPI_V2_PROTOBUF in accept and "application/json" not in accept.split(OPENAPI_V2_PROTOBUF)[0]:
        return b"", "application/octet-stream"  # what the real server labels it (Go cannot parse "@")
    doc = {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION},
        "paths": {},
        "definitions": {},
    }
    return orjson.dumps(doc), "application/json"
