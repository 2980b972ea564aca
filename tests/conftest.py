"""Fixtures shared by every suite. Each area adds its own below (additive edits only)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fleet.sim import testing
from tests.support import kube


@pytest.fixture
def fleet_sim() -> Iterator[testing.SimHandle]:
    """Two simulated clusters (`sim-001`, `sim-002`) served over HTTP by `fleet sim` in a background thread.

    `fleet_sim.kubeconfig` is a kubeconfig file (context = cluster name), `fleet_sim.kubeconfig_for(name)`
    a one-cluster kubeconfig dict for kr8s, `fleet_sim.url(name)` the base URL; faults, compaction and the
    request journal have sync (`faults_sync`) and async (`await faults`) forms. See docs/sim.md.
    """
    with testing.serving(clusters=2) as handle:
        yield handle


# The real control plane and Jaeger (tests/support/kube.py, docs/real-cluster.md), for tests marked `real`.
def _require_real(names: tuple[str, ...] = kube.ALL_PROGRAMS) -> None:
    """Skip with one line when the programs are not built; under CI (CI=true) that is a failure."""
    reason = kube.skip_reason(names)
    if reason is None:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason} (CI=true: the real tests must run, not be skipped)", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("real") is not None:
        _require_real(kube.programs_for(getattr(item, "fixturenames", ())))


@pytest.fixture(scope="session")
def real_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kube.ControlPlane]:
    """etcd with two API servers over it (`real-1`, `real-2`), each with a controller-manager, for the session.

    `real_kube.clusters(n)` starts more (`real-3`, ...); `real_kube.kubeconfig(names, user=...)` writes a
    kubeconfig (contexts named after clusters; user `admin` or `limited`); `real_kube.client(name, user=...)`
    is an httpx client. The clusters live for the whole session: use unique namespaces.
    """
    _require_real(kube.CONTROL_PLANE)
    with kube.control_plane(tmp_path_factory.mktemp("real-kube"), clusters=2) as plane:
        yield plane


@pytest.fixture(scope="session")
def real_jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kube.Jaeger]:
    """Jaeger all-in-one (memory storage) for the session: `.otlp_url` to export to, `.trace(id)` to read."""
    _require_real(("jaeger",))
    with kube.jaeger(tmp_path_factory.mktemp("real-jaeger")) as handle:
        yield handle
