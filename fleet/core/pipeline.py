"""The one pipeline from a parsed revision to what each cluster must hold (docs/architecture.md).

Owns: the steps every command and the controller take, in order: place (`fleet.core.placement`), the
rollout waves, render (`fleet.core.render`), pairs in error, per-cluster targets (`targets_for`), the
bundles left alone everywhere (broken: `protected_bundles`; suspended: `suspended_bundles`; both:
`all_protected`), the objects each cluster must hold, and the refusal of a revision that holds no
cluster file or no bundle at all (`emptiness`). Pure: `fleet sync`, `fleet diff`, `fleet plan`,
`fleet render` and `fleet serve` call it and do the I/O around it.
Does not: read files or run renderer programs (`fleet.clients.sources.expand` runs before it, its
expansions come in), or talk to clusters.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.core import drift, model, placement, plan, render
from fleet.core import rollout as ro


def targets_for(
    repo: model.Repo,
    placed: model.PlacementResult,
    desired: Mapping[tuple[str, str], model.DesiredSet],
    render_errors: Mapping[tuple[str, str], str],
) -> dict[str, dict[str, plan.Target]]:
    """cluster -> bundle -> Target, for every cluster of `repo` (clusters with no bundle get `{}`)."""
    out: dict[str, dict[str, plan.Target]] = {c: {} for c in repo.clusters}
    for name, bundle in repo.bundles.items():
        common: dict[str, Any] = {
            "suspended": bundle.suspend,
            "prune": bundle.prune,
            "allow_empty": bundle.allow_empty,
            "adopt": bundle.adopt,
            "depends_on": tuple(bundle.depends_on),
        }
        for cluster in placed.clusters_of(name):
            if cluster not in out:
                continue
            if (name, cluster) in desired:
                out[cluster][name] = plan.Target(name, desired=desired[(name, cluster)], **common)
            else:
                err = render_errors.get((name, cluster), f"bundle {name}: not rendered for cluster {cluster}")
                out[cluster][name] = plan.Target(name, error=err, **common)
        for cluster, message in (placed.errors.get(name) or {}).items():
            if cluster in out:
                out[cluster][name] = plan.Target(name, error=message, **common)
    return out


def protected_bundles(repo: model.Repo) -> dict[str, str]:
    """Bundles broken at this revision, with why: their inventories are left alone everywhere (their
    last good state is kept)."""
    out = {}
    for name, problems in repo.broken_bundles.items():
        first = str(problems[0]) if problems else "broken"
        out[name] = f"bundle {name}: broken at this revision, last good state kept: {first}"
    return out


def suspended_bundles(repo: model.Repo) -> dict[str, plan.Target]:
    """Suspended bundles: never written, so not pruned either where a cluster stops matching them."""
    return {name: plan.Target(name, suspended=True) for name, b in repo.bundles.items() if b.suspend}


def all_protected(repo: model.Repo) -> dict[str, str | plan.Target]:
    """What `reconcile_cluster(..., protected=...)` wants: broken and suspended bundles."""
    out: dict[str, str | plan.Target] = dict(protected_bundles(repo))
    out.update(suspended_bundles(repo))
    return out


def emptiness(repo: model.Repo) -> str | None:
    """What makes a revision look like a broken checkout: "no cluster file" or "no bundle" at all (broken
    ones count as present), else None. `fleet sync`, `fleet diff` and `fleet serve` refuse such a revision
    unless told it is wanted (``--allow-empty-repo``)."""
    if not repo.clusters and not repo.broken_clusters:
        return "no cluster file"
    if not repo.bundles and not repo.broken_bundles:
        return "no bundle"
    return None


@dataclass(frozen=True)
class Desired:
    """What one revision wants, computed once per revision off the event loop."""

    repo: model.Repo
    targets: Mapping[str, Mapping[str, plan.Target]]  # cluster -> bundle -> target
    protected: Mapping[str, str]  # broken bundles: left alone everywhere
    problems: tuple[model.Problem, ...]
    objects: Mapping[str, Mapping[model.ObjectRef, Mapping[str, Any]]] = field(default_factory=dict)
    # What reconcile must leave alone wherever it finds their inventories: broken bundles (a message) and
    # suspended ones (a protecting target), so neither is pruned from a cluster that stops matching.
    shield: Mapping[str, str | plan.Target] = field(default_factory=dict)
    waves: Mapping[str, ro.Membership] = field(default_factory=dict)  # bundle -> its rollout's waves

    def hashes(self) -> dict[str, dict[str, str]]:
        """bundle -> cluster -> rendered hash, for every pair this revision applies (errors left out)."""
        out: dict[str, dict[str, str]] = {}
        for c, per in self.targets.items():
            for b, t in per.items():
                if t.desired is not None and not t.suspended:
                    out.setdefault(b, {})[c] = t.desired.hash
        return out


@dataclass(frozen=True)
class Rendered:
    """A revision placed and rendered: the first half of the pipeline, the same for every command.

    `desired` holds every pair that rendered and `render_errors` every pair that did not (a pair is in
    exactly one); `waves` (each bundle's rollout waves) is worked out when first asked for."""

    repo: model.Repo
    placed: model.PlacementResult
    desired: Mapping[tuple[str, str], model.DesiredSet]
    render_errors: Mapping[tuple[str, str], str]

    @functools.cached_property
    def waves(self) -> dict[str, ro.Membership]:
        return placement.waves(self.repo, self.placed)

    def wave_errors(self) -> dict[tuple[str, str], str]:
        """(bundle, cluster) -> why no wave takes that placed cluster (none, or a wave's CEL failed)."""
        return {(b, c): m for b, membership in self.waves.items() for c, m in membership.errors.items()}


def render_revision(
    repo: model.Repo,
    *,
    revision: str | None,
    instance: str = model.DEFAULT_INSTANCE,
    placed: model.PlacementResult | None = None,
    expanded: Mapping[str, model.Expansion] | None = None,
    placement_cache: placement.PlacementCache | None = None,
    render_cache: render.RenderCache | None = None,
) -> Rendered:
    """Place (unless `placed` is given) and render every placed pair (the bundles with a source from
    `expanded`, `fleet.clients.sources.expand`). Blocking (CEL is CPU-bound); the caches keep work across
    revisions."""
    if placed is None:
        placed = placement.place(repo, cache=placement_cache)
    desired, render_errors = render.render_all(
        repo, placed, revision=revision, instance=instance, cache=render_cache, expanded=expanded
    )
    return Rendered(repo=repo, placed=placed, desired=desired, render_errors=render_errors)


def desired_state(rendered: Rendered, *, instance: str) -> Desired:
    """The second half, for `fleet serve`: pairs in error (render, then waves: a cluster no wave selects
    gets nothing), each cluster's targets and objects, and the bundles left alone everywhere."""
    repo = rendered.repo
    errors_ = dict(rendered.render_errors)
    for pair, message in rendered.wave_errors().items():
        errors_.setdefault(pair, message)
    desired = {k: v for k, v in rendered.desired.items() if k not in errors_}
    targets = targets_for(repo, rendered.placed, desired, errors_)
    objects = {c: drift.desired_objects(t, instance=instance) for c, t in targets.items()}
    return Desired(
        repo=repo,
        targets=targets,
        protected=protected_bundles(repo),
        problems=tuple(sorted(repo.problems)),
        objects=objects,
        shield=all_protected(repo),
        waves=rendered.waves,
    )


def place_and_render(
    repo: model.Repo,
    *,
    revision: str | None,
    instance: str,
    placement_cache: placement.PlacementCache | None = None,
    render_cache: render.RenderCache | None = None,
    placed: model.PlacementResult | None = None,
    expanded: Mapping[str, model.Expansion] | None = None,
) -> Desired:
    """The whole pipeline for `fleet serve`: `render_revision`, then `desired_state`."""
    rendered = render_revision(
        repo,
        revision=revision,
        instance=instance,
        placed=placed,
        expanded=expanded,
        placement_cache=placement_cache,
        render_cache=render_cache,
    )
    return desired_state(rendered, instance=instance)


def signature(targets: Mapping[str, plan.Target], protected: Mapping[str, str]) -> dict[str, str]:
    """What a cluster is handed, bundle by bundle: its hash, an error, or left as it is."""
    out: dict[str, str] = {}
    for b, t in targets.items():
        if t.desired is not None:
            out[b] = t.desired.hash + (":suspended" if t.suspended else "")
        elif t.suspended:
            out[b] = "left"
        else:
            out[b] = "error:" + (t.error or "")
    for b in protected:
        out[b] = "protected"
    return out
