"""The state of record in a management cluster: fleet's ConfigMaps there and their codecs (pure).

When replicas of one instance share a fleet through a management cluster (docs/scaling.md, "State of
record"), what they must agree on lives there as ConfigMaps in namespace ``fleet-system``, labelled
``fleet.dev/owner=<instance>`` and ``fleet.dev/record=<kind>``, each carrying its schema version in the
annotation ``fleet.dev/schema``:

==========================================  ========  =====================================================
name                                        kind      holds
==========================================  ========  =====================================================
``<instance>-records``                      marker    the schema version the instance was installed at
``<instance>-rollout-<bundle>-<rev12>``     rollout   one (bundle, revision) rollout as the Conductor keeps
                                                      it (`fleet.core.rollout.dump`, hashes, span)
``<instance>-action-<bundle>-<token>``      action    a person's action asked of a replica that does not
                                                      coordinate, for the coordinator to take
``<instance>-history-<writer>-<n>``         history   a segment of one replica's history entries
``<instance>-status-<shard>``               status    one shard's status summary, by the shard's owner
``<instance>-request-<shard>-<replica>``    request   the reconciles asked of a replica that does not own
                                                      the shard, for its owner to run
``<instance>-request-fetch``                request   the latest push announced to any replica (a webhook):
                                                      every replica fetches when it changes
==========================================  ========  =====================================================

Owns: those names and labels (`name_for`), the encoding and decoding of each record (`encode_*`,
`decode_*`), the schema version and its migration (`SCHEMA`, `upgrade`, `MIGRATIONS`), the size limit
(`MAX_RECORD_BYTES`), the codec helpers the kinds share (`envelope`, `dumps`, the `*_field` readers),
and the pure decisions over records: whether a history segment takes more entries (`fits`), which entries
answer a history query over every replica's segments (`merge_history`); requests handed from one replica
to others (`Request`). The status summaries' codec and merge are `fleet.core.summaries`.

Every decode raises `RecordError` naming the ConfigMap and the field that is wrong: an unreadable record
is never taken as empty or absent. A record of a newer schema than this fleet is unreadable too (it must
not be overwritten by an older fleet, which would drop what it does not know).

Does not: send anything (`fleet.clients.records`), decide rollouts (`fleet.core.rollout`) or what a
history entry is (`fleet.core.history`), or know which replica owns which shard (the caller passes
`shard_of` and epochs).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from fleet.core import errors, model
from fleet.core import history as hist

NAMESPACE = model.INVENTORY_NAMESPACE
SCHEMA = 1
LABEL_RECORD = "fleet.dev/record"
LABEL_BUNDLE = "fleet.dev/bundle"
LABEL_WRITER = "fleet.dev/writer"
LABEL_SHARD = "fleet.dev/shard"
ANNOTATION_SCHEMA = "fleet.dev/schema"

MARKER = "marker"
ROLLOUT = "rollout"
ACTION = "action"
HISTORY = "history"
STATUS = "status"
REQUEST = "request"
KINDS = (MARKER, ROLLOUT, ACTION, HISTORY, STATUS, REQUEST)

# A ConfigMap holds at most 1 MiB of data (the API server refuses more); a record is kept well below,
# so its metadata and a growing field never push it over.
MAX_RECORD_BYTES = 900 * 1024
SEGMENT_ENTRIES = 500  # history entries per segment: an append rewrites the segment
SEGMENT_BYTES = 256 * 1024

_NAME_MAX = 253
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SEGMENT = re.compile(r"^(?P<writer>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<n>[0-9]{6})$")


class RecordError(errors.StateError):
    """A record in the management cluster cannot be read (or written: too large); the message names it."""

    retriable = False


def where(name: str) -> str:
    """How messages name a record: ``ConfigMap/fleet-system/<name>``."""
    return f"ConfigMap/{NAMESPACE}/{name}"


def selector(*, instance: str, kind: str | None = None) -> str:
    """The label selector of an instance's records (of one kind)."""
    out = f"{model.LABEL_OWNER}={instance}"
    return out + (f",{LABEL_RECORD}={kind}" if kind else "")


