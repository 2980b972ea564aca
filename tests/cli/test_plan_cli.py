"""`fleet plan` and `fleet render` run as the real CLI on real git repositories (pygit2) and work trees."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pygit2
import pytest
import yaml

# Every test here starts processes (python -m fleet.cli): `slow`, outside the fast inner loop.
pytestmark = pytest.mark.slow

CLUSTERS = {
    "eu-prod-1": "labels: {env: prod, region: eu}\nspec:\n  facts: {tier: 1}\n",
    "us-prod-1": "labels: {env: prod, region: us}\nspec:\n  facts: {tier: 2}\n",
    "eu-dev-1": "labels: {env: dev, region: eu}\n",
}

CANARY = "hunter2-CANARY"

BUNDLES = {
    "base": (
        "placement:\n    clusterSelector: {}\n",
        {"ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: monitoring\n"},
    ),
    "web": (
        textwrap.dedent(
            """\
            namespace: web
              placement:
                clusterSelector:
                  matchLabels: {env: prod}
                cel: "cluster.facts.tier == 1"
              dependsOn: [base]
              overrides:
                - placement: {clusterSelector: {matchLabels: {region: eu}}}
                  patches:
                    - target: {kind: Deployment, name: web}
                      merge: {spec: {replicas: 5}}
            """
        ),
        {
            "deploy.yaml": textwrap.dedent(
                """\
                apiVersion: apps/v1
                kind: Deployment
                metadata:
                  name: web
                spec:
                  replicas: 1
                  template:
                    metadata:
                      labels: {app: web, cluster: "${cluster.name}"}
                ---
                apiVersion: v1
                kind: Secret
                metadata:
                  name: creds
                stringData:
                  password: """
                + CANARY
                + "\n"
            )
        },
    ),
    "tiered": (
        # A fact missing on eu-dev-1 without has(): an error for that pair, never "not selected".
        'placement:\n    cel: "cluster.facts.tier >= 1"\n',
        {"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tiered\ndata: {a: b}\n"},
    ),
}


def write_repo(root: Path, bundles: dict[str, tuple[str, dict[str, str]]] | None = None) -> None:
    for name, body in CLUSTERS.items():
        f = root / "clusters" / f"{name}.yaml"
        f.parent.mkdir(parents=True, exist_ok=True)
        meta, _, spec = body.partition("spec:")
        text = f"apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n  {meta}"
        if spec:
            text += "spec:" + spec
        f.write_text(text)
    for name, (spec, files) in (bundles if bundles is not None else BUNDLES).items():
        folder = root / "bundles" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "bundle.yaml").write_text(
            f"apiVersion: fleet.dev/v1alpha1\nkind: Bundle\nmetadata:\n  name: {name}\nspec:\n  {spec}"
        )
        for fname, content in files.items():
            (folder / fname).write_text(content)


def commit_all(repo: pygit2.Repository, message: str) -> str:
    index = repo.index
    index.add_all()
    index.write()
    tree = index.write_tree()
    sig = pygit2.Signature("Test", "test@example.com")
    parents = [] if repo.head_is_unborn else [repo.head.target]
    oid = repo.create_commit("HEAD", sig, sig, message, tree, parents)
    return str(oid)


def fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def git_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A repository with two commits: the first without `tiered`, the second as BUNDLES says."""
    root = tmp_path_factory.mktemp("gitops")
    repo = pygit2.init_repository(str(root), initial_head="main")
    first_bundles = {k: v for k, v in BUNDLES.items() if k != "tiered"}
    write_repo(root, first_bundles)
    first = commit_all(repo, "first")
    write_repo(root)
    # The second commit also changes the Deployment of web: a label, and the replicas, which the eu
    # override sets anyway (so that change alone would not change what eu-prod-1 gets).
    deploy = root / "bundles" / "web" / "deploy.yaml"
    deploy.write_text(
        deploy.read_text().replace("replicas: 1", "replicas: 2").replace("app: web", "app: web2")
    )
    second = commit_all(repo, "second")
    return root, first, second


