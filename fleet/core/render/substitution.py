"""``${cluster.*}`` variables: which a value uses, and substituting them (step 1 of a render)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fleet.core import errors, model, values
from fleet.core.render import common

_VAR_RE = re.compile(r"\$(\$?)\{cluster\.([^}]*)\}")
_UNTERMINATED_RE = re.compile(r"(?<!\$)\$\{cluster\.[^}]*$")
VAR_FORM = re.compile(r"^(name|(labels|annotations|facts)\..+)$")


def _fact_text(value: Any) -> str:
    return value if isinstance(value, str) else common.canonical_json(value)


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


def variables_used(value: Any) -> set[str]:
    """The ``${cluster.X}`` names used (escaped ones excluded)."""
    out: set[str] = set()
    for s in values.strings(value):
        if "${cluster." in s:
            out.update(m.group(2) for m in _VAR_RE.finditer(s) if not m.group(1))
    return out


def substitution_disabled(obj: Mapping[str, Any]) -> bool:
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
            text = variable(name, cluster) if VAR_FORM.match(name) else None
            if text is None:
                if not VAR_FORM.match(name):
                    raise common.VariableError(
                        f"{where}: unknown variable ${{cluster.{name}}} "
                        "(use cluster.name, cluster.labels.KEY, cluster.annotations.KEY or cluster.facts.KEY)",
                        name=name,
                    )
                raise common.VariableError(
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
