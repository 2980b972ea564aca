"""Fixtures shared by every suite. Each area adds its own below (additive edits only)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fleet.sim import testing


@pytest.fixture
def fleet_sim() -> Iterator[testing.SimHandle]:
    """Two simulated clusters (`sim-001`, `sim-002`) served over HTTP by `fleet sim` in a background thread.

    `fleet_sim.kubeconfig` is a kubeconfig file (context = cluster name), `fleet_sim.kubeconfig_for(name)`
    a one-cluster kubeconfig dict for kr8s, `fleet_sim.url(name)` the base URL; faults, compaction and the
    request journal have sync (`faults_sync`) and async (`await faults`) forms. See docs/sim.md.
    """
    with testing.serving(clusters=2) as handle:
        yield handle
