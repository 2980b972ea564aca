"""The state of one simulated cluster: objects, the resourceVersion counter, watch history and watchers.

Owns: `Cluster` with its per-resource `TypeState` (objects keyed by their storage key, a bounded history of
events, the registered watchers), the write path (create, update, patch, apply, delete) with the
strategy of the real registry (metadata the server keeps, generation, status reset, no-op writes that
bump nothing, dryRun), MVCC lists at an older resourceVersion by undoing history, continue tokens,
watch start positions (synthetic ADDED, resume, 410 after compaction) and the selector transitions of
the real cacher. Every mutation is a synchronous method, so a cluster is linearizable on one event
loop without locks; only waiting (for a future resourceVersion) awaits.

Does not: parse HTTP (`fleet.sim.rest`), merge (`fleet.sim.ssa`, `fleet.sim.smp`), default
(`fleet.sim.defaults`), or journal/fault requests (`fleet.sim.server`).

Encoding: each stored object keeps its serialized bytes (full, and without kind/apiVersion for list
items of built-in types); each event is encoded once and the same bytes go to every watcher.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from fleet.sim import allocation, selectors, status, types

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
UNDELETABLE_NAMESPACES = ("default", "kube-system", "kube-public")
GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)


def now() -> str:
    """RFC 3339 with second precision and `Z`, as metav1.Time serializes."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Settings:
    """Per-cluster knobs (all have real-server-like defaults)."""

    history: int = 1_000  # events kept per resource for watch resume and MVCC lists...
    history_seconds: float = 300.0  # ...and for at most this long (etcd's default compaction interval)
    watch_queue: int = 2_000  # events buffered per watcher before the server closes it
    bookmark_interval: float = 60.0
    min_request_timeout: float = 1800.0
    rv_wait: float = 3.0  # how long a request at a future resourceVersion waits
    rv_base: int = 1000  # the first cluster's starting resourceVersion (cluster i starts at base + 10,000 i)
    # Each namespace gets ServiceAccount `default` and ConfigMap `kube-root-ca.crt` (fleet.sim.controllers).
    namespace_defaults: bool = True
    # The sim's own controllers (fleet.sim.crds, fleet.sim.workloads): see docs/sim.md.
    crd_establish_delay: float = 0.0  # seconds from CRD create to Established (and served)
    workload_status: bool = True  # simulate Deployment/StatefulSet/DaemonSet/ReplicaSet/Job status
    workload_delay: float = 1.0  # seconds from a workload's new spec to it being available
    nodes: int = 3  # notional node count (DaemonSet desiredNumberScheduled)


class Stored:
    """One stored object version: the dict (never mutated once stored) and its cached encodings."""

    __slots__ = ("_full", "_item", "obj", "rv")

    def __init__(self, obj: dict[str, Any], rv: int) -> None:
        self.obj = obj
        self.rv = rv
        self._full: bytes | None = None
        self._item: bytes | None = None

    def full(self) -> bytes:
        if self._full is None:
            self._full = orjson.dumps(self.obj)
        return self._full

    def item(self) -> bytes:
        """Encoding as a list item of a built-in type: without kind and apiVersion (kubernetes#63676).

        Stored objects start with kind and apiVersion (see `_order`), so this is a slice of the cached
        full encoding: no second copy to keep and nothing to encode again.
        """
        if self._item is None:
            full = self.full()
            obj = self.obj
            head = orjson.dumps({"kind": obj.get("kind"), "apiVersion": obj.get("apiVersion")})
            if len(obj) > 2 and full.startswith(head[:-1] + b","):
                return b"{" + full[len(head) :]
            self._item = orjson.dumps({k: v for k, v in obj.items() if k != "kind" and k != "apiVersion"})
        return self._item

    def copy(self) -> dict[str, Any]:
        """A deep copy the caller may mutate (decoding the cached bytes is faster than deepcopy)."""
        result: dict[str, Any] = orjson.loads(self.full())
        return result

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.obj.get("metadata", {}).get("labels") or {}
        return labels


def _with_rv(stored: Stored, rv: int) -> Stored:
    meta = dict(stored.obj.get("metadata") or {})
    meta["resourceVersion"] = str(rv)
    obj = dict(stored.obj)
    obj["metadata"] = meta
    return Stored(obj, rv)


@dataclass
class Event:
    rv: int
    type: str
    ns: str
    name: str
    new: Stored | None  # the object after the change; for DELETED the last state at the deletion RV
    prev: Stored | None  # the object before the change
    at: float = 0.0  # time.monotonic() of the commit (history expires by age, like etcd compaction)


