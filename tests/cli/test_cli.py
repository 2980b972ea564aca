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
