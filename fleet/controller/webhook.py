"""Verifying Git hosting webhooks (pure).

Owns: deciding whether a webhook request is authentic, from its headers, body and the shared secret:
GitHub's ``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`` or GitLab's ``X-Gitlab-Token``, both
compared in constant time (`hmac.compare_digest`) as the bytes that came on the wire (`wire_bytes`): a
header holding bytes that are not UTF-8 is simply a value that does not match, never an error. Does not: read the body off the wire (the server caps
it first), parse the payload (a valid call only triggers a fetch, whatever its body holds), or rate-limit.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping

MAX_BODY = 1024 * 1024  # docs/operations.md: 1 MiB body cap


class Verdict(enum.StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    MISSING = "missing"  # no signature header at all
    INVALID = "invalid"  # a signature header that does not match


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def wire_bytes(value: str) -> bytes | None:
    """The bytes a header value arrived as. aiohttp decodes header bytes as UTF-8 with
    ``surrogateescape``, so bytes that are not UTF-8 come back exactly; None for a string that cannot
    have come off the wire (it then matches nothing)."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def equal(given: str, expected: bytes) -> bool:
    """Constant-time comparison of a header value (surrounding whitespace stripped) with `expected`."""
    raw = wire_bytes(given.strip())
    return raw is not None and hmac.compare_digest(raw, expected)


def verify(*, headers: Mapping[str, str], body: bytes, secret: bytes) -> Verdict:
    """Judge a webhook call. `secret` is the secret file's content with surrounding whitespace stripped."""
    github = _header(headers, "X-Hub-Signature-256")
    if github is not None:
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        return Verdict.GITHUB if equal(github, expected.encode()) else Verdict.INVALID
    gitlab = _header(headers, "X-Gitlab-Token")
    if gitlab is not None:
        return Verdict.GITLAB if equal(gitlab, secret) else Verdict.INVALID
    return Verdict.MISSING


def sign_github(*, body: bytes, secret: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub would send for `body` (used by `fleet demo` and tests)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
