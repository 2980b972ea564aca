"""Table test: strategic merge patch fixtures taken from the Kubernetes documentation (item G.58).

Each `tests/sim/fixtures/smp/*.yaml` names its source (the kubectl patch task page or the
strategic-merge-patch design document) and gives the original object, the patch and the documented
result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.sim.kinds import structure
from fleet.sim.merging import smp

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "smp").glob("*.yaml"))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_strategic_merge_patch_gives_the_documented_result(path: Path) -> None:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    assert doc["reference"].startswith("G."), path.name
    t = doc["type"]
    st = structure.builtin(t.get("group", ""), t["version"], t["kind"])
    assert smp.patch(doc["original"], doc["patch"], structure=st) == doc["expect"]
