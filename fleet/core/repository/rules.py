"""The repository format's field lists and small pure checks, shared by every part and by callers.

Owns: the allowed fields of each object, names and label rules (`dns_label_problem`, `label_key_problem`,
`label_value_problem`), relative paths (`unsafe_path`, `path_entry_problem`, `inside`), Helm `set` keys,
credential-looking values, and how a value is quoted in a message. Does not: read documents.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from fleet.core import yamlsafe

Limits = yamlsafe.Limits
DEFAULT_LIMITS = yamlsafe.DEFAULT_LIMITS

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
CLUSTER_SUFFIXES = (".yaml", ".yml")
BUNDLE_FILE = "bundle.yaml"
IGNORE_FILE = ".fleetignore"

CLUSTER_FIELDS = ("apiVersion", "kind", "metadata", "spec")
METADATA_FIELDS = ("name", "labels", "annotations")
CLUSTER_SPEC_FIELDS = ("context", "paused", "facts")
BUNDLE_SPEC_FIELDS = (
    "namespace",
    "paths",
    "placement",
    "overrides",
    "dependsOn",
    "prune",
    "allowEmpty",
    "adopt",
    "suspend",
    "rollout",
    "source",
    "decrypt",
)
SOURCE_FIELDS = ("kustomize", "helm")
KUSTOMIZE_FIELDS = ("path",)
HELM_FIELDS = ("chart", "releaseName", "values", "set", "includeCRDs")
DECRYPTORS = ("sops",)
CHART_FILE = "Chart.yaml"
# Helm release names: lowercase DNS-1123 subdomain characters, at most 53 characters (Helm's own rule).
RELEASE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
ROLLOUT_FIELDS = ("waves", "progressDeadline", "onFailure")
WAVE_FIELDS = ("name", "placement", "maxConcurrency", "maxFailures", "soak", "approval")
PLACEMENT_FIELDS = ("clusters", "clusterSelector", "cel")
SELECTOR_FIELDS = ("matchLabels", "matchExpressions")
REQUIREMENT_FIELDS = ("key", "operator", "values")
OVERRIDE_FIELDS = ("placement", "patches")
PATCH_FIELDS = ("target", "merge", "json")
TARGET_FIELDS = ("kind", "name", "apiVersion", "namespace")
JSON_PATCH_OPS = ("add", "remove", "replace", "move", "copy", "test")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")

# Credential-looking keys, compared after lowercasing and dropping everything but letters and digits.
_CREDENTIAL_WORDS = (
    "token",
    "password",
    "passwd",
    "secret",
    "clientkey",
    "clientcertificate",
    "certificateauthoritydata",
    "kubeconfig",
    "bearer",
    "apikey",
    "privatekey",
    "credential",
    "authprovider",
)
_PEM = re.compile(r"-----BEGIN [A-Z ]*-----")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")
# A URL carrying a credential: userinfo with a password (``https://user:pass@host``), or a query parameter
# such as ``?token=...`` / ``&access_token=...`` / ``&password=...``.
_URL_USERINFO = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*:[^/?#@\s]*@")
_URL_SECRET_PARAM = re.compile(
    r"[?&;](?:token|access_token|id_token|refresh_token|password|passwd|api_key|apikey|client_secret)=",
    re.IGNORECASE,
)
_KUBECONFIG = re.compile(r"(?s)kind:\s*Config\b.*\b(users|clusters):|(users|clusters):.*kind:\s*Config\b")

# ``${cluster.NAME}`` (``$${cluster.NAME}`` is an escaped one), as fleet.core.render substitutes them.
VARIABLE = re.compile(r"\$(\$?)\{cluster\.([^}]*)\}")
VARIABLE_MARK = b"${cluster."

Path_ = tuple[str | int, ...]


# ----------------------------------------------------------------------------------------------------------
# Small pure checks, public for reuse (the CLI and the placement layer quote the same rules).


def dns_label_problem(value: Any) -> str | None:
    """Why `value` is not a DNS-1123 label (cluster and bundle names, namespaces), or None."""
    if not isinstance(value, str):
        return f"must be a string, not {describe(value)}"
    if not value:
        return "must not be empty"
    if len(value) > 63:
        return f"is {len(value)} characters long, more than 63"
    if not _DNS_LABEL.fullmatch(value):
        return (
            "is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a "
            "letter or digit)"
        )
    return None


def label_key_problem(key: Any) -> str | None:
    """Why `key` is not a Kubernetes label or annotation key (``[prefix/]name``), or None."""
    if not isinstance(key, str):
        return f"must be a string, not {describe(key)}"
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix):
            return "has a prefix that is not a DNS-1123 subdomain (lowercase, at most 253 characters)"
    if not name:
        return "has an empty name"
    if len(name) > 63:
        return f"has a name of {len(name)} characters, more than 63"
    if not _LABEL_NAME.fullmatch(name):
        return (
            "has a name that is not alphanumeric with '-', '_' or '.' inside (starting and ending with a "
            "letter or digit)"
        )
    return None


def label_value_problem(value: Any) -> str | None:
    """Why `value` is not a Kubernetes label value, or None."""
    if not isinstance(value, str):
        return f"must be a string, not {describe(value)} (quote it)"
    if len(value) > 63:
        return f"is {len(value)} characters long, more than 63"
    if value and not _LABEL_NAME.fullmatch(value):
        return "must be empty or alphanumeric with '-', '_' or '.' inside (starting and ending alphanumeric)"
    return None


def unsafe_path(value: str) -> str | None:
    """Why a relative path taken from the user or the repository is refused, or None when it is fine."""
    if "\x00" in value:
        return "contains a NUL character"
    if "\\" in value:
        return "contains a backslash (use /)"
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", value):
        return "is a URL or drive path, not a relative path"
    if value.startswith("/") or value.startswith("~"):
        return "is an absolute path"
    if ".." in PurePosixPath(value).parts:
        return 'contains ".."'
    return None


def path_entry_problem(value: Any) -> str | None:
    """Why a `spec.paths` entry is refused before any I/O (``..``, absolute, backslash, NUL, URL), or None."""
    if not isinstance(value, str):
        return f"must be a string, not {describe(value)}"
    if not value:
        return "must not be empty"
    return unsafe_path(value)


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def quote(value: Any) -> str:
    """A scalar as it appears in a message (cut at 80 characters); a list or mapping only by its type, so
    a message about a field never shows the values nested below it (a credential, say)."""
    if isinstance(value, list | dict):
        return describe(value)
    text = json.dumps(value, ensure_ascii=False, default=repr) if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + '..."'


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def suggest(name: str, allowed: Sequence[str]) -> str:
    lowered = {a.lower(): a for a in allowed}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f' (did you mean "{lowered[close[0]]}"?)' if close else ""


def credential_word(key: str) -> bool:
    norm = re.sub(r"[^a-z0-9]", "", key.lower())
    return any(w in norm for w in _CREDENTIAL_WORDS)


def credential_value(value: str) -> str | None:
    if _PEM.search(value):
        return "a PEM block"
    if _JWT.search(value):
        return "a bearer token"
    if _KUBECONFIG.search(value):
        return "a kubeconfig"
    if _URL_USERINFO.search(value):
        return "a URL with a password"
    if _URL_SECRET_PARAM.search(value):
        return "a URL with a credential parameter"
    return None


def stem(filename: str) -> str:
    for suffix in CLUSTER_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def is_sops_document(data: Any) -> bool:
    """A YAML or JSON document that SOPS encrypted: a top-level ``sops`` mapping with a ``mac``."""
    return isinstance(data, dict) and isinstance(data.get("sops"), dict) and "mac" in data["sops"]


def inside(folder: str, rel: str) -> str | None:
    """`rel` (relative, POSIX) joined to `folder` (relative to the repository root) and normalised, or None
    when the result leaves the root (through ``..``) or `rel` is absolute."""
    if rel.startswith("/"):
        return None
    parts: list[str] = [p for p in folder.split("/") if p and p != "."]
    for part in rel.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def relative_problem(value: Any, *, variables: bool) -> str | None:
    """Why a path of spec.source (relative to the bundle folder) is refused before any I/O, or None."""
    if not isinstance(value, str) or not value:
        return f"must be a non-empty string, not {quote(value)}"
    if not variables and "${cluster." in value:
        return "cannot use ${cluster.*} here"
    text = VARIABLE.sub("x", value) if variables else value
    return unsafe_path(text)


def set_key_problem(key: str) -> str | None:
    """Why a key of spec.source.helm.set is refused (dotted names, ``\\.`` for a literal dot), or None."""
    if "[" in key or "]" in key:
        return "uses list indexes, which fleet does not take here: set the whole list instead"
    if any(not part for part in split_set_key(key)):
        return "has an empty part (two dots in a row, or a dot at an end)"
    return None


def split_set_key(key: str) -> list[str]:
    """``image.tag`` -> ``["image", "tag"]``; ``a\\.b.c`` -> ``["a.b", "c"]``."""
    parts = [""]
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key) and key[i + 1] == ".":
            parts[-1] += "."
            i += 2
            continue
        if c == ".":
            parts.append("")
        else:
            parts[-1] += c
        i += 1
    return parts
