"""Fixtures for the `fleet sim` suites: a fresh simulated server per test (cheap: a thread and a socket)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from fleet.sim import testing
from fleet.sim.storage import store
from tests.support import differential, differential_summary, kube

# Short waits so tests of "future resourceVersion" and bookmarks stay fast; no controller-made objects or
# status changes, so each test sees exactly what it wrote (tests of those controllers use the defaults).
FAST = store.Settings(rv_wait=0.3, bookmark_interval=0.3, namespace_defaults=False, workload_status=False)


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    """Two path-prefixed clusters, `c1` and `c2`."""
    with testing.serving(names=["c1", "c2"], settings=FAST) as handle:
        yield handle


@pytest.fixture
def client(sim: testing.SimHandle) -> Iterator[httpx.Client]:
    """An HTTP client rooted at cluster `c1`."""
    with httpx.Client(base_url=sim.url("c1"), timeout=10.0) as c:
        yield c


# ----- differential cases: the same case on the sim and on the real API server ----------------------
#
# A test that takes `target` runs twice: `[sim]` against a fresh sim, `[real]` (marked real and slow)
# against the real API server, and the `[real]` run also repeats the case on a fresh sim and compares the
# two normalised transcripts (tests/support/differential.py, docs/sim.md "Differential tests"). A case
# marked `differs(...)` is a known difference: it must go on differing (else it fails: the table in
# docs/sim.md is out of date).

QUIET = kube.QUIET
# No controller that writes into new namespaces or into workloads: what a case sees is what it wrote.
QUIET_CONTROLLERS = kube.QUIET_CONTROLLERS
SIM_RUNS = pytest.StashKey[
    dict[str, list[dict[str, Any]]]
]()  # real variant's node id -> the sim run's transcript


@pytest.fixture(params=["sim", pytest.param("real", marks=[pytest.mark.real, pytest.mark.slow])])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[differential.Target]:
    if request.param == "sim":
        with differential.sim_target(tmp_path / "sim") as t:
            yield t
        return
    plane: kube.ControlPlane = request.getfixturevalue("real_kube")
    plane.cluster_with(QUIET, controllers=QUIET_CONTROLLERS)
    with differential.real_target(plane, QUIET, tmp_path / "real") as t:
        yield t


def _twin(item: pytest.Function, workdir: Path) -> list[dict[str, Any]]:
    """Run the case on a fresh sim; its normalised transcript. The sim must pass its own case."""
    names = item._fixtureinfo.argnames
    callspec = getattr(item, "callspec", None)
    params = set(callspec.params) if callspec else set()
    stray = set(names) - {"target", "tmp_path", "anyio_backend"} - params
    if stray:
        raise pytest.UsageError(f"{item.nodeid}: a differential case takes only target and tmp_path: {stray}")
    with differential.sim_target(workdir) as twin:
        kwargs = {name: item.funcargs[name] for name in names}
        kwargs["target"] = twin
        if inspect.iscoroutinefunction(item.obj):
            anyio.run(functools.partial(item.obj, **kwargs))
        else:
            item.obj(**kwargs)
        return differential.normalise(twin.transcript, twin.ns)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    real = pyfuncitem.funcargs.get("target")
    if not isinstance(real, differential.Target):
        return (yield)
    runs = pyfuncitem.config.stash.setdefault(SIM_RUNS, {})
    if not real.real:
        result = yield  # the [sim] variant: kept for its [real] variant when it passed
        runs[pyfuncitem.nodeid.replace("[sim", "[real", 1)] = differential.normalise(real.transcript, real.ns)
        return result
    # The [sim] variant's run of this session when there was one (it runs first), else a fresh one.
    sim_transcript = runs.pop(pyfuncitem.nodeid, None) or _twin(pyfuncitem, real.cache_dir.parent / "twin")
    failure: BaseException | None = None
    result: object = None
    try:
        result = yield
    except Exception as e:  # the real server's answers failed the case's own checks: compare anyway
        failure = e
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        real.transcript.add({"failed": f"{type(e).__name__}: {first}"})
    diff = differential.compare(sim_transcript, differential.normalise(real.transcript, real.ns))
    known = pyfuncitem.get_closest_marker("differs")
    outcome = "agree" if not diff else "known" if known else "differ"
    differential_summary.record(pyfuncitem.config, pyfuncitem.nodeid, outcome)
    if known:
        if not diff:
            pytest.fail(
                "the sim and the real API server agree now: remove @differs and its row in docs/sim.md",
                pytrace=False,
            )
        return None
    if diff:
        raise AssertionError(f"the sim and the real API server differ:\n{diff}") from failure
    if failure is not None:
        raise failure
    return result