class Watcher:
    """One open watch: its filters, a bounded queue of encoded events, and a wake-up flag."""

    def __init__(
        self,
        *,
        rtype: types.ResourceType,
        namespace: str | None,
        labels: selectors.LabelSelector,
        fields: selectors.FieldSelector,
        max_queue: int,
    ) -> None:
        self.rtype = rtype
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.filtered = not labels.empty or not fields.empty
        self.queue: deque[bytes] = deque()
        self.max_queue = max_queue
        self.wake = asyncio.Event()
        self.closed = False
        self.overflowed = False
        self.close_after_drain = False
        self.path = ""  # request path, for fault rules that drop watches by path
        # A per-watcher event encoding (e.g. kubectl's Table watches); None: the shared bytes of the event.
        self.encode: Callable[[str, Stored], bytes] | None = None

    def encoded(self, etype: str, stored: Stored, cache: dict[str, bytes] | None = None) -> bytes:
        if self.encode is not None:
            return self.encode(etype, stored)
        if cache is None:
            return event_bytes(etype, stored)
        data = cache.get(etype)
        if data is None:
            data = cache[etype] = event_bytes(etype, stored)
        return data

    def matches(self, stored: Stored) -> bool:
        if not self.filtered:
            return True
        obj = stored.obj
        return self.labels.matches(obj.get("metadata", {}).get("labels")) and self.fields.matches(obj)

    def push(self, data: bytes) -> None:
        if self.closed:
            return
        if len(self.queue) >= self.max_queue:
            # Like the cacher's unresponsive-watcher handling: stop the stream, the client re-lists.
            self.overflowed = True
            self.close()
            return
        self.queue.append(data)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


def event_bytes(etype: str, stored: Stored) -> bytes:
    return b'{"type":"' + etype.encode() + b'","object":' + stored.full() + b"}\n"


class TypeState:
    """Objects, history and watchers of one resource in one cluster."""

    def __init__(self, rtype: types.ResourceType, since_rv: int) -> None:
        self.rtype = rtype
        self.objects: dict[str, Stored] = {}
        self._sorted: list[str] | None = None
        self.history: deque[Event] = deque()
        self.since_rv = since_rv  # every event with rv > since_rv is in history
        self.watchers: set[Watcher] = set()

    def sorted_keys(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.objects)
        return self._sorted

    def put(self, key: str, stored: Stored) -> None:
        if key not in self.objects:
            self._sorted = None
        self.objects[key] = stored

    def pop(self, key: str) -> None:
        if self.objects.pop(key, None) is not None:
            self._sorted = None


def storage_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def split_key(key: str) -> tuple[str, str]:
    ns, _, name = key.rpartition("/")
    return ns, name


@dataclass
class ListResult:
    items: list[Stored]
    rv: int
    continue_token: str = ""
    remaining: int | None = None


@dataclass
class WriteResult:
    """What a write did: the object to answer with, the HTTP code, and whether state changed."""

    stored: Stored
    code: int = 200
    mutated: bool = False
    body: dict[str, Any] | None = None  # a Status to answer instead of the object (DELETE)
    warnings: list[str] = field(default_factory=list)


def encode_continue(rv: int, start: str) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(data, dict) or data.get("v") != "meta.k8s.io/v1":
            raise ValueError("continue key is not valid")
        rv = int(data["rv"])
        start = str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError) as e:
        raise status.bad_request(f"invalid continue token: {e}") from None
    return rv, start


def _diff_outside(old: dict[str, Any], new: dict[str, Any], skip: tuple[str, ...]) -> bool:
    keys = (set(old) | set(new)) - set(skip)
    return any(old.get(k) != new.get(k) for k in keys)


