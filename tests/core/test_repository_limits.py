"""Hostile repository input (docs/reliability.md, RELIABILITY 1-7): alias bombs, oversized input, deep nesting,
links, submodules and path traversal are refused with the limit or the path named, and the process
survives with bounded memory."""

from __future__ import annotations

import functools
import os
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from fleet.clients import source
from fleet.core import model, repository, yamlsafe
from tests.support import repository_builders as rb

T = TypeVar("T")


def run(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    return anyio.run(functools.partial(fn, *args, **kwargs))


def billion_laughs(levels: int = 9) -> bytes:
    """A few hundred bytes whose aliases expand to 9**levels nodes (10**8 at 9 levels... and beyond)."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*l{i - 1}"] * 9)
        lines.append(f"l{i}: &l{i} [{refs}]")
    return ("\n".join(lines) + "\n").encode()


def parse(files: dict[str, str | bytes], **kw: Any) -> model.Repo:
    data = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    return repository.parse(model.Snapshot(revision=None, files=data), **kw)


def test_an_alias_bomb_is_rejected_before_expansion_with_memory_bounded() -> None:
    bomb = billion_laughs(9)
    assert len(bomb) < 500
    files = {**rb.SAMPLE, "bundles/web/bomb.yaml": bomb, "clusters/bomb.yaml": bomb}
    tracemalloc.start()
    try:
        repo = parse(files)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 1024 * 1024
    message = "YAML aliases expand to more than 100000 nodes, over the limit max_alias_expansion=100000"
    assert [(p.path, p.line, p.message) for p in repo.errors] == [
        ("bundles/web/bomb.yaml", 5, message),
        ("clusters/bomb.yaml", 5, message),
    ]
    assert "web" in repo.broken_bundles and "bomb" in repo.broken_clusters
    assert "base" in repo.bundles


def test_the_alias_budget_is_configurable_and_ordinary_anchors_pass() -> None:
    doc = b"base: &b {a: 1, b: 2}\nx: *b\nz: *b\n"
    (parsed,) = yamlsafe.load_yaml(doc, path="f.yaml")
    assert parsed.data == {"base": {"a": 1, "b": 2}, "x": {"a": 1, "b": 2}, "z": {"a": 1, "b": 2}}
    with pytest.raises(yamlsafe.LimitExceeded, match="max_alias_expansion=5"):
        yamlsafe.load_yaml(doc, path="f.yaml", limits=yamlsafe.Limits(max_alias_expansion=5))


def test_a_self_referencing_alias_is_rejected() -> None:
    repo = parse({**rb.SAMPLE, "bundles/web/loop.yaml": "a: &a\n  b: *a\n"})
    assert [(p.path, p.line, p.message) for p in repo.errors] == [
        ("bundles/web/loop.yaml", 1, "invalid YAML: an alias refers to its own anchor (recursive structure)")
    ]


def test_a_hundred_thousand_documents_are_refused_naming_the_limit() -> None:
    many = b"---\na: 1\n" * 100_000
    repo = parse({**rb.SAMPLE, "bundles/web/many.yaml": many})
    assert [(p.path, p.message) for p in repo.errors] == [
        (
            "bundles/web/many.yaml",
            "more than 10000 documents, over the limit max_documents_per_file=10000",
        )
    ]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("deep.yaml", b"[" * 100_000 + b"]" * 100_000),
        ("deep-block.yaml", b"- " * 100_000 + b"x\n"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000),
        ("deep101.yaml", b"[" * 101 + b"]" * 101),
        ("deep101.json", b"[" * 101 + b"]" * 101),
    ],
)
def test_deep_nesting_is_refused_naming_the_limit(name: str, content: bytes) -> None:
    repo = parse({**rb.SAMPLE, f"bundles/web/{name}": content})
    ((path, message),) = [(p.path, p.message) for p in repo.errors]
    assert (path, message) == (f"bundles/web/{name}", "nesting deeper than the limit max_depth=100")


def test_nesting_up_to_the_limit_is_fine() -> None:
    (doc,) = yamlsafe.load_yaml(b"[" * 100 + b"]" * 100, path="f.yaml")
    depth = 0
    value = doc.data
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    assert depth == 100


def test_yaml_tags_that_are_not_plain_json_are_rejected() -> None:
    for text, tag in [
        (b"a: !!binary aGVsbG8=\n", "tag:yaml.org,2002:binary"),
        (b"a: !!python/object:os.system {}\n", "tag:yaml.org,2002:python/object:os.system"),
        (b"a: !custom x\n", "!custom"),
        (b"a: !!set {x, y}\n", "tag:yaml.org,2002:set"),
    ]:
        with pytest.raises(yamlsafe.YamlError) as info:
            yamlsafe.load_yaml(text, path="f.yaml")
        assert str(info.value) == (
            f"f.yaml:1: unsupported YAML tag '{tag}' (only strings, numbers, booleans, null, maps and lists)"
        )


def test_dates_stay_strings() -> None:
    (doc,) = yamlsafe.load_yaml(b"a: 2024-01-01\nb: 2024-01-01T10:00:00Z\n", path="f.yaml")
    assert doc.data == {"a": "2024-01-01", "b": "2024-01-01T10:00:00Z"}


def test_a_yaml_error_never_quotes_the_file_content() -> None:
    secret = b"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData:\n  password: CANARY-9 : x\n"
    repo = parse({**rb.SAMPLE, "bundles/web/secret.yaml": secret})
    (problem,) = repo.errors
    assert problem.line == 5 and "CANARY" not in str(problem)


def test_a_200_mb_file_on_disk_is_refused_without_being_read(tmp_path: Path) -> None:
    rb.write_files(tmp_path, rb.SAMPLE)
    with open(tmp_path / "bundles/web/huge.yaml", "wb") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: costs no disk, and reading it would cost 200 MB
    tracemalloc.start()
    try:
        snap = run(source.read_worktree, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 1024 * 1024
    assert [(p.path, p.message) for p in snap.problems] == [
        ("bundles/web/huge.yaml", "file is 209715200 bytes, over the limit max_file_bytes=16777216")
    ]
    repo = repository.parse(snap)
    assert "web" in repo.broken_bundles and "base" in repo.bundles


@pytest.mark.slow  # seconds: a commit of 20,001 files
def test_more_files_than_the_default_limit_refuse_the_revision(tmp_path: Path) -> None:
    git = rb.init(tmp_path)
    blob = rb.configmap("same")
    files: dict[str, str | bytes] = {f"bundles/many/m{i:05}.yaml": blob for i in range(20_001)}
    sha = rb.commit(git, files)
    with pytest.raises(yamlsafe.LimitExceeded) as info:
        run(source.read_revision, tmp_path, sha)
    assert str(info.value) == (
        f".:1: revision {sha[:12]} is refused as a whole: more than 20000 files below clusters/ and "
        "bundles/, over the content limit max_files=20000"
    )


def test_a_symlinked_cluster_file_never_leaks_its_target_through_the_whole_pipeline(tmp_path: Path) -> None:
    host = tmp_path / "etc-shadow"
    host.write_text("root:CANARY-HASH:19000:0:99999:7:::\n")
    os.chmod(host, 0o644)
    repo_dir = tmp_path / "repo"
    rb.write_files(repo_dir, rb.SAMPLE)
    rb.symlink(repo_dir, "clusters/evil.yaml", str(host))
    git = rb.init(repo_dir)
    sha = rb.commit(git, dict(rb.SAMPLE), links={"clusters/evil.yaml": str(host)})
    for snap in (run(source.read_worktree, repo_dir), run(source.read_revision, repo_dir, sha)):
        repo = repository.parse(snap)
        assert [(p.path, p.line, p.message) for p in repo.errors] == [
            (
                "clusters/evil.yaml",
                1,
                "is a symbolic link; fleet never follows links (commit the file itself)",
            )
        ]
        assert list(repo.broken_clusters) == ["evil"]
        everything = repr(repo) + repr(snap)
        assert "CANARY" not in everything and str(host) not in everything


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("../../etc", 'contains ".."'),
        ("a/../../b", 'contains ".."'),
        ("/etc/passwd", "is an absolute path"),
        ("~/x", "is an absolute path"),
        ("C:\\\\x", "contains a backslash (use /)"),
        ("C:/x", "is a URL or drive path, not a relative path"),
        ("file:///etc/passwd", "is a URL or drive path, not a relative path"),
        ("manifests\\\\x", "contains a backslash (use /)"),
        ("manifests\\0x", "contains a NUL character"),
    ],
)
def test_path_traversal_in_spec_paths_is_rejected_before_any_read(entry: str, why: str) -> None:
    files = {**rb.SAMPLE, "bundles/web/bundle.yaml": rb.bundle_yaml("web", spec=f'  paths: ["{entry}"]\n')}
    repo = parse(files)
    (problem,) = repo.errors
    assert (problem.path, problem.line) == ("bundles/web/bundle.yaml", 6)
    assert problem.message.endswith(why)
    assert "web" in repo.broken_bundles


def test_aliases_cannot_nest_deeper_than_the_depth_limit() -> None:
    chain = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 150))
    with pytest.raises(yamlsafe.LimitExceeded, match="max_depth=100"):
        yamlsafe.load_yaml(chain.encode(), path="c.yaml")
    shallow = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 90))
    (doc,) = yamlsafe.load_yaml(shallow.encode(), path="c.yaml")
    assert doc.data["a3"] == [[[["x"]]]]


def test_merge_keys_work_and_are_checked_like_everything_else() -> None:
    (doc,) = yamlsafe.load_yaml(b"base: &b {a: 1}\nx:\n  <<: *b\n  c: 2\n", path="m.yaml")
    assert doc.data == {"base": {"a": 1}, "x": {"a": 1, "c": 2}}
    with pytest.raises(yamlsafe.YamlError, match=r"unsupported YAML tag 'tag:yaml\.org,2002:binary'"):
        yamlsafe.load_yaml(b"x:\n  <<: {a: !!binary aGk=}\n", path="m.yaml")


def test_a_mapping_key_that_is_a_list_is_a_yaml_error_with_its_line() -> None:
    with pytest.raises(yamlsafe.YamlError) as info:
        yamlsafe.load_yaml(b"a: 1\n? [x]\n: b\n", path="k.yaml")
    assert str(info.value) == "k.yaml:2: invalid YAML: a mapping key must be a scalar, not a list or mapping"


def test_equals_and_double_angle_values_are_text_as_kubernetes_reads_them() -> None:
    (doc,) = yamlsafe.load_yaml(b"a: =\nb: <<\nc: [=, <<]\n", path="t.yaml")
    assert doc.data == {"a": "=", "b": "<<", "c": ["=", "<<"]}
