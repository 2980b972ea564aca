"""The functions fleet adds to cel-python (`lowerAscii`, `upperAscii`, `split`, `semver` with
`isGreaterThan`/`isLessThan`/`compareTo`/`major`/`minor`/`patch`, RE2 `matches`) and the one environment.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping
from typing import Any

import celpy
import celpy.adapter
import celpy.celparser
import celpy.celtypes
import celpy.evaluation
import re2
import semver

# ----------------------------------------------------------------------------------------------------------
# Extra functions.


class SemverValue:
    """A semantic version inside CEL (the value `semver(s)` returns)."""

    __slots__ = ("version",)

    def __init__(self, version: semver.Version) -> None:
        self.version = version

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SemverValue) and self.version == other.version

    def __hash__(self) -> int:
        return hash(self.version)

    def __repr__(self) -> str:
        return f"semver({str(self.version)!r})"


def parse_semver(text: str) -> semver.Version:
    """A version from "1.30", "v1.30.2", "1.30.2-rc.1": leading v dropped, missing minor/patch are 0."""
    t = text.strip()
    if t[:1] in ("v", "V"):
        t = t[1:]
    return semver.Version.parse(t, optional_minor_and_patch=True)


def _err(message: str) -> celpy.evaluation.CELEvalError:
    return celpy.evaluation.CELEvalError(message, ValueError, ())


def _as_semver(value: Any, fn: str) -> SemverValue | celpy.evaluation.CELEvalError:
    if isinstance(value, SemverValue):
        return value
    if isinstance(value, str):
        try:
            return SemverValue(parse_semver(value))
        except ValueError:
            return _err(f"{fn}: argument is not a semantic version (expected [v]MAJOR[.MINOR[.PATCH]])")
    return _err(f"{fn}: expects a string or a semver, got {type(value).__name__}")


def _fn_semver(value: Any) -> Any:
    return _as_semver(value, "semver()")


def _compare(a: Any, b: Any, fn: str) -> int | celpy.evaluation.CELEvalError:
    if not isinstance(a, SemverValue):
        return _err(f"{fn}: receiver is not a semver (use semver(s).{fn.rstrip('()')}(...))")
    other = _as_semver(b, fn)
    if isinstance(other, celpy.evaluation.CELEvalError):
        return other
    return a.version.compare(other.version)


def _fn_greater(a: Any, b: Any) -> Any:
    c = _compare(a, b, "isGreaterThan()")
    return c if isinstance(c, celpy.evaluation.CELEvalError) else celpy.celtypes.BoolType(c > 0)


def _fn_less(a: Any, b: Any) -> Any:
    c = _compare(a, b, "isLessThan()")
    return c if isinstance(c, celpy.evaluation.CELEvalError) else celpy.celtypes.BoolType(c < 0)


def _fn_compare(a: Any, b: Any) -> Any:
    c = _compare(a, b, "compareTo()")
    return c if isinstance(c, celpy.evaluation.CELEvalError) else celpy.celtypes.IntType(c)


def _part(name: str) -> Any:
    def fn(a: Any) -> Any:
        if not isinstance(a, SemverValue):
            return _err(f"{name}(): receiver is not a semver")
        return celpy.celtypes.IntType(getattr(a.version, name))

    return fn


def _string_fn(name: str, op: Any) -> Any:
    def fn(s: Any, *args: Any) -> Any:
        if not isinstance(s, str):
            return _err(f"{name}(): receiver is not a string")
        return op(s, *args)

    return fn


def _split(s: str, sep: Any = None, limit: Any = None) -> Any:
    if not isinstance(sep, str):
        return _err("split(): separator must be a string")
    if limit is not None and not isinstance(limit, int):
        return _err("split(): limit must be an int")
    if sep == "":
        parts = list(s)
    elif limit is None or limit < 0:
        parts = s.split(sep)
    elif limit == 0:
        parts = []
    else:
        parts = s.split(sep, limit - 1)
    return celpy.celtypes.ListType([celpy.celtypes.StringType(p) for p in parts])


def _ascii_lower(s: str) -> Any:
    return celpy.celtypes.StringType("".join(c.lower() if c.isascii() else c for c in s))


def _ascii_upper(s: str) -> Any:
    return celpy.celtypes.StringType("".join(c.upper() if c.isascii() else c for c in s))


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # re2 would log the pattern (possibly a cluster's value) on stderr
_RE2_OPTIONS.max_mem = 8 << 20


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error:
        return None


def _fn_matches(text: Any, pattern: Any) -> Any:
    """`matches()` with RE2 (linear time), without logging or echoing the pattern."""
    if not isinstance(text, str) or not isinstance(pattern, str):
        return _err("matches(): expects a string and a pattern string")
    compiled = _regex(pattern)
    if compiled is None:
        return _err("matches(): invalid regular expression")
    return celpy.celtypes.BoolType(compiled.search(text) is not None)


FUNCTIONS: Mapping[str, Any] = {
    "matches": _fn_matches,
    "lowerAscii": _string_fn("lowerAscii", _ascii_lower),
    "upperAscii": _string_fn("upperAscii", _ascii_upper),
    "split": _string_fn("split", _split),
    "semver": _fn_semver,
    "isGreaterThan": _fn_greater,
    "isLessThan": _fn_less,
    "compareTo": _fn_compare,
    "major": _part("major"),
    "minor": _part("minor"),
    "patch": _part("patch"),
}

KNOWN_FUNCTIONS = frozenset(
    {k for k in celpy.evaluation.base_functions if k[:1].isalpha()} | set(FUNCTIONS) | {"has"}
)


# ----------------------------------------------------------------------------------------------------------
# The environment (created once: `celpy.Environment()` sets the process recursion limit).

_env_lock = threading.Lock()
_env: celpy.Environment | None = None


def environment() -> celpy.Environment:
    global _env
    with _env_lock:
        if _env is None:
            # cel-python logs activations and arguments (debug, and error on unexpected exceptions).
            celpy_log = logging.getLogger("celpy")
            celpy_log.setLevel(logging.CRITICAL + 1)
            celpy_log.propagate = False
            _env = celpy.Environment()
        return _env
