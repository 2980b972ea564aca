"""A rollout's clusters (`Member`, `ClusterPhase`, `FailReason`) and `Members`, their mapping by cluster
name with the index the state machine decides from.

Owns: `Members`, an immutable mapping (a `dict` whose mutators refuse) that keeps beside the members,
as they change, what `fleet.core.rollout.machine.advance` asks of a wave after each observation: how
many clusters of each wave are in each phase, each wave's clusters in name order, from which name on a
wave may still hold `Pending` clusters, and a lower bound of the progress deadlines of the clusters in
flight. So a round's observation and the decisions after it cost the same for 10 clusters or 10,000
(docs/benchmarks.md, "fleet serve at scale"): `put` copies the mapping once (one C-level copy) and
updates the index for the members it changes only, nothing iterates over the members in Python.

Two parts of the index are hints, tightened in place: the name from which a wave may hold `Pending`
clusters, and the deadline bound. Each stays true of the members it describes whatever is done to them
(a member that leaves `Pending` or flight only makes it looser), so tightening it after a look at those
same members changes no answer of any holder; `put` carries both over to the new mapping, lowered by
what it adds.

Does not: decide anything (`fleet.core.rollout.machine`), store or render members
(`fleet.core.rollout.records`).
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


class ClusterPhase(enum.StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    HEALTHY = "Healthy"
    DONE = "Done"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    REMOVED = "Removed"


class FailReason(enum.StrEnum):
    APPLY = "apply"
    DEGRADED = "degraded"
    DEADLINE = "deadline"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Member:
    """One cluster in a rollout. Times are seconds since the epoch; None: not yet."""

    cluster: str
    wave: int
    phase: ClusterPhase = ClusterPhase.PENDING
    from_revision: str | None = None  # what it held of this bundle before (None: nothing)
    started_at: float | None = None  # put in flight (set before the apply is sent)
    applied_at: float | None = None  # the apply of this revision succeeded
    healthy_since: float | None = None
    deadline_at: float | None = None
    unreachable_since: float | None = None
    retrying_since: float | None = None  # its rounds fail in a way a retry can fix (`message`: the last)
    reason: FailReason | None = None
    message: str = ""

    @property
    def moved(self) -> bool:
        """True once this rollout sent (or is sending) its revision to the cluster."""
        return self.started_at is not None


def _deadline(m: Member) -> float | None:
    return m.deadline_at if m.phase is ClusterPhase.PROGRESSING else None


class Members(dict[str, Member]):
    """The members of one rollout by cluster name, indexed (see the module). Build it from a mapping or
    pairs; change it only with `put`, which returns a new one."""

    __slots__ = ("_counts", "_floor", "_memo", "_order", "_pending_from")

    _counts: dict[tuple[int, ClusterPhase], int]  # (wave, phase) -> how many members
    _order: dict[int, tuple[str, ...]]  # wave -> its members' names, sorted (Removed ones included)
    _pending_from: dict[int, str]  # wave -> no member of it named before this one is Pending (hint)
    _floor: float | None  # no cluster in flight has an earlier progress deadline (hint; None: none)
    _memo: dict[Any, Any]  # what was computed from these members (they never change)

    def __init__(self, members: Mapping[str, Member] | Iterable[tuple[str, Member]] = ()) -> None:
        dict.__init__(self, members)
        counts: dict[tuple[int, ClusterPhase], int] = {}
        order: dict[int, list[str]] = {}
        floor: float | None = None
        for name, m in dict.items(self):
            if name != m.cluster:
                raise ValueError(f"member {m.cluster} filed under {name}")
            key = (m.wave, m.phase)
            counts[key] = counts.get(key, 0) + 1
            order.setdefault(m.wave, []).append(name)
            d = _deadline(m)
            if d is not None and (floor is None or d < floor):
                floor = d
        self._counts = counts
        self._order = {w: tuple(sorted(names)) for w, names in order.items()}
        self._pending_from = {}
        self._floor = floor
        self._memo = {}

    def put(self, *changed: Member) -> Members:
        """A copy with `changed` members added or replaced (each under its own cluster name)."""
        new: Members = dict.__new__(Members)
        dict.update(new, self)
        counts = dict(self._counts)
        order = self._order
        pending_from = dict(self._pending_from)
        floor = self._floor
        for m in changed:
            old = dict.get(new, m.cluster)
            dict.__setitem__(new, m.cluster, m)
            if old is not None:
                counts[(old.wave, old.phase)] -= 1
            key = (m.wave, m.phase)
            counts[key] = counts.get(key, 0) + 1
            if old is None or old.wave != m.wave:
                if order is self._order:
                    order = dict(order)
                if old is not None:
                    names = list(order[old.wave])
                    names.remove(m.cluster)
                    order[old.wave] = tuple(names)
                names = list(order.get(m.wave, ()))
                bisect.insort(names, m.cluster)
                order[m.wave] = tuple(names)
            if m.phase is ClusterPhase.PENDING and m.cluster < pending_from.get(m.wave, ""):
                pending_from[m.wave] = m.cluster
            d = _deadline(m)
            if d is not None and (floor is None or d < floor):
                floor = d
        new._counts = counts
        new._order = order
        new._pending_from = pending_from
        new._floor = floor
        new._memo = {}
        return new

    # -- what the state machine asks ------------------------------------------------------------------

    def count(self, wave: int, phase: ClusterPhase) -> int:
        """How many members of `wave` are in `phase`."""
        return self._counts.get((wave, phase), 0)

    def size(self, wave: int) -> int:
        """How many members `wave` has, Removed ones included."""
        return len(self._order.get(wave, ()))

    def phases(self) -> dict[ClusterPhase, int]:
        """How many members are in each phase, over every wave."""
        out = dict.fromkeys(ClusterPhase, 0)
        for (_, phase), n in self._counts.items():
            out[phase] += n
        return out

    def in_wave(self, wave: int) -> list[Member]:
        """The members of `wave` in name order."""
        return [dict.__getitem__(self, name) for name in self._order.get(wave, ())]

    def pending(self, wave: int, limit: int) -> list[Member]:
        """The first `limit` Pending members of `wave` in name order."""
        if limit <= 0 or not self.count(wave, ClusterPhase.PENDING):
            return []
        names = self._order.get(wave, ())
        i = bisect.bisect_left(names, self._pending_from.get(wave, ""))
        out: list[Member] = []
        while i < len(names) and len(out) < limit:
            m = dict.__getitem__(self, names[i])
            if m.phase is ClusterPhase.PENDING:
                if not out:
                    self._pending_from[wave] = m.cluster  # none before it is Pending: skip them next time
                out.append(m)
            i += 1
        return out

    @property
    def deadline_floor(self) -> float | None:
        """No cluster in flight has a progress deadline earlier than this (None: none has one). Exact
        after `tighten`; otherwise it may be the deadline of a cluster that has left flight since."""
        return self._floor

    def tighten(self) -> float | None:
        """Look at every member once: the earliest progress deadline of the clusters in flight, kept as
        the bound from now on (the members are the same: no answer changes)."""
        floor: float | None = None
        for m in dict.values(self):
            d = _deadline(m)
            if d is not None and (floor is None or d < floor):
                floor = d
        self._floor = floor
        return floor

    def memo(self, key: Any, compute: Callable[[Members], T]) -> T:
        """`compute(self)`, computed once for these members (they never change)."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = compute(self)
            return value

    # -- immutability ---------------------------------------------------------------------------------

    def _refuse(self, *_: Any, **__: Any) -> NoReturn:
        raise TypeError("a rollout's members do not change: Members.put returns a changed copy")

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (Members, (dict(self),))

    def copy(self) -> dict[str, Member]:
        return dict(self)