def _part(text: str, room: int) -> str:
    """`text` made a DNS-subdomain piece of at most `room` characters; a cut one ends in a digest, so two
    long names never meet."""
    clean = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.") or "x"
    if len(clean) <= room and clean == text:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{clean[: max(1, room - 11)].strip('-.')}-{digest}"


def name_for(
    kind: str,
    *,
    instance: str,
    bundle: str = "",
    revision: str = "",
    token: str = "",
    writer: str = "",
    number: int = 0,
    shard: int = 0,
) -> str:
    """The ConfigMap name of a record."""
    if kind == MARKER:
        return f"{instance}-records"
    if kind == ROLLOUT:
        head = f"{instance}-rollout-"
        return head + _part(bundle, _NAME_MAX - len(head) - 13) + "-" + revision[:12]
    if kind == ACTION:
        head = f"{instance}-action-"
        return head + _part(bundle, _NAME_MAX - len(head) - len(token) - 1) + "-" + token
    if kind == HISTORY:
        return f"{instance}-history-{writer}-{number:06d}"
    if kind == STATUS:
        return f"{instance}-status-{shard}"
    if kind == REQUEST:  # a reconcile request for a shard's owner, or the one fetch request of the instance
        return f"{instance}-request-{shard}-{token}" if token else f"{instance}-request-fetch"
    raise ValueError(f"unknown record kind {kind!r}")


# ----------------------------------------------------------------------------------------------------------
# The envelope: a ConfigMap with labels, the schema annotation and string data.


@dataclass(frozen=True)
class Meta:
    """Where a record came from: its name and the resourceVersion read (writes go over it)."""

    name: str
    version: str = ""


def envelope(
    kind: str,
    name: str,
    *,
    instance: str,
    data: Mapping[str, str],
    labels: Mapping[str, str] | None = None,
    version: str = "",
) -> dict[str, Any]:
    all_labels = {model.LABEL_OWNER: instance, LABEL_RECORD: kind}
    for k, v in (labels or {}).items():
        if len(v) <= 63 and _LABEL_VALUE.match(v):
            all_labels[k] = v  # a name too long for a label is in the data only
    meta: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "labels": all_labels,
        "annotations": {ANNOTATION_SCHEMA: str(SCHEMA)},
    }
    if version:
        meta["resourceVersion"] = version
    body = dict(data)
    size = sum(len(k) + len(v.encode()) for k, v in body.items())
    if size > MAX_RECORD_BYTES:
        raise RecordError(
            f"{where(name)}: the record would hold {size} bytes, more than {MAX_RECORD_BYTES} (a ConfigMap "
            "holds at most 1 MiB); not written"
        )
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": body}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)


def dumps_fast(value: Any) -> str:
    """`dumps` with orjson: compact, keys sorted, text as UTF-8 (not escaped). For the large records written
    often: the coordinator rewrites a 1,000-cluster rollout (310 KiB) about once a second while a wave is in
    flight, and `json.dumps` was most of that write's CPU. What fleet stores holds no NaN (orjson would
    write null, which the reader then refuses by name)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


# Migrations from one schema version of a kind's data to the next: (kind, version) -> function over the
# ConfigMap's data. Version 1 is the first; a change of a record's shape adds a step here and raises SCHEMA.
Migration = Callable[[Mapping[str, str]], dict[str, str]]
MIGRATIONS: dict[tuple[str, int], Migration] = {}


def schema_of(obj: Mapping[str, Any]) -> int:
    """The schema version a record was written at; RecordError when it is missing or not a number."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "?")
    raw = (meta.get("annotations") or {}).get(ANNOTATION_SCHEMA)
    try:
        version = int(str(raw))
    except ValueError:
        raise RecordError(
            f"{where(name)}: annotation {ANNOTATION_SCHEMA} is {raw!r}, not a schema version"
        ) from None
    if version < 1:
        raise RecordError(f"{where(name)}: annotation {ANNOTATION_SCHEMA} is {raw!r}, not a schema version")
    return version


