"""The demo fleet shipped in the package is the project's own `clusters/` registrations."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_packaged_demo_clusters_are_the_projects_clusters_folder() -> None:
    project = {p.name: p.read_bytes() for p in (ROOT / "clusters").glob("*.yaml")}
    packaged = {p.name: p.read_bytes() for p in (ROOT / "fleet" / "demo" / "clusters").glob("*.yaml")}
    assert len(project) >= 12
    assert packaged == project
