"""Whether a controller's rollout is still to send a cluster its revision (`Conductor.on_its_way`): a
cluster held back at an older revision only until then is left as it is where another writer of the
source is already at that revision (docs/reconcile.md, "Replicas of one source: the newer revision wins");
one no rollout of this controller will reach any more is not, and a person's action that makes it so
wakes the cluster. In process, over a real SQLite state store."""

from __future__ import annotations

from pathlib import Path

import anyio

from fleet.controller import rollouts
from fleet.controller.metrics import Metrics
from fleet.core import model
from fleet.core import rollout as ro
from tests.controller.test_rollout_storing import NEW, OLD, begin, conductor


def test_a_cluster_not_reached_is_on_its_way_until_it_is_skipped_or_the_rollout_aborted_even_after_a_restart(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        c, store, _, woken = conductor(tmp_path)
        await begin(c, ["c1", "c2", "c3"], concurrency=model.Count(1))
        assert c.hold("web", "c1", revision=NEW) == rollouts.NEWEST  # sent
        assert not c.on_its_way("web", "c1", revision=NEW)
        assert c.hold("web", "c2", revision=NEW) == rollouts.Hold("revision", OLD)
        assert c.on_its_way("web", "c2", revision=NEW) and c.on_its_way("web", "c3", revision=NEW)
        woken.clear()
        await c.act("web", ro.Action.SKIP, actor="ana", cluster="c2")
        assert not c.on_its_way("web", "c2", revision=NEW) and "c2" in woken
        woken.clear()
        await c.act("web", ro.Action.ABORT, actor="ana")
        assert not c.on_its_way("web", "c3", revision=NEW) and "c3" in woken
        await c.flush()
        # After a restart, before the revision is taken in again: the stored rollout still ended.
        again = rollouts.Conductor(store=store, metrics=Metrics(), wake=lambda n, _ctx: None, save=c._save)
        again.restore()
        assert again.hold("web", "c3", revision=NEW) == rollouts.Hold("revision", OLD)
        assert not again.on_its_way("web", "c3", revision=NEW)
        store.close()

    anyio.run(main)
