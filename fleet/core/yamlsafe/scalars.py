"""Scalars and keys resolved by go-yaml v2's YAML 1.1 rules and turned into the JSON kubectl sends.

Owns: plain scalars (`resolve_plain`: ``yes``/``on`` booleans, ``0o17``/``0x1F``/``0777``/``1_000``
numbers, base-60 forms and timestamps left as strings), explicit tags, numbers as JSON numbers (int64 or
float64, integral floats below 1e21 without a fraction), and mapping keys as strings.
"""

from __future__ import annotations

import decimal
import math
import re
import struct
from typing import Any

import yaml
import yaml.nodes

from fleet.core.yamlsafe import budgets

# ----------------------------------------------------------------------------------------------------------
# Loader: libyaml's C parser and composer; scalars resolved by go-yaml v2's rules in `_construct_document`.

STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
MERGE = "tag:yaml.org,2002:merge"
_VALUE = "tag:yaml.org,2002:value"
# The tag `_Loader.resolve` gives an untagged plain scalar: resolved later, by `_resolve_plain`. It holds
# spaces, so no document can carry it (a YAML tag is a URI).
PLAIN = "fleet plain scalar"


class Loader(yaml.CSafeLoader):
    """libyaml's parser and composer. Plain scalars keep the `_PLAIN` tag; quoted ones are strings."""

    def resolve(self, kind: type[yaml.nodes.Node], value: Any, implicit: Any) -> str:
        if kind is yaml.nodes.ScalarNode:
            return PLAIN if implicit[0] else STR
        return _SEQ if kind is yaml.nodes.SequenceNode else _MAP


ALLOWED_TAGS = frozenset({STR, _INT, _FLOAT, _BOOL, _NULL, _MAP, _SEQ, MERGE, _VALUE, PLAIN})


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
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
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
    return n if INT64_MIN <= n <= INT64_MAX else None


def resolve_plain(text: str) -> Any:
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


def resolve_tagged(node: yaml.nodes.ScalarNode, *, path: str) -> Any:
    """A scalar with an explicit JSON tag (``!!int "12"``), resolved and checked as go-yaml v2 does."""
    tag = node.tag
    if tag in (STR, MERGE, _VALUE):
        return node.value
    if tag not in _TAG_KIND:
        raise bad_tag(node, path=path)
    raw = resolve_plain(node.value)
    kind = type(raw)
    if tag == _INT and kind is int:
        return raw
    if tag == _FLOAT and ((kind is int and raw <= INT64_MAX) or kind is float):
        return float(raw)
    if (tag == _BOOL and kind is bool) or (tag == _NULL and raw is None):
        return raw
    raise budgets.YamlError(
        f"invalid YAML: a value tagged !!{tag.rsplit(':', 1)[1]} is not {_TAG_KIND[tag]}",
        path=path,
        line=node.start_mark.line + 1,
    )


def json_number(value: int | float) -> int | float:
    """A resolved number as kubectl sends it: int64 stays; anything else is a float64, which Go writes
    without a fraction when it is integral and below 1e21 (then it reads back as an integer).

    Raises ValueError for NaN and infinities (JSON has none)."""
    if type(value) is int:
        if INT64_MIN <= value <= INT64_MAX:
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
    if kind is int and raw <= INT64_MAX:
        return str(raw)
    if kind is float:
        return _float32_g(raw)
    what = "null (~, null or nothing)" if raw is None else "an integer above 2^63-1"
    raise budgets.YamlError(
        f"invalid YAML: a mapping key that is {what} cannot be a JSON key (Kubernetes refuses it; quote it)",
        path=path,
        line=node.start_mark.line + 1,
    )


def scalar_key(node: yaml.nodes.Node, *, path: str) -> str:
    """The JSON key of a mapping key node; YamlError for a list or mapping used as a key."""
    if not isinstance(node, yaml.nodes.ScalarNode):
        raise budgets.YamlError(
            "invalid YAML: a mapping key must be a scalar, not a list or mapping",
            path=path,
            line=node.start_mark.line + 1,
        )
    tag = node.tag
    if tag == STR:
        return str(node.value)
    raw = resolve_plain(node.value) if tag == PLAIN else resolve_tagged(node, path=path)
    return _key_text(raw, node, path=path)


def bad_tag(node: yaml.nodes.Node, *, path: str) -> budgets.YamlError:
    return budgets.YamlError(
        f"unsupported YAML tag {node.tag!r} (only strings, numbers, booleans, null, maps and lists)",
        path=path,
        line=node.start_mark.line + 1,
    )
