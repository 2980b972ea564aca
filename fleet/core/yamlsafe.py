"""The limited YAML/JSON loader fleet reads every repository file with, and the limits it enforces.

Owns: `Limits` (the size, count, depth and alias-expansion budgets of a revision, each named in the error
that enforces it), `load_yaml` / `load_json` (bytes -> documents, with the line each document starts on and,
when asked, the line of every field), and `LimitExceeded` / `YamlError`.
Does not: know what a Cluster or a Bundle is (that is `fleet.core.repository`), read files or git (that is
`fleet.clients.source`).

How an alias bomb is stopped before anything expands it: libyaml's C composer (``yaml.CSafeLoader``) builds
a node graph in which an alias is the *same* node object as its anchor, so "a few hundred bytes that expand
to 10^8 nodes" is a graph of a few dozen nodes. Before the Python constructor turns a document into dicts
and lists, `_inspect` walks that graph once (iteratively, no recursion): it counts the nodes every alias
reference would add if expanded (a memoised subtree size), refuses a document whose expansion passes
`Limits.max_alias_expansion`, refuses self-referencing anchors (a cycle in the graph), measures the nesting
depth against `Limits.max_depth` and rejects tags that are not plain JSON values (``!!binary``, ``!!set``,
custom tags). Only then is the document constructed. Memory stays in proportion to the file size.

Every file is read as Kubernetes reads it (`kubectl apply -f`: sigs.k8s.io/yaml, that is go-yaml v2's
YAML 1.1 resolver, turned into JSON, then decoded as an unstructured object), so what fleet applies is what
kubectl would apply for the same file (docs/repository.md, "How YAML is read", says it for users):

- plain scalars resolve by go-yaml v2's rules, not PyYAML's: ``y``/``n``/``yes``/``on``... are booleans,
  ``0o17``, ``0x1F``, ``0777``, ``1_000`` and ``08`` are numbers, ``1e3`` is a number, base-60 forms
  (``10:30``, ``190:20:30.15``) and timestamps (``2024-01-01``) stay strings (`_resolve_plain`);
- numbers end as the JSON kubectl sends: an integer in int64 range stays an `int`, anything else is a
  float64, and a float64 with an integral value below 1e21 is written without a fraction (``3.0`` is
  ``3``; `_json_number`); NaN and infinities are refused (JSON has none);
- mapping keys become strings as sigs.k8s.io/yaml writes them (``NO`` -> ``"false"``, ``9000`` ->
  ``"9000"``, a float key in float32 ``%g`` form); a null key or one above int64 is refused, as there;
- a key given twice in one mapping is refused, also after conversion (``1`` and ``"1"``, ``yes`` and
  ``true``), in YAML and in JSON: kubectl keeps the last one silently, the API server's strict field
  validation refuses it; fleet refuses it with its line;
- ``<<`` merge keys merge in document order as go-yaml v2 does; the one case where that order disagrees
  with the YAML merge rule (explicit keys win), a key written before a ``<<`` that brings the same key,
  is refused rather than read one way or the other;
- JSON manifests follow the same number rules, without NaN or Infinity, and without duplicate keys.

One known difference: a plain scalar with the non-specific tag ``!`` (``! 12``) is text for go-yaml but
reaches fleet as an untagged plain scalar (libyaml reports it so), hence the number 12.

Only plain JSON values come out: tags other than the JSON ones (``!!binary``, ``!!set``, ``!!timestamp``,
custom tags) are refused (`_inspect`, `_construct_document`).

Error messages carry the YAML problem and its line, never a value of the file (a Secret manifest's value
must not reach an error message); a duplicate key is named (keys are field names, not values).
"""

from __future__ import annotations

import decimal
import json
import json.decoder
import json.scanner
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
import yaml.nodes

