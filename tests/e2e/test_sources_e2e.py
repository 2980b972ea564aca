"""End-to-end: several `fleet serve` processes writing to the same clusters under one `--instance`.

Two controllers of different repositories must never prune each other (each inventory says which source
wrote it) and must both report the clash; two replicas of one repository at different revisions (a
rolling update, also one that adds a management cluster) must let the newer revision win without a
fight. Real processes, real git repositories, `fleet sim` clusters, writes counted in the sim's request
journal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.clients import kube, source
from fleet.cluster import apply
from fleet.core import inventory
from fleet.sim import testing
from tests.support import serve
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, send
from tests.support.reconcile import object_writes as writes

pytestmark = pytest.mark.slow

CLUSTERS = ["eu-1", "eu-2"]


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=CLUSTERS) as handle:
        yield handle


def start(
    tmp_path: Path, repo: GitOpsRepo, sim: testing.SimHandle, name: str, *args: str, state: str = ""
) -> Any:
    return serve.serving(
        repo=repo.root,
        kubeconfig=sim.kubeconfig,
        state_dir=tmp_path / f"state-{state or name}",
        log=tmp_path / f"{name}.log",
        args=list(args),
    )


def synced_at(sha: str) -> Any:
    def check(doc: dict[str, Any]) -> bool:
        clusters = doc.get("clusters") or {}
        return bool(clusters) and all(
            c["state"] == "Synced" and c["revision"] == sha for c in clusters.values()
        )

    return check


def mark(sim: testing.SimHandle) -> dict[str, int]:
    return {c: (sim.journal_sync(c) or [{"seq": 0}])[-1]["seq"] for c in CLUSTERS}


def errors_of(doc: dict[str, Any], cluster: str) -> list[str]:
    c = doc["clusters"][cluster]
    found = [c["lastError"] or ""]
    found += [b["lastError"] or "" for b in c["bundles"].values()]
    return [e for e in found if e]


def inventory_cm(sim: testing.SimHandle, cluster: str, bundle: str) -> dict[str, Any]:
    return live_objects(sim, cluster, namespace="fleet-system")[f"fleet-inventory-{bundle}"]


def test_two_controllers_of_different_repositories_never_prune_each_other_and_both_report_the_clash(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    a = GitOpsRepo(tmp_path / "team-a")
    b = GitOpsRepo(tmp_path / "team-b")
    for repo, team in ((a, "a"), (b, "b")):
        for c in CLUSTERS:
            repo.cluster(c)
        repo.bundle(f"only-{team}", [configmap(f"only-{team}")], namespace=f"team-{team}", selector={})
        repo.bundle("shared", [configmap(f"shared-{team}")], namespace=f"team-{team}", selector={})
    head_a = a.commit("team a")
    b.commit("team b")
    args = ("--interval", "1s", "--resync", "2s")
    with start(tmp_path, a, sim, "a", *args) as serve_a:
        serve_a.wait_for(synced_at(head_a), what="team a Synced alone")
        before = mark(sim)
        with start(tmp_path, b, sim, "b", *args) as serve_b:

            def names_both(doc: dict[str, Any]) -> bool:
                if "eu-1" not in doc.get("clusters", {}):
                    return False
                text = " ".join(errors_of(doc, "eu-1"))
                return str(a.root) in text and str(b.root) in text

            doc_b = serve_b.wait_for(names_both, timeout=60, what="team b reports the clash naming both")
            doc_a = serve_a.wait_for(names_both, timeout=60, what="team a reports the clash naming both")
            time.sleep(6)  # several resync rounds of both controllers
            doc_a, doc_b = serve_a.status(), serve_b.status()
    for doc in (doc_a, doc_b):
        assert all(c["state"] != "Synced" for c in doc["clusters"].values()), doc
    for c in CLUSTERS:
        journal = sim.journal_sync(c, since=before[c])
        deletes = [r for r in writes(journal) if r["method"] == "DELETE"]
        assert deletes == [], (c, deletes)
        assert set(live_objects(sim, c, namespace="team-a")) >= {"only-a", "shared-a"}
        assert "only-b" in live_objects(sim, c, namespace="team-b")
        # the first writer keeps its inventory of the bundle both repositories name "shared"
        shared = inventory_cm(sim, c, "shared")
        assert json.loads(shared["data"]["objects"]) == [["", "v1", "ConfigMap", "team-a", "shared-a"]]
        assert shared["data"]["source"] == str(a.root)
        assert inventory_cm(sim, c, "only-b")["data"]["source"] == str(b.root)


def test_two_replicas_of_one_repository_at_different_revisions_let_the_newer_win_without_a_fight(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    for c in CLUSTERS:
        repo.cluster(c)
    repo.bundle(
        "web", [configmap("web", colour="blue"), configmap("old-only")], namespace="apps", selector={}
    )
    first = repo.commit("blue")
    # The old replica never fetches again (it is being replaced), but resyncs and watches as usual.
    with start(tmp_path, repo, sim, "old", "--interval", "1h", "--resync", "2s") as old:
        old.wait_for(synced_at(first), what="old replica Synced at the first revision")
        repo.bundle(
            "web", [configmap("web", colour="green"), configmap("new-only")], namespace="apps", selector={}
        )
        second = repo.commit("green")
        before = mark(sim)
        with start(tmp_path, repo, sim, "new", "--interval", "1s", "--resync", "2s") as new:
            new.wait_for(synced_at(second), what="new replica Synced at the second revision")
            settled = mark(sim)
            time.sleep(8)  # several resync rounds of both replicas, and their watches
            doc_old, doc_new = old.status(), new.status()
            old_errors = " ".join(errors_of(doc_old, "eu-1"))
    assert synced_at(second)(doc_new), doc_new
    assert f"superseded by revision {second}" in old_errors, doc_old
    for c in CLUSTERS:
        live = live_objects(sim, c, namespace="apps")
        assert live["web"]["data"] == {"colour": "green"}, c
        assert "new-only" in live and "old-only" not in live, c
        total = writes(sim.journal_sync(c, since=before[c]))
        # the newer replica: revision record, inventory union, web, new-only, old-only deleted, exact
        # inventory (6); at most one round of the older one racing its first read (never a fight)
        assert len(total) <= 12, (c, [(r["method"], r["path"]) for r in total])
        assert writes(sim.journal_sync(c, since=settled[c])) == [], c


def test_a_rolling_update_that_adds_a_management_cluster_lets_the_newer_replica_win_without_a_fight(
    tmp_path: Path,
) -> None:
    """The old process has no management cluster, the new one has (going from one replica to several):
    the new one still records its revision on each cluster, so the old one, at the previous commit, backs
    off there instead of writing it back and pruning what the new one added (docs/reconcile.md, "Replicas
    with a management cluster write it too")."""
    with testing.serving(names=[*CLUSTERS, "mgmt"]) as sim:
        repo = GitOpsRepo(tmp_path / "gitops")
        for c in CLUSTERS:
            repo.cluster(c)
        repo.bundle(
            "web", [configmap("web", colour="blue"), configmap("old-only")], namespace="apps", selector={}
        )
        first = repo.commit("blue")
        with start(tmp_path, repo, sim, "old", "--interval", "1h", "--resync", "2s") as old:
            old.wait_for(synced_at(first), what="old replica Synced at the first revision")
            repo.bundle(
                "web",
                [configmap("web", colour="green"), configmap("new-only")],
                namespace="apps",
                selector={},
            )
            second = repo.commit("green")
            before = mark(sim)
            management = ("--management-kubeconfig", str(sim.kubeconfig), "--management-context", "mgmt")
            timings = ("--lease-duration", "8s", "--lease-renew-deadline", "5s", "--lease-retry-period", "1s")
            args = ("--interval", "1s", "--resync", "2s", *management, "--shards", "4", *timings)
            with start(tmp_path, repo, sim, "new", *args) as new:
                new.wait_for(synced_at(second), timeout=60, what="new replica Synced at the second revision")
                settled = mark(sim)
                time.sleep(8)  # several resync rounds of both, and their watches
                doc_old, doc_new = old.status(), new.status()
                old_errors = " ".join(errors_of(doc_old, "eu-1"))
        assert synced_at(second)(doc_new), doc_new
        assert f"superseded by revision {second}" in old_errors, doc_old
        for c in CLUSTERS:
            live = live_objects(sim, c, namespace="apps")
            assert live["web"]["data"] == {"colour": "green"}, c
            assert "new-only" in live and "old-only" not in live, c
            total = writes(sim.journal_sync(c, since=before[c]))
            assert len(total) <= 12, (c, [(r["method"], r["path"]) for r in total])
            assert writes(sim.journal_sync(c, since=settled[c])) == [], c


def test_a_force_push_back_to_an_older_commit_is_rolled_back_by_the_single_controller(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    for c in CLUSTERS:
        repo.cluster(c)
    repo.bundle("web", [configmap("web", colour="blue")], namespace="apps", selector={})
    first = repo.commit("blue")
    repo.bundle("web", [configmap("web", colour="green")], namespace="apps", selector={})
    second = repo.commit("green")
    with start(tmp_path, repo, sim, "only", "--interval", "1s") as fleet:
        fleet.wait_for(synced_at(second), what="Synced at the second revision")
        # a person force-pushes the branch back: the older commit is the newest position of the branch
        repo.repo.references["refs/heads/main"].set_target(first)
        fleet.wait_for(synced_at(first), what="rolled back to the first revision")
    for c in CLUSTERS:
        assert live_objects(sim, c, namespace="apps")["web"]["data"] == {"colour": "blue"}, c


def test_two_replicas_at_the_same_revision_write_each_change_once_and_never_back_off_for_each_other(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    for c in CLUSTERS:
        repo.cluster(c)
    repo.bundle("web", [configmap("web", colour="blue")], namespace="apps", selector={})
    first = repo.commit("blue")
    args = ("--interval", "1s", "--resync", "2s")
    with start(tmp_path, repo, sim, "one", *args) as one, start(tmp_path, repo, sim, "two", *args) as two:
        one.wait_for(synced_at(first), what="replica one Synced")
        two.wait_for(synced_at(first), what="replica two Synced")
        before = mark(sim)
        repo.bundle("web", [configmap("web", colour="green")], namespace="apps", selector={})
        second = repo.commit("green")
        one.wait_for(synced_at(second), what="replica one Synced at the second revision")
        two.wait_for(synced_at(second), what="replica two Synced at the second revision")
        settled = mark(sim)
        time.sleep(5)  # resyncs and watches of both
        docs = (one.status(), two.status())
    for doc in docs:
        assert synced_at(second)(doc), doc
    for c in CLUSTERS:
        changed = [(r["method"], r["path"]) for r in writes(sim.journal_sync(c, since=before[c]))]
        # the changed object, carrying a replica's claim of the second commit; no revision record without a
        # delete. Once, or twice when both replicas read the cluster before either wrote: the second apply
        # changes only the claim (each replica saw the commit at its own instant), as many writes as the
        # record and the object were before; the same revision never backs off, and is no drift
        assert changed in ([("PATCH", "/api/v1/namespaces/apps/configmaps/web")] * n for n in (1, 2)), (
            c,
            changed,
        )
        claim = inventory.claim_of(
            live_objects(sim, c, namespace="apps")["web"], source=source.identity(repo.root)
        )
        assert claim is not None and claim.revision == second, (c, claim)
        assert writes(sim.journal_sync(c, since=settled[c])) == [], c


def record_newer_claim(sim: testing.SimHandle, claim: inventory.Claim) -> None:
    """What a newer replica leaves on every cluster: its revision record."""

    async def main() -> None:
        kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
        for c in CLUSTERS:
            client = kube.Client(cluster=c, context=kc.context(c), settings=kube.Settings(retry_budget=3.0))
            try:
                _, rv = await apply.read_record(client, instance="fleet", source=claim.source)
                await apply.write_record(client, claim, instance="fleet", resource_version=rv)
            finally:
                await client.aclose()

    anyio.run(main)


def test_a_controller_restarted_without_its_repository_or_state_never_overrides_a_newer_replica(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    for c in CLUSTERS:
        repo.cluster(c)
    repo.bundle("web", [configmap("web", colour="blue")], namespace="apps", selector={})
    first = repo.commit("blue")
    with start(tmp_path, repo, sim, "first", "--interval", "1s") as fleet:
        fleet.wait_for(synced_at(first), what="Synced at the first revision")
        fleet.kill()
    # Meanwhile a newer replica applied a newer revision; then this one restarts with the repository
    # unreachable and its state database lost: only the mirror's last good revision is left, first seen
    # at an unknown time.
    newer = inventory.Claim(
        source=source.identity(repo.root),
        revision="f" * 40,
        observed_at=inventory.now_rfc3339(),
        writer="fleet serve on newer-replica",
    )
    record_newer_claim(sim, newer)
    drifted = send(
        sim, "eu-1", "PATCH", "/api/v1/namespaces/apps/configmaps/web", {"data": {"colour": "new"}}
    )
    assert drifted.status_code == 200
    repo.root.rename(repo.root.with_name("gitops-away"))
    (tmp_path / "state-first" / "state.db").unlink()
    before = mark(sim)
    with start(tmp_path, repo, sim, "second", "--interval", "1s", "--resync", "2s", state="first") as fleet:

        def superseded(doc: dict[str, Any]) -> bool:
            if "eu-1" not in doc.get("clusters", {}):
                return False
            return f"superseded by revision {newer.revision}" in " ".join(errors_of(doc, "eu-1"))

        doc = fleet.wait_for(superseded, timeout=60, what="the restarted controller backs off")
        time.sleep(4)  # resyncs and the watch
    assert doc["revision"] == first
    for c in CLUSTERS:
        assert writes(sim.journal_sync(c, since=before[c])) == [], c
    assert live_objects(sim, "eu-1", namespace="apps")["web"]["data"] == {"colour": "new"}
