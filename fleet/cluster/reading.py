"""Reading a cluster for a round: what `plan.plan_cluster` needs, and the health of what was applied.

Owns: `observe` (the cluster's types, this instance's inventories, the live objects the targets and
inventories name, namespaces; with a source, which inventories are another source's, and this source's
revision record; the inventories and the record only once the namespaces show `fleet-system`), `probe_health` and the health waits of a round (judged with a `health.Memory`: what
fleet's apply answers carried into a generation not yet observed). Raises `errors.ClusterError` when
anything cannot be read: an unreadable answer is never an empty cluster. Given the cluster's
`cache.ObjectCache`, each of those reads is answered by it when the kind is fresh there (listed, its
stream open, nothing in doubt), and sent to the server otherwise; `Observed.cached` says whether any was,
`Observed.gaps` whether any kind was not. With `only` (the bundles a round plans, `fleet.cluster.scope`) it
reads the live objects those bundles name (a cached kind answers them one by one, decoding nothing else),
the inventories, namespaces and record as always.
Does not: decide (`fleet.core.plan`) or write (`fleet.cluster.apply`).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from fleet.clients import kube
from fleet.cluster import apply
from fleet.cluster import cache as cache_mod
from fleet.core import health, model, plan
from fleet.core import inventory as inventory_mod

# ----------------------------------------------------------------------------------------------------------
# Reading a cluster


@dataclass
class Observed:
    types: kube.TypeTable
    inventories: dict[str, inventory_mod.Inventory]  # this source's (and those no source wrote)
    broken_inventories: dict[str, str]
    live: dict[plan.Key, Mapping[str, Any]]
    known: set[tuple[str, str]]
    namespaces: set[str]
    foreign: dict[str, inventory_mod.Inventory] = field(default_factory=dict)  # other sources' inventories
    record: inventory_mod.Claim | None = None  # this source's revision record on the cluster
    record_version: str | None = None  # its resourceVersion
    cached: bool = False  # some of it was answered by the watch caches, not read from the server
    gaps: bool = False  # some kind was read from the server: not fresh in the cache (or no cache)
    kinds: dict[tuple[str, str], kube.ResourceType] = field(default_factory=dict)  # the kinds read


async def observe(
    client: kube.Client,
    targets: Mapping[str, plan.Target],
    *,
    instance: str,
    source: str | None = None,
    cache: cache_mod.ObjectCache | None = None,
    only: Collection[str] | None = None,
) -> Observed:
    """Read everything `plan_cluster` needs (with `source`: also which inventories are another source's,
    and this source's revision record), from `cache` where it is fresh, else from the server; with
    `only`, the live objects of those bundles of `targets` (and of inventories of no target) only. Raises
    `errors.ClusterError` when anything cannot be read."""
    found: dict[str, Any] = {}
    namespaces: set[str] = set()
    live: dict[plan.Key, Mapping[str, Any]] = {}
    from_cache: list[str] = []
    from_server: list[str] = []

    def fresh(rt: kube.ResourceType) -> bool:
        return cache is not None and cache.fresh(rt.group, rt.kind, rt.version)

    def cached(rt: kube.ResourceType) -> cache_mod.ObjectCache | None:
        if fresh(rt):
            from_cache.append(rt.kind)
            return cache
        from_server.append(rt.kind)
        return None

    async def discover() -> None:
        found["types"] = await client.types()

    async def record() -> None:
        if source is None:
            return
        if (c := cached(apply.CONFIGMAP)) is not None:
            name = inventory_mod.record_name(instance=instance, source=source)
            doc = c.get("", "ConfigMap", namespace=model.INVENTORY_NAMESPACE, name=name)
            rv = str((doc.get("metadata") or {}).get("resourceVersion") or "") if doc else ""
            found["record"] = (
                (inventory_mod.decode_record(doc, source=source), rv or None) if doc else (None, None)
            )
            return
        found["record"] = await apply.read_record(client, instance=instance, source=source)

    async def inventories_cms() -> None:
        selector = inventory_mod.selector(instance=instance)
        if (c := cached(apply.CONFIGMAP)) is not None:
            labels = cache_mod.parse_selector(selector)
            if only is not None:  # the inventories of the bundles read, not every one
                names = [model.inventory_name(instance=instance, bundle=b) for b in sorted(only)]
                docs = [c.get("", "ConfigMap", namespace=model.INVENTORY_NAMESPACE, name=n) for n in names]
                found["cms"] = [
                    d
                    for d in docs
                    if d is not None
                    and all(
                        ((d.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in labels.items()
                    )
                ]
                return
            found["cms"] = c.objects("", "ConfigMap", namespace=model.INVENTORY_NAMESPACE, labels=labels)
            return
        found["cms"] = await client.list(
            apply.CONFIGMAP, namespace=model.INVENTORY_NAMESPACE, label_selector=selector
        )

    async def all_namespaces() -> None:
        c = cached(apply.NAMESPACE)
        if c is not None and only is not None:  # which exist; an object only where one is named (below)
            namespaces.update(c.names("", "Namespace"))
            found["namespace_objects"] = c
            return
        for obj in c.objects("", "Namespace") if c is not None else await client.list(apply.NAMESPACE):
            namespaces.add(str((obj.get("metadata") or {}).get("name", "")))
            live[plan.key_of(obj)] = obj

    async def fleet_system() -> None:
        await all_namespaces()
        if model.INVENTORY_NAMESPACE not in namespaces:
            # Nothing exists in a namespace that does not: no inventory, no revision record (a writer
            # that makes them meanwhile makes this round's creates of them conflict, never overwrite).
            found["cms"], found["record"] = [], (None, None)
            return
        if fresh(apply.CONFIGMAP):  # both answered from memory: no task for them
            await inventories_cms()
            await record()
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(inventories_cms)
            tg.start_soon(record)

    with kube.unwrap_group():
        if fresh(apply.NAMESPACE) and fresh(apply.CONFIGMAP):  # only discovery may wait (rarely)
            await discover()
            await fleet_system()
        else:
            async with (
                anyio.create_task_group() as tg
            ):  # discovery beside the namespaces, then fleet-system's
                tg.start_soon(discover)
                tg.start_soon(fleet_system)
    types: kube.TypeTable = found["types"]
    decoded, broken = inventory_mod.decode_all(found["cms"], instance=instance)
    inventories, foreign = inventory_mod.split(decoded, source=source)
    record_claim, record_version = found.get("record", (None, None))
    refs: list[model.ObjectRef] = []
    for b, t in targets.items():
        if t.desired is not None and not t.suspended and t.error is None and (only is None or b in only):
            refs.extend(t.desired.refs)
    for b, inv in inventories.items():
        if only is None or b in only or b not in targets:
            refs.extend(inv.refs)
    kinds: dict[tuple[str, str], kube.ResourceType] = {}
    for ref in refs:
        if (ref.group, ref.kind) in kinds:
            continue
        rt = apply.resolve(types, ref)
        if rt is not None:
            kinds[(ref.group, ref.kind)] = rt
    selector = f"{model.LABEL_OWNER}={instance}"
    if (c := found.get("namespace_objects")) is not None:
        for ref in refs:
            if (ref.group, ref.kind) == ("", "Namespace") and ref.name in namespaces:
                obj = c.get("", "Namespace", namespace="", name=ref.name)
                if obj is not None:
                    live[plan.key_of(obj)] = obj

    async def owned(rt: kube.ResourceType) -> None:
        c = cached(rt)
        mine = {model.LABEL_OWNER: instance}
        if c is not None and only is not None:  # the objects named, not every one of the kind
            for ref in {r for r in refs if (r.group, r.kind) == (rt.group, rt.kind)}:
                obj = c.get(rt.group, rt.kind, namespace=ref.namespace, name=ref.name)
                if (
                    obj is not None
                    and ((obj.get("metadata") or {}).get("labels") or {}).get(model.LABEL_OWNER) == instance
                ):
                    live[plan.key_of(obj)] = obj
            return
        objects = c.objects(rt.group, rt.kind, labels=mine) if c is not None else None
        for obj in objects if objects is not None else await client.list(rt, label_selector=selector):
            live[plan.key_of(obj)] = obj

    from_the_server = []
    for (group, kind), rt in kinds.items():
        if (group, kind) == ("", "Namespace"):
            continue
        if fresh(rt):  # answered from memory: no task
            await owned(rt)
        else:
            from_the_server.append(rt)
    if from_the_server:
        with kube.unwrap_group():
            async with anyio.create_task_group() as tg:
                for rt in from_the_server:
                    tg.start_soon(owned, rt)

    # Desired objects we do not own (yet): does something already exist at that name?
    missing: dict[tuple[kube.ResourceType, str], list[model.ObjectRef]] = {}
    for ref in refs:
        k = plan.key(ref)
        rt = kinds.get((ref.group, ref.kind))
        if k in live or rt is None or (ref.kind == "Namespace" and ref.group == ""):
            continue
        if rt.namespaced and ref.namespace not in namespaces:
            continue  # nothing can exist in a namespace that does not
        missing.setdefault((rt, ref.namespace if rt.namespaced else ""), []).append(ref)

    async def probe(rt: kube.ResourceType, namespace: str, wanted: list[model.ObjectRef]) -> None:
        if len(wanted) == 1:
            ref = wanted[0]
            obj = await client.get(rt, namespace=namespace or None, name=ref.name)
            if obj is not None:
                obj.setdefault("apiVersion", rt.api_version)
                obj.setdefault("kind", rt.kind)
                live[plan.key_of(obj)] = obj
            return
        names = {r.name for r in wanted}
        for obj in await client.list(rt, namespace=namespace or None):
            if str((obj.get("metadata") or {}).get("name")) in names:
                live[plan.key_of(obj)] = obj

    if missing:
        with kube.unwrap_group():
            async with anyio.create_task_group() as tg:
                for (rt, namespace), wanted in missing.items():
                    tg.start_soon(probe, rt, namespace, sorted(set(wanted)))
    return Observed(
        types=types,
        inventories=inventories,
        broken_inventories=broken,
        live=live,
        known=set(kinds),
        namespaces=namespaces,
        foreign=foreign,
        record=record_claim,
        record_version=record_version,
        cached=bool(from_cache),
        gaps=bool(from_server),
        kinds=kinds,
    )


# ----------------------------------------------------------------------------------------------------------
# Health


async def wait_health(
    client: kube.Client,
    objects: Mapping[plan.Key, Mapping[str, Any]],
    *,
    instance: str,
    wait: bool,
    within: float,
    interval: float,
    memory: health.Memory | None = None,
) -> tuple[health.Status, tuple[str, ...]]:
    """Assess `objects` (fleet's apply answers, or what it read), re-reading (one list per kind) the
    unhealthy ones until healthy or `within` seconds. `memory` keeps what the objects carried into a
    generation not yet observed (a new one for this wait when None): see `health.Memory`."""
    memory = health.Memory() if memory is None else memory
    current = dict(objects)
    memory.note(current.values(), now=time.time())
    status, messages = memory.summarize(current.values(), now=time.time())
    if not wait or status is not health.Status.PROGRESSING:
        return status, messages
    deadline = time.monotonic() + within
    types = await client.types()
    while time.monotonic() < deadline:
        await anyio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        waiting = {
            k: o
            for k, o in current.items()
            if memory.assess(o, now=time.time()).status is not health.Status.HEALTHY
        }
        kinds = {(k[0], k[1]): model.ObjectRef.of(o) for k, o in waiting.items()}
        for ref in kinds.values():
            rt = apply.resolve(types, ref)
            if rt is None:
                continue
            for obj in await client.list(rt, label_selector=f"{model.LABEL_OWNER}={instance}"):
                k = plan.key_of(obj)
                if k in current:
                    current[k] = obj
        memory.note(current.values(), now=time.time())
        status, messages = memory.summarize(current.values(), now=time.time())
        if status is not health.Status.PROGRESSING:
            break
    return status, messages


async def probe_health(
    client: kube.Client,
    objects: Mapping[model.ObjectRef, Mapping[str, Any]],
    *,
    instance: str,
    memory: health.Memory | None = None,
    cache: cache_mod.ObjectCache | None = None,
) -> tuple[health.Status, tuple[str, ...]]:
    """The live health of these objects now (one list per kind, fleet's owner label, or `cache` where it
    is fresh; nothing written): what a rollout waits for, read without a whole round. An object not
    there yet is Progressing. `memory`: the cluster's `health.Memory`, which the rounds that applied the
    objects filled."""
    memory = health.Memory() if memory is None else memory
    types = await client.types()
    live: dict[plan.Key, Mapping[str, Any]] = {}
    for ref in {(r.api_version, r.kind): r for r in objects}.values():
        rt = apply.resolve(types, ref)
        if rt is None:
            return health.Status.PROGRESSING, (f"{ref.kind}: not served yet",)
        if cache is not None and cache.fresh(rt.group, rt.kind, rt.version):
            items = cache.objects(rt.group, rt.kind, labels={model.LABEL_OWNER: instance})
        else:
            items = await client.list(rt, label_selector=f"{model.LABEL_OWNER}={instance}")
        for obj in items:
            live[plan.key_of(obj)] = obj
    found = [live.get(plan.key(ref)) for ref in objects]
    if any(o is None for o in found):
        return health.Status.PROGRESSING, ("not every object exists yet",)
    now = time.time()
    present = [o for o in found if o is not None]
    memory.note(present, now=now)
    return memory.summarize(present, now=now)