def upgrade(
    obj: Mapping[str, Any], *, kind: str, migrations: Mapping[tuple[str, int], Migration] | None = None
) -> tuple[Meta, dict[str, str]]:
    """A record's name, resourceVersion and data at the current `SCHEMA`, migrated step by step from the
    version it was written at. RecordError (naming the record) when it is not a ConfigMap of that kind, is
    newer than this fleet, or an older version has no migration."""
    steps = MIGRATIONS if migrations is None else migrations
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping) or not meta.get("name"):
        raise RecordError(f"ConfigMap/{NAMESPACE}/?: a record without a name")
    name = str(meta["name"])
    found = (meta.get("labels") or {}).get(LABEL_RECORD)
    if found != kind:
        raise RecordError(f"{where(name)}: label {LABEL_RECORD} is {found!r}, not {kind!r}")
    data = obj.get("data")
    if data is None:
        data = {}
    if not isinstance(data, Mapping) or not all(isinstance(v, str) for v in data.values()):
        raise RecordError(f"{where(name)}: data is not a map of strings")
    version = schema_of(obj)
    if version > SCHEMA:
        raise RecordError(
            f"{where(name)}: written by a newer fleet (schema {version}, this fleet knows {SCHEMA}); "
            "refusing to read or overwrite it (upgrade this replica)"
        )
    out = dict(data)
    while version < SCHEMA:
        step = steps.get((kind, version))
        if step is None:
            raise RecordError(
                f"{where(name)}: schema {version} of {kind} records has no migration to {SCHEMA}"
            )
        try:
            out = step(out)
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(f"{where(name)}: cannot migrate it from schema {version}: {e}") from e
        version += 1
    return Meta(name=name, version=str(meta.get("resourceVersion") or "")), out


def text_field(name: str, data: Mapping[str, str], key: str) -> str:
    if key not in data:
        raise RecordError(f"{where(name)}: data.{key} is missing")
    return data[key]


def json_field(name: str, data: Mapping[str, str], key: str) -> Any:
    # orjson: the records are read every period (a 1,000-cluster rollout is 310 KiB, every shard's summary
    # from the other replicas); it reads what `dumps` writes (no NaN: refused there, and here).
    try:
        return orjson.loads(text_field(name, data, key))
    except ValueError as e:
        raise RecordError(f"{where(name)}: data.{key} is not JSON: {e}") from None


