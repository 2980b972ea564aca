"""Render every placed pair: `render_all` / `render_pairs`, sharing identical renders between clusters
and across revisions (`RenderCache`), and detecting objects claimed by two bundles on one cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.core import errors, model, placement
from fleet.core.render import common, single, substitution

# ----------------------------------------------------------------------------------------------------------
# Render every placed pair.


def bundle_key(bundle: model.Bundle, *, instance: str, scoped: Collection[tuple[str, str]]) -> str:
    """A hash of everything about `bundle` that a render reads (besides the cluster)."""
    h = hashlib.sha256()
    h.update(common.canonical_json([bundle.name, bundle.namespace, instance]).encode())
    h.update(common.canonical_json(sorted(scoped)).encode())
    for m in bundle.manifests:
        h.update(common.canonical_json([m.path, m.line, m.index, m.obj, dict(m.variable_lines)]).encode())
    h.update(repr(bundle.overrides).encode())
    return h.hexdigest()


@dataclass
class RenderCache:
    """Renders kept across calls: (bundle content key, cluster variant) -> render or error.

    Not thread-safe; one per engine. Bounded: cleared when it holds `max_entries`."""

    entries: dict[tuple[str, Any], single.Rendered | common.ObjectRenderError] = field(default_factory=dict)
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
    values = tuple(
        substitution.variable(v, cluster) if substitution.VAR_FORM.match(v) else None
        for v in profile.variables
    )
    if not bundle.overrides:
        return (values, ())
    try:
        return (values, single.applied_overrides(bundle, cluster))
    except common.ObjectRenderError as e:
        return (values, ("error", str(e)))


def render_pairs(
    repo: model.Repo,
    placed: model.PlacementResult,
    *,
    revision: str | None,
    instance: str = model.DEFAULT_INSTANCE,
    cache: RenderCache | None = None,
    expanded: Mapping[str, model.Expansion] | None = None,
) -> tuple[dict[tuple[str, str], model.DesiredSet], dict[tuple[str, str], common.ObjectRenderError]]:
    """`render_all`, with errors as `ObjectRenderError` (path and line) instead of messages."""
    cache = cache if cache is not None else RenderCache()
    expanded = expanded or {}
    scoped = common.cluster_scoped_kinds(repo.bundles.values(), expanded.values())
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
    failed_all: dict[tuple[str, str], common.ObjectRenderError] = {}
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
                    objs = annotated[id(r)] = common.annotate(r.objects, revision)
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
    rendered: dict[tuple[str, str], single.Rendered]
    failed: dict[tuple[str, str], common.ObjectRenderError]
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
) -> tuple[dict[tuple[str, str], single.Rendered], dict[tuple[str, str], common.ObjectRenderError]]:
    """Render one bundle on its clusters, sharing renders between clusters of the same variant. A bundle
    with a source takes each cluster's manifests from its `expansion` (`fleet.clients.sources`)."""
    if not bundle.sourced:
        return _render_group(
            repo, bundle, clusters, key=key, instance=instance, scoped=scoped, cache=cache, substituting=True
        )
    rendered: dict[tuple[str, str], single.Rendered] = {}
    failed: dict[tuple[str, str], common.ObjectRenderError] = {}
    groups: dict[str, tuple[model.SourceRender, list[str]]] = {}
    for c in clusters:
        if c not in repo.clusters:
            continue
        problem = expansion.errors.get(c) if expansion is not None else None
        got = expansion.renders.get(c) if expansion is not None else None
        if problem is not None:
            where = f"{problem.path}:{problem.line}: " if problem.path else ""
            failed[(bundle.name, c)] = common.ObjectRenderError(
                f"{where}{problem.message}", path=problem.path or bundle.path, line=problem.line
            )
        elif got is None:
            failed[(bundle.name, c)] = common.ObjectRenderError(
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
) -> tuple[dict[tuple[str, str], single.Rendered], dict[tuple[str, str], common.ObjectRenderError]]:
    """Render `bundle.manifests` on `clusters`; `substituting` False: its manifests are final text (Helm's
    output) and only overrides may use ``${cluster.*}``."""
    rendered: dict[tuple[str, str], single.Rendered] = {}
    failed: dict[tuple[str, str], common.ObjectRenderError] = {}
    used: set[str] = set()
    if substituting:
        for m in bundle.manifests:
            used |= substitution.variables_used(m.obj)
    for o in bundle.overrides:
        for p in o.patches:
            used |= substitution.variables_used(p.merge if p.json is None else list(p.json))
    profile = _Profile(key, tuple(sorted(used)))
    static = single.Static(
        plain=frozenset(
            i
            for i, m in enumerate(bundle.manifests)
            if isinstance(m.obj, Mapping)
            and (
                not substituting
                or substitution.substitution_disabled(m.obj)
                or not substitution.variables_used(m.obj)
            )
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
                    raise common.ObjectRenderError(str(variant[1][1]), path=bundle.path)
                hit = single.render_plain(
                    bundle,
                    cluster,
                    instance=instance,
                    scoped=scoped,
                    applied=variant[1] if bundle.overrides else (),
                    static=static,
                    substituting=substituting,
                )
            except common.ObjectRenderError as e:
                hit = e
            except errors.RenderError as e:  # pragma: no cover - every path raises ObjectRenderError
                hit = common.ObjectRenderError(str(e), path=bundle.path)
            if len(cache.entries) >= cache.max_entries:
                cache.entries.clear()
            if not (
                isinstance(hit, common.ObjectRenderError) and placement.transient(str(hit))
            ):  # clocks are not content
                cache.entries[ckey] = hit
        else:
            cache.hits += 1
        if isinstance(hit, common.ObjectRenderError):
            failed[(b, c)] = _for_cluster(hit, c)
        else:
            rendered[(b, c)] = hit
    return rendered, failed


def _for_cluster(e: common.ObjectRenderError, cluster: str) -> common.ObjectRenderError:
    msg = str(e)
    if e.cluster is not None and e.cluster != cluster:
        # A render shared by clusters of one variant: the value is missing on this cluster too.
        msg = msg.replace(f"is not set on cluster {e.cluster}", f"is not set on cluster {cluster}")
        return common.ObjectRenderError(msg, path=e.path, line=e.line, cluster=cluster)
    if f"cluster {cluster}" in msg:
        return e
    return common.ObjectRenderError(f"{msg} (cluster {cluster})", path=e.path, line=e.line)


def _claims(
    repo: model.Repo,
    rendered: Mapping[str, Mapping[tuple[str, str], single.Rendered]],
    contested: Mapping[tuple[str, str, str, str], set[str]],
) -> dict[tuple[str, str], common.ObjectRenderError]:
    """Objects claimed by two bundles on one cluster: an error for both there (never last-writer-wins).

    `rendered` holds, per bundle that shares an object identity with another, its renders per pair."""
    failed: dict[tuple[str, str], common.ObjectRenderError] = {}
    if not contested:
        return failed
    by_cluster: dict[str, dict[str, single.Rendered]] = {}
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
                failed[(b, c)] = common.ObjectRenderError(
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
