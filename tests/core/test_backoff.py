"""`fleet.core.backoff.delay`: the one backoff rule (kube retries, watch reconnects, engine retries,
notification delivery, drift fights)."""

from __future__ import annotations

from fleet.core import backoff


def test_the_first_failure_waits_between_half_and_all_of_the_base() -> None:
    assert backoff.delay(1, base=2.0, cap=60.0, rng=lambda: 0.0) == 1.0
    assert 1.99 < backoff.delay(1, base=2.0, cap=60.0, rng=lambda: 0.999) < 2.0


def test_each_further_failure_doubles_the_wait_up_to_the_cap() -> None:
    exact = [backoff.delay(n, base=1.0, cap=10.0, jitter=False) for n in range(1, 7)]
    assert exact == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_no_failure_means_no_wait() -> None:
    assert backoff.delay(0, base=1.0, cap=10.0) == 0.0


def test_the_doublings_can_be_bounded_below_the_cap() -> None:
    assert backoff.delay(30, base=1.0, cap=1e9, max_doublings=10, jitter=False) == 1024.0


def test_a_huge_failure_count_is_the_cap_not_an_overflow() -> None:
    assert backoff.delay(10_000, base=1.0, cap=30.0, jitter=False) == 30.0
