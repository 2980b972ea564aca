"""`load_json`: JSON manifests by the same number rules as YAML, without NaN or Infinity and without
duplicate keys, each error at its line.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
from collections.abc import Callable
from typing import Any

from fleet.core.yamlsafe import budgets, scalars, yamlfiles


class _JsonProblem(Exception):
    """Raised from inside `json.loads`; `_json_locate` finds its line afterwards."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _JsonProblem(f"invalid JSON: duplicate key {yamlfiles.shown_key(key)}")
    return obj


def _json_int(text: str) -> int | float:
    if len(text) <= 20:
        n = int(text)
        if scalars.INT64_MIN <= n <= scalars.INT64_MAX:
            return n
    return _json_float(text)


def _json_float(text: str) -> int | float:
    try:
        return scalars.json_number(float(text))
    except ValueError:
        raise _JsonProblem("invalid JSON: a number out of the range of a 64-bit float") from None


def _json_constant(text: str) -> Any:
    raise _JsonProblem(f"invalid JSON: {text} is not a JSON value (Kubernetes refuses it)")


class _PyJson:
    """The pure-Python parts of the standard json module (stable since Python 2.7, not in its typed API):
    its object and array parsers and its scanner, which take a hook where each value starts."""

    JSONObject: Any = getattr(json.decoder, "JSONObject")  # noqa: B009
    JSONArray: Any = getattr(json.decoder, "JSONArray")  # noqa: B009
    py_make_scanner: Any = getattr(json.scanner, "py_make_scanner")  # noqa: B009


_PY_JSON = _PyJson


class _JsonLine(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _json_locate(text: str) -> int:
    """The line of the first `_JsonProblem` in `text`: parsed again with json's pure-Python scanner, which
    tells where each value starts (an error path only). A duplicate key is placed on its value's line."""
    starts: list[int] = []  # where every value scanned so far starts: the last one is the one in error

    def line_at(index: int) -> int:
        return text.count("\n", 0, index) + 1

    def parse_object(
        s_and_end: tuple[str, int],
        strict: bool,
        scan_once: Callable[[str, int], tuple[Any, int]],
        object_hook: Any,
        object_pairs_hook: Any,
        memo: Any = None,
    ) -> tuple[Any, int]:
        mine: list[int] = []

        def tracked(s: str, idx: int) -> tuple[Any, int]:
            starts.append(idx)
            mine.append(idx)
            return scan_once(s, idx)

        pairs, end = _PY_JSON.JSONObject(s_and_end, strict, tracked, None, list, memo)
        seen: set[str] = set()
        for (key, _), at in zip(pairs, mine, strict=True):
            if key in seen:
                raise _JsonLine(line_at(at))
            seen.add(key)
        return dict(pairs), end

    def parse_array(s_and_end: tuple[str, int], scan_once: Callable[[str, int], tuple[Any, int]]) -> Any:
        def tracked(s: str, idx: int) -> tuple[Any, int]:
            starts.append(idx)
            return scan_once(s, idx)

        return _PY_JSON.JSONArray(s_and_end, tracked)

    decoder: Any = json.JSONDecoder(
        parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant
    )
    decoder.parse_object = parse_object
    decoder.parse_array = parse_array
    decoder.scan_once = _PY_JSON.py_make_scanner(decoder)
    try:
        decoder.decode(text)
    except _JsonLine as e:
        return e.line
    except _JsonProblem:
        return line_at(starts[-1]) if starts else 1
    except (ValueError, RecursionError):
        pass
    return 1


def load_json(
    data: bytes, *, path: str, limits: budgets.Limits = budgets.DEFAULT_LIMITS
) -> list[yamlfiles.Document]:
    """Parse a JSON manifest file (one value, one document), enforcing size and depth limits, as Kubernetes
    reads it: numbers as kubectl sends them (`_json_number`), no NaN or Infinity, no duplicate key."""
    if len(data) > limits.max_file_bytes:
        raise budgets.LimitExceeded(
            f"file is {len(data)} bytes, over the limit max_file_bytes={limits.max_file_bytes}", path=path
        )
    try:
        obj = json.loads(
            data,
            object_pairs_hook=_json_pairs,
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except RecursionError:
        raise budgets.LimitExceeded(
            f"nesting deeper than the limit max_depth={limits.max_depth}", path=path
        ) from None
    except UnicodeDecodeError as e:
        raise budgets.YamlError(f"invalid JSON: not UTF-8 text at byte {e.start}", path=path) from None
    except json.JSONDecodeError as e:
        raise budgets.YamlError(f"invalid JSON: {e.msg}", path=path, line=e.lineno) from None
    except _JsonProblem as e:
        line = _json_locate(data.decode(json.detect_encoding(data), errors="replace"))
        raise budgets.YamlError(e.message, path=path, line=line) from None
    _json_depth(obj, path=path, limits=limits)
    return [yamlfiles.Document(index=0, line=1, data=obj)]


def _json_depth(obj: Any, *, path: str, limits: budgets.Limits) -> None:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limits.max_depth:
            raise budgets.LimitExceeded(
                f"nesting deeper than the limit max_depth={limits.max_depth}", path=path
            )
        stack.extend((c, depth + 1) for c in children)
