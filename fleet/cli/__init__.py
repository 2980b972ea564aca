"""The `fleet` program: one typer app whose commands live in `fleet.cli.*`.

Owns: the app (`build`), global options (`--version`), and which module holds which command
(`COMMANDS`). Each command module builds settings from its flags and calls one layer; none holds logic
of its own. Async commands go through `fleet.cli.common.run`, never as bare `async def` (typer would
silently never await them).

A run imports only the module of the command it names (`main`): `fleet sync` never loads the
controller, the demo or the simulator (docs/benchmarks.md: a third of a second of every start). `fleet`
alone, `--help`, `--version` or an unknown command get the whole app; so does `fleet.cli.app` (tests).
"""

from __future__ import annotations

import sys
from typing import Any

import typer

import fleet

# Command -> the module of `fleet.cli` that registers it (`register(app)`), in the order `--help` lists
# them; the CLI surface is one place to read.
COMMANDS = {
    "sim": "sim",
    "validate": "validate",
    "plan": "plan",
    "render": "plan",
    "sync": "sync",
    "diff": "diff",
    "serve": "serve",
    "status": "status",
    "demo": "demo",
    "rollout": "rollout",
    "history": "history",
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleet {fleet.__version__}")
        raise typer.Exit(0)


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """fleet: one Git repository, a fleet of Kubernetes clusters."""


def build(command: str | None = None) -> typer.Typer:
    """The `fleet` app with every command, or with only `command`'s module loaded (a known command)."""
    app = typer.Typer(
        name="fleet",
        help="Multi-cluster GitOps: one Git repository, a fleet of Kubernetes clusters.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    wanted = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module in wanted:
        _register(module, app)
    return app


def _register(module: str, app: typer.Typer) -> None:
    """Import one command module (a plain import, so the import graph sees it) and add its commands."""
    match module:
        case "sim":
            from fleet.cli import sim

            sim.register(app)
        case "validate":
            from fleet.cli import validate

            validate.register(app)
        case "plan":
            from fleet.cli import plan

            plan.register(app)
        case "sync":
            from fleet.cli import sync

            sync.register(app)
        case "diff":
            from fleet.cli import diff

            diff.register(app)
        case "serve":
            from fleet.cli import serve

            serve.register(app)
        case "status":
            from fleet.cli import status

            status.register(app)
        case "demo":
            from fleet.cli import demo

            demo.register(app)
        case "rollout":
            from fleet.cli import rollout

            rollout.register(app)
        case "history":
            from fleet.cli import history

            history.register(app)
        case _:
            raise ValueError(f"no command module {module!r}")


def command_of(argv: list[str]) -> str | None:
    """The command an argument list names: its first argument when that is not an option."""
    return argv[0] if argv and not argv[0].startswith("-") else None


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole app, built on first use
        app = build()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point."""
    try:
        build(command_of(sys.argv[1:]))()
    except KeyboardInterrupt:
        sys.exit(130)
