"""managedFields entries: decoding, encoding, ordering and capping them as the real server does.

Owns: `Entry` (one manager's field set for one operation, apiVersion and subresource, keeping the raw
dict it was read from so unchanged entries are written back as they were), `entries_of` and
`decode_entries` (validating FieldsV1 sent by a client), `with_managed_fields` (the object with its
entries encoded: `fieldsType: FieldsV1`, sorted, the stored list reused when nothing changed) and `cap`
(at most `MAX_UPDATE_MANAGERS` Update entries; the oldest merge into `ancient-changes`).

Does not: decide who owns what (`fleet.sim.merging.ssa`) or walk objects (`fleet.sim.merging.structured`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fleet.sim.merging import fieldsets
from fleet.sim.merging.fieldsets import Trie

MAX_UPDATE_MANAGERS = 10
ANCIENT_CHANGES = "ancient-changes"


@dataclass(slots=True)
class Entry:
    manager: str
    operation: str
    api_version: str
    time: str | None
    subresource: str
    fields: Trie
    raw: dict[str, Any] | None

    @property
    def key(self) -> tuple[str, str, str, str]:
        # Apply entries are one per manager whatever the apiVersion (buildmanagerinfo.go).
        version = "" if self.operation == "Apply" else self.api_version
        return (self.manager, self.operation, self.subresource, version)

    def display(self) -> str:
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text


def entries_of(obj: dict[str, Any]) -> list[Entry]:
    """The entries of a stored object (written by this module, so not validated again)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return []
    raw = meta.get("managedFields")
    if not raw:
        return []
    return decode_entries(raw, validate=False)


def decode_entries(raw: Any, *, validate: bool = True) -> list[Entry]:
    if not isinstance(raw, list):
        raise ValueError("managedFields must be a list")
    out: list[Entry] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError(f"managedFields[{i}] must be an object")
        operation = item.get("operation")
        if operation not in ("Apply", "Update"):
            raise ValueError(f"managedFields[{i}].operation must be Apply or Update")
        if item.get("fieldsType", "FieldsV1") != "FieldsV1":
            raise ValueError(f"managedFields[{i}].fieldsType must be FieldsV1")
        fields_v1 = item.get("fieldsV1") or {}
        fields = fieldsets.decode(fields_v1, where=f"managedFields[{i}].fieldsV1") if validate else fields_v1
        out.append(
            Entry(
                manager=str(item.get("manager") or ""),
                operation=str(operation),
                api_version=str(item.get("apiVersion") or ""),
                time=item.get("time"),
                subresource=str(item.get("subresource") or ""),
                fields=fields,
                raw=item,
            )
        )
    return out


def _entry_dict(entry: Entry) -> dict[str, Any]:
    if entry.raw is not None:
        return entry.raw
    out: dict[str, Any] = {
        "manager": entry.manager,
        "operation": entry.operation,
        "apiVersion": entry.api_version,
    }
    if entry.time is not None:
        out["time"] = entry.time
    out["fieldsType"] = "FieldsV1"
    out["fieldsV1"] = fieldsets.encode(entry.fields)
    if entry.subresource:
        out["subresource"] = entry.subresource
    return out


def _sort_key(entry: Entry) -> tuple[str, str, str, str, str]:
    return (entry.operation, entry.time or "", entry.manager, entry.api_version, entry.subresource)


def cap(entries: list[Entry]) -> list[Entry]:
    """At most MAX_UPDATE_MANAGERS Update entries; the oldest merge into `ancient-changes`."""
    updates = [e for e in entries if e.operation == "Update"]
    if len(updates) <= MAX_UPDATE_MANAGERS:
        return entries
    candidates = sorted((e for e in updates if e.manager != ANCIENT_CHANGES), key=lambda e: e.time or "")
    buckets: dict[str, Entry] = {e.api_version: e for e in updates if e.manager == ANCIENT_CHANGES}
    count = len(updates)
    merged_away: set[int] = set()
    for entry in candidates:
        if count <= MAX_UPDATE_MANAGERS:
            break
        merged_away.add(id(entry))
        bucket = buckets.get(entry.api_version)
        if bucket is None:
            buckets[entry.api_version] = Entry(
                ANCIENT_CHANGES, "Update", entry.api_version, entry.time, "", entry.fields, None
            )
        else:
            merged_away.add(id(bucket))
            count -= 1
            buckets[entry.api_version] = Entry(
                ANCIENT_CHANGES,
                "Update",
                entry.api_version,
                max(bucket.time or "", entry.time or "") or None,
                "",
                fieldsets.set_union(bucket.fields, entry.fields),
                None,
            )
    kept = [
        e
        for e in entries
        if id(e) not in merged_away and not (e.manager == ANCIENT_CHANGES and e.operation == "Update")
    ]
    return kept + list(buckets.values())


def with_managed_fields(
    obj: dict[str, Any], previous: dict[str, Any], entries: list[Entry]
) -> dict[str, Any]:
    entries.sort(key=_sort_key)
    encoded = [_entry_dict(e) for e in entries]
    old_meta = previous.get("metadata") if isinstance(previous.get("metadata"), dict) else None
    old_list = old_meta.get("managedFields") if old_meta else None
    if (
        isinstance(old_list, list)
        and len(old_list) == len(encoded)
        and all(a is b for a, b in zip(old_list, encoded, strict=True))
    ):
        value: list[dict[str, Any]] | None = old_list
    else:
        value = encoded or None
    result = dict(obj)
    meta = dict(obj.get("metadata") or {})
    if value:
        meta["managedFields"] = value
    else:
        meta.pop("managedFields", None)
    result["metadata"] = meta
    return result
