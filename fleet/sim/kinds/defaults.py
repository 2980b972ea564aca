"""Defaulting and normalisation of built-in objects, as the real API server stores them.

Owns: the defaults of the common fields of the served built-in kinds (Deployment, StatefulSet,
DaemonSet, ReplicaSet, Job, CronJob, Pod and pod templates, Service, Secret, PersistentVolumeClaim,
Namespace), including list-map key defaults such as `protocol: TCP` on container and Service ports; and
the normalisation GitOps comparisons trip on: Secret `stringData` folded into `data` (base64) and
removed, Secret `data` values re-encoded as the canonical base64 of their bytes, and resource quantities written in canonical form (`canonical_quantity`, the rules of
k8s.io/apimachinery `resource.Quantity`: `1000m` -> `1`, `1024Mi` -> `1Gi`, `0.5` -> `500m`).
Quantities are found through the schema (`fleet.sim.kinds.structure`), so every Quantity field is covered.

Does not: allocate anything (cluster IPs, node ports, uids), run admission (service accounts), default
custom resources (their schema `default`s are the server's), or validate. `default` never mutates its
input: it works on a copy.
"""

from __future__ import annotations

import base64
import re
from fractions import Fraction
from typing import Any

from fleet.core import errors
from fleet.sim.kinds import structure as structure_mod
from fleet.sim.kinds import validation
from fleet.sim.kinds.structure import Node, Shape


class InvalidQuantity(errors.InputError):
    """A string that is not a resource quantity."""


# ---------------------------------------------------------------------------------------------------
# Quantities

_QUANTITY_RE = re.compile(r"^([+-]?)([0-9]*)(?:\.([0-9]*))?([eEinumkKMGTP]*[-+]?[0-9]*)$")
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_BY_EXP = {v: k for k, v in _DECIMAL_SUFFIXES.items()}
_BINARY_BY_EXP = {v // 10: k for k, v in _BINARY_SUFFIXES.items()}
_BINARY_BY_EXP[0] = ""
_NANO = Fraction(1, 10**9)


def _parse_quantity(text: str) -> tuple[Fraction, str]:
    """(value, format) with format one of DecimalSI, BinarySI, DecimalExponent."""
    m = _QUANTITY_RE.match(text)
    if not text or m is None or (not m.group(2) and not m.group(3) and m.group(3) is None):
        raise InvalidQuantity(
            f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {text!r}"
        )
    sign, whole, frac, suffix = m.group(1), m.group(2) or "0", m.group(3) or "", m.group(4)
    if not m.group(2) and m.group(3) is None:
        raise InvalidQuantity(f"unable to parse numeric part of quantity: {text!r}")
    digits = Fraction(int(whole + frac), 10 ** len(frac))
    if suffix in _DECIMAL_SUFFIXES:
        value, fmt = digits * Fraction(10) ** _DECIMAL_SUFFIXES[suffix], "DecimalSI"
    elif suffix in _BINARY_SUFFIXES:
        value, fmt = digits * 2 ** _BINARY_SUFFIXES[suffix], "BinarySI"
    elif suffix[:1] in ("e", "E") and re.fullmatch(r"[eE][-+]?[0-9]+", suffix):
        value, fmt = digits * Fraction(10) ** int(suffix[1:]), "DecimalExponent"
    else:
        raise InvalidQuantity(f"unable to parse quantity's suffix: {text!r}")
    if sign == "-":
        value = -value
    # Values finer than a nano round up (away from zero) to the next nano.
    scaled = value / _NANO
    if scaled.denominator != 1:
        magnitude = -(-abs(scaled.numerator) // scaled.denominator)
        value = Fraction(magnitude if value > 0 else -magnitude) * _NANO
    if fmt == "BinarySI" and 0 < abs(value) < 1:
        fmt = "DecimalSI"
    return value, fmt


def canonical_quantity(value: str | int | float) -> str:
    """The canonical string of a quantity (what the real server stores and returns)."""
    if isinstance(value, bool):
        raise InvalidQuantity(f"not a quantity: {value!r}")
    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    if text == "0":
        return "0"
    amount, fmt = _parse_quantity(text)
    if amount == 0:
        return "0"
    if fmt == "BinarySI" and (-1024 < amount < 1024 or amount.denominator != 1):
        fmt = "DecimalSI"
    sign = "-" if amount < 0 else ""
    magnitude = abs(amount)
    if fmt == "BinarySI":
        number = int(magnitude)
        exp = 0
        while number % 1024 == 0 and exp < 6:
            number //= 1024
            exp += 1
        return f"{sign}{number}{_BINARY_BY_EXP[exp]}"
    mantissa = int(magnitude / _NANO)
    exponent = -9
    while mantissa % 1000 == 0:
        mantissa //= 1000
        exponent += 3
    if fmt == "DecimalSI" and exponent in _DECIMAL_BY_EXP:
        return f"{sign}{mantissa}{_DECIMAL_BY_EXP[exponent]}"
    return f"{sign}{mantissa}" + (f"e{exponent}" if exponent else "")


# ---------------------------------------------------------------------------------------------------
# Entry point

_WORKLOADS_WITH_TEMPLATE = {
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ReplicaSet"),
    ("batch", "Job"),
    ("", "ReplicationController"),
    ("", "PodTemplate"),
}


def default(obj: dict[str, Any], *, group: str, kind: str) -> dict[str, Any]:
    """A defaulted, normalised copy of a built-in object (`obj` is not changed)."""
    out = _copy(obj)
    spec = out.get("spec")
    key = (group, kind)
    if key == ("apps", "Deployment") and isinstance(spec, dict):
        _deployment(spec)
    elif key == ("apps", "StatefulSet") and isinstance(spec, dict):
        _statefulset(spec)
    elif key == ("apps", "DaemonSet") and isinstance(spec, dict):
        _daemonset(spec)
    elif key in (("apps", "ReplicaSet"), ("", "ReplicationController")) and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
    elif key == ("batch", "Job") and isinstance(spec, dict):
        _job(spec)
    elif key == ("batch", "CronJob") and isinstance(spec, dict):
        _cronjob(spec)
    elif key == ("", "Pod") and isinstance(spec, dict):
        _pod_spec(spec)
        spec.setdefault("enableServiceLinks", True)  # a Pod's, not a template's (pod registry defaulting)
    elif key == ("", "Service") and isinstance(spec, dict):
        _service(spec)
    elif key == ("", "Secret"):
        _secret(out)
    elif key == ("", "PersistentVolumeClaim") and isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
    elif key == ("", "Namespace"):
        _namespace(out)
    if key in _WORKLOADS_WITH_TEMPLATE and isinstance(spec, dict):
        template = spec.get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            _pod_spec(template["spec"])
    _canonicalise(out, group=group, kind=kind)
    return out


def _copy(value: Any) -> Any:
    # Scalars are shared, not passed through a call each (most of an object's values are scalars).
    if isinstance(value, dict):
        return {k: _copy(v) if isinstance(v, dict | list) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) if isinstance(v, dict | list) else v for v in value]
    return value


# ---------------------------------------------------------------------------------------------------
# Per kind


def _deployment(spec: dict[str, Any]) -> None:
    spec.setdefault("replicas", 1)
    strategy = spec.get("strategy")
    if not isinstance(strategy, dict):
        strategy = {}
        spec["strategy"] = strategy
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            rolling = {}
            strategy["rollingUpdate"] = rolling
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)