from fleet.core import errors

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Budgets for what one revision may hold. Each is named (by its field name) in the error it raises.

    - `max_file_bytes`: size of one file (cluster file, bundle.yaml or manifest).
    - `max_documents_per_file`: YAML documents (``---``-separated) in one file.
    - `max_files`: files read below ``clusters/`` and ``bundles/`` together.
    - `max_total_bytes`: their total size.
    - `max_alias_expansion`: nodes that YAML aliases would add to one file if expanded.
    - `max_depth`: nesting of mappings and sequences in one document.
    """

    max_file_bytes: int = 16 * MiB
    max_documents_per_file: int = 10_000
    max_files: int = 20_000
    max_total_bytes: int = 256 * MiB
    max_alias_expansion: int = 100_000
    max_depth: int = 100


DEFAULT_LIMITS = Limits()


class YamlError(errors.ValidationError):
    """A file is not valid YAML/JSON, or breaks a rule of the loader (tag, alias cycle)."""


class LimitExceeded(errors.ValidationError):
    """A file or a revision is over one of the `Limits`; the message names the limit."""


# ----------------------------------------------------------------------------------------------------------
# Loader: libyaml's C parser and composer; scalars resolved by go-yaml v2's rules in `_construct_document`.

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_VALUE = "tag:yaml.org,2002:value"
# The tag `_Loader.resolve` gives an untagged plain scalar: resolved later, by `_resolve_plain`. It holds
# spaces, so no document can carry it (a YAML tag is a URI).
_PLAIN = "fleet plain scalar"


class _Loader(yaml.CSafeLoader):
    """libyaml's parser and composer. Plain scalars keep the `_PLAIN` tag; quoted ones are strings."""

    def resolve(self, kind: type[yaml.nodes.Node], value: Any, implicit: Any) -> str:
        if kind is yaml.nodes.ScalarNode:
            return _PLAIN if implicit[0] else _STR
        return _SEQ if kind is yaml.nodes.SequenceNode else _MAP


_ALLOWED_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL, _MAP, _SEQ, _MERGE, _VALUE, _PLAIN})


class _Missing:
    pass


_MISSING = _Missing()
_INF = math.inf
# go-yaml v2's table of plain scalars that resolve by name (its ``resolveMap``). ``<<`` is in its table too,
# but can only act as a merge key: as a value it is text.
_NAMED: dict[str, Any] = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), _INF),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -_INF),
}
_NUMBER_START = frozenset("+-0123456789")
# go-yaml v2's ``yamlStyleFloat``, tried on the text without underscores.
_GO_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
# A text starting with "." is a float when Go's ParseFloat takes it as it is: underscores only between digits.
_DOT_FLOAT = re.compile(r"\.[0-9](?:_?[0-9])*(?:[eE][-+]?[0-9](?:_?[0-9])*)?")
_DIGITS = {
    2: re.compile("[01]*"),
    8: re.compile("[0-7]*"),
    10: re.compile("[0-9]*"),
    16: re.compile("[0-9a-fA-F]*"),
}
_PREFIX_BASE = {"b": 2, "o": 8, "x": 16}
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1


def _go_uint(text: str, base: int = 0) -> int | None:
    """Go's ``strconv.ParseUint(text, base, 64)`` (base 0: ``0b``/``0o``/``0x`` prefixes, a leading 0 is octal)."""
    if not text:
        return None
    if base == 0:
        base = 10
        if text[0] == "0":
            prefix = _PREFIX_BASE.get(text[1:2].lower()) if len(text) >= 3 else None
            base, text = (prefix, text[2:]) if prefix else (8, text[1:])
    if (base == 10 and len(text) > 20) or not _DIGITS[base].fullmatch(text):
        return None
    n = int(text, base) if text else 0
    return n if n <= _UINT64_MAX else None


def _go_int(text: str, base: int = 0) -> int | None:
    """Go's ``strconv.ParseInt(text, base, 64)``: one optional sign, then `_go_uint`, within int64."""
    if not text:
        return None
    negative = text[0] == "-"
    n = _go_uint(text[1:] if text[0] in "+-" else text, base)
    if n is None:
        return None
    n = -n if negative else n
    return n if _INT64_MIN <= n <= _INT64_MAX else None


