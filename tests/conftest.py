"""Fixtures shared by every suite. Each area adds its own below (additive edits only)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from fleet.sim import testing
from tests.support import kube

# The line on the differential cases (tests/sim/conftest.py), once per run, over pytest-xdist's workers.
pytest_plugins = ("tests.support.differential_summary",)


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


# ----- the fast inner loop: a test that starts a process is marked slow --------------------------------
#
# `pytest -m "not slow"` is the inner loop (under a minute); a test that starts a process (fleet, kubectl,
# a renderer, Chromium, an API server) takes seconds and belongs in tests/e2e or carries `slow`. A test
# not marked slow that starts one fails at its teardown, naming the program. Seen through Python's audit
# events (PEP 578), so a process started in a thread or by a library counts too.
_SPAWN_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.fork", "os.forkpty", "os.system"})
_spawns: dict[str, list[str]] | None = None  # the running test's node id -> programs started


def _program(event: str, args: tuple[object, ...]) -> str:
    """The program an audit event starts, for the message (`python -m fleet.cli`, `kubectl`, ...)."""
    if event == "subprocess.Popen":  # (executable, args, cwd, env)
        argv = [str(args[1])] if isinstance(args[1], str | bytes) else [str(a) for a in args[1]]
        name = os.path.basename(str(args[0] or argv[0]).split(" ", 1)[0])
        return f"{name} -m {argv[2]}" if argv[1:2] == ["-m"] and len(argv) > 2 else name
    if event in ("os.posix_spawn", "os.system"):
        return os.path.basename(str(args[0]).split(" ", 1)[0])
    return event


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event in _SPAWN_EVENTS and _spawns is not None:
        program = _program(event, args)
        for started in _spawns.values():
            started.append(program)


sys.addaudithook(_audit)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    global _spawns
    _spawns = {item.nodeid: []}
    try:
        return (yield)
    finally:
        _spawns = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    started = (_spawns or {}).get(item.nodeid)
    if report.when == "teardown" and started and item.get_closest_marker("slow") is None and report.passed:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} started {len(started)} process(es) ({', '.join(sorted(set(started)))}) "
            "and is not marked slow: mark it `@pytest.mark.slow` or move it to tests/e2e, so that "
            '`pytest -m "not slow"` stays the fast inner loop'
        )
    return report
