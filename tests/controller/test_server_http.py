"""The HTTP API in-process over a real socket (`tests.support.api`): hostile bytes and floods."""

from __future__ import annotations

import dataclasses
import logging
import select
import socket
import time
from pathlib import Path

import httpx
import pytest

from fleet.controller import server, webhook
from tests.support import api

SECRET = "sécret-wébhook".encode()
TOKEN = b"api-token"


def request(path: str, *headers: bytes, body: bytes = b"{}") -> bytes:
    head = b"POST " + path.encode() + b" HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n"
    head += b"".join(h + b"\r\n" for h in headers)
    return head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


@pytest.mark.parametrize(
    ("path", "header"),
    [
        ("/api/v1/reconcile", b"Authorization: Bearer \xff\xfe-token"),
        ("/api/v1/reconcile", b"Authorization: \xc3\xa9 \xe9"),
        ("/api/v1/webhook", b"X-Gitlab-Token: \xc3\xa9t\xe9"),
        ("/api/v1/webhook", b"X-Hub-Signature-256: sha256=\xff\xfe"),
    ],
)
def test_non_ascii_bytes_in_a_credential_header_get_401_and_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str, header: bytes
) -> None:
    settings = server.ServerSettings(api_token=TOKEN, webhook_secret=SECRET)
    with caplog.at_level(logging.WARNING), api.serving(tmp_path, settings) as served:
        status = served.raw(request(path, header))
    assert status.startswith(b"HTTP/1.1 401"), status
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


def test_a_non_ascii_secret_sent_as_its_exact_utf8_bytes_is_accepted(tmp_path: Path) -> None:
    settings = server.ServerSettings(webhook_secret=SECRET)
    with api.serving(tmp_path, settings) as served:
        gitlab = served.raw(request("/api/v1/webhook", b"X-Gitlab-Token: " + SECRET))
        github = served.raw(
            request(
                "/api/v1/webhook",
                b"X-Hub-Signature-256: " + webhook.sign_github(body=b"{}", secret=SECRET).encode(),
            )
        )
    assert gitlab.startswith(b"HTTP/1.1 202"), gitlab
    assert github.startswith(b"HTTP/1.1 202"), github


def wait_closed(sockets: list[socket.socket], *, within: float) -> float:
    """Seconds until every socket saw the server close it (EOF or reset); fails after `within`."""
    started = time.monotonic()
    open_ = list(sockets)
    while open_:
        if time.monotonic() - started > within:
            raise AssertionError(f"{len(open_)} of {len(sockets)} connections still open after {within} s")
        ready, _, _ = select.select(open_, [], [], 0.2)
        for s in ready:
            try:
                data = s.recv(1024)
            except OSError:
                data = b""
            if not data:
                open_.remove(s)
    return time.monotonic() - started


