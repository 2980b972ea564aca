"""kr8s (async, one explicit client per cluster) against `fleet sim` over HTTP.

A test that takes `target` is a differential case: it runs on the sim and, marked `real`, on the real API
server too, where what kr8s returned (recorded into the transcript) is compared with the sim's
(tests/sim/conftest.py, docs/sim.md "Differential tests"). kr8s works in the case's own namespace.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import kr8s
import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import ConfigMap

from fleet.sim import testing
from tests.support.differential import Target


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _api(target: Target) -> Any:
    client = await kr8s.asyncio.Api(kubeconfig=target.kubeconfig_doc, bypass_factory=True)
    client.timeout = httpx.Timeout(30.0)
    return client


async def _configmap(api: Any, namespace: str, name: str, labels: dict[str, str] | None = None) -> Any:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    obj = await ConfigMap({"metadata": meta, "data": {"k": "v"}}, api=api)
    await obj.create()
    return obj


async def _watch(api: Any, namespace: str, **params: str) -> list[dict[str, Any]]:
    events = []
    query = {"watch": "true", "timeoutSeconds": "1", **params}
    async with api.call_api(
        "GET", version="v1", namespace=namespace, url="configmaps", params=query, stream=True
    ) as r:
        async for line in r.aiter_lines():
            if line.strip():
                events.append(json.loads(line))
    return events


@pytest.mark.anyio
async def test_kr8s_creates_and_gets_an_object(target: Target) -> None:
    api = await _api(target)
    made = await _configmap(api, target.ns, "one")
    assert made.metadata.uid
    got = await ConfigMap.get("one", namespace=target.ns, api=api)
    assert got.raw["data"] == {"k": "v"} and got.metadata.resourceVersion == made.metadata.resourceVersion
    target.record("made, got", [made.raw, got.raw])


@pytest.mark.anyio
async def test_kr8s_lists_with_a_label_selector(target: Target) -> None:
    api = await _api(target)
    await _configmap(api, target.ns, "web", {"app": "web"})
    await _configmap(api, target.ns, "db", {"app": "db"})
    found = [o async for o in api.get(ConfigMap, namespace=target.ns, label_selector={"app": "web"})]
    assert target.record("found", [o.name for o in found]) == ["web"]


@pytest.mark.anyio
async def test_kr8s_patches_with_merge_and_json_patch(target: Target) -> None:
    api = await _api(target)
    obj = await _configmap(api, target.ns, "p")
    await obj.patch({"data": {"more": "1"}})
    assert target.record("merged", obj.raw)["data"] == {"k": "v", "more": "1"}
    await obj.patch([{"op": "remove", "path": "/data/k"}], type="json")
    again = await ConfigMap.get("p", namespace=target.ns, api=api)
    assert target.record("patched", again.raw)["data"] == {"more": "1"}


@pytest.mark.anyio
async def test_kr8s_deletes_an_object(target: Target) -> None:
    api = await _api(target)
    obj = await _configmap(api, target.ns, "gone")
    await obj.delete()
    assert target.record("exists", await obj.exists()) is False


@pytest.mark.anyio
async def test_kr8s_gets_the_server_error_for_a_conflict(target: Target) -> None:
    api = await _api(target)
    await _configmap(api, target.ns, "dup")
    with pytest.raises(kr8s.ServerError) as caught:
        await _configmap(api, target.ns, "dup")
    assert caught.value.response is not None and caught.value.response.status_code == 409
    assert 'configmaps "dup" already exists' in str(caught.value)
    target.record("error", [caught.value.response.status_code, str(caught.value)])


@pytest.mark.anyio
async def test_a_kr8s_raw_watch_resumes_from_a_resource_version(target: Target) -> None:
    api = await _api(target)
    first = await _configmap(api, target.ns, "a")
    await _configmap(api, target.ns, "b")
    resumed = await _watch(api, target.ns, resourceVersion=first.metadata.resourceVersion)
    events = [(e["type"], e["object"]["metadata"]["name"]) for e in resumed]
    assert target.record("events", events) == [("ADDED", "b")]


@pytest.fixture
async def sim_api(sim: testing.SimHandle) -> Any:
    client = await kr8s.asyncio.Api(kubeconfig=sim.kubeconfig_for("c1"), bypass_factory=True)
    client.timeout = httpx.Timeout(10.0)
    return client


@pytest.mark.anyio
async def test_a_kr8s_raw_watch_sees_410_after_compaction(sim_api: Any, sim: testing.SimHandle) -> None:
    first = await _configmap(sim_api, "default", "a")
    await _configmap(sim_api, "default", "b")
    await sim.compact("c1")
    expired = await _watch(sim_api, "default", resourceVersion=first.metadata.resourceVersion)
    assert [e["type"] for e in expired] == ["ERROR"]
    assert expired[0]["object"]["code"] == 410 and expired[0]["object"]["reason"] == "Expired"


@pytest.mark.anyio
async def test_kr8s_talks_to_a_tls_port_per_cluster_sim_trusting_the_kubeconfig_ca() -> None:
    async with testing.running(names=["t1", "t2"], tls=True, port_per_cluster=True) as sim:
        client = await kr8s.asyncio.Api(kubeconfig=sim.kubeconfig_for("t2"), bypass_factory=True)
        client.timeout = httpx.Timeout(10.0)
        assert (await client.version())["minor"] == "35"
        await _configmap(client, "default", "secure")
        got = await ConfigMap.get("secure", namespace="default", api=client)
        assert got.name == "secure"
        assert [e["method"] for e in await sim.journal("t2")].count("POST") == 1
        assert await sim.journal("t1") == []
