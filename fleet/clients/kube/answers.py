"""What a cluster answers, read strictly, and its failures mapped to `fleet.core.errors`.

Owns: the checks of an answer's shape (`is_object`, `is_list`, ...: an HTML page, cut-short JSON or a
wrong shape is `BadAnswer`, never an empty result), the API errors (`ApiError` and its kinds) with
messages that name the object and never carry Secret data or credentials (`scrub`).
Does not: send anything.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson

from fleet.clients.kube import discovery
from fleet.core import errors, model

# 500s that say the request itself is wrong: retrying them cannot help.
_PERMANENT_500 = ("field not declared in schema", "failed to create typed patch object")
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def fleet_error(exc: BaseException) -> errors.FleetError | None:
    """The `FleetError` an exception (or a task group's exception group) carries; Unreachable first."""
    if isinstance(exc, errors.FleetError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [f for f in (fleet_error(e) for e in exc.exceptions) if f is not None]
        for f in found:
            if isinstance(f, errors.Unreachable):
                return f
        return found[0] if found else None
    return None


@contextlib.contextmanager
def unwrap_group() -> Iterator[None]:
    """Raise the `FleetError` of a failed task group as itself, not wrapped in an exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        err = fleet_error(group)
        if err is None:
            raise
        raise err from None


def no_match_message(ref: model.ObjectRef, types: discovery.TypeTable | None = None) -> str:
    """Why `ref`'s kind is not served: its group version is unavailable (named as such), or unknown."""
    if types is not None and ref.api_version in types.unavailable:
        return (
            f'{ref}: no matches for kind "{ref.kind}" in version "{ref.api_version}": the API group version is '
            "unavailable on this cluster (its discovery fails)"
        )
    return (
        f'{ref}: no matches for kind "{ref.kind}" in version "{ref.api_version}" '
        "(is its CustomResourceDefinition installed?)"
    )


# ----------------------------------------------------------------------------------------------------------
# Errors


def status_message(body: Any, status: int) -> tuple[str, str]:
    if isinstance(body, dict) and body.get("kind") == "Status":
        return str(body.get("message") or ""), str(body.get("reason") or "")
    return f"HTTP {status}", ""


def scrub(message: str, secrets: Iterable[str]) -> str:
    """`message` with every secret value (and its base64 form) replaced, cut to a readable length."""
    import base64

    for value in secrets:
        if not value or len(value) < 3:
            continue
        forms = {value}
        try:
            forms.add(base64.b64encode(value.encode()).decode())
            forms.add(base64.b64decode(value, validate=True).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            pass
        for form in sorted(forms, key=len, reverse=True):
            if len(form) >= 3:
                message = message.replace(form, "<redacted>")
    return message if len(message) <= 600 else message[:600] + "..."


class ApiError(errors.ClusterError):
    """A request answered with an error status (after retries); `status` and `reason` say which."""

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class RejectedError(ApiError, errors.Rejected):
    retriable = False


class ContinueExpired(RejectedError):
    """410 Gone on a list's continue token: the list must start again (not retried here)."""


class ConflictError(ApiError, errors.Conflict):
    retriable = False


class ServerError(ApiError):
    """A 5xx or 429 that outlived its retries (retriable later)."""

    retriable = True


class BadAnswer(errors.ClusterError):
    """A 2xx answer that cannot be read: not JSON (an HTML page, cut short) or not of the expected shape,
    or too large. Never read as an empty result (retriable later)."""

    retriable = True


def map_status(status: int, body: Any, *, what: str, secrets: Iterable[str]) -> ApiError:
    message, reason = status_message(body, status)
    text = scrub(f"{what}: {message}" if message else f"{what}: HTTP {status}", secrets)
    if status == 409 and reason != "AlreadyExists":
        return ConflictError(text, status=status, reason=reason)
    if status in _RETRY_STATUSES and not _permanent(status, message):
        return ServerError(text, status=status, reason=reason)
    return RejectedError(text, status=status, reason=reason)


def _permanent(status: int, message: str) -> bool:
    return status == 500 and any(marker in message for marker in _PERMANENT_500)


def describe(headers: Mapping[str, str], status: int, size: int) -> str:
    kind = headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
    return f"HTTP {status}, {kind}, {size} bytes"


def parse(raw: bytes | bytearray) -> tuple[bool, Any]:
    """(True, JSON value) or (False, None); an empty body is (True, None). orjson reads it; what orjson
    refuses (integers beyond 64 bits, nesting past its depth limit) is read again by the standard
    library, so only what is not JSON at all is unreadable."""
    if not raw:
        return True, None
    try:
        return True, orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return True, json.loads(raw)
    except (ValueError, RecursionError):
        return False, None


Items = list[dict[str, Any]]  # the items of a list answer

# What an answer must look like; each returns a problem or None.
Check = Callable[[Any], str | None]


def is_object(doc: Any) -> str | None:
    """A Kubernetes object: a JSON object whose metadata (when present) is an object."""
    if not isinstance(doc, dict):
        return f"is {_json_kind(doc)}, not an object"
    if not isinstance(doc.get("metadata", {}), dict):
        return "has metadata that is not an object"
    return None


def is_list(doc: Any) -> str | None:
    """A Kubernetes list: an object with an ``items`` list of objects that have metadata."""
    problem = is_object(doc)
    if problem:
        return problem
    items = doc.get("items")
    if not isinstance(items, list):
        return "has no items list" if items is None else f"has items that are {_json_kind(items)}, not a list"
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("metadata"), dict):
            return "has an item that is not an object with metadata"
    token = doc.get("metadata", {}).get("continue")
    if token is not None and not isinstance(token, str):
        return "has a continue token that is not a string"
    return None


def is_status(doc: Any) -> str | None:
    """A ``Status`` object, as a Kubernetes API server sends with its error statuses."""
    if not isinstance(doc, dict) or doc.get("kind") != "Status":
        return "is not a Kubernetes Status"
    return None


def is_resource_list(doc: Any) -> str | None:
    """An APIResourceList (legacy discovery of one group version)."""
    problem = is_object(doc)
    if problem:
        return problem
    resources = doc.get("resources")
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        return "has no resources list"
    return None


def is_discovery_root(doc: Any) -> str | None:
    """``/api`` or ``/apis``: an aggregated APIGroupDiscoveryList, APIVersions or APIGroupList."""
    problem = is_object(doc)
    if problem:
        return problem
    if discovery.is_aggregated(doc):
        items = doc.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return "is an APIGroupDiscoveryList without an items list"
        return None
    groups = doc.get("groups")
    if groups is not None and (not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups)):
        return "has groups that are not a list of objects"
    if groups is None and not isinstance(doc.get("versions"), list):
        return "is neither an APIGroupList nor APIVersions"
    return None


def _json_kind(value: Any) -> str:
    if value is None:
        return "empty"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )
