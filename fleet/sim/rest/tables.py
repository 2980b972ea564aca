"""Server-side printing: `meta.k8s.io/v1` Table answers for kubectl's human-readable `get`.

Owns: the columns of the built-in kinds as the real server's printers define them
(pkg/printers/internalversion/printers.go: a Deployment's READY / UP-TO-DATE / AVAILABLE, a Namespace's
STATUS, a ConfigMap's DATA, ...), the Table shape (`columnDefinitions`, `rows[].cells`, `rows[].object`
as PartialObjectMetadata, the full object, or nothing per `includeObject`), ages rendered like
apimachinery's `duration.HumanDuration`, and the rule of watch Tables: only the first event of a stream
carries the column definitions. Pure functions over stored objects.

Does not: negotiate (`fleet.sim.rest.requests` asks for a Table only when the Accept header wants one)
or print custom resources (their `additionalPrinterColumns` are the CRD code's; without a printer here a
kind is answered as plain JSON and kubectl prints NAME and AGE itself).
"""

from __future__ import annotations

import calendar
import functools
import time
from collections.abc import Callable
from typing import Any

import orjson

from fleet.sim.kinds import schemas, types
from fleet.sim.storage import objects

Cells = list[Any]
Column = tuple[str, str, str]  # name, type, format

NAME: Column = ("Name", "string", "name")
AGE: Column = ("Age", "string", "")


def _field_doc(group: str, version: str, kind: str, field: str) -> str | None:
    """The OpenAPI description of a top-level field of a built-in kind (what a real printer's column
    quotes through `SwaggerDoc()`), or None."""
    loaded = schemas.load()
    name = loaded.name_for(group, version, kind)
    prop = ((loaded.get(name) or {}).get("properties") or {}).get(field) if name else None
    doc = prop.get("description") if isinstance(prop, dict) else None
    return doc if isinstance(doc, str) else None


@functools.cache
def _descriptions(group: str, version: str, kind: str) -> dict[str, str]:
    """Column descriptions: Name and Age from ObjectMeta, a column named after a top-level field of the
    kind from that field (ConfigMap DATA); other columns are described by their name only."""
    meta = (schemas.load().get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta") or {}).get(
        "properties"
    ) or {}
    out = {
        "Name": str((meta.get("name") or {}).get("description") or "Name"),
        "Age": str((meta.get("creationTimestamp") or {}).get("description") or "Age"),
    }
    for column in {c[0] for c in PRINTERS.get((group, kind), ([], None, False))[0]}:
        doc = _field_doc(group, version, kind, column[:1].lower() + column[1:])
        if doc is not None:
            out[column] = doc
    out.update(_OWN_DESCRIPTIONS.get((group, kind), {}))
    return out


