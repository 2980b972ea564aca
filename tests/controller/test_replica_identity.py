"""A replica's identity (fleet.controller.replicas.new_identity): a lease label, unique per process."""

from __future__ import annotations

import pytest

from fleet.controller import replicas
from fleet.core import leases


@pytest.mark.parametrize("host", ["fleet-7d9c5-x2x4q", "Node_1.example.COM", "a" * 80, "", "---"])
def test_a_replica_id_is_a_short_label_made_from_the_host_and_a_random_tail(host: str) -> None:
    one, two = replicas.new_identity(host), replicas.new_identity(host)
    assert one != two  # a restarted process never takes its predecessor for itself
    for rid in (one, two):
        assert leases.check_replica_id(rid) == rid
        assert len(leases.replica_lease(instance="fleet", replica=rid)) <= 63
    assert replicas.new_identity("Node_1.example.COM").startswith("node-1-example-com-")
