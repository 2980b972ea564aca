"""`fleet status`'s table (pure): what the status document says about the state database, and which replica
answered when several share the fleet."""

from __future__ import annotations

import datetime as dt

from fleet.cli import statusview

NOW = dt.datetime(2026, 11, 26, 10, 0, 0, tzinfo=dt.UTC)


def doc(state_store: dict[str, object]) -> dict[str, object]:
    return {"revision": "a" * 40, "errors": [], "stateStore": state_store, "clusters": {}}


def test_a_state_database_that_cannot_be_saved_is_a_line_of_the_table() -> None:
    text = statusview.table(
        doc(
            {
                "saving": False,
                "lastError": "/var/lib/fleet/state.db: database or disk is full",
                "failingSince": "2026-11-26T09:58:00Z",
                "setAside": None,
            }
        ),
        now=NOW,
    )
    assert (
        "state     NOT SAVED since 2026-11-26T09:58:00Z: /var/lib/fleet/state.db: database or disk is full"
        in text
    )


def test_a_set_aside_database_is_a_line_of_the_table_and_a_healthy_one_is_not() -> None:
    aside = {"path": "/var/lib/fleet/state.db.corrupt-x", "at": "2026-11-26T09:00:00Z", "reason": "malformed"}
    text = statusview.table(
        doc({"saving": True, "lastError": None, "failingSince": None, "setAside": aside}), now=NOW
    )
    assert (
        "state     was damaged (malformed): set aside as /var/lib/fleet/state.db.corrupt-x, rebuilt" in text
    )
    healthy = statusview.table(
        doc({"saving": True, "lastError": None, "failingSince": None, "setAside": None}), now=NOW
    )
    assert "state " not in healthy


def test_a_replica_says_which_one_answered_and_names_the_shards_whose_clusters_are_unknown() -> None:
    d = {
        **doc({"saving": True}),
        "replica": {
            "id": "vm-a1b2c",
            "shardCount": 4,
            "shards": [0, 1],
            "coordinating": True,
            "clusters": [],
        },
        "shards": {
            "count": 4,
            "missing": [3],
            "writers": {"0": "vm-a1b2c", "1": "vm-a1b2c", "2": "vm-z9y8x"},
        },
    }
    assert (
        "replica   vm-a1b2c (coordinating) writes 2 of 4 shards; the other clusters as their owners last "
        "reported them: vm-z9y8x (1); no status summary for shards 3 (their clusters' status unknown)"
    ) in statusview.table(d, now=NOW)
    assert "replica " not in statusview.table(doc({"saving": True}), now=NOW)
