"""`fleet validate`, `plan` and `render` on YAML that Kubernetes reads its own way (issue 13, items 5, 13
and 14): keys that are not strings, base-60 look-alikes, merges and duplicate keys give the objects
kubectl would apply, or a clean `PATH:LINE: message` and exit 1; never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import repository_builders as rb

COMMANDS = (["validate"], ["plan"], ["render", "--cluster", "eu-prod-1"])


def fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def rendered(out: str) -> dict[str, Any]:
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(out) if d}


@pytest.mark.slow
def test_keys_that_are_not_strings_render_as_kubernetes_writes_them(tmp_path: Path) -> None:
    manifest = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: countries}\n"
        "data: {SE: Sweden, NO: Norway, 9000: port, 1.5: ratio}\n"
    )
    rb.write_files(tmp_path, {**rb.SAMPLE, "bundles/web/countries.yaml": manifest})
    for command in COMMANDS:
        out = fleet(*command, str(tmp_path))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Traceback" not in out.stderr
    out = fleet("render", "--cluster", "eu-prod-1", str(tmp_path))
    assert rendered(out.stdout)["countries"]["data"] == {
        "SE": "Sweden",
        "false": "Norway",
        "9000": "port",
        "1.5": "ratio",
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "content", "message"),
    [
        (
            "bundles/web/countries.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: countries}\ndata: {~: a, b: c}\n",
            "bundles/web/countries.yaml:4: invalid YAML: a mapping key that is null (~, null or nothing) "
            "cannot be a JSON key (Kubernetes refuses it; quote it)",
        ),
        (
            "bundles/web/doubled.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: doubled\ndata: {a: b}\ndata: {c: d}\n",
            'bundles/web/doubled.yaml:6: invalid YAML: duplicate key "data" (first at line 5)',
        ),
        (
            "bundles/web/doubled.json",
            '{"apiVersion": "v1", "kind": "ConfigMap",\n "metadata": {"name": "j"},\n "metadata": {"name": "k"}}',
            'bundles/web/doubled.json:3: invalid JSON: duplicate key "metadata"',
        ),
        (
            "clusters/eu-prod-1.yaml",
            rb.cluster_yaml("eu-prod-1") + "spec:\n  facts: {gpu: true}\nspec:\n  paused: false\n",
            'clusters/eu-prod-1.yaml:9: invalid YAML: duplicate key "spec" (first at line 7)',
        ),
    ],
)
def test_a_key_kubernetes_refuses_or_a_duplicate_is_a_clean_path_line_error(
    tmp_path: Path, path: str, content: str, message: str
) -> None:
    rb.write_files(tmp_path, {**rb.SAMPLE, path: content})
    for command in COMMANDS:
        out = fleet(*command, str(tmp_path))
        assert out.returncode == 1, (command, out.stdout + out.stderr)
        assert message in (out.stdout + out.stderr).splitlines(), (command, out.stdout + out.stderr)
        assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_base_60_look_alikes_stay_text_and_merges_beside_equals_values_render(tmp_path: Path) -> None:
    manifest = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: schedule}\n"
        "data:\n  start: 10:30\n  angle: 190:20:30.15\n"
        "---\n"
        "defaults: &d {apiVersion: v1, kind: ConfigMap}\n"
        "<<: *d\nmetadata: {name: merged}\ndata: {op: =}\n"
    )
    rb.write_files(tmp_path, {**rb.SAMPLE, "bundles/web/schedule.yaml": manifest})
    out = fleet("render", "--cluster", "eu-prod-1", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    objects = rendered(out.stdout)
    assert objects["schedule"]["data"] == {"start": "10:30", "angle": "190:20:30.15"}
    assert objects["merged"]["data"] == {"op": "="}
