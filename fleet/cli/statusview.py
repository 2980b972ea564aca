"""Rendering a `fleet serve` status document for people (pure).

Owns: turning the status document (docs/operations.md) into the text table `fleet status` prints (with
several replicas, a line saying which replica answered and which shards' clusters are unknown), and
rollouts (docs/rollouts.md) into the tables `fleet rollout status` prints. Does not: fetch them (the
commands do) or change them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def _age(ts: str | None, *, now: dt.datetime) -> str:
    if not ts:
        return "-"
    try:
        when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    seconds = max(0, int((now - when).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _short(sha: str | None) -> str:
    return sha[:7] if sha else "-"


def _replica(doc: dict[str, Any]) -> str | None:
    """Which replica answered, when several share the fleet (docs/scaling.md)."""
    r = doc.get("replica")
    if not isinstance(r, dict):
        return None
    line = (
        f"replica   {r.get('id')}{' (coordinating)' if r.get('coordinating') else ''} writes "
        f"{len(r.get('shards') or [])} of {r.get('shardCount')} shards"
    )
    shards = doc.get("shards")
    if not isinstance(shards, dict):
        return line + "; only its clusters are listed"
    per: dict[str, int] = {}
    for who in (shards.get("writers") or {}).values():
        per[str(who)] = per.get(str(who), 0) + 1
    others = ", ".join(f"{w} ({n})" for w, n in sorted(per.items()) if w != r.get("id"))
    line += "; the other clusters as their owners last reported them" + (f": {others}" if others else "")
    missing = shards.get("missing") or []
    if missing:
        line += (
            f"; no status summary for shards {', '.join(map(str, missing))} (their clusters' status unknown)"
        )
    return line


def table(doc: dict[str, Any], *, now: dt.datetime | None = None) -> str:
    """The status as aligned text: a header about the revision, then one row per cluster."""
    now = now or dt.datetime.now(dt.UTC)
    lines = [
        f"revision  {_short(doc.get('revision'))}  {doc.get('message') or ''}".rstrip(),
        f"author    {doc.get('author') or '-'}  committed {_age(doc.get('committedAt'), now=now)} ago,"
        f" fetched {_age(doc.get('fetchedAt'), now=now)} ago",
    ]
    replica = _replica(doc)
    if replica:
        lines.append(replica)
    for err in doc.get("errors") or []:
        lines.append(f"error     {err.get('path')}:{err.get('line')}: {err.get('message')}")
    store = doc.get("stateStore") or {}
    if store.get("saving") is False:
        lines.append(
            f"state     NOT SAVED since {store.get('failingSince')}: {store.get('lastError')} (reconciling goes on)"
        )
    aside = store.get("setAside") or {}
    if aside:
        lines.append(
            f"state     was damaged ({aside.get('reason')}): set aside as {aside.get('path')}, rebuilt"
        )
    clusters: dict[str, Any] = doc.get("clusters") or {}
    rows = [("CLUSTER", "STATE", "REVISION", "BUNDLES", "LAST SYNC", "ERROR")]
    for name in sorted(clusters):
        c = clusters[name] or {}
        bundles: dict[str, Any] = c.get("bundles") or {}
        synced = sum(1 for b in bundles.values() if (b or {}).get("state") == "Synced")
        rows.append(
            (
                name,
                str(c.get("state") or "-"),
                _short(c.get("revision")),
                f"{synced}/{len(bundles)}",
                _age(c.get("lastSyncAt"), now=now) + (" ago" if c.get("lastSyncAt") else ""),
                str(c.get("lastError") or ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines.append("")
    for r in rows:
        cells = [r[i].ljust(widths[i]) for i in range(len(widths))] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
    counts: dict[str, int] = {}
    for c in clusters.values():
        state = str((c or {}).get("state") or "-")
        counts[state] = counts.get(state, 0) + 1
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no clusters")
    active = {b: r for b, r in (doc.get("rollouts") or {}).items() if r.get("state") != "Completed"}
    if active:
        lines.append("")
        lines.append(rollouts_table(active, now=now))
    return "\n".join(lines)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([r[i].ljust(widths[i]) for i in range(len(widths))] + [r[-1]]).rstrip() for r in rows]


def _tally(rollout: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for wave in rollout.get("waves") or []:
        for state in (wave.get("clusters") or {}).values():
            counts[state] = counts.get(state, 0) + 1
    order = ["Done", "Healthy", "Progressing", "Pending", "Failed", "Skipped", "Removed"]
    return ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s)) or "no clusters"


# What a person can do next, by rollout state.
_NEXT = {
    "Halted": "resume",
    "WaitingApproval": "approve",
}


def next_command(rollout: dict[str, Any]) -> str | None:
    """The command that moves a halted or waiting rollout on, for status and the page."""
    verb = _NEXT.get(str(rollout.get("state")))
    if verb is None:
        return None
    bundle = rollout.get("bundle")
    if verb == "approve":
        return f"fleet rollout approve {bundle} --wave {rollout.get('wave')}"
    return f"fleet rollout resume {bundle}"


def rollouts_table(rollouts: dict[str, Any], *, now: dt.datetime | None = None) -> str:
    """One row per bundle's latest rollout, then what to run for the halted or waiting ones."""
    now = now or dt.datetime.now(dt.UTC)
    rows: list[tuple[str, ...]] = [("BUNDLE", "REVISION", "STATE", "WAVE", "CLUSTERS", "UPDATED", "REASON")]
    hints: list[str] = []
    for bundle in sorted(rollouts):
        r = rollouts[bundle] or {}
        rows.append(
            (
                bundle,
                _short(r.get("revision")),
                str(r.get("state") or "-"),
                str(r.get("wave") or "-"),
                _tally(r),
                _age(r.get("updatedAt"), now=now) + (" ago" if r.get("updatedAt") else ""),
                str(r.get("reason") or ""),
            )
        )
        command = next_command(r)
        if command:
            hints.append(f"{bundle}: {command}")
    lines = _columns(rows)
    if hints:
        lines += ["", "next:", *(f"  {h}" for h in hints)]
    return "\n".join(lines)


