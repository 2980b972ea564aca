"""Label and field selectors with the grammar and matching rules of apimachinery (pure functions).

Owns: parsing `labelSelector` (labels/selector.go: `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`, `>`, `<`;
comma-ANDed; `!=`/`notin` match objects lacking the key) and `fieldSelector` (fields/selector.go: `=`, `==`,
`!=`, backslash escapes, empty terms skipped) into matchers, and matching objects against them. Parse
errors raise `SelectorError` with the message the server puts in its 400. Does not: know which fields a
type supports (the caller passes its `field_paths`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleet.core import errors

_TOKEN = re.compile(r"\s*(?:(!=|==|=|\(|\)|,|!|>|<)|([^\s(),!=<>]+))")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SelectorError(errors.InputError, ValueError):
    """A selector that does not parse; the message is the server's 400 text."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "in":
            return present and labels[self.key] in self.values
        if self.op == "notin":
            return not present or labels[self.key] not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if not present:
            return False
        try:
            have = int(labels[self.key])
        except ValueError:
            return False
        want = int(self.values[0])
        return have > want if self.op == "gt" else have < want


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


EVERYTHING = LabelSelector(())


def _check_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise SelectorError(
            f'unable to parse requirement: key: Invalid value: "{key}": prefix part must be a DNS-1123 subdomain'
        )
    if not name or len(name) > 63 or not _NAME_PART.match(name):
        raise SelectorError(
            f'unable to parse requirement: key: Invalid value: "{key}": name part must consist of alphanumeric '
            "characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )


def _check_value(value: str, key: str, index: int = 0) -> None:
    where = f'unable to parse requirement: values[{index}][{key}]: Invalid value: "{value}": '
    if len(value) > 63:
        raise SelectorError(where + "must be no more than 63 bytes")
    if not _LABEL_VALUE.match(value):
        raise SelectorError(
            where
            + "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
            "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
            "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SelectorError(f"unable to parse requirement: unexpected character at {pos} in {text!r}")
        pos = m.end()
        if m.group(1):
            out.append(("op", m.group(1)))
        elif m.group(2):
            out.append(("id", m.group(2)))
    return out


def parse_labels(text: str | None) -> LabelSelector:
    """Parse a `labelSelector` query value."""
    if not text or not text.strip():
        return EVERYTHING
    toks = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def peek(k: int = 0) -> tuple[str, str]:
        return toks[i + k] if i + k < len(toks) else ("end", "")

    while True:
        kind, val = peek()
        if kind == "op" and val == "!":
            i += 1
            kind, key = peek()
            if kind != "id":
                raise SelectorError(f"unable to parse requirement: found '{key}', expected: identifier")
            _check_key(key)
            i += 1
            reqs.append(Requirement(key, "!"))
        elif kind == "id":
            key = val
            _check_key(key)
            i += 1
            kind, op = peek()
            if kind == "end" or (kind == "op" and op == ","):
                reqs.append(Requirement(key, "exists"))
            elif kind == "op" and op in ("=", "=="):
                i += 1
                vkind, value = peek()
                if vkind == "id":
                    i += 1
                elif vkind == "end" or (vkind == "op" and value == ","):
                    value = ""
                else:
                    raise SelectorError(f"unable to parse requirement: found '{value}', expected: identifier")
                _check_value(value, key)
                reqs.append(Requirement(key, "in", (value,)))
            elif kind == "op" and op == "!=":
                i += 1
                vkind, value = peek()
                if vkind == "id":
                    i += 1
                elif vkind == "end" or (vkind == "op" and value == ","):
                    value = ""
                else:
                    raise SelectorError(f"unable to parse requirement: found '{value}', expected: identifier")
                _check_value(value, key)
                reqs.append(Requirement(key, "notin", (value,)))
            elif kind == "op" and op in (">", "<"):
                i += 1
                vkind, value = peek()
                if vkind != "id":
                    raise SelectorError(f"unable to parse requirement: found '{value}', expected: integer")
                i += 1
                try:
                    int(value)
                except ValueError:
                    raise SelectorError(
                        f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {value}"
                    ) from None
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
            elif kind == "id" and op in ("in", "notin"):
                i += 1
                if peek() != ("op", "("):
                    raise SelectorError(f"unable to parse requirement: found '{peek()[1]}', expected: '('")
                i += 1
                values: list[str] = []
                while True:
                    vkind, value = peek()
                    if vkind == "op" and value == ")":
                        i += 1
                        break
                    if vkind == "op" and value == ",":
                        i += 1
                        if peek()[1] in (",", ")"):
                            values.append("")
                        continue
                    if vkind != "id":
                        raise SelectorError(
                            f"unable to parse requirement: found '{value}', expected: ',', ')' or identifier"
                        )
                    values.append(value)
                    i += 1
                if not values:
                    raise SelectorError(
                        "unable to parse requirement: values: Invalid value: []: for 'in', 'notin' operators, "
                        "values set can't be empty"
                    )
                for index, value in enumerate(values):
                    _check_value(value, key, index)
                reqs.append(Requirement(key, op, tuple(sorted(set(values)))))
            else:
                raise SelectorError(
                    f"unable to parse requirement: found '{op}', expected: in, notin, =, ==, !=, gt, lt"
                )
        else:
            raise SelectorError(f"found '{val}', expected: !, identifier, or 'end of string'")
        kind, val = peek()
        if kind == "end":
            break
        if kind == "op" and val == ",":
            i += 1
            continue
        raise SelectorError(f"found '{val}', expected: ',' or 'end of string'")
    return LabelSelector(tuple(reqs))


@dataclass(frozen=True)
class FieldTerm:
    field: str
    path: tuple[str, ...]
    value: str
    negate: bool


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[FieldTerm, ...]

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for term in self.terms:
            have = field_value(obj, term.path)
            if (have == term.value) == term.negate:
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.terms

    def required_name(self) -> str | None:
        """The name an equality term on metadata.name pins, if any."""
        for term in self.terms:
            if term.field == "metadata.name" and not term.negate:
                return term.value
        return None


NO_FIELDS = FieldSelector(())


def field_value(obj: Mapping[str, Any], path: tuple[str, ...]) -> str:
    node: Any = obj
    for part in path:
        if not isinstance(node, Mapping):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            cur.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if escaped:
        raise SelectorError(f"invalid field selector: {text!r}: trailing backslash")
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    it = iter(text)
    for ch in it:
        if ch == "\\":
            nxt = next(it, "")
            if nxt not in ("\\", ",", "="):
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{nxt}")
            out.append(nxt)
        else:
            out.append(ch)
    return "".join(out)


def _find_op(term: str) -> tuple[int, str] | None:
    i = 0
    while i < len(term):
        ch = term[i]
        if ch == "\\":
            i += 2
            continue
        if term.startswith("!=", i):
            return i, "!="
        if term.startswith("==", i):
            return i, "=="
        if ch == "=":
            return i, "="
        i += 1
    return None


def parse_fields(text: str | None, *, known: Mapping[str, tuple[str, ...]]) -> FieldSelector:
    """Parse a `fieldSelector` query value; only fields in `known` are accepted."""
    if not text or not text.strip():
        return NO_FIELDS
    terms: list[FieldTerm] = []
    for raw in _split_unescaped(text, ","):
        if not raw.strip():
            continue
        found = _find_op(raw)
        if found is None:
            raise SelectorError(f"invalid selector: '{raw}'; can't understand '{raw}'")
        pos, op = found
        key = _unescape(raw[:pos]).strip()
        value = _unescape(raw[pos + len(op) :])
        path = known.get(key)
        if path is None:
            raise SelectorError(
                f'"{key}" is not a known field selector: only "metadata.name", "metadata.namespace"'
            )
        terms.append(FieldTerm(key, path, value, op == "!="))
    return FieldSelector(tuple(terms))