def _order(obj: dict[str, Any]) -> dict[str, Any]:
    """Key order like the real server's JSON: kind, apiVersion, metadata (Go field order), ..., status."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        ordered = {k: meta[k] for k in _META_ORDER if k in meta}
        if len(ordered) != len(meta):
            ordered.update((k, v) for k, v in meta.items() if k not in ordered)
        meta = ordered
    out: dict[str, Any] = {}
    for k in ("kind", "apiVersion"):
        if k in obj:
            out[k] = obj[k]
    if meta is not None:
        out["metadata"] = meta
    for k, v in obj.items():
        if k not in out and k != "status":
            out[k] = v
    if "status" in obj:
        out["status"] = obj["status"]
    return out


def _strip_times(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    mfs = meta.get("managedFields")
    if not mfs:
        return obj
    out = dict(obj)
    out["metadata"] = dict(meta, managedFields=[{k: v for k, v in e.items() if k != "time"} for e in mfs])
    return out


def _invalid_name(rtype: types.ResourceType, name: str, namespace_like: bool) -> dict[str, str] | None:
    if namespace_like:
        if len(name) > 63 or not _DNS_LABEL.match(name):
            return status.field_cause(
                "FieldValueInvalid",
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case alphanumeric '
                "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
                "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            )
        return None
    if rtype.group == "rbac.authorization.k8s.io":
        if "/" in name or "%" in name or name in (".", ".."):
            return status.field_cause(
                "FieldValueInvalid", "metadata.name", f"Invalid value: \"{name}\": may not contain '/'"
            )
        return None
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return status.field_cause(
            "FieldValueInvalid",
            "metadata.name",
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
            "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
            "'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    return None


Hook = Callable[["Cluster", Event], None]


class Cluster:
    """One simulated cluster's state. Methods raise `status.ApiError` for every refused request."""

    def __init__(
        self,
        name: str,
        *,
        index: int = 0,
        start_rv: int | None = None,
        registry: types.Registry | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.name = name
        self.index = index
        self.registry = registry or types.Registry()
        self.settings = settings or Settings()
        # Distinct starting points per cluster, so mixing resourceVersions across clusters is caught;
        # `Settings.rv_base` above 2**31 catches clients that parse them into 32-bit integers.
        self.rv = start_rv if start_rv is not None else self.settings.rv_base + 10_000 * index
        self.compacted_rv = self.rv
        self.types: dict[tuple[str, str], TypeState] = {}
        self.hooks: list[Hook] = []  # called after every committed event (controllers)
        self.finalizer_hooks: list[Hook] = []  # called when an object gets a deletionTimestamp
        # Create admission (raise status.ApiError to refuse) and finalizers added on first DELETE
        # (fleet.sim.crds: creates of a terminating CRD's resources, the CRD cleanup finalizer).
        self.create_admission: list[Callable[[types.ResourceType, str, str], None]] = []
        self.deletion_finalizers: list[Callable[[types.ResourceType, Stored], list[str]]] = []
        self._terminating_ns: set[str] = set()
        self.ca_pem: bytes | None = None  # the serving CA (with --tls), published in kube-root-ca.crt
        self.allocator = allocation.Allocator()  # Service cluster IPs and node ports (fleet.sim.rest.writes)
        self._ns_cleanup_queued: set[str] = set()
        for ns in DEFAULT_NAMESPACES:
            ns_type = self.registry.get("", "v1", "namespaces")
            assert ns_type is not None
            self.create(ns_type, "", {"metadata": {"name": ns}}, manager="kube-apiserver")

    # ----- lookups -------------------------------------------------------------------------------

    def state(self, rtype: types.ResourceType) -> TypeState:
        ts = self.types.get(rtype.key)
        if ts is None:
            # Nothing of this resource happened since the last compaction: history reaches back that far.
            ts = TypeState(rtype, self.compacted_rv)
            self.types[rtype.key] = ts
        return ts

    def namespace_phase(self, ns: str) -> str | None:
        """ "Active", "Terminating" or None when the namespace does not exist."""
        ns_state = self.types.get(("", "namespaces"))
        stored = ns_state.objects.get(ns) if ns_state else None
        if stored is None:
            return None
        return "Terminating" if stored.obj["metadata"].get("deletionTimestamp") else "Active"

    def get(self, rtype: types.ResourceType, namespace: str, name: str) -> Stored:
        stored = self.state(rtype).objects.get(storage_key(namespace, name))
        if stored is None:
            raise status.not_found(rtype, name)
        return stored

    def find(self, rtype: types.ResourceType, namespace: str, name: str) -> Stored | None:
        return self.state(rtype).objects.get(storage_key(namespace, name))

    async def wait_for_rv(self, target: int) -> bool:
        """Wait (up to `rv_wait` seconds) until the cluster's RV reaches `target`."""
        deadline = time.monotonic() + self.settings.rv_wait
        while self.rv < target:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def too_large(self, target: int) -> status.ApiError:
        return status.timeout(
            f"Too large resource version: {target}, current: {self.rv}",
            retry_after=1,
            causes=[{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        )

    def _snapshot(self, ts: TypeState, at: int) -> dict[str, Stored] | None:
        """The objects of a resource as they were at RV `at`, or None when history no longer reaches it."""
        if at >= self.rv:
            return ts.objects
        if at < ts.since_rv or at < self.compacted_rv:
            return None
        state = dict(ts.objects)
        for ev in reversed(ts.history):
            if ev.rv <= at:
                break
            key = storage_key(ev.ns, ev.name)
            if ev.type == ADDED:
                state.pop(key, None)
            elif ev.prev is not None:
                state[key] = ev.prev
        return state

    def list(
        self,
        rtype: types.ResourceType,
        namespace: str | None,
        *,
        labels: selectors.LabelSelector = selectors.EVERYTHING,
        fields: selectors.FieldSelector = selectors.NO_FIELDS,
        limit: int = 0,
        continue_token: str = "",
        at: int | None = None,
        exact: bool = False,
    ) -> ListResult:
        """A (possibly paginated) list. `at`/`exact` come from the RV semantics the caller resolved."""
        ts = self.state(rtype)
        start = ""
        inconsistent = False
        if continue_token:
            snap_rv, start = decode_continue(continue_token)
            if snap_rv == -1:
                snap_rv = self.rv
                inconsistent = True
            snapshot = self._snapshot(ts, snap_rv)
            if snapshot is None:
                new_token = encode_continue(-1, start)
                raise status.expired(
                    "The provided continue parameter is too old to display a consistent list result. You can "
                    "start a new list without the continue parameter, or use the continue token in this "
                    "response to retrieve the remainder of the results. Continuing with the provided token "
                    "results in an inconsistent list - objects that were created, modified, or deleted between "
                    "the time the first chunk was returned and now may show up in the list.",
                    metadata={"continue": new_token},
                )
        elif exact and at is not None:
            snap_rv = at
            snapshot = self._snapshot(ts, at)
            if snapshot is None:
                raise status.expired("The resourceVersion for the provided list is too old.")
        else:
            snap_rv = self.rv
            snapshot = ts.objects
        if snapshot is ts.objects:
            keys = ts.sorted_keys()
        else:
            keys = sorted(snapshot)
        if namespace:
            prefix = namespace + "/"
            keys = [k for k in keys if k.startswith(prefix)]
        if start:
            keys = keys[bisect.bisect_left(keys, start) :]
        filtered = not labels.empty or not fields.empty
        items: list[Stored] = []
        token = ""
        remaining: int | None = None
        last_key = ""
        for i, key in enumerate(keys):
            stored = snapshot[key]
            if filtered and not (
                labels.matches(stored.obj.get("metadata", {}).get("labels")) and fields.matches(stored.obj)
            ):
                continue
            if limit and len(items) >= limit:
                token = encode_continue(-1 if inconsistent else snap_rv, last_key + "\x00")
                if not filtered:
                    remaining = len(keys) - i
                break
            items.append(stored)
            last_key = key
        return ListResult(items=items, rv=snap_rv, continue_token=token, remaining=remaining)

    # ----- commits --------------------------------------------------------------------------------

    def _commit(
        self,
        rtype: types.ResourceType,
        etype: str,
        namespace: str,
        name: str,
        obj: dict[str, Any] | None,
        prev: Stored | None,
    ) -> Stored:
        """rv += 1, store, record history, fan out to watchers, run hooks. Returns the event's object."""
        ts = self.state(rtype)
        self.rv += 1
        rv = self.rv
        key = storage_key(namespace, name)
        if etype == DELETED:
            assert prev is not None
            new = _with_rv(prev, rv)
            ts.pop(key)
        else:
            assert obj is not None
            obj["metadata"]["resourceVersion"] = str(rv)
            new = Stored(_order(obj), rv)
            ts.put(key, new)
        at = time.monotonic()
        event = Event(rv, etype, namespace, name, new, prev, at)
        history = ts.history
        if len(history) >= self.settings.history:
            ts.since_rv = history.popleft().rv
        horizon = at - self.settings.history_seconds
        while history and history[0].at < horizon:
            ts.since_rv = history.popleft().rv
        history.append(event)
        if ts.watchers:
            self._fan_out(ts, event)
        for hook in self.hooks:
            hook(self, event)
        if etype == DELETED and namespace in self._terminating_ns:
            # Content of a terminating namespace went away: the namespace controller looks again.
            if namespace not in self._ns_cleanup_queued:
                self._ns_cleanup_queued.add(namespace)
                self._schedule(self._namespace_cleanup, namespace)
        return new

    def _fan_out(self, ts: TypeState, event: Event) -> None:
        cache: dict[str, bytes] = {}
        new, prev = event.new, event.prev
        assert new is not None
        left: Stored | None = None  # the previous state at the new RV, for watchers the object left
        for w in list(ts.watchers):
            if w.namespace and w.namespace != event.ns:
                continue
            if event.type == ADDED or event.type == DELETED:
                if w.matches(new):
                    w.push(w.encoded(event.type, new, cache))
            else:
                now_m = w.matches(new)
                was_m = prev is not None and w.matches(prev)
                if now_m and was_m:
                    w.push(w.encoded(MODIFIED, new, cache))
                elif now_m:
                    w.push(w.encoded(ADDED, new, cache))
                elif was_m:
                    assert prev is not None
                    if left is None:
                        left = _with_rv(prev, event.rv)
                    w.push(w.encoded(DELETED, left, cache))

    # ----- watches --------------------------------------------------------------------------------

    def watch(
        self,
        rtype: types.ResourceType,
        namespace: str | None,
        *,
        labels: selectors.LabelSelector,
        fields: selectors.FieldSelector,
        since: int | None,
        initial_events_end: bool = False,
        encode: Callable[[str, Stored], bytes] | None = None,
    ) -> Watcher:
        """Register a watcher. `since` None: synthetic ADDED of the current state first; else resume.

        A resume point older than the retained history yields a watcher holding only the 410 ERROR
        event (HTTP 200, as the real cacher answers); the caller must already have waited for RVs
        ahead of the current one.
        """
        ts = self.state(rtype)
        w = Watcher(
            rtype=rtype,
            namespace=namespace,
            labels=labels,
            fields=fields,
            max_queue=self.settings.watch_queue,
        )
        w.encode = encode
        if since is None:
            keys = ts.sorted_keys()
            if namespace:
                prefix = namespace + "/"
                keys = [k for k in keys if k.startswith(prefix)]
            for key in keys:
                stored = ts.objects[key]
                if w.matches(stored):
                    w.queue.append(w.encoded(ADDED, stored))
            w.max_queue = max(w.max_queue, len(w.queue) + self.settings.watch_queue)
            if initial_events_end:
                w.queue.append(self.bookmark(rtype, initial_end=True))
        elif since > self.rv:
            w.queue.append(error_event(self.too_large(since).status))
            w.close_after_drain = True
            return w
        elif since < ts.since_rv or since < self.compacted_rv:
            oldest = max(ts.since_rv, self.compacted_rv) + 1
            w.queue.append(
                error_event(status.status(410, "Expired", f"too old resource version: {since} ({oldest})"))
            )
            w.close_after_drain = True
            return w
        else:
            for ev in ts.history:
                if ev.rv <= since:
                    continue
                if namespace and ev.ns != namespace:
                    continue
                self._replay(w, ev)
            w.max_queue = max(w.max_queue, len(w.queue) + self.settings.watch_queue)
        ts.watchers.add(w)
        w.wake.set()
        return w

    def _replay(self, w: Watcher, ev: Event) -> None:
        new, prev = ev.new, ev.prev
        assert new is not None
        if ev.type == MODIFIED:
            now_m, was_m = w.matches(new), prev is not None and w.matches(prev)
            if now_m and was_m:
                w.queue.append(w.encoded(MODIFIED, new))
            elif now_m:
                w.queue.append(w.encoded(ADDED, new))
            elif was_m and prev is not None:
                w.queue.append(w.encoded(DELETED, _with_rv(prev, ev.rv)))
        elif w.matches(new):
            w.queue.append(w.encoded(ev.type, new))

    def unwatch(self, w: Watcher) -> None:
        w.close()
        ts = self.types.get(w.rtype.key)
        if ts is not None:
            ts.watchers.discard(w)

    def watchers(self) -> Iterable[Watcher]:
        for ts in self.types.values():
            yield from ts.watchers

    def bookmark(self, rtype: types.ResourceType, *, initial_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return (
            orjson.dumps(
                {
                    "type": "BOOKMARK",
                    "object": {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta},
                }
            )
            + b"\n"
        )

    def compact(self) -> int:
        """Forget all watch history now: resumes and lists at older RVs get 410."""
        for ts in self.types.values():
            ts.history.clear()
            ts.since_rv = self.rv
        self.compacted_rv = self.rv
        return self.rv

    # ----- write path -----------------------------------------------------------------------------

    def new_uid(self) -> str:
        return str(uuid.uuid4())

    def _check_namespace(
        self, rtype: types.ResourceType, namespace: str, name: str, *, creating: bool
    ) -> None:
        if not rtype.namespaced:
            return
        phase = self.namespace_phase(namespace)
        if phase is None:
            raise status.namespace_not_found(namespace)
        if creating and phase == "Terminating":
            raise status.forbidden(
                rtype,
                name,
                f"unable to create new content in namespace {namespace} because it is being terminated",
                causes=[
                    {
                        "reason": "NamespaceTerminating",
                        "message": f"namespace {namespace} is being terminated",
                        "field": "metadata.namespace",
                    }
                ],
            )

    def prepare_create(
        self, rtype: types.ResourceType, namespace: str, obj: dict[str, Any]
    ) -> dict[str, Any]:
        """Checks and server-set fields of a create (PrepareForCreate + BeforeCreate); no store access."""
        obj["apiVersion"] = rtype.api_version
        obj["kind"] = rtype.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise status.bad_request("metadata must be an object")
        if rtype.namespaced:
            body_ns = meta.get("namespace") or ""
            if body_ns and namespace and body_ns != namespace:
                raise status.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace or body_ns
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise status.internal("resourceVersion should not be set on objects to be created")
        name = meta.get("name") or ""
        if not name:
            prefix = meta.get("generateName") or ""
            if not prefix:
                raise status.invalid(
                    rtype.kind,
                    "",
                    [
                        status.field_cause(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )
                    ],
                    group=rtype.group,
                )
            name = prefix + "".join(random.choice(GENERATE_ALPHABET) for _ in range(5))
            meta["name"] = name
        cause = _invalid_name(rtype, name, rtype.kind == "Namespace")
        if cause is not None:
            raise status.invalid(rtype.kind, name, [cause], group=rtype.group)
        if rtype.namespaced and not meta["namespace"]:
            raise status.bad_request(
                "the server could not find the requested resource: namespace is required"
            )
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        meta["uid"] = self.new_uid()
        meta["creationTimestamp"] = now()
        if rtype.generation or rtype.custom:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if rtype.custom:
            if rtype.has_status:
                obj.pop("status", None)
        elif rtype.kind == "Namespace":
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                spec["finalizers"] = ["kubernetes"]
            obj["status"] = {"phase": "Active"}
        elif rtype.kind == "Pod" and rtype.group == "":
            obj["status"] = {"phase": "Pending", "qosClass": pod_qos(obj)}
        elif rtype.has_status:
            obj["status"] = {}
        return obj

    def create(
        self,
        rtype: types.ResourceType,
        namespace: str,
        obj: dict[str, Any],
        *,
        manager: str,
        dry_run: bool = False,
        prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> WriteResult:
        """POST: returns 201 with the stored object. `prepare` runs field management + defaulting."""
        obj = self.prepare_create(rtype, namespace, obj)
        meta = obj["metadata"]
        name = meta["name"]
        ns = meta.get("namespace", "")
        self._check_namespace(rtype, ns, name, creating=True)
        for admit in self.create_admission:
            admit(rtype, ns, name)
        if prepare is not None:
            obj = prepare(obj)
        if self.find(rtype, ns, name) is not None:
            raise status.already_exists(rtype, name)
        if dry_run:
            obj["metadata"].pop("resourceVersion", None)
            return WriteResult(Stored(_order(obj), 0), code=201)
        stored = self._commit(rtype, ADDED, ns, name, obj, None)
        return WriteResult(stored, code=201, mutated=True)

    def prepare_update(
        self,
        rtype: types.ResourceType,
        old: Stored,
        new: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """PrepareForUpdate + BeforeUpdate: what the server keeps whatever the client sent."""
        old_obj = old.obj
        old_meta = old_obj["metadata"]
        if subresource == "status":
            result = {k: v for k, v in old_obj.items() if k != "status"}
            result["metadata"] = dict(old_meta)
            if "managedFields" in (new.get("metadata") or {}):
                result["metadata"]["managedFields"] = new["metadata"]["managedFields"]
            if "status" in new:
                result["status"] = new["status"]
            return result
        new["apiVersion"] = rtype.api_version
        new["kind"] = rtype.kind
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        uid = meta.get("uid")
        if uid and uid != old_meta.get("uid"):
            raise status.invalid(
                rtype.kind,
                old_meta["name"],
                [
                    status.field_cause(
                        "FieldValueInvalid", "metadata.uid", f'Invalid value: "{uid}": field is immutable'
                    )
                ],
                group=rtype.group,
            )
        for k in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        meta["name"] = old_meta["name"]
        if rtype.namespaced:
            meta["namespace"] = old_meta.get("namespace", "")
        else:
            meta.pop("namespace", None)
        if not meta.get("managedFields") and old_meta.get("managedFields"):
            meta["managedFields"] = old_meta["managedFields"]
        if old_meta.get("deletionTimestamp"):
            added = [f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
            if added:
                raise status.invalid(
                    rtype.kind,
                    old_meta["name"],
                    [
                        status.field_cause(
                            "FieldValueForbidden",
                            "metadata.finalizers",
                            "Forbidden: no new finalizers can be added if the object is being deleted, "
                            f"found new finalizers {added}",
                        )
                    ],
                    group=rtype.group,
                )
        if rtype.has_status:
            if "status" in old_obj:
                new["status"] = old_obj["status"]
            else:
                new.pop("status", None)
        if rtype.kind == "Namespace":
            new["spec"] = old_obj.get("spec", {})
        return new

    def bump_generation(self, rtype: types.ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
        if not (rtype.generation or rtype.custom):
            return
        skip: tuple[str, ...] = ("metadata", "status") if rtype.has_status else ("metadata",)
        changed = _diff_outside(old, new, skip)
        if not changed and rtype.generation_on_annotations:
            changed = (old["metadata"].get("annotations") or {}) != (new["metadata"].get("annotations") or {})
        if changed:
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1

    def commit_update(
        self,
        rtype: types.ResourceType,
        old: Stored,
        new: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> WriteResult:
        """No-op check, then store + MODIFIED (or the final DELETED once the last finalizer is gone)."""
        meta = new["metadata"]
        meta["resourceVersion"] = old.obj["metadata"].get("resourceVersion", "")
        ordered = _order(new)
        if ordered == old.obj or _strip_times(ordered) == _strip_times(old.obj):
            return WriteResult(old)
        if dry_run:
            return WriteResult(Stored(ordered, old.rv))
        ns = meta.get("namespace", "") if rtype.namespaced else ""
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # store.go errEmptiedFinalizers: one DELETED event (the last stored state); the request
            # still answers 200 with the object it sent.
            gone = self._commit(rtype, DELETED, ns, meta["name"], None, old)
            ordered["metadata"]["resourceVersion"] = str(gone.rv)
            return WriteResult(Stored(ordered, gone.rv), mutated=True)
        stored = self._commit(rtype, MODIFIED, ns, meta["name"], ordered, old)
        return WriteResult(stored, mutated=True)

    def delete(
        self,
        rtype: types.ResourceType,
        namespace: str,
        name: str,
        *,
        dry_run: bool = False,
        propagation: str | None = None,
        precondition_uid: str | None = None,
        precondition_rv: str | None = None,
    ) -> WriteResult:
        old = self.get(rtype, namespace, name)
        meta = old.obj["metadata"]
        if precondition_uid and precondition_uid != meta.get("uid"):
            raise status.conflict(
                rtype,
                name,
                f"Precondition failed: UID in precondition: {precondition_uid}, UID in object meta: {meta.get('uid')}",
            )
        if precondition_rv and precondition_rv != meta.get("resourceVersion"):
            raise status.conflict(
                rtype,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{precondition_rv}, ResourceVersion in object meta: {meta.get('resourceVersion')}",
            )
        ns = namespace if rtype.namespaced else ""
        if rtype.kind == "Namespace" and not rtype.custom:
            return self._delete_namespace(rtype, old, dry_run=dry_run)
        finalizers = list(meta.get("finalizers") or [])
        if (
            propagation == "Foreground"
            and "foregroundDeletion" not in finalizers
            and not meta.get("deletionTimestamp")
        ):
            finalizers.append("foregroundDeletion")
        elif propagation == "Orphan" and "orphan" not in finalizers and not meta.get("deletionTimestamp"):
            finalizers.append("orphan")
        if not meta.get("deletionTimestamp"):
            for extra in self.deletion_finalizers:
                finalizers.extend(f for f in extra(rtype, old) if f not in finalizers)
        if finalizers:
            if meta.get("deletionTimestamp"):
                return WriteResult(old)
            new = old.copy()
            nmeta = new["metadata"]
            nmeta["finalizers"] = finalizers
            nmeta["deletionTimestamp"] = now()
            nmeta["deletionGracePeriodSeconds"] = 0
            if int(nmeta.get("generation") or 0) > 0:
                nmeta["generation"] = int(nmeta["generation"]) + 1
            if dry_run:
                return WriteResult(Stored(_order(new), old.rv))
            stored = self._commit(rtype, MODIFIED, ns, name, new, old)
            for hook in self.finalizer_hooks:
                hook(self, Event(stored.rv, MODIFIED, ns, name, stored, old))
            return WriteResult(stored, mutated=True)
        if dry_run:
            return WriteResult(old, body=None if rtype.return_deleted_object else _success(rtype, old))
        gone = self._commit(rtype, DELETED, ns, name, None, old)
        return WriteResult(
            gone, mutated=True, body=None if rtype.return_deleted_object else _success(rtype, old)
        )

    def _delete_namespace(self, rtype: types.ResourceType, old: Stored, *, dry_run: bool) -> WriteResult:
        name = old.obj["metadata"]["name"]
        if name in UNDELETABLE_NAMESPACES:
            raise status.forbidden(rtype, name, "this namespace may not be deleted")
        if old.obj["metadata"].get("deletionTimestamp"):
            return WriteResult(old)
        new = old.copy()
        new["metadata"]["deletionTimestamp"] = now()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new["status"] = {"phase": "Terminating"}
        if dry_run:
            return WriteResult(Stored(_order(new), old.rv))
        stored = self._commit(rtype, MODIFIED, "", name, new, old)
        self._terminating_ns.add(name)
        self._schedule(self._namespace_cleanup, name)
        return WriteResult(stored, mutated=True)

    def _schedule(self, fn: Callable[..., None], *args: Any, delay: float = 0.0) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            fn(*args)
            return
        if delay:
            loop.call_later(delay, fn, *args)
        else:
            loop.call_soon(fn, *args)

    def _namespace_cleanup(self, ns: str) -> None:
        """The namespace controller: delete the content, then the namespace once nothing is left."""
        self._ns_cleanup_queued.discard(ns)
        ns_type = self.registry.get("", "v1", "namespaces")
        assert ns_type is not None
        current = self.find(ns_type, "", ns)
        if current is None or not current.obj["metadata"].get("deletionTimestamp"):
            self._terminating_ns.discard(ns)
            return
        left = 0
        prefix = ns + "/"
        for ts in list(self.types.values()):
            if not ts.rtype.namespaced:
                continue
            for key in [k for k in ts.sorted_keys() if k.startswith(prefix)]:
                stored = ts.objects.get(key)
                if stored is None:
                    continue
                left += 1
                if not stored.obj["metadata"].get("deletionTimestamp"):
                    try:
                        self.delete(ts.rtype, ns, stored.obj["metadata"]["name"])
                    except status.ApiError:
                        pass
                if key not in ts.objects:
                    left -= 1
        if left:
            return  # objects held by finalizers: their DELETED events bring the controller back (_commit)
        self._terminating_ns.discard(ns)
        self._commit(ns_type, DELETED, "", ns, None, current)


def pod_qos(pod: dict[str, Any]) -> str:
    """The QoS class a Pod is created with (pkg/apis/core/helper/qos): Guaranteed, Burstable or BestEffort."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    containers = [
        c
        for key in ("containers", "initContainers")
        for c in (spec or {}).get(key) or []
        if isinstance(c, dict)
    ]
    any_set = False
    guaranteed = bool(containers)
    for c in containers:
        res = c.get("resources") if isinstance(c.get("resources"), dict) else {}
        requests = (res or {}).get("requests") or {}
        limits = (res or {}).get("limits") or {}
        if requests or limits:
            any_set = True
        for name in ("cpu", "memory"):
            limit = limits.get(name)
            if limit is None or str(requests.get(name, limit)) != str(limit):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _success(rtype: types.ResourceType, old: Stored) -> dict[str, Any]:
    meta = old.obj["metadata"]
    details: dict[str, Any] = {"name": meta["name"]}
    if rtype.group:
        details["group"] = rtype.group
    details["kind"] = rtype.plural
    details["uid"] = meta.get("uid", "")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def error_event(status_body: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": "ERROR", "object": status_body}) + b"\n"
