"""Kubernetes label selectors: matching a `model.LabelSelector` against labels, and the text form.

Owns: `matches` (exact Kubernetes LabelSelector semantics) and `parse`/`to_text` of the selector text
syntax kubectl takes with `-l` (``env=prod,region in (eu,us),!legacy``), for reuse by the CLI and UI.
Does not: read files or validate a `bundle.yaml` (the repository layer builds `LabelSelector` values and
reports problems with their path and line).

Semantics (Kubernetes `LabelSelectorAsSelector`): every `matchLabels` pair and every requirement must
hold; an empty selector matches everything. ``In`` needs the key with one of the values; ``NotIn`` holds
when the key is absent or its value is not listed; ``Exists``/``DoesNotExist`` test presence only.

Text syntax, comma-separated requirements::

    key=value  key==value  key!=value  key in (a,b)  key notin (a,b)  key  !key

``key=value`` becomes a `matchLabels` pair; ``key!=value`` a ``NotIn`` requirement with one value (so, as
in Kubernetes, it matches objects without the key).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fleet.core import errors, model

_NAME = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_KEY_RE = re.compile(
    r"^(?:(?P<prefix>[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/)?(?P<name>"
    + _NAME
    + r")$"
)
_VALUE_RE = re.compile(r"^(" + _NAME + r")?$")


def matches(selector: model.LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy `selector` (pure; Kubernetes semantics, `{}` matches all)."""
    for key, value in selector.match_labels:
        if key not in labels or labels[key] != value:
            return False
    return all(requirement_holds(r, labels) for r in selector.match_expressions)


def requirement_holds(requirement: model.Requirement, labels: Mapping[str, str]) -> bool:
    """Whether one `matchExpressions` entry holds for `labels`."""
    present = requirement.key in labels
    op = requirement.operator
    if op is model.Operator.IN:
        return present and labels[requirement.key] in requirement.values
    if op is model.Operator.NOT_IN:
        return not present or labels[requirement.key] not in requirement.values
    if op is model.Operator.EXISTS:
        return present
    if op is model.Operator.DOES_NOT_EXIST:
        return not present
    raise errors.InputError(f"label selector: unknown operator {op!r}")  # pragma: no cover - enum is closed


def valid_key(key: str) -> bool:
    """Kubernetes label key syntax: optional DNS-subdomain prefix (<=253) and '/', name of <=63."""
    m = _KEY_RE.match(key)
    if m is None:
        return False
    prefix = m.group("prefix")
    return prefix is None or len(prefix) <= 253


def valid_value(value: str) -> bool:
    """Kubernetes label value syntax: empty, or <=63 of [A-Za-z0-9_.-] starting and ending alphanumeric."""
    return _VALUE_RE.match(value) is not None


# ----------------------------------------------------------------------------------------------------------
# Text form.

_TOKEN_RE = re.compile(r"\s*(?:(?P<op>==|!=|=|\(|\)|,|!)|(?P<word>[^\s=!(),]+))")


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, column) tokens; kind is 'op' or 'word'; column is 1-based."""
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if m is None:  # pragma: no cover - the pattern accepts every non-space character
            raise errors.InputError(f"label selector {text!r}: unexpected character at column {pos + 1}")
        kind = "op" if m.group("op") is not None else "word"
        tok = m.group(kind)
        out.append((kind, tok, m.start(kind) + 1))
        pos = m.end()
    return out


def parse(text: str) -> model.LabelSelector:
    """Parse Kubernetes selector text (``env=prod,region in (eu,us),!legacy``); empty text matches all.

    Raises `errors.InputError` naming the column and the offending token.
    """
    toks = _tokens(text)
    labels: list[tuple[str, str]] = []
    reqs: list[model.Requirement] = []
    i = 0

    def fail(msg: str, col: int | None = None) -> errors.InputError:
        where = f" at column {col}" if col is not None else " at the end"
        return errors.InputError(f"label selector {text!r}{where}: {msg}")

    def peek(offset: int = 0) -> tuple[str, str, int] | None:
        return toks[i + offset] if i + offset < len(toks) else None

    def key_at(tok: tuple[str, str, int] | None) -> str:
        if tok is None:
            raise fail("expected a label key")
        kind, word, col = tok
        if kind != "word":
            raise fail(f"expected a label key, found {word!r}", col)
        if not valid_key(word):
            raise fail(f"invalid label key {word!r}", col)
        return word

    def value_at(tok: tuple[str, str, int] | None, *, allow_empty: bool) -> tuple[str, bool]:
        """A value token; returns (value, consumed)."""
        if tok is None or tok[0] != "word":
            if allow_empty:
                return "", False
            raise fail("expected a label value", tok[2] if tok else None)
        if not valid_value(tok[1]):
            raise fail(f"invalid label value {tok[1]!r}", tok[2])
        return tok[1], True

    if not toks:
        return model.LabelSelector()
    while True:
        tok = peek()
        if tok is None:
            raise fail("expected a requirement after ','")
        if tok == ("op", "!", tok[2]):
            i += 1
            reqs.append(model.Requirement(key_at(peek()), model.Operator.DOES_NOT_EXIST))
            i += 1
        else:
            key = key_at(tok)
            i += 1
            nxt = peek()
            if nxt is None or nxt[1] == ",":
                reqs.append(model.Requirement(key, model.Operator.EXISTS))
            elif nxt[0] == "op" and nxt[1] in ("=", "==", "!="):
                i += 1
                value, consumed = value_at(peek(), allow_empty=True)
                i += 1 if consumed else 0
                if nxt[1] == "!=":
                    reqs.append(model.Requirement(key, model.Operator.NOT_IN, (value,)))
                else:
                    labels.append((key, value))
            elif nxt[0] == "word" and nxt[1] in ("in", "notin"):
                i += 1
                op = model.Operator.IN if nxt[1] == "in" else model.Operator.NOT_IN
                opening = peek()
                if opening is None or opening[1] != "(":
                    raise fail(f"expected '(' after {nxt[1]!r}", opening[2] if opening else None)
                i += 1
                values: list[str] = []
                while True:
                    value, consumed = value_at(peek(), allow_empty=True)
                    i += 1 if consumed else 0
                    values.append(value)
                    sep = peek()
                    if sep is None:
                        raise fail("expected ')'")
                    i += 1
                    if sep[1] == ")":
                        break
                    if sep[1] != ",":
                        raise fail(f"expected ',' or ')', found {sep[1]!r}", sep[2])
                reqs.append(model.Requirement(key, op, tuple(dict.fromkeys(values))))
            else:
                raise fail(f"expected an operator after {key!r}, found {nxt[1]!r}", nxt[2])
        tok = peek()
        if tok is None:
            break
        if tok[1] != ",":
            raise fail(f"expected ',', found {tok[1]!r}", tok[2])
        i += 1
    return model.LabelSelector(match_labels=tuple(labels), match_expressions=tuple(reqs))


def to_text(selector: model.LabelSelector) -> str:
    """The text form of a selector (`parse(to_text(s))` matches exactly what `s` matches)."""
    parts = [f"{k}={v}" for k, v in selector.match_labels]
    for r in selector.match_expressions:
        if r.operator is model.Operator.EXISTS:
            parts.append(r.key)
        elif r.operator is model.Operator.DOES_NOT_EXIST:
            parts.append(f"!{r.key}")
        else:
            word = "in" if r.operator is model.Operator.IN else "notin"
            parts.append(f"{r.key} {word} ({','.join(r.values)})")
    return ",".join(parts)
