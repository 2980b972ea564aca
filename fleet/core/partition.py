"""Splitting a fleet's clusters over worker processes, balanced by their work (`fleet sync --workers`).

Owns: how much work a cluster's round is (`cluster_work`: its desired objects, each one request, plus the
reads every round makes) and the deterministic split of clusters into N groups (fewer when there are fewer clusters) of near-equal
work (`split`: longest work first onto the least loaded group; ties by name and group index, so the same
revision gives the same groups on every run and every machine).
Does not: start processes or reconcile anything (`fleet.cli.syncworkers`), or place or render
(`fleet.core.pipeline`).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from fleet.core import plan

# What a round costs before its first object: discovery, inventories, namespaces, the revision record and
# a list per kind (docs/reconcile.md, "One round on one cluster"): about this many requests.
BASE_WORK = 5


def cluster_work(targets: Mapping[str, plan.Target], *, paused: bool = False) -> int:
    """The work of one cluster's round, in requests: the reads, plus one per desired object of every bundle
    it applies (a paused cluster is not read or written: 0)."""
    if paused:
        return 0
    objects = sum(
        len(t.desired.objects) for t in targets.values() if t.desired is not None and not t.suspended
    )
    return BASE_WORK + objects


def split(work: Mapping[str, int], groups: int) -> tuple[tuple[str, ...], ...]:
    """`work` (cluster -> its work) in at most `groups` non-empty groups of near-equal total work.

    Every cluster is in exactly one group, there are `min(groups, len(work))` groups, each group's names are
    sorted, the heaviest cluster is in the first. Deterministic: it depends only on `work`. Greedy longest
    processing time first: each cluster, heaviest first (ties: by name), joins the group with the least
    work so far (ties: the fewest clusters, then the lowest index), so no group carries more than the
    lightest plus one cluster's work.
    """
    if groups < 1:
        raise ValueError(f"groups must be at least 1, not {groups}")
    if any(w < 0 for w in work.values()):
        raise ValueError("work must not be negative")
    count = min(groups, len(work))
    if count == 0:
        return ()
    members: list[list[str]] = [[] for _ in range(count)]
    loads = [(0, 0, i) for i in range(count)]  # (work so far, clusters so far, group index): a heap
    for name in sorted(work, key=lambda n: (-work[n], n)):
        load, size, i = heapq.heappop(loads)
        members[i].append(name)
        heapq.heappush(loads, (load + work[name], size + 1, i))
    return tuple(tuple(sorted(m)) for m in members)
