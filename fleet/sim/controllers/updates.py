"""How the sim's own controllers change objects: in-process status and metadata updates, and when.

Owns: `write_status` (a status-subresource update by a controller manager such as
`kube-controller-manager` or `kube-apiserver`, recorded in managedFields under that manager with
`subresource: status`), `update_metadata` (a main-resource update that edits metadata, e.g. removing a
finalizer), and `run_soon` / `run_later` (run a controller step on the cluster's event loop after the
response of the request that triggered it, like a real controller; synchronously when no loop runs).
Every write gets the managedFields of its manager (`fleet.sim.preparation`) and goes through the
store's no-op check, so a write that changes nothing bumps no resourceVersion and emits no event (no
status write loops).

Also `set_condition` (a condition list with one condition set, times moved as the real controllers do).

Does not: decide anything (the controllers beside it: `crds`, `gc`, `namespaces`, `workloads`), or
journal (only client requests are journaled, by `fleet.sim.server`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fleet.sim import preparation
from fleet.sim.kinds import types
from fleet.sim.storage import objects, store, strategy


def run_soon(fn: Callable[..., None], *args: Any) -> None:
    """Run `fn(*args)` on the running loop's next turn (after the current response is written)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        fn(*args)
        return
    loop.call_soon(fn, *args)


def run_later(delay: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle | None:
    """Run `fn(*args)` after `delay` seconds; returns the timer (None when it ran at once, no loop)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        fn(*args)
        return None
    return loop.call_later(max(delay, 0.0), fn, *args)


def write_status(
    cluster: store.Cluster,
    rtype: types.ResourceType,
    stored: objects.Stored,
    new_status: dict[str, Any],
    *,
    manager: str,
) -> store.WriteResult:
    """Replace `.status` as `manager` through the status subresource path; a no-op writes nothing."""
    new = stored.copy()
    new["status"] = new_status
    new = strategy.prepare_update(rtype, stored, new, subresource="status")
    new = preparation.record_update(rtype, stored.obj, new, manager=manager, subresource="status")
    return cluster.commit_update(rtype, stored, new)


def update_metadata(
    cluster: store.Cluster,
    rtype: types.ResourceType,
    stored: objects.Stored,
    edit: Callable[[dict[str, Any]], None],
    *,
    manager: str,
) -> store.WriteResult:
    """Update the main resource after `edit(metadata)` changed the metadata of a copy of it."""
    new = stored.copy()
    edit(new["metadata"])
    new = strategy.prepare_update(rtype, stored, new)
    new = preparation.record_update(rtype, stored.obj, new, manager=manager, subresource=None)
    return cluster.commit_update(rtype, stored, new)


def set_condition(
    conditions: list[dict[str, Any]],
    ctype: str,
    cstatus: str,
    reason: str,
    message: str,
    *,
    now: str,
    update_time: bool = False,
) -> list[dict[str, Any]]:
    """Conditions with `ctype` set; times kept when nothing about the condition changed.

    `lastTransitionTime` moves only when the status changes; with `update_time` the condition also has
    a `lastUpdateTime` (Deployments), which moves when the reason or message changes.
    """
    out = []
    found = False
    for cond in conditions:
        if cond.get("type") != ctype:
            out.append(cond)
            continue
        found = True
        same_status = cond.get("status") == cstatus
        same_text = same_status and cond.get("reason") == reason and cond.get("message") == message
        out.append(
            _condition(ctype, cstatus, reason, message, cond, now, update_time, same_status, same_text)
        )
    if not found:
        out.append(_condition(ctype, cstatus, reason, message, {}, now, update_time, False, False))
    return out


def _condition(
    ctype: str,
    cstatus: str,
    reason: str,
    message: str,
    old: dict[str, Any],
    now: str,
    update_time: bool,
    same_status: bool,
    same_text: bool,
) -> dict[str, Any]:
    cond: dict[str, Any] = {"type": ctype, "status": cstatus}
    if update_time:
        cond["lastUpdateTime"] = old.get("lastUpdateTime", now) if same_text else now
    cond["lastTransitionTime"] = old.get("lastTransitionTime", now) if same_status else now
    cond["reason"] = reason
    cond["message"] = message
    return cond