def _resolve_plain(text: str) -> Any:
    """A plain (unquoted, untagged) scalar as go-yaml v2 resolves it for an ``interface{}``.

    Returns str, bool, None, an int (int64, or uint64 when above int64) or a float (NaN and infinities
    included). No base-60 numbers (``10:30`` is text) and no timestamps (text, as go-yaml v2 gives them to
    an ``interface{}``).
    """
    named = _NAMED.get(text, _MISSING)
    if named is not _MISSING:
        return named
    first = text[0]
    if first == ".":
        if _DOT_FLOAT.fullmatch(text):
            f = float(text.replace("_", ""))
            if not math.isinf(f):  # Go's ParseFloat: out of range is an error, so text
                return f
        return text
    if first not in _NUMBER_START:
        return text
    plain = text.replace("_", "")
    n = _go_int(plain)
    if n is None:
        n = _go_uint(plain)
    if n is not None:
        return n
    if _GO_FLOAT.fullmatch(plain):
        f = float(plain)
        if not math.isinf(f):
            return f
    if plain.startswith("0b"):  # go-yaml v2 retries these with an explicit base (a sign may follow)
        n = _go_int(plain[2:], 2)
        if n is None:
            n = _go_uint(plain[2:], 2)
        if n is not None:
            return n
    elif plain.startswith("-0b"):
        n = _go_int("-" + plain[3:], 2)
        if n is not None:
            return n
    return text


_TAG_KIND = {_INT: "an integer", _FLOAT: "a number", _BOOL: "a boolean", _NULL: "null"}


def _resolve_tagged(node: yaml.nodes.ScalarNode, *, path: str) -> Any:
    """A scalar with an explicit JSON tag (``!!int "12"``), resolved and checked as go-yaml v2 does."""
    tag = node.tag
    if tag in (_STR, _MERGE, _VALUE):
        return node.value
    if tag not in _TAG_KIND:
        raise _bad_tag(node, path=path)
    raw = _resolve_plain(node.value)
    kind = type(raw)
    if tag == _INT and kind is int:
        return raw
    if tag == _FLOAT and ((kind is int and raw <= _INT64_MAX) or kind is float):
        return float(raw)
    if (tag == _BOOL and kind is bool) or (tag == _NULL and raw is None):
        return raw
    raise YamlError(
        f"invalid YAML: a value tagged !!{tag.rsplit(':', 1)[1]} is not {_TAG_KIND[tag]}",
        path=path,
        line=node.start_mark.line + 1,
    )


def _json_number(value: int | float) -> int | float:
    """A resolved number as kubectl sends it: int64 stays; anything else is a float64, which Go writes
    without a fraction when it is integral and below 1e21 (then it reads back as an integer).

    Raises ValueError for NaN and infinities (JSON has none)."""
    if type(value) is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        value = float(value)
    if value != value or value in (_INF, -_INF):
        raise ValueError("not a JSON number")
    if float(value).is_integer() and -1e21 < value < 1e21:
        # Go writes the shortest decimal digits that read back as this float64 (as Python's repr).
        return int(value) if -(2**53) <= value <= 2**53 else int(decimal.Decimal(repr(value)))
    return value


def _float32_g(value: float) -> str:
    """Go's ``strconv.FormatFloat(value, 'g', -1, 32)`` as sigs.k8s.io/yaml writes a float key."""
    if value != value:
        return ".nan"
    try:
        (single,) = struct.unpack("<f", struct.pack("<f", value))
    except OverflowError:
        single = math.copysign(_INF, value)
    if math.isinf(single):
        return ".inf" if single > 0 else "-.inf"
    if single == 0:
        return "-0" if math.copysign(1.0, single) < 0 else "0"
    for precision in range(9):  # the shortest digits that read back as the same float32
        text = f"{single:.{precision}e}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == single:
            break
    mantissa, _, exp_text = text.partition("e")
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    exp = int(exp_text)
    if exp < -4 or exp >= 6:  # Go's %g switches to an exponent there when printing the shortest form
        frac = "." + digits[1:] if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{frac}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    whole = digits[: exp + 1].ljust(exp + 1, "0")
    rest = digits[exp + 1 :]
    return f"{sign}{whole}.{rest}" if rest else f"{sign}{whole}"


