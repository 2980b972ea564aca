"""The `fleet` program: one typer app whose commands live in `fleet.cli.*`.

Owns: the app object, global options (`--version`), and the import of every command module. Each command
module builds settings from its flags and calls one layer; none holds logic of its own. Async commands go
through `fleet.cli.common.run`, never as bare `async def` (typer would silently never await them).
"""

from __future__ import annotations

import sys

import typer

import fleet
from fleet.cli import demo, diff, history, plan, rollout, serve, sim, status, sync, validate

app = typer.Typer(
    name="fleet",
    help="Multi-cluster GitOps: one Git repository, a fleet of Kubernetes clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleet {fleet.__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """fleet: one Git repository, a fleet of Kubernetes clusters."""


# Each command module exposes `register(app)`; listed here so the CLI surface is one place to read.
for _module in (sim, validate, plan, sync, diff, serve, status, demo, rollout, history):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
