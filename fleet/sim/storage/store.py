"""The state of one simulated cluster: objects, the resourceVersion counter, watch history and watchers.

Owns: `Cluster` with its per-resource `TypeState` (objects keyed by their storage key, a bounded history
of events, the registered watchers) and its `Settings`; the write path (create, update through
`commit_update`, delete with finalizers, propagation and preconditions, dryRun) with no-op writes that
bump nothing; MVCC lists at an older resourceVersion by undoing history, continue tokens; watch start
positions (synthetic ADDED, resume, 410 after compaction); the hooks the sim's controllers attach
(committed events, create admission, deletion finalizers); the namespace controller (a deleted
namespace's content goes, then the namespace); and the cluster's Service address allocator state
(`fleet.sim.kinds.allocation`, used by the REST layer). Every mutation is a synchronous method, so a
cluster is linearizable on one event loop without locks; only waiting (for a future resourceVersion)
awaits.

Does not: parse HTTP (`fleet.sim.rest`), set what the server keeps on a write
(`fleet.sim.storage.strategy`), encode or fan out watch events (`fleet.sim.storage.watches`), merge
(`fleet.sim.merging`), default (`fleet.sim.preparation`), or journal/fault requests (`fleet.sim.server`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from fleet.sim import status
from fleet.sim.kinds import allocation, customresources, types
from fleet.sim.storage import objects, selectors, strategy, watches

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
UNDELETABLE_NAMESPACES = ("default", "kube-system", "kube-public")


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
    # Each namespace gets ServiceAccount `default` and ConfigMap `kube-root-ca.crt` (controllers.namespaces).
    namespace_defaults: bool = True
    # The sim's own controllers (fleet.sim.controllers: crds, workloads): see docs/sim.md.
    crd_establish_delay: float = 0.0  # seconds from CRD create to Established (and served)
    workload_status: bool = True  # simulate Deployment/StatefulSet/DaemonSet/ReplicaSet/Job status
    workload_delay: float = 1.0  # seconds from a workload's new spec to it being available
    nodes: int = 3  # notional node count (DaemonSet desiredNumberScheduled)


class TypeState:
    """Objects, history and watchers of one resource in one cluster."""

    def __init__(self, rtype: types.ResourceType, since_rv: int) -> None:
        self.rtype = rtype
        self.objects: dict[str, objects.Stored] = {}
        self._sorted: list[str] | None = None
        self.history: deque[objects.Event] = deque()
        self.since_rv = since_rv  # every event with rv > since_rv is in history
        self.watchers: set[watches.Watcher] = set()

    def sorted_keys(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.objects)
        return self._sorted

    def put(self, key: str, stored: objects.Stored) -> None:
        if key not in self.objects:
            self._sorted = None
        self.objects[key] = stored

    def pop(self, key: str) -> None:
        if self.objects.pop(key, None) is not None:
            self._sorted = None


@dataclass
class ListResult:
    items: list[objects.Stored]
    rv: int
    continue_token: str = ""
    remaining: int | None = None


@dataclass
class WriteResult:
    """What a write did: the object to answer with, the HTTP code, and whether state changed."""

    stored: objects.Stored
    code: int = 200
    mutated: bool = False
    body: dict[str, Any] | None = None  # a Status to answer instead of the object (DELETE)
    warnings: list[str] = field(default_factory=list)


def encode_continue(rv: int, start: str) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_URL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _crd_terminating(current: Any, now: str) -> dict[str, Any]:
    out = dict(current) if isinstance(current, dict) else {}
    conditions = [c for c in out.get("conditions") or [] if c.get("type") != "Terminating"]
    conditions.append(
        {
            "type": "Terminating",
            "status": "True",
            "lastTransitionTime": now,
            "reason": "InstanceDeletionPending",
            "message": "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
        }
    )
    out["conditions"] = conditions
    return out


def _default_namespace(name: str) -> dict[str, Any]:
    label = "kubernetes.io/metadata.name"
    fields: dict[str, Any] = {"f:metadata": {"f:labels": {".": {}, f"f:{label}": {}}}}
    entry = {
        "manager": "kube-apiserver",
        "operation": "Update",
        "apiVersion": "v1",
        "time": objects.now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    return {"metadata": {"name": name, "labels": {label: name}, "managedFields": [entry]}}


def _finalized(namespace: dict[str, Any]) -> dict[str, Any]:
    namespace.setdefault("spec", {})["finalizers"] = ["kubernetes"]
    return namespace


def decode_continue(token: str) -> tuple[int, str]:
    """A continue token's resourceVersion and start key; 400 with the real server's messages."""

    def invalid(why: str) -> status.ApiError:
        return status.bad_request(f"invalid continue token: continue key is not valid: {why}")

    raw = token.encode()
    # Go's base64.RawURLEncoding: no padding, the URL-safe alphabet; a lone last character is corrupt.
    bad = next((i for i, b in enumerate(raw) if b not in _URL_SAFE), None)
    if bad is None and len(raw) % 4 == 1:
        bad = len(raw) - 1
    if bad is not None:
        raise invalid(f"illegal base64 data at input byte {bad}")
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as e:
        raise invalid(str(e)) from None
    if not isinstance(data, dict):
        raise invalid("the key is not a JSON object")
    if data.get("v") != "meta.k8s.io/v1":
        raise invalid(f"server does not recognize this encoded version {data.get('v') or ''}")
    try:
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError) as e:
        raise invalid(f"the key holds no {e}") from None


Hook = Callable[["Cluster", objects.Event], None]


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
        # (fleet.sim.controllers.crds: creates of a terminating CRD's resources, the CRD cleanup finalizer).
        self.create_admission: list[Callable[[types.ResourceType, str, str], None]] = []
        self.deletion_finalizers: list[Callable[[types.ResourceType, objects.Stored], list[str]]] = []
        self._terminating_ns: set[str] = set()
        self.ca_pem: bytes | None = None  # the serving CA (with --tls), published in kube-root-ca.crt
        self.allocator = allocation.Allocator()  # Service cluster IPs and node ports (fleet.sim.rest.writes)
        self._ns_cleanup_queued: set[str] = set()
        ns_type = self.registry.get("", "v1", "namespaces")
        assert ns_type is not None
        for ns in DEFAULT_NAMESPACES:  # as kube-apiserver makes them: the name label, its finalizer
            self.create(ns_type, "", _default_namespace(ns), manager="kube-apiserver", prepare=_finalized)

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

    def get(self, rtype: types.ResourceType, namespace: str, name: str) -> objects.Stored:
        stored = self.state(rtype).objects.get(objects.storage_key(namespace, name))
        if stored is None:
            raise status.not_found(rtype, name)
        return stored

    def find(self, rtype: types.ResourceType, namespace: str, name: str) -> objects.Stored | None:
        return self.state(rtype).objects.get(objects.storage_key(namespace, name))

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
            f"Timeout: Too large resource version: {target}, current: {self.rv}",
            retry_after=1,
            causes=[{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        )

    def _snapshot(self, ts: TypeState, at: int) -> dict[str, objects.Stored] | None:
        """The objects of a resource as they were at RV `at`, or None when history no longer reaches it."""
        if at >= self.rv:
            return ts.objects
        if at < ts.since_rv or at < self.compacted_rv:
            return None
        state = dict(ts.objects)
        for ev in reversed(ts.history):
            if ev.rv <= at:
                break
            key = objects.storage_key(ev.ns, ev.name)
            if ev.type == objects.ADDED:
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
        items: list[objects.Stored] = []
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
        prev: objects.Stored | None,
    ) -> objects.Stored:
        """rv += 1, store, record history, fan out to watchers, run hooks. Returns the event's object."""
        ts = self.state(rtype)
        self.rv += 1
        rv = self.rv
        key = objects.storage_key(namespace, name)
        if etype == objects.DELETED:
            assert prev is not None
            new = objects.with_rv(prev, rv)
            ts.pop(key)
        else:
            assert obj is not None
            obj["metadata"]["resourceVersion"] = str(rv)
            new = objects.Stored(objects.order(obj), rv)
            ts.put(key, new)
        at = time.monotonic()
        event = objects.Event(rv, etype, namespace, name, new, prev, at)
        history = ts.history
        if len(history) >= self.settings.history:
            ts.since_rv = history.popleft().rv
        horizon = at - self.settings.history_seconds
        while history and history[0].at < horizon:
            ts.since_rv = history.popleft().rv
        history.append(event)
        if ts.watchers:
            watches.fan_out(ts.watchers, event)
        for hook in self.hooks:
            hook(self, event)
        if etype == objects.DELETED and namespace in self._terminating_ns:
            # Content of a terminating namespace went away: the namespace controller looks again.
            if namespace not in self._ns_cleanup_queued:
                self._ns_cleanup_queued.add(namespace)
                self.schedule(self._namespace_cleanup, namespace)
        return new

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
        encode: Callable[[str, objects.Stored], bytes] | None = None,
    ) -> watches.Watcher:
        """Register a watcher. `since` None: synthetic ADDED of the current state first; else resume.

        A resume point older than the retained history yields a watcher holding only the 410 ERROR
        event (HTTP 200, as the real cacher answers); the caller must already have waited for RVs
        ahead of the current one.
        """
        ts = self.state(rtype)
        w = watches.Watcher(
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
                    w.queue.append(w.encoded(objects.ADDED, stored))
            w.max_queue = max(w.max_queue, len(w.queue) + self.settings.watch_queue)
            if initial_events_end:
                w.queue.append(watches.bookmark(rtype, self.rv, initial_end=True))
        elif since > self.rv:
            # As a real watch cache: no error, the stream waits for the changes after `since`.
            w.after = since
        elif since < ts.since_rv or since < self.compacted_rv:
            oldest = max(ts.since_rv, self.compacted_rv) + 1
            w.queue.append(
                watches.error_event(
                    status.status(410, "Expired", f"too old resource version: {since} ({oldest})")
                )
            )
            w.close_after_drain = True
            return w
        else:
            for ev in ts.history:
                if ev.rv <= since:
                    continue
                if namespace and ev.ns != namespace:
                    continue
                watches.replay(w, ev)
            w.max_queue = max(w.max_queue, len(w.queue) + self.settings.watch_queue)
        ts.watchers.add(w)
        w.wake.set()
        return w

    def unwatch(self, w: watches.Watcher) -> None:
        w.close()
        ts = self.types.get(w.rtype.key)
        if ts is not None:
            ts.watchers.discard(w)

    def watchers(self) -> Iterable[watches.Watcher]:
        for ts in self.types.values():
            yield from ts.watchers

    def compact(self) -> int:
        """Forget all watch history now: resumes and lists at older RVs get 410."""
        for ts in self.types.values():
            ts.history.clear()
            ts.since_rv = self.rv
        self.compacted_rv = self.rv
        return self.rv

    # ----- write path -----------------------------------------------------------------------------

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
        obj = strategy.prepare_create(rtype, namespace, obj)
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
            return WriteResult(objects.Stored(objects.order(obj), 0), code=201)
        stored = self._commit(rtype, objects.ADDED, ns, name, obj, None)
        return WriteResult(stored, code=201, mutated=True)

    def commit_update(
        self,
        rtype: types.ResourceType,
        old: objects.Stored,
        new: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> WriteResult:
        """No-op check, then store + MODIFIED (or the final DELETED once the last finalizer is gone)."""
        meta = new["metadata"]
        meta["resourceVersion"] = old.obj["metadata"].get("resourceVersion", "")
        ordered = objects.order(new)
        if ordered == old.obj or objects.strip_times(ordered) == objects.strip_times(old.obj):
            return WriteResult(old)
        if dry_run:
            return WriteResult(objects.Stored(ordered, old.rv))
        ns = meta.get("namespace", "") if rtype.namespaced else ""
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # store.go errEmptiedFinalizers: one DELETED event (the last stored state); the request
            # still answers 200 with the object it sent.
            gone = self._commit(rtype, objects.DELETED, ns, meta["name"], None, old)
            # ... at the resourceVersion it had: the real store answers before it deletes.
            ordered["metadata"]["resourceVersion"] = old.obj["metadata"].get("resourceVersion", "")
            return WriteResult(objects.Stored(ordered, gone.rv), mutated=True)
        stored = self._commit(rtype, objects.MODIFIED, ns, meta["name"], ordered, old)
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
        if rtype.kind == "Namespace" and not rtype.custom:
            return self._delete_namespace(
                rtype,
                old,
                dry_run=dry_run,
                precondition_uid=precondition_uid,
                precondition_rv=precondition_rv,
            )
        # rest.BeforeDelete (apiserver registry/rest/delete.go) checks the preconditions before anything
        # else of a delete, naming the kind; a precondition sent empty ("") is one, and fails.
        if precondition_uid is not None and precondition_uid != meta.get("uid"):
            raise status.precondition_failed(
                rtype.kind,
                rtype.group,
                name,
                f"the UID in the precondition ({precondition_uid}) does not match the UID in record "
                f"({meta.get('uid')}). The object might have been deleted and then recreated",
            )
        if precondition_rv is not None and precondition_rv != meta.get("resourceVersion"):
            raise status.precondition_failed(
                rtype.kind,
                rtype.group,
                name,
                f"the ResourceVersion in the precondition ({precondition_rv}) does not match the ResourceVersion "
                f"in record ({meta.get('resourceVersion')}). The object might have been modified",
            )
        ns = namespace if rtype.namespaced else ""
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
            nmeta["deletionTimestamp"] = objects.now()
            if customresources.is_definition(rtype):
                # A CRD's own DELETE (apiextensions' REST): no grace period, no new generation, the
                # Terminating condition at once.
                new["status"] = _crd_terminating(new.get("status"), nmeta["deletionTimestamp"])
            else:
                nmeta["deletionGracePeriodSeconds"] = 0
                if int(nmeta.get("generation") or 0) > 0:
                    nmeta["generation"] = int(nmeta["generation"]) + 1
            if dry_run:
                return WriteResult(objects.Stored(objects.order(new), old.rv))
            stored = self._commit(rtype, objects.MODIFIED, ns, name, new, old)
            for hook in self.finalizer_hooks:
                hook(self, objects.Event(stored.rv, objects.MODIFIED, ns, name, stored, old))
            return WriteResult(stored, mutated=True)
        if dry_run:
            return WriteResult(old, body=None if rtype.return_deleted_object else _success(rtype, old))
        gone = self._commit(rtype, objects.DELETED, ns, name, None, old)
        return WriteResult(
            gone, mutated=True, body=None if rtype.return_deleted_object else _success(rtype, old)
        )

    def _delete_namespace(
        self,
        rtype: types.ResourceType,
        old: objects.Stored,
        *,
        dry_run: bool,
        precondition_uid: str | None = None,
        precondition_rv: str | None = None,
    ) -> WriteResult:
        meta = old.obj["metadata"]
        name = meta["name"]
        if name in UNDELETABLE_NAMESPACES:  # admission (NamespaceLifecycle), before the registry
            raise status.forbidden(rtype, name, "this namespace may not be deleted")
        # The namespace registry (pkg/registry/core/namespace/storage) checks the preconditions itself,
        # with its own messages, naming the resource.
        if precondition_uid is not None and precondition_uid != meta.get("uid"):
            why = f"Precondition failed: UID in precondition: {precondition_uid}, UID in object meta: {meta.get('uid')}"
            raise status.conflict(rtype, name, why)
        if precondition_rv is not None and precondition_rv != meta.get("resourceVersion"):
            why = (
                f"Precondition failed: ResourceVersion in precondition: {precondition_rv}, ResourceVersion in "
                f"object meta: {meta.get('resourceVersion')}"
            )
            raise status.conflict(rtype, name, why)
        if old.obj["metadata"].get("deletionTimestamp"):
            return WriteResult(old)
        new = old.copy()
        new["metadata"]["deletionTimestamp"] = objects.now()  # no grace period: namespaces have none
        new["status"] = {"phase": "Terminating"}
        if dry_run:
            return WriteResult(objects.Stored(objects.order(new), old.rv))
        stored = self._commit(rtype, objects.MODIFIED, "", name, new, old)
        self._terminating_ns.add(name)
        self.schedule(self._namespace_cleanup, name)
        return WriteResult(stored, mutated=True)

    def schedule(self, fn: Callable[..., None], *args: Any, delay: float = 0.0) -> None:
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
        self._commit(ns_type, objects.DELETED, "", ns, None, current)


def _success(rtype: types.ResourceType, old: objects.Stored) -> dict[str, Any]:
    meta = old.obj["metadata"]
    details: dict[str, Any] = {"name": meta["name"]}
    if rtype.group:
        details["group"] = rtype.group
    details["kind"] = rtype.plural
    details["uid"] = meta.get("uid", "")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
