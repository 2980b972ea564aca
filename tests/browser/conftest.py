"""Fixtures for the status page tests: one Chromium per session, a fresh tab per test, and a small
aiohttp server that serves the page's real assets plus a status document the test changes at will.

`browser` yields a `harness.Page` (goto, evaluate, wait_for, screenshot, press, type_text, click, hover,
set_color_scheme, set_viewport) and fails the test if the page logged an error or threw. The same
fixture works against a real `fleet serve`: point `page.goto` at its URL.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import anyio.from_thread
import pytest

from tests.browser import harness, statusserver

ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that drives the page starts Chromium (a process): `slow`, outside the fast inner loop."""
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def portal() -> Iterator[anyio.from_thread.BlockingPortal]:
    """One event loop in a thread, shared by the browser connection and the test servers."""
    with anyio.from_thread.start_blocking_portal() as p:
        yield p


@pytest.fixture(scope="session")
def chromium(portal: anyio.from_thread.BlockingPortal) -> Iterator[harness.Browser]:
    with harness.running_browser(portal) as b:
        yield b


@pytest.fixture
def browser(chromium: harness.Browser) -> Iterator[harness.Page]:
    page = chromium.new_page()
    try:
        yield page
        assert page.problems == [], f"the page reported errors: {page.problems}"
    finally:
        chromium.close_page(page)


@pytest.fixture(scope="session")
def artifacts() -> pathlib.Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def status_server(portal: anyio.from_thread.BlockingPortal) -> Iterator[statusserver.StatusServer]:
    """The page (poll interval 0.2 s) and a changeable status document on 127.0.0.1, port 0."""
    with statusserver.running(portal, poll_interval=0.2) as server:
        yield server


@pytest.fixture(scope="module")
def jaeger_server(portal: anyio.from_thread.BlockingPortal) -> Iterator[statusserver.StatusServer]:
    """Like `status_server`, with a Jaeger URL configured."""
    with statusserver.running(portal, poll_interval=0.2, jaeger_url="http://jaeger.example:16686/") as server:
        yield server
