"""fleet.core.repository.parse: what a revision's files turn into (clusters, bundles, manifests), and how a
broken file breaks only what holds it."""

from __future__ import annotations

import functools
import json
import textwrap
from pathlib import Path

import anyio
import pytest

from fleet.cli import common
from fleet.core import errors, model, repository
from tests.support import repository_builders as rb


def parse(files: dict[str, str | bytes], *, base: str = "", **kw: object) -> model.Repo:
    data = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    return repository.parse(model.Snapshot(revision="abc", files=data, base=base, **kw))  # type: ignore[arg-type]


def test_clusters_are_parsed_with_labels_annotations_context_and_facts() -> None:
    repo = parse(
        {
            "clusters/eu-prod-1.yaml": rb.dedent(
                """
                apiVersion: fleet.dev/v1alpha1
                kind: Cluster
                metadata:
                  name: eu-prod-1
                  labels: {env: prod, region: eu}
                  annotations: {fleet.dev/location: eu-west-1}
                spec:
                  context: ctx-eu
                  paused: true
                  facts: {tier: 1, nodes: 40, k8sVersion: "1.35.1", zones: [a, b], since: 2024-01-01}
                """
            ),
            "clusters/us-dev-1.yaml": rb.cluster_yaml("us-dev-1", labels={}),
        }
    )
    eu = repo.clusters["eu-prod-1"]
    assert eu.labels == {"env": "prod", "region": "eu"}
    assert eu.annotations == {"fleet.dev/location": "eu-west-1"}
    assert (eu.context, eu.paused, eu.path) == ("ctx-eu", True, "clusters/eu-prod-1.yaml")
    assert eu.facts == {
        "tier": 1,
        "nodes": 40,
        "k8sVersion": "1.35.1",
        "zones": ["a", "b"],
        "since": "2024-01-01",
    }
    dev = repo.clusters["us-dev-1"]
    assert (dev.context, dev.paused, dict(dev.labels), dict(dev.facts)) == ("us-dev-1", False, {}, {})
    assert list(repo.clusters) == ["eu-prod-1", "us-dev-1"]


def test_the_projects_own_cluster_files_parse_cleanly() -> None:
    root = Path(__file__).resolve().parents[2]
    files: dict[str, str | bytes] = {
        f"clusters/{p.name}": p.read_bytes() for p in sorted((root / "clusters").glob("*.yaml"))
    }
    repo = parse(files)
    assert repo.errors == ()
    assert len(repo.clusters) == len(files) > 0


def test_a_bundle_collects_yaml_yml_and_json_manifests_recursively_in_a_stable_order() -> None:
    repo = parse(
        {
            "bundles/web/bundle.yaml": rb.bundle_yaml(
                "web",
                spec="  namespace: web\n  prune: false\n  allowEmpty: true\n  adopt: true\n  suspend: true\n",
            ),
            "bundles/web/z.yaml": rb.configmap("z") + "---\n---\n" + rb.configmap("z2"),
            "bundles/web/a/deep/b.yml": rb.configmap("b"),
            "bundles/web/a.json": json.dumps(
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
            ),
            "bundles/web/README.md": "# not a manifest\n",
            "bundles/web/chart.tgz": b"\x1f\x8b binary",
        }
    )
    web = repo.bundles["web"]
    assert [(m.path, m.line, m.index, m.name) for m in web.manifests] == [
        ("bundles/web/a.json", 1, 0, "s"),
        ("bundles/web/a/deep/b.yml", 1, 0, "b"),
        ("bundles/web/z.yaml", 1, 0, "z"),
        ("bundles/web/z.yaml", 9, 2, "z2"),
    ]
    assert (web.namespace, web.prune, web.allow_empty, web.adopt, web.suspend) == (
        "web",
        False,
        True,
        True,
        True,
    )
    assert web.placement is None and web.paths is None and web.path == "bundles/web/bundle.yaml"