def _key_text(raw: Any, node: yaml.nodes.Node, *, path: str) -> str:
    """A resolved mapping key as sigs.k8s.io/yaml writes it in JSON (``NO`` -> ``"false"``, ``9000`` ->
    ``"9000"``), or YamlError where it refuses the key (null, above int64)."""
    kind = type(raw)
    if kind is str:
        return str(raw)
    if kind is bool:
        return "true" if raw else "false"
    if kind is int and raw <= _INT64_MAX:
        return str(raw)
    if kind is float:
        return _float32_g(raw)
    what = "null (~, null or nothing)" if raw is None else "an integer above 2^63-1"
    raise YamlError(
        f"invalid YAML: a mapping key that is {what} cannot be a JSON key (Kubernetes refuses it; quote it)",
        path=path,
        line=node.start_mark.line + 1,
    )


def _scalar_key(node: yaml.nodes.Node, *, path: str) -> str:
    """The JSON key of a mapping key node; YamlError for a list or mapping used as a key."""
    if not isinstance(node, yaml.nodes.ScalarNode):
        raise YamlError(
            "invalid YAML: a mapping key must be a scalar, not a list or mapping",
            path=path,
            line=node.start_mark.line + 1,
        )
    tag = node.tag
    if tag == _STR:
        return str(node.value)
    raw = _resolve_plain(node.value) if tag == _PLAIN else _resolve_tagged(node, path=path)
    return _key_text(raw, node, path=path)


@dataclass(frozen=True)
class Document:
    """One document of a file.

    `index` is its 0-based position among the file's documents (empty ones included), `line` the 1-based
    line where its content starts. With ``lines=True``, `lines` maps a field path (a tuple of keys and list
    indexes, ``("spec", "placement", "cel")``) to the line of its key (of the item, for list entries), and
    `value_lines` maps it to the line where the value's text starts (a block scalar's ``|`` line plus one).
    """

    index: int
    line: int
    data: Any
    lines: Mapping[tuple[str | int, ...], int] = field(default_factory=dict)
    value_lines: Mapping[tuple[str | int, ...], int] = field(default_factory=dict)


def _yaml_message(e: yaml.YAMLError) -> tuple[str, int]:
    """The problem and line of a PyYAML error, without the snippet of the file it would print."""
    if isinstance(e, yaml.MarkedYAMLError):
        parts = [p for p in (e.context, e.problem) if p]
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        return "invalid YAML: " + (", ".join(parts) if parts else "cannot parse"), line
    if isinstance(e, yaml.reader.ReaderError):
        return f"invalid YAML: {e.reason} at byte {e.position}", 1
    return "invalid YAML", 1


def load_yaml(
    data: bytes, *, path: str, limits: Limits = DEFAULT_LIMITS, lines: bool = False
) -> list[Document]:
    """Parse every document of a YAML file, enforcing `limits`. Raises `YamlError` or `LimitExceeded`."""
    if len(data) > limits.max_file_bytes:
        raise LimitExceeded(
            f"file is {len(data)} bytes, over the limit max_file_bytes={limits.max_file_bytes}", path=path
        )
    loader = _Loader(data)
    docs: list[Document] = []
    budget = [limits.max_alias_expansion]
    has_anchors = b"&" in data
    try:
        index = 0
        while loader.check_node():
            if index >= limits.max_documents_per_file:
                raise LimitExceeded(
                    f"more than {limits.max_documents_per_file} documents, over the limit "
                    f"max_documents_per_file={limits.max_documents_per_file}",
                    path=path,
                )
            node = loader.get_node()
            if node is None:
                break
            start = node.start_mark.line + 1
            if has_anchors:  # without an anchor there is no alias; build() checks depth and tags
                _inspect(node, path=path, limits=limits, budget=budget, aliases=True)
            key_lines: dict[tuple[str | int, ...], int] = {}
            value_lines: dict[tuple[str | int, ...], int] = {}
            if lines:
                _collect_lines(node, key_lines, value_lines, path=path)
            obj = _construct_document(node, path=path, shared=has_anchors, limits=limits)
            docs.append(Document(index=index, line=start, data=obj, lines=key_lines, value_lines=value_lines))
            index += 1
    except yaml.YAMLError as e:
        message, line = _yaml_message(e)
        if "maximum nesting depth" in message:  # libyaml's own cap (1000 levels), above any sane max_depth
            raise LimitExceeded(
                f"nesting deeper than the limit max_depth={limits.max_depth}", path=path, line=line
            ) from None
        raise YamlError(message, path=path, line=line) from None
    finally:
        loader.dispose()
    return docs


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
        raise _JsonProblem(f"invalid JSON: duplicate key {_shown_key(key)}")
    return obj


