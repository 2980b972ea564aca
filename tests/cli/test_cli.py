"""The `fleet` program's global surface."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fleet

# Every test here starts processes (python -m fleet.cli): `slow`, outside the fast inner loop.
pytestmark = pytest.mark.slow


def test_fleet_version_prints_the_package_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == f"fleet {fleet.__version__}"


def _modules_loaded_by(*argv: str) -> set[str]:
    """The fleet modules a `fleet ARGV` process has imported when the command ends."""
    code = (
        "import sys\n"
        f"sys.argv = ['fleet', *{list(argv)!r}]\n"
        "import fleet.cli\n"
        "try:\n"
        "    fleet.cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('fleet'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(out.stdout.splitlines()[-1].split())


def test_a_command_loads_only_its_own_module_not_every_other_command() -> None:
    loaded = _modules_loaded_by("sync", "--help")
    assert "fleet.cli.sync" in loaded
    others = {"fleet.cli.serve", "fleet.cli.demo", "fleet.cli.history", "fleet.cli.sim", "fleet.cli.rollout"}
    assert not loaded & others, sorted(loaded & others)
    assert not any(m.startswith("fleet.controller") for m in loaded), sorted(
        m for m in loaded if m.startswith("fleet.controller")
    )
    assert (
        "fleet.core.cel" not in loaded
    )  # cel-python only for a revision that has CEL (fleet.core.placement)


def test_the_help_of_fleet_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "--help"], capture_output=True, text=True, check=True, timeout=60
    )
    commands = ("sim", "validate", "plan", "render", "sync", "diff", "serve", "status", "demo", "rollout")
    for command in (*commands, "history"):
        assert f" {command} " in out.stdout, command


def test_an_unknown_command_is_an_error_that_names_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "synk"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "synk" in out.stderr
