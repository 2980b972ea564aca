"""The status page served by one of several replicas (docs/scaling.md) in a real headless Chromium: it says
which replica answers, that the other clusters are as their owners last reported them, and names the
shards whose clusters' status is unknown (their clusters still listed, with why)."""

from __future__ import annotations

from typing import Any

from tests.browser import harness, statusdocs
from tests.browser.statusserver import StatusServer

REPLICA_JS = "document.getElementById('replica')"


def replica_doc(*, missing: list[int]) -> dict[str, Any]:
    d = statusdocs
    unknown = "status unknown: shard 3 has no status summary in the management cluster yet (its owner has not written one)"
    doc = d.document(
        {
            "eu-1": d.cluster("Synced", {"web": d.bundle("Synced")}),
            "eu-2": d.cluster("Synced", {"web": d.bundle("Synced")}),
            "us-1": d.cluster("Pending", {"web": d.bundle("Pending")}, error=unknown),
        }
    )
    doc["replica"] = {"id": "vm-a1b2c", "shardCount": 4, "shards": [0, 1], "coordinating": True,
                      "clusters": ["eu-1"]}  # fmt: skip
    doc["shards"] = {
        "count": 4,
        "missing": missing,
        "writers": {"0": "vm-a1b2c", "1": "vm-a1b2c", "2": "vm-z9y8x"},
    }
    return doc


def test_a_replicas_page_says_which_replica_answers_and_names_the_shards_whose_clusters_are_unknown(
    browser: harness.Page, status_server: StatusServer
) -> None:
    status_server.set_status(replica_doc(missing=[3]))
    browser.goto(status_server.url)
    browser.wait_for("document.documentElement.dataset.renders >= 1")
    assert browser.evaluate(f"{REPLICA_JS}.hidden") is False
    assert browser.evaluate(f"{REPLICA_JS}.textContent") == (
        "Replica vm-a1b2c (coordinating) writes 2 of 4 shards; the other clusters are shown as their owners "
        "last reported them: vm-z9y8x (1). No status summary for shard 3: their clusters' status is unknown."
    )
    # The cluster of that shard is listed, with why its status is unknown.
    assert browser.evaluate("document.querySelector('#matrix-body tr[data-c=\"us-1\"]') !== null") is True

    status_server.set_status(replica_doc(missing=[]))
    browser.wait_for(f"!{REPLICA_JS}.textContent.includes('No status summary')")
    # A single replica's document has no replica part: nothing is said.
    single = replica_doc(missing=[])
    del single["replica"], single["shards"]
    status_server.set_status(single)
    browser.wait_for(f"{REPLICA_JS}.hidden")