def _statefulset(spec: dict[str, Any]) -> None:
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.get("updateStrategy")
    if not isinstance(strategy, dict):
        strategy = {}
        spec["updateStrategy"] = strategy
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            rolling = {}
            strategy["rollingUpdate"] = rolling
        rolling.setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    policy = spec.get("persistentVolumeClaimRetentionPolicy")
    if not isinstance(policy, dict):
        policy = {}
        spec["persistentVolumeClaimRetentionPolicy"] = policy
    policy.setdefault("whenDeleted", "Retain")
    policy.setdefault("whenScaled", "Retain")
    for claim in spec.get("volumeClaimTemplates") or ():
        if isinstance(claim, dict):
            claim.setdefault("apiVersion", "v1")
            claim.setdefault("kind", "PersistentVolumeClaim")
            claim_spec = claim.get("spec")
            if isinstance(claim_spec, dict):
                claim_spec.setdefault("volumeMode", "Filesystem")


def _daemonset(spec: dict[str, Any]) -> None:
    strategy = spec.get("updateStrategy")
    if not isinstance(strategy, dict):
        strategy = {}
        spec["updateStrategy"] = strategy
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            rolling = {}
            strategy["rollingUpdate"] = rolling
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)


def _job(spec: dict[str, Any]) -> None:
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if spec.get("podFailurePolicy") is None:
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    else:
        spec.setdefault("podReplacementPolicy", "Failed")


def _cronjob(spec: dict[str, Any]) -> None:
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job = spec.get("jobTemplate")
    if isinstance(job, dict) and isinstance(job.get("spec"), dict):
        template = job["spec"].get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            _pod_spec(template["spec"])


def _pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for field in ("containers", "initContainers"):
        for container in spec.get(field) or ():
            if isinstance(container, dict):
                _container(container)
    for container in spec.get("ephemeralContainers") or ():
        if isinstance(container, dict):
            _container(container)
    for volume in spec.get("volumes") or ():
        if isinstance(volume, dict):
            _volume(volume)


