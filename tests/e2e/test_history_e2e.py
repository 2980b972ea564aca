"""End-to-end: the history, `fleet status --revision`, and the Kubernetes Events of the real `fleet serve`
against `fleet sim` clusters and a real git repository (docs/notifications.md)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.sim import testing
from tests.support import serve
from tests.support.reconcile import GitOpsRepo, configmap, run_fleet, send

pytestmark = pytest.mark.slow

CLUSTERS = ["eu-1", "eu-2", "us-1"]
KUBECTL = str(Path(sys.executable).parent / "kubectl")


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=CLUSTERS) as handle:
        yield handle


@pytest.fixture
def gitops(tmp_path: Path) -> GitOpsRepo:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("eu-1", labels={"region": "eu"})
    repo.cluster("eu-2", labels={"region": "eu"})
    repo.cluster("us-1", labels={"region": "us"})
    repo.bundle("settings", [configmap("settings", colour="blue")], namespace="apps", selector={})
    repo.bundle("eu-only", [configmap("eu-only", zone="eu")], namespace="apps", selector={"region": "eu"})
    repo.commit("first", author="Ada Lovelace")
    return repo


def start(tmp_path: Path, repo: GitOpsRepo, sim: testing.SimHandle, *args: str) -> Any:
    return serve.serving(
        repo=repo.root,
        kubeconfig=sim.kubeconfig,
        state_dir=tmp_path / "state",
        log=tmp_path / "serve.log",
        args=["--interval", "1s", *args],
    )


def all_synced_at(sha: str) -> Any:
    def check(doc: dict[str, Any]) -> bool:
        clusters = doc.get("clusters") or {}
        return bool(clusters) and all(
            c["state"] == "Synced" and c["revision"] == sha for c in clusters.values()
        )

    return check


def history(fleet: serve.ServeProcess, *args: str) -> list[dict[str, Any]]:
    out = run_fleet("history", "--server", fleet.url, "--format", "json", "--limit", "1000", *args)
    assert out.returncode == 0, out.stderr
    entries: list[dict[str, Any]] = json.loads(out.stdout)["entries"]
    return entries


def kubectl(sim: testing.SimHandle, tmp_path: Path, cluster: str, *args: str) -> str:
    out = subprocess.run(
        [
            KUBECTL,
            "--kubeconfig",
            str(sim.kubeconfig),
            "--context",
            cluster,
            "--cache-dir",
            str(tmp_path / "kc"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_history_says_which_revision_reached_which_cluster_when_and_who_caused_it(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    first = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(all_synced_at(first), what="every cluster Synced at the first commit")
        gitops.bundle("settings", [configmap("settings", colour="green")], namespace="apps", selector={})
        second = gitops.commit("settings: green", author="Bea Smith")
        fleet.wait_for(all_synced_at(second), what="every cluster Synced at the second commit")

        entries = history(fleet)
        synced = {
            (e["cluster"], e["bundle"], e["toRevision"]): e for e in entries if e["outcome"] == "Synced"
        }
        assert set(synced) == {
            ("eu-1", "settings", first),
            ("eu-2", "settings", first),
            ("us-1", "settings", first),
            ("eu-1", "eu-only", first),
            ("eu-2", "eu-only", first),
            ("eu-1", "settings", second),
            ("eu-2", "settings", second),
            ("us-1", "settings", second),
        }
        one = synced[("eu-1", "settings", second)]
        assert one["fromRevision"] == first and one["actor"] == "Bea Smith"
        assert one["objects"] == {"configured": 1} and "traceId" in one  # null: the tests run without tracing
        assert synced[("us-1", "settings", first)]["actor"] == "Ada Lovelace"
        assert synced[("us-1", "settings", first)]["objects"] == {"created": 1}
        assert [e["at"] for e in entries] == sorted((e["at"] for e in entries), reverse=True)

        # Filters, and the table people read.
        only = history(fleet, "--cluster", "eu-1", "--bundle", "settings")
        assert [(e["outcome"], e["toRevision"]) for e in only] == [("Synced", second), ("Synced", first)]
        assert {e["cluster"] for e in history(fleet, "--revision", second[:10])} == set(CLUSTERS)
        assert history(fleet, "--since", "2000-01-01T00:00:00Z", "--bundle", "eu-only") != []
        table = run_fleet("history", "--server", fleet.url, "--cluster", "us-1")
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split() == [
            "TIME",
            "CLUSTER",
            "BUNDLE",
            "OUTCOME",
            "FROM",
            "TO",
            "OBJECTS",
            "ACTOR",
            "NOTE",
        ]
        assert lines[1].split()[1:7] == ["us-1", "settings", "Synced", first[:12], second[:12], "~1"]
        bad = run_fleet("history", "--server", fleet.url, "--since", "soon")
        assert bad.returncode == 2 and "--since: 'soon' is not a duration" in bad.stderr

        # Where is the second commit, fleet-wide: every cluster holds it for settings, since when.
        where = run_fleet("status", "--server", fleet.url, "--revision", second[:8], "--format", "json")
        assert where.returncode == 0, where.stderr
        doc = json.loads(where.stdout)
        assert doc["revision"] == second and doc["newest"] is True
        assert set(doc["holders"]) == set(CLUSTERS)
        assert doc["holders"]["us-1"]["settings"]["state"] == "Synced"
        assert doc["holders"]["us-1"]["settings"]["since"] >= synced[("us-1", "settings", first)]["at"][:19]
        assert doc["rollouts"] == {"settings": "Completed"}
        assert doc["elsewhere"] == {}
        text = run_fleet("status", "--server", fleet.url, "--revision", second[:8])
        assert "revision " + second in text.stdout and "us-1" in text.stdout
        unknown = run_fleet("status", "--server", fleet.url, "--revision", "0123456789abcdef")
        assert unknown.returncode == 1 and "unknown here" in unknown.stderr

        gitops.remove("bundles/eu-only")
        third = gitops.commit("drop eu-only", author="Cy Young")
        fleet.wait_for(all_synced_at(third), what="every cluster Synced at the third commit")
        pruned = [e for e in history(fleet, "--revision", third) if e["outcome"] == "Pruned"]
        assert sorted((e["cluster"], e["bundle"], e["objects"]["deleted"], e["actor"]) for e in pruned) == [
            ("eu-1", "eu-only", 1, "Cy Young"),
            ("eu-2", "eu-only", 1, "Cy Young"),
        ]
    # The same rows are in the state database, indexed; the old per-round table is gone.
    with sqlite3.connect(tmp_path / "state" / "state.db") as db:
        assert db.execute("SELECT COUNT(*) FROM history").fetchone()[0] >= 10
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
        assert "sync" not in names and {"history_by_pair", "history_by_to", "history_by_time"} <= names


def test_kubectl_get_events_shows_fleets_applies_and_drift_repairs_aggregated_on_repeats(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    first = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(all_synced_at(first), what="Synced")
        deadline = time.monotonic() + 30
        while "Applied" not in kubectl(sim, tmp_path, "eu-1", "get", "events", "-n", "fleet-system"):
            assert time.monotonic() < deadline, fleet.logs()[-3000:]
            time.sleep(0.5)
        lines = kubectl(sim, tmp_path, "eu-1", "get", "events", "-n", "fleet-system").splitlines()
        assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        applied = sorted(" ".join(line.split()[1:]) for line in lines[1:] if "Applied" in line)
        assert applied == [
            f"Normal Applied configmap/fleet-inventory-eu-only revision {first[:12]}: bundle eu-only: 1 created",
            f"Normal Applied configmap/fleet-inventory-settings revision {first[:12]}: bundle settings: 1 created",
        ]
        # A drift fight: someone changes the object again and again; each change is written back.
        for n in range(4):
            send(
                sim,
                "eu-1",
                "PATCH",
                "/api/v1/namespaces/apps/configmaps/settings",
                {"data": {"colour": f"red-{n}"}},
            )
            deadline = time.monotonic() + 20
            while (
                send(sim, "eu-1", "GET", "/api/v1/namespaces/apps/configmaps/settings").json()["data"][
                    "colour"
                ]
                != "blue"
            ):
                assert time.monotonic() < deadline, "drift not repaired"
                time.sleep(0.1)
        deadline = time.monotonic() + 40
        while True:
            doc = json.loads(
                kubectl(
                    sim, tmp_path, "eu-1", "get", "events.events.k8s.io", "-n", "fleet-system", "-o", "json"
                )
            )
            repaired = [e for e in doc["items"] if e["reason"] == "DriftRepaired"]
            if repaired and (repaired[0].get("series") or {}).get("count") == 4:
                break
            assert time.monotonic() < deadline, f"no aggregated DriftRepaired event: {repaired}"
            time.sleep(1)
        assert len(repaired) == 1  # one Event, four occurrences: never one Event per repair
        event = repaired[0]
        assert event["regarding"] == {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "namespace": "apps",
            "name": "settings",
        }
        assert event["reportingController"] == "fleet.dev/fleet" and event["reportingInstance"] == "fleet"
        assert (
            event["note"] == f"revision {first[:12]}: bundle settings: ConfigMap apps/settings written back"
        )
        wide = kubectl(
            sim, tmp_path, "eu-1", "get", "events", "-n", "fleet-system", "-o", "wide"
        ).splitlines()
        header = wide[0].split()
        row = next(line.split() for line in wide[1:] if "DriftRepaired" in line)
        assert "COUNT" in header and "configmap/settings" in row and "4" in row
        drift = [e for e in history(fleet, "--cluster", "eu-1") if e["outcome"] == "DriftRepaired"]
        assert len(drift) == 4 and all(e["actor"] == "fleet" and e["toRevision"] == first for e in drift)
        assert "Applied" not in kubectl(sim, tmp_path, "us-1", "get", "events", "-n", "default")