def number_field(name: str, value: Any, key: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise RecordError(f"{where(name)}: data.{key} is {value!r}, not a number") from None
    if not math.isfinite(out):
        raise RecordError(f"{where(name)}: data.{key} is {value!r}, not a finite number")
    return out


# ----------------------------------------------------------------------------------------------------------
# The marker: the instance's records are installed, at a schema version.


def int_field(name: str, data: Mapping[str, str], key: str) -> int:
    raw = text_field(name, data, key)
    if not raw.isdigit():
        raise RecordError(f"{where(name)}: data.{key} is {raw!r}, not a whole number")
    return int(raw)


def encode_marker(*, instance: str, replica: str, version: str = "") -> dict[str, Any]:
    name = name_for(MARKER, instance=instance)
    return envelope(
        MARKER,
        name,
        instance=instance,
        version=version,
        data={"schema": str(SCHEMA), "kinds": ",".join(KINDS), "migratedBy": replica},
    )


# ----------------------------------------------------------------------------------------------------------
# Rollouts.


@dataclass(frozen=True)
class Rollout:
    """One stored rollout, as the state database's rollout row holds it (`doc`: the Conductor's form)."""

    bundle: str
    revision: str
    started_at: float
    updated_at: float
    terminal: bool
    doc: Mapping[str, Any]
    meta: Meta = Meta("")
    writer: str = ""  # the replica that wrote it (label fleet.dev/writer; "" when not known)


def encode_rollout(r: Rollout, *, instance: str) -> dict[str, Any]:
    """The ConfigMap of a rollout; `r.meta.version` (when set) is the resourceVersion it replaces. The
    data has readable fields for ``kubectl get -o yaml`` beside the whole stored form (``rollout.json``)."""
    name = name_for(ROLLOUT, instance=instance, bundle=r.bundle, revision=r.revision)
    inner = r.doc.get("rollout") if isinstance(r.doc, Mapping) else None
    inner = inner if isinstance(inner, Mapping) else {}
    return envelope(
        ROLLOUT,
        name,
        instance=instance,
        version=r.meta.version,
        labels={LABEL_BUNDLE: r.bundle, **({LABEL_WRITER: r.writer} if r.writer else {})},
        data={
            "bundle": r.bundle,
            "revision": r.revision,
            "state": str(inner.get("phase") or ""),
            "reason": str(inner.get("reason") or ""),
            "startedAt": repr(r.started_at),
            "updatedAt": repr(r.updated_at),
            "terminal": "true" if r.terminal else "false",
            "rollout.json": dumps_fast(dict(r.doc)),
        },
    )


def decode_rollout(obj: Mapping[str, Any]) -> Rollout:
    meta, data = upgrade(obj, kind=ROLLOUT)
    name = meta.name
    doc = json_field(name, data, "rollout.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("rollout"), dict):
        raise RecordError(f"{where(name)}: data.rollout.json holds no rollout")
    terminal = text_field(name, data, "terminal")
    if terminal not in ("true", "false"):
        raise RecordError(f"{where(name)}: data.terminal is {terminal!r}, not true or false")
    bundle, revision = text_field(name, data, "bundle"), text_field(name, data, "revision")
    inner = doc["rollout"]
    if inner.get("bundle") != bundle or inner.get("revision") != revision:
        raise RecordError(
            f"{where(name)}: data.rollout.json is not the rollout of {bundle} at {revision[:12]}"
        )
    return Rollout(
        bundle=bundle,
        revision=revision,
        started_at=number_field(name, text_field(name, data, "startedAt"), "startedAt"),
        updated_at=number_field(name, text_field(name, data, "updatedAt"), "updatedAt"),
        terminal=terminal == "true",
        doc=doc,
        meta=meta,
        writer=str(((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_WRITER) or ""),
    )


def latest(rollouts: Iterable[Rollout]) -> dict[str, Rollout]:
    """The newest rollout of every bundle (by start time, then revision for a stable answer)."""
    out: dict[str, Rollout] = {}
    for r in rollouts:
        have = out.get(r.bundle)
        if have is None or (r.started_at, r.revision) > (have.started_at, have.revision):
            out[r.bundle] = r
    return out


def beyond_kept(rollouts: Iterable[Rollout], *, keep: int) -> list[Rollout]:
    """The rollouts past the newest `keep` of their bundle (for deletion)."""
    per: dict[str, list[Rollout]] = {}
    for r in rollouts:
        per.setdefault(r.bundle, []).append(r)
    out: list[Rollout] = []
    for rs in per.values():
        rs.sort(key=lambda r: (r.started_at, r.revision), reverse=True)
        out.extend(rs[keep:])
    return out


# ----------------------------------------------------------------------------------------------------------
# People's actions asked of a replica that does not coordinate.


@dataclass(frozen=True)
class ActionRequest:
    bundle: str
    revision: str  # the rollout it was asked of: a request for a superseded rollout is not taken
    action: str
    actor: str
    at: float
    replica: str  # which replica took the request
    token: str  # unique per request (part of the name)
    reason: str = ""
    wave: str | None = None
    cluster: str | None = None
    meta: Meta = Meta("")


def encode_action(a: ActionRequest, *, instance: str) -> dict[str, Any]:
    name = name_for(ACTION, instance=instance, bundle=a.bundle, token=a.token)
    data = {
        "bundle": a.bundle,
        "revision": a.revision,
        "action": a.action,
        "actor": a.actor,
        "reason": a.reason,
        "at": repr(a.at),
        "replica": a.replica,
        "token": a.token,
    }
    if a.wave is not None:
        data["wave"] = a.wave
    if a.cluster is not None:
        data["cluster"] = a.cluster
    return envelope(ACTION, name, instance=instance, labels={LABEL_BUNDLE: a.bundle}, data=data)


def decode_action(obj: Mapping[str, Any]) -> ActionRequest:
    meta, data = upgrade(obj, kind=ACTION)
    n = meta.name
    return ActionRequest(
        bundle=text_field(n, data, "bundle"),
        revision=text_field(n, data, "revision"),
        action=text_field(n, data, "action"),
        actor=text_field(n, data, "actor"),
        at=number_field(n, text_field(n, data, "at"), "at"),
        replica=text_field(n, data, "replica"),
        token=text_field(n, data, "token"),
        reason=data.get("reason", ""),
        wave=data.get("wave"),
        cluster=data.get("cluster"),
        meta=meta,
    )


# ----------------------------------------------------------------------------------------------------------
# History segments: each replica appends to its own, so replicas never contend for one.


def entry_doc(e: hist.Entry) -> dict[str, Any]:
    """An entry's stored form (its time at full precision, unlike the API's)."""
    out: dict[str, Any] = {"at": e.at, "outcome": e.outcome}
    for key, value in (
        ("cluster", e.cluster),
        ("bundle", e.bundle),
        ("from", e.from_revision),
        ("to", e.to_revision),
        ("trace", e.trace_id),
        ("actor", e.actor),
        ("reason", e.reason),
        ("message", e.message),
    ):
        if value:
            out[key] = value
    objects = {k: v for k, v in e.objects.items() if v}
    if objects:
        out["objects"] = objects
    return out


def entry_of(d: Any, *, name: str, line: int) -> hist.Entry:
    if not isinstance(d, dict) or "at" not in d or not isinstance(d.get("outcome"), str):
        raise RecordError(f"{where(name)}: data.entries line {line} is not a history entry")
    objects = d.get("objects") or {}
    if not isinstance(objects, dict) or not all(isinstance(v, int) for v in objects.values()):
        raise RecordError(f"{where(name)}: data.entries line {line}: objects is not a map of counts")
    text = {k: d.get(k) for k in ("cluster", "bundle", "from", "to", "trace", "actor", "reason", "message")}
    if not all(v is None or isinstance(v, str) for v in text.values()):
        raise RecordError(f"{where(name)}: data.entries line {line}: a field that must be text is not")
    return hist.Entry(
        at=number_field(name, d["at"], f"entries line {line} at"),
        cluster=text["cluster"] or "",
        bundle=text["bundle"] or "",
        outcome=d["outcome"],
        from_revision=text["from"],
        to_revision=text["to"],
        objects={k: int(v) for k, v in objects.items() if k in hist.COUNTED},
        trace_id=text["trace"],
        actor=text["actor"],
        reason=text["reason"] or "",
        message=text["message"] or "",
        seq=line,
    )


@dataclass(frozen=True)
class Segment:
    writer: str
    number: int
    entries: tuple[hist.Entry, ...] = ()
    meta: Meta = Meta("")
    # The entries' stored text when known (read or written): an append encodes only the entries it adds.
    text: str | None = field(default=None, compare=False, repr=False)

    @property
    def newest(self) -> float | None:
        return max((e.at for e in self.entries), default=None)


def _lines(entries: Iterable[hist.Entry]) -> str:
    return "".join(dumps(entry_doc(e)) + "\n" for e in entries)


def _text(s: Segment) -> str:
    return s.text if s.text is not None else _lines(s.entries)


def grown(s: Segment, more: Iterable[hist.Entry]) -> Segment:
    """`s` with `more` entries after its own (their text appended to what it holds)."""
    added = tuple(more)
    return replace(s, entries=s.entries + added, text=_text(s) + _lines(added))


def encode_segment(s: Segment, *, instance: str) -> dict[str, Any]:
    name = name_for(HISTORY, instance=instance, writer=s.writer, number=s.number)
    times = [e.at for e in s.entries]
    return envelope(
        HISTORY,
        name,
        instance=instance,
        version=s.meta.version,
        labels={LABEL_WRITER: s.writer},
        data={
            "writer": s.writer,
            "count": str(len(s.entries)),
            "oldest": repr(min(times)) if times else "",
            "newest": repr(max(times)) if times else "",
            "entries": _text(s),
        },
    )


def decode_segment(obj: Mapping[str, Any], *, instance: str) -> Segment:
    meta, data = upgrade(obj, kind=HISTORY)
    n = meta.name
    head = f"{instance}-history-"
    m = _SEGMENT.match(n[len(head) :]) if n.startswith(head) else None
    if m is None:
        raise RecordError(f"{where(n)}: not a history segment name ({head}<writer>-<6 digits>)")
    if text_field(n, data, "writer") != m["writer"]:
        raise RecordError(f"{where(n)}: data.writer is {data['writer']!r}, not {m['writer']!r} of its name")
    entries = []
    text = text_field(n, data, "entries")
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as e:
            raise RecordError(f"{where(n)}: data.entries line {i} is not JSON: {e}") from None
        entries.append(entry_of(doc, name=n, line=i))
    canonical = text if text.endswith("\n") and "\n\n" not in text and not text.startswith("\n") else None
    return Segment(writer=m["writer"], number=int(m["n"]), entries=tuple(entries), meta=meta, text=canonical)


def fits(s: Segment, more: Iterable[hist.Entry]) -> bool:
    """Whether `s` takes `more` entries and stays within a segment's bounds (an empty segment takes any
    batch that fits a record at all)."""
    added = tuple(more)
    if not s.entries:
        return True
    size = len(_text(s).encode()) + len(_lines(added).encode())
    return len(s.entries) + len(added) <= SEGMENT_ENTRIES and size <= SEGMENT_BYTES


def expired(s: Segment, *, before: float) -> bool:
    """A segment all of whose entries are older than `before` (the retention): it is deleted whole."""
    newest = s.newest
    return newest is not None and newest < before


def merge_history(segments: Iterable[Segment], q: hist.Query) -> list[hist.Entry]:
    """The entries of every segment matching `q`, newest first (ties: writer, then order in its segment),
    at most `q.limit`; each entry's `seq` is its rank in that order."""
    matching: list[tuple[float, str, int, int, hist.Entry]] = []
    for s in segments:
        for e in s.entries:
            if q.cluster is not None and e.cluster != q.cluster:
                continue
            if q.bundle is not None and e.bundle != q.bundle:
                continue
            if q.since is not None and e.at < q.since:
                continue
            if q.revision is not None and not any(
                (r or "").startswith(q.revision) for r in (e.to_revision, e.from_revision)
            ):
                continue
            matching.append((e.at, s.writer, s.number, e.seq, e))
    matching.sort(key=lambda t: (-t[0], t[1], -t[2], -t[3]))
    return [replace(t[4], seq=i) for i, t in enumerate(matching[: q.limit], start=1)]


# ----------------------------------------------------------------------------------------------------------
# Requests handed on: a reconcile asked of a replica that does not own the cluster (for its shard's owner,
# deleted by it once its clusters are woken), and a push announced to one replica (for every replica).

RECONCILE, FETCH = "reconcile", "fetch"


@dataclass(frozen=True)
class Request:
    what: str  # RECONCILE or FETCH
    replica: str  # the replica that was asked
    at: float
    shard: int = 0  # RECONCILE: the shard whose owner runs it
    clusters: tuple[str, ...] = ()  # RECONCILE: the clusters of that shard to reconcile now
    bundle: str | None = None
    token: str = ""  # RECONCILE: part of the name (the asking replica: its requests to a shard merge)
    reason: str = ""
    meta: Meta = Meta("")


def encode_request(r: Request, *, instance: str) -> dict[str, Any]:
    name = name_for(REQUEST, instance=instance, shard=r.shard, token=r.token if r.what == RECONCILE else "")
    data = {"what": r.what, "replica": r.replica, "at": repr(r.at), "reason": r.reason}
    labels = {LABEL_WRITER: r.replica}
    if r.what == RECONCILE:
        data |= {"shard": str(r.shard), "clusters": dumps(list(r.clusters)), "token": r.token}
        labels[LABEL_SHARD] = str(r.shard)
        if r.bundle is not None:
            data["bundle"] = r.bundle
    return envelope(REQUEST, name, instance=instance, labels=labels, data=data, version=r.meta.version)


def decode_request(obj: Mapping[str, Any]) -> Request:
    meta, data = upgrade(obj, kind=REQUEST)
    n = meta.name
    what = text_field(n, data, "what")
    if what not in (RECONCILE, FETCH):
        raise RecordError(f"{where(n)}: data.what is {what!r}, not {RECONCILE} or {FETCH}")
    r = Request(what=what, replica=text_field(n, data, "replica"), at=number_field(n, text_field(n, data, "at"), "at"),
                reason=data.get("reason", ""), meta=meta)  # fmt: skip
    if what == FETCH:
        return r
    clusters = json_field(n, data, "clusters")
    if not isinstance(clusters, list) or not all(isinstance(c, str) for c in clusters):
        raise RecordError(f"{where(n)}: data.clusters is not a list of cluster names")
    return replace(r, shard=int_field(n, data, "shard"), clusters=tuple(clusters), bundle=data.get("bundle"),
                   token=text_field(n, data, "token"))  # fmt: skip
