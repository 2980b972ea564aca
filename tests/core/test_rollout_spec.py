"""`spec.rollout` of a bundle read from bundle.yaml: the strategy, its defaults, and a clear PATH:LINE for
every mistake (docs/rollouts.md)."""

from __future__ import annotations

import pytest

from fleet.core import durations, model, repository
from tests.support import repository_builders as rb

B = "bundles/web/bundle.yaml"


def parse(rollout: str) -> model.Repo:
    spec = "  placement:\n    clusterSelector: {}\n" + rollout
    files = {
        "clusters/c1.yaml": rb.cluster_yaml("c1"),
        B: rb.bundle_yaml("web", spec=spec),
        "bundles/web/cm.yaml": rb.configmap("web"),
    }
    data = {k: v.encode() for k, v in files.items()}
    return repository.parse(model.Snapshot(revision=None, files=data))


def test_a_bundle_without_rollout_gets_the_safe_default() -> None:
    repo = parse("")
    got = repo.bundles["web"].rollout
    assert got == model.DEFAULT_ROLLOUT
    assert [w.name for w in got.waves] == ["all"]
    assert got.waves[0].max_concurrency == model.Count(25, percent=True)
    assert got.waves[0].max_failures == model.Count(0)
    assert got.progress_deadline == 600.0 and got.on_failure is model.OnFailure.HALT


def test_every_field_of_a_rollout_is_read() -> None:
    repo = parse(
        "  rollout:\n"
        "    progressDeadline: 2m\n"
        "    onFailure: rollback\n"
        "    waves:\n"
        "      - name: canary\n"
        "        placement: {clusters: [c1]}\n"
        "        maxConcurrency: 1\n"
        "        soak: 30s\n"
        "        approval: after\n"
        "      - name: rest\n"
        '        maxConcurrency: "50%"\n'
        '        maxFailures: "10%"\n'
        "        approval: before\n"
    )
    assert repo.errors == ()
    got = repo.bundles["web"].rollout
    assert got.progress_deadline == 120.0 and got.on_failure is model.OnFailure.ROLLBACK
    canary, rest = got.waves
    assert canary.placement is not None and canary.placement.clusters == ("c1",)
    assert (canary.max_concurrency, canary.soak, canary.approval) == (
        model.Count(1),
        30.0,
        model.Approval.AFTER,
    )
    assert rest.placement is None
    assert rest.max_concurrency == model.Count(50, percent=True) and rest.max_failures == model.Count(
        10, percent=True
    )
    assert rest.approval is model.Approval.BEFORE


@pytest.mark.parametrize(
    ("rollout", "line", "message"),
    [
        (
            "  rollout:\n    waves: []\n",
            9,
            "spec.rollout.waves is empty: list at least one wave (or omit waves)",
        ),
        (
            "  rollout:\n    waves:\n      - name: Canary\n",
            10,
            'spec.rollout.waves[0].name "Canary" is not a DNS-1123 label',
        ),
        ("  rollout:\n    waves:\n      - {name: a}\n      - {name: a}\n", 11, "is used by waves[0] too"),
        (
            "  rollout:\n    waves:\n      - {name: a}\n      - {name: b}\n",
            11,
            "spec.rollout.waves[1] (b) comes after wave a, which has no placement",
        ),
        (
            "  rollout:\n    waves:\n      - {name: a, maxConcurrency: 0}\n",
            10,
            "spec.rollout.waves[0].maxConcurrency must be at least 1, not 0",
        ),
        (
            '  rollout:\n    waves:\n      - {name: a, maxFailures: "120%"}\n',
            10,
            'spec.rollout.waves[0].maxFailures must be between 0% and 100%, not "120%"',
        ),
        (
            "  rollout:\n    waves:\n      - {name: a, soak: soon}\n",
            10,
            "spec.rollout.waves[0].soak: 'soon' is not a duration",
        ),
        (
            "  rollout:\n    waves:\n      - {name: a, approval: later}\n",
            10,
            'spec.rollout.waves[0].approval must be none, before or after, not "later"',
        ),
        (
            "  rollout:\n    onFailure: retry\n",
            9,
            'spec.rollout.onFailure must be halt or rollback, not "retry"',
        ),
        ("  rollout:\n    progressDeadline: 0s\n", 9, "spec.rollout.progressDeadline must be more than 0"),
        ("  rollout:\n    strategy: fast\n", 9, 'unknown field "spec.rollout.strategy"'),
        (
            "  rollout:\n    waves:\n      - {name: a, placement: {}}\n",
            10,
            "spec.rollout.waves[0].placement is empty",
        ),
    ],
)
def test_a_broken_rollout_breaks_the_bundle_with_path_and_line(rollout: str, line: int, message: str) -> None:
    repo = parse(rollout)
    assert "web" in repo.broken_bundles
    problems = [p for p in repo.errors if p.path == B]
    assert any(p.line == line and message in p.message for p in problems), [str(p) for p in problems]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300.0), ("1m30s", 90.0), ("200ms", 0.2), ("1h", 3600.0), (45, 45.0), ("2.5", 2.5)],
)
def test_durations_read_as_people_write_them(text: str | int, seconds: float) -> None:
    assert durations.parse(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1s", "nan", "inf", True, "5 m"])
def test_anything_else_is_not_a_duration(text: str | bool) -> None:
    with pytest.raises(ValueError):
        durations.parse(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "1m30s"), (600, "10m"), (0.2, "200ms"), (0, "0s"), (3600, "1h")]
)
def test_durations_show_in_their_shortest_form(seconds: float, text: str) -> None:
    assert durations.show(seconds) == text
