"""Durations as people write them: ``1h``, ``5m``, ``90s``, ``1m30s``, ``200ms``, ``0.5s``, or bare seconds.

Owns: `parse` (text -> seconds) and `show` (seconds -> the shortest such text). Does not: know which
flag or field a duration came from (callers name it in their errors).
"""

from __future__ import annotations

import math
import re

_DURATION = re.compile(
    r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?!s))?(?:(?P<s>\d+(?:\.\d+)?)s)?"
    r"(?:(?P<ms>\d+(?:\.\d+)?)ms)?$"
)

EXAMPLES = "30s, 5m, 1m30s, 200ms"


def parse(text: str | int | float) -> float:
    """Seconds, finite and not negative; `ValueError` with a message saying what is wrong otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration (examples: {EXAMPLES})")
    if isinstance(text, int | float):
        value = float(text)
    else:
        raw = text.strip().lower()
        try:
            value = float(raw)
        except ValueError:
            m = _DURATION.match(raw)
            if not raw or m is None or not any(m.groups()):
                raise ValueError(f"{text!r} is not a duration (examples: {EXAMPLES})") from None
            parts = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
            value = parts["h"] * 3600 + parts["m"] * 60 + parts["s"] + parts["ms"] / 1000
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite duration")
    if value < 0:
        raise ValueError(f"{text!r} must not be negative")
    return value


def show(seconds: float) -> str:
    """``90`` -> ``1m30s``; ``0.2`` -> ``200ms``."""
    if seconds < 1 and seconds > 0:
        return f"{seconds * 1000:g}ms"
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
    return text or "0s"
