"""Virtual shards: which shard a cluster is in, and which live replica owns each shard (pure).

Owns: `shard_of` (a cluster's shard, from its name) and `assign` (shards -> live replicas), with the
arithmetic both rest on (`cap`, `floor`, `preference`) and `moved` (how many shards two assignments
disagree on). docs/scaling.md explains them for users.

Does not: hold or read leases (`fleet.core.leases`), decide when a replica may take or must give up a
shard (`fleet.core.coordination`), or talk to anything.

**The shard of a cluster** is ``int.from_bytes(sha256(name as UTF-8)[:8], "big") % shards``. SHA-256
because it is specified (FIPS 180-4), the same in every language and library, uniform, and unlike
Python's `hash` not salted per process. It is a contract that never changes across versions of fleet:
replicas of two versions run side by side during a rolling update and must agree on who owns a cluster,
and the fence recorded on a cluster's inventories names its shard's lease. `tests/core/test_sharding.py`
pins known values so a change cannot slip in.

**The assignment** is consistent hashing with bounded loads, in its rendezvous (highest random weight)
form: replica ``r`` prefers shard ``s`` by the weight ``sha256("<s>/<r>")``; no replica owns more than
``cap = ceil(load_factor * shards / replicas)`` (the bound of Mirrokni, Thorup and Zadimoghaddam,
"Consistent Hashing with Bounded Loads", 2017), and none fewer than ``floor(shards / replicas)`` while
shards are left to give. Unlike the stateless form, it keeps a shard with the live replica that holds it
(up to the cap), so a change of replicas moves only what it must: a joining replica takes its floor from
the others, a leaving one's shards are shared out, nothing else moves. Measured over random replica
names, the stateless ring and rendezvous forms with a load factor of 1.25 moved up to 23 % more of 32
shards than needed on a join or leave; this form stays within one shard of the minimum (tests). The
result depends only on the live replicas and who holds what, both read from the same leases by every
replica, so replicas that read the same leases agree without talking to each other.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

DEFAULT_SHARDS = 32
MAX_SHARDS = 4096
DEFAULT_LOAD_FACTOR = 1.25


def check_shards(shards: int) -> int:
    """`shards` when it is a usable shard count; `ValueError` saying what is wrong otherwise."""
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ValueError(
            f"the number of shards must be a whole number from 1 to {MAX_SHARDS}, not {shards!r}"
        )
    return shards


def check_load_factor(load_factor: float) -> float:
    """`load_factor` when usable (from 1 to 4); `ValueError` otherwise."""
    if not isinstance(load_factor, int | float) or not 1.0 <= float(load_factor) <= 4.0:
        raise ValueError(f"the load factor must be a number from 1 to 4, not {load_factor!r}")
    return float(load_factor)


def _digest64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def shard_of(cluster: str, *, shards: int) -> int:
    """The shard (0 .. shards-1) of the cluster called `cluster`. Never changes across versions."""
    return _name_digest(cluster) % check_shards(shards)


@functools.lru_cache(maxsize=1 << 16)
def _name_digest(cluster: str) -> int:
    """A cluster name's digest, kept: shards are asked of every cluster several times a period (status
    summaries, the status document, ownership), a SHA-256 each."""
    return _digest64(cluster)


@functools.lru_cache(maxsize=1 << 16)
def preference(shard: int, replica: str) -> int:
    """How much `replica` wants `shard` (its rendezvous weight): higher wins."""
    return _digest64(f"{shard}/{replica}")


def cap(*, shards: int, replicas: int, load_factor: float = DEFAULT_LOAD_FACTOR) -> int:
    """The most shards one of `replicas` live replicas may own."""
    return math.ceil(load_factor * shards / replicas - 1e-9)


def floor(*, shards: int, replicas: int) -> int:
    """The fewest shards one of `replicas` live replicas owns once shards are shared out."""
    return shards // replicas


@dataclass(frozen=True)
class Assignment:
    """Which live replica owns each shard. `owner` has an entry for every shard when any replica is live,
    none when there is no live replica."""

    shards: int
    owner: Mapping[int, str]

    def of(self, replica: str) -> frozenset[int]:
        return frozenset(s for s, r in self.owner.items() if r == replica)

    def loads(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.owner.values():
            out[r] = out.get(r, 0) + 1
        return out


def assign(
    *,
    shards: int,
    live: Collection[str],
    held: Mapping[int, str],
    load_factor: float = DEFAULT_LOAD_FACTOR,
) -> Assignment:
    """Shards over the `live` replicas, keeping what each live replica already `held` where it can.

    1. Each live replica keeps the shards it holds, its most preferred first, up to `cap`; every other
       shard (free, held by a replica that is not live, or beyond a cap) goes into a pool.
    2. Pool shards, in shard order, go to the replica below `floor` that prefers each most.
    3. While a replica is below `floor`, it takes the least preferred shard of the replica that owns the
       most (ties: the replica name), which is only ever above `floor`.
    4. The pool's rest, in shard order, goes to the replica owning the fewest (ties: preference).

    Every replica ends with at least `floor` and at most `cap` shards. The same inputs give the same
    answer whatever their order.
    """
    check_shards(shards)
    check_load_factor(load_factor)
    names = sorted(set(live))
    if not names:
        return Assignment(shards=shards, owner={})
    most = cap(shards=shards, replicas=len(names), load_factor=load_factor)
    least = floor(shards=shards, replicas=len(names))
    weight = {r: [preference(s, r) for s in range(shards)] for r in names}
    owned: dict[str, list[int]] = {r: [] for r in names}
    pool: list[int] = []
    for s in range(shards):
        holder = held.get(s)
        if holder in owned:
            owned[holder].append(s)
        else:
            pool.append(s)
    for r in names:
        mine = sorted(owned[r], key=lambda s: (-weight[r][s], s))
        owned[r] = mine[:most]
        pool.extend(mine[most:])
    pool.sort()
    needy = {r for r in names if len(owned[r]) < least}
    rest: list[int] = []
    for s in pool:
        if not needy:
            rest.append(s)
            continue
        taker = max(needy, key=lambda r: (weight[r][s], r))
        owned[taker].append(s)
        if len(owned[taker]) >= least:
            needy.discard(taker)
    while needy:
        taker = min(needy, key=lambda r: (len(owned[r]), r))
        donor = max(names, key=lambda r: (len(owned[r]), r))
        # The donor owns more than `least`: shards add up to at least replicas * least.
        given = min(owned[donor], key=lambda s: (weight[donor][s], s))
        owned[donor].remove(given)
        owned[taker].append(given)
        if len(owned[taker]) >= least:
            needy.discard(taker)
    for s in rest:
        owned[min(names, key=lambda r: (len(owned[r]), -weight[r][s], r))].append(s)
    return Assignment(shards=shards, owner={s: r for r in names for s in owned[r]})


def moved(before: Mapping[int, str], after: Mapping[int, str]) -> int:
    """How many shards have another owner (or none) in `after` than in `before`."""
    return sum(1 for s in set(before) | set(after) if before.get(s) != after.get(s))
