"""Which bundles a round of `fleet serve` plans: those that can have work (docs/reconcile.md, "What a round
plans").

Owns: `Memory`, one per cluster, kept across rounds by `fleet serve` (`reconcile_cluster(memory=...)`):
what the rounds of the cluster established per bundle (the target it was planned for, its result when
Synced or Suspended, the objects it names: desired, in its inventory, the inventory itself, its
namespace), the cluster's watch cache and its change mark (`ObjectCache.changes`) taken just before the
last round read, the kinds read and the type table. `Memory.scope` says which bundles a round on that
cache may plan alone: those whose target changed since, whose objects the cache saw change since (a watch
event: another writer, drift, a status, a delete; fleet's own apply answers are not changes), which were
not Synced (Failed, Progressing, Pending, unknown) and those that depend on any of these; None (plan
every bundle) when there is no earlier round on this cache, a kind read last time is not fresh now (a
gap: 410, relist, reconnect), the change log does not reach back, a bundle is no longer placed, or an
object of fleet's changed that no bundle names. A round that read every kind from the server while no
cache could take its mark keeps what it read (object -> resourceVersion per kind); the first round on the
cache compares the cache's first lists with it instead of planning every bundle (after a start, the first
commit's round). `Memory.carried` is a skipped bundle's result: what it was.

Does not: read or write anything (`fleet.cluster.rounds` calls it around its read and plan, and still
plans again from the server whatever it would delete, forget, refuse or report as a conflict), or decide
what a round verifies from the server (`fleet.controller.runtime.may_use_cache`: a resync, a retry, a
person's request read the server and plan everything).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from fleet.clients import kube
from fleet.cluster import apply, reading
from fleet.cluster import cache as cache_mod
from fleet.cluster.results import BundleResult
from fleet.core import inventory as inventory_mod
from fleet.core import model, plan

Kind = tuple[str, str, str]  # (group, kind, version) as the cache answers it


def target_key(t: plan.Target) -> tuple[object, ...]:
    """What a bundle's plan depends on in its target (the content by its hash)."""
    d = t.desired
    return (
        (d.hash, d.namespace) if d is not None else None,
        t.error,
        t.suspended,
        t.prune,
        t.allow_empty,
        t.adopt,
        t.depends_on,
    )


@dataclass(frozen=True)
class _Known:
    target: tuple[object, ...]
    result: BundleResult


