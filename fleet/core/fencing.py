"""Fencing: a stale owner of a shard never writes over, or prunes, what a newer owner applied (pure).

Owns: the `Fence` a replica writes on a cluster's inventories (the name of the shard lease it holds and
its epoch there, ``fleet-shard-7@12``), its text form (`Fence.parse`, `str`), and the rule (`judge`) that
decides, from the fence an inventory carries, whether a writer may write and prune that bundle there.

Does not: read or write clusters, or hold leases. The other half of the compare-and-swap is the API
server's: an inventory is rewritten only over the resourceVersion its writer read (docs/reconcile.md),
so between reading a fence and writing its own, nobody else wrote, or the write is a 409 and nothing is
pruned.

The rule (docs/scaling.md, "Fencing"):

* no fence on the inventory (a single controller, an earlier fleet, ``fleet sync``): write, with one's own;
* a fence of the same lease at a **higher** epoch: a newer owner wrote it; this writer is stale and
  writes and prunes nothing of that bundle there (`Verdict.STALE`). If this replica still holds that lease
  (its next renewal succeeds), the lease was deleted and created again (its count of transitions restarted):
  it lifts its epoch above the fence (`fleet.core.leases.raising`) and the next round writes;
* a fence of the same lease at the same or a lower epoch: write, with one's own;
* a fence of another lease: written under another shard count or instance layout; the shard count is
  changed only with every replica stopped (docs/scaling.md), so it is not a live owner: write;
* a writer without a lease (``fleet sync``, a single ``fleet serve``): writes, and keeps the fence it found,
  so replicas keep fencing each other after a person's sync.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_TEXT = re.compile(r"^(?P<lease>[a-z0-9]([-a-z0-9]*[a-z0-9])?)@(?P<epoch>[1-9][0-9]{0,17})$")


@dataclass(frozen=True)
class Fence:
    """Who may write: the holder of `lease` at `epoch` (its transitions when it acquired it)."""

    lease: str
    epoch: int

    def __str__(self) -> str:
        return f"{self.lease}@{self.epoch}"

    @classmethod
    def parse(cls, text: str) -> Fence:
        """The fence written as ``<lease>@<epoch>``; `ValueError` saying what is wrong otherwise."""
        found = _TEXT.match(text) if isinstance(text, str) else None
        if found is None:
            raise ValueError(f"fence {text!r} is not <lease name>@<epoch> (e.g. fleet-shard-7@12)")
        return cls(lease=found["lease"], epoch=int(found["epoch"]))


class Verdict(enum.StrEnum):
    WRITE = "write"
    STALE = "stale"


@dataclass(frozen=True)
class Judgement:
    """`verdict`; the fence to write with (`fence`, None: none); and for a stale writer, the `message` it
    reports and the epoch (`above`) a legitimate holder must lift its own over."""

    verdict: Verdict
    fence: Fence | None = None
    message: str | None = None
    above: int = 0


def judge(found: Fence | None, mine: Fence | None, *, where: str) -> Judgement:
    """Whether a writer holding `mine` (None: no lease) may write an inventory carrying `found`."""
    if mine is None:
        return Judgement(Verdict.WRITE, fence=found)
    if found is None or found.lease != mine.lease or found.epoch <= mine.epoch:
        return Judgement(Verdict.WRITE, fence=mine)
    return Judgement(
        Verdict.STALE,
        fence=found,
        above=found.epoch,
        message=(
            f"{where}: fenced: written by a newer owner of shard lease {found.lease} (epoch {found.epoch}); "
            f"this replica holds epoch {mine.epoch} and writes and prunes nothing here"
        ),
    )
