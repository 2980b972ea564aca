"""`fleet validate` points at the offending field: placement and render problems (dependsOn, a
``${cluster.*}`` variable, an object claimed twice) are printed at the field's line, and no message
repeats its ``PATH:LINE:`` prefix. Pure layers on a parsed snapshot, then the real CLI once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleet.core import model, repository, validation
from tests.support import repository_builders as rb

FILES: dict[str, str] = {
    "clusters/c1.yaml": rb.cluster_yaml("c1", labels={"env": "prod"}),
    "clusters/c2.yaml": rb.cluster_yaml("c2", labels={"env": "dev"}),
    # a: placed on c1 only; b depends on a everywhere (line 10: the entry "a").
    "bundles/a/bundle.yaml": rb.bundle_yaml(
        "a", spec="  namespace: shared\n  placement:\n    clusters: [c1]\n"
    ),
    "bundles/a/m.yaml": rb.configmap("same"),
    "bundles/b/bundle.yaml": rb.bundle_yaml(
        "b",
        spec="  namespace: shared\n  placement:\n    clusterSelector: {}\n  dependsOn:\n    - a\n",
    ),
    "bundles/b/m.yaml": rb.configmap("same"),
    "bundles/c/bundle.yaml": rb.bundle_yaml("c"),
    # the variable is used on line 7, the document starts on line 1
    "bundles/c/m.yaml": rb.dedent(
        """
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: m
        data:
          plain: x
          zone: "zone-${cluster.labels.missing}"
        """
    ),
}

EXPECTED = [
    "bundles/a/m.yaml:1: ConfigMap/shared/same is also declared by bundle b on cluster c1",
    "bundles/b/bundle.yaml:10: cluster c2: dependsOn: bundle 'a' is not placed on cluster 'c2'",
    "bundles/b/m.yaml:1: ConfigMap/shared/same is also declared by bundle a on cluster c1",
    "bundles/c/m.yaml:7: ConfigMap/m: variable ${cluster.labels.missing} is not set on cluster c1",
    "bundles/c/m.yaml:7: ConfigMap/m: variable ${cluster.labels.missing} is not set on cluster c2",
]


def test_placement_and_render_problems_are_at_the_line_of_the_field_without_a_repeated_prefix() -> None:
    snap = model.Snapshot(revision=None, files={k: v.encode() for k, v in FILES.items()})
    repo = repository.parse(snap)
    assert repo.problems == ()
    problems = validation.check(repo)
    assert [str(p) for p in problems] == EXPECTED
    for p in problems:
        assert f"{p.path}:" not in p.message


def test_a_dependency_in_flow_style_and_an_unknown_variable_form_are_at_their_lines() -> None:
    files = dict(FILES)
    files["bundles/b/bundle.yaml"] = rb.bundle_yaml(
        "b", spec="  namespace: shared\n  placement:\n    clusterSelector: {}\n  dependsOn: [a]\n"
    )
    files["bundles/c/m.yaml"] = files["bundles/c/m.yaml"].replace("labels.missing", "zone")
    repo = repository.parse(model.Snapshot(revision=None, files={k: v.encode() for k, v in files.items()}))
    shown = [str(p) for p in validation.check(repo)]
    assert "bundles/b/bundle.yaml:9: cluster c2: dependsOn: bundle 'a' is not placed on cluster 'c2'" in shown
    assert "bundles/c/m.yaml:7: ConfigMap/m: unknown variable ${cluster.zone}" in shown
    assert not [s for s in shown if s.count("bundles/c/m.yaml:") > 1]


@pytest.mark.slow  # starts processes: python -m fleet.cli
def test_the_cli_prints_the_same_lines(tmp_path: Path) -> None:
    rb.write_files(tmp_path, dict(FILES))
    out = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert out.stdout.splitlines() == EXPECTED
