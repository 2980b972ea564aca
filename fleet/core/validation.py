"""`fleet validate`'s checks beyond parsing: placement, rollout waves and render, at PATH:LINE.

Owns: `check` (a parsed `model.Repo` -> the placement-, wave- and render-level problems, each at the line
of the field at fault: a CEL error per cluster it was evaluated on, a `dependsOn` that fails, placed
clusters no wave selects, then `fleet.core.render.check` over every placed pair). Pure; the command runs
it in a worker thread (CEL is CPU-bound). Does not: parse (`fleet.core.repository`), place
(`fleet.core.placement`) or render (`fleet.core.render`) itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from fleet.core import model, placement, render

# ----------------------------------------------------------------------------------------------------------
# Validation.


def check(
    repo: model.Repo,
    *,
    revision: str | None = None,
    expanded: Mapping[str, model.Expansion] | None = None,
    placed: model.PlacementResult | None = None,
) -> list[model.Problem]:
    """Placement and render problems for `fleet validate`, each at PATH:LINE of the field at fault.

    CEL errors are reported for every cluster on which the CEL was evaluated; then every placed pair is
    rendered (see `fleet.core.render.render_all`; bundles with a source from `expanded`, see
    `fleet.clients.sources.expand`), which reports overrides whose target matches no object,
    unknown ``${cluster.*}`` variables and objects claimed by two bundles on one cluster. `placed`: the
    placement of `repo` when the caller already has it (it is not computed again).
    """
    result = placed if placed is not None else placement.place(repo)
    # Unknown names in `placement.clusters` are reported by `fleet.core.repository` (they are in result.warnings).
    problems: list[model.Problem] = []
    for b, per_cluster in result.errors.items():
        bundle = repo.bundles[b]
        line = 1
        if bundle.placement is not None:
            line = bundle.placement.lines.get("cel", 1)
        for c, msg in per_cluster.items():
            field_line = line if msg.startswith("cel:") else _depends_line(bundle, msg)
            problems.append(
                model.Problem(bundle.path, field_line, f"cluster {c}: {msg}", bundle=b, cluster=c)
            )
    problems.extend(_wave_problems(repo, result))
    problems.extend(render.check(repo, result, revision=revision, expanded=expanded))
    return sorted(set(problems))


def _wave_problems(repo: model.Repo, result: model.PlacementResult) -> list[model.Problem]:
    """Placed clusters no wave selects (one problem naming every one) and wave CEL errors."""
    problems: list[model.Problem] = []
    for b, membership in placement.waves(repo, result).items():
        bundle = repo.bundles[b]
        unselected = [c for c, msg in membership.errors.items() if msg.startswith("no wave ")]
        if unselected:
            problems.append(
                model.Problem(
                    bundle.path,
                    bundle.rollout.line,
                    f"spec.rollout: no wave selects placed cluster(s) {', '.join(unselected)} "
                    "(add a last wave without placement to take every remaining cluster)",
                    bundle=b,
                )
            )
        for c, msg in membership.errors.items():
            if c in unselected:
                continue
            wave = next((w for w in bundle.rollout.waves if msg.startswith(f"rollout wave {w.name}: ")), None)
            line = (
                wave.placement.lines.get("cel", wave.line) if wave and wave.placement else bundle.rollout.line
            )
            problems.append(model.Problem(bundle.path, line, f"cluster {c}: {msg}", bundle=b, cluster=c))
    return problems


def _depends_line(bundle: model.Bundle, message: str) -> int:
    """Line of the `dependsOn` entry `message` is about (see `_dependency_problem`), else of the field."""
    for dep in bundle.depends_on:
        if message.startswith(f"dependsOn: bundle {dep!r} "):
            return bundle.lines.get(f"dependsOn.{dep}", bundle.lines.get("dependsOn", 1))
    return bundle.lines.get("dependsOn", 1)
