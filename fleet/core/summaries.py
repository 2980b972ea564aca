"""The shards' status summaries in the management cluster (docs/scaling.md, "State of record"), pure.

One ConfigMap ``<instance>-status-<shard>`` per shard (kind ``status`` of `fleet.core.records`), written by
the shard's owner: its clusters' status documents and what its rounds observed of the coordinator's
rollouts (`Observation`), with its writer and lease epoch.

Owns: `Summary` and its codec (`encode_summary`, `decode_summary`: a record that cannot be read raises
`records.RecordError` naming the ConfigMap and field), whether a summary found in place was written by a
newer owner of the shard (`fenced`), and the whole fleet's clusters from every shard's summary
(`merge_status`, `Merged`).

Does not: send anything (`fleet.clients.records`), name records or migrate them (`fleet.core.records`), or
know which replica owns which shard (the caller passes `shard_of` and epochs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from fleet.core import records as rec


@dataclass(frozen=True)
class Observation:
    """What the owner of a cluster last saw of a bundle it reconciled to a rollout's revision, for the
    coordinator's rollout (a replica that does not coordinate takes no rollout decision)."""

    revision: str  # the rollout's revision the round applied
    state: str  # a `fleet.core.model.State` value
    at: float  # when it was seen (wall clock)
    degraded: bool = False
    message: str = ""
    unreachable: str = ""  # the round could not reach the cluster (its message)
    retriable: bool = False  # Failed only by errors a retry can fix (the cluster stays in flight)


@dataclass(frozen=True)
class Summary:
    shard: int
    shards: int
    writer: str  # the replica that wrote it
    epoch: int  # its shard lease epoch when it wrote it (0: no lease)
    updated_at: float
    clusters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> status document
    observed: Mapping[str, Mapping[str, Observation]] = field(default_factory=dict)  # cluster -> bundle ->
    meta: rec.Meta = field(default_factory=lambda: rec.Meta(""))


def _states(clusters: Mapping[str, Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for doc in clusters.values():
        state = str(doc.get("state") or "?")
        counts[state] = counts.get(state, 0) + 1
    return " ".join(f"{s}={n}" for s, n in sorted(counts.items()))


def _dumps(value: Any) -> str:
    """A summary's JSON: compact, keys sorted, text as UTF-8 (orjson: each owner writes its shards' summaries
    every period its clusters change, some 45 KiB each at 1,000 clusters, and `json.dumps` was most of it)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def encode_summary(s: Summary, *, instance: str) -> dict[str, Any]:
    name = rec.name_for(rec.STATUS, instance=instance, shard=s.shard)
    observed = {
        c: {b: {k: v for k, v in o.__dict__.items() if v not in ("", False)} for b, o in per.items()}
        for c, per in s.observed.items()
    }
    return rec.envelope(
        rec.STATUS,
        name,
        instance=instance,
        version=s.meta.version,
        labels={rec.LABEL_SHARD: str(s.shard), rec.LABEL_WRITER: s.writer},
        data={
            "shard": str(s.shard),
            "shards": str(s.shards),
            "writer": s.writer,
            "epoch": str(s.epoch),
            "updatedAt": repr(s.updated_at),
            "states": _states(s.clusters),
            "clusters.json": _dumps(dict(s.clusters)),
            "observed.json": _dumps(observed),
        },
    )


def decode_summary(obj: Mapping[str, Any]) -> Summary:
    meta, data = rec.upgrade(obj, kind=rec.STATUS)
    n = meta.name
    clusters = rec.json_field(n, data, "clusters.json")
    if not isinstance(clusters, dict) or not all(isinstance(v, dict) for v in clusters.values()):
        raise rec.RecordError(f"{rec.where(n)}: data.clusters.json is not a map of cluster documents")
    raw_observed = rec.json_field(n, data, "observed.json") if "observed.json" in data else {}
    observed: dict[str, dict[str, Observation]] = {}
    try:
        for c, per in raw_observed.items():
            observed[c] = {
                b: Observation(
                    revision=str(o["revision"]),
                    state=str(o["state"]),
                    at=rec.number_field(n, o["at"], f"observed.json {c}/{b} at"),
                    degraded=bool(o.get("degraded", False)),
                    message=str(o.get("message", "")),
                    unreachable=str(o.get("unreachable", "")),
                    retriable=bool(o.get("retriable", False)),
                )
                for b, o in per.items()
            }
    except (AttributeError, KeyError, TypeError) as e:
        raise rec.RecordError(
            f"{rec.where(n)}: data.observed.json is not a map of observations ({e})"
        ) from None
    shard, shards = rec.int_field(n, data, "shard"), rec.int_field(n, data, "shards")
    if not 0 <= shard < max(shards, 1):
        raise rec.RecordError(f"{rec.where(n)}: data.shard {shard} is not below data.shards {shards}")
    return Summary(
        shard=shard,
        shards=shards,
        writer=rec.text_field(n, data, "writer"),
        epoch=rec.int_field(n, data, "epoch"),
        updated_at=rec.number_field(n, rec.text_field(n, data, "updatedAt"), "updatedAt"),
        clusters=clusters,
        observed=observed,
        meta=meta,
    )


def fenced(existing: Summary | None, *, shards: int, epoch: int) -> bool:
    """Whether a summary found in place was written by a newer owner of the same shard (a higher epoch
    under the same shard count): the writer holding `epoch` is stale and writes nothing over it."""
    return existing is not None and existing.shards == shards and existing.epoch > epoch


@dataclass(frozen=True)
class Merged:
    """The whole fleet as the summaries tell it."""

    clusters: dict[str, dict[str, Any]]
    observed: dict[str, dict[str, Observation]]
    missing: tuple[int, ...]  # shards no summary covers under the current count (their clusters unknown)
    writers: dict[int, str]  # shard -> the replica whose summary was taken


def merge_status(summaries: Iterable[Summary], *, shards: int, shard_of: Callable[[str], int]) -> Merged:
    """Every shard's clusters from its summary. A cluster is taken from the summary of its own shard under
    the current shard count; a summary written under another count (before the count changed) only
    fills in clusters no current summary holds, newest first. Shards with no current summary are
    `missing`: the caller reports them, never shows their clusters as gone."""
    current: dict[int, Summary] = {}
    others: list[Summary] = []
    for s in summaries:
        if s.shards == shards:
            have = current.get(s.shard)
            if have is None or (s.epoch, s.updated_at) > (have.epoch, have.updated_at):
                current[s.shard] = s
        else:
            others.append(s)
    clusters: dict[str, dict[str, Any]] = {}
    observed: dict[str, dict[str, Observation]] = {}
    for shard, s in sorted(current.items()):
        for name, doc in s.clusters.items():
            if shard_of(name) == shard:
                clusters[name] = dict(doc)
        for name, per in s.observed.items():
            if shard_of(name) == shard:
                observed[name] = dict(per)
    for s in sorted(others, key=lambda s: s.updated_at, reverse=True):
        for name, doc in s.clusters.items():
            if name not in clusters and shard_of(name) not in current:
                clusters[name] = dict(doc)
    missing = tuple(n for n in range(shards) if n not in current)
    return Merged(
        clusters=dict(sorted(clusters.items())),
        observed=observed,
        missing=missing,
        writers={n: s.writer for n, s in current.items()},
    )
