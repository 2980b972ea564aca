"""Server-side apply and field ownership: a structured merge over plain dicts.

Owns: `apply` (an `application/apply-patch+yaml` write: merge the applied configuration into the live
object, check conflicts against the other managers' field sets, force, remove what this manager stopped
sending and nobody else owns, record the new ownership) and `update` (a non-apply write: diff old vs new,
give the changed fields to the writer, take them from everybody else, cap Update managers at 10). Both
return the whole new object with `metadata.managedFields` encoded as the real server does
(`fieldsType: FieldsV1`, one entry per manager/operation/subresource, sorted, `time` only moved when that
manager's entry changed). Both raise `ApplyConflict` (409) or `FieldNotDeclared` (500). The semantics
follow kubernetes-sigs/structured-merge-diff (merge, prune with "add back owned and dangling items",
compare: `fleet.sim.merging.structured`) and apimachinery's managedfields package (strip meta, reset
fields, conflict messages here; entries and capping: `fleet.sim.merging.managedfields`); see
`docs/sim.md`, "Server-side apply".

Does not: parse request bodies, check preconditions, resourceVersion, names or namespaces, default or
canonicalise values (`fleet.sim.kinds.defaults`, called by the server on the result), prune unknown fields of
custom resources, or store anything. Pure functions: inputs are never mutated; the results share
unchanged subtrees with `live`/`new`, so callers must treat stored objects as immutable (replace, never
edit in place, below `metadata`).
"""

from __future__ import annotations

from typing import Any

from fleet.core import errors
from fleet.sim.kinds import structure as structure_mod
from fleet.sim.merging import fieldsets, managedfields, structured
from fleet.sim.merging.fieldsets import Trie
from fleet.sim.merging.managedfields import Entry
from fleet.sim.merging.structured import EMPTIED, MISSING, FieldNotDeclared