class Memory:
    """What the rounds of one cluster established (see the module docstring)."""

    def __init__(self) -> None:
        # The cluster's watch cache, set by its owner whether a round reads it or not: a round that reads
        # the server (a resync) takes its mark there too, so the rounds after it on the cache are scoped.
        self.watched: cache_mod.ObjectCache | None = None
        # Whether a cache may come (set by its owner): a round that read the server while no cache could
        # take its mark keeps what it read, for the first round on the cache (`_first_on`).
        self.keeps_reads = True
        self.forget()

    def forget(self) -> None:
        """The next round plans every bundle (after a round that stopped, or was stopped)."""
        self._cache: cache_mod.ObjectCache | None = None
        self._mark: int | None = None
        self._kinds: frozenset[Kind] = frozenset()
        self._types: kube.TypeTable | None = None
        self._known: dict[str, _Known] = {}  # bundles Synced (or Suspended) as their target asks
        self._keys: dict[str, frozenset[plan.Key]] = {}  # the objects each bundle names
        self._index: dict[plan.Key, set[str]] = {}
        self._unplaced = False  # the last round met bundles not placed here (removed, another source's)
        # What the last round read from the server, per kind read, object -> resourceVersion (its own
        # writes' answers in): kept only while no cache holds a mark from before that read.
        self._read: dict[Kind, dict[plan.Key, str]] | None = None

    def scope(
        self,
        targets: Mapping[str, plan.Target],
        cache: cache_mod.ObjectCache | None,
        *,
        instance: str,
        source: str | None,
    ) -> frozenset[str] | None:
        """The bundles of `targets` a round reading `cache` now plans, or None: every one."""
        if cache is None or self._unplaced:
            return None
        if not all(cache.fresh(g, k, v) for g, k, v in self._kinds):
            return None
        changed = None
        if cache is self._cache and self._mark is not None:
            changed = cache.changed_since(self._mark)
        if changed is None:
            changed = self._first_on(cache)
        if changed is None or any(b not in targets for b in self._keys):
            return None
        record = (
            _cm_key(inventory_mod.record_name(instance=instance, source=source))
            if source is not None
            else None
        )
        dirty: set[str] = set()
        for k in changed:
            owners = self._index.get(k)
            if owners:
                dirty |= owners
            elif k == record or (k[0], k[1]) == ("", "Namespace"):
                continue  # the record is read at every round; a namespace no bundle names is no work
            else:
                return None  # an object of fleet's that no bundle names: plan them all
        for b, t in targets.items():
            known = self._known.get(b)
            if known is None or known.target != target_key(t):
                dirty.add(b)
        grew = True
        while grew:  # what depends on a bundle planned is planned too (it may have to wait for it)
            more = {b for b, t in targets.items() if b not in dirty and any(d in dirty for d in t.depends_on)}
            dirty |= more
            grew = bool(more)
        return frozenset(dirty)

    def _first_on(self, cache: cache_mod.ObjectCache) -> set[plan.Key] | None:
        """What changed since the last round read the server, when that round could take no mark on
        `cache` (there was none yet, or it listed a kind after that mark) and `cache` has listed every kind
        that round read once, after it: those lists against what the round read (and wrote). None when
        that is not known: no such read kept, a kind not read then, or listed again since (a relist)."""
        if self._read is None or set(self._read) != set(self._kinds):
            return None
        changed: set[plan.Key] = set()
        for (g, k, _), versions in self._read.items():
            if cache.lists(g, k) != 1:
                return None
            changed |= cache.differs(g, k, versions)
        return changed

    def fits(self, types: kube.TypeTable) -> bool:
        """Whether a round's read, scoped by `scope`, met the type table the memory was made with."""
        return types is self._types

    def carried(self, bundle: str) -> BundleResult | None:
        """A bundle not planned: its result as the round that planned it last left it, changing nothing."""
        known = self._known.get(bundle)
        return known.result if known is not None else None

    def established(
        self,
        *,
        cache: cache_mod.ObjectCache | None,
        mark: int | None,
        types: kube.TypeTable,
        kinds: Mapping[tuple[str, str], kube.ResourceType],
        scoped: bool,
        instance: str,
        targets: Mapping[str, plan.Target],
        protected: Collection[str],
        cplan: plan.ClusterPlan,
        results: Mapping[str, BundleResult],
        server: reading.Observed | None = None,
        written: Mapping[plan.Key, str] | None = None,
    ) -> None:
        """Take in a round that ran to its end: `cplan` what it planned (`scoped`: only some bundles) for
        `targets` and the `protected` (broken) bundles it met, `results` its bundles' results, `mark` the
        cache's change number before its read; `server`: what it read, when it read every kind from the
        server, and `written` the resourceVersions its writes' answers carried."""
        read = {(rt.group, rt.kind, rt.version) for rt in kinds.values()}
        read |= {_kind(apply.CONFIGMAP), _kind(apply.NAMESPACE)}
        self._kinds = self._kinds | read if scoped else frozenset(read)
        self._cache, self._mark, self._types = cache, (mark if cache is not None else None), types
        self._read = None
        unmarked = (
            cache is None
            or mark is None
            or cache.changed_since(mark) is None
            or any(not cache.lists(g, k) for g, k, _ in read)  # its first list is still to come
        )
        if server is not None and not scoped and unmarked and self.keeps_reads:
            self._read = _versions(server, read, instance=instance, written=written or {})
        # Bundles in no target (no longer placed, another source's, a broken inventory): every round plans
        # everything again until they are gone (they are planned from the server, and a prune may retry).
        self._unplaced = any(b not in targets and b not in protected for b in cplan.bundles)
        for b in [b for b in self._keys if b not in targets]:
            self._name(b, None)
            self._known.pop(b, None)
        for b, p in cplan.bundles.items():
            if b not in targets:
                continue
            refs = {s.ref for s in p.steps} | p.inventory_before | {s.ref for s in p.prune}
            keys = {plan.key(r) for r in refs}
            keys.add(_cm_key(model.inventory_name(instance=instance, bundle=b)))
            if p.namespace:
                keys.add(("", "Namespace", "", p.namespace))
            self._name(b, frozenset(keys))
            result = results.get(b)
            clean = (
                result is not None
                and (
                    (result.state is model.State.SYNCED and p.outcome is plan.Outcome.RUN)
                    or (result.state is model.State.SUSPENDED and p.outcome is plan.Outcome.SUSPENDED)
                )
                and not p.keep
                and not p.conflicts
            )
            if clean and result is not None:
                carried = result if not result.changes.changes else replace(result, changes=model.ChangeSet())
                self._known[b] = _Known(target_key(targets[b]), carried)
            else:
                self._known.pop(b, None)

    def _name(self, bundle: str, keys: frozenset[plan.Key] | None) -> None:
        """The objects `bundle` names are now `keys` (None: it names nothing any more): the index follows,
        changed only where the bundle's objects did."""
        before = self._keys.get(bundle, frozenset())
        if keys == before:
            return
        for k in before - (keys or frozenset()):
            owners = self._index.get(k)
            if owners is not None:
                owners.discard(bundle)
                if not owners:
                    del self._index[k]
        if keys is None:
            self._keys.pop(bundle, None)
            return
        for k in keys - before:
            self._index.setdefault(k, set()).add(bundle)
        self._keys[bundle] = keys


def _versions(
    seen: reading.Observed, kinds: Collection[Kind], *, instance: str, written: Mapping[plan.Key, str]
) -> dict[Kind, dict[plan.Key, str]]:
    """Per kind, the objects a cache of this cluster holds of it (fleet's own; every Namespace) as a round
    read them from the server, at the resourceVersion its writes left them."""
    out: dict[Kind, dict[plan.Key, str]] = {kind: {} for kind in kinds}
    by_kind = {(kind[0], kind[1]): out[kind] for kind in out}

    def put(k: plan.Key, rv: str | None) -> None:
        versions = by_kind.get((k[0], k[1]))
        if versions is not None:
            versions[k] = rv or ""

    for k, obj in seen.live.items():
        meta = obj.get("metadata") or {}
        if k[:2] == ("", "Namespace") or (meta.get("labels") or {}).get(model.LABEL_OWNER) == instance:
            put(k, str(meta.get("resourceVersion") or ""))
    for b, inv in seen.inventories.items():
        put(_cm_key(model.inventory_name(instance=instance, bundle=b)), inv.resource_version)
    for k, rv in written.items():
        put(k, rv)
    return out


def _kind(rt: kube.ResourceType) -> Kind:
    return (rt.group, rt.kind, rt.version)


def _cm_key(name: str) -> plan.Key:
    return ("", "ConfigMap", model.INVENTORY_NAMESPACE, name)
