"""Verifying Git hosting webhooks (pure).

Owns: deciding whether a webhook request is authentic, from its headers, body and the shared secret:
GitHub's ``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`` or GitLab's ``X-Gitlab-Token``, both
compared in constant time (`hmac.compare_digest`). Does not: read the body off the wire (the server caps
it first), parse the payload (a valid call only triggers a fetch, whatever its body holds), or rate-limit.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping

MAX_BODY = 1024 * 1024  # SPEC section 4: 1 MiB body cap


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


def verify(*, headers: Mapping[str, str], body: bytes, secret: bytes) -> Verdict:
    """Judge a webhook call. `secret` is the secret file's content with surrounding whitespace stripped."""
    github = _header(headers, "X-Hub-Signature-256")
    if github is not None:
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if hmac.compare_digest(github.strip().encode(), expected.encode()):
            return Verdict.GITHUB
        return Verdict.INVALID
    gitlab = _header(headers, "X-Gitlab-Token")
    if gitlab is not None:
        if hmac.compare_digest(gitlab.strip().encode(), secret):
            return Verdict.GITLAB
        return Verdict.INVALID
    return Verdict.MISSING


def sign_github(*, body: bytes, secret: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub would send for `body` (used by `fleet demo` and tests)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