# Columns whose printers describe them in words of their own.
_OWN_DESCRIPTIONS = {
    ("apiregistration.k8s.io", "APIService"): {
        "Service": "The reference to the service that hosts this API endpoint.",
        "Available": "Whether this service is available.",
    }
}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def human_duration(seconds: float) -> str:
    """apimachinery `duration.HumanDuration`: 45s, 3m2s, 15m, 5h3m, 2d4h, 300d, 3y20d."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    secs = int(seconds)
    if secs < 60 * 2:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        rest = secs % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def age(obj: dict[str, Any], *, now: float | None = None) -> str:
    stamp = obj.get("metadata", {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    try:
        created = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "<unknown>"
    return human_duration((time.time() if now is None else now) - created)


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    st = obj.get("status")
    return st if isinstance(st, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _replicas(obj: dict[str, Any]) -> int:
    value = _spec(obj).get("replicas")
    return 1 if value is None else _int(value)


def _namespace(obj: dict[str, Any]) -> Cells:
    return [_status(obj).get("phase", "")]


def _configmap(obj: dict[str, Any]) -> Cells:
    return [len(obj.get("data") or {}) + len(obj.get("binaryData") or {})]


def _apiservice(obj: dict[str, Any]) -> Cells:
    ref = _dict(_dict(obj.get("spec")).get("service"))
    service = f"{ref.get('namespace', '')}/{ref.get('name', '')}" if ref else "Local"
    available = "Unknown"
    for cond in _dict(obj.get("status")).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Available":
            available = str(cond.get("status"))
            if available != "True" and cond.get("reason"):
                available += f" ({cond['reason']})"
    return [service, available]


def _secret(obj: dict[str, Any]) -> Cells:
    return [obj.get("type") or "Opaque", len(obj.get("data") or {})]


def _service_account(obj: dict[str, Any]) -> Cells:
    return [len(obj.get("secrets") or [])]


def _ports(spec: dict[str, Any]) -> str:
    out = []
    for port in spec.get("ports") or []:
        if not isinstance(port, dict):
            continue
        text = f"{port.get('port', '')}"
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        out.append(f"{text}/{port.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _service(obj: dict[str, Any]) -> Cells:
    spec = _spec(obj)
    kind = spec.get("type") or "ClusterIP"
    external = ",".join(spec.get("externalIPs") or [])
    if kind == "LoadBalancer":
        ingress = (_status(obj).get("loadBalancer") or {}).get("ingress") or []
        external = ",".join(i.get("ip") or i.get("hostname") or "" for i in ingress) or "<pending>"
    elif kind == "ExternalName":
        external = spec.get("externalName", "")
    return [kind, spec.get("clusterIP") or "<none>", external or "<none>", _ports(spec)]


def _pod(obj: dict[str, Any]) -> Cells:
    st = _status(obj)
    statuses = [c for c in st.get("containerStatuses") or [] if isinstance(c, dict)]
    total = len(_spec(obj).get("containers") or [])
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(_int(c.get("restartCount")) for c in statuses)
    phase = st.get("phase") or "Pending"
    if obj.get("metadata", {}).get("deletionTimestamp"):
        phase = "Terminating"
    return [f"{ready}/{total}", st.get("reason") or phase, restarts]


def _deployment(obj: dict[str, Any]) -> Cells:
    st = _status(obj)
    return [
        f"{_int(st.get('readyReplicas'))}/{_replicas(obj)}",
        _int(st.get("updatedReplicas")),
        _int(st.get("availableReplicas")),
    ]


def _replica_set(obj: dict[str, Any]) -> Cells:
    st = _status(obj)
    return [_replicas(obj), _int(st.get("replicas")), _int(st.get("readyReplicas"))]


def _stateful_set(obj: dict[str, Any]) -> Cells:
    return [f"{_int(_status(obj).get('readyReplicas'))}/{_replicas(obj)}"]


def _daemon_set(obj: dict[str, Any]) -> Cells:
    st = _status(obj)
    selector = ((_spec(obj).get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    return [
        _int(st.get("desiredNumberScheduled")),
        _int(st.get("currentNumberScheduled")),
        _int(st.get("numberReady")),
        _int(st.get("updatedNumberScheduled")),
        _int(st.get("numberAvailable")),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
    ]


def _job(obj: dict[str, Any]) -> Cells:
    st = _status(obj)
    conditions = {c.get("type"): c.get("status") for c in st.get("conditions") or [] if isinstance(c, dict)}
    if conditions.get("Complete") == "True":
        state = "Complete"
    elif conditions.get("Failed") == "True":
        state = "Failed"
    elif obj.get("metadata", {}).get("deletionTimestamp"):
        state = "Terminating"
    else:
        state = "Running"
    completions = _spec(obj).get("completions")
    wanted = "1" if completions is None else str(completions)
    duration = ""
    start, end = st.get("startTime"), st.get("completionTime")
    if start:
        try:
            began = calendar.timegm(time.strptime(start, "%Y-%m-%dT%H:%M:%SZ"))
            ended = calendar.timegm(time.strptime(end, "%Y-%m-%dT%H:%M:%SZ")) if end else time.time()
            duration = human_duration(ended - began)
        except ValueError:
            duration = ""
    return [state, f"{_int(st.get('succeeded'))}/{wanted}", duration]


def _cron_job(obj: dict[str, Any]) -> Cells:
    spec, st = _spec(obj), _status(obj)
    last = st.get("lastScheduleTime")
    since = "<none>"
    if last:
        try:
            since = human_duration(time.time() - calendar.timegm(time.strptime(last, "%Y-%m-%dT%H:%M:%SZ")))
        except ValueError:
            since = "<none>"
    return [
        spec.get("schedule", ""),
        spec.get("timeZone") or "<none>",
        "True" if spec.get("suspend") else "False",
        len(st.get("active") or []),
        since,
    ]


def _ingress(obj: dict[str, Any]) -> Cells:
    spec = _spec(obj)
    hosts = [str(r["host"]) for r in spec.get("rules") or [] if isinstance(r, dict) and r.get("host")]
    ingress = ((_status(obj).get("loadBalancer") or {}).get("ingress")) or []
    address = ",".join(str(i.get("ip") or i.get("hostname") or "") for i in ingress if isinstance(i, dict))
    return [
        spec.get("ingressClassName") or "<none>",
        ",".join(hosts) or "*",
        address,
        "443" if spec.get("tls") else "80",
    ]


def _lease(obj: dict[str, Any]) -> Cells:
    return [_spec(obj).get("holderIdentity") or ""]


def _role_binding(obj: dict[str, Any]) -> Cells:
    ref = obj.get("roleRef") or {}
    return [f"{ref.get('kind', '')}/{ref.get('name', '')}"]


def _pod_template(obj: dict[str, Any]) -> dict[str, Any]:
    template = _spec(obj).get("template")
    spec = template.get("spec") if isinstance(template, dict) else None
    return spec if isinstance(spec, dict) else {}


def _selector_text(selector: Any) -> str:
    if not isinstance(selector, dict):
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        if isinstance(expr, dict):
            values = ",".join(str(v) for v in expr.get("values") or [])
            op = str(expr.get("operator", "")).lower()
            if values:
                parts.append(f"{expr.get('key')} {op} ({values})")
            else:
                parts.append(f"{'!' if op == 'doesnotexist' else ''}{expr.get('key')}")
    return ",".join(parts) or "<none>"


def _containers_images(spec: dict[str, Any]) -> Cells:
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    return [
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
    ]


def _workload_wide(obj: dict[str, Any]) -> Cells:
    return [*_containers_images(_pod_template(obj)), _selector_text(_spec(obj).get("selector"))]


def _stateful_set_wide(obj: dict[str, Any]) -> Cells:
    return _containers_images(_pod_template(obj))


def _service_wide(obj: dict[str, Any]) -> Cells:
    selector = _spec(obj).get("selector") or {}
    return [",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"]


def _pod_wide(obj: dict[str, Any]) -> Cells:
    st, spec = _status(obj), _spec(obj)
    gates = spec.get("readinessGates") or []
    return [
        st.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        st.get("nominatedNodeName") or "<none>",
        f"{len(gates)}" if gates else "<none>",
    ]


def _created_at(obj: dict[str, Any]) -> Cells:
    return [obj.get("metadata", {}).get("creationTimestamp", "")]


Printer = tuple[list[Column], Callable[[dict[str, Any]], Cells], bool]  # extra columns, cells, with Age

PRINTERS: dict[tuple[str, str], Printer] = {
    ("apiregistration.k8s.io", "APIService"): (
        [("Service", "string", ""), ("Available", "string", "")],
        _apiservice,
        True,
    ),
    ("", "Namespace"): ([("Status", "string", "")], _namespace, True),
    ("", "ConfigMap"): ([("Data", "string", "")], _configmap, True),
    ("", "Secret"): ([("Type", "string", ""), ("Data", "string", "")], _secret, True),
    ("", "ServiceAccount"): ([("Secrets", "string", "")], _service_account, True),
    ("", "Service"): (
        [
            ("Type", "string", ""),
            ("Cluster-IP", "string", ""),
            ("External-IP", "string", ""),
            ("Port(s)", "string", ""),
        ],
        _service,
        True,
    ),
    ("", "Pod"): (
        [("Ready", "string", ""), ("Status", "string", ""), ("Restarts", "string", "")],
        _pod,
        True,
    ),
    ("apps", "Deployment"): (
        [("Ready", "string", ""), ("Up-to-date", "string", ""), ("Available", "string", "")],
        _deployment,
        True,
    ),
    ("apps", "ReplicaSet"): (
        [("Desired", "integer", ""), ("Current", "integer", ""), ("Ready", "integer", "")],
        _replica_set,
        True,
    ),
    ("apps", "StatefulSet"): ([("Ready", "string", "")], _stateful_set, True),
    ("apps", "DaemonSet"): (
        [
            ("Desired", "integer", ""),
            ("Current", "integer", ""),
            ("Ready", "integer", ""),
            ("Up-to-date", "integer", ""),
            ("Available", "integer", ""),
            ("Node Selector", "string", ""),
        ],
        _daemon_set,
        True,
    ),
    ("batch", "Job"): (
        [("Status", "string", ""), ("Completions", "string", ""), ("Duration", "string", "")],
        _job,
        True,
    ),
    ("batch", "CronJob"): (
        [
            ("Schedule", "string", ""),
            ("Timezone", "string", ""),
            ("Suspend", "boolean", ""),
            ("Active", "integer", ""),
            ("Last Schedule", "string", ""),
        ],
        _cron_job,
        True,
    ),
    ("networking.k8s.io", "Ingress"): (
        [
            ("Class", "string", ""),
            ("Hosts", "string", ""),
            ("Address", "string", ""),
            ("Ports", "string", ""),
        ],
        _ingress,
        True,
    ),
    ("coordination.k8s.io", "Lease"): ([("Holder", "string", "")], _lease, True),
    ("rbac.authorization.k8s.io", "Role"): ([("Created At", "date", "")], _created_at, False),
    ("rbac.authorization.k8s.io", "ClusterRole"): ([("Created At", "date", "")], _created_at, False),
    ("rbac.authorization.k8s.io", "RoleBinding"): ([("Role", "string", "")], _role_binding, True),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): ([("Role", "string", "")], _role_binding, True),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): ([("Created At", "date", "")], _created_at, False),
}


Wide = tuple[list[Column], Callable[[dict[str, Any]], Cells]]  # priority-1 columns (kubectl -o wide)

WORKLOAD_WIDE: list[Column] = [
    ("Containers", "string", ""),
    ("Images", "string", ""),
    ("Selector", "string", ""),
]
WIDE: dict[tuple[str, str], Wide] = {
    ("", "Pod"): (
        [
            ("IP", "string", ""),
            ("Node", "string", ""),
            ("Nominated Node", "string", ""),
            ("Readiness Gates", "string", ""),
        ],
        _pod_wide,
    ),
    ("", "Service"): ([("Selector", "string", "")], _service_wide),
    ("apps", "Deployment"): (WORKLOAD_WIDE, _workload_wide),
    ("apps", "ReplicaSet"): (WORKLOAD_WIDE, _workload_wide),
    ("apps", "DaemonSet"): (WORKLOAD_WIDE, _workload_wide),
    ("apps", "StatefulSet"): (WORKLOAD_WIDE[:2], _stateful_set_wide),
    ("batch", "Job"): (WORKLOAD_WIDE, _workload_wide),
}


def _since(stamp: Any, now: float) -> str:
    """apimachinery's translateTimestampSince (and its MicroTime twin): "<unknown>" when unset."""
    if not isinstance(stamp, str) or not stamp:
        return "<unknown>"
    whole = stamp.split(".")[0].rstrip("Z") + "Z"
    try:
        at = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "<unknown>"
    return human_duration(now - at)


