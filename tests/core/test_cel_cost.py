"""CEL cost: a budget of counted steps, never seconds, decides what is too expensive; the same placement
comes out of every run, however loaded the machine; the wall clock is only a last-resort safety net."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from fleet.cli import validate as repo_command
from fleet.clients import sources
from fleet.core import cel, errors, model, placement, validation
from tests.support import placement_builders as pb
from tests.support import repository_builders as rb

CM = pb.obj("ConfigMap", "settings", data={"a": "b"})

# Two macros and the cluster's name (so no two clusters share an evaluation): ~120 steps per cluster.
MODERATE = (
    "cluster.facts.zones.exists(z, z.startsWith('z3')) && cluster.facts.addons.all(a, a != 'x3') "
    "&& cluster.name != ''"
)

# Six nested all() over ten elements: a million innermost evaluations.
RUNAWAY = (
    "[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, "
    "[1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, [1,2,3,4,5,6,7,8,9,10].all(f, "
    "a + b + c + d + e + f > 0 && cluster.name != ''))))))"
)


def fleet_of(n: int) -> list[model.Cluster]:
    return [
        pb.cluster(
            f"c{i:04d}",
            labels={"env": ("prod", "dev")[i % 2]},
            facts={"zones": [f"z{j}" for j in range(i % 5 + 1)], "addons": ["a", "b", f"x{i % 7}"]},
        )
        for i in range(n)
    ]


@contextmanager
def cpu_load(workers: int) -> Iterator[None]:
    """`workers` processes spinning on the CPU (this machine has two cores) for the duration."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "import time\nend = time.time() + 120\nwhile time.time() < end: pass"]
        )
        for _ in range(workers)
    ]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=10)


def outcome(result: model.PlacementResult) -> tuple[object, object]:
    return result.bundles, result.errors


@pytest.mark.slow
def test_the_same_placement_comes_out_of_every_run_and_under_cpu_load_for_a_moderately_expensive_expression() -> (
    None
):
    repo = pb.repo(fleet_of(2000), [pb.bundle("zonal", [CM], placement=pb.placement(cel=MODERATE))])
    first = outcome(placement.place(repo))
    second = outcome(placement.place(repo))
    with cpu_load(4):
        loaded = outcome(placement.place(repo))
    assert first == second == loaded
    placed, errs = first
    assert errs == {}  # within every budget: no pair fails, whatever the load
    assert len(placed["zonal"]) == 685  # type: ignore[index]


def test_an_expression_over_its_cost_budget_is_an_error_for_each_pair_naming_the_bundle_and_the_budget() -> (
    None
):
    clusters = fleet_of(3)
    repo = pb.repo(clusters, [pb.bundle("heavy", [CM], placement=pb.placement(cel=RUNAWAY))])
    first = placement.place(repo)
    assert first.bundles["heavy"] == ()
    assert sorted(first.errors["heavy"]) == ["c0000", "c0001", "c0002"]
    for message in first.errors["heavy"].values():
        assert message == (
            "cel: the placement of bundle 'heavy' exceeded its cost budget of 10,000 steps on this cluster "
            "(see docs/placement.md)"
        )
        assert not placement.transient(message)
    explained = first.explanations["heavy"]["c0000"][-1]
    assert (explained.clause, explained.held) == ("cel", None)
    # Deterministic: the same errors again, and `fleet validate` reports them at the line of `cel`.
    assert placement.place(repo).errors == first.errors
    problems = [p for p in validation.check(repo) if p.severity is model.Severity.ERROR]
    assert [(p.line, p.cluster) for p in problems] == [(7, "c0000"), (7, "c0001"), (7, "c0002")]
    assert all("bundle 'heavy'" in p.message and "10,000 steps" in p.message for p in problems)


def test_a_bundle_whose_cel_costs_more_than_its_total_budget_is_an_error_on_every_cluster_it_was_evaluated_on() -> (
    None
):
    clusters = fleet_of(50)
    spec = pb.placement(cluster_selector=pb.selector({"env": "prod"}), cel=MODERATE)
    repo = pb.repo(clusters, [pb.bundle("zonal", [CM], placement=spec)])
    fine = placement.place(repo, total_budget=100_000)
    assert fine.errors == {} and len(fine.bundles["zonal"]) == 8
    over = placement.place(repo, total_budget=1_000)
    assert over.bundles["zonal"] == ()
    # The 25 clusters the selector admits are in error; the other 25 are simply not selected.
    assert sorted(over.errors["zonal"]) == [c.name for c in clusters if c.labels["env"] == "prod"]
    assert set(over.errors["zonal"].values()) == {
        "cel: the placement of bundle 'zonal' exceeded its cost budget of 1,000 steps over 25 clusters "
        "(see docs/placement.md)"
    }
    assert placement.place(repo, total_budget=1_000).errors == over.errors


