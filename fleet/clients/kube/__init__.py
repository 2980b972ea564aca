"""The connection to Kubernetes clusters: the only module that imports kr8s.

Owns: reading the controller's kubeconfig and cutting it into one explicit single-context kubeconfig per
cluster (so no token can travel to another cluster, and `$KUBECONFIG` is never read behind our back),
refusing `exec`/`auth-provider` users unless allowed (no subprocess is ever spawned for a refused
context), kr8s loading each context's credentials, one aiohttp session per cluster (`session`) with explicit
timeouts, a per-cluster type table from
discovery (kind -> plural, scope), a per-cluster request rate (token bucket, QPS/burst like Flux's 50/300)
and in-flight limit, a total deadline per attempt (connect to last byte) and per request, capped jittered
retries for what a retry can help (429 honouring a Retry-After that fits the retry budget, 5xx except
permanent ones, connection errors, timeouts, unreadable answers), reading every answer as what it must
be (`is_object`, `is_list`, ...: an HTML page, cut-short JSON or a wrong shape is `BadAnswer`, never an
empty result), bounded answers and lists (bytes, pages, repeated continue tokens), and the mapping of
every failure to `fleet.core.errors` with messages that name the object and never carry Secret data or
credentials.

Does not: decide what to write (`plan`), order writes or keep inventories (`apply`), or watch (`watch`).
Requests go out on the cluster's aiohttp session, not through kr8s's `call_api` (whose httpx client cost
as much client CPU per request as the rest of a sync: docs/benchmarks.md); kr8s's own helpers
rediscover per call, lowercase kinds and retry 401/403 by rebuilding clients, all of which we avoid.
A path is sent exactly as given: `/apis` without the slash kr8s would add (a real kube-apiserver answers
`/apis/` with legacy discovery whatever the Accept header asks).

Start-up: kr8s imports httpx, and httpx's package imports its command-line client (`httpx._main`: click,
rich, pygments), which no fleet process runs. Unless httpx is loaded already, that module is marked
absent here, before anything imports kr8s: httpx then defines the stub `main` it has for an install
without its `cli` extra, and every `fleet` command that talks to clusters starts without it (0.2e9 of
`fleet sync`'s 3.1e9 instructions of start-up: docs/benchmarks.md, "Start-up and worker processes").
"""

from __future__ import annotations

import sys

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from fleet.clients.kube.answers import (
    ApiError,
    BadAnswer,
    Check,
    ConflictError,
    ContinueExpired,
    Items,
    RejectedError,
    ServerError,
    fleet_error,
    is_discovery_root,
    is_list,
    is_object,
    is_resource_list,
    is_status,
    no_match_message,
    scrub,
    unwrap_group,
)
from fleet.clients.kube.config import (
    Context,
    Kubeconfig,
    Settings,
    TlsDefaults,
    default_kubeconfig_path,
    load_kubeconfig,
    parse_kubeconfig,
    with_settings,
)
from fleet.clients.kube.discovery import (
    AGGREGATED_ACCEPT,
    ResourceType,
    TypeTable,
    types_from_aggregated,
    types_from_resource_list,
)
from fleet.clients.kube.requests import APPLY_CONTENT_TYPE, NAMESPACES, Client, Clients
from fleet.clients.kube.streams import WatchStream
from fleet.clients.kube.transport import NotOwner, Stats, Transport, log, retry_delay

__all__ = [
    "AGGREGATED_ACCEPT",
    "APPLY_CONTENT_TYPE",
    "NAMESPACES",
    "ApiError",
    "BadAnswer",
    "Check",
    "Client",
    "Clients",
    "ConflictError",
    "Context",
    "ContinueExpired",
    "Items",
    "Kubeconfig",
    "NotOwner",
    "RejectedError",
    "ResourceType",
    "ServerError",
    "Settings",
    "Stats",
    "TlsDefaults",
    "Transport",
    "TypeTable",
    "WatchStream",
    "default_kubeconfig_path",
    "fleet_error",
    "is_discovery_root",
    "is_list",
    "is_object",
    "is_resource_list",
    "is_status",
    "load_kubeconfig",
    "log",
    "no_match_message",
    "parse_kubeconfig",
    "retry_delay",
    "scrub",
    "types_from_aggregated",
    "types_from_resource_list",
    "unwrap_group",
    "with_settings",
]