# Config metadata the server never takes from an apply body (kept from the live object).
_DROP_FROM_CONFIG = frozenset(
    {
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "generation",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)
# Paths never owned by anybody (apimachinery internal/stripmeta.go).
_STRIPPED_META = frozenset(
    {
        "f:name",
        "f:namespace",
        "f:creationTimestamp",
        "f:selfLink",
        "f:uid",
        "f:clusterName",
        "f:generation",
        "f:managedFields",
        "f:resourceVersion",
    }
)


class ApplyConflict(errors.FleetError):
    """An apply would change fields other managers own (HTTP 409, reason Conflict).

    `conflicts`: (manager, field path) pairs such as ``("kubectl", ".spec.replicas")``. `causes`: the
    Status `details.causes` entries, ready to serialise. ``str(e)`` is the Status message.
    """

    def __init__(
        self, message: str, *, conflicts: list[tuple[str, str]], causes: list[dict[str, str]]
    ) -> None:
        super().__init__(message)
        self.conflicts = conflicts
        self.causes = causes


# --------------------------------------------------------------------------------------------------
# Public API


def apply(
    live: dict[str, Any] | None,
    config: dict[str, Any],
    *,
    manager: str,
    force: bool,
    structure: structure_mod.Structure,
    now: str,
    subresource: str | None = None,
) -> dict[str, Any]:
    """The object after `manager` server-side applies `config` to `live` (None: create)."""
    if not isinstance(config, dict):
        raise FieldNotDeclared(f"expected map, got {type(config).__name__}")
    root = structure.root
    cfg = _prepare_config(config, structure, subresource)
    # Pruning sees the whole applied set (metadata.name keeps `metadata` alive); what is stored and
    # compared with other managers has the never-owned paths stripped, as apimachinery does.
    cfg_full = structured.field_set(cfg, root, "")
    cfg_set = _strip_meta(cfg_full)
    live_obj: dict[str, Any] = live or {}
    entries = managedfields.entries_of(live_obj)
    api_version = str(cfg.get("apiVersion") or live_obj.get("apiVersion") or "")
    mine = Entry(manager, "Apply", api_version, None, subresource or "", cfg_set, None)
    previous = next((e for e in entries if e.key == mine.key), None)
    others = [e for e in entries if e.key != mine.key]

    merged = structured.merge(live_obj, cfg, root)
    nulls: list[tuple[dict[str, Any], str]] = []
    if previous is not None and previous.fields:
        merged = structured.prune(merged, previous.fields, cfg_full, [e.fields for e in others], root, nulls)
        if merged is EMPTIED:  # pragma: no cover - metadata.name always remains
            merged = {}

    changed_others: dict[int, Trie | None] = {}
    if others:
        add: Trie = {}
        mod: Trie = {}
        rem: Trie = {}
        structured.compare(live_obj, merged, root, add, mod, rem, structure.strategic)
        touched = fieldsets.set_union(_strip_meta(add), _strip_meta(mod))
        removed = _strip_meta(rem)
        conflicts: list[tuple[Entry, Trie]] = []
        for i, other in enumerate(others):
            clash = fieldsets.set_intersection(other.fields, touched) or None
            if clash is not None:
                conflicts.append((other, clash))
            rest = other.fields
            if clash is not None:
                rest = fieldsets.set_difference(rest, clash)
            if removed:
                rest = fieldsets.set_difference(rest, removed)
            if rest is not other.fields:
                changed_others[i] = rest if fieldsets.has_members(rest) else None
        if conflicts and not force:
            raise _conflict_error(conflicts)
    for parent, key in nulls:
        if parent.get(key, MISSING) is None:
            del parent[key]

    # The applier's time moves only when the object changed (managedfieldsupdater.go); a new entry
    # for an apply that changed nothing has no time, as on the real server.
    object_changed = live is None or not structured.equal_except_managed_fields(live_obj, merged)
    if object_changed:
        mine.time = now
    elif previous is not None:
        mine.time = previous.time
        if previous.api_version == api_version and _same_set(previous.fields, cfg_set):
            mine.fields = previous.fields
            mine.raw = previous.raw

    result_entries: list[Entry] = []
    for i, other in enumerate(others):
        if i in changed_others:
            remaining = changed_others[i]
            if remaining is None:
                continue
            other = Entry(
                other.manager,
                other.operation,
                other.api_version,
                other.time,
                other.subresource,
                remaining,
                None,
            )
        result_entries.append(other)
    if mine.fields:
        result_entries.append(mine)
    result_entries = managedfields.cap(result_entries)
    return managedfields.with_managed_fields(merged, live_obj, result_entries)


def update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    structure: structure_mod.Structure,
    now: str | None,
    subresource: str | None = None,
) -> dict[str, Any]:
    """The object after a non-apply write (create, update, patch) by `manager`: ownership moves.

    For types with a status subresource, a write to the main resource keeps the old `.status` (a
    create drops it) and a write to ``subresource="status"`` keeps everything but `.status`.
    Undeclared fields are not tracked (the server prunes or rejects them).
    """
    root = structure.root
    old_obj: dict[str, Any] = old or {}
    new_obj = _reset_for_update(old, new, structure, subresource)
    sent = new.get("metadata", {}).get("managedFields") if isinstance(new.get("metadata"), dict) else None
    if sent == [{}]:
        # The documented way to clear managedFields: the write is not tracked either.
        result = dict(new_obj)
        meta = dict(result.get("metadata") or {})
        meta.pop("managedFields", None)
        result["metadata"] = meta
        return result
    entries: list[Entry] | None = None
    old_meta = old_obj.get("metadata")
    stored = old_meta.get("managedFields") if isinstance(old_meta, dict) else None
    if isinstance(sent, list) and sent and sent != stored:
        # A client sent other managedFields (a non-empty list replaces the stored one when valid).
        try:
            entries = managedfields.decode_entries(sent)
        except (fieldsets.InvalidFieldSet, ValueError):
            entries = None
    if entries is None:
        entries = managedfields.entries_of(old_obj)

    add: Trie = {}
    mod: Trie = {}
    rem: Trie = {}
    structured.compare(old_obj, new_obj, root, add, mod, rem, structure.strategic)
    touched = fieldsets.set_union(_strip_meta(add), _strip_meta(mod))
    removed = _strip_meta(rem)
    api_version = str(new_obj.get("apiVersion") or old_obj.get("apiVersion") or "")
    mine_key = (manager, "Update", subresource or "", api_version)

    result_entries: list[Entry] = []
    previous: Entry | None = None
    for entry in entries:
        if entry.key == mine_key:
            previous = entry
            continue
        rest = entry.fields
        if touched:
            rest = fieldsets.set_difference(rest, touched)
        if removed:
            rest = fieldsets.set_difference(rest, removed)
        if rest is not entry.fields:
            if not fieldsets.has_members(rest):
                continue
            entry = Entry(
                entry.manager, entry.operation, entry.api_version, entry.time, entry.subresource, rest, None
            )
        result_entries.append(entry)
    if previous is not None or touched:
        prev_fields: Trie = previous.fields if previous is not None else {}
        if removed and prev_fields:
            prev_fields = fieldsets.set_difference(prev_fields, removed)
        if touched:
            fields = fieldsets.set_union(prev_fields, touched)
            time: str | None = now
        else:
            fields = prev_fields
            time = previous.time if previous is not None else now
        if fieldsets.has_members(fields):
            raw = previous.raw if previous is not None and fields is previous.fields else None
            result_entries.append(Entry(manager, "Update", api_version, time, subresource or "", fields, raw))
    result_entries = managedfields.cap(result_entries)
    return managedfields.with_managed_fields(new_obj, old_obj, result_entries)


