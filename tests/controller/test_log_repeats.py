"""`telemetry.RepeatFilter`: a flood of one identical line cannot flood the log; different lines pass."""

from __future__ import annotations

import logging

import pytest

from fleet.controller import telemetry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Logged = tuple[logging.Logger, list[str], telemetry.RepeatFilter, Clock]


@pytest.fixture
def logged() -> Logged:
    clock = Clock()
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect()
    repeat = telemetry.RepeatFilter(window=10.0, burst=3, clock=clock)
    handler.addFilter(repeat)
    logger = logging.getLogger("fleet.test.repeats")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, lines, repeat, clock


def test_five_thousand_identical_lines_in_a_window_show_three_then_one_summary(logged: Logged) -> None:
    logger, lines, repeat, clock = logged
    for _ in range(5000):
        logger.warning("webhook refused: %s signature", "invalid")
    assert lines == ["webhook refused: invalid signature"] * 3
    clock.now += 10
    logger.warning("webhook refused: %s signature", "invalid")
    assert lines[-1] == "webhook refused: invalid signature [and 4997 more identical lines not shown in 10s]"
    assert repeat.suppressed_total == 4997


def test_lines_that_differ_are_never_held_back(logged: Logged) -> None:
    logger, lines, _repeat, _clock = logged
    for i in range(100):
        logger.info("cluster c%d: Synced", i)
    assert len(lines) == 100


def test_flush_reports_what_a_finished_window_held_back_once(logged: Logged) -> None:
    logger, _lines, repeat, clock = logged
    for _ in range(10):
        logger.error("HTTP API: cannot accept connections: Too many open files; pausing")
    assert repeat.flush() == []  # the window is still open
    clock.now += 11
    assert repeat.flush() == [
        (
            "fleet.test.repeats",
            logging.ERROR,
            "HTTP API: cannot accept connections: Too many open files; pausing "
            "[and 7 more identical lines not shown in 10s]",
        )
    ]
    assert repeat.flush() == []


def test_the_number_of_distinct_lines_remembered_is_bounded(logged: Logged) -> None:
    logger, _lines, repeat, _clock = logged
    for i in range(5000):
        logger.info("line %d", i)
    assert len(repeat._seen) == repeat.max_keys
