"""Webhook signatures: GitHub HMAC and GitLab token, judged in constant time."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from fleet.controller import webhook

SECRET = b"s3cr3t-value"
BODY = b'{"ref": "refs/heads/main"}'


def github_sig(body: bytes, secret: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_a_github_signature_over_the_body_is_accepted() -> None:
    headers = {"X-Hub-Signature-256": github_sig(BODY, SECRET)}
    assert webhook.verify(headers=headers, body=BODY, secret=SECRET) is webhook.Verdict.GITHUB


def test_header_names_are_matched_case_insensitively() -> None:
    headers = {"x-hub-signature-256": github_sig(BODY, SECRET)}
    assert webhook.verify(headers=headers, body=BODY, secret=SECRET) is webhook.Verdict.GITHUB


@pytest.mark.parametrize(
    "signature",
    [
        github_sig(b"another body", SECRET),
        github_sig(BODY, b"wrong secret"),
        "sha256=",
        "sha1=" + hmac.new(SECRET, BODY, hashlib.sha1).hexdigest(),
        "",
    ],
    ids=["other-body", "other-secret", "empty-digest", "sha1", "empty"],
)
def test_a_github_signature_that_does_not_match_is_invalid(signature: str) -> None:
    headers = {"X-Hub-Signature-256": signature}
    assert webhook.verify(headers=headers, body=BODY, secret=SECRET) is webhook.Verdict.INVALID


def test_a_gitlab_token_equal_to_the_secret_is_accepted() -> None:
    headers = {"X-Gitlab-Token": SECRET.decode()}
    assert webhook.verify(headers=headers, body=b"anything", secret=SECRET) is webhook.Verdict.GITLAB


def test_a_wrong_gitlab_token_is_invalid() -> None:
    headers = {"X-Gitlab-Token": "s3cr3t-valuf"}
    assert webhook.verify(headers=headers, body=BODY, secret=SECRET) is webhook.Verdict.INVALID


def test_a_call_without_any_signature_header_is_missing() -> None:
    assert webhook.verify(headers={"Content-Type": "application/json"}, body=BODY, secret=SECRET) is (
        webhook.Verdict.MISSING
    )


def test_sign_github_produces_what_verify_accepts() -> None:
    sig = webhook.sign_github(body=BODY, secret=SECRET)
    assert webhook.verify(headers={"X-Hub-Signature-256": sig}, body=BODY, secret=SECRET) is (
        webhook.Verdict.GITHUB
    )


@pytest.mark.parametrize(
    "value",
    ["sha256=\udcff\udcfe", "\udcc3t\udce9", "\ud800", "s3cr3t-valu\xe9"],
    ids=["not-utf8-github", "not-utf8-gitlab", "lone-surrogate", "latin1"],
)
def test_a_header_that_is_not_utf8_is_invalid_and_never_an_error(value: str) -> None:
    for name in ("X-Hub-Signature-256", "X-Gitlab-Token"):
        assert webhook.verify(headers={name: value}, body=BODY, secret=SECRET) is webhook.Verdict.INVALID


def test_a_token_is_compared_as_the_bytes_that_came_on_the_wire() -> None:
    secret = "sécret".encode()
    as_received = secret.decode("utf-8", "surrogateescape")
    assert webhook.verify(headers={"X-Gitlab-Token": as_received}, body=BODY, secret=secret) is (
        webhook.Verdict.GITLAB
    )
