"""Render one bundle for one cluster: `render` (substitute, default namespaces, overrides' patches,
marks, order), the steps of docs/repository.md in order.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import json_merge_patch
import jsonpatch

from fleet.core import errors, model, placement
from fleet.core.render import common, substitution

# ----------------------------------------------------------------------------------------------------------
# Render one pair.


@dataclass(frozen=True)
class Rendered:
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
class Static:
    """Per bundle: indices of manifests without variables, and their finished (marked) objects."""

    plain: frozenset[int]
    done: dict[int, tuple[dict[str, Any], str]] = field(default_factory=dict)


def render_plain(
    bundle: model.Bundle,
    cluster: model.Cluster,
    *,
    instance: str,
    scoped: Collection[tuple[str, str]],
    applied: tuple[int, ...] | None = None,
    static: Static | None = None,
    substituting: bool = True,
) -> Rendered:
    """Render without the revision annotation. `applied` lists the override indices selecting `cluster`
    (computed here when None). `static` shares the finished form of the manifests that use no
    variable between the clusters of one bundle (used only when no override applies)."""
    namespace = bundle.namespace or common.DEFAULT_NAMESPACE
    if applied is None:
        applied = applied_overrides(bundle, cluster)
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
        common.check_object(m)
        obj: dict[str, Any]
        if not substituting or substitution.substitution_disabled(m.obj):
            obj = copy.deepcopy(dict(m.obj))
        else:
            try:
                obj = substitution.substitute(m.obj, cluster, where=common.describe(m.obj))
            except errors.RenderError as e:
                # At the line of the field using the variable when the parser recorded it.
                line, about = m.line, None
                if isinstance(e, common.VariableError):
                    line, about = m.variable_lines.get(e.name, m.line), e.cluster
                raise common.ObjectRenderError(
                    f"{m.path}:{line}: {e}", path=m.path, line=line, cluster=about
                ) from None
            if obj is m.obj:  # pragma: no cover - substitute always copies mappings
                obj = copy.deepcopy(dict(m.obj))
        objects.append(common.default_namespace(obj, namespace=namespace, scoped=scoped))
        origin.append(m)

    for index in applied:
        override = bundle.overrides[index]
        for p_index, patch in enumerate(override.patches):
            where = f"{bundle.path}:{patch.line}: override {index + 1} patch {p_index + 1}"
            hits = [i for i, o in enumerate(objects) if common.target_matches(patch.target, o)]
            if not hits:
                raise common.ObjectRenderError(
                    f"{where}: target {common.describe_target(patch.target)} matches no object of bundle {bundle.name}",
                    path=bundle.path,
                    line=patch.line,
                )
            try:
                body = substitution.substitute(
                    patch.merge if patch.json is None else list(patch.json), cluster, where=where
                )
            except errors.RenderError as e:
                about = e.cluster if isinstance(e, common.VariableError) else None
                raise common.ObjectRenderError(
                    str(e), path=bundle.path, line=patch.line, cluster=about
                ) from None
            for i in hits:
                try:
                    if patch.json is not None:
                        result = _json_patch(objects[i], body)
                    else:
                        result = json_merge_patch.merge(copy.deepcopy(objects[i]), copy.deepcopy(body))
                except _PatchFailed as e:
                    raise common.ObjectRenderError(
                        f"{where}: cannot patch {common.describe(objects[i])}: {e}",
                        path=bundle.path,
                        line=patch.line,
                    ) from None
                except (TypeError, ValueError) as e:
                    raise common.ObjectRenderError(
                        f"{where}: cannot patch {common.describe(objects[i])} ({type(e).__name__})",
                        path=bundle.path,
                        line=patch.line,
                    ) from None
                if not isinstance(result, dict):
                    raise common.ObjectRenderError(
                        f"{where}: patching {common.describe(objects[i])} did not leave an object",
                        path=bundle.path,
                        line=patch.line,
                    )
                objects[i] = common.default_namespace(result, namespace=namespace, scoped=scoped)

    seen: dict[tuple[str, str, str, str], model.Manifest] = {}
    for i, (obj, m) in enumerate(zip(objects, origin, strict=True)):
        if id(obj) not in done:
            common.mark(obj, bundle=bundle.name, instance=instance)
            done[id(obj)] = common.canonical_json(obj)
            if static is not None and i in static.plain:
                static.done[i] = (obj, done[id(obj)])
        key = common.identity(obj)
        if key in seen:
            first = seen[key]
            raise common.ObjectRenderError(
                f"{m.path}:{m.line}: {common.describe(obj)} is declared twice in bundle {bundle.name} "
                f"(also at {first.path}:{first.line})",
                path=m.path,
                line=m.line,
            )
        seen[key] = m
    ordered = tuple(sorted(objects, key=common.sort_key))
    own_namespace = bundle.namespace is not None and ("", "Namespace", "", bundle.namespace) in seen
    # The canonical JSON of the list, built from that of its items (same bytes as `hash_objects`).
    text = "[" + ",".join(done[id(o)] for o in ordered) + "]"
    return Rendered(
        objects=ordered,
        hash=hashlib.sha256(text.encode()).hexdigest(),
        namespace=bundle.namespace if bundle.namespace and not own_namespace else None,
        identities=frozenset(seen),
        origins={k: (m.path, m.line) for k, m in seen.items()},
    )


def applied_overrides(bundle: model.Bundle, cluster: model.Cluster) -> tuple[int, ...]:
    out = []
    for index, override in enumerate(bundle.overrides):
        decision = placement.select(
            override.placement,
            cluster,
            what=f"the placement of override {index + 1} of bundle {bundle.name!r}",
        )
        if decision.error is not None:
            raise common.ObjectRenderError(
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
    scoped = cluster_scoped if cluster_scoped is not None else common.cluster_scoped_kinds([bundle])
    r = render_plain(bundle, cluster, instance=instance, scoped=scoped)
    return model.DesiredSet(
        bundle=bundle.name,
        cluster=cluster.name,
        objects=common.annotate(r.objects, revision),
        hash=r.hash,
        namespace=r.namespace,
    )
