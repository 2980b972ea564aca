"""The selecting fields of a bundle: placement (clusters, clusterSelector, CEL), overrides' placement
and the rollout's waves, parsed and checked at their lines (docs/placement.md, docs/rollouts.md).

Does not: evaluate them against clusters (fleet.core.placement, fleet.core.rollout).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from fleet.core import durations, model
from fleet.core.repository import documents, rules


def rollout_of(st: documents.State, d: documents.Doc, spec: Mapping[str, Any]) -> model.RolloutSpec:
    """`spec.rollout` (docs/rollouts.md); the default strategy where a part is absent or broken (the bundle
    is broken then anyway, so nothing rolls out with a strategy nobody wrote)."""
    path: rules.Path_ = ("spec", "rollout")
    raw = d.mapping(spec["rollout"], path)
    if raw is None:
        return model.DEFAULT_ROLLOUT
    d.unknown_fields(raw, path, rules.ROLLOUT_FIELDS)
    deadline = model.DEFAULT_ROLLOUT.progress_deadline
    if raw.get("progressDeadline") is not None:
        got = _duration(d, raw["progressDeadline"], (*path, "progressDeadline"))
        if got is not None and got <= 0:
            d.error((*path, "progressDeadline"), "spec.rollout.progressDeadline must be more than 0")
        elif got is not None:
            deadline = got
    on_failure = model.OnFailure.HALT
    if raw.get("onFailure") is not None:
        value = raw["onFailure"]
        try:
            on_failure = model.OnFailure(value)
        except ValueError:
            d.error(
                (*path, "onFailure"),
                f"spec.rollout.onFailure must be halt or rollback, not {rules.quote(value)}",
            )
    waves: list[model.WaveSpec] = []
    listed = raw.get("waves")
    if listed is None:
        waves = list(model.DEFAULT_ROLLOUT.waves)
    elif isinstance(listed, list) and not listed:
        d.error((*path, "waves"), "spec.rollout.waves is empty: list at least one wave (or omit waves)")
    elif not isinstance(listed, list):
        d.error(
            (*path, "waves"),
            f"spec.rollout.waves must be a non-empty list of waves, not {rules.describe(listed)}",
        )
    else:
        seen: dict[str, int] = {}
        catch_all: str | None = None
        for i, item in enumerate(listed):
            wave = _wave(st, d, item, (*path, "waves", i))
            if wave is None:
                continue
            if wave.name in seen:
                d.error(
                    (*path, "waves", i, "name"),
                    f"spec.rollout.waves[{i}].name {rules.quote(wave.name)} is used by waves[{seen[wave.name]}] too",
                )
                continue
            if catch_all is not None:
                d.error(
                    (*path, "waves", i),
                    f"spec.rollout.waves[{i}] ({wave.name}) comes after wave {catch_all}, which has no placement "
                    "and takes every remaining cluster: it can never get one",
                )
            seen[wave.name] = i
            if wave.placement is None:
                catch_all = wave.name
            waves.append(wave)
    if not waves:
        return model.DEFAULT_ROLLOUT
    return model.RolloutSpec(
        waves=tuple(waves), progress_deadline=deadline, on_failure=on_failure, line=d.line(path)
    )


def _wave(st: documents.State, d: documents.Doc, raw: Any, path: rules.Path_) -> model.WaveSpec | None:
    where = rules.dotted(path)
    item = d.mapping(raw, path)
    if item is None:
        return None
    d.unknown_fields(item, path, rules.WAVE_FIELDS)
    name = item.get("name")
    why = rules.dns_label_problem(name) if "name" in item else "is missing"
    if why:
        d.error(
            (*path, "name") if "name" in item else path,
            f"{where}.name {rules.quote(name) + ' ' if 'name' in item else ''}{why}",
        )
        return None
    placement = None
    if "placement" in item:
        placement = placement_of(st, d, item["placement"], (*path, "placement"))
        if placement is None:
            return None
    concurrency = _count(d, item, path, "maxConcurrency", model.Count(25, percent=True), least=1)
    failures = _count(d, item, path, "maxFailures", model.Count(0), least=0)
    soak = 0.0
    if item.get("soak") is not None:
        soak = _duration(d, item["soak"], (*path, "soak")) or 0.0
    approval = model.Approval.NONE
    if item.get("approval") is not None:
        try:
            approval = model.Approval(item["approval"])
        except ValueError:
            d.error(
                (*path, "approval"),
                f"{where}.approval must be none, before or after, not {rules.quote(item['approval'])}",
            )
    if concurrency is None or failures is None:
        return None
    return model.WaveSpec(
        name=str(name),
        placement=placement,
        max_concurrency=concurrency,
        max_failures=failures,
        soak=soak,
        approval=approval,
        line=d.line(path),
    )


def _count(
    d: documents.Doc,
    item: Mapping[str, Any],
    path: rules.Path_,
    key: str,
    default: model.Count,
    *,
    least: int,
) -> model.Count | None:
    """A count of clusters (``2``) or a percentage of the wave (``"25%"``)."""
    if item.get(key) is None:
        return default
    value = item[key]
    where = rules.dotted((*path, key))
    if isinstance(value, int) and not isinstance(value, bool):
        if value < least:
            d.error((*path, key), f"{where} must be at least {least}, not {value}")
            return None
        return model.Count(value)
    if isinstance(value, str) and re.fullmatch(r"\d{1,3}%", value.strip()):
        pct = int(value.strip()[:-1])
        if pct > 100 or pct < least:
            d.error((*path, key), f"{where} must be between {least}% and 100%, not {rules.quote(value)}")
            return None
        return model.Count(pct, percent=True)
    d.error(
        (*path, key),
        f'{where} must be a number of clusters or a percentage such as "25%", not {rules.quote(value)}',
    )
    return None


def _duration(d: documents.Doc, value: Any, path: rules.Path_) -> float | None:
    try:
        return durations.parse(value)
    except ValueError as e:
        d.error(path, f"{rules.dotted(path)}: {e}")
        return None


def _selector(d: documents.Doc, raw: Any, path: rules.Path_) -> model.LabelSelector | None:
    sel = d.mapping(raw, path)
    if sel is None:
        return None
    d.unknown_fields(sel, path, rules.SELECTOR_FIELDS)
    ok = True
    match_labels: list[tuple[str, str]] = []
    ml = sel.get("matchLabels")
    if ml is not None:
        m = d.mapping(ml, (*path, "matchLabels"))
        if m is None:
            ok = False
        else:
            for key, value in m.items():
                sub = (*path, "matchLabels", str(key))
                why = rules.label_key_problem(key)
                if why:
                    d.error(sub, f"{rules.dotted((*path, 'matchLabels'))} key {rules.quote(key)} {why}")
                    ok = False
                    continue
                why = rules.label_value_problem(value)
                if why:
                    d.error(sub, f"{rules.dotted(sub)} value {rules.quote(value)} {why}")
                    ok = False
                    continue
                match_labels.append((str(key), str(value)))
    requirements: list[model.Requirement] = []
    me = sel.get("matchExpressions")
    if me is not None:
        if not isinstance(me, list):
            d.error(
                (*path, "matchExpressions"), f"{rules.dotted((*path, 'matchExpressions'))} must be a list"
            )
            ok = False
        else:
            for i, item in enumerate(me):
                req = _requirement(d, item, (*path, "matchExpressions", i))
                if req is None:
                    ok = False
                else:
                    requirements.append(req)
    if not ok:
        return None
    return model.LabelSelector(
        match_labels=tuple(sorted(match_labels)), match_expressions=tuple(requirements)
    )


def _requirement(d: documents.Doc, raw: Any, path: rules.Path_) -> model.Requirement | None:
    item = d.mapping(raw, path)
    if item is None:
        return None
    d.unknown_fields(item, path, rules.REQUIREMENT_FIELDS)
    where = rules.dotted(path)
    key = item.get("key")
    why = rules.label_key_problem(key) if "key" in item else "is missing"
    if why:
        d.error(
            (*path, "key") if "key" in item else path,
            f"{where}.key {rules.quote(key) + ' ' if 'key' in item else ''}{why}",
        )
        return None
    operators = [o.value for o in model.Operator]
    op_raw = item.get("operator")
    if op_raw not in operators:
        if "operator" not in item:
            d.error(path, f"{where}.operator is missing (expected one of {', '.join(operators)})")
        else:
            d.error(
                (*path, "operator"),
                f"{where}.operator {rules.quote(op_raw)} is not one of {', '.join(operators)}"
                + rules.suggest(str(op_raw), operators),
            )
        return None
    op = model.Operator(op_raw)
    values = item.get("values")
    if op in (model.Operator.IN, model.Operator.NOT_IN):
        if not isinstance(values, list) or not values:
            d.error(
                (*path, "values") if "values" in item else (*path, "operator"),
                f"{where}: operator {op.value} needs a non-empty list of values",
            )
            return None
        bad = False
        for j, v in enumerate(values):
            why = rules.label_value_problem(v)
            if why:
                d.error((*path, "values", j), f"{where}.values[{j}] {rules.quote(v)} {why}")
                bad = True
        if bad:
            return None
        return model.Requirement(key=str(key), operator=op, values=tuple(str(v) for v in values))
    if values not in (None, []):
        d.error((*path, "values"), f"{where}: operator {op.value} must not have values")
        return None
    return model.Requirement(key=str(key), operator=op)


def placement_of(
    st: documents.State, d: documents.Doc, raw: Any, path: rules.Path_
) -> model.Placement | None:
    where = rules.dotted(path)
    if raw is None:
        d.error(path, f"{where} is null (omit it to place nowhere, or give clusters, clusterSelector or cel)")
        return None
    pl = d.mapping(raw, path)
    if pl is None:
        return None
    if not pl:
        d.error(
            path, f"{where} is empty (omit it to place nowhere, or give clusters, clusterSelector or cel)"
        )
        return None
    d.unknown_fields(pl, path, rules.PLACEMENT_FIELDS)
    ok = True
    lines: dict[str, int] = {}
    for clause in rules.PLACEMENT_FIELDS:
        if clause in pl:
            lines[clause] = d.line((*path, clause))
            if pl[clause] is None:
                d.error((*path, clause), f"{where}.{clause} is null (remove it or give it a value)")
                ok = False
    clusters: tuple[str, ...] | None = None
    if pl.get("clusters") is not None:
        raw_clusters = pl["clusters"]
        if not isinstance(raw_clusters, list):
            d.error(
                (*path, "clusters"),
                f"{where}.clusters must be a list of cluster names, not {rules.describe(raw_clusters)}",
            )
            ok = False
        else:
            names: list[str] = []
            for i, c in enumerate(raw_clusters):
                if not isinstance(c, str):
                    d.error(
                        (*path, "clusters", i),
                        f"{where}.clusters[{i}] must be a string, not {rules.describe(c)}",
                    )
                    ok = False
                    continue
                names.append(c)
                st.placement_clusters.append((d, (*path, "clusters", i), c))
            clusters = tuple(names)
    selector = None
    if pl.get("clusterSelector") is not None:
        selector = _selector(d, pl["clusterSelector"], (*path, "clusterSelector"))
        ok = ok and selector is not None
    cel_src: str | None = None
    if pl.get("cel") is not None:
        raw_cel = pl["cel"]
        if not isinstance(raw_cel, str) or not raw_cel.strip():
            d.error((*path, "cel"), f"{where}.cel must be a non-empty string, not {rules.quote(raw_cel)}")
            ok = False
        else:
            cel_src = raw_cel
            if not _check_cel(d, raw_cel, (*path, "cel")):
                ok = False
    if not ok:
        return None
    return model.Placement(
        clusters=clusters, cluster_selector=selector, cel=cel_src, lines=MappingProxyType(lines)
    )


def _check_cel(d: documents.Doc, expr: str, path: rules.Path_) -> bool:
    from fleet.core import cel  # here: a revision without CEL never loads cel-python (docs/benchmarks.md)

    found = cel.check(expr)
    start = d.value_line(path)
    for line, column, message in found:
        d.error(
            path,
            f"{rules.dotted(path)}: invalid CEL at line {line}, column {column} of the expression: {message}",
            line=start + max(line, 1) - 1,
        )
    return not found