def _event(obj: dict[str, Any], now: float) -> Cells:
    """printEvent: Last Seen, Type, Reason, Object, Subobject, Source, Message, First Seen, Count, Name."""
    first = _since(obj.get("firstTimestamp") or obj.get("eventTime"), now)
    last = _since(obj["lastTimestamp"], now) if obj.get("lastTimestamp") else first
    count = _int(obj.get("count"))
    series = obj.get("series")
    if isinstance(series, dict):
        last = _since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events have no count in the new API
    involved = _dict(obj.get("involvedObject"))
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = _dict(obj.get("source"))
    component = source.get("component") or obj.get("reportingComponent") or ""
    instance = source.get("host") or obj.get("reportingInstance") or ""
    return [
        last,
        obj.get("type", ""),
        obj.get("reason", ""),
        target,
        involved.get("fieldPath", ""),
        f"{component}, {instance}" if instance else component,
        str(obj.get("message") or "").strip(),
        first,
        count,
        obj.get("metadata", {}).get("name", ""),
    ]


# Kinds whose printer makes every column itself (no leading Name): (name, type, format, priority).
EVENT_COLUMNS = [
    ("Last Seen", "string", "", 0),
    ("Type", "string", "", 0),
    ("Reason", "string", "", 0),
    ("Object", "string", "", 0),
    ("Subobject", "string", "", 1),
    ("Source", "string", "", 1),
    ("Message", "string", "", 0),
    ("First Seen", "string", "", 1),
    ("Count", "string", "", 1),
    ("Name", "string", "name", 1),
]
OWN: dict[
    tuple[str, str], tuple[list[tuple[str, str, str, int]], Callable[[dict[str, Any], float], Cells]]
] = {
    ("", "Event"): (EVENT_COLUMNS, _event),
    ("events.k8s.io", "Event"): (EVENT_COLUMNS, _event),
}