def image_pull_policy(image: str) -> str:
    """Always for `:latest` or no tag (and no digest), else IfNotPresent."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "Always"
    return "Always" if last.rsplit(":", 1)[1] == "latest" else "IfNotPresent"


def _container(container: dict[str, Any]) -> None:
    image = container.get("image")
    if isinstance(image, str) and "imagePullPolicy" not in container:
        container["imagePullPolicy"] = image_pull_policy(image)
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or ():
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for env in container.get("env") or ():
        if isinstance(env, dict):
            source = env.get("valueFrom")
            if isinstance(source, dict) and isinstance(source.get("fieldRef"), dict):
                source["fieldRef"].setdefault("apiVersion", "v1")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if isinstance(probe, dict):
            probe.setdefault("timeoutSeconds", 1)
            probe.setdefault("periodSeconds", 10)
            probe.setdefault("successThreshold", 1)
            probe.setdefault("failureThreshold", 3)
            http = probe.get("httpGet")
            if isinstance(http, dict):
                http.setdefault("scheme", "HTTP")


def _volume(volume: dict[str, Any]) -> None:
    for source in ("configMap", "secret"):
        item = volume.get(source)
        if isinstance(item, dict):
            item.setdefault("defaultMode", 420)
    projected = volume.get("projected")
    if isinstance(projected, dict):
        projected.setdefault("defaultMode", 420)
    host = volume.get("hostPath")
    if isinstance(host, dict):
        host.setdefault("type", "")


def _service(spec: dict[str, Any]) -> None:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or ():
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if port.get("targetPort") in (None, 0, "") and "port" in port:
                port["targetPort"] = port["port"]


def _secret(obj: dict[str, Any]) -> None:
    obj.setdefault("type", "Opaque")
    data = obj.get("data")
    if isinstance(data, dict):
        # The server holds the decoded bytes and encodes them again on the way out: `YWJj\nZA==` and
        # `YWJjZB==` (ignored newline, non-zero trailing bits) come back as `YWJjZA==`.
        for key, value in data.items():
            if isinstance(value, str):
                data[key] = validation.canonical_base64(value)
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = obj.get("data")
        if not isinstance(data, dict):
            data = {}
        for key, value in string_data.items():
            raw = value if isinstance(value, str) else str(value)
            data[key] = base64.b64encode(raw.encode()).decode()
        obj["data"] = data


def _namespace(obj: dict[str, Any]) -> None:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("name"), str):
        labels = meta.get("labels")
        if not isinstance(labels, dict):
            labels = {}
            meta["labels"] = labels
        labels["kubernetes.io/metadata.name"] = meta["name"]


# ---------------------------------------------------------------------------------------------------
# Quantities found through the schema

_QUANTITY_CACHE: dict[int, bool] = {}


def _holds_quantity(node: Node) -> bool:
    # Compiled nodes live for the process, so caching by identity is safe; a node being computed
    # counts as holding none (only JSONSchemaProps is recursive, and it holds no quantity).
    key = id(node)
    cached = _QUANTITY_CACHE.get(key)
    if cached is not None:
        return cached
    _QUANTITY_CACHE[key] = False
    if node.shape is Shape.SCALAR:
        found = node.format == "quantity"
    elif node.shape in (Shape.MAP, Shape.LIST):
        found = node.elem is not None and _holds_quantity(node.elem)
    elif node.shape is Shape.STRUCT:
        found = any(_holds_quantity(child) for child in node.fields.values())
    else:
        found = False
    _QUANTITY_CACHE[key] = found
    return found


def _canonicalise(obj: dict[str, Any], *, group: str, kind: str) -> None:
    api_version = obj.get("apiVersion")
    version = api_version.rsplit("/", 1)[-1] if isinstance(api_version, str) and api_version else "v1"
    try:
        structure = structure_mod.builtin(group, version, kind)
    except structure_mod.UnknownKind:
        return
    _walk(obj, structure.root, "")


def _walk(value: Any, node: Node, path: str) -> Any:
    """Canonicalise quantities below `value` in place; returns the (possibly replaced) scalar."""
    shape = node.shape
    if shape is Shape.SCALAR:
        if node.format == "quantity" and isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                return canonical_quantity(value)
            except InvalidQuantity as e:
                raise InvalidQuantity(f"{path}: {e}") from None
        return value
    if not _holds_quantity(node):
        return value
    if isinstance(value, dict):
        if shape is Shape.STRUCT:
            for name, item in value.items():
                child = node.fields.get(name)
                if child is not None and item is not None:
                    replaced = _walk(item, child, f"{path}.{name}")
                    if replaced is not item:
                        value[name] = replaced
        elif shape is Shape.MAP and node.elem is not None:
            for name, item in value.items():
                replaced = _walk(item, node.elem, f"{path}.{name}")
                if replaced is not item:
                    value[name] = replaced
    elif isinstance(value, list) and shape is Shape.LIST and node.elem is not None:
        for i, item in enumerate(value):
            replaced = _walk(item, node.elem, f"{path}[{i}]")
            if replaced is not item:
                value[i] = replaced
    return value