def managed_fields_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The managedFields entries of an object ([] when none)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("managedFields"), list):
        return list(meta["managedFields"])
    return []


# --------------------------------------------------------------------------------------------------
# Preparing inputs


def _prepare_config(
    config: dict[str, Any], structure: structure_mod.Structure, subresource: str | None
) -> dict[str, Any]:
    cfg = config
    meta = cfg.get("metadata")
    if isinstance(meta, dict) and not _DROP_FROM_CONFIG.isdisjoint(meta):
        cfg = dict(cfg)
        cfg["metadata"] = {k: v for k, v in meta.items() if k not in _DROP_FROM_CONFIG}
    if structure.status_subresource:
        if subresource is None and "status" in cfg:
            cfg = {k: v for k, v in cfg.items() if k != "status"}
        elif subresource == "status":
            kept: dict[str, Any] = {k: cfg[k] for k in ("apiVersion", "kind", "status") if k in cfg}
            meta = cfg.get("metadata")
            if isinstance(meta, dict):
                kept["metadata"] = {k: meta[k] for k in ("name", "namespace") if k in meta}
            cfg = kept
    return cfg


def _reset_for_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    structure: structure_mod.Structure,
    subresource: str | None,
) -> dict[str, Any]:
    if not structure.status_subresource:
        return new
    if subresource is None:
        old_status = old.get("status", MISSING) if old else MISSING
        if new.get("status", MISSING) is old_status:
            return new
        out = {k: v for k, v in new.items() if k != "status"}
        if old_status is not MISSING:
            out["status"] = old_status
        return out
    if subresource == "status" and old is not None:
        out = {k: v for k, v in old.items() if k != "status"}
        if "status" in new:
            out["status"] = new["status"]
        meta = new.get("metadata")
        if isinstance(meta, dict) and "managedFields" in meta and isinstance(out.get("metadata"), dict):
            out["metadata"] = {**out["metadata"], "managedFields": meta["managedFields"]}
        return out
    return new


def _strip_meta(fields: Trie) -> Trie:
    if not fields:
        return fields
    has_meta = "f:metadata" in fields
    if not has_meta and "f:apiVersion" not in fields and "f:kind" not in fields:
        return fields
    out = {k: v for k, v in fields.items() if k not in ("f:apiVersion", "f:kind", "f:metadata")}
    if has_meta:
        meta = fields["f:metadata"]
        kept = {k: v for k, v in meta.items() if k not in _STRIPPED_META and k != fieldsets.DOT}
        if kept:
            out["f:metadata"] = kept
    if "." in out and len(out) == 1:
        return {}
    return out


def _same_set(a: Trie, b: Trie) -> bool:
    return a is b or a == b


def _conflict_error(conflicts: list[tuple[Entry, Trie]]) -> ApplyConflict:
    pairs: list[tuple[Entry, str]] = []
    for entry, clash in sorted(conflicts, key=lambda c: c[0].display()):
        paths = sorted(fieldsets.members(clash), key=lambda p: tuple(fieldsets.sort_key(k) for k in p))
        pairs.extend((entry, fieldsets.path_text(p)) for p in paths)
    causes = [
        {"type": "FieldManagerConflict", "message": f"conflict with {entry.display()}", "field": path}
        for entry, path in pairs
    ]
    if len(pairs) == 1:
        entry, path = pairs[0]
        message = f"Apply failed with 1 conflict: conflict with {entry.display()}: {path}"
    else:
        lines: list[str] = []
        seen: list[str] = []
        by_manager: dict[str, list[str]] = {}
        for entry, path in pairs:
            name = entry.display()
            if name not in by_manager:
                seen.append(name)
                by_manager[name] = []
            by_manager[name].append(path)
        for name in sorted(seen):
            lines.append(f"conflicts with {name}:")
            lines.extend(f"- {p}" for p in by_manager[name])
        message = f"Apply failed with {len(pairs)} conflicts: " + "\n".join(lines)
    return ApplyConflict(
        message,
        conflicts=[(entry.manager, path) for entry, path in pairs],
        causes=causes,
    )