def test_the_size_of_operands_counts_against_the_budget_so_a_huge_fact_cannot_hide_its_cost() -> None:
    blob = "a" * 2_000_000
    act = {"cluster": {"name": "big", "labels": {}, "annotations": {}, "facts": {"blob": blob}}}
    for source in (
        "cluster.facts.blob.matches('needle')",
        "[1, 2, 3].map(a, [1, 2, 3].map(b, cluster.facts.blob + cluster.facts.blob)).size() > 0",
        "cluster.facts.blob.contains('needle')",
    ):
        with pytest.raises(cel.BudgetExceeded) as info:
            cel.evaluate(cel.compile(source), act)
        assert "cost budget of 10,000 steps" in str(info.value)
    # One step per 100 characters of the operands (a 2,000,000-character string: 20,000 steps).
    program = cel.compile("cluster.facts.blob.contains('b')")
    costs = [
        cel.run(program, {"cluster": {**act["cluster"], "facts": {"blob": "a" * n}}}).cost for n in (10, 1000)
    ]
    assert costs[1] - costs[0] == 10


def test_a_safety_net_stop_is_an_error_for_the_pair_that_placement_never_caches() -> None:
    repo = pb.repo(fleet_of(3), [pb.bundle("heavy", [CM], placement=pb.placement(cel=RUNAWAY))])
    cache = placement.PlacementCache()
    result = placement.place(repo, cache=cache, budget=10**9, time_limit=0.05)
    messages = list(result.errors["heavy"].values())
    assert len(messages) == 3 and all(placement.transient(m) for m in messages)
    assert "wall-clock safety net" in messages[0]
    assert "not evaluated on this cluster" in messages[1]
    assert cache.entries == {}  # a clock decided: evaluate again next time


def test_an_invalid_expression_is_an_error_on_every_cluster_the_other_clauses_admit() -> None:
    # A program that cannot be compiled (here: bypassing validation) is an error, never "not selected".
    repo = pb.repo(fleet_of(4), [pb.bundle("typo", [CM], placement=pb.placement(cel="cluster.nope == 1"))])
    result = placement.place(repo)
    assert result.bundles["typo"] == ()
    assert sorted(result.errors["typo"]) == ["c0000", "c0001", "c0002", "c0003"]
    assert all("cluster has no field 'nope'" in m for m in result.errors["typo"].values())
    with pytest.raises(errors.PlacementError):
        cel.compile("cluster.nope == 1")


@pytest.mark.slow
def test_fleet_validate_evaluates_cel_in_a_worker_thread_so_its_event_loop_keeps_running(
    tmp_path: Path,
) -> None:
    # ~7,500 steps per cluster over 200 clusters: a second or more of CEL for validate's checks.
    ten = "[1,2,3,4,5,6,7,8,9,10]"
    heavy = f"{ten}.all(a, [1,2,3,4].all(b, [1,2,3].all(c, a + b + c > 0 && cluster.name != '')))"
    files = {f"clusters/c{i:03d}.yaml": rb.cluster_yaml(f"c{i:03d}") for i in range(200)}
    files["bundles/heavy/bundle.yaml"] = rb.bundle_yaml("heavy", spec=f'  placement:\n    cel: "{heavy}"\n')
    files["bundles/heavy/cm.yaml"] = rb.configmap("settings")
    rb.write_files(tmp_path, files)
    gaps: list[float] = []

    async def main() -> int:
        done = anyio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await anyio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            started = time.monotonic()
            code = await repo_command._validate(str(tmp_path), None, "", sources.Settings())
            assert time.monotonic() - started > 0.5  # long enough for a stall to show
            done.set()
        return code

    assert anyio.run(main) == 0
    assert max(gaps) < 0.5, max(gaps)  # the old code stalled for the whole check (6 s here)
