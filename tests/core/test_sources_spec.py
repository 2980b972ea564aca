"""spec.source and spec.decrypt in bundle.yaml: parsed with PATH:LINE errors like every other field, and
`fleet plan --diff-rev` sees what a source renders (issue 18)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.core import model, repository
from tests.support import repository_builders as rb
from tests.support import sources as ss


def problems(spec: str, extra: dict[str, str] | None = None) -> list[str]:
    files = {
        "clusters/eu-1.yaml": ss.cluster("eu-1", env="prod"),
        "bundles/web/bundle.yaml": ss.bundle("web", spec + "  placement: {clusterSelector: {}}\n"),
        "bundles/web/chart/Chart.yaml": "apiVersion: v2\nname: web\nversion: 1.0.0\n",
        "bundles/web/values.yaml": "a: 1\n",
        "bundles/web/overlay/kustomization.yaml": "resources: []\n",
        **(extra or {}),
    }
    repo = repository.parse(model.Snapshot(revision=None, files={k: v.encode() for k, v in files.items()}))
    # (A plain bundle would read chart/Chart.yaml as a manifest too: only bundle.yaml's problems matter here.)
    return [str(p) for p in repo.errors if p.path == "bundles/web/bundle.yaml"]


def test_a_helm_source_is_parsed_with_its_defaults() -> None:
    files = {
        "clusters/eu-1.yaml": ss.cluster("eu-1", env="prod"),
        "bundles/web/bundle.yaml": ss.bundle(
            "web",
            '  source:\n    helm:\n      chart: chart\n      values: [values.yaml, "values-${cluster.labels.env}.yaml"]\n'
            '      set: {image.tag: "1.27", a\\.b: 2}\n  placement: {clusterSelector: {}}\n',
        ),
        "bundles/web/chart/Chart.yaml": "apiVersion: v2\nname: web\nversion: 1.0.0\n",
        "bundles/web/values.yaml": "a: 1\n",
        "bundles/web/chart/templates/x.yaml": "{{ not yaml at all }\n",
    }
    repo = repository.parse(model.Snapshot(revision=None, files={k: v.encode() for k, v in files.items()}))
    assert repo.errors == ()
    helm = repo.bundles["web"].source.helm  # type: ignore[union-attr]
    assert helm is not None
    assert (helm.chart, helm.release_name, helm.include_crds) == ("chart", "web", False)
    assert helm.values == ("values.yaml", "values-${cluster.labels.env}.yaml")
    assert helm.set == (("image.tag", "1.27"), ("a\\.b", 2))
    assert repo.bundles["web"].manifests == ()  # the chart's files are not manifests


def test_every_bad_source_field_is_named_at_its_line() -> None:
    cases = {
        "  source: {kustomize: {path: overlay}, helm: {chart: chart}}\n": [
            "bundles/web/bundle.yaml:6: spec.source must have exactly one of kustomize and helm"
        ],
        "  source:\n    kustomize: {path: ../elsewhere}\n": [
            'bundles/web/bundle.yaml:7: spec.source.kustomize.path "../elsewhere" contains ".."'
        ],
        "  source:\n    kustomize: {path: nothing-here}\n": [
            'bundles/web/bundle.yaml:7: spec.source.kustomize.path "nothing-here": no such folder in bundles/web/'
        ],
        "  source:\n    helm:\n      chart: values.yaml\n": [
            'bundles/web/bundle.yaml:8: spec.source.helm.chart "values.yaml": no Chart.yaml in bundles/web/values.yaml/ '
            "(the chart must be vendored in the repository)"
        ],
        "  source:\n    helm:\n      chart: ../../../outside\n": [
            'bundles/web/bundle.yaml:8: spec.source.helm.chart "../../../outside" leaves the repository'
        ],
        "  source:\n    helm:\n      chart: https://charts.example.com/web\n": [
            'bundles/web/bundle.yaml:8: spec.source.helm.chart "https://charts.example.com/web" is a URL or drive '
            "path, not a relative path"
        ],
        "  source:\n    helm:\n      chart: chart\n      releaseName: Web_1\n": [
            'bundles/web/bundle.yaml:9: spec.source.helm.releaseName "Web_1" is not a Helm release name (lowercase '
            "letters, digits, '-' and '.', at most 53 characters)"
        ],
        "  source:\n    helm:\n      chart: chart\n      values: [values.yaml, missing.yaml]\n": [
            'bundles/web/bundle.yaml:9: spec.source.helm.values[1] "missing.yaml": no such file in bundles/web/'
        ],
        '  source:\n    helm:\n      chart: chart\n      set: {"list[0]": 1}\n': [
            'bundles/web/bundle.yaml:9: spec.source.helm.set key "list[0]" uses list indexes, which fleet does not '
            "take here: set the whole list instead"
        ],
        "  source:\n    helm:\n      chart: chart\n      valuez: []\n": [
            'bundles/web/bundle.yaml:9: unknown field "spec.source.helm.valuez" (did you mean "values"?)'
        ],
        "  decrypt: gpg\n": [
            'bundles/web/bundle.yaml:6: spec.decrypt must be sops (SOPS with age keys), not "gpg"'
        ],
        "  paths: [overlay]\n  source:\n    kustomize: {path: overlay}\n": [
            "bundles/web/bundle.yaml:6: spec.paths does not apply with spec.source (the source reads the files it needs)"
        ],
    }
    for spec, expected in cases.items():
        assert problems(spec) == expected, spec


def fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args], capture_output=True, text=True, timeout=90, check=False
    )


@pytest.mark.slow  # starts processes: python -m fleet.cli
def test_plan_diff_rev_lists_the_clusters_whose_rendered_overlay_changed(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "clusters/eu-1.yaml": ss.cluster("eu-1", env="prod"),
        "clusters/eu-2.yaml": ss.cluster("eu-2", env="dev"),
        "bundles/web/bundle.yaml": ss.bundle(
            "web",
            '  source:\n    kustomize: {path: "envs/${cluster.labels.env}"}\n  placement: {clusterSelector: {}}\n',
        ),
        "bundles/web/envs/prod/kustomization.yaml": "configMapGenerator:\n- {name: web, literals: [size=3]}\n",
        "bundles/web/envs/dev/kustomization.yaml": "configMapGenerator:\n- {name: web, literals: [size=1]}\n",
    }
    git = rb.init(tmp_path)
    old = rb.commit(git, files, message="first")
    changed = {
        **files,
        "bundles/web/envs/prod/kustomization.yaml": "configMapGenerator:\n- {name: web, literals: [size=5]}\n",
    }
    new = rb.commit(git, changed, message="prod size 5")
    out = fleet("plan", str(tmp_path), "--rev", new, "--diff-rev", old, "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"revision": new, "bundles": {"web": ["eu-1"]}, "errors": {}}


def test_a_broken_source_does_not_turn_the_charts_files_into_manifests() -> None:
    files = {
        "clusters/eu-1.yaml": ss.cluster("eu-1", env="prod"),
        "bundles/web/bundle.yaml": ss.bundle(
            "web", "  source: {helm: {chart: chart, releaseName: BAD}}\n  placement: {clusterSelector: {}}\n"
        ),
        "bundles/web/chart/Chart.yaml": "apiVersion: v2\nname: web\nversion: 1.0.0\n",
        "bundles/web/chart/templates/cm.yaml": "{{- if .Values.on }}\nkind: ConfigMap\n{{- end }}\n",
    }
    repo = repository.parse(model.Snapshot(revision=None, files={k: v.encode() for k, v in files.items()}))
    assert [p.path for p in repo.errors] == ["bundles/web/bundle.yaml"]
    assert "web" in repo.broken_bundles