def connect_many(api_: api.Api, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection((api_.host, api_.port), timeout=5)
        s.setblocking(False)
        out.append(s)
    return out


def healthz(api_: api.Api) -> int:
    return httpx.get(api_.url + "/healthz", timeout=5).status_code


LIMITS = server.Limits(header_timeout=1.0, idle_timeout=2.5, body_timeout=1.0, max_connections=40)


def test_idle_connections_are_closed_at_the_header_deadline_and_the_api_keeps_answering(
    tmp_path: Path,
) -> None:
    with api.serving(tmp_path, server.ServerSettings(limits=LIMITS)) as served:
        started = time.monotonic()
        idle = connect_many(served, 30)  # under the cap: the API answers meanwhile
        assert healthz(served) == 200
        wait_closed(idle, within=LIMITS.header_timeout + 10)
        assert time.monotonic() - started >= LIMITS.header_timeout * 0.9
        assert healthz(served) == 200
        metrics = httpx.get(served.url + "/metrics", timeout=5).text
    assert 'fleet_http_timeouts_total{kind="header"} 30.0' in metrics


@pytest.mark.slow  # waits out a header deadline of 6 s
def test_connections_over_the_cap_are_closed_at_once_and_the_api_answers_again_after_the_deadline(
    tmp_path: Path,
) -> None:
    # A header deadline long enough that none of the held connections is cut while the test connects.
    limits = dataclasses.replace(LIMITS, header_timeout=6.0)
    with api.serving(tmp_path, server.ServerSettings(limits=limits)) as served:
        held = connect_many(served, limits.max_connections)
        time.sleep(0.3)
        over = connect_many(served, 200)
        assert wait_closed(over, within=3) < 3  # closed at once, not held
        wait_closed(held, within=limits.header_timeout + 5)
        assert healthz(served) == 200
        metrics = httpx.get(served.url + "/metrics", timeout=5).text
    assert 'fleet_http_connections_refused_total{reason="cap"} 200.0' in metrics


@pytest.mark.slow  # waits out the idle timeout (2.5 s)
def test_a_keep_alive_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    with api.serving(tmp_path, server.ServerSettings(limits=LIMITS)) as served:
        s = socket.create_connection((served.host, served.port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: fleet\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.setblocking(False)
        took = wait_closed([s], within=LIMITS.idle_timeout + 5)
    assert took >= LIMITS.idle_timeout * 0.8, took  # the header deadline does not cut a used connection


def test_a_request_head_sent_byte_by_byte_is_cut_at_the_header_deadline(tmp_path: Path) -> None:
    with api.serving(tmp_path, server.ServerSettings(limits=LIMITS)) as served:
        s = socket.create_connection((served.host, served.port), timeout=5)
        started = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: fleet\r\nX-Slow: " + b"a" * 100:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > LIMITS.header_timeout + 3:
                break
        if not closed:
            s.setblocking(False)
            wait_closed([s], within=1)
        assert time.monotonic() - started < LIMITS.header_timeout + 3


def test_a_webhook_body_that_trickles_is_refused_with_408_at_the_body_deadline(tmp_path: Path) -> None:
    with (
        api.serving(tmp_path, server.ServerSettings(webhook_secret=SECRET, limits=LIMITS)) as served,
        # closed before the server stops: else it lingers up to 10 s reading the rest of the body (aiohttp)
        socket.create_connection((served.host, served.port), timeout=10) as s,
    ):
        s.sendall(b"POST /api/v1/webhook HTTP/1.1\r\nHost: fleet\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        answer = s.recv(4096)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert took < LIMITS.body_timeout + 3


def test_a_malformed_request_is_one_info_line_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), api.serving(tmp_path) as served:
        status = served.raw(b"POST /api/v1/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    assert status.startswith(b"HTTP/1.") and b" 400 " in status, status
    records = [r for r in caplog.records if r.name.startswith("fleet.server")]
    assert [r.levelno for r in records] == [logging.INFO], caplog.text
    assert "malformed request refused (400" in records[0].getMessage()
    assert not records[0].exc_info


def test_a_valid_webhook_whatever_its_body_only_asks_for_a_fetch_and_a_burst_of_them_asks_once(
    tmp_path: Path,
) -> None:
    """RELIABILITY 26: the payload is never read for what to deploy (any bytes are fine once signed), and
    fifty valid calls in a burst start one fetch; the others are coalesced with it."""
    with api.serving(tmp_path, server.ServerSettings(webhook_secret=SECRET)) as served:
        answers = []
        with httpx.Client(timeout=10) as client:
            for i in range(50):
                body = b"\x00not json at all \xff" + str(i).encode()
                sig = webhook.sign_github(body=body, secret=SECRET)
                resp = client.post(
                    served.url + "/api/v1/webhook", content=body, headers={"X-Hub-Signature-256": sig}
                )
                answers.append((resp.status_code, resp.json()["fetch"]))
    assert answers[0] == (202, "started")
    assert answers[1:] == [(202, "already pending")] * 49
