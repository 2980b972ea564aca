"""Render: one bundle for one cluster -> the exact objects to apply (`model.DesiredSet`), hashed.

Owns: `render` (bundle x cluster), `render_all` (every placed pair, sharing identical renders and
detecting objects claimed by two bundles on one cluster), `check` (render-level problems for
`fleet validate`), `RenderCache`, and the table of built-in cluster-scoped kinds.
Does not: decide placement (`fleet.core.placement`), read files (`fleet.core.repository`), run Kustomize, Helm or
SOPS (`fleet.clients.sources` does, before this layer: a bundle with ``spec.source`` or ``spec.decrypt`` takes each
cluster's manifests from its `model.Expansion`, and Helm's output is not substituted again), or talk to
clusters.

Steps, in order, for each manifest (docs/placement.md and docs/reconcile.md):

1. ``${cluster.name}``, ``${cluster.labels.KEY}``, ``${cluster.annotations.KEY}``, ``${cluster.facts.KEY}``
   are substituted in string values (after YAML parsing; KEY runs to the closing brace). ``$${cluster.``
   escapes to a literal ``${cluster.``; any other ``${...}`` passes through; an object annotated
   ``fleet.dev/substitute: disabled`` is left alone; an unknown variable (or a key the cluster lacks) is
   a `RenderError`. The result is always text (facts are written as JSON scalars: ``40``, ``true``).
2. Namespaced objects without a namespace get the bundle's ``spec.namespace`` (``default`` when the bundle
   has none); cluster-scoped ones (built-in table below, plus CRDs with ``spec.scope: Cluster`` anywhere in
   the repository) lose any namespace.
3. Overrides, in order, for the clusters their placement selects: each patch (substituted too) is an
   RFC 7386 merge patch or an RFC 6902 JSON patch on the objects its target (kind, name, apiVersion,
   namespace; an absent field matches anything) selects. A target that matches no object is an error.
4. Ownership marks: labels ``fleet.dev/bundle`` and ``fleet.dev/owner``, annotation ``fleet.dev/revision``
   (only when rendering a commit).
5. Order: CRDs, then Namespaces, then everything else by (group, kind, namespace, name).

The hash is sha256 of the canonical JSON of the objects *without* the revision annotation, so a commit
that does not change what a cluster gets does not change its hash.

Revision annotation. `render` annotates with the revision it is given. `render_all` with a `RenderCache`
keeps, for a pair whose hash did not change since the previous call, the objects of that call: their
annotation stays the commit at which the pair's content last changed (docs/reconcile.md), and an unchanged
pair costs nothing to re-annotate.

Sharing. A bundle whose manifests use no ``${cluster.`` variable and that has no override renders once
for all clusters; otherwise renders are shared between clusters that agree on the variables used and on
which overrides apply. `RenderCache` keeps renders across calls, keyed by the bundle's content.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import json_merge_patch
import jsonpatch

from fleet.core import errors, model, placement

# (group, kind) of the built-in cluster-scoped kinds of Kubernetes 1.35 (core group is "").
CLUSTER_SCOPED: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "Namespace"),
        ("", "Node"),
        ("", "PersistentVolume"),
        ("", "ComponentStatus"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("apiregistration.k8s.io", "APIService"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "CSIDriver"),
        ("storage.k8s.io", "CSINode"),
        ("storage.k8s.io", "VolumeAttachment"),
        ("storage.k8s.io", "VolumeAttributesClass"),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("node.k8s.io", "RuntimeClass"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("certificates.k8s.io", "ClusterTrustBundle"),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "IPAddress"),
        ("networking.k8s.io", "ServiceCIDR"),
        ("resource.k8s.io", "DeviceClass"),
        ("resource.k8s.io", "ResourceSlice"),
        ("authentication.k8s.io", "TokenReview"),
        ("authentication.k8s.io", "SelfSubjectReview"),
        ("authorization.k8s.io", "SubjectAccessReview"),
        ("authorization.k8s.io", "SelfSubjectAccessReview"),
        ("authorization.k8s.io", "SelfSubjectRulesReview"),
        ("storagemigration.k8s.io", "StorageVersionMigration"),
        ("internal.apiserver.k8s.io", "StorageVersion"),
        ("policy", "PodSecurityPolicy"),
    }
)

DEFAULT_NAMESPACE = "default"
_VAR_RE = re.compile(r"\$(\$?)\{cluster\.([^}]*)\}")
_UNTERMINATED_RE = re.compile(r"(?<!\$)\$\{cluster\.[^}]*$")
_VAR_FORM = re.compile(r"^(name|(labels|annotations|facts)\..+)$")


class VariableError(errors.RenderError):
    """A ``${cluster.NAME}`` that cannot be substituted; `name` is NAME, `cluster` the cluster the
    message names (a value missing there), if any."""

    def __init__(self, message: str, *, name: str, cluster: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.cluster = cluster


class ObjectRenderError(errors.RenderError):
    """A render error with the file and line it comes from (a manifest or the bundle.yaml field).

    `cluster`: the cluster the message names as lacking a value, if any (a shared render reused for
    another cluster renames it, see `_for_cluster`)."""

    def __init__(self, message: str, *, path: str = "", line: int = 1, cluster: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.cluster = cluster


# ----------------------------------------------------------------------------------------------------------
# Helpers.


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def describe(obj: Mapping[str, Any]) -> str:
    """`Kind/namespace/name` or `Kind/name` of an object (for messages)."""
    return str(model.ObjectRef.of(obj))


def identity(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(group, kind, namespace, name): what makes two objects the same object on a cluster."""
    meta = obj.get("metadata") or {}
    return (
        _group(str(obj.get("apiVersion", ""))),
        str(obj.get("kind", "")),
        str(meta.get("namespace") or ""),
        str(meta.get("name", "")),
    )


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hash_objects(objects: Iterable[Mapping[str, Any]]) -> str:
    """sha256 of the canonical JSON of `objects`, without their `fleet.dev/revision` annotation."""
    stripped = []
    for obj in objects:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if model.ANNOTATION_REVISION in annotations:
            obj = copy.deepcopy(dict(obj))
            ann = obj["metadata"]["annotations"]
            del ann[model.ANNOTATION_REVISION]
            if not ann:
                del obj["metadata"]["annotations"]
        stripped.append(obj)
    return hashlib.sha256(canonical_json(stripped).encode()).hexdigest()


