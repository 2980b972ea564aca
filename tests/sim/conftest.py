"""Fixtures for the `fleet sim` suites: a fresh simulated server per test (cheap: a thread and a socket)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fleet.sim import testing
from fleet.sim.storage import store

# Short waits so tests of "future resourceVersion" and bookmarks stay fast; no controller-made objects or
# status changes, so each test sees exactly what it wrote (tests of those controllers use the defaults).
FAST = store.Settings(rv_wait=0.3, bookmark_interval=0.3, namespace_defaults=False, workload_status=False)


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    """Two path-prefixed clusters, `c1` and `c2`."""
    with testing.serving(names=["c1", "c2"], settings=FAST) as handle:
        yield handle


@pytest.fixture
def client(sim: testing.SimHandle) -> Iterator[httpx.Client]:
    """An HTTP client rooted at cluster `c1`."""
    with httpx.Client(base_url=sim.url("c1"), timeout=10.0) as c:
        yield c
