"""docs/reliability.md names, for every fault, the tests that prove what fleet does: each must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cited() -> list[tuple[str, str]]:
    """(test file, test name) for every citation: `tests/x.py::name`, and `::name` after one of them."""
    out: list[tuple[str, str]] = []
    for line in (ROOT / "docs" / "reliability.md").read_text().splitlines():
        if not line.startswith("|"):
            continue
        current = None
        for m in re.finditer(r"(tests/[\w/]+\.py)?::(\w+)", line):
            current = m.group(1) or current
            if current is not None:
                out.append((current, m.group(2)))
    return out


def test_every_test_docs_reliability_cites_exists() -> None:
    citations = cited()
    assert len(citations) >= 100  # the page covers every fault it lists
    missing = []
    for path, name in citations:
        file = ROOT / path
        if not file.exists() or not re.search(rf"^(async )?def {name}\(", file.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert missing == [], f"docs/reliability.md cites tests that do not exist: {missing}"
