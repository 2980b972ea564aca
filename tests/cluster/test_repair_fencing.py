"""A drift repair asks, right before each write, whether this process may write to the cluster now
(a replica's shard lease: docs/scaling.md, "Fencing"), over HTTP against `fleet sim`.

Found by `test_a_stale_replicas_writes_held_on_the_wire_past_its_lease_are_refused_as_conflicts_and_it_prunes_nothing`:
a replica resumed after SIGSTOP saw the new owner's writes as drift and repaired two objects 2 ms later,
before the cancel scope whose deadline had passed during the stall cancelled the repair.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from fleet.clients import kube
from fleet.cluster import repair
from fleet.core import model
from fleet.sim import testing
from tests.support.reconcile import writes

CLUSTER = "c1"


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=[CLUSTER]) as handle:
        yield handle


def configmap(name: str, colour: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "labels": {model.LABEL_OWNER: "fleet"}},
        "data": {"colour": colour},
    }


def repaired(sim: testing.SimHandle, objects: list[dict[str, Any]], may_write: Any) -> model.ChangeSet:
    async def main() -> model.ChangeSet:
        kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
        client = kube.Client(
            cluster=CLUSTER, context=kc.context(CLUSTER), settings=kube.Settings(retry_budget=3.0)
        )
        try:
            wanted = {model.ObjectRef.of(o): o for o in objects}
            return (
                await repair.repair_objects(client, wanted, instance="fleet", may_write=may_write)
            ).changes
        finally:
            await client.aclose()

    return anyio.run(main)


def test_a_repair_by_a_replica_that_may_not_write_now_writes_nothing_and_says_so(
    sim: testing.SimHandle,
) -> None:
    # `drifted` exists with other data (an update would configure it), `gone` does not (one would create it)
    assert [c.action for c in repaired(sim, [configmap("drifted", "red")], None).changes] == [
        model.Action.CREATED
    ]
    mark = (sim.journal_sync(CLUSTER) or [{"seq": 0}])[-1]["seq"]
    asked: list[bool] = []

    def may_write() -> bool:
        asked.append(False)
        return False

    changes = repaired(sim, [configmap("drifted", "green"), configmap("gone", "green")], may_write)
    assert sorted(c.action for c in changes.changes) == [model.Action.SKIPPED, model.Action.SKIPPED]
    assert all("may not write to the cluster now" in c.message for c in changes.changes), changes
    assert len(asked) == 2  # asked once per object, right before its write
    assert writes(sim.journal_sync(CLUSTER, since=mark)) == []
    # the same repair by a replica that may write writes both
    changes = repaired(sim, [configmap("drifted", "green"), configmap("gone", "green")], lambda: True)
    assert sorted(c.action.value for c in changes.changes) == sorted(
        [model.Action.CONFIGURED.value, model.Action.CREATED.value]
    )
    assert len(writes(sim.journal_sync(CLUSTER, since=mark))) == 2
