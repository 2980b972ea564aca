"""Render: one bundle for one cluster -> the exact objects to apply (`model.DesiredSet`), hashed.

Owns: `render` (bundle x cluster), `render_all` (every placed pair, sharing identical renders and
detecting objects claimed by two bundles on one cluster), `check` (render-level problems for
`fleet validate`), `RenderCache`, and the table of built-in cluster-scoped kinds.
Does not: decide placement (`fleet.core.placement`), read files (`fleet.core.repository`), run Kustomize, Helm or
SOPS (`fleet.clients.sources` does, before this layer: a bundle with ``spec.source`` or ``spec.decrypt`` takes each
cluster's manifests from its `model.Expansion`, and Helm's output is not substituted again), or talk to
clusters.

Steps, in order, for each manifest (docs/repository.md, docs/reconcile.md):

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

from fleet.core.render.checks import check
from fleet.core.render.common import (
    CLUSTER_SCOPED,
    DEFAULT_NAMESPACE,
    ObjectRenderError,
    VariableError,
    canonical_json,
    cluster_scoped_kinds,
    describe,
    hash_objects,
    identity,
)
from fleet.core.render.fleetwide import RenderCache, bundle_key, render_all, render_pairs
from fleet.core.render.single import render
from fleet.core.render.substitution import substitute, variable, variables_used

__all__ = [
    "CLUSTER_SCOPED",
    "DEFAULT_NAMESPACE",
    "ObjectRenderError",
    "RenderCache",
    "VariableError",
    "bundle_key",
    "canonical_json",
    "check",
    "cluster_scoped_kinds",
    "describe",
    "hash_objects",
    "identity",
    "render",
    "render_all",
    "render_pairs",
    "substitute",
    "variable",
    "variables_used",
]
