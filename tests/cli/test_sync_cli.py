"""`fleet sync` / `fleet diff` command surface: flags, durations, output shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet import cli
from fleet.cli import sync
from fleet.cluster import reconcile
from fleet.core import model
from tests.support.reconcile import run_fleet


def test_sync_and_diff_are_registered_with_their_flags() -> None:
    runner = CliRunner()
    for command, flags in (
        (
            "sync",
            [
                "--rev",
                "--worktree",
                "--kubeconfig",
                "--instance",
                "--concurrency",
                "--allow-exec-auth",
                "--allow-empty-repo",
                "--format",
                "--no-wait",
                "--timeout",
            ],
        ),
        ("diff", ["--rev", "--worktree", "--kubeconfig", "--instance", "--allow-empty-repo"]),
    ):
        result = runner.invoke(cli.app, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0
        for flag in flags:
            assert flag in result.output, (command, flag)


def test_a_bad_format_or_timeout_exits_2() -> None:
    runner = CliRunner()
    assert runner.invoke(cli.app, ["sync", ".", "--format", "yaml"]).exit_code == 2
    assert runner.invoke(cli.app, ["sync", ".", "--timeout", "soon"]).exit_code == 2


def test_the_json_summary_has_the_documented_shape() -> None:
    ref = model.ObjectRef("", "v1", "ConfigMap", "web", "one")
    bundle = reconcile.BundleResult(
        "web",
        model.State.SYNCED,
        model.ChangeSet((model.Change(ref, model.Action.CREATED), model.Change(ref, model.Action.UNCHANGED))),
        objects=2,
    )
    result = reconcile.FleetResult(
        "abc",
        {
            "prod-1": reconcile.ClusterResult(
                "prod-1", model.State.SYNCED, bundles={"web": bundle}, requests=7
            )
        },
    )
    doc = sync.result_json(result)
    assert doc["ok"] is True and doc["revision"] == "abc"
    web = doc["clusters"]["prod-1"]["bundles"]["web"]
    assert web["state"] == "Synced" and web["created"] == 1 and web["unchanged"] == 1
    assert web["changes"] == [{"object": "ConfigMap/web/one", "action": "created", "message": None}]
    table = sync.result_table(result)
    assert table.splitlines()[0].split() == [
        "CLUSTER",
        "BUNDLE",
        "STATE",
        "CREATED",
        "CONFIGURED",
        "UNCHANGED",
        "DELETED",
        "MESSAGE",
    ]
    assert table.splitlines()[1].split()[:3] == ["prod-1", "web", "Synced"]


def test_paused_and_suspended_are_not_failures_but_progressing_is_unless_not_waiting() -> None:
    paused = reconcile.ClusterResult(
        "a", model.State.PAUSED, bundles={"x": reconcile.BundleResult("x", model.State.PAUSED)}
    )
    suspended = reconcile.ClusterResult(
        "b", model.State.SYNCED, bundles={"x": reconcile.BundleResult("x", model.State.SUSPENDED)}
    )
    progressing = reconcile.ClusterResult(
        "c", model.State.PROGRESSING, bundles={"x": reconcile.BundleResult("x", model.State.PROGRESSING)}
    )
    assert reconcile.FleetResult(None, {"a": paused, "b": suspended}).ok
    assert not reconcile.FleetResult(None, {"c": progressing}).ok
    assert reconcile.FleetResult(None, {"c": progressing}, wait=False).ok


@pytest.mark.slow  # starts processes: python -m fleet.cli
def test_an_instance_name_that_cannot_be_a_label_is_refused(tmp_path: Path) -> None:
    proc = run_fleet("sync", str(tmp_path), "--instance", "Bad_Name")
    assert proc.returncode == 2
    assert "--instance: 'Bad_Name' is not a DNS-1123 label" in proc.stderr


def test_the_json_report_is_the_standard_librarys_indented_json_byte_for_byte() -> None:
    def changes(n: int, message: str = "") -> model.ChangeSet:
        return model.ChangeSet(
            tuple(
                model.Change(
                    model.ObjectRef("", "v1", "ConfigMap", "web", f"cm-{i}"), model.Action.CREATED, message
                )
                for i in range(n)
            )
        )

    plain = reconcile.ClusterResult(
        "dev-1",
        model.State.SYNCED,
        bundles={"web": reconcile.BundleResult("web", model.State.SYNCED, changes(3), "", 3)},
        seconds=1.23456,
    )
    accented = reconcile.ClusterResult(
        "dev-2",
        model.State.FAILED,
        bundles={"web": reconcile.BundleResult("web", model.State.FAILED, changes(1, "refusé"), "échec", 1)},
        message="cluster dev-2: ünreachable",
    )
    for clusters in ({"dev-1": plain}, {"dev-1": plain, "dev-2": accented}):
        doc = sync.result_json(reconcile.FleetResult("r1", clusters))
        assert sync.json_text(doc) == json.dumps(doc, indent=2)
