"""Differential check: `fleet.sim.merging.ssa` against results recorded from structured-merge-diff.

Each `tests/sim/fixtures/ssa/*.yaml` is a scenario citing the reference item it comes from
(`reference:`), with steps (apply or non-apply update by a manager) and, under `expect:`, what the
real library (sigs.k8s.io/structured-merge-diff, with apimachinery's strip-meta and update tracking)
produced at each step: the object, every manager's field set, whether the object changed, or the
conflicts. `tests/sim/fixtures/oracle/generate.py` records them; nothing here is computed by the code
under test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import json_merge_patch
import pytest
import yaml

from fleet.sim.kinds import structure
from fleet.sim.merging import fieldsets, ssa

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "ssa").glob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def structure_of(doc: dict[str, Any]) -> structure.Structure:
    if "crdSchema" in doc:
        return structure.for_schema(doc["crdSchema"], status_subresource=bool(doc.get("statusSubresource")))
    t = doc["type"]
    return structure.builtin(t.get("group", ""), t["version"], t["kind"])


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    meta = {k: v for k, v in out.get("metadata", {}).items() if k != "managedFields"}
    out["metadata"] = meta
    return out


def resolve(obj: Any, named: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(obj, dict) and "from" in obj and set(obj) <= {"from", "patch"}:
        base = current if obj["from"] == "current" else named[obj["from"]]
        return json_merge_patch.merge(json.loads(json.dumps(base or {})), obj.get("patch") or {})
    return obj


def test_there_are_at_least_thirty_recorded_scenarios_each_citing_the_reference() -> None:
    assert len(FIXTURES) >= 30
    for path in FIXTURES:
        doc = load(path)
        assert doc.get("reference", "").startswith("H."), path.name
        assert len(doc["expect"]) == len(doc["steps"]), path.name


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_apply_and_update_match_structured_merge_diff(path: Path) -> None:
    doc = load(path)
    st = structure_of(doc)
    named = doc.get("objects") or {}
    live: dict[str, Any] | None = None
    for i, (step, want) in enumerate(zip(doc["steps"], doc["expect"], strict=True), 1):
        now = f"2026-01-01T00:00:{i:02d}Z"
        where = f"{path.name} step {i}"
        current = without_managed_fields(live) if live is not None else None
        config = resolve(step["object"], named, current)
        try:
            if "apply" in step:
                manager, operation = step["apply"], "Apply"
                result = ssa.apply(
                    live, config, manager=manager, force=bool(step.get("force")), structure=st, now=now
                )
            else:
                manager, operation = step["update"], "Update"
                if live is not None:
                    config = {
                        **config,
                        "metadata": {
                            **config.get("metadata", {}),
                            "managedFields": live["metadata"].get("managedFields", []),
                        },
                    }
                result = ssa.update(live, config, manager=manager, structure=st, now=now)
        except ssa.ApplyConflict as e:
            assert "conflicts" in want, f"{where}: unexpected conflict {e.conflicts}"
            assert sorted([m, p] for m, p in e.conflicts) == want["conflicts"], where
            continue
        assert "conflicts" not in want, f"{where}: expected conflicts {want['conflicts']}"
        assert without_managed_fields(result) == want["object"], where
        got_sets = {
            (e["manager"], e["operation"]): e["fieldsV1"] for e in result["metadata"].get("managedFields", [])
        }
        want_sets = {(m["manager"], m["operation"]): m["fieldsV1"] for m in want["managedFields"]}
        assert got_sets.keys() == want_sets.keys(), where
        for key, fields in want_sets.items():
            got_paths = sorted(fieldsets.path_text(p) for p in fieldsets.members(got_sets[key]))
            want_paths = sorted(fieldsets.path_text(p) for p in fieldsets.members(fields))
            assert got_paths == want_paths, f"{where}: {key}"
        # time moves only when this manager's write changed something (managedfieldsupdater.go)
        entry = next(
            (
                e
                for e in result["metadata"].get("managedFields", [])
                if (e["manager"], e["operation"]) == (manager, operation)
            ),
            None,
        )
        previous = next(
            (
                e
                for e in (live or {}).get("metadata", {}).get("managedFields", [])
                if (e["manager"], e["operation"]) == (manager, operation)
            ),
            None,
        )
        if entry is not None:
            if want["changed"]:
                assert entry["time"] == now, where
            elif previous is not None:
                assert entry["time"] == previous["time"], where
            else:
                assert "time" not in entry, f"{where}: a new entry for a no-op apply has no time"
        if operation == "Apply" and not want["changed"] and live is not None:
            assert without_managed_fields(result) == without_managed_fields(live), (
                f"{where}: no-op changed the object"
            )
        live = result
