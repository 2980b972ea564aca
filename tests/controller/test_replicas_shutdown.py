"""A replica's lease thread ends with it (fleet.controller.replicas): cancelled, or stopped (SIGTERM), while
the management cluster does not answer, `Replica.run` returns within seconds and leaves no thread behind.
In-process, over real HTTP against `fleet sim` as the management cluster (its `hang` fault: requests are
never answered), with short lease timings (4 s duration, 2 s renew deadline, 0.5 s retry)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import anyio
import pytest

from fleet.controller import replicas
from fleet.sim import testing
from tests.support import lease_replicas
from tests.support.lease_replicas import SLACK, T

SHARDS = 4

pytestmark = pytest.mark.slow  # seconds of lease timings each


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["mgmt"]) as handle:
        yield handle


def make(sim: testing.SimHandle, me: str) -> replicas.Replica:
    return lease_replicas.make(sim, me, shards=SHARDS)


def lease_threads(me: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"fleet-leases-{me}" and t.is_alive()]


def ended_after(sim: testing.SimHandle, *, stop: bool) -> float:
    """Seconds `run` takes to return once the replica holds every shard, the management cluster stops
    answering, its lease thread is inside an unanswered request, and the replica is stopped (`stop`) or
    its `run` cancelled."""
    took: list[float] = []

    async def main() -> None:
        a = make(sim, "a-1")
        try:
            async with anyio.create_task_group() as tg:
                done = anyio.Event()
                scope = anyio.CancelScope()

                async def loop() -> None:
                    with scope:
                        await a.run()
                    done.set()

                tg.start_soon(loop)
                with anyio.fail_after(10):
                    while a.writable() != frozenset(range(SHARDS)):  # noqa: ASYNC110 (no event tells)
                        await anyio.sleep(0.05)
                await sim.faults("mgmt", {"hang": True})
                await anyio.sleep(T.retry * 2)  # the lease thread's next read hangs
                start = time.monotonic()
                if stop:
                    a.stop()
                    assert a.writable() == frozenset()  # nothing more is written, from this moment
                else:
                    scope.cancel()
                with anyio.fail_after(30):
                    await done.wait()
                took.append(time.monotonic() - start)
        finally:
            await a.client.client.aclose()

    anyio.run(main)
    assert lease_threads("a-1") == []
    return took[0]


def test_a_replica_cancelled_while_the_management_cluster_hangs_ends_its_lease_thread_at_once(
    sim: testing.SimHandle,
) -> None:
    """As when the controller's loop stops first: the lease thread is cancelled in its unanswered request,
    releases nothing, and is gone when `run` returns, well within one request's timeout."""
    took = ended_after(sim, stop=False)
    assert took < T.retry + SLACK, took


def test_a_replica_stopped_while_the_management_cluster_hangs_returns_within_its_retry_budget(
    sim: testing.SimHandle,
) -> None:
    """SIGTERM with the management cluster unreachable: the read in flight and the releases give up within
    the management client's retry budget (two retry periods each, `management.settings_for`), the leases
    are left to expire, and `run` returns with no thread left behind."""
    took = ended_after(sim, stop=True)
    assert took < 2 * (2 * T.retry) + SLACK, took