def _json_int(text: str) -> int | float:
    if len(text) <= 20:
        n = int(text)
        if _INT64_MIN <= n <= _INT64_MAX:
            return n
    return _json_float(text)


def _json_float(text: str) -> int | float:
    try:
        return _json_number(float(text))
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


def load_json(data: bytes, *, path: str, limits: Limits = DEFAULT_LIMITS) -> list[Document]:
    """Parse a JSON manifest file (one value, one document), enforcing size and depth limits, as Kubernetes
    reads it: numbers as kubectl sends them (`_json_number`), no NaN or Infinity, no duplicate key."""
    if len(data) > limits.max_file_bytes:
        raise LimitExceeded(
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
        raise LimitExceeded(
            f"nesting deeper than the limit max_depth={limits.max_depth}", path=path
        ) from None
    except UnicodeDecodeError as e:
        raise YamlError(f"invalid JSON: not UTF-8 text at byte {e.start}", path=path) from None
    except json.JSONDecodeError as e:
        raise YamlError(f"invalid JSON: {e.msg}", path=path, line=e.lineno) from None
    except _JsonProblem as e:
        line = _json_locate(data.decode(json.detect_encoding(data), errors="replace"))
        raise YamlError(e.message, path=path, line=line) from None
    _json_depth(obj, path=path, limits=limits)
    return [Document(index=0, line=1, data=obj)]


def _json_depth(obj: Any, *, path: str, limits: Limits) -> None:
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
            raise LimitExceeded(f"nesting deeper than the limit max_depth={limits.max_depth}", path=path)
        stack.extend((c, depth + 1) for c in children)


def _bad_tag(node: yaml.nodes.Node, *, path: str) -> YamlError:
    return YamlError(
        f"unsupported YAML tag {node.tag!r} (only strings, numbers, booleans, null, maps and lists)",
        path=path,
        line=node.start_mark.line + 1,
    )


def _inspect(root: yaml.nodes.Node, *, path: str, limits: Limits, budget: list[int], aliases: bool) -> None:
    """Check one composed document before it is constructed: alias expansion, cycles, depth, tags.

    `budget` holds what is left of the file's alias-expansion budget (shared by its documents). Without
    an ``&`` in the file there can be no anchor, hence no alias: sizes are not tracked then.
    """
    max_depth = limits.max_depth
    # Stack entries: (node, depth, exiting). Post-order so that a node's expanded size is known on exit.
    stack: list[tuple[yaml.nodes.Node, int, bool]] = [(root, 1, False)]
    size: dict[int, int] = {}  # expanded node count of a finished node
    height: dict[int, int] = {}  # nesting levels of collections below and including a finished node
    open_nodes: set[int] = set()
    while stack:
        node, depth, exiting = stack.pop()
        ident = id(node)
        if exiting:
            open_nodes.discard(ident)
            if aliases:
                total, tallest = 1, 0
                children = (
                    [n for kv in node.value for n in kv]
                    if isinstance(node, yaml.nodes.MappingNode)
                    else node.value
                )
                for c in children:
                    total += size[id(c)]
                    tallest = max(tallest, height[id(c)])
                size[ident] = total
                height[ident] = tallest + 1
            continue
        if aliases:
            done = size.get(ident)
            if done is not None:
                budget[0] -= done
                if budget[0] < 0:
                    raise LimitExceeded(
                        f"YAML aliases expand to more than {limits.max_alias_expansion} nodes, over the "
                        f"limit max_alias_expansion={limits.max_alias_expansion}",
                        path=path,
                        line=node.start_mark.line + 1,
                    )
                if depth + height[ident] - 1 > max_depth:  # an alias nests its anchor deeper
                    raise LimitExceeded(
                        f"nesting deeper than the limit max_depth={max_depth}",
                        path=path,
                        line=node.start_mark.line + 1,
                    )
                continue
            if ident in open_nodes:
                raise YamlError(
                    "invalid YAML: an alias refers to its own anchor (recursive structure)",
                    path=path,
                    line=node.start_mark.line + 1,
                )
        if node.tag not in _ALLOWED_TAGS:
            raise _bad_tag(node, path=path)
        if isinstance(node, yaml.nodes.ScalarNode):
            if aliases:
                size[ident] = 1
                height[ident] = 0
            continue
        if depth > max_depth:
            raise LimitExceeded(
                f"nesting deeper than the limit max_depth={max_depth}",
                path=path,
                line=node.start_mark.line + 1,
            )
        if aliases:
            open_nodes.add(ident)
            stack.append((node, depth, True))
        if isinstance(node, yaml.nodes.MappingNode):
            for k, v in node.value:
                stack.append((k, depth + 1, False))
                stack.append((v, depth + 1, False))
        else:
            for c in node.value:
                stack.append((c, depth + 1, False))


def _shown_key(key: str) -> str:
    text = json.dumps(key, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + '..."'


def _is_merge_key(node: yaml.nodes.Node) -> bool:
    """``<<`` as a plain key (or tagged ``!!merge``), as go-yaml v2 recognises a merge key."""
    return node.value == "<<" and isinstance(node, yaml.nodes.ScalarNode) and node.tag in (_PLAIN, _MERGE)


def _construct_document(root: yaml.nodes.Node, *, path: str, shared: bool, limits: Limits) -> Any:
    """Build plain JSON values from a composed node graph, reading scalars, keys, duplicates and merges
    as Kubernetes does (see the module docstring).

    It checks depth and tags itself, so a file without anchors needs no `_inspect` pass; recursion stops at
    `Limits.max_depth`. A file with anchors has been through `_inspect` (alias budget, cycles) first; its
    aliased nodes (`shared`) become shared values, as in PyYAML.
    """
    memo: dict[int, Any] | None = {} if shared else None
    max_depth = limits.max_depth
    scalar_node = yaml.nodes.ScalarNode
    sequence_node = yaml.nodes.SequenceNode
    mapping_node = yaml.nodes.MappingNode

    def scalar(node: yaml.nodes.ScalarNode) -> Any:
        tag = node.tag
        if tag == _PLAIN:
            raw = _resolve_plain(node.value)
        elif tag == _STR:
            return node.value
        else:
            raw = _resolve_tagged(node, path=path)
        kind = type(raw)
        if kind is str or kind is bool or raw is None:
            return raw
        try:
            return _json_number(raw)
        except ValueError:
            raise YamlError(
                "invalid YAML: .nan and .inf are not JSON numbers (Kubernetes refuses them; quote them for "
                "text)",
                path=path,
                line=node.start_mark.line + 1,
            ) from None

    def duplicate(node: yaml.nodes.Node, key_node: yaml.nodes.Node, key: str) -> YamlError:
        first = next(k for k, _ in node.value if not _is_merge_key(k) and _scalar_key(k, path=path) == key)
        first_line = first.start_mark.line + 1
        if first.value == key_node.value:
            why = f"duplicate key {_shown_key(key)} (first at line {first_line})"
        else:
            why = (
                f"duplicate key {_shown_key(key)}: {_shown_key(str(first.value))} at line {first_line} and "
                f"{_shown_key(str(key_node.value))} "
                "here are the same key as Kubernetes reads them"
            )
        return YamlError("invalid YAML: " + why, path=path, line=key_node.start_mark.line + 1)

    def merge(
        value: dict[str, Any], merged: set[str], key_node: yaml.nodes.Node, node: yaml.nodes.Node, depth: int
    ) -> None:
        """Apply one ``<<`` in go-yaml v2's order: its mappings' keys overwrite what came before, the first
        mapping of a list winning; a key set explicitly before the ``<<`` is refused (see the docstring)."""
        line = key_node.start_mark.line + 1
        if isinstance(node, mapping_node):
            sources = [node]
        elif isinstance(node, sequence_node) and all(isinstance(c, mapping_node) for c in node.value):
            sources = node.value[::-1]
        else:
            raise YamlError(
                "invalid YAML: a << merge needs a mapping or a list of mappings", path=path, line=line
            )
        for source in sources:
            for key, item in build(source, depth).items():
                if key in value and key not in merged:
                    raise YamlError(
                        f"invalid YAML: key {_shown_key(key)} is set before this << merge, which sets it "
                        "again: Kubernetes keeps the merged value, the YAML merge rule the explicit one "
                        "(write << first, or drop one of them)",
                        path=path,
                        line=line,
                    )
                value[key] = item
                merged.add(key)

    def build(node: yaml.nodes.Node, depth: int) -> Any:
        if isinstance(node, scalar_node):
            return scalar(node)
        if depth > max_depth:
            raise LimitExceeded(
                f"nesting deeper than the limit max_depth={max_depth}",
                path=path,
                line=node.start_mark.line + 1,
            )
        if node.tag not in _ALLOWED_TAGS:
            raise _bad_tag(node, path=path)
        if memo is not None:
            ident = id(node)
            if ident in memo:
                return memo[ident]
        value: Any
        if isinstance(node, sequence_node):
            value = [build(c, depth + 1) for c in node.value]
        else:
            value = {}
            merged: set[str] | None = None  # keys a << brought, not set explicitly since
            merge_node: yaml.nodes.Node | None = None
            for k, v in node.value:
                if _is_merge_key(k):
                    if merge_node is not None:
                        raise YamlError(
                            f'invalid YAML: duplicate key "<<" (first at line {merge_node.start_mark.line + 1}; '
                            "merge several mappings with << : [*a, *b])",
                            path=path,
                            line=k.start_mark.line + 1,
                        )
                    merge_node = k
                    merged = set()
                    merge(value, merged, k, v, depth + 1)
                    continue
                key = _scalar_key(k, path=path)
                if key in value:
                    if merged is None or key not in merged:
                        raise duplicate(node, k, key)
                    merged.discard(key)
                value[key] = build(v, depth + 1)
        if memo is not None:
            memo[id(node)] = value
        return value

    return build(root, 1)


def _collect_lines(
    root: yaml.nodes.Node,
    key_lines: dict[tuple[str | int, ...], int],
    value_lines: dict[tuple[str | int, ...], int],
    *,
    path: str,
) -> None:
    """Record the line of every field of a small document (cluster files, bundle.yaml)."""
    stack: list[tuple[yaml.nodes.Node, tuple[str | int, ...]]] = [(root, ())]
    seen: set[int] = set()
    while stack:
        node, prefix = stack.pop()
        if id(node) in seen:  # an alias: its lines are those of its anchor
            continue
        seen.add(id(node))
        if isinstance(node, yaml.nodes.MappingNode):
            for k, v in node.value:
                if not isinstance(k, yaml.nodes.ScalarNode):
                    continue
                sub = (*prefix, _scalar_key(k, path=path))
                key_lines.setdefault(sub, k.start_mark.line + 1)
                value_lines.setdefault(sub, _value_line(v))
                stack.append((v, sub))
        elif isinstance(node, yaml.nodes.SequenceNode):
            for i, c in enumerate(node.value):
                sub = (*prefix, i)
                key_lines.setdefault(sub, c.start_mark.line + 1)
                value_lines.setdefault(sub, _value_line(c))
                stack.append((c, sub))


def _value_line(node: yaml.nodes.Node) -> int:
    line = int(node.start_mark.line) + 1
    if isinstance(node, yaml.nodes.ScalarNode) and node.style in ("|", ">"):
        line += 1
    return line