def rollout_detail(r: dict[str, Any], *, now: dt.datetime | None = None) -> str:
    """One rollout: its state and why, each wave with its clusters, deadlines and soak, and the actions."""
    now = now or dt.datetime.now(dt.UTC)
    lines = [
        f"bundle    {r.get('bundle')}",
        f"revision  {r.get('revision')}",
        f"state     {r.get('state')}" + (f": {r.get('reason')}" if r.get("reason") else ""),
        f"started   {_age(r.get('startedAt'), now=now)} ago, updated {_age(r.get('updatedAt'), now=now)} ago",
    ]
    for wave in r.get("waves") or []:
        notes = [str(wave.get("state"))]
        if wave.get("approval") and wave.get("approval") != "none":
            notes.append(f"approval {wave['approval']}" + (" (approved)" if wave.get("approved") else ""))
        if wave.get("soakRemainingSeconds") is not None:
            notes.append(f"soak {wave['soakRemainingSeconds']:g}s left")
        lines.append("")
        lines.append(f"wave {wave.get('name')} ({', '.join(notes)})")
        failed = wave.get("failed") or {}
        deadlines = wave.get("deadlines") or {}
        for cluster, state in sorted((wave.get("clusters") or {}).items()):
            extra = ""
            if cluster in failed:
                extra = f"  {failed[cluster].get('reason')}: {failed[cluster].get('message')}"
            elif cluster in deadlines:
                extra = f"  deadline {deadlines[cluster]}"
            lines.append(f"  {cluster}  {state}{extra}".rstrip())
    actions = r.get("actions") or []
    if actions:
        lines.append("")
        lines.append("actions")
        for a in actions:
            target = a.get("wave") or a.get("cluster") or ""
            why = f": {a['reason']}" if a.get("reason") else ""
            lines.append(
                f"  {a.get('at')}  {a.get('action')} {target}".rstrip() + f" by {a.get('actor')}{why}"
            )
    command = next_command(r)
    if command:
        lines += ["", f"next: {command}"]
    return "\n".join(lines)
