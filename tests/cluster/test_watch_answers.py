"""`ClusterWatch` reconnects and relists, also against broken answers (docs/reliability.md): the real watch
loop and client talk to `fleet sim` through `tests.support.faultproxy`.

A relist that cannot be read must never read as "every object was deleted" (no repair storm), a 410 on a
relist's continue token must back off and be counted, not restart the list at once forever, and streams
that close, resume or relist must not replay old events as drift.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import anyio
import pytest

from fleet.clients import kube
from fleet.cluster import apply, watch
from fleet.core import drift, model, plan
from fleet.sim import testing
from fleet.sim.storage import store
from tests.support import faultproxy
from tests.support.reconcile import send

INSTANCE = "fleet"
NS = "app"
NAMES = [f"a{i}" for i in range(1, 9)]  # one cluster per test
FAST_KUBE = kube.Settings(request_timeout=5.0, connect_timeout=2.0, retry_budget=2.0, backoff_base=0.05)
FAST_WATCH = watch.Settings(
    timeout_seconds=30,
    read_margin=5,
    backoff_base=0.2,
    backoff_cap=1.0,
    coalesce=0.05,
    health_interval=0.05,
    page_size=1,  # every list of two objects has a continue token
)
GONE = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": "The provided continue parameter is too old to display a consistent list result.",
    "reason": "Expired",
    "code": 410,
}


@pytest.fixture(scope="module")
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=NAMES, settings=store.Settings(bookmark_interval=1.0)) as h:
        yield h


@pytest.fixture(scope="module")
def proxy(sim: testing.SimHandle) -> Iterator[faultproxy.FaultProxy]:
    with faultproxy.serving(sim.kubeconfig_dict) as p:
        yield p


@pytest.fixture(scope="module")
def free(sim: testing.SimHandle) -> Iterator[Iterator[str]]:
    yield iter(sim.names)


@pytest.fixture
def cluster(sim: testing.SimHandle, proxy: faultproxy.FaultProxy, free: Iterator[str]) -> Iterator[str]:
    name = next(free)
    yield name
    proxy.clear()
    sim.clear_faults_sync(name)


def configmap(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS},
        "data": {"k": "v"},
    }


def desired_of(cluster: str) -> dict[model.ObjectRef, Mapping[str, Any]]:
    objects = (configmap("one"), configmap("two"))
    target = plan.Target("web", desired=model.DesiredSet("web", cluster, objects, "h"))
    return drift.desired_objects({"web": target}, instance=INSTANCE)


async def wait_for(check: Callable[[], Any], *, within: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.02)
    return value


def fleet_writes(journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r
        for r in journal
        if r["method"] in ("PATCH", "POST", "PUT", "DELETE") and "fieldManager=fleet" in r["query"]
    ]


@contextlib.asynccontextmanager
async def watching(
    sim: testing.SimHandle, proxy: faultproxy.FaultProxy, cluster: str
) -> AsyncIterator[tuple[watch.ClusterWatch, list[watch.RepairBatch]]]:
    kc = kube.parse_kubeconfig([(str(proxy.kubeconfig), proxy.kubeconfig.read_bytes())])
    client = kube.Client(cluster=cluster, context=kc.context(cluster), settings=FAST_KUBE)
    desired = desired_of(cluster)
    await client.create(apply.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for obj in desired.values():
        await client.apply(apply.CONFIGMAP, obj, force=True)
    batches: list[watch.RepairBatch] = []
    w = watch.ClusterWatch(
        client,
        instance=INSTANCE,
        desired=lambda: desired,
        settings=FAST_WATCH,
        on_repair=batches.append,
        kinds=drift.kinds(desired),
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await wait_for(lambda: w.health.streams == 1, what="stream open")
            yield w, batches
            tg.cancel_scope.cancel()
    finally:
        await client.aclose()


async def force_relist(sim: testing.SimHandle, cluster: str) -> None:
    """The next watch request gets an HTTP 410, and the open stream is closed: the kind is listed again."""
    await sim.faults(cluster, {"status": 410, "watch": True, "path": "/configmaps", "count": 1})
    await sim.faults(cluster, {"dropWatches": True, "count": 0})


LISTS = r"^/api/v1/configmaps$"


@pytest.mark.parametrize(
    "broken",
    [
        {"edit": faultproxy.drop_key("items")},
        {"status": 200, "headers": faultproxy.HTML, "body": faultproxy.HTML_LOGIN},
        {"truncate": 20},
    ],
    ids=["no items", "html", "truncated"],
)
def test_an_unreadable_relist_reads_as_an_error_never_as_every_object_deleted(
    sim: testing.SimHandle, proxy: faultproxy.FaultProxy, cluster: str, broken: dict[str, Any]
) -> None:
    async def main() -> None:
        async with watching(sim, proxy, cluster) as (w, batches):
            start = sim.journal_sync(cluster)[-1]["seq"]
            rule = proxy.add(faultproxy.Rule(method="GET", path=LISTS, watch=False, **broken))
            await force_relist(sim, cluster)
            await wait_for(lambda: rule.fired >= 3 or batches, what="relists tried")
            assert batches == []  # nothing was judged deleted, nothing repaired
            assert fleet_writes(sim.journal_sync(cluster, since=start)) == []
            assert w.health.streams == 0  # no watch from an unread list
            proxy.clear()
            await wait_for(lambda: w.health.streams == 1, what="watching again once the list reads")
            assert batches == []

    anyio.run(main)


@pytest.mark.slow  # watches the backoff for 4 s
def test_a_410_on_a_relists_continue_token_backs_off_and_is_counted(
    sim: testing.SimHandle, proxy: faultproxy.FaultProxy, cluster: str
) -> None:
    async def main() -> None:
        async with watching(sim, proxy, cluster) as (w, batches):
            rule = proxy.add(
                faultproxy.Rule(
                    method="GET", path=LISTS, watch=False, query="continue=", status=410, body=GONE
                )
            )
            await force_relist(sim, cluster)
            await wait_for(lambda: rule.fired >= 1, what="the continue token refused")
            await anyio.sleep(4.0)
            tried = rule.fired
            # Backing off 0.1-0.2, 0.2-0.4, 0.4-0.8 s, then up to 1 s: a handful in 4 s, not thousands.
            assert 3 <= tried <= 12
            assert w.health.expired >= tried  # every 410 counted (plus the watch's own)
            assert w.health.relists >= tried  # every list started again is a relist
            assert batches == []
            proxy.clear()
            await wait_for(lambda: w.health.streams == 1, what="watching again")

    anyio.run(main)


@pytest.mark.slow  # seconds: streams closed, resumed and relisted in turn
def test_closed_resumed_and_relisted_streams_replay_nothing_as_drift_and_one_edit_is_repaired_once(
    sim: testing.SimHandle, proxy: faultproxy.FaultProxy, cluster: str
) -> None:
    async def main() -> None:
        async with watching(sim, proxy, cluster) as (w, batches):
            start = sim.journal_sync(cluster)[-1]["seq"]
            await sim.faults(cluster, {"dropWatches": True, "count": 0})  # closed: resumed from its RV
            await wait_for(lambda: w.health.reconnects >= 1 and w.health.streams == 1, what="resumed")
            await force_relist(sim, cluster)  # HTTP 410: relisted
            await wait_for(lambda: w.health.relists >= 1 and w.health.streams == 1, what="relisted")
            other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "not-ours"}}
            send(sim, cluster, "POST", f"/api/v1/namespaces/{NS}/configmaps", other)
            await sim.compact(cluster)  # the in-stream ERROR 410 after a reconnect: relisted again
            await sim.faults(cluster, {"dropWatches": True, "count": 0})
            await wait_for(lambda: w.health.relists >= 2 and w.health.streams == 1, what="relisted again")
            await anyio.sleep(0.5)
            assert batches == [] and w.repairs == 0  # nothing old replayed as drift, no storm
            assert fleet_writes(sim.journal_sync(cluster, since=start)) == []

            edit = {"data": {"k": "changed"}}
            send(
                sim, cluster, "PATCH", f"/api/v1/namespaces/{NS}/configmaps/one", edit, fieldManager="someone"
            )
            await wait_for(lambda: w.repairs >= 1, what="the edit repaired")
            await anyio.sleep(1.0)
            assert w.repairs == 1  # once, not once per event or per reconnect
            assert len(fleet_writes(sim.journal_sync(cluster, since=start))) == 1

    anyio.run(main)