def test_spec_paths_limits_the_manifests_to_the_listed_files_and_folders() -> None:
    repo = parse(
        {
            "bundles/web/bundle.yaml": rb.bundle_yaml(
                "web", spec="  paths: [manifests/, ./extra/one.yaml]\n"
            ),
            "bundles/web/manifests/a.yaml": rb.configmap("a"),
            "bundles/web/manifests/sub/b.yaml": rb.configmap("b"),
            "bundles/web/extra/one.yaml": rb.configmap("one"),
            "bundles/web/extra/two.yaml": rb.configmap("two"),
            "bundles/web/top.yaml": rb.configmap("top"),
        }
    )
    assert [m.name for m in repo.bundles["web"].manifests] == ["one", "a", "b"]
    assert repo.bundles["web"].paths == ("manifests", "extra/one.yaml")


def test_fleetignore_excludes_files_with_gitignore_syntax() -> None:
    repo = parse(
        {
            "bundles/web/bundle.yaml": rb.bundle_yaml("web"),
            "bundles/web/.fleetignore": "# helper files\nkustomization.yaml\nvalues*.yaml\nscratch/\n!scratch/keep.yaml\n",
            "bundles/web/kustomization.yaml": "resources: [a.yaml]\n",
            "bundles/web/values.yaml": "replicas: 3\n",
            "bundles/web/sub/values-prod.yaml": "replicas: 5\n",
            "bundles/web/scratch/x.yaml": "junk: [\n",
            "bundles/web/a.yaml": rb.configmap("a"),
        }
    )
    assert repo.errors == ()
    assert [m.name for m in repo.bundles["web"].manifests] == ["a"]


def test_bundle_fields_become_the_model() -> None:
    repo = parse(
        {
            "clusters/c1.yaml": rb.cluster_yaml("c1"),
            "bundles/base/bundle.yaml": rb.bundle_yaml("base"),
            "bundles/web/bundle.yaml": rb.bundle_yaml(
                "web",
                spec=textwrap.indent(
                    rb.dedent(
                        """
                    placement:
                      clusters: [c1]
                      clusterSelector:
                        matchLabels: {env: prod, app.kubernetes.io/part-of: shop}
                        matchExpressions:
                          - {key: region, operator: In, values: [eu, us]}
                          - {key: legacy, operator: DoesNotExist}
                      cel: "cluster.name != 'x'"
                    overrides:
                      - placement: {clusterSelector: {matchLabels: {region: eu}}}
                        patches:
                          - target: {kind: Deployment, name: web, apiVersion: apps/v1, namespace: web}
                            merge: {spec: {replicas: 5}}
                          - target: {kind: Deployment}
                            json: [{op: replace, path: /spec/replicas, value: 5}]
                    dependsOn: [base]
                    """
                    ),
                    "  ",
                ),
            ),
        }
    )
    assert repo.problems == ()
    web = repo.bundles["web"]
    assert web.placement == model.Placement(
        clusters=("c1",),
        cluster_selector=model.LabelSelector(
            match_labels=(("app.kubernetes.io/part-of", "shop"), ("env", "prod")),
            match_expressions=(
                model.Requirement("region", model.Operator.IN, ("eu", "us")),
                model.Requirement("legacy", model.Operator.DOES_NOT_EXIST),
            ),
        ),
        cel="cluster.name != 'x'",
        lines={"clusters": 7, "clusterSelector": 8, "cel": 13},
    )
    assert web.depends_on == ("base",)
    (override,) = web.overrides
    assert override.line == 15
    assert override.placement.cluster_selector == model.LabelSelector(match_labels=(("region", "eu"),))
    merge, patch = override.patches
    assert merge.target == model.PatchTarget(
        kind="Deployment", name="web", api_version="apps/v1", namespace="web"
    )
    assert merge.merge == {"spec": {"replicas": 5}} and merge.json is None
    assert patch.target == model.PatchTarget(kind="Deployment")
    assert patch.json == ({"op": "replace", "path": "/spec/replicas", "value": 5},) and patch.merge is None