def test_plan_json_prints_exactly_the_documented_shape_and_exits_1_on_a_pair_in_error(
    git_repo: tuple[Path, str, str],
) -> None:
    root, _first, second = git_repo
    out = fleet("plan", str(root), "--rev", "HEAD", "--format", "json")
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert list(doc) == ["revision", "bundles", "errors"]
    assert doc["revision"] == second
    assert doc["bundles"] == {
        "base": ["eu-dev-1", "eu-prod-1", "us-prod-1"],
        "tiered": ["eu-prod-1", "us-prod-1"],
        "web": ["eu-prod-1"],
    }
    assert list(doc["errors"]) == ["tiered"]
    assert list(doc["errors"]["tiered"]) == ["eu-dev-1"]
    assert "no such member" in doc["errors"]["tiered"]["eu-dev-1"]
    assert second[:12] in out.stderr  # says which revision it read


def test_plan_json_of_a_work_tree_has_a_null_revision_and_exits_0_when_all_is_well(tmp_path: Path) -> None:
    write_repo(tmp_path, {k: v for k, v in BUNDLES.items() if k != "tiered"})
    out = fleet("plan", str(tmp_path), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "revision": None,
        "bundles": {"base": ["eu-dev-1", "eu-prod-1", "us-prod-1"], "web": ["eu-prod-1"]},
        "errors": {},
    }
    assert "work tree" in out.stderr


def test_plan_lists_a_bundle_placed_nowhere_with_an_empty_list(tmp_path: Path) -> None:
    bundles = {"idle": ("placement:\n    clusters: []\n", {"cm.yaml": BUNDLES["tiered"][1]["cm.yaml"]})}
    write_repo(tmp_path, bundles)
    out = fleet("plan", str(tmp_path), "--format", "json")
    assert json.loads(out.stdout)["bundles"] == {"idle": []}


