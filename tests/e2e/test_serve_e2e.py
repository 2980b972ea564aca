"""End-to-end: the real `fleet serve` process against `fleet sim` clusters and a real git repository."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.controller import webhook
from fleet.sim import testing
from tests.support import serve
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, run_fleet, send, writes

CLUSTERS = ["eu-1", "eu-2", "us-1"]
SECRET = "webhook-secret-for-tests"


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
    repo.commit("first")
    return repo


def owned(sim: testing.SimHandle, cluster: str) -> dict[str, dict[str, Any]]:
    """ConfigMaps in namespace `apps` that carry fleet's bundle label (the sim adds others of its own)."""
    return {
        name: obj
        for name, obj in live_objects(sim, cluster, namespace="apps").items()
        if "fleet.dev/bundle" in (obj["metadata"].get("labels") or {})
    }


def start(tmp_path: Path, repo: GitOpsRepo, sim: testing.SimHandle, *args: str, name: str = "serve") -> Any:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    return serve.serving(
        repo=repo.root,
        kubeconfig=sim.kubeconfig,
        state_dir=tmp_path / "state",
        log=tmp_path / f"{name}.log",
        args=["--interval", "1s", "--webhook-secret-file", str(secret), *args],
    )


def all_synced_at(sha: str) -> Any:
    def check(doc: dict[str, Any]) -> bool:
        clusters = doc.get("clusters") or {}
        return bool(clusters) and all(
            c["state"] == "Synced" and c["revision"] == sha for c in clusters.values()
        )

    return check


def signed(body: bytes) -> dict[str, str]:
    return {"X-Hub-Signature-256": webhook.sign_github(body=body, secret=SECRET.encode())}


def test_the_first_revision_converges_on_every_placed_cluster(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim) as fleet:
        doc = fleet.wait_for(all_synced_at(head), what="every cluster Synced at HEAD")
        assert fleet.get("/readyz").status_code == 200
        assert fleet.get("/healthz").status_code == 200
    assert doc["revision"] == head and doc["message"] == "first" and doc["errors"] == []
    assert set(doc["clusters"]) == set(CLUSTERS)
    assert set(doc["clusters"]["eu-1"]["bundles"]) == {"settings", "eu-only"}
    assert set(doc["clusters"]["us-1"]["bundles"]) == {"settings"}
    assert doc["clusters"]["eu-1"]["bundles"]["eu-only"] == {
        "state": "Synced",
        "revision": head,
        "objects": 1,
        "lastError": None,
    }
    assert set(owned(sim, "eu-2")) == {"settings", "eu-only"}
    assert set(owned(sim, "us-1")) == {"settings"}


def test_the_status_document_has_exactly_the_specified_shape(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim) as fleet:
        doc = fleet.wait_for(all_synced_at(head), what="Synced")
    # docs/operations.md's keys, plus `rollouts` (docs/rollouts.md: the latest rollout of every bundle).
    assert set(doc) == {
        "revision",
        "message",
        "author",
        "committedAt",
        "fetchedAt",
        "errors",
        "stateStore",
        "clusters",
        "rollouts",
    }
    assert doc["stateStore"] == {"saving": True, "lastError": None, "failingSince": None, "setAside": None}
    assert {r["state"] for r in doc["rollouts"].values()} == {"Completed"}
    cluster = doc["clusters"]["eu-1"]
    # docs/operations.md's keys, plus `labels` (the status page filters by label selector) and `warnings`
    # (risky kubeconfig settings), both additive.
    assert set(cluster) == {
        "state",
        "labels",
        "revision",
        "lastSyncAt",
        "lastError",
        "traceId",
        "watch",
        "bundles",
        "warnings",
    }
    assert cluster["labels"] == {"region": "eu"}
    assert cluster["warnings"] == []
    assert set(cluster["watch"]) == {"streams", "lastEventAt", "reconnects", "relists"}
    for ts in (doc["committedAt"], doc["fetchedAt"], cluster["lastSyncAt"]):
        assert ts.endswith("Z") and "T" in ts


