"""The store's history: exact lists at any retained resourceVersion and watch replays are consistent.

Property tests on `fleet.sim.storage.store.Cluster` in-process (no HTTP): after any sequence of creates,
updates and deletes, a list at an older resourceVersion equals the state recorded at that version, and
replaying the watch events after it leads to the current state.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.sim import status
from fleet.sim.kinds import types
from fleet.sim.storage import selectors, store

NAMES = st.sampled_from(["a", "b", "c", "d"])
OPS = st.lists(
    st.tuples(st.sampled_from(["create", "update", "delete"]), NAMES, st.integers(0, 3)), max_size=30
)


def _state(cluster: store.Cluster, rtype: types.ResourceType, at: int) -> dict[str, str]:
    listed = cluster.list(rtype, "default", at=at, exact=True)
    return {s.obj["metadata"]["name"]: s.obj.get("data", {}).get("v", "") for s in listed.items}


@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_exact_lists_and_watch_replays_agree_with_the_recorded_history(
    ops: list[tuple[str, str, int]],
) -> None:
    cluster = store.Cluster("prop", settings=store.Settings(namespace_defaults=False))
    rtype = cluster.registry.get("", "v1", "configmaps")
    assert rtype is not None
    live: dict[str, str] = {}
    recorded = {cluster.rv: dict(live)}
    for op, name, value in ops:
        old = cluster.find(rtype, "default", name)
        if op == "create" and old is None:
            cluster.create(
                rtype, "default", {"metadata": {"name": name}, "data": {"v": str(value)}}, manager="t"
            )
            live[name] = str(value)
        elif op == "update" and old is not None:
            new = old.copy()
            new["data"] = {"v": str(value)}
            cluster.commit_update(rtype, old, new)
            live[name] = str(value)
        elif op == "delete" and old is not None:
            cluster.delete(rtype, "default", name)
            del live[name]
        recorded[cluster.rv] = dict(live)
    for rv, expected in recorded.items():
        assert _state(cluster, rtype, rv) == expected
        # Replaying the watch from rv onto the state at rv gives the current state.
        w = cluster.watch(rtype, "default", labels=selectors.EVERYTHING, fields=selectors.NO_FIELDS, since=rv)
        state = dict(expected)
        for raw in w.queue:
            event = json.loads(raw)
            obj_name = event["object"]["metadata"]["name"]
            if event["type"] == "DELETED":
                del state[obj_name]
            else:
                state[obj_name] = event["object"].get("data", {}).get("v", "")
        cluster.unwatch(w)
        assert state == live


def test_compaction_makes_older_exact_lists_expire() -> None:
    cluster = store.Cluster("prop", settings=store.Settings(namespace_defaults=False))
    rtype = cluster.registry.get("", "v1", "configmaps")
    assert rtype is not None
    cluster.create(rtype, "default", {"metadata": {"name": "x"}}, manager="t")
    old = cluster.rv
    cluster.create(rtype, "default", {"metadata": {"name": "y"}}, manager="t")
    cluster.compact()
    with pytest.raises(status.ApiError) as caught:
        cluster.list(rtype, "default", at=old, exact=True)
    assert caught.value.code == 410


def test_history_beyond_its_bound_is_forgotten_per_resource() -> None:
    cluster = store.Cluster("bounded", settings=store.Settings(history=3, namespace_defaults=False))
    rtype = cluster.registry.get("", "v1", "configmaps")
    secrets = cluster.registry.get("", "v1", "secrets")
    assert rtype is not None and secrets is not None
    start = cluster.rv
    for i in range(5):
        cluster.create(rtype, "default", {"metadata": {"name": f"c{i}"}}, manager="t")
    with pytest.raises(status.ApiError) as caught:
        cluster.list(rtype, "default", at=start + 1, exact=True)
    assert caught.value.code == 410
    assert len(cluster.list(rtype, "default", at=start + 3, exact=True).items) == 3
    expired = cluster.watch(rtype, None, labels=selectors.EVERYTHING, fields=selectors.NO_FIELDS, since=start)
    assert json.loads(expired.queue[0])["object"]["code"] == 410
    # Another resource's history is its own: nothing happened to secrets, so a resume there is fine.
    fine = cluster.watch(secrets, None, labels=selectors.EVERYTHING, fields=selectors.NO_FIELDS, since=start)
    assert list(fine.queue) == []
