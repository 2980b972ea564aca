"""A follower's Conductor (fleet.controller.rollouts) when replicas share rollouts (docs/scaling.md, "State of
record"): it decides nothing, takes the coordinator's rollouts in, and never applies a revision the
coordinator has not taken in. In-process, two Conductors over their own SQLite stores, the coordinator's
stored rows handed to the follower as the management cluster would."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from fleet.clients import statedb
from fleet.controller import rollouts
from fleet.controller.metrics import Metrics
from fleet.core import model, summaries
from fleet.core import rollout as ro
from tests.support import placement_builders as pb

OLD, NEW = "a" * 40, "b" * 40


def conductor(tmp: Path, name: str, *, deciding: bool) -> tuple[rollouts.Conductor, list[str]]:
    store = statedb.StateStore(tmp / name / "state.db")
    woken: list[str] = []

    async def save(write: Any) -> None:
        await anyio.to_thread.run_sync(write)

    c = rollouts.Conductor(store=store, metrics=Metrics(), wake=lambda n, _ctx: woken.append(n), save=save)
    c.deciding = lambda: deciding
    return c, woken


async def begin(c: rollouts.Conductor, revision: str, hashes: dict[str, str]) -> None:
    spec = model.RolloutSpec(
        waves=(model.WaveSpec(name="all", max_concurrency=model.Count(100, percent=True)),)
    )
    web = model.Bundle(**{**pb.bundle("web").__dict__, "rollout": spec})
    await c.begin(
        revision=revision,
        author=None,
        repo=pb.repo([pb.cluster(n) for n in hashes], [web], revision=revision),
        placed={"web": hashes},
        waves={"web": ro.Membership(waves=(("all", tuple(sorted(hashes))),), errors={})},
        held=lambda cluster, bundle: (OLD, "h0"),
        paused=(),
        context=None,
    )


def stored(c: rollouts.Conductor) -> dict[str, statedb.RolloutRow]:
    return {r.bundle: r for r in c.rows()}


def test_a_follower_leaves_a_new_revision_alone_until_the_coordinator_has_taken_it_in(tmp_path: Path) -> None:
    async def main() -> None:
        lead, _ = conductor(tmp_path, "lead", deciding=True)
        follower, woken = conductor(tmp_path, "follower", deciding=False)
        await begin(follower, NEW, {"c1": "h1", "c2": "h2"})
        assert follower.latest == {} and follower.rows() == ()  # it starts nothing, stores nothing
        assert follower.hold("web", "c2") == rollouts.LEAVE
        # The coordinator still enforces the older revision: its rollout does not let the follower apply.
        await begin(lead, OLD, {"c1": "h0", "c2": "h0"})
        follower.adopt(stored(lead))
        assert follower.hold("web", "c2") == rollouts.LEAVE
        # The coordinator takes the new revision in: its rollout sends c2 the new revision, so does the follower.
        await begin(lead, NEW, {"c1": "h1", "c2": "h2"})
        assert lead.hold("web", "c2") == rollouts.NEWEST
        follower.adopt(stored(lead))
        assert follower.latest["web"].revision == NEW
        assert follower.hold("web", "c2") == rollouts.NEWEST
        assert "c2" in woken
        # What the follower's round sees is reported, not decided.
        await follower.observed(
            "c2", {"web": rollouts.Observed(state=model.State.SYNCED)}, holds={"web": rollouts.NEWEST}
        )
        assert follower.latest["web"].members["c2"].phase is ro.ClusterPhase.PROGRESSING
        assert (
            follower.reports["c2"]["web"].state == "Synced" and follower.reports["c2"]["web"].revision == NEW
        )

    anyio.run(main)


def test_a_follower_applies_a_revision_at_once_only_on_the_clusters_it_renders_what_the_coordinators_rollout_sends(
    tmp_path: Path,
) -> None:
    # docs/scaling.md, "A commit that leaves a bundle as it is": the coordinator no longer rewrites a rollout
    # record only to say a revision changed nothing there; the follower sees it from the record's hashes.
    async def main() -> None:
        lead, _ = conductor(tmp_path, "lead", deciding=True)
        follower, woken = conductor(tmp_path, "follower", deciding=False)
        await begin(lead, OLD, {"c1": "h1", "c2": "h2"})
        follower.adopt(stored(lead))
        third = "c" * 40  # renders web as before on c1, not on c2
        await begin(follower, third, {"c1": "h1", "c2": "h9"})
        assert follower.hold("web", "c1") == rollouts.NEWEST  # the very objects the rollout sends c1
        assert follower.hold("web", "c2") == rollouts.LEAVE  # not on the follower's word
        await begin(lead, third, {"c1": "h1", "c2": "h9"})
        assert lead.latest["web"].revision == third  # a new rollout: c2 changed
        woken.clear()
        follower.adopt(stored(lead))
        assert follower.hold("web", "c2") == rollouts.NEWEST
        assert woken == ["c2"]

    anyio.run(main)


def test_a_retried_failure_a_follower_reports_keeps_the_cluster_in_flight_at_the_coordinator(
    tmp_path: Path,
) -> None:
    busy = "Deployment/web/web: the server is currently unable to handle the request"

    async def main() -> None:
        lead, _ = conductor(tmp_path, "lead", deciding=True)
        follower, _ = conductor(tmp_path, "follower", deciding=False)
        await begin(lead, NEW, {"c1": "h1", "c2": "h2"})
        follower.adopt(stored(lead))
        failed = rollouts.Observed(state=model.State.FAILED, message=busy, retriable=True)
        await follower.observed("c2", {"web": failed}, holds={"web": rollouts.NEWEST})
        # Carried to the coordinator by the shard's status summary (encoded and decoded as stored).
        summary = summaries.Summary(
            shard=0, shards=1, writer="f", epoch=1, updated_at=1.0, observed=follower.reports
        )
        seen = summaries.decode_summary(
            stored_summary(summaries.encode_summary(summary, instance="fleet"))
        ).observed
        o = seen["c2"]["web"]
        assert o.retriable and o.message == busy
        carried = rollouts.Observed(
            state=model.State(o.state), degraded=o.degraded, message=o.message, retriable=o.retriable
        )
        await lead.observed("c2", {"web": carried}, holds={"web": rollouts.NEWEST})
        m = lead.latest["web"].members["c2"]
        assert (m.phase, m.message) == (ro.ClusterPhase.PROGRESSING, busy)
        assert lead.latest["web"].phase is ro.Phase.PROGRESSING
        # The same failure without the flag is a refusal: the cluster fails and the rollout halts.
        await lead.observed(
            "c2",
            {"web": rollouts.Observed(state=model.State.FAILED, message="422 Invalid")},
            holds={"web": rollouts.NEWEST},
        )
        assert lead.latest["web"].members["c2"].reason is ro.FailReason.APPLY
        assert lead.latest["web"].phase is ro.Phase.HALTED

    anyio.run(main)


def stored_summary(obj: dict[str, Any]) -> dict[str, Any]:
    """A ConfigMap as the management cluster answers it (a resourceVersion)."""
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1"}}


def test_a_follower_that_took_in_no_rollout_yet_wakes_its_clusters_when_it_adopts_the_coordinators(
    tmp_path: Path,
) -> None:
    # The start of two replicas (docs/benchmarks.md, "Two replicas' start"): the follower's first round of
    # a cluster left the bundle as it is (the coordinator had not taken the revision in); adopting the
    # coordinator's rollout changes that cluster's hold, so it must get a round then, not at the resync.
    async def main() -> None:
        lead, _ = conductor(tmp_path, "lead", deciding=True)
        follower, woken = conductor(tmp_path, "follower", deciding=False)
        await begin(follower, NEW, {"c1": "h1", "c2": "h2"})
        assert follower.hold("web", "c2") == rollouts.LEAVE  # what its first round of c2 was given
        await begin(lead, NEW, {"c1": "h1", "c2": "h2"})
        follower.adopt(stored(lead))
        assert follower.hold("web", "c2") == rollouts.NEWEST
        assert sorted(woken) == ["c1", "c2"]

    anyio.run(main)


def test_a_follower_takes_the_checked_revision_of_a_record_written_by_an_older_coordinator_and_wakes_its_clusters(
    tmp_path: Path,
) -> None:
    # An older coordinator rewrote the record of a bundle a revision left as it was, to say so (`checked`):
    # such records are still read, and the follower still obeys them.
    async def main() -> None:
        lead, _ = conductor(tmp_path, "lead", deciding=True)
        follower, woken = conductor(tmp_path, "follower", deciding=False)
        await begin(lead, OLD, {"c1": "h1"})
        follower.adopt(stored(lead))
        third = "c" * 40
        await begin(
            follower, third, {"c1": "h9"}
        )  # the follower renders web otherwise than the record's hash
        assert follower.hold("web", "c1") == rollouts.LEAVE
        woken.clear()
        row = stored(lead)["web"]
        follower.adopt({"web": replace(row, doc={**row.doc, "checked": third})})
        assert follower.hold("web", "c1") == rollouts.NEWEST
        assert woken == ["c1"]

    anyio.run(main)
