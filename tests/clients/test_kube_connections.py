"""A cluster's connections over real HTTP (`fleet sim` behind the fault proxy, which sees each request's
connection): how long an idle one is kept for the next request (docs/reconcile.md, "Talking to
clusters")."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anyio
import pytest

from fleet.clients import kube
from fleet.cluster import apply
from fleet.sim import testing
from tests.support import faultproxy


@pytest.fixture(scope="module")
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["one"]) as handle:
        yield handle


def two_gets_apart(sim: testing.SimHandle, settings: kube.Settings, gap: float) -> list[object]:
    """Two GETs on one cluster's client, `gap` seconds of idleness between them; the client's end of the
    connection each one came on, as the server side (the proxy) saw it."""
    with faultproxy.serving(sim.kubeconfig_dict, clusters=["one"]) as proxy:
        kc = kube.parse_kubeconfig([(str(proxy.kubeconfig), proxy.kubeconfig.read_bytes())])
        client = kube.Client(cluster="one", context=kc.context("one"), settings=settings)

        async def main() -> None:
            try:
                await client.get(apply.CONFIGMAP, namespace="default", name="nothing-here")
                await anyio.sleep(gap)
                await client.get(apply.CONFIGMAP, namespace="default", name="nothing-here")
            finally:
                await client.aclose()

        anyio.run(main)
        assert [h.method for h in proxy.hits] == ["GET", "GET"]
        return [h.peer for h in proxy.hits]


@pytest.mark.slow  # sleeps 20 s
def test_a_connection_left_idle_longer_than_aiohttps_15_s_is_reused_for_the_next_request(
    sim: testing.SimHandle,
) -> None:
    # Commits come further apart than aiohttp's default keep-alive (15 s): with it, every commit's first
    # request to each cluster paid a new TCP (and TLS) handshake.
    started = time.monotonic()
    first, second = two_gets_apart(sim, kube.Settings(), gap=20.0)
    assert time.monotonic() - started >= 20.0
    assert first is not None
    assert second == first, "the second request came on a new connection"


def test_an_idle_connection_is_kept_for_the_keepalive_setting_and_no_longer(sim: testing.SimHandle) -> None:
    # The setting reaches the connection pool: a gap within it reuses the connection, one past it opens a
    # new one (the idle connection was closed by the client, not left to the server's idle timeout).
    first, second = two_gets_apart(sim, kube.Settings(keepalive=3.0), gap=1.0)
    assert first is not None and second == first
    first, second = two_gets_apart(sim, kube.Settings(keepalive=0.5), gap=1.5)
    assert first is not None and second is not None and second != first
