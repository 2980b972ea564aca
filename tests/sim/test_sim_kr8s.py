"""kr8s (async, one explicit client per cluster) against `fleet sim` over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import kr8s
import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import ConfigMap

from fleet.sim import testing


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def api(sim: testing.SimHandle) -> AsyncIterator[Any]:
    client = await kr8s.asyncio.Api(kubeconfig=sim.kubeconfig_for("c1"), bypass_factory=True)
    client.timeout = httpx.Timeout(10.0)
    yield client


async def _configmap(api: Any, name: str, labels: dict[str, str] | None = None) -> Any:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if labels:
        meta["labels"] = labels
    obj = await ConfigMap({"metadata": meta, "data": {"k": "v"}}, api=api)
    await obj.create()
    return obj


async def _watch(api: Any, **params: str) -> list[dict[str, Any]]:
    events = []
    query = {"watch": "true", "timeoutSeconds": "1", **params}
    async with api.call_api(
        "GET", version="v1", namespace="default", url="configmaps", params=query, stream=True
    ) as r:
        async for line in r.aiter_lines():
            if line.strip():
                events.append(json.loads(line))
    return events


@pytest.mark.anyio
async def test_kr8s_creates_and_gets_an_object(api: Any) -> None:
    made = await _configmap(api, "one")
    assert made.metadata.uid
    got = await ConfigMap.get("one", namespace="default", api=api)
    assert got.raw["data"] == {"k": "v"} and got.metadata.resourceVersion == made.metadata.resourceVersion


@pytest.mark.anyio
async def test_kr8s_lists_with_a_label_selector(api: Any) -> None:
    await _configmap(api, "web", {"app": "web"})
    await _configmap(api, "db", {"app": "db"})
    found = [o async for o in api.get(ConfigMap, namespace="default", label_selector={"app": "web"})]
    assert [o.name for o in found] == ["web"]


@pytest.mark.anyio
async def test_kr8s_patches_with_merge_and_json_patch(api: Any) -> None:
    obj = await _configmap(api, "p")
    await obj.patch({"data": {"more": "1"}})
    assert obj.raw["data"] == {"k": "v", "more": "1"}
    await obj.patch([{"op": "remove", "path": "/data/k"}], type="json")
    again = await ConfigMap.get("p", namespace="default", api=api)
    assert again.raw["data"] == {"more": "1"}


@pytest.mark.anyio
async def test_kr8s_deletes_an_object(api: Any) -> None:
    obj = await _configmap(api, "gone")
    await obj.delete()
    assert not await obj.exists()


@pytest.mark.anyio
async def test_kr8s_gets_the_server_error_for_a_conflict(api: Any) -> None:
    await _configmap(api, "dup")
    with pytest.raises(kr8s.ServerError) as caught:
        await _configmap(api, "dup")
    assert caught.value.response is not None and caught.value.response.status_code == 409
    assert 'configmaps "dup" already exists' in str(caught.value)


@pytest.mark.anyio
async def test_a_kr8s_raw_watch_resumes_from_a_resource_version_and_sees_410_after_compaction(
    api: Any, sim: testing.SimHandle
) -> None:
    first = await _configmap(api, "a")
    await _configmap(api, "b")
    resumed = await _watch(api, resourceVersion=first.metadata.resourceVersion)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in resumed] == [("ADDED", "b")]
    await sim.compact("c1")
    expired = await _watch(api, resourceVersion=first.metadata.resourceVersion)
    assert [e["type"] for e in expired] == ["ERROR"]
    assert expired[0]["object"]["code"] == 410 and expired[0]["object"]["reason"] == "Expired"


@pytest.mark.anyio
async def test_kr8s_whoami_gets_an_admin_user(api: Any) -> None:
    assert await api.whoami() == "kubernetes-admin"


@pytest.mark.anyio
async def test_kr8s_talks_to_a_tls_port_per_cluster_sim_trusting_the_kubeconfig_ca() -> None:
    async with testing.running(names=["t1", "t2"], tls=True, port_per_cluster=True) as sim:
        client = await kr8s.asyncio.Api(kubeconfig=sim.kubeconfig_for("t2"), bypass_factory=True)
        client.timeout = httpx.Timeout(10.0)
        assert (await client.version())["minor"] == "35"
        await _configmap(client, "secure")
        got = await ConfigMap.get("secure", namespace="default", api=client)
        assert got.name == "secure"
        assert [e["method"] for e in await sim.journal("t2")].count("POST") == 1
        assert await sim.journal("t1") == []
