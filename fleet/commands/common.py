"""What every command module shares: running async code under typer, and reporting errors.

Owns: `run` (anyio.run with typer.Exit unwrapped from exception groups), `fail` (message on stderr and a
non-zero exit), `info` (progress and "what was read" lines on stderr). Does not: parse flags for
anyone or hold settings.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import anyio
import typer

from fleet import errors

T = TypeVar("T")


def _first_exit(exc: BaseException) -> BaseException | None:
    """Find a typer.Exit / SystemExit / KeyboardInterrupt inside (nested) exception groups."""
    if isinstance(exc, typer.Exit | SystemExit | KeyboardInterrupt | typer.Abort):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _first_exit(sub)
            if found is not None:
                return found
    return None


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run an async function from a typer command; `typer.Exit` raised inside task groups keeps its code."""
    try:
        return anyio.run(fn, *args)
    except BaseExceptionGroup as group:
        found = _first_exit(group)
        if found is not None:
            raise found from None
        raise


def info(message: str) -> None:
    """A line for the user on stderr (progress, what was read); stdout stays for results."""
    typer.echo(message, err=True)


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print an error on stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    sys.stderr.flush()
    raise typer.Exit(code)


_DURATION = re.compile(
    r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?!s))?(?:(?P<s>\d+(?:\.\d+)?)s)?"
    r"(?:(?P<ms>\d+(?:\.\d+)?)ms)?$"
)


def parse_duration(text: str, *, flag: str) -> float:
    """Seconds from ``1h``, ``5m``, ``90s``, ``1m30s``, ``200ms``, ``0.5s`` or a bare number of seconds.

    Raises `errors.InputError` naming the flag for anything else (negative values included).
    """
    raw = text.strip().lower()
    try:
        return _non_negative(float(raw), text=text, flag=flag)
    except ValueError:
        pass
    m = _DURATION.match(raw)
    if not raw or m is None or not any(m.groups()):
        raise errors.InputError(f"{flag}: {text!r} is not a duration (examples: 30s, 5m, 1m30s, 200ms)")
    parts = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return parts["h"] * 3600 + parts["m"] * 60 + parts["s"] + parts["ms"] / 1000


def _non_negative(value: float, *, text: str, flag: str) -> float:
    if value < 0:
        raise errors.InputError(f"{flag}: {text!r} must not be negative")
    return value