def test_plan_exits_1_and_names_the_problem_when_the_repo_is_invalid(tmp_path: Path) -> None:
    bundles = dict(BUNDLES)
    bundles["bad"] = ('placement:\n    cel: "cluster.nope == 1"\n', {})
    write_repo(tmp_path, bundles)
    out = fleet("plan", str(tmp_path), "--format", "json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["bundles"]["bad"] == []
    assert "bundles/bad/bundle.yaml:" in out.stderr
    assert "cluster has no field 'nope'" in out.stderr


def test_explain_names_the_clause_that_held_or_failed_per_cluster(git_repo: tuple[Path, str, str]) -> None:
    root, _first, _second = git_repo
    out = fleet("plan", str(root), "--rev", "HEAD", "--explain", "web")
    assert out.returncode == 1  # `tiered` is in error on eu-dev-1
    text = out.stdout
    assert "eu-prod-1: selected" in text
    assert "us-prod-1: not selected" in text
    assert "cel: failed: cel is false" in text
    assert "eu-dev-1: not selected" in text
    assert "clusterSelector: failed: label env=dev, selector wants env=prod" in text


def test_explain_shows_a_cel_error_as_an_error_not_as_not_selected(git_repo: tuple[Path, str, str]) -> None:
    root, _first, _second = git_repo
    out = fleet("plan", str(root), "--rev", "HEAD", "--explain", "tiered", "--format", "json")
    doc = json.loads(out.stdout)
    row = doc["clusters"]["eu-dev-1"]
    assert row["result"] == "error"
    assert row["clauses"][-1]["clause"] == "cel"
    assert row["clauses"][-1]["held"] is None


def test_diff_rev_lists_only_pairs_that_are_added_removed_or_changed(git_repo: tuple[Path, str, str]) -> None:
    root, first, second = git_repo
    out = fleet("plan", str(root), "--rev", second, "--diff-rev", first, "--format", "json")
    doc = json.loads(out.stdout)
    assert list(doc) == [
        "revision",
        "bundles",
        "errors",
    ]  # docs/placement.md: plan --format json prints only these
    assert doc["revision"] == second
    # base is unchanged (only the revision differs) and lists no cluster; web's Deployment changed.
    assert doc["bundles"] == {
        "base": [],
        "tiered": ["eu-prod-1", "us-prod-1"],
        "web": ["eu-prod-1"],
    }
    assert list(doc["errors"]) == ["tiered"]
    table = fleet("plan", str(root), "--rev", second, "--diff-rev", first)
    assert "+ tiered on eu-prod-1 (added)" in table.stdout
    assert "~ web on eu-prod-1 (changed)" in table.stdout
    assert "base" not in table.stdout


def test_diff_rev_between_commits_with_the_same_content_lists_nothing(
    git_repo: tuple[Path, str, str],
) -> None:
    root, _first, second = git_repo
    out = fleet("plan", str(root), "--rev", second, "--diff-rev", second, "--format", "json")
    assert json.loads(out.stdout)["bundles"] == {"base": [], "tiered": [], "web": []}


def test_render_prints_the_exact_objects_with_secret_values_redacted(git_repo: tuple[Path, str, str]) -> None:
    root, _first, second = git_repo
    out = fleet("render", str(root), "--rev", "HEAD", "--cluster", "eu-prod-1", "--bundle", "web")
    assert out.returncode == 0, out.stderr
    assert CANARY not in out.stdout + out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert kinds == [("Secret", "creds"), ("Deployment", "web")]
    secret, deploy = docs
    assert secret["stringData"] == {"password": "<redacted>"}
    assert deploy["spec"]["replicas"] == 5  # the eu override
    assert deploy["spec"]["template"]["metadata"]["labels"]["cluster"] == "eu-prod-1"
    assert deploy["metadata"]["namespace"] == "web"
    assert deploy["metadata"]["labels"] == {"fleet.dev/bundle": "web", "fleet.dev/owner": "fleet"}
    assert deploy["metadata"]["annotations"] == {"fleet.dev/revision": second}


def test_render_shows_secret_values_only_when_asked(git_repo: tuple[Path, str, str]) -> None:
    root, _first, _second = git_repo
    out = fleet(
        "render", str(root), "--rev", "HEAD", "--cluster", "eu-prod-1", "--bundle", "web", "--show-secrets"
    )
    assert CANARY in out.stdout


def test_render_of_a_pair_in_error_exits_1_with_the_error_on_stderr(git_repo: tuple[Path, str, str]) -> None:
    root, _first, _second = git_repo
    out = fleet("render", str(root), "--rev", "HEAD", "--cluster", "eu-dev-1")
    assert out.returncode == 1
    assert "bundle tiered on cluster eu-dev-1" in out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert [d["metadata"]["name"] for d in docs] == ["monitoring"]


def test_render_of_an_unknown_cluster_names_the_known_ones(git_repo: tuple[Path, str, str]) -> None:
    root, _first, _second = git_repo
    out = fleet("render", str(root), "--cluster", "nope")
    assert out.returncode == 1
    assert "no cluster named 'nope'" in out.stderr
    assert "eu-prod-1" in out.stderr


def test_plan_table_lists_every_bundle_and_the_pairs_in_error(git_repo: tuple[Path, str, str]) -> None:
    root, _first, _second = git_repo
    out = fleet("plan", str(root), "--rev", "HEAD")
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["BUNDLE", "CLUSTERS"]
    assert lines[1].split(None, 1) == ["base", "eu-dev-1, eu-prod-1, us-prod-1"]
    assert lines[3].split(None, 1) == ["web", "eu-prod-1"]
    assert any(line.startswith("tiered on eu-dev-1: cel: no such member") for line in lines)


def test_validate_reports_a_cel_error_for_every_cluster_it_was_evaluated_on(tmp_path: Path) -> None:
    write_repo(tmp_path, {"tiered": BUNDLES["tiered"]})
    out = fleet("validate", str(tmp_path))
    assert out.returncode == 1
    assert (
        "bundles/tiered/bundle.yaml:7: cluster eu-dev-1: cel: no such member in mapping: 'tier'" in out.stdout
    )
    assert "eu-prod-1" not in out.stdout  # evaluated there without error


def test_plan_with_explain_and_diff_rev_together_is_refused(git_repo: tuple[Path, str, str]) -> None:
    root, first, _second = git_repo
    out = fleet("plan", str(root), "--explain", "web", "--diff-rev", first)
    assert out.returncode == 2
    assert "exclude each other" in out.stderr


def test_plan_reads_a_repository_kept_below_a_subfolder_with_path(tmp_path: Path) -> None:
    write_repo(tmp_path / "fleet-config", {"base": BUNDLES["base"]})
    out = fleet("plan", str(tmp_path), "--path", "fleet-config", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["bundles"] == {"base": ["eu-dev-1", "eu-prod-1", "us-prod-1"]}


def test_diff_rev_json_lists_a_removed_pair_and_a_bundle_of_the_old_revision_only(
    git_repo: tuple[Path, str, str],
) -> None:
    root, first, second = git_repo
    out = fleet("plan", str(root), "--rev", first, "--diff-rev", second, "--format", "json")
    doc = json.loads(out.stdout)
    assert list(doc) == ["revision", "bundles", "errors"]
    assert doc["revision"] == first
    assert doc["bundles"] == {"base": [], "tiered": ["eu-prod-1", "us-prod-1"], "web": ["eu-prod-1"]}
    assert doc["errors"] == {}
    table = fleet("plan", str(root), "--rev", first, "--diff-rev", second)
    assert "- tiered on eu-prod-1 (removed)" in table.stdout


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--rev", "nosuch"], "unknown revision 'nosuch'"),
        (["--rev", "HEAD", "--diff-rev", "nosuch"], "unknown revision 'nosuch'"),
    ],
)
def test_plan_exits_1_with_the_reason_when_the_repository_cannot_be_read(
    git_repo: tuple[Path, str, str], args: list[str], reason: str
) -> None:
    root, _first, _second = git_repo
    out = fleet("plan", str(root), *args, "--format", "json")
    assert out.returncode == 1
    assert out.stdout == ""
    assert f"error: {root}: {reason}" in out.stderr


