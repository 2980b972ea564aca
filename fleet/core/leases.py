"""Leases: the records replicas coordinate through, and the rules of time around them (pure).

Owns: the lease `Timings` (15 s duration, 10 s renew deadline, 2 s retry by default) and their checks;
the names and labels of fleet's `coordination.k8s.io/v1` Leases in namespace ``fleet-system``
(``<instance>-shard-<n>``, ``<instance>-replica-<id>``, ``<instance>-coordinator``); the `Record` of one
Lease and its codec (`decode`, `encode`); what one replica knows of a lease (`Seen`, `observe`,
`free_at`) and of a lease it holds (`Held`, `writable_until`); and the records a replica writes to
acquire, renew and release a lease (`acquiring`, `renewing`, `releasing`).

Does not: decide which leases a replica takes, keeps or gives up (`fleet.core.coordination`), or send
anything (the lease client does, with optimistic concurrency: an update carries the resourceVersion it
read, and a 409 means another replica won).

The rules of time (docs/scaling.md):

* **Nobody trusts another replica's clock.** A lease is free for others `duration` after the moment
  *they* first saw its current version (`Seen.since`, on their own monotonic clock), never by comparing
  its `renewTime` with their clock. Clock offsets between replicas therefore do not matter; only the
  rate at which clocks run does, and the margin below covers rates far worse than NTP leaves.
* **The holder stops writing first.** It may write while ``now < sent + renew_deadline``, where `sent` is
  when (on its clock) it *sent* its last successful acquire or renew. Any other replica saw that version
  after the server stored it, so after `sent`, and waits `duration` from then: the holder stops at least
  ``duration - renew_deadline`` (5 s) before anyone else can take the lease. Writes the holder started
  must end within that margin (the runtime cancels them at the deadline).
* **Epochs.** `transitions` counts the acquisitions of a lease (1 for its first holder); it only grows
  and stays the same while one holder renews, so it is the holder's epoch, the fence it writes on
  inventories (`fleet.core.fencing`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fleet.core import errors, model

NAMESPACE = model.INVENTORY_NAMESPACE
API_VERSION = "coordination.k8s.io/v1"
KIND = "Lease"
LABEL_ROLE = "fleet.dev/lease"  # shard | replica | coordinator
ANNOTATION_SHARDS = "fleet.dev/shards"  # on replica leases: the --shards of that replica
ANNOTATION_LOAD_FACTOR = "fleet.dev/load-factor"  # on replica leases: its load factor


class Role:
    SHARD = "shard"
    REPLICA = "replica"
    COORDINATOR = "coordinator"


class LeaseError(errors.ClusterError):
    """A Lease exists but cannot be read: it is never taken as free."""

    retriable = False


# ----------------------------------------------------------------------------------------------------------
# Timings


@dataclass(frozen=True)
class Timings:
    """How long a lease lasts (`duration`), how long its holder may go without renewing before it stops
    writing (`renew_deadline`), and how often replicas look and renew (`retry`). Seconds."""

    duration: float = 15.0
    renew_deadline: float = 10.0
    retry: float = 2.0

    def __post_init__(self) -> None:
        check_timings(self)

    @property
    def stall(self) -> float:
        """How long the controller's event loop may show no heartbeat before its replica stops renewing
        and taking leases (a wedged loop loses its shards as a dead process does): the renew deadline."""
        return self.renew_deadline

    @property
    def margin(self) -> float:
        """How long before anyone else may take a lease its holder has stopped writing."""
        return self.duration - self.renew_deadline


def check_timings(t: Timings) -> None:
    """`ValueError` naming what is wrong unless 0 < retry * 1.2 < renew_deadline < duration, with at least
    a second between the deadline and the duration (the margin a holder's last writes have to end)."""
    for name in ("duration", "renew_deadline", "retry"):
        value = getattr(t, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
            raise ValueError(
                f"lease {name.replace('_', ' ')} must be more than 0s and at most 1h, not {value!r}"
            )
    if not t.retry * 1.2 < t.renew_deadline:
        raise ValueError(
            f"the lease retry period ({t.retry:g}s) must be well under the renew deadline "
            f"({t.renew_deadline:g}s): at most 1/1.2 of it, so a holder tries to renew more than once"
        )
    if not t.renew_deadline + 1.0 <= t.duration:
        raise ValueError(
            f"the lease renew deadline ({t.renew_deadline:g}s) must end at least 1s before the lease "
            f"duration ({t.duration:g}s): a holder stops writing before anyone else may take its lease"
        )
    if t.duration != int(t.duration):
        raise ValueError(
            f"the lease duration must be whole seconds (a Lease holds it so), not {t.duration:g}s"
        )


# ----------------------------------------------------------------------------------------------------------
# Names

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_replica_id(replica: str) -> str:
    """`replica` when usable as a replica's identity (a DNS-1123 label, at most 40 characters so lease
    names stay labels too); `ValueError` otherwise."""
    if not isinstance(replica, str) or not _LABEL.match(replica) or len(replica) > 40:
        raise ValueError(
            f"a replica id must be lower-case letters, digits and '-', starting and ending with a letter or "
            f"digit, at most 40 characters: {replica!r}"
        )
    return replica


def shard_lease(*, instance: str, shard: int) -> str:
    return f"{instance}-shard-{shard}"


def replica_lease(*, instance: str, replica: str) -> str:
    return f"{instance}-replica-{replica}"


def coordinator_lease(*, instance: str) -> str:
    return f"{instance}-coordinator"


def selector(*, instance: str) -> str:
    """Label selector of every Lease of `instance`."""
    return f"{model.LABEL_OWNER}={instance},{LABEL_ROLE}"


def shard_of_lease(name: str, *, instance: str) -> int | None:
    """The shard number a shard lease's name carries, None for any other name."""
    prefix = f"{instance}-shard-"
    if name.startswith(prefix) and name[len(prefix) :].isdigit():
        return int(name[len(prefix) :])
    return None


def replica_of_lease(name: str, *, instance: str) -> str | None:
    prefix = f"{instance}-replica-"
    return name[len(prefix) :] if name.startswith(prefix) and len(name) > len(prefix) else None


# ----------------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Record:
    """One Lease as the server holds it. `holder` "" is free (released, or never held). `acquired` and
    `renewed` are the holder's wall clock, for people only: no decision reads them. `version` is the
    resourceVersion ("" for a record not written yet). `annotations`: fleet's annotations (a replica
    lease's shard count and load factor)."""

    name: str
    holder: str = ""
    duration: int = 15
    transitions: int = 0
    acquired: str | None = None
    renewed: str | None = None
    version: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def free(self) -> bool:
        return not self.holder


def rfc3339_micro(wall: float) -> str:
    """A Lease's MicroTime from seconds since the epoch."""
    return dt.datetime.fromtimestamp(wall, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decode(lease: Mapping[str, Any]) -> Record:
    """Read a Lease; `LeaseError` naming it when it cannot be read (never taken as free)."""
    meta = lease.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name = str(meta.get("name") or "")
    where = f"Lease/{NAMESPACE}/{name}"
    spec = lease.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise LeaseError(f"{where}: spec is not a mapping")
    holder = spec.get("holderIdentity") or ""
    if not isinstance(holder, str):
        raise LeaseError(f"{where}: spec.holderIdentity is not a string")
    duration = spec.get("leaseDurationSeconds", 0 if not holder else None)
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
        raise LeaseError(
            f"{where}: spec.leaseDurationSeconds is not a whole number of seconds ({duration!r})"
        )
    if holder and duration < 1:
        raise LeaseError(f"{where}: held by {holder!r} with a duration under a second")
    transitions = spec.get("leaseTransitions", 0)
    if isinstance(transitions, bool) or not isinstance(transitions, int) or transitions < 0:
        raise LeaseError(f"{where}: spec.leaseTransitions is not a whole number ({transitions!r})")
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise LeaseError(f"{where}: metadata.annotations is not a mapping")
    return Record(
        name=name,
        holder=holder,
        duration=duration,
        transitions=transitions,
        acquired=_text(spec.get("acquireTime")),
        renewed=_text(spec.get("renewTime")),
        version=str(meta.get("resourceVersion") or ""),
        annotations={k: str(v) for k, v in annotations.items() if str(k).startswith("fleet.dev/")},
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def encode(record: Record, *, instance: str, role: str) -> dict[str, Any]:
    """The Lease object for a create (no version) or an update over `record.version`."""
    meta: dict[str, Any] = {
        "name": record.name,
        "namespace": NAMESPACE,
        "labels": {model.LABEL_OWNER: instance, LABEL_ROLE: role},
    }
    if record.annotations:
        meta["annotations"] = dict(record.annotations)
    if record.version:
        meta["resourceVersion"] = record.version
    spec: dict[str, Any] = {"leaseDurationSeconds": record.duration, "leaseTransitions": record.transitions}
    if record.holder:
        spec["holderIdentity"] = record.holder
    if record.acquired:
        spec["acquireTime"] = record.acquired
    if record.renewed:
        spec["renewTime"] = record.renewed
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec}


def acquiring(
    current: Record | None,
    *,
    name: str,
    me: str,
    wall: float,
    timings: Timings,
    annotations: Mapping[str, str] | None = None,
) -> Record:
    """The record that makes `me` the holder of a lease that is `current` (None: not created yet).

    A new holder is one more transition (the first holder's epoch is 1); `me` taking back a lease it
    still holds is a renewal and keeps the epoch. The update carries `current.version`."""
    stamp = rfc3339_micro(wall)
    if current is not None and current.holder == me:
        return renewing(current, wall=wall, timings=timings)
    return Record(
        name=name,
        holder=me,
        duration=int(timings.duration),
        transitions=(current.transitions if current is not None else 0) + 1,
        acquired=stamp,
        renewed=stamp,
        version=current.version if current is not None else "",
        annotations=dict(
            annotations if annotations is not None else (current.annotations if current else {})
        ),
    )


def renewing(current: Record, *, wall: float, timings: Timings) -> Record:
    """The record that renews `current` for its holder (same epoch), over `current.version`."""
    return replace(current, duration=int(timings.duration), renewed=rfc3339_micro(wall))


def releasing(current: Record, *, wall: float) -> Record:
    """The record that gives `current` up: no holder, the epoch kept (the next holder counts one more)."""
    stamp = rfc3339_micro(wall)
    return replace(current, holder="", duration=1, renewed=stamp)


def raising(current: Record, *, above: int, wall: float, timings: Timings) -> Record:
    """The record by which `current`'s holder lifts its epoch above `above`: when a fence on a cluster
    names a higher epoch of the same lease than the lease holds (the Lease was deleted and created again,
    which resets `transitions`), the holder renews with ``above + 1`` transitions. Only the holder can,
    over the version it holds, so no stale replica can do it (`fleet.core.fencing`)."""
    return replace(
        renewing(current, wall=wall, timings=timings), transitions=max(current.transitions, above + 1)
    )


# ----------------------------------------------------------------------------------------------------------
# What one replica knows


@dataclass(frozen=True)
class Seen:
    """A lease as one replica knows it: its `record` (None: absent) and `since`, when (on this replica's
    monotonic clock) it first saw that version (or the absence)."""

    record: Record | None
    since: float


def observe(previous: Seen | None, record: Record | None, *, now: float) -> Seen:
    """What is known after reading `record` at `now`: the same version keeps its first sighting."""
    if previous is not None:
        same = (
            previous.record is None
            if record is None
            else previous.record is not None
            and previous.record.version == record.version
            and record.version != ""
        )
        if same:
            return Seen(record=record, since=previous.since)
    return Seen(record=record, since=now)


def free_at(seen: Seen) -> float:
    """When (this replica's clock) the lease may be taken by anyone but its holder: at once when it is
    absent or released, else `duration` after its current version was first seen."""
    record = seen.record
    if record is None or record.free:
        return seen.since
    return seen.since + max(record.duration, 1)


def live(seen: Seen, *, now: float) -> bool:
    """Whether the lease is held and not expired, as this replica knows it."""
    return seen.record is not None and not seen.record.free and now < free_at(seen)


@dataclass(frozen=True)
class Held:
    """A lease this replica holds: its epoch, the version it last wrote, and `sent`, when (its monotonic
    clock) it sent the acquire or renew that wrote that version."""

    name: str
    epoch: int
    version: str
    sent: float


def writable_until(held: Held, timings: Timings) -> float:
    """Until when the holder may write under this lease (its clock): `renew_deadline` after `sent`."""
    return held.sent + timings.renew_deadline


def may_write(held: Held | None, *, now: float, timings: Timings) -> bool:
    return held is not None and now < writable_until(held, timings)
