"""Secrets as the API server holds them: the one rule for Secret ``stringData``.

Owns: `fold_string_data`: a v1 Secret's ``stringData`` folded into ``data`` (base64 of each value, a key in
both taking the ``stringData`` value), as the API server does on every write; what drift detection
(`fleet.core.drift.shape`) and the planner (`fleet.core.plan`) compare a desired Secret by.
Does not: redact values for output (the commands do), or read Secrets.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any


def fold_string_data(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """`obj` as the API server would store it: for a v1 Secret with ``stringData``, a copy with it folded
    into ``data``; anything else is returned as it is (not copied)."""
    if obj.get("kind") != "Secret" or obj.get("apiVersion") != "v1" or not obj.get("stringData"):
        return obj
    out = dict(obj)
    data = dict(out.get("data") or {})
    for k, v in (out.get("stringData") or {}).items():
        data[k] = base64.b64encode(str(v).encode()).decode()
    out["data"] = data
    out.pop("stringData")
    return out