def test_malformed_yaml_in_one_bundle_fails_that_bundle_only() -> None:
    files = dict(rb.SAMPLE)
    files["bundles/web/deploy.yaml"] = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n"
    repo = parse(files)
    assert sorted(repo.bundles) == ["base"]
    assert list(repo.broken_bundles) == ["web"]
    (problem,) = repo.broken_bundles["web"]
    assert (problem.path, problem.line, problem.bundle) == ("bundles/web/deploy.yaml", 5, "web")
    assert problem.message.startswith("invalid YAML: ")
    assert sorted(repo.clusters) == ["eu-prod-1", "us-dev-1"]


def test_a_broken_cluster_file_is_left_out_and_named_so_it_can_be_frozen() -> None:
    files = dict(rb.SAMPLE)
    files["clusters/eu-prod-1.yaml"] = rb.cluster_yaml("eu-prod-1") + "spec:\n  paused: maybe\n"
    files["clusters/broken-yaml.yaml"] = "apiVersion: [\n"
    repo = parse(files)
    assert sorted(repo.clusters) == ["us-dev-1"]
    assert sorted(repo.broken_clusters) == ["broken-yaml", "eu-prod-1"]
    assert [p.message for p in repo.broken_clusters["eu-prod-1"]] == [
        'spec.paused must be true or false, not "maybe"'
    ]
    assert all(p.cluster == "broken-yaml" for p in repo.broken_clusters["broken-yaml"])
    assert sorted(repo.bundles) == ["base", "web"]


def test_source_problems_break_the_bundle_or_cluster_that_holds_the_path() -> None:
    link = "is a symbolic link; fleet never follows links (commit the file itself)"
    repo = parse(
        dict(rb.SAMPLE),
        base="",
        problems=(
            model.Problem("clusters/evil.yaml", 1, link),
            model.Problem("bundles/web/big.yaml", 1, "file is 5 bytes, over the limit max_file_bytes=1"),
        ),
    )
    assert sorted(repo.broken_clusters) == ["evil"]
    assert sorted(repo.broken_bundles) == ["web"]
    assert "web" not in repo.bundles
    assert [(p.path, p.bundle, p.cluster) for p in repo.errors] == [
        ("bundles/web/big.yaml", "web", None),
        ("clusters/evil.yaml", None, "evil"),
    ]


def test_a_bundle_yaml_that_is_a_link_breaks_that_bundle() -> None:
    files = {k: v for k, v in rb.SAMPLE.items() if k != "bundles/web/bundle.yaml"}
    repo = parse(files, problems=(model.Problem("bundles/web/bundle.yaml", 1, "is a symbolic link"),))
    assert list(repo.broken_bundles) == ["web"] and "web" not in repo.bundles


def test_problem_paths_include_the_path_subfolder() -> None:
    files = {k: v for k, v in rb.SAMPLE.items() if k.startswith(("clusters", "bundles"))}
    files["bundles/web/bundle.yaml"] = rb.bundle_yaml("web", spec="  prune: 3\n")
    repo = parse(files, base="envs/prod")
    assert [(p.path, p.line, p.message) for p in repo.problems] == [
        ("envs/prod/bundles/web/bundle.yaml", 6, "spec.prune must be true or false, not 3")
    ]
    assert repo.bundles["base"].manifests[0].path == "envs/prod/bundles/base/ns.json"


def test_files_outside_the_layout_are_ignored_with_warnings() -> None:
    files = dict(rb.SAMPLE)
    files.update(
        {
            "clusters/README.md": "x",
            "clusters/.gitkeep": "",
            "clusters/old/x.yaml": "x",
            "bundles/notes.yaml": "x",
            "bundles/draft/a.yaml": rb.configmap("a"),
            "bundles/legacy/bundle.yml": rb.bundle_yaml("legacy"),
        }
    )
    repo = parse(files)
    assert [(p.path, p.message, p.severity.value) for p in repo.problems] == [
        ("bundles/draft", "ignored: folder has no bundle.yaml", "warning"),
        ("bundles/legacy/bundle.yml", "a bundle file is named bundle.yaml (rename it)", "error"),
        ("bundles/notes.yaml", "ignored: bundles/ holds one folder per bundle", "warning"),
        ("clusters/README.md", "ignored: cluster files end in .yaml", "warning"),
        ("clusters/old/x.yaml", "ignored: clusters/ holds one file per cluster, no subfolders", "warning"),
    ]
    assert list(repo.broken_bundles) == ["legacy"]