def test_a_new_commit_is_picked_up_by_polling(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(all_synced_at(str(gitops.repo.head.target)), what="first revision")
        gitops.bundle("settings", [configmap("settings", colour="green")], namespace="apps", selector={})
        second = gitops.commit("green")
        fleet.wait_for(all_synced_at(second), what="second revision by polling")
    assert owned(sim, "us-1")["settings"]["data"] == {"colour": "green"}


def test_a_signed_webhook_starts_a_fetch_and_an_unsigned_one_is_refused(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim, "--interval", "1h") as fleet:
        fleet.wait_for(all_synced_at(str(gitops.repo.head.target)), what="first revision")
        gitops.bundle("settings", [configmap("settings", colour="red")], namespace="apps", selector={})
        second = gitops.commit("red")
        fetches = fleet.metric("fleet_fetches_total")
        body = json.dumps({"ref": "refs/heads/main"}).encode()
        assert fleet.post("/api/v1/webhook", content=body).status_code == 401
        wrong = {"X-Hub-Signature-256": webhook.sign_github(body=body, secret=b"not the secret")}
        assert fleet.post("/api/v1/webhook", content=body, headers=wrong).status_code == 401
        other_body = signed(b"another body")
        assert fleet.post("/api/v1/webhook", content=body, headers=other_body).status_code == 401
        assert fleet.metric("fleet_fetches_total") == fetches  # nothing was triggered
        assert fleet.status()["revision"] != second
        resp = fleet.post("/api/v1/webhook", content=body, headers=signed(body))
        assert resp.status_code == 202
        fleet.wait_for(all_synced_at(second), timeout=30, what="revision announced by the webhook")


def test_a_webhook_body_over_the_cap_is_refused_with_413(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim, "--interval", "1h") as fleet:
        body = b"x" * (webhook.MAX_BODY + 10)
        assert fleet.post("/api/v1/webhook", content=body, headers=signed(body)).status_code == 413


def test_a_cluster_file_added_while_running_is_reconciled_and_a_removed_one_keeps_its_objects(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    gitops.remove("clusters/eu-2.yaml")
    first = gitops.commit("without eu-2")
    with start(tmp_path, gitops, sim) as fleet:
        doc = fleet.wait_for(all_synced_at(first), what="first revision")
        assert "eu-2" not in doc["clusters"]
        assert owned(sim, "eu-2") == {}
        gitops.cluster("eu-2", labels={"region": "eu"})
        second = gitops.commit("add eu-2")
        fleet.wait_for(all_synced_at(second), what="eu-2 reconciled")
        assert set(owned(sim, "eu-2")) == {"settings", "eu-only"}
        gitops.remove("clusters/us-1.yaml")
        third = gitops.commit("remove us-1")
        doc = fleet.wait_for(
            lambda d: "us-1" not in d["clusters"] and d["revision"] == third, what="us-1 gone"
        )
    assert set(owned(sim, "us-1")) == {"settings"}


def test_a_broken_commit_keeps_the_last_good_revision_and_shows_the_error(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    first = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(all_synced_at(first), what="first revision")
        gitops.write(
            "bundles/settings/manifests/all.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n"
        )
        broken = gitops.commit("broken yaml")
        doc = fleet.wait_for(lambda d: d["revision"] == broken, what="broken revision fetched")
        doc = fleet.wait_for(
            lambda d: d["clusters"]["us-1"]["bundles"]["settings"]["state"] == "Failed",
            what="settings Failed",
        )
    assert any(e["path"] == "bundles/settings/manifests/all.yaml" for e in doc["errors"])
    settings = doc["clusters"]["eu-1"]["bundles"]["settings"]
    assert settings["revision"] == first and "broken" in settings["lastError"]
    assert doc["clusters"]["eu-1"]["bundles"]["eu-only"]["state"] == "Synced"
    assert owned(sim, "eu-1")["settings"]["data"] == {"colour": "blue"}


def test_sigterm_stops_the_controller_cleanly(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(all_synced_at(str(gitops.repo.head.target)), what="first revision")
        assert fleet.terminate() == 0
        assert "stopped" in fleet.logs()


def test_a_restart_after_sigkill_resumes_without_repeating_writes(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim, name="first") as fleet:
        fleet.wait_for(all_synced_at(head), what="first run converged")
        fleet.kill()
    marks = {c: (sim.journal_sync(c) or [{"seq": 0}])[-1]["seq"] for c in CLUSTERS}
    with start(tmp_path, gitops, sim, name="second") as fleet:
        doc = fleet.status()
        assert doc["revision"] == head  # restored from the state database before any fetch
        fleet.wait_for(lambda d: fleet.get("/readyz").status_code == 200, what="ready after restart")
        fleet.wait_for(all_synced_at(head), what="converged after restart")
    for c in CLUSTERS:
        assert writes(sim.journal_sync(c, since=marks[c])) == [], c


def test_reconcile_now_needs_the_api_token_when_one_is_configured(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    token = tmp_path / "token"
    token.write_text("api-token-value\n")
    with start(tmp_path, gitops, sim, "--api-token-file", str(token)) as fleet:
        fleet.wait_for(all_synced_at(str(gitops.repo.head.target)), what="first revision")
        assert fleet.post("/api/v1/reconcile?cluster=eu-1").status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert fleet.post("/api/v1/reconcile?cluster=eu-1", headers=bad).status_code == 401
        good = {"Authorization": "Bearer api-token-value"}
        resp = fleet.post("/api/v1/reconcile?cluster=eu-1", headers=good)
        assert resp.status_code == 202 and resp.json() == {"queued": ["eu-1"]}
        assert fleet.post("/api/v1/reconcile?cluster=nowhere", headers=good).status_code == 404


def test_the_status_answers_304_when_the_etag_still_matches(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(all_synced_at(str(gitops.repo.head.target)), what="Synced")
        first = fleet.get("/api/v1/status")
        etag = first.headers["ETag"]
        again = fleet.get("/api/v1/status", headers={"If-None-Match": etag})
        assert again.status_code in (200, 304)
        if again.status_code == 200:  # something changed in between (a resync): the new tag must differ
            assert again.headers["ETag"] != etag
        else:
            assert again.content == b""


def test_the_status_page_and_its_assets_are_served_with_a_content_security_policy(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim) as fleet:
        page = fleet.get("/")
        script = fleet.get("/ui/app.js")
        missing = fleet.get("/ui/../../etc/passwd")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    assert missing.status_code == 404


def test_metrics_report_reconciles_and_cluster_states(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(all_synced_at(str(gitops.repo.head.target)), what="first revision")
        text = fleet.get("/metrics").text
    assert 'fleet_cluster_state{cluster="eu-1",state="Synced"} 1.0' in text
    assert 'fleet_reconciles_total{cluster="us-1",state="Synced"}' in text
    assert "fleet_reconcile_duration_seconds_bucket" in text


def test_drift_made_behind_fleets_back_is_repaired_and_counted(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(all_synced_at(head), what="Synced")
        fleet.wait_for(lambda d: d["clusters"]["eu-1"]["watch"]["streams"] >= 1, what="watch streams open")
        edited = send(
            sim, "eu-1", "PATCH", "/api/v1/namespaces/apps/configmaps/settings", {"data": {"colour": "x"}}
        )
        assert edited.status_code == 200
        deleted = send(sim, "eu-2", "DELETE", "/api/v1/namespaces/apps/configmaps/eu-only")
        assert deleted.status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            eu1, eu2 = owned(sim, "eu-1"), owned(sim, "eu-2")
            if eu1["settings"]["data"] == {"colour": "blue"} and "eu-only" in eu2:
                break
            time.sleep(0.1)
        assert owned(sim, "eu-1")["settings"]["data"] == {"colour": "blue"}
        assert "eu-only" in owned(sim, "eu-2")
        deadline = time.monotonic() + 10
        while fleet.metric("fleet_drift_repairs_total") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fleet.metric("fleet_drift_repairs_total") >= 2
        doc = fleet.wait_for(
            lambda d: d["clusters"]["eu-1"]["watch"]["lastEventAt"] is not None, what="watch health in status"
        )
    assert doc["clusters"]["eu-1"]["watch"]["streams"] >= 1


def test_a_cluster_watching_more_kinds_than_requests_in_flight_still_reconciles_new_commits(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    kinds = [
        configmap("many-cm"),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "many-s"}, "stringData": {"k": "v"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "many-sa"}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "many-svc"},
            "spec": {"ports": [{"port": 80}]},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "many-role"},
            "rules": [],
        },
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "many-lease"},
            "spec": {},
        },
    ]
    gitops.bundle("many", kinds, namespace="apps", selector={"region": "us"})
    first = gitops.commit("many kinds")
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(all_synced_at(first), what="first revision")
        fleet.wait_for(lambda d: d["clusters"]["us-1"]["watch"]["streams"] >= 6, what="six watch streams")
        gitops.bundle("settings", [configmap("settings", colour="teal")], namespace="apps", selector={})
        second = gitops.commit("teal")
        fleet.wait_for(all_synced_at(second), what="a new commit while every stream is open")
    assert owned(sim, "us-1")["settings"]["data"] == {"colour": "teal"}


def test_insecure_skip_tls_verify_is_a_warning_in_the_status(tmp_path: Path, gitops: GitOpsRepo) -> None:
    with testing.serving(names=CLUSTERS, tls=True) as tls_sim:
        doc = yaml.safe_load(tls_sim.kubeconfig.read_text())
        for entry in doc["clusters"]:
            if entry["name"] == "us-1":
                entry["cluster"].pop("certificate-authority-data", None)
                entry["cluster"]["insecure-skip-tls-verify"] = True
        kubeconfig = tmp_path / "insecure-kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(doc))
        with serve.serving(
            repo=gitops.root,
            kubeconfig=kubeconfig,
            state_dir=tmp_path / "state",
            log=tmp_path / "serve.log",
            args=["--interval", "1s"],
        ) as fleet:
            doc = fleet.wait_for(all_synced_at(str(gitops.repo.head.target)), what="Synced over TLS")
            logs = fleet.logs()
    assert any("insecure-skip-tls-verify" in w for w in doc["clusters"]["us-1"]["warnings"])
    assert doc["clusters"]["eu-1"]["warnings"] == []
    assert "insecure-skip-tls-verify" in logs


def test_an_unreachable_repository_keeps_the_last_good_revision_reports_the_error_and_recovers(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    first = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim) as fleet:
        fleet.wait_for(all_synced_at(first), what="first revision")
        hidden = gitops.root.with_name("repo-away")
        gitops.root.rename(hidden)  # the remote is gone: every fetch fails
        doc = fleet.wait_for(lambda d: bool(d["errors"]), what="fetch error reported")
        error = doc["errors"][0]
        assert "fetch failed" in error["message"] and "last good revision kept" in error["message"]
        assert doc["revision"] == first
        assert all(c["state"] == "Synced" and c["revision"] == first for c in doc["clusters"].values())
        assert fleet.metric("fleet_fetches_total") > 0
        hidden.rename(gitops.root)
        gitops.bundle("settings", [configmap("settings", colour="violet")], namespace="apps", selector={})
        second = gitops.commit("back, and violet")
        doc = fleet.wait_for(
            all_synced_at(second), timeout=90, what="recovered after the repository came back"
        )
    assert doc["errors"] == []
    assert owned(sim, "eu-1")["settings"]["data"] == {"colour": "violet"}


def test_fleet_status_prints_the_table_and_json_and_exits_1_when_a_cluster_fails(
    tmp_path: Path, gitops: GitOpsRepo, sim: testing.SimHandle
) -> None:
    head = str(gitops.repo.head.target)
    with start(tmp_path, gitops, sim, "--request-timeout", "1s", "--retry-budget", "2s") as fleet:
        fleet.wait_for(all_synced_at(head), what="Synced")
        table = run_fleet("status", "--server", fleet.url)
        as_json = run_fleet("status", "--server", fleet.url, "--format", "json")
        sim.faults_sync("us-1", {"status": 403, "method": "PATCH"})
        gitops.bundle("settings", [configmap("settings", colour="amber")], namespace="apps", selector={})
        gitops.commit("amber")
        fleet.wait_for(lambda d: d["clusters"]["us-1"]["state"] == "Failed", what="us-1 Failed")
        failing = run_fleet("status", "--server", fleet.url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == f"revision  {head[:7]}  first"
    for name in CLUSTERS:
        assert any(line.startswith(name) and "Synced" in line for line in lines), table.stdout
    assert "3 Synced" in table.stdout
    assert as_json.returncode == 0 and set(json.loads(as_json.stdout)["clusters"]) == set(CLUSTERS)
    assert failing.returncode == 1
    assert any(line.startswith("us-1") and "Failed" in line for line in failing.stdout.splitlines())


def test_fleet_status_without_a_server_fails_on_stderr_with_exit_2(tmp_path: Path) -> None:
    proc = run_fleet("status", "--server", "http://127.0.0.1:9", "--timeout", "2")
    assert proc.returncode == 2
    assert "cannot read the status" in proc.stderr and proc.stdout == ""
