"""A prune's DeleteOptions preconditions against a real API server (tests/support/kube.py), not the sim:
what fleet's client sends is what a real kube-apiserver checks, and its 409 is read as "changed since it
was read" (docs/reconcile.md "Pruning rules"). The late delete itself, held on the wire, is tested
against the sim (tests/cluster/test_prune_preconditions.py, tests/e2e/test_replicas_late_delete.py): a
real server has no `hold` fault, so here the object is changed between fleet's read and its delete."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest

from fleet.clients import kube as fleet_kube
from fleet.cluster import apply
from fleet.core import model, plan
from tests.support import kube

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_a_prune_whose_object_changed_since_it_was_read_deletes_nothing_on_a_real_api_server(
    real_kube: kube.ControlPlane,
) -> None:
    ns = f"pre-{uuid.uuid4().hex[:6]}"
    at = f"/api/v1/namespaces/{ns}/configmaps"
    with real_kube.client("real-1") as api:
        assert api.post("/api/v1/namespaces", json={"metadata": {"name": ns}}).status_code == 201
        made = api.post(at, json={"metadata": {"name": "old"}, "data": {"k": "v"}}).json()["metadata"]
        # Another writer, after fleet read it.
        patch = {"data": {"k": "changed by someone"}}
        headers = {"Content-Type": "application/merge-patch+json"}
        assert api.patch(f"{at}/old", json=patch, headers=headers).status_code == 200
    ref = model.ObjectRef("", "v1", "ConfigMap", ns, "old")
    path = real_kube.kubeconfig(["real-1"])

    async def prune(step: plan.PruneStep) -> tuple[model.ChangeSet, frozenset[model.ObjectRef]]:
        kc = fleet_kube.parse_kubeconfig([(str(path), path.read_bytes())])
        async with fleet_kube.Clients(kc, settings=fleet_kube.Settings(retry_budget=5.0)) as clients:
            return await apply.prune_bundle(
                clients.client("real-1"), plan.BundlePlan("web", plan.Outcome.RUN, prune=(step,))
            )

    stale = plan.PruneStep(
        ref, plan.PruneOp.DELETE, uid=made["uid"], resource_version=made["resourceVersion"]
    )
    changes, keep = anyio.run(prune, stale)
    (change,) = changes.changes
    assert change.action is model.Action.FAILED and change.retriable, change
    assert change.message.startswith(f"{ref}: not pruned: changed since it was read"), change.message
    assert 'Operation cannot be fulfilled on ConfigMap "old": the ResourceVersion in the precondition' in (
        change.message
    )
    assert keep == frozenset({ref})
    with real_kube.client("real-1") as api:
        still: dict[str, Any] = api.get(f"{at}/old").json()
        assert still["data"] == {"k": "changed by someone"}
    # A step without the version reads it first, and deletes at what it read.
    changes, keep = anyio.run(prune, plan.PruneStep(ref, plan.PruneOp.DELETE))
    assert [(c.action, c.message) for c in changes.changes] == [(model.Action.DELETED, "")]
    with real_kube.client("real-1") as api:
        assert api.get(f"{at}/old").status_code == 404
        api.delete(f"/api/v1/namespaces/{ns}")
