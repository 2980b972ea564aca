"""The simulated garbage collector over raw HTTP: dangling owners, multiple owners, chains, blocking finalizers.

Reference: docs/sim.md, "Garbage collection and finalizers", and the real collector's
`attemptToDeleteItem` (a dependent with no live owner is deleted; one with a live owner only loses its
references to missing owners).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fleet.sim import testing
from fleet.sim.storage import store
from tests.sim.kubectl_runner import eventually

CM = "/api/v1/namespaces/default/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["c1"], settings=store.Settings(workload_status=False)) as handle:
        yield handle


@pytest.fixture
def client(sim: testing.SimHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url("c1"), timeout=10.0) as c:
        yield c


def ref(owner: dict[str, Any], *, block: bool = False) -> dict[str, Any]:
    out = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }
    if block:
        out["blockOwnerDeletion"] = True
    return out


def make(
    client: httpx.Client, name: str, *owners: dict[str, Any], finalizers: list[str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owners:
        meta["ownerReferences"] = list(owners)
    if finalizers:
        meta["finalizers"] = finalizers
    r = client.post(CM, json={"metadata": meta})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def exists(client: httpx.Client, name: str) -> bool:
    return client.get(f"{CM}/{name}").status_code == 200


def test_a_dependent_whose_owner_never_existed_is_collected(client: httpx.Client) -> None:
    ghost = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "ghost",
        "uid": "00000000-0000-4000-8000-000000000000",
    }
    make(client, "orphaned", ghost)
    eventually(lambda: not exists(client, "orphaned"), what="dependent of a missing owner collected")


def test_a_reference_to_an_unknown_kind_is_left_alone(client: httpx.Client) -> None:
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "1"}
    make(client, "kept", unknown)
    owner = make(client, "owner")
    make(client, "probe", ref(owner))
    client.delete(f"{CM}/owner")
    eventually(lambda: not exists(client, "probe"), what="the collector having run")
    assert exists(client, "kept")


def test_a_dependent_with_a_live_owner_left_loses_only_the_reference_to_the_gone_one(
    client: httpx.Client,
) -> None:
    a = make(client, "a")
    b = make(client, "b")
    make(client, "shared", ref(a), ref(b))
    client.delete(f"{CM}/a")
    eventually(lambda: len(client.get(f"{CM}/shared").json()["metadata"]["ownerReferences"]) == 1)
    left = client.get(f"{CM}/shared").json()["metadata"]["ownerReferences"]
    assert [r["name"] for r in left] == ["b"]
    client.delete(f"{CM}/b")
    eventually(lambda: not exists(client, "shared"), what="last owner gone")


def test_a_foreground_delete_removes_grandchildren_then_children_then_the_owner(client: httpx.Client) -> None:
    top = make(client, "top")
    mid = make(client, "mid", ref(top, block=True))
    leaf = make(client, "leaf", ref(mid, block=True))
    rv = leaf["metadata"]["resourceVersion"]
    r = client.delete(f"{CM}/top", params={"propagationPolicy": "Foreground"})
    assert r.status_code == 200 and "foregroundDeletion" in r.json()["metadata"]["finalizers"]
    eventually(lambda: not exists(client, "top"), what="owner gone")
    with client.stream(
        "GET", CM, params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"}
    ) as s:
        events = [json.loads(line) for line in s.iter_lines() if line]
    order = [e["object"]["metadata"]["name"] for e in events if e["type"] == "DELETED"]
    assert order == ["leaf", "mid", "top"]


def test_a_foreground_owner_waits_for_a_blocking_dependent_held_by_a_finalizer(client: httpx.Client) -> None:
    owner = make(client, "owner")
    make(client, "held", ref(owner, block=True), finalizers=["example.com/hold"])
    client.delete(f"{CM}/owner", params={"propagationPolicy": "Foreground"})
    eventually(lambda: client.get(f"{CM}/held").json()["metadata"].get("deletionTimestamp") is not None)
    assert exists(client, "owner")
    client.patch(f"{CM}/held", content=json.dumps({"metadata": {"finalizers": None}}), headers=MERGE)
    eventually(lambda: not exists(client, "owner"), what="owner released")
    assert not exists(client, "held")


def test_a_foreground_owner_does_not_wait_for_non_blocking_dependents(client: httpx.Client) -> None:
    owner = make(client, "owner")
    make(client, "loose", ref(owner), finalizers=["example.com/hold"])
    client.delete(f"{CM}/owner", params={"propagationPolicy": "Foreground"})
    eventually(lambda: not exists(client, "owner"), what="owner gone")
    assert client.get(f"{CM}/loose").json()["metadata"]["deletionTimestamp"]


def test_an_orphan_delete_keeps_the_other_owner_references(client: httpx.Client) -> None:
    a = make(client, "a")
    b = make(client, "b")
    make(client, "shared", ref(a), ref(b))
    r = client.delete(f"{CM}/a", params={"propagationPolicy": "Orphan"})
    assert r.status_code == 200 and "orphan" in r.json()["metadata"]["finalizers"]
    eventually(lambda: not exists(client, "a"), what="owner gone")
    assert [x["name"] for x in client.get(f"{CM}/shared").json()["metadata"]["ownerReferences"]] == ["b"]


def test_garbage_collection_writes_are_not_journaled(client: httpx.Client, sim: testing.SimHandle) -> None:
    owner = make(client, "owner")
    make(client, "dep", ref(owner))
    since = sim.journal_sync("c1")[-1]["seq"]
    client.delete(f"{CM}/owner")
    eventually(lambda: not exists(client, "dep"), what="dependent collected")
    mutating = [e for e in sim.journal_sync("c1", since=since) if e["mutated"]]
    assert [(e["method"], e["path"]) for e in mutating] == [("DELETE", f"{CM}/owner")]