def cluster_scoped_kinds(
    bundles: Iterable[model.Bundle], expansions: Iterable[model.Expansion] = ()
) -> frozenset[tuple[str, str]]:
    """The built-in table plus the (group, kind) of every CRD in `bundles` (and in what their sources
    rendered, `expansions`) with ``spec.scope: Cluster``."""
    extra: set[tuple[str, str]] = set()
    seen: set[str] = set()
    for expansion in expansions:
        for r in expansion.renders.values():
            if r.key not in seen:
                seen.add(r.key)
                extra |= r.cluster_scoped
    for bundle in bundles:
        for m in bundle.manifests:
            if m.kind == "CustomResourceDefinition" and _group(m.api_version) == "apiextensions.k8s.io":
                spec = m.obj.get("spec") or {}
                names = spec.get("names") or {}
                if (
                    isinstance(spec, Mapping)
                    and spec.get("scope") == "Cluster"
                    and isinstance(names, Mapping)
                ):
                    extra.add((str(spec.get("group", "")), str(names.get("kind", ""))))
    return CLUSTER_SCOPED | extra


def _fact_text(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


def variable(name: str, cluster: model.Cluster) -> str | None:
    """The text of ``${cluster.<name>}`` for `cluster`, or None when it is unknown there."""
    if name == "name":
        return cluster.name
    field_name, _, key = name.partition(".")
    if not key:
        return None
    if field_name == "labels":
        return cluster.labels.get(key)
    if field_name == "annotations":
        return cluster.annotations.get(key)
    if field_name == "facts":
        return _fact_text(cluster.facts[key]) if key in cluster.facts else None
    return None


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def variables_used(value: Any) -> set[str]:
    """The ``${cluster.X}`` names used (escaped ones excluded)."""
    out: set[str] = set()
    for s in _strings(value):
        if "${cluster." in s:
            out.update(m.group(2) for m in _VAR_RE.finditer(s) if not m.group(1))
    return out


def _substitution_disabled(obj: Mapping[str, Any]) -> bool:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return isinstance(annotations, Mapping) and annotations.get(model.ANNOTATION_SUBSTITUTE) == "disabled"


def substitute(value: Any, cluster: model.Cluster, *, where: str) -> Any:
    """A copy of `value` with ``${cluster.*}`` substituted in its strings; raises `errors.RenderError`."""
    if isinstance(value, str):
        if "${cluster." not in value:
            return value

        def repl(m: re.Match[str]) -> str:
            if m.group(1):
                return "${cluster." + m.group(2) + "}"
            name = m.group(2)
            text = variable(name, cluster) if _VAR_FORM.match(name) else None
            if text is None:
                if not _VAR_FORM.match(name):
                    raise VariableError(
                        f"{where}: unknown variable ${{cluster.{name}}} "
                        "(use cluster.name, cluster.labels.KEY, cluster.annotations.KEY or cluster.facts.KEY)",
                        name=name,
                    )
                raise VariableError(
                    f"{where}: variable ${{cluster.{name}}} is not set on cluster {cluster.name}",
                    name=name,
                    cluster=cluster.name,
                )
            return text

        if _UNTERMINATED_RE.search(value):
            raise errors.RenderError(f"{where}: unterminated ${{cluster.  (missing '}}')")
        return _VAR_RE.sub(repl, value)
    if isinstance(value, Mapping):
        return {k: substitute(v, cluster, where=where) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(v, cluster, where=where) for v in value]
    return value


def _target_matches(target: model.PatchTarget, obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    return (
        (target.kind is None or target.kind == obj.get("kind"))
        and (target.name is None or target.name == meta.get("name"))
        and (target.api_version is None or target.api_version == obj.get("apiVersion"))
        and (target.namespace is None or target.namespace == (meta.get("namespace") or ""))
    )


def _describe_target(target: model.PatchTarget) -> str:
    parts = [
        f"{k}={v}"
        for k, v in (
            ("apiVersion", target.api_version),
            ("kind", target.kind),
            ("namespace", target.namespace),
            ("name", target.name),
        )
        if v is not None
    ]
    return "{" + ", ".join(parts) + "}" if parts else "{} (any object)"


def _default_namespace(
    obj: dict[str, Any], *, namespace: str, scoped: Collection[tuple[str, str]]
) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    cluster_scoped = (_group(str(obj.get("apiVersion", ""))), str(obj.get("kind", ""))) in scoped
    if cluster_scoped:
        meta.pop("namespace", None)
    elif not meta.get("namespace"):
        meta["namespace"] = namespace
    return obj


def _rank(obj: Mapping[str, Any]) -> int:
    kind = obj.get("kind")
    group = _group(str(obj.get("apiVersion", "")))
    if kind == "CustomResourceDefinition" and group == "apiextensions.k8s.io":
        return 0
    if kind == "Namespace" and group == "":
        return 1
    return 2


def _sort_key(obj: Mapping[str, Any]) -> tuple[int, str, str, str, str]:
    g, k, ns, n = identity(obj)
    return (_rank(obj), g, k, ns, n)


def _check_object(m: model.Manifest) -> None:
    obj = m.obj
    where = f"{m.path}:{m.line}"
    if not isinstance(obj, Mapping):
        raise ObjectRenderError(f"{where}: document {m.index} is not a mapping", path=m.path, line=m.line)
    meta = obj.get("metadata")
    for what, ok in (
        ("apiVersion", isinstance(obj.get("apiVersion"), str) and obj.get("apiVersion")),
        ("kind", isinstance(obj.get("kind"), str) and obj.get("kind")),
        (
            "metadata.name",
            isinstance(meta, Mapping) and isinstance(meta.get("name"), str) and meta.get("name"),
        ),
    ):
        if not ok:
            raise ObjectRenderError(f"{where}: document {m.index} has no {what}", path=m.path, line=m.line)


def _mark(obj: dict[str, Any], *, bundle: str, instance: str) -> None:
    meta = obj.setdefault("metadata", {})
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        labels = {}
    meta["labels"] = {**labels, model.LABEL_BUNDLE: bundle, model.LABEL_OWNER: instance}


def _annotate(objects: tuple[Mapping[str, Any], ...], revision: str | None) -> tuple[Mapping[str, Any], ...]:
    if revision is None:
        return objects
    out = []
    for obj in objects:
        new = dict(obj)
        meta = dict(new.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), model.ANNOTATION_REVISION: revision}
        new["metadata"] = meta
        out.append(new)
    return tuple(out)


# ----------------------------------------------------------------------------------------------------------
# Render one pair.


@dataclass(frozen=True)
class _Rendered:
    """A render without the revision annotation: what is shared between clusters and revisions."""

    objects: tuple[Mapping[str, Any], ...]
    hash: str
    namespace: str | None
    identities: frozenset[tuple[str, str, str, str]]
    origins: Mapping[tuple[str, str, str, str], tuple[str, int]] = field(default_factory=dict)


class _PatchFailed(Exception):
    """A JSON patch operation failed; the message names the operation, never a value of the object."""


def _json_patch(obj: dict[str, Any], ops: list[Any]) -> Any:
    """Apply RFC 6902 `ops` one at a time, so a failure names its operation. The libraries' own messages
    quote the document (a Secret's data, say), so they are replaced by a fixed reason."""
    doc: Any = obj
    for n, op in enumerate(ops, start=1):
        what = (
            f"operation {n} ({op.get('op')} {op.get('path')})"
            if isinstance(op, Mapping)
            else f"operation {n}"
        )
        try:
            doc = jsonpatch.apply_patch(doc, [op], in_place=False)
        except jsonpatch.JsonPatchTestFailed:
            raise _PatchFailed(f"{what}: the tested value differs") from None
        except jsonpatch.InvalidJsonPatch as e:
            raise _PatchFailed(f"{what}: invalid operation: {str(e)[:200]}") from None
        except (jsonpatch.JsonPointerException, jsonpatch.JsonPatchConflict):
            raise _PatchFailed(f"{what}: the path does not exist in the object or does not fit it") from None
        except jsonpatch.JsonPatchException:
            raise _PatchFailed(f"{what}: failed") from None
        except (TypeError, ValueError, KeyError, IndexError) as e:
            raise _PatchFailed(f"{what}: failed ({type(e).__name__})") from None
    return doc


@dataclass
class _Static:
    """Per bundle: indices of manifests without variables, and their finished (marked) objects."""

    plain: frozenset[int]
    done: dict[int, tuple[dict[str, Any], str]] = field(default_factory=dict)


def _render_plain(
    bundle: model.Bundle,
    cluster: model.Cluster,
    *,
    instance: str,
    scoped: Collection[tuple[str, str]],
    applied: tuple[int, ...] | None = None,
    static: _Static | None = None,
    substituting: bool = True,
) -> _Rendered:
    """Render without the revision annotation. `applied` lists the override indices selecting `cluster`
    (computed here when None). `static` shares the finished form of the manifests that use no
    variable between the clusters of one bundle (used only when no override applies)."""
    namespace = bundle.namespace or DEFAULT_NAMESPACE
    if applied is None:
        applied = _applied_overrides(bundle, cluster)
    if applied:
        static = None
    objects: list[dict[str, Any]] = []
    origin: list[model.Manifest] = []
    done: dict[int, str] = {}  # id(obj) -> canonical JSON, for objects taken finished from `static`
    for i, m in enumerate(bundle.manifests):
        if static is not None and i in static.done:
            finished, text = static.done[i]
            objects.append(finished)
            origin.append(m)
            done[id(finished)] = text
            continue
        _check_object(m)
        obj: dict[str, Any]
        if not substituting or _substitution_disabled(m.obj):
            obj = copy.deepcopy(dict(m.obj))
        else:
            try:
                obj = substitute(m.obj, cluster, where=describe(m.obj))
            except errors.RenderError as e:
                # At the line of the field using the variable when the parser recorded it.
                line, about = m.line, None
                if isinstance(e, VariableError):
                    line, about = m.variable_lines.get(e.name, m.line), e.cluster
                raise ObjectRenderError(
                    f"{m.path}:{line}: {e}", path=m.path, line=line, cluster=about
                ) from None
            if obj is m.obj:  # pragma: no cover - substitute always copies mappings
                obj = copy.deepcopy(dict(m.obj))
        objects.append(_default_namespace(obj, namespace=namespace, scoped=scoped))
        origin.append(m)

    for index in applied:
        override = bundle.overrides[index]
        for p_index, patch in enumerate(override.patches):
            where = f"{bundle.path}:{patch.line}: override {index + 1} patch {p_index + 1}"
            hits = [i for i, o in enumerate(objects) if _target_matches(patch.target, o)]
            if not hits:
                raise ObjectRenderError(
                    f"{where}: target {_describe_target(patch.target)} matches no object of bundle {bundle.name}",
                    path=bundle.path,
                    line=patch.line,
                )
            try:
                body = substitute(
                    patch.merge if patch.json is None else list(patch.json), cluster, where=where
                )
            except errors.RenderError as e:
                about = e.cluster if isinstance(e, VariableError) else None
                raise ObjectRenderError(str(e), path=bundle.path, line=patch.line, cluster=about) from None
            for i in hits:
                try:
                    if patch.json is not None:
                        result = _json_patch(objects[i], body)
                    else:
                        result = json_merge_patch.merge(copy.deepcopy(objects[i]), copy.deepcopy(body))
                except _PatchFailed as e:
                    raise ObjectRenderError(
                        f"{where}: cannot patch {describe(objects[i])}: {e}",
                        path=bundle.path,
                        line=patch.line,
                    ) from None
                except (TypeError, ValueError) as e:
                    raise ObjectRenderError(
                        f"{where}: cannot patch {describe(objects[i])} ({type(e).__name__})",
                        path=bundle.path,
                        line=patch.line,
                    ) from None
                if not isinstance(result, dict):
                    raise ObjectRenderError(
                        f"{where}: patching {describe(objects[i])} did not leave an object",
                        path=bundle.path,
                        line=patch.line,
                    )
                objects[i] = _default_namespace(result, namespace=namespace, scoped=scoped)

    seen: dict[tuple[str, str, str, str], model.Manifest] = {}
    for i, (obj, m) in enumerate(zip(objects, origin, strict=True)):
        if id(obj) not in done:
            _mark(obj, bundle=bundle.name, instance=instance)
            done[id(obj)] = canonical_json(obj)
            if static is not None and i in static.plain:
                static.done[i] = (obj, done[id(obj)])
        key = identity(obj)
        if key in seen:
            first = seen[key]
            raise ObjectRenderError(
                f"{m.path}:{m.line}: {describe(obj)} is declared twice in bundle {bundle.name} "
                f"(also at {first.path}:{first.line})",
                path=m.path,
                line=m.line,
            )
        seen[key] = m
    ordered = tuple(sorted(objects, key=_sort_key))
    own_namespace = bundle.namespace is not None and ("", "Namespace", "", bundle.namespace) in seen
    # The canonical JSON of the list, built from that of its items (same bytes as `hash_objects`).
    text = "[" + ",".join(done[id(o)] for o in ordered) + "]"
    return _Rendered(
        objects=ordered,
        hash=hashlib.sha256(text.encode()).hexdigest(),
        namespace=bundle.namespace if bundle.namespace and not own_namespace else None,
        identities=frozenset(seen),
        origins={k: (m.path, m.line) for k, m in seen.items()},
    )


def _applied_overrides(bundle: model.Bundle, cluster: model.Cluster) -> tuple[int, ...]:
    out = []
    for index, override in enumerate(bundle.overrides):
        decision = placement.select(
            override.placement,
            cluster,
            what=f"the placement of override {index + 1} of bundle {bundle.name!r}",
        )
        if decision.error is not None:
            raise ObjectRenderError(
                f"{bundle.path}:{override.line}: override {index + 1}: {decision.error}",
                path=bundle.path,
                line=override.line,
            )
        if decision.selected:
            out.append(index)
    return tuple(out)


def render(
    bundle: model.Bundle,
    cluster: model.Cluster,
    *,
    revision: str | None,
    instance: str = model.DEFAULT_INSTANCE,
    cluster_scoped: Collection[tuple[str, str]] | None = None,
) -> model.DesiredSet:
    """The objects `bundle` puts on `cluster`, in apply order, hashed. Raises `errors.RenderError` naming
    the file (and line) and object at fault.

    `cluster_scoped` is the set of (group, kind) that are cluster-scoped; default: the built-in table plus
    this bundle's own cluster-scoped CRDs (`render_all` passes those of the whole repository)."""
    scoped = cluster_scoped if cluster_scoped is not None else cluster_scoped_kinds([bundle])
    r = _render_plain(bundle, cluster, instance=instance, scoped=scoped)
    return model.DesiredSet(
        bundle=bundle.name,
        cluster=cluster.name,
        objects=_annotate(r.objects, revision),
        hash=r.hash,
        namespace=r.namespace,
    )


# ----------------------------------------------------------------------------------------------------------
# Render every placed pair.


def bundle_key(bundle: model.Bundle, *, instance: str, scoped: Collection[tuple[str, str]]) -> str:
    """A hash of everything about `bundle` that a render reads (besides the cluster)."""
    h = hashlib.sha256()
    h.update(canonical_json([bundle.name, bundle.namespace, instance]).encode())
    h.update(canonical_json(sorted(scoped)).encode())
    for m in bundle.manifests:
        h.update(canonical_json([m.path, m.line, m.index, m.obj, dict(m.variable_lines)]).encode())
    h.update(repr(bundle.overrides).encode())
    return h.hexdigest()


@dataclass
class RenderCache:
    """Renders kept across calls: (bundle content key, cluster variant) -> render or error.

    Not thread-safe; one per engine. Bounded: cleared when it holds `max_entries`."""

    entries: dict[tuple[str, Any], _Rendered | ObjectRenderError] = field(default_factory=dict)
    # Per pair, the last result: (hash, revision it was annotated with, objects). A pair whose hash did
    # not change keeps its objects, so their revision annotation stays the commit at which they changed.
    # Per bundle, the renders and results of the last call. A bundle whose content, registry and
    # placement did not change is not looked at again; a pair whose hash did not change keeps its result,
    # so its revision annotation stays the commit at which its content last changed.
    bundles: dict[str, _BundleRenders] = field(default_factory=dict)
    outs: dict[str, _BundleOut] = field(default_factory=dict)
    max_entries: int = 50_000
    hits: int = 0
    misses: int = 0


@dataclass(frozen=True)
class _Profile:
    key: str
    variables: tuple[str, ...]


def _variant(bundle: model.Bundle, profile: _Profile, cluster: model.Cluster) -> tuple[Any, ...]:
    values = tuple(variable(v, cluster) if _VAR_FORM.match(v) else None for v in profile.variables)
    if not bundle.overrides:
        return (values, ())
    try:
        return (values, _applied_overrides(bundle, cluster))
    except ObjectRenderError as e:
        return (values, ("error", str(e)))


def render_pairs(
    repo: model.Repo,
    placed: model.PlacementResult,
    *,
    revision: str | None,
    instance: str = model.DEFAULT_INSTANCE,
    cache: RenderCache | None = None,
    expanded: Mapping[str, model.Expansion] | None = None,
) -> tuple[dict[tuple[str, str], model.DesiredSet], dict[tuple[str, str], ObjectRenderError]]:
    """`render_all`, with errors as `ObjectRenderError` (path and line) instead of messages."""
    cache = cache if cache is not None else RenderCache()
    expanded = expanded or {}
    scoped = cluster_scoped_kinds(repo.bundles.values(), expanded.values())
    reg_key = placement.registry_key(repo.clusters)
    per_bundle: dict[str, _BundleRenders] = {}
    for b in sorted(placed.bundles):
        bundle = repo.bundles.get(b)
        if bundle is None:
            continue
        key = bundle_key(bundle, instance=instance, scoped=scoped)
        expansion = expanded.get(b) if bundle.sourced else None
        if bundle.sourced:
            key = hashlib.sha256(f"{key}\0{expansion.key if expansion else '-'}".encode()).hexdigest()
        stamp = (key, reg_key, placed.bundles[b])
        prev = cache.bundles.get(b)
        if prev is not None and prev.stamp == stamp and not prev.transient:
            per_bundle[b] = prev
            continue
        rendered, failed = _render_bundle(
            repo,
            bundle,
            placed.bundles[b],
            key=key,
            instance=instance,
            scoped=scoped,
            cache=cache,
            expansion=expansion,
        )
        idents: set[tuple[str, str, str, str]] = set()
        for r in {id(r): r for r in rendered.values()}.values():
            idents |= r.identities
        transient = any(placement.transient(str(e)) for e in failed.values())
        per_bundle[b] = _BundleRenders(stamp, rendered, failed, frozenset(idents), transient)

    # Objects claimed by two bundles: only bundles sharing an identity need a look pair by pair.
    claimants: dict[tuple[str, str, str, str], set[str]] = {}
    for b, br in per_bundle.items():
        for ident in br.identities:
            claimants.setdefault(ident, set()).add(b)
    contested = {ident: bs for ident, bs in claimants.items() if len(bs) > 1}
    involved = set().union(*contested.values()) if contested else set()
    claim_errors = _claims(repo, {b: per_bundle[b].rendered for b in involved}, contested)

    out: dict[tuple[str, str], model.DesiredSet] = {}
    failed_all: dict[tuple[str, str], ObjectRenderError] = {}
    outs: dict[str, _BundleOut] = {}
    for b, br in per_bundle.items():
        failed_all.update(br.failed)
        before = cache.outs.get(b)
        if (
            b not in involved
            and before is not None
            and before.stamp == br.stamp
            and before.unannotated == (revision is None)
            and before.complete
        ):
            out.update((pair, ds) for pair, (ds, _at) in before.pairs.items())
            outs[b] = before
            continue
        annotated: dict[int, tuple[Mapping[str, Any], ...]] = {}
        pairs: dict[tuple[str, str], tuple[model.DesiredSet, str | None]] = {}
        for pair, r in br.rendered.items():
            if pair in claim_errors:
                failed_all[pair] = claim_errors[pair]
                continue
            prev_pair = before.pairs.get(pair) if before is not None else None
            if (
                prev_pair is not None
                and prev_pair[0].hash == r.hash
                and (prev_pair[1] is None) == (revision is None)
            ):
                pairs[pair] = prev_pair
            else:
                objs = annotated.get(id(r))
                if objs is None:
                    objs = annotated[id(r)] = _annotate(r.objects, revision)
                ds = model.DesiredSet(
                    bundle=b, cluster=pair[1], objects=objs, hash=r.hash, namespace=r.namespace
                )
                pairs[pair] = (ds, revision)
            out[pair] = pairs[pair][0]
        outs[b] = _BundleOut(br.stamp, revision is None, pairs, complete=len(pairs) == len(br.rendered))
    cache.bundles = per_bundle
    cache.outs = outs
    return out, failed_all


@dataclass(frozen=True)
class _BundleRenders:
    stamp: tuple[str, str, tuple[str, ...]]  # (bundle content key, registry key, placed clusters)
    rendered: dict[tuple[str, str], _Rendered]
    failed: dict[tuple[str, str], ObjectRenderError]
    identities: frozenset[tuple[str, str, str, str]]  # every object any of its renders declares
    transient: bool = False  # an error depended on a clock (the CEL safety net): render again next time


@dataclass(frozen=True)
class _BundleOut:
    stamp: tuple[str, str, tuple[str, ...]]
    unannotated: bool  # rendered for a work tree (revision None)
    pairs: dict[tuple[str, str], tuple[model.DesiredSet, str | None]]  # pair -> (result, revision of it)
    complete: bool  # no pair was dropped for a claim conflict


def _render_bundle(
    repo: model.Repo,
    bundle: model.Bundle,
    clusters: tuple[str, ...],
    *,
    key: str,
    instance: str,
    scoped: Collection[tuple[str, str]],
    cache: RenderCache,
    expansion: model.Expansion | None = None,
) -> tuple[dict[tuple[str, str], _Rendered], dict[tuple[str, str], ObjectRenderError]]:
    """Render one bundle on its clusters, sharing renders between clusters of the same variant. A bundle
    with a source takes each cluster's manifests from its `expansion` (`fleet.clients.sources`)."""
    if not bundle.sourced:
        return _render_group(
            repo, bundle, clusters, key=key, instance=instance, scoped=scoped, cache=cache, substituting=True
        )
    rendered: dict[tuple[str, str], _Rendered] = {}
    failed: dict[tuple[str, str], ObjectRenderError] = {}
    groups: dict[str, tuple[model.SourceRender, list[str]]] = {}
    for c in clusters:
        if c not in repo.clusters:
            continue
        problem = expansion.errors.get(c) if expansion is not None else None
        got = expansion.renders.get(c) if expansion is not None else None
        if problem is not None:
            where = f"{problem.path}:{problem.line}: " if problem.path else ""
            failed[(bundle.name, c)] = ObjectRenderError(
                f"{where}{problem.message}", path=problem.path or bundle.path, line=problem.line
            )
        elif got is None:
            failed[(bundle.name, c)] = ObjectRenderError(
                f"{bundle.path}:1: the bundle's source was not rendered for cluster {c} (fleet.clients.sources)",
                path=bundle.path,
            )
        else:
            groups.setdefault(got.key, (got, []))[1].append(c)
    for rkey, (got, members) in groups.items():
        variant = dataclasses.replace(bundle, manifests=got.manifests)
        gkey = hashlib.sha256(f"{key}\0{rkey}".encode()).hexdigest()
        r, f = _render_group(
            repo,
            variant,
            tuple(members),
            key=gkey,
            instance=instance,
            scoped=scoped,
            cache=cache,
            substituting=got.substitute,
        )
        rendered.update(r)
        failed.update(f)
    return rendered, failed


def _render_group(
    repo: model.Repo,
    bundle: model.Bundle,
    clusters: tuple[str, ...],
    *,
    key: str,
    instance: str,
    scoped: Collection[tuple[str, str]],
    cache: RenderCache,
    substituting: bool,
) -> tuple[dict[tuple[str, str], _Rendered], dict[tuple[str, str], ObjectRenderError]]:
    """Render `bundle.manifests` on `clusters`; `substituting` False: its manifests are final text (Helm's
    output) and only overrides may use ``${cluster.*}``."""
    rendered: dict[tuple[str, str], _Rendered] = {}
    failed: dict[tuple[str, str], ObjectRenderError] = {}
    used: set[str] = set()
    if substituting:
        for m in bundle.manifests:
            used |= variables_used(m.obj)
    for o in bundle.overrides:
        for p in o.patches:
            used |= variables_used(p.merge if p.json is None else list(p.json))
    profile = _Profile(key, tuple(sorted(used)))
    static = _Static(
        plain=frozenset(
            i
            for i, m in enumerate(bundle.manifests)
            if isinstance(m.obj, Mapping)
            and (not substituting or _substitution_disabled(m.obj) or not variables_used(m.obj))
        )
    )
    b = bundle.name
    for c in clusters:
        cluster = repo.clusters.get(c)
        if cluster is None:
            continue
        variant = _variant(bundle, profile, cluster)
        ckey = (profile.key, variant)
        hit = cache.entries.get(ckey)
        if hit is None:
            cache.misses += 1
            try:
                if variant[1] and variant[1][0] == "error":
                    raise ObjectRenderError(str(variant[1][1]), path=bundle.path)
                hit = _render_plain(
                    bundle,
                    cluster,
                    instance=instance,
                    scoped=scoped,
                    applied=variant[1] if bundle.overrides else (),
                    static=static,
                    substituting=substituting,
                )
            except ObjectRenderError as e:
                hit = e
            except errors.RenderError as e:  # pragma: no cover - every path raises ObjectRenderError
                hit = ObjectRenderError(str(e), path=bundle.path)
            if len(cache.entries) >= cache.max_entries:
                cache.entries.clear()
            if not (
                isinstance(hit, ObjectRenderError) and placement.transient(str(hit))
            ):  # clocks are not content
                cache.entries[ckey] = hit
        else:
            cache.hits += 1
        if isinstance(hit, ObjectRenderError):
            failed[(b, c)] = _for_cluster(hit, c)
        else:
            rendered[(b, c)] = hit
    return rendered, failed


def _for_cluster(e: ObjectRenderError, cluster: str) -> ObjectRenderError:
    msg = str(e)
    if e.cluster is not None and e.cluster != cluster:
        # A render shared by clusters of one variant: the value is missing on this cluster too.
        msg = msg.replace(f"is not set on cluster {e.cluster}", f"is not set on cluster {cluster}")
        return ObjectRenderError(msg, path=e.path, line=e.line, cluster=cluster)
    if f"cluster {cluster}" in msg:
        return e
    return ObjectRenderError(f"{msg} (cluster {cluster})", path=e.path, line=e.line)


def _claims(
    repo: model.Repo,
    rendered: Mapping[str, Mapping[tuple[str, str], _Rendered]],
    contested: Mapping[tuple[str, str, str, str], set[str]],
) -> dict[tuple[str, str], ObjectRenderError]:
    """Objects claimed by two bundles on one cluster: an error for both there (never last-writer-wins).

    `rendered` holds, per bundle that shares an object identity with another, its renders per pair."""
    failed: dict[tuple[str, str], ObjectRenderError] = {}
    if not contested:
        return failed
    by_cluster: dict[str, dict[str, _Rendered]] = {}
    for b, pairs in rendered.items():
        for (_b, c), r in pairs.items():
            by_cluster.setdefault(c, {})[b] = r
    for c, renders in sorted(by_cluster.items()):
        for ident, bs in contested.items():
            holders = sorted(b for b in bs if b in renders and ident in renders[b].identities)
            if len(holders) < 2:
                continue
            _group_name, kind, ns, name = ident
            what = "/".join(x for x in (kind, ns, name) if x)
            for b in holders:
                others = ", ".join(o for o in holders if o != b)
                path, line = renders[b].origins.get(ident, (repo.bundles[b].path, 1))
                failed[(b, c)] = ObjectRenderError(
                    f"{path}:{line}: {what} is also declared by bundle {others} on cluster {c}",
                    path=path,
                    line=line,
                )
    return failed


def render_all(
    repo: model.Repo,
    placed: model.PlacementResult,
    *,
    revision: str | None,
    instance: str = model.DEFAULT_INSTANCE,
    cache: RenderCache | None = None,
    expanded: Mapping[str, model.Expansion] | None = None,
) -> tuple[dict[tuple[str, str], model.DesiredSet], dict[tuple[str, str], str]]:
    """Render every placed (bundle, cluster) pair: `(desired, errors)`, both keyed by (bundle, cluster).

    A pair is in exactly one of the two. Pairs that render alike share their objects. Two bundles that
    declare the same object on one cluster are both in error there. A bundle with a source (Kustomize,
    Helm, SOPS) takes its manifests from `expanded` (`fleet.clients.sources.expand`); without one, its pairs are
    errors. Blocking: run it off the event loop.
    """
    desired, failed = render_pairs(
        repo, placed, revision=revision, instance=instance, cache=cache, expanded=expanded
    )
    return desired, {k: str(e) for k, e in failed.items()}


# ----------------------------------------------------------------------------------------------------------
# Validation.


def check(
    repo: model.Repo,
    placed: model.PlacementResult,
    *,
    revision: str | None = None,
    expanded: Mapping[str, model.Expansion] | None = None,
) -> list[model.Problem]:
    """Render problems for `fleet validate`: unknown ``${cluster.*}`` variables and override targets that
    match no object (whatever the placement), and every render error of a placed pair."""
    problems: list[model.Problem] = []
    scoped = cluster_scoped_kinds(repo.bundles.values())
    for b in sorted(repo.bundles):
        bundle = repo.bundles[b]
        for m in bundle.manifests:
            for v in sorted(variables_used(m.obj)):
                if not _VAR_FORM.match(v):
                    problems.append(
                        model.Problem(
                            m.path,
                            m.variable_lines.get(v, m.line),
                            f"{describe(m.obj)}: unknown variable ${{cluster.{v}}}",
                            bundle=b,
                        )
                    )
        if bundle.sourced:  # its objects are known per cluster only: render_pairs checks the targets
            continue
        namespace = bundle.namespace or DEFAULT_NAMESPACE
        plain = [
            _default_namespace(copy.deepcopy(dict(m.obj)), namespace=namespace, scoped=scoped)
            for m in bundle.manifests
            if isinstance(m.obj, Mapping)
        ]
        for index, override in enumerate(bundle.overrides):
            for p_index, patch in enumerate(override.patches):
                if not any(_target_matches(_loose(patch.target, o), o) for o in plain):
                    problems.append(
                        model.Problem(
                            bundle.path,
                            patch.line,
                            f"override {index + 1} patch {p_index + 1}: target {_describe_target(patch.target)} "
                            "matches no object of the bundle",
                            bundle=b,
                        )
                    )
    static = {(p.bundle, p.path, p.line) for p in problems}
    _desired, failed = render_pairs(repo, placed, revision=revision, expanded=expanded)
    said: set[tuple[str, str, int, str]] = set()
    for (b, c), e in sorted(failed.items(), key=lambda kv: kv[0]):
        if (b, e.path, e.line) in static:
            continue
        path = e.path or repo.bundles[b].path
        message = _unprefixed(str(e), path, e.line)
        if (b, path, e.line, message) in said:  # a source's failure is the same on every cluster
            continue
        said.add((b, path, e.line, message))
        problems.append(model.Problem(path, e.line, message, bundle=b, cluster=c))
    return problems


def _unprefixed(message: str, path: str, line: int) -> str:
    """`message` without its own leading ``PATH:LINE: `` (a Problem prints that prefix itself)."""
    prefix = f"{path}:{line}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _loose(target: model.PatchTarget, obj: Mapping[str, Any]) -> model.PatchTarget:
    """`target` with fields dropped where `obj` has a per-cluster ``${cluster.`` value (unknown statically)."""
    meta = obj.get("metadata") or {}
    name = None if "${cluster." in str(meta.get("name", "")) else target.name
    ns = None if "${cluster." in str(meta.get("namespace", "")) else target.namespace
    return model.PatchTarget(kind=target.kind, name=name, api_version=target.api_version, namespace=ns)