def test_plan_of_a_folder_that_is_not_a_git_repository_with_rev_exits_1(tmp_path: Path) -> None:
    out = fleet("plan", str(tmp_path), "--rev", "HEAD")
    assert out.returncode == 1
    assert f"error: {tmp_path}: not a git repository" in out.stderr


def test_explain_prints_a_cel_error_once_without_doubled_words(git_repo: tuple[Path, str, str]) -> None:
    root, _first, _second = git_repo
    out = fleet("plan", str(root), "--rev", "HEAD", "--explain", "tiered")
    cel_lines = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("cel:")]
    assert "cel: error: no such member in mapping: 'tier' at 1:1" in cel_lines, out.stdout
    assert "error: error" not in out.stdout and "error: cel:" not in out.stdout


ROLLED = (
    textwrap.dedent(
        """\
        placement:
            clusterSelector: {}
          rollout:
            waves:
              - name: canary
                placement: {clusters: [eu-dev-1]}
                soak: 5m
              - name: prod
                placement: {clusterSelector: {matchLabels: {env: prod}}}
                maxConcurrency: "50%"
                approval: before
        """
    ),
    {"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rolled\ndata: {a: b}\n"},
)


def test_plan_shows_each_bundles_waves_in_order(tmp_path: Path) -> None:
    write_repo(tmp_path, {"rolled": ROLLED})
    out = fleet("plan", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    at = lines.index("WAVES (in order; see docs/rollouts.md)")
    assert lines[at + 1].split(None, 1) == [
        "rolled",
        "canary (25% at a time, soak 5m): eu-dev-1 -> prod (50% at a time, approval before): eu-prod-1, us-prod-1",
    ]


def test_plan_explain_says_which_wave_each_cluster_falls_in_and_why(tmp_path: Path) -> None:
    write_repo(tmp_path, {"rolled": ROLLED})
    out = fleet("plan", str(tmp_path), "--explain", "rolled", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["clusters"]
    assert rows["eu-dev-1"]["wave"] == "canary"
    assert rows["us-prod-1"]["wave"] == "prod"
    assert rows["us-prod-1"]["waveReasons"] == [
        "wave canary: not selected: clusters does not list us-prod-1",
        "wave prod: selected: labels match 'env=prod'",
    ]


def test_a_placed_cluster_that_no_wave_selects_is_a_validation_error_naming_every_one(tmp_path: Path) -> None:
    spec, files = ROLLED
    write_repo(tmp_path, {"rolled": (spec.replace("{env: prod}", "{region: nowhere}"), files)})
    out = fleet("validate", str(tmp_path))
    assert out.returncode == 1
    assert (
        "bundles/rolled/bundle.yaml:8: spec.rollout: no wave selects placed cluster(s) eu-prod-1, us-prod-1"
        in out.stdout
    )
    plan = fleet("plan", str(tmp_path), "--format", "json")
    assert plan.returncode == 1
    assert json.loads(plan.stdout)["errors"]["rolled"] == {
        "eu-prod-1": "no wave of spec.rollout selects cluster eu-prod-1",
        "us-prod-1": "no wave of spec.rollout selects cluster us-prod-1",
    }
