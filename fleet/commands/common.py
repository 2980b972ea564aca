"""What every command module shares: running async code under typer, and reporting errors.

Owns: `run` (anyio.run with typer.Exit unwrapped from exception groups), `fail` (message on stderr and a
non-zero exit), `info` (progress and "what was read" lines on stderr). Does not: parse flags for
anyone or hold settings.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import anyio
import typer

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
