"""Durations on the command line: one parser for every command's time options."""

from __future__ import annotations

import pytest

from fleet.cli import common
from fleet.core import errors


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("45", 45.0),
        ("2.5", 2.5),
        ("0.5", 0.5),
        ("90s", 90.0),
        ("0.5s", 0.5),
        ("5m", 300.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1h2m3s", 3723.0),
        ("200ms", 0.2),
        ("1s500ms", 1.5),
        (" 2M ", 120.0),
    ],
)
def test_a_duration_is_read_in_seconds(text: str, seconds: float) -> None:
    assert common.parse_duration(text, flag="--x") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "soon", "5d", "5x", "m5", "-3", "-1s", "1.2.3s", "m", "5 m", "nan", "inf", "-inf", "1e999"]
)
def test_anything_else_is_an_input_error_naming_the_flag(text: str) -> None:
    with pytest.raises(errors.InputError, match="--timeout"):
        common.parse_duration(text, flag="--timeout")


def test_bounds_are_checked_and_named_in_the_message() -> None:
    with pytest.raises(errors.InputError, match=r"--interval: '0' is below the minimum of 1s"):
        common.parse_duration("0", flag="--interval", minimum=1.0)
    with pytest.raises(errors.InputError, match=r"--interval: '48h' is above the maximum of 24h"):
        common.parse_duration("48h", flag="--interval", maximum=common.DAY)
    assert common.parse_duration("24h", flag="--interval", minimum=1.0, maximum=common.DAY) == common.DAY