def has_printer(rtype: types.ResourceType) -> bool:
    return not rtype.custom and ((rtype.group, rtype.kind) in PRINTERS or (rtype.group, rtype.kind) in OWN)


def columns(rtype: types.ResourceType) -> list[dict[str, Any]]:
    docs = _descriptions(rtype.group, rtype.version, rtype.kind)
    own = OWN.get((rtype.group, rtype.kind))
    if own is not None:
        return [
            {"name": n, "type": t, "format": f, "description": docs.get(n, n), "priority": p}
            for n, t, f, p in own[0]
        ]
    extra, _, with_age = PRINTERS[(rtype.group, rtype.kind)]
    wide = WIDE[(rtype.group, rtype.kind)][0] if (rtype.group, rtype.kind) in WIDE else []
    cols = [(c, 0) for c in [NAME, *extra, *([AGE] if with_age else [])]] + [(c, 1) for c in wide]
    return [
        {"name": n, "type": t, "format": f, "description": docs.get(n, n), "priority": p}
        for (n, t, f), p in cols
    ]


def _row_object(obj: dict[str, Any], include: str, version: str = "v1") -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": obj.get("metadata", {}),
    }


def row(
    rtype: types.ResourceType,
    obj: dict[str, Any],
    *,
    include: str,
    now: float | None = None,
    version: str = "v1",
) -> dict[str, Any]:
    own = OWN.get((rtype.group, rtype.kind))
    if own is not None:
        out_own: dict[str, Any] = {"cells": own[1](obj, time.time() if now is None else now)}
        embedded_own = _row_object(obj, include, version)
        if embedded_own is not None:
            out_own["object"] = embedded_own
        return out_own
    _, cells_of, with_age = PRINTERS[(rtype.group, rtype.kind)]
    cells: Cells = [obj.get("metadata", {}).get("name", ""), *cells_of(obj)]
    if with_age:
        cells.append(age(obj, now=now))
    wide = WIDE.get((rtype.group, rtype.kind))
    if wide is not None:
        cells.extend(wide[1](obj))
    out: dict[str, Any] = {"cells": cells}
    embedded = _row_object(obj, include, version)
    if embedded is not None:
        out["object"] = embedded
    return out


def table(
    rtype: types.ResourceType,
    items: list[objects.Stored],
    *,
    metadata: dict[str, Any],
    include: str = "Metadata",
    headers: bool = True,
    version: str = "v1",
) -> dict[str, Any]:
    """A meta.k8s.io Table (`version` v1, or v1beta1: the same document under the older version)."""
    now = time.time()
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": metadata,
        "columnDefinitions": columns(rtype) if headers else None,
        "rows": [row(rtype, s.obj, include=include, now=now, version=version) for s in items],
    }


def watch_encoder(
    rtype: types.ResourceType, *, include: str, version: str = "v1"
) -> Callable[[str, objects.Stored], bytes]:
    """Encode each watch event as a one-row Table; only the first one carries the column definitions."""
    first = True

    def encode(etype: str, stored: objects.Stored) -> bytes:
        nonlocal first
        doc = table(
            rtype,
            [stored],
            metadata={"resourceVersion": stored.obj.get("metadata", {}).get("resourceVersion", "")},
            include=include,
            headers=first,
            version=version,
        )
        first = False
        return orjson.dumps({"type": etype, "object": doc}) + b"\n"

    return encode
