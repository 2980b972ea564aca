"""Events in their two API versions: core ``v1`` and ``events.k8s.io/v1``, one stored resource.

A real server stores one Event resource and serves it in both groups; the events.k8s.io form renames a
few fields of the core form. This module owns that conversion (`to_core`, `to_events`) and the checks
the real server makes on an Event written through ``events.k8s.io/v1`` (`create_causes`,
`update_causes`: pkg/apis/core/validation/events.go). Both forms are the same object with renamed
top-level keys, so the conversion is exact both ways.

Does not: route requests or store anything (`fleet.sim.rest.views` serves the events.k8s.io resource over
the core one), or print Event tables (`fleet.sim.rest.tables`).
"""

from __future__ import annotations

import re
from typing import Any

CORE = ("", "v1")
EVENTS = ("events.k8s.io", "v1")
EVENTS_API_VERSION = "events.k8s.io/v1"

# events.k8s.io/v1 field -> core v1 field (the others have the same name in both).
_RENAMED = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "reportingController": "reportingComponent",
}
_BACK = {v: k for k, v in _RENAMED.items()}

NOTE_LIMIT = 1024
TEXT_LIMIT = 128  # action, reason, reportingInstance
_QUALIFIED = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _renamed(obj: dict[str, Any], names: dict[str, str], api_version: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if k == "apiVersion" and api_version is not None:
            out[k] = api_version
        else:
            out[names.get(k, k)] = v
    return out


def to_core(obj: dict[str, Any]) -> dict[str, Any]:
    """An events.k8s.io/v1 Event (or a merge patch of one) in the core form."""
    return _renamed(obj, _RENAMED, "v1" if "apiVersion" in obj else None)


def to_events(obj: dict[str, Any]) -> dict[str, Any]:
    """A core v1 Event in the events.k8s.io/v1 form."""
    return _renamed(obj, _BACK, EVENTS_API_VERSION if "apiVersion" in obj else None)


def _cause(reason: str, field: str, message: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def _required(field: str) -> dict[str, str]:
    return _cause("FieldValueRequired", field, "Required value")


def _invalid(field: str, detail: str) -> dict[str, str]:
    return _cause("FieldValueInvalid", field, f'Invalid value: "": {detail}')


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _legacy(ev: dict[str, Any], namespace: str) -> list[dict[str, str]]:
    """The checks every Event with an eventTime gets (legacyValidateEvent)."""
    causes: list[dict[str, str]] = []
    regarding = _dict(ev.get("regarding"))
    if not _text(regarding.get("namespace")) and namespace not in ("default", "kube-system"):
        causes.append(
            _cause(
                "FieldValueInvalid",
                "involvedObject.namespace",
                'Invalid value: "": does not match event.namespace',
            )
        )
    controller = _text(ev.get("reportingController"))
    if not controller:
        causes.append(_required("reportingController"))
    elif len(controller) > 316 or not _QUALIFIED.match(controller):
        causes.append(
            _cause(
                "FieldValueInvalid",
                "reportingController",
                f'Invalid value: "{controller}": a qualified name must consist of alphanumeric characters, '
                "'-', '_' or '.', and must start and end with an alphanumeric character, with an optional DNS "
                "subdomain prefix and '/'",
            )
        )
    for name in ("reportingInstance", "action", "reason"):
        value = _text(ev.get(name))
        if not value:
            causes.append(_required(name))
        elif len(value) > TEXT_LIMIT:
            causes.append(_invalid(name, f"can have at most {TEXT_LIMIT} characters"))
    if len(_text(ev.get("note"))) > NOTE_LIMIT:
        causes.append(_invalid("note", f"can have at most {NOTE_LIMIT} characters"))
    return causes


def _series(ev: dict[str, Any]) -> list[dict[str, str]]:
    series = ev.get("series")
    if series is None:
        return []
    series = series if isinstance(series, dict) else {}
    causes = []
    count = series.get("count")
    if not isinstance(count, int) or count < 2:
        causes.append(_invalid("series.count", "should be at least 2"))
    if not series.get("lastObservedTime"):
        causes.append(_required("series.lastObservedTime"))
    return causes


def create_causes(ev: dict[str, Any], *, namespace: str) -> list[dict[str, str]]:
    """What the real server refuses in an Event created through events.k8s.io/v1 (empty: valid)."""
    causes = _legacy(ev, namespace) + _series(ev)
    if not ev.get("eventTime"):
        causes.append(_required("eventTime"))
    if ev.get("type") not in ("Normal", "Warning"):
        causes.append(_invalid("type", f"has invalid value: {ev.get('type') or ''}"))
    for name in ("deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount"):
        if ev.get(name):
            causes.append(_invalid(name, "needs to be unset"))
    source = ev.get("deprecatedSource")
    if isinstance(source, dict) and (source.get("component") or source.get("host")):
        causes.append(_invalid("deprecatedSource", "needs to be unset"))
    return causes


_IMMUTABLE = (
    "regarding",
    "reason",
    "note",
    "deprecatedSource",
    "deprecatedFirstTimestamp",
    "deprecatedLastTimestamp",
    "deprecatedCount",
    "type",
    "eventTime",
    "action",
    "related",
    "reportingController",
    "reportingInstance",
)


def update_causes(new: dict[str, Any], old: dict[str, Any], *, namespace: str) -> list[dict[str, str]]:
    """What the real server refuses in an update through events.k8s.io/v1: only the series (and metadata)
    may change."""
    causes = _legacy(new, namespace)
    if new.get("series") != old.get("series"):
        causes += _series(new)
    for name in _IMMUTABLE:
        if new.get(name) != old.get(name):
            field = _RENAMED.get(name, name) if name == "regarding" else name
            causes.append(_cause("FieldValueInvalid", field, "Invalid value: field is immutable"))
    return causes
