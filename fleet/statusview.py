"""Rendering a `fleet serve` status document for people (pure).

Owns: turning the status document of SPEC.md section 4 into the text table `fleet status` prints. Does
not: fetch it (the command does) or change it.
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


def table(doc: dict[str, Any], *, now: dt.datetime | None = None) -> str:
    """The status as aligned text: a header about the revision, then one row per cluster."""
    now = now or dt.datetime.now(dt.UTC)
    lines = [
        f"revision  {_short(doc.get('revision'))}  {doc.get('message') or ''}".rstrip(),
        f"author    {doc.get('author') or '-'}  committed {_age(doc.get('committedAt'), now=now)} ago,"
        f" fetched {_age(doc.get('fetchedAt'), now=now)} ago",
    ]
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
    return "\n".join(lines)
