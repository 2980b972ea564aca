"""Deletion cascades of the simulated garbage collector: background, foreground and orphan."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

CM = "/api/v1/namespaces/default/configmaps"


def eventually(check: Callable[[], bool], *, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def owner_and_dependent(
    client: httpx.Client, *, block: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    owner = client.post(CM, json={"metadata": {"name": "owner"}}).json()
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    if block:
        ref["blockOwnerDeletion"] = True
    dep = client.post(CM, json={"metadata": {"name": "dependent", "ownerReferences": [ref]}}).json()
    return owner, dep


def exists(client: httpx.Client, name: str) -> bool:
    return client.get(f"{CM}/{name}").status_code == 200


def test_a_background_delete_removes_dependents_after_the_owner(client: httpx.Client) -> None:
    owner_and_dependent(client)
    assert client.delete(CM + "/owner").status_code == 200
    assert not exists(client, "owner")
    eventually(lambda: not exists(client, "dependent"))


def test_a_dependent_with_another_live_owner_survives(client: httpx.Client) -> None:
    owner, _ = owner_and_dependent(client)
    other = client.post(CM, json={"metadata": {"name": "other"}}).json()
    refs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]},
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": other["metadata"]["uid"]},
    ]
    client.post(CM, json={"metadata": {"name": "shared", "ownerReferences": refs}})
    client.delete(CM + "/owner")
    eventually(lambda: not exists(client, "dependent"))
    assert exists(client, "shared")


def test_a_foreground_delete_keeps_the_owner_until_blocking_dependents_are_gone(client: httpx.Client) -> None:
    owner_and_dependent(client, block=True)
    r = client.delete(CM + "/owner", params={"propagationPolicy": "Foreground"})
    meta = r.json()["metadata"]
    assert r.status_code == 200 and meta["deletionTimestamp"] and "foregroundDeletion" in meta["finalizers"]
    eventually(lambda: not exists(client, "dependent"))
    eventually(lambda: not exists(client, "owner"))


@pytest.mark.parametrize("how", ["query", "body"])
def test_an_orphan_delete_leaves_dependents_without_the_owner_reference(
    client: httpx.Client, how: str
) -> None:
    owner_and_dependent(client)
    if how == "query":
        client.delete(CM + "/owner", params={"propagationPolicy": "Orphan"})
    else:
        client.request("DELETE", CM + "/owner", json={"kind": "DeleteOptions", "propagationPolicy": "Orphan"})
    eventually(lambda: not exists(client, "owner"))
    dep = client.get(CM + "/dependent").json()
    assert "ownerReferences" not in dep["metadata"]