def test_parse_is_deterministic() -> None:
    files = dict(reversed(list(rb.SAMPLE.items())))
    assert parse(files) == parse(dict(rb.SAMPLE))


def test_repo_carries_the_snapshot_metadata() -> None:
    repo = parse(dict(rb.SAMPLE), message="subject", author="A", committed_at="2024-01-01T00:00:00Z")
    assert (repo.revision, repo.message, repo.author, repo.committed_at) == (
        "abc",
        "subject",
        "A",
        "2024-01-01T00:00:00Z",
    )


def test_load_reads_the_work_tree_or_a_revision_and_says_which_on_stderr(tmp_path: Path) -> None:
    git = rb.init(tmp_path)
    sha = rb.commit(git, dict(rb.SAMPLE), message="committed state")
    rb.write_files(tmp_path, {**rb.SAMPLE, "clusters/new-1.yaml": rb.cluster_yaml("new-1")})
    said: list[str] = []

    def load(**kw: object) -> model.Repo:
        return anyio.run(functools.partial(common.load_repository, tmp_path, say=said.append, **kw))  # type: ignore[arg-type]

    worktree = load(rev=None)
    assert worktree.revision is None and "new-1" in worktree.clusters
    assert said[-1] == f"reading work tree {tmp_path} (revision null)"
    head = load(rev=None, worktree_default=False)
    assert head.revision == sha and "new-1" not in head.clusters
    assert said[-1] == f"reading revision {sha[:12]} (HEAD) of {tmp_path}: committed state"
    assert load(rev=None, worktree_default=False, worktree=True).revision is None
    assert load(rev="main").revision == sha
    with pytest.raises(errors.InputError, match="--rev and --worktree exclude each other"):
        load(rev="main", worktree=True)


def test_a_parse_cache_reparses_only_changed_files_and_gives_the_same_result() -> None:
    cache = repository.ParseCache()
    files = dict(rb.SAMPLE)
    first = parse(files)
    data = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    assert repository.parse(model.Snapshot(revision="abc", files=data), cache=cache) == first
    n_files = cache.misses
    assert n_files == len([k for k in rb.SAMPLE if k != "README.md"]) and cache.hits == 0
    data["bundles/web/deploy.yaml"] = rb.configmap("changed").encode()
    data["bundles/base/ns.json"] = b"{broken"
    again = repository.parse(model.Snapshot(revision="def", files=data), cache=cache)
    assert (cache.misses, cache.hits) == (n_files + 2, n_files - 2)
    assert again == repository.parse(model.Snapshot(revision="def", files=data))
    assert [m.name for m in again.bundles["web"].manifests] == ["changed"]
    assert list(again.broken_bundles) == ["base"]
    again2 = repository.parse(model.Snapshot(revision="def", files=data), cache=cache)
    assert again2 == again and list(again2.broken_bundles) == ["base"]  # cached errors are reported again
    assert len(cache) == n_files


def test_a_bundle_that_depends_on_a_broken_bundle_stays_valid() -> None:
    files = dict(rb.SAMPLE)
    files["bundles/web/bundle.yaml"] = rb.bundle_yaml("web", spec="  dependsOn: [base]\n")
    files["bundles/base/bundle.yaml"] = rb.bundle_yaml("base", spec="  prune: 1\n")
    repo = parse(files)
    assert list(repo.bundles) == ["web"] and repo.bundles["web"].depends_on == ("base",)
    assert list(repo.broken_bundles) == ["base"]
