"""Kubernetes `Status` error bodies, shaped like apimachinery's `pkg/api/errors` templates.

Owns: `ApiError` (an exception carrying the Status dict and its HTTP code, raised anywhere in the
simulated server and rendered by the HTTP layer) and one constructor per error template (NotFound,
AlreadyExists, Conflict, Invalid, BadRequest, ...), naming a resource by what every Status names
(`Resource`: group, plural, `group_resource`). Does not: write HTTP responses or know the kinds a
cluster serves (`fleet.sim.kinds.Resource` is a `Resource`).
"""

from __future__ import annotations

from typing import Any, Protocol


class Resource(Protocol):
    """What a Status says about a resource: its group, plural and `plural.group` form."""

    group: str
    plural: str

    @property
    def group_resource(self) -> str: ...


class ApiError(Exception):
    """A request failed with a Kubernetes Status; `status` is the body, `code` the HTTP status."""

    def __init__(self, status: dict[str, Any], *, headers: dict[str, str] | None = None) -> None:
        super().__init__(status.get("message", ""))
        self.status = status
        self.code = int(status["code"])
        self.headers = headers or {}


def status(
    code: int,
    reason: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A failure Status as apimachinery encodes it: an empty `reason` is left out (omitempty), `details`
    is there whenever the error has it, even empty (`NewGenericServerResponse` errors carry `{}`)."""
    out: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": metadata or {},
        "status": "Failure",
        "message": message,
    }
    if reason:
        out["reason"] = reason
    if details is not None:
        out["details"] = details
    out["code"] = code
    return out


def error(
    code: int,
    reason: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    retry_after: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> ApiError:
    headers: dict[str, str] = {}
    if retry_after is not None:
        details = {**(details or {}), "retryAfterSeconds": retry_after}
        headers["Retry-After"] = str(retry_after)
    return ApiError(status(code, reason, message, details=details, metadata=metadata), headers=headers)


def _details(rtype: Resource | None, name: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name} if name else {}
    if rtype is not None:
        if rtype.group:
            out["group"] = rtype.group
        out["kind"] = rtype.plural
    out.update(extra)
    return out


def not_found(rtype: Resource, name: str) -> ApiError:
    return error(404, "NotFound", f'{rtype.group_resource} "{name}" not found', details=_details(rtype, name))


def namespace_not_found(name: str) -> ApiError:
    return error(
        404, "NotFound", f'namespaces "{name}" not found', details={"name": name, "kind": "namespaces"}
    )


def resource_not_found() -> ApiError:
    return error(404, "NotFound", "the server could not find the requested resource", details={})


def already_exists(rtype: Resource, name: str) -> ApiError:
    return error(
        409, "AlreadyExists", f'{rtype.group_resource} "{name}" already exists', details=_details(rtype, name)
    )


def conflict(rtype: Resource, name: str, why: str) -> ApiError:
    return error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rtype.group_resource} "{name}": {why}',
        details=_details(rtype, name),
    )


def precondition_failed(kind: str, group: str, name: str, why: str) -> ApiError:
    """A delete precondition that does not hold: `rest.BeforeDelete` names the kind (with its group,
    `Deployment.apps`), not the resource."""
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    qualified = f"{kind}.{group}" if group else kind
    return error(
        409, "Conflict", f'Operation cannot be fulfilled on {qualified} "{name}": {why}', details=details
    )


OPTIMISTIC_LOCK = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(kind: str, name: str, causes: list[dict[str, str]], *, group: str = "") -> ApiError:
    """422 Invalid; each cause is {reason, message, field}; the message lists them like the real one."""
    parts = []
    for cause in causes:
        field = cause.get("field", "")
        parts.append(f"{field}: {cause['message']}" if field else cause["message"])
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details: dict[str, Any] = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = causes
    qualified = f"{kind}.{group}" if group else kind
    return error(422, "Invalid", f'{qualified} "{name}" is invalid: {joined}', details=details)


def field_cause(reason: str, field: str, message: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def bad_request(message: str) -> ApiError:
    return error(400, "BadRequest", message)


def forbidden(
    rtype: Resource, name: str, why: str, *, causes: list[dict[str, str]] | None = None
) -> ApiError:
    details = _details(rtype, name)
    if causes:
        details["causes"] = causes
    return error(403, "Forbidden", f'{rtype.group_resource} "{name}" is forbidden: {why}', details=details)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> ApiError:
    return error(405, "MethodNotAllowed", message, details={})


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return error(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}",
    )


def unsupported_patch_type() -> ApiError:
    """A PATCH whose Content-Type is no patch type: the generic 415 of the REST handler."""
    return error(415, "UnsupportedMediaType", "415: Unsupported Media Type", details={})


def patch_rejected() -> ApiError:
    """A JSON patch (or merge patch) that cannot be applied: the generic 422, the reason not shown."""
    return error(422, "Invalid", "the server rejected our request due to an error in our request", details={})


def not_acceptable(supported: list[str]) -> ApiError:
    return error(
        406,
        "NotAcceptable",
        "only the following media types are accepted: " + ", ".join(supported),
    )


def internal(message: str) -> ApiError:
    """A non-Status failure as the real server renders one: 500, empty reason, the error text."""
    return ApiError(status(500, "", message))


def internal_error(message: str) -> ApiError:
    return error(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        details={"causes": [{"message": message}]},
    )


def expired(message: str, *, metadata: dict[str, Any] | None = None) -> ApiError:
    return error(410, "Expired", message, metadata=metadata)


def too_large(message: str) -> ApiError:
    return error(413, "RequestEntityTooLarge", message)


def timeout(message: str, *, retry_after: int = 1, causes: list[dict[str, str]] | None = None) -> ApiError:
    return error(
        504, "Timeout", message, details={"causes": causes} if causes else None, retry_after=retry_after
    )


# Reasons for an injected status code, as apimachinery names them.
REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

MESSAGES: dict[int, str] = {
    401: "Unauthorized",
    403: 'forbidden: User "system:anonymous" cannot perform this action',
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected fault",
    503: "The server is currently unable to handle the request",
    504: "Timeout: request did not complete within the allotted timeout",
}


def injected(code: int, *, retry_after: int | None = None) -> ApiError:
    """A Status for a fault rule's status code (any 4xx/5xx)."""
    reason = REASONS.get(code, "" if code >= 500 else "BadRequest")
    message = MESSAGES.get(code, f"injected fault: HTTP {code}")
    return error(code, reason, message, retry_after=retry_after)
