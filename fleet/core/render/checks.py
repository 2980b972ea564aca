"""Render-level problems for `fleet validate`: `check` (an override that matches no object, a render
error) at the line of the field at fault.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fleet.core import model
from fleet.core.render import common, fleetwide, substitution

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
    scoped = common.cluster_scoped_kinds(repo.bundles.values())
    for b in sorted(repo.bundles):
        bundle = repo.bundles[b]
        for m in bundle.manifests:
            for v in sorted(substitution.variables_used(m.obj)):
                if not substitution.VAR_FORM.match(v):
                    problems.append(
                        model.Problem(
                            m.path,
                            m.variable_lines.get(v, m.line),
                            f"{common.describe(m.obj)}: unknown variable ${{cluster.{v}}}",
                            bundle=b,
                        )
                    )
        if bundle.sourced:  # its objects are known per cluster only: render_pairs checks the targets
            continue
        namespace = bundle.namespace or common.DEFAULT_NAMESPACE
        plain = [
            common.default_namespace(copy.deepcopy(dict(m.obj)), namespace=namespace, scoped=scoped)
            for m in bundle.manifests
            if isinstance(m.obj, Mapping)
        ]
        for index, override in enumerate(bundle.overrides):
            for p_index, patch in enumerate(override.patches):
                if not any(common.target_matches(_loose(patch.target, o), o) for o in plain):
                    problems.append(
                        model.Problem(
                            bundle.path,
                            patch.line,
                            f"override {index + 1} patch {p_index + 1}: target {common.describe_target(patch.target)} "
                            "matches no object of the bundle",
                            bundle=b,
                        )
                    )
    static = {(p.bundle, p.path, p.line) for p in problems}
    _desired, failed = fleetwide.render_pairs(repo, placed, revision=revision, expanded=expanded)
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
