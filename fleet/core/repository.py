"""The GitOps repository format: files of one revision -> clusters, bundles and their manifests, validated.

Owns: `parse` (a `model.Snapshot` -> `model.Repo`, pure: no I/O, no clock), every validation rule of the
repository format (docs/repository.md; the reference for users is docs/repository.md), and `load` (the async
convenience the commands use: read a work tree or a commit with `fleet.clients.source`, say on stderr what was read,
parse in a worker thread), and `manifests_of` (one document -> the objects it declares: a `List` or
`<Kind>List` expanded to its items, as kubectl does; shared with `fleet.clients.sources`). `Limits` is
`fleet.core.yamlsafe.Limits`.
Does not: decide placement or render (`fleet.core.placement`, `fleet.core.render`; their checks that need a
cluster at hand, such as an override that matches no object, live there), or read git itself.

How problems break things (docs/repository.md: a broken cluster file freezes that cluster; malformed YAML in one bundle
fails that bundle only): every error found in ``clusters/NAME.yaml`` puts NAME in `Repo.broken_clusters`
and leaves it out of `Repo.clusters`; every error in ``bundles/NAME/...`` (bundle.yaml, a manifest, a
link or an oversized file in its folder, a `dependsOn` cycle) puts NAME in `Repo.broken_bundles`. Nothing
is ever used from a half-read bundle. Warnings (an unknown cluster named in `placement.clusters`, a
revision without clusters or bundles, ignored files) break nothing.

Every problem is a `model.Problem` whose line is the line of the offending field (1 when the problem is
the file itself); messages quote the offending value, except for credential-looking fields of cluster
files, which are named and never shown.
"""

from __future__ import annotations

import difflib
import functools
import graphlib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

import anyio.to_thread
import pathspec

from fleet.core import cel, durations, errors, model, yamlsafe

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
_RELEASE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
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
_VARIABLE = re.compile(r"\$(\$?)\{cluster\.([^}]*)\}")
_VARIABLE_MARK = b"${cluster."

Path_ = tuple[str | int, ...]


# ----------------------------------------------------------------------------------------------------------
# Small pure checks, public for reuse (the CLI and the placement layer quote the same rules).


def dns_label_problem(value: Any) -> str | None:
    """Why `value` is not a DNS-1123 label (cluster and bundle names, namespaces), or None."""
    if not isinstance(value, str):
        return f"must be a string, not {_describe(value)}"
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
        return f"must be a string, not {_describe(key)}"
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
        return f"must be a string, not {_describe(value)} (quote it)"
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
        return f"must be a string, not {_describe(value)}"
    if not value:
        return "must not be empty"
    return unsafe_path(value)


def _describe(value: Any) -> str:
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


def _quote(value: Any) -> str:
    """A scalar as it appears in a message (cut at 80 characters); a list or mapping only by its type, so
    a message about a field never shows the values nested below it (a credential, say)."""
    if isinstance(value, list | dict):
        return _describe(value)
    text = json.dumps(value, ensure_ascii=False, default=repr) if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + '..."'


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _suggest(name: str, allowed: Sequence[str]) -> str:
    lowered = {a.lower(): a for a in allowed}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f' (did you mean "{lowered[close[0]]}"?)' if close else ""


def _credential_word(key: str) -> bool:
    norm = re.sub(r"[^a-z0-9]", "", key.lower())
    return any(w in norm for w in _CREDENTIAL_WORDS)


def _credential_value(value: str) -> str | None:
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


# ----------------------------------------------------------------------------------------------------------
# Problem collection with line lookup.


class _Doc:
    """One parsed YAML document with its field lines, reporting problems into a shared list."""

    def __init__(
        self,
        *,
        path: str,
        doc: yamlsafe.Document,
        sink: list[model.Problem],
        bundle: str | None = None,
        cluster: str | None = None,
    ) -> None:
        self.path = path
        self.doc = doc
        self.sink = sink
        self.bundle = bundle
        self.cluster = cluster
        self.errors = 0
        # Credential-looking fields: reported once by name; no other message may quote their values.
        self.secret_paths: set[Path_] = set()

    def line(self, path: Path_) -> int:
        lines = self.doc.lines
        for end in range(len(path), 0, -1):
            found = lines.get(path[:end])
            if found is not None:
                return found
        return self.doc.line

    def value_line(self, path: Path_) -> int:
        return self.doc.value_lines.get(path, self.line(path))

    def error(self, path: Path_, message: str, *, line: int | None = None, secret: bool = False) -> None:
        self.errors += 1
        if not secret and any(path[: len(p)] == p for p in self.secret_paths):
            return
        self.sink.append(
            model.Problem(
                self.path,
                line if line is not None else self.line(path),
                message,
                model.Severity.ERROR,
                bundle=self.bundle,
                cluster=self.cluster,
            )
        )

    def warning(self, path: Path_, message: str) -> None:
        self.sink.append(
            model.Problem(
                self.path,
                self.line(path),
                message,
                model.Severity.WARNING,
                bundle=self.bundle,
                cluster=self.cluster,
            )
        )

    def mapping(self, obj: Any, path: Path_, *, what: str = "a mapping") -> dict[str, Any] | None:
        if isinstance(obj, dict):
            return obj
        self.error(path, f"{_dotted(path)} must be {what}, not {_describe(obj)}")
        return None

    def unknown_fields(
        self, obj: Mapping[str, Any], path: Path_, allowed: Sequence[str], *, skip: Iterable[Path_] = ()
    ) -> None:
        skipped = set(skip)
        for key in obj:
            if key in allowed:
                continue
            sub = (*path, str(key))
            if sub in skipped:
                continue
            self.error(sub, f'unknown field "{_dotted(sub)}"{_suggest(str(key), allowed)}')

    def api_version_and_kind(self, obj: Mapping[str, Any], kind: str) -> None:
        api = obj.get("apiVersion")
        if "apiVersion" not in obj:
            self.error((), f'apiVersion is missing (expected "{model.API_VERSION}")', line=self.doc.line)
        elif api != model.API_VERSION:
            self.error(("apiVersion",), f'apiVersion must be "{model.API_VERSION}", not {_quote(api)}')
        got = obj.get("kind")
        if "kind" not in obj:
            self.error((), f'kind is missing (expected "{kind}")', line=self.doc.line)
        elif got != kind:
            self.error(("kind",), f'kind must be "{kind}", not {_quote(got)}')

    def string_map(self, obj: Any, path: Path_, *, values: bool) -> dict[str, str]:
        """metadata.labels / annotations: keys are label keys; label values when `values`."""
        if obj is None:
            return {}
        m = self.mapping(obj, path)
        if m is None:
            return {}
        out: dict[str, str] = {}
        for key, value in m.items():
            sub = (*path, str(key))
            why = label_key_problem(key)
            if why:
                self.error(sub, f"{_dotted(path)} key {_quote(key)} {why}")
                continue
            if values:
                why = label_value_problem(value)
                if why:
                    self.error(sub, f"{_dotted(sub)} value {_quote(value)} {why}")
                    continue
            elif not isinstance(value, str):
                self.error(sub, f"{_dotted(sub)} must be a string, not {_describe(value)} (quote it)")
                continue
            out[str(key)] = value
        return out

    def boolean(self, obj: Mapping[str, Any], path: Path_, key: str, default: bool) -> bool:
        if key not in obj:
            return default
        value = obj[key]
        if not isinstance(value, bool):
            self.error((*path, key), f"{_dotted((*path, key))} must be true or false, not {_quote(value)}")
            return default
        return value


# ----------------------------------------------------------------------------------------------------------
# Parsing.


class ParseCache:
    """Parsed files of the previous revision, so that a new commit re-parses only the files it changed.

    Keyed by path, content digest and limits; holds either the documents or the error of a file. After
    each `parse`, only the entries that revision used are kept, so memory stays at one revision's worth.
    Parsed documents are shared between the `Repo`s of consecutive revisions (no layer mutates them).
    Not thread-safe: one cache per sequence of parses (the engine's revision loop).
    """

    def __init__(self) -> None:
        self._entries: dict[
            tuple[str, bool, bytes, yamlsafe.Limits], list[yamlsafe.Document] | errors.ValidationError
        ] = {}
        self._used: set[tuple[str, bool, bytes, yamlsafe.Limits]] = set()
        self.hits = 0
        self.misses = 0

    def load(
        self, data: bytes, *, path: str, limits: yamlsafe.Limits, lines: bool
    ) -> list[yamlsafe.Document]:
        key = (path, lines, hashlib.blake2b(data, digest_size=20).digest(), limits)
        self._used.add(key)
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            try:
                found = _load_file(data, path=path, limits=limits, lines=lines)
            except errors.ValidationError as e:
                found = e
            self._entries[key] = found
        else:
            self.hits += 1
        if isinstance(found, errors.ValidationError):
            raise found
        return found

    def retain_used(self) -> None:
        """Drop what the last revision did not use."""
        self._entries = {k: v for k, v in self._entries.items() if k in self._used}
        self._used = set()

    def __len__(self) -> int:
        return len(self._entries)


def _load_file(data: bytes, *, path: str, limits: yamlsafe.Limits, lines: bool) -> list[yamlsafe.Document]:
    if path.endswith(".json"):
        return yamlsafe.load_json(data, path=path, limits=limits)
    return yamlsafe.load_yaml(data, path=path, limits=limits, lines=lines)


@dataclass
class _State:
    snapshot: model.Snapshot
    limits: yamlsafe.Limits
    cache: ParseCache | None = None
    problems: list[model.Problem] = field(default_factory=list)
    clusters: dict[str, model.Cluster] = field(default_factory=dict)
    cluster_files: dict[str, str] = field(default_factory=dict)  # name -> shown path of its first file
    broken_clusters: dict[str, list[model.Problem]] = field(default_factory=dict)
    bundles: dict[str, model.Bundle] = field(default_factory=dict)
    broken_bundle_names: set[str] = field(default_factory=set)
    # bundle folder -> (its bundle.yaml, the dependsOn field path, the names), broken bundles included
    dependencies: dict[str, tuple[_Doc, Path_, tuple[str, ...]]] = field(default_factory=dict)
    placement_clusters: list[tuple[_Doc, Path_, str]] = field(default_factory=list)

    def shown(self, rel: str) -> str:
        base = self.snapshot.base
        return f"{base}/{rel}" if base else rel

    def load(self, rel: str, *, lines: bool = False) -> list[yamlsafe.Document]:
        """The documents of one file (through the cache when there is one); raises ValidationError."""
        data = self.snapshot.files[rel]
        shown = self.shown(rel)
        if self.cache is not None:
            return self.cache.load(data, path=shown, limits=self.limits, lines=lines)
        return _load_file(data, path=shown, limits=self.limits, lines=lines)


def parse(
    snapshot: model.Snapshot, *, limits: yamlsafe.Limits = DEFAULT_LIMITS, cache: ParseCache | None = None
) -> model.Repo:
    """Parse and validate one revision (pure). Every problem is collected; nothing raises for bad input.

    `cache` (optional) re-uses the parsed files of the previous call whose content did not change.
    """
    st = _State(snapshot=snapshot, limits=limits, cache=cache)
    by_path_problems = _attribute_source_problems(st)

    cluster_rels: list[str] = []
    bundle_folders: dict[str, list[str]] = {}
    for rel in snapshot.files:
        parts = rel.split("/")
        if parts[0] == "clusters":
            if len(parts) == 2:
                cluster_rels.append(rel)
            else:
                st.problems.append(
                    _warning(st.shown(rel), "ignored: clusters/ holds one file per cluster, no subfolders")
                )
        elif parts[0] == "bundles":
            if len(parts) == 2:
                if not parts[1].startswith("."):
                    st.problems.append(
                        _warning(st.shown(rel), "ignored: bundles/ holds one folder per bundle")
                    )
            else:
                bundle_folders.setdefault(parts[1], []).append(rel)
    for folder in by_path_problems.bundle_folders:
        bundle_folders.setdefault(folder, [])

    for rel in sorted(cluster_rels):
        _parse_cluster(st, rel)
    for stem in by_path_problems.cluster_stems:
        st.broken_clusters.setdefault(stem, [])

    for folder in sorted(bundle_folders):
        _parse_bundle(
            st, folder, sorted(bundle_folders[folder]), broken=folder in by_path_problems.bundle_folders
        )

    _check_dependencies(st)
    _check_placement_clusters(st)

    if not cluster_rels and not by_path_problems.cluster_stems:
        st.problems.append(
            _warning(st.shown("clusters"), "no cluster file (clusters/NAME.yaml) in this revision")
        )
    if not bundle_folders:
        st.problems.append(
            _warning(st.shown("bundles"), "no bundle (bundles/NAME/bundle.yaml) in this revision")
        )

    if cache is not None:
        cache.retain_used()
    problems = sorted(st.problems, key=lambda p: (p.path, p.line))
    broken_clusters: dict[str, list[model.Problem]] = {k: list(v) for k, v in st.broken_clusters.items()}
    broken_bundles: dict[str, list[model.Problem]] = {name: [] for name in st.broken_bundle_names}
    for p in problems:
        if p.severity is not model.Severity.ERROR:
            continue
        if p.cluster is not None and p.cluster in broken_clusters:
            broken_clusters[p.cluster].append(p)
        if p.bundle is not None and p.bundle in broken_bundles:
            broken_bundles[p.bundle].append(p)
    bundles = {k: v for k, v in sorted(st.bundles.items()) if k not in st.broken_bundle_names}
    clusters = {k: v for k, v in sorted(st.clusters.items()) if k not in broken_clusters}
    return model.Repo(
        revision=snapshot.revision,
        clusters=MappingProxyType(clusters),
        bundles=MappingProxyType(bundles),
        problems=tuple(problems),
        broken_clusters=MappingProxyType({k: tuple(v) for k, v in sorted(broken_clusters.items())}),
        broken_bundles=MappingProxyType({k: tuple(v) for k, v in sorted(broken_bundles.items())}),
        message=snapshot.message,
        author=snapshot.author,
        committed_at=snapshot.committed_at,
    )


async def parse_in_thread(
    snapshot: model.Snapshot, *, limits: yamlsafe.Limits = DEFAULT_LIMITS, cache: ParseCache | None = None
) -> model.Repo:
    """`parse` in a worker thread, for async callers (a large revision takes most of a second)."""
    return await anyio.to_thread.run_sync(functools.partial(parse, snapshot, limits=limits, cache=cache))


def _warning(path: str, message: str, *, line: int = 1) -> model.Problem:
    return model.Problem(path, line, message, model.Severity.WARNING)


@dataclass
class _Attributed:
    cluster_stems: set[str] = field(default_factory=set)
    bundle_folders: set[str] = field(default_factory=set)


def _attribute_source_problems(st: _State) -> _Attributed:
    """Problems the source layer found (links, submodules, oversized files) break what holds them."""
    out = _Attributed()
    base = st.snapshot.base
    for p in st.snapshot.problems:
        rel = p.path[len(base) + 1 :] if base and p.path.startswith(base + "/") else p.path
        parts = rel.split("/")
        bundle = cluster = None
        if parts[0] == "clusters" and len(parts) >= 2:
            cluster = _stem(parts[1])
            out.cluster_stems.add(cluster)
        elif parts[0] == "bundles" and len(parts) >= 2:
            bundle = parts[1]
            out.bundle_folders.add(bundle)
        st.problems.append(
            model.Problem(p.path, p.line, p.message, p.severity, bundle=bundle, cluster=cluster)
        )
    return out


def _stem(filename: str) -> str:
    for suffix in CLUSTER_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


# -- clusters ----------------------------------------------------------------------------------------------


def _parse_cluster(st: _State, rel: str) -> None:
    filename = rel.split("/", 1)[1]
    shown = st.shown(rel)
    if filename.startswith("."):
        return
    if not filename.endswith(CLUSTER_SUFFIXES):
        st.problems.append(_warning(shown, "ignored: cluster files end in .yaml"))
        return
    stem = _stem(filename)
    try:
        docs = st.load(rel, lines=True)
    except errors.ValidationError as e:
        st.problems.append(model.Problem(shown, e.line, str(e.args[0]), cluster=stem))
        st.broken_clusters.setdefault(stem, [])
        return
    present = [d for d in docs if d.data is not None]
    if not present:
        st.problems.append(model.Problem(shown, 1, "empty file: expected one Cluster", cluster=stem))
        st.broken_clusters.setdefault(stem, [])
        return
    if len(present) > 1:
        st.problems.append(
            model.Problem(
                shown, present[1].line, "one Cluster per file: found a second document", cluster=stem
            )
        )
        for extra in present[1:]:  # credentials are refused wherever they are
            _scan_credentials(_Doc(path=shown, doc=extra, sink=st.problems, cluster=stem), extra.data)
    d = _Doc(path=shown, doc=present[0], sink=st.problems, cluster=stem)
    cluster = _cluster_from(d, stem=stem, filename=filename)
    if d.errors or len(present) > 1 or cluster is None:
        st.broken_clusters.setdefault(stem, [])
        return
    if cluster.name in st.cluster_files:
        d.error(
            ("metadata", "name"),
            f"cluster {_quote(cluster.name)} is also defined in {st.cluster_files[cluster.name]}",
        )
        st.broken_clusters.setdefault(stem, [])
        return
    st.cluster_files[cluster.name] = shown
    st.clusters[cluster.name] = cluster


def _scan_credentials(d: _Doc, obj: Any) -> set[Path_]:
    """Report every credential-looking field of a cluster file (by path, never by value)."""
    found: set[Path_] = set()
    stack: list[tuple[Path_, Any]] = [((), obj)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                sub = (*path, str(k))
                if _credential_word(str(k)):
                    found.add(sub)
                    continue
                stack.append((sub, v))
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
        elif isinstance(value, str):
            what = _credential_value(value)
            if what:
                found.add(path)
    d.secret_paths.update(found)
    for path in sorted(found, key=lambda p: d.line(p)):
        d.error(
            path,
            secret=True,
            message=f'credential-looking field "{_dotted(path)}": credentials never live in the repository '
            "(put them in the controller's kubeconfig); the value is not shown",
        )
    return found


def _cluster_from(d: _Doc, *, stem: str, filename: str) -> model.Cluster | None:
    obj = d.doc.data
    if not isinstance(obj, dict):
        d.error((), f"expected a mapping (a Cluster), not {_describe(obj)}", line=d.doc.line)
        return None
    secret_paths = _scan_credentials(d, obj)
    d.api_version_and_kind(obj, "Cluster")
    d.unknown_fields(obj, (), CLUSTER_FIELDS, skip=secret_paths)
    meta = d.mapping(obj.get("metadata"), ("metadata",)) if "metadata" in obj else None
    if "metadata" not in obj:
        d.error((), "metadata.name is missing", line=d.doc.line)
    name: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if meta is not None:
        d.unknown_fields(meta, ("metadata",), METADATA_FIELDS, skip=secret_paths)
        name = _check_name(d, meta)
        if name is not None and name != stem:
            d.error(
                ("metadata", "name"),
                f'file name "{filename}" does not match metadata.name {_quote(name)} '
                f"(expected clusters/{name}.yaml)",
            )
        labels = d.string_map(meta.get("labels"), ("metadata", "labels"), values=True)
        annotations = d.string_map(meta.get("annotations"), ("metadata", "annotations"), values=False)
    spec: dict[str, Any] = {}
    if "spec" in obj and obj["spec"] is not None:
        spec = d.mapping(obj["spec"], ("spec",)) or {}
    d.unknown_fields(spec, ("spec",), CLUSTER_SPEC_FIELDS, skip=secret_paths)
    context = spec.get("context")
    if "context" in spec and (not isinstance(context, str) or not context):
        d.error(("spec", "context"), f"spec.context must be a non-empty string, not {_quote(context)}")
        context = None
    paused = d.boolean(spec, ("spec",), "paused", False)
    facts: dict[str, Any] = {}
    if spec.get("facts") is not None:
        facts = d.mapping(spec["facts"], ("spec", "facts")) or {}
    if name is None:
        return None
    return model.Cluster(
        name=name,
        labels=MappingProxyType(labels),
        annotations=MappingProxyType(annotations),
        context=context if isinstance(context, str) and context else name,
        paused=paused,
        facts=MappingProxyType(dict(facts)),
        path=d.path,
    )


def _check_name(d: _Doc, meta: Mapping[str, Any]) -> str | None:
    if "name" not in meta:
        d.error(("metadata",), "metadata.name is missing")
        return None
    name = meta["name"]
    why = dns_label_problem(name)
    if why:
        d.error(("metadata", "name"), f"metadata.name {_quote(name)} {why}")
        return None
    return str(name)


# -- bundles -----------------------------------------------------------------------------------------------


def _parse_bundle(st: _State, folder: str, rels: list[str], *, broken: bool) -> None:
    prefix = f"bundles/{folder}/"
    bundle_rel = prefix + BUNDLE_FILE
    shown = st.shown(bundle_rel)
    key = folder
    if bundle_rel not in st.snapshot.files:
        if broken:  # bundle.yaml is a link or too big: the source problem says so
            st.broken_bundle_names.add(key)
            return
        alt = prefix + "bundle.yml"
        if alt in st.snapshot.files:
            st.problems.append(
                model.Problem(st.shown(alt), 1, "a bundle file is named bundle.yaml (rename it)", bundle=key)
            )
            st.broken_bundle_names.add(key)
        else:
            st.problems.append(_warning(st.shown(prefix.rstrip("/")), "ignored: folder has no bundle.yaml"))
        return
    try:
        docs = st.load(bundle_rel, lines=True)
    except errors.ValidationError as e:
        st.problems.append(model.Problem(shown, e.line, str(e.args[0]), bundle=key))
        st.broken_bundle_names.add(key)
        return
    present = [doc for doc in docs if doc.data is not None]
    if not present:
        st.problems.append(model.Problem(shown, 1, "empty file: expected one Bundle", bundle=key))
        st.broken_bundle_names.add(key)
        return
    d = _Doc(path=shown, doc=present[0], sink=st.problems, bundle=key)
    if len(present) > 1:
        d.error((), "one Bundle per file: found a second document", line=present[1].line)
    bundle = _bundle_from(st, d, folder=folder, rels=rels)
    if broken or d.errors or bundle is None:
        st.broken_bundle_names.add(key)
    else:  # valid: its name is its folder's, so unique
        st.bundles[bundle.name] = bundle


def _bundle_from(st: _State, d: _Doc, *, folder: str, rels: list[str]) -> model.Bundle | None:
    obj = d.doc.data
    if not isinstance(obj, dict):
        d.error((), f"expected a mapping (a Bundle), not {_describe(obj)}", line=d.doc.line)
        return None
    d.api_version_and_kind(obj, "Bundle")
    d.unknown_fields(obj, (), CLUSTER_FIELDS)
    meta = d.mapping(obj.get("metadata"), ("metadata",)) if "metadata" in obj else None
    if "metadata" not in obj:
        d.error((), "metadata.name is missing", line=d.doc.line)
    name: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if meta is not None:
        d.unknown_fields(meta, ("metadata",), METADATA_FIELDS)
        name = _check_name(d, meta)
        if name is not None and name != folder:
            d.error(
                ("metadata", "name"),
                f'folder "bundles/{folder}" does not match metadata.name {_quote(name)} '
                f"(expected bundles/{name}/)",
            )
        labels = d.string_map(meta.get("labels"), ("metadata", "labels"), values=True)
        annotations = d.string_map(meta.get("annotations"), ("metadata", "annotations"), values=False)
    spec: dict[str, Any] = {}
    if "spec" in obj and obj["spec"] is not None:
        spec = d.mapping(obj["spec"], ("spec",)) or {}
    d.unknown_fields(spec, ("spec",), BUNDLE_SPEC_FIELDS)

    namespace = None
    if spec.get("namespace") is not None:
        why = dns_label_problem(spec["namespace"])
        if why:
            d.error(("spec", "namespace"), f"spec.namespace {_quote(spec['namespace'])} {why}")
        else:
            namespace = str(spec["namespace"])

    paths = _check_paths(d, spec)
    placement = None
    if "placement" in spec:
        placement = _placement(st, d, spec["placement"], ("spec", "placement"))
    overrides = _overrides(st, d, spec.get("overrides"))
    depends = _depends_on(st, d, spec.get("dependsOn"), own=name or folder)
    prune = d.boolean(spec, ("spec",), "prune", True)
    allow_empty = d.boolean(spec, ("spec",), "allowEmpty", False)
    adopt = d.boolean(spec, ("spec",), "adopt", False)
    suspend = d.boolean(spec, ("spec",), "suspend", False)
    rollout = _rollout(st, d, spec) if "rollout" in spec else model.DEFAULT_ROLLOUT

    decrypt = _decrypt(d, spec)
    source_spec = _source(st, d, spec, folder=folder, name=name or folder) if "source" in spec else None
    encrypted: tuple[str, ...] = ()
    if "source" in spec:  # valid or not, the folder's files belong to the source, not to plain manifests
        if paths is not None:
            d.error(
                ("spec", "paths"),
                "spec.paths does not apply with spec.source (the source reads the files it needs)",
            )
        manifests: tuple[model.Manifest, ...] = ()
    else:
        manifests, encrypted = _manifests(
            st, d, folder=folder, rels=rels, paths=paths, namespace=namespace, decrypt=decrypt is not None
        )
    if name is None:
        return None
    lines: dict[str, int] = {}
    if depends:
        lines["dependsOn"] = d.line(("spec", "dependsOn"))
        for i, dep in enumerate(spec["dependsOn"]):
            if isinstance(dep, str):
                lines.setdefault(f"dependsOn.{dep}", d.value_line(("spec", "dependsOn", i)))
    return model.Bundle(
        name=name,
        path=d.path,
        namespace=namespace,
        paths=paths,
        placement=placement,
        overrides=overrides,
        depends_on=depends,
        prune=prune,
        allow_empty=allow_empty,
        adopt=adopt,
        suspend=suspend,
        rollout=rollout,
        manifests=manifests,
        labels=MappingProxyType(labels),
        annotations=MappingProxyType(annotations),
        source=source_spec,
        decrypt=decrypt,
        encrypted=encrypted,
        lines=MappingProxyType(lines),
    )


def _rollout(st: _State, d: _Doc, spec: Mapping[str, Any]) -> model.RolloutSpec:
    """`spec.rollout` (docs/rollouts.md); the default strategy where a part is absent or broken (the bundle
    is broken then anyway, so nothing rolls out with a strategy nobody wrote)."""
    path: Path_ = ("spec", "rollout")
    raw = d.mapping(spec["rollout"], path)
    if raw is None:
        return model.DEFAULT_ROLLOUT
    d.unknown_fields(raw, path, ROLLOUT_FIELDS)
    deadline = model.DEFAULT_ROLLOUT.progress_deadline
    if raw.get("progressDeadline") is not None:
        got = _duration(d, raw["progressDeadline"], (*path, "progressDeadline"))
        if got is not None and got <= 0:
            d.error((*path, "progressDeadline"), "spec.rollout.progressDeadline must be more than 0")
        elif got is not None:
            deadline = got
    on_failure = model.OnFailure.HALT
    if raw.get("onFailure") is not None:
        value = raw["onFailure"]
        try:
            on_failure = model.OnFailure(value)
        except ValueError:
            d.error(
                (*path, "onFailure"), f"spec.rollout.onFailure must be halt or rollback, not {_quote(value)}"
            )
    waves: list[model.WaveSpec] = []
    listed = raw.get("waves")
    if listed is None:
        waves = list(model.DEFAULT_ROLLOUT.waves)
    elif isinstance(listed, list) and not listed:
        d.error((*path, "waves"), "spec.rollout.waves is empty: list at least one wave (or omit waves)")
    elif not isinstance(listed, list):
        d.error(
            (*path, "waves"), f"spec.rollout.waves must be a non-empty list of waves, not {_describe(listed)}"
        )
    else:
        seen: dict[str, int] = {}
        catch_all: str | None = None
        for i, item in enumerate(listed):
            wave = _wave(st, d, item, (*path, "waves", i))
            if wave is None:
                continue
            if wave.name in seen:
                d.error(
                    (*path, "waves", i, "name"),
                    f"spec.rollout.waves[{i}].name {_quote(wave.name)} is used by waves[{seen[wave.name]}] too",
                )
                continue
            if catch_all is not None:
                d.error(
                    (*path, "waves", i),
                    f"spec.rollout.waves[{i}] ({wave.name}) comes after wave {catch_all}, which has no placement "
                    "and takes every remaining cluster: it can never get one",
                )
            seen[wave.name] = i
            if wave.placement is None:
                catch_all = wave.name
            waves.append(wave)
    if not waves:
        return model.DEFAULT_ROLLOUT
    return model.RolloutSpec(
        waves=tuple(waves), progress_deadline=deadline, on_failure=on_failure, line=d.line(path)
    )


def _wave(st: _State, d: _Doc, raw: Any, path: Path_) -> model.WaveSpec | None:
    where = _dotted(path)
    item = d.mapping(raw, path)
    if item is None:
        return None
    d.unknown_fields(item, path, WAVE_FIELDS)
    name = item.get("name")
    why = dns_label_problem(name) if "name" in item else "is missing"
    if why:
        d.error(
            (*path, "name") if "name" in item else path,
            f"{where}.name {_quote(name) + ' ' if 'name' in item else ''}{why}",
        )
        return None
    placement = None
    if "placement" in item:
        placement = _placement(st, d, item["placement"], (*path, "placement"))
        if placement is None:
            return None
    concurrency = _count(d, item, path, "maxConcurrency", model.Count(25, percent=True), least=1)
    failures = _count(d, item, path, "maxFailures", model.Count(0), least=0)
    soak = 0.0
    if item.get("soak") is not None:
        soak = _duration(d, item["soak"], (*path, "soak")) or 0.0
    approval = model.Approval.NONE
    if item.get("approval") is not None:
        try:
            approval = model.Approval(item["approval"])
        except ValueError:
            d.error(
                (*path, "approval"),
                f"{where}.approval must be none, before or after, not {_quote(item['approval'])}",
            )
    if concurrency is None or failures is None:
        return None
    return model.WaveSpec(
        name=str(name),
        placement=placement,
        max_concurrency=concurrency,
        max_failures=failures,
        soak=soak,
        approval=approval,
        line=d.line(path),
    )


def _count(
    d: _Doc, item: Mapping[str, Any], path: Path_, key: str, default: model.Count, *, least: int
) -> model.Count | None:
    """A count of clusters (``2``) or a percentage of the wave (``"25%"``)."""
    if item.get(key) is None:
        return default
    value = item[key]
    where = _dotted((*path, key))
    if isinstance(value, int) and not isinstance(value, bool):
        if value < least:
            d.error((*path, key), f"{where} must be at least {least}, not {value}")
            return None
        return model.Count(value)
    if isinstance(value, str) and re.fullmatch(r"\d{1,3}%", value.strip()):
        pct = int(value.strip()[:-1])
        if pct > 100 or pct < least:
            d.error((*path, key), f"{where} must be between {least}% and 100%, not {_quote(value)}")
            return None
        return model.Count(pct, percent=True)
    d.error(
        (*path, key),
        f'{where} must be a number of clusters or a percentage such as "25%", not {_quote(value)}',
    )
    return None


def _duration(d: _Doc, value: Any, path: Path_) -> float | None:
    try:
        return durations.parse(value)
    except ValueError as e:
        d.error(path, f"{_dotted(path)}: {e}")
        return None


def _check_paths(d: _Doc, spec: Mapping[str, Any]) -> tuple[str, ...] | None:
    if "paths" not in spec or spec["paths"] is None:
        return None
    raw = spec["paths"]
    if not isinstance(raw, list):
        d.error(("spec", "paths"), f"spec.paths must be a list of paths, not {_describe(raw)}")
        return ()
    out: list[str] = []
    for i, entry in enumerate(raw):
        why = path_entry_problem(entry)
        if why:
            d.error(("spec", "paths", i), f"spec.paths[{i}] {_quote(entry)} {why}")
            continue
        norm = "/".join(p for p in PurePosixPath(entry).parts if p not in (".",))
        out.append(norm)
    return tuple(out)


def _selector(d: _Doc, raw: Any, path: Path_) -> model.LabelSelector | None:
    sel = d.mapping(raw, path)
    if sel is None:
        return None
    d.unknown_fields(sel, path, SELECTOR_FIELDS)
    ok = True
    match_labels: list[tuple[str, str]] = []
    ml = sel.get("matchLabels")
    if ml is not None:
        m = d.mapping(ml, (*path, "matchLabels"))
        if m is None:
            ok = False
        else:
            for key, value in m.items():
                sub = (*path, "matchLabels", str(key))
                why = label_key_problem(key)
                if why:
                    d.error(sub, f"{_dotted((*path, 'matchLabels'))} key {_quote(key)} {why}")
                    ok = False
                    continue
                why = label_value_problem(value)
                if why:
                    d.error(sub, f"{_dotted(sub)} value {_quote(value)} {why}")
                    ok = False
                    continue
                match_labels.append((str(key), str(value)))
    requirements: list[model.Requirement] = []
    me = sel.get("matchExpressions")
    if me is not None:
        if not isinstance(me, list):
            d.error((*path, "matchExpressions"), f"{_dotted((*path, 'matchExpressions'))} must be a list")
            ok = False
        else:
            for i, item in enumerate(me):
                req = _requirement(d, item, (*path, "matchExpressions", i))
                if req is None:
                    ok = False
                else:
                    requirements.append(req)
    if not ok:
        return None
    return model.LabelSelector(
        match_labels=tuple(sorted(match_labels)), match_expressions=tuple(requirements)
    )


def _requirement(d: _Doc, raw: Any, path: Path_) -> model.Requirement | None:
    item = d.mapping(raw, path)
    if item is None:
        return None
    d.unknown_fields(item, path, REQUIREMENT_FIELDS)
    where = _dotted(path)
    key = item.get("key")
    why = label_key_problem(key) if "key" in item else "is missing"
    if why:
        d.error(
            (*path, "key") if "key" in item else path,
            f"{where}.key {_quote(key) + ' ' if 'key' in item else ''}{why}",
        )
        return None
    operators = [o.value for o in model.Operator]
    op_raw = item.get("operator")
    if op_raw not in operators:
        if "operator" not in item:
            d.error(path, f"{where}.operator is missing (expected one of {', '.join(operators)})")
        else:
            d.error(
                (*path, "operator"),
                f"{where}.operator {_quote(op_raw)} is not one of {', '.join(operators)}"
                + _suggest(str(op_raw), operators),
            )
        return None
    op = model.Operator(op_raw)
    values = item.get("values")
    if op in (model.Operator.IN, model.Operator.NOT_IN):
        if not isinstance(values, list) or not values:
            d.error(
                (*path, "values") if "values" in item else (*path, "operator"),
                f"{where}: operator {op.value} needs a non-empty list of values",
            )
            return None
        bad = False
        for j, v in enumerate(values):
            why = label_value_problem(v)
            if why:
                d.error((*path, "values", j), f"{where}.values[{j}] {_quote(v)} {why}")
                bad = True
        if bad:
            return None
        return model.Requirement(key=str(key), operator=op, values=tuple(str(v) for v in values))
    if values not in (None, []):
        d.error((*path, "values"), f"{where}: operator {op.value} must not have values")
        return None
    return model.Requirement(key=str(key), operator=op)


def _placement(st: _State, d: _Doc, raw: Any, path: Path_) -> model.Placement | None:
    where = _dotted(path)
    if raw is None:
        d.error(path, f"{where} is null (omit it to place nowhere, or give clusters, clusterSelector or cel)")
        return None
    pl = d.mapping(raw, path)
    if pl is None:
        return None
    if not pl:
        d.error(
            path, f"{where} is empty (omit it to place nowhere, or give clusters, clusterSelector or cel)"
        )
        return None
    d.unknown_fields(pl, path, PLACEMENT_FIELDS)
    ok = True
    lines: dict[str, int] = {}
    for clause in PLACEMENT_FIELDS:
        if clause in pl:
            lines[clause] = d.line((*path, clause))
            if pl[clause] is None:
                d.error((*path, clause), f"{where}.{clause} is null (remove it or give it a value)")
                ok = False
    clusters: tuple[str, ...] | None = None
    if pl.get("clusters") is not None:
        raw_clusters = pl["clusters"]
        if not isinstance(raw_clusters, list):
            d.error(
                (*path, "clusters"),
                f"{where}.clusters must be a list of cluster names, not {_describe(raw_clusters)}",
            )
            ok = False
        else:
            names: list[str] = []
            for i, c in enumerate(raw_clusters):
                if not isinstance(c, str):
                    d.error(
                        (*path, "clusters", i), f"{where}.clusters[{i}] must be a string, not {_describe(c)}"
                    )
                    ok = False
                    continue
                names.append(c)
                st.placement_clusters.append((d, (*path, "clusters", i), c))
            clusters = tuple(names)
    selector = None
    if pl.get("clusterSelector") is not None:
        selector = _selector(d, pl["clusterSelector"], (*path, "clusterSelector"))
        ok = ok and selector is not None
    cel_src: str | None = None
    if pl.get("cel") is not None:
        raw_cel = pl["cel"]
        if not isinstance(raw_cel, str) or not raw_cel.strip():
            d.error((*path, "cel"), f"{where}.cel must be a non-empty string, not {_quote(raw_cel)}")
            ok = False
        else:
            cel_src = raw_cel
            if not _check_cel(d, raw_cel, (*path, "cel")):
                ok = False
    if not ok:
        return None
    return model.Placement(
        clusters=clusters, cluster_selector=selector, cel=cel_src, lines=MappingProxyType(lines)
    )


def _check_cel(d: _Doc, expr: str, path: Path_) -> bool:
    found = cel.check(expr)
    start = d.value_line(path)
    for line, column, message in found:
        d.error(
            path,
            f"{_dotted(path)}: invalid CEL at line {line}, column {column} of the expression: {message}",
            line=start + max(line, 1) - 1,
        )
    return not found


def _overrides(st: _State, d: _Doc, raw: Any) -> tuple[model.Override, ...]:
    if raw is None:
        return ()
    path: Path_ = ("spec", "overrides")
    if not isinstance(raw, list):
        d.error(path, f"spec.overrides must be a list, not {_describe(raw)}")
        return ()
    out: list[model.Override] = []
    for i, item in enumerate(raw):
        ipath = (*path, i)
        ov = d.mapping(item, ipath)
        if ov is None:
            continue
        d.unknown_fields(ov, ipath, OVERRIDE_FIELDS)
        if "placement" not in ov:
            d.error(
                ipath,
                f"{_dotted(ipath)}.placement is missing (an override applies to the clusters it selects)",
            )
            placement = None
        else:
            placement = _placement(st, d, ov["placement"], (*ipath, "placement"))
        patches = _patches(d, ov.get("patches"), (*ipath, "patches"), present="patches" in ov)
        if placement is not None and patches is not None:
            out.append(model.Override(placement=placement, patches=patches, line=d.line(ipath)))
    return tuple(out)


def _patches(d: _Doc, raw: Any, path: Path_, *, present: bool) -> tuple[model.Patch, ...] | None:
    where = _dotted(path)
    if not present or not isinstance(raw, list) or not raw:
        d.error(path, f"{where} must be a non-empty list of patches")
        return None
    out: list[model.Patch] = []
    ok = True
    for i, item in enumerate(raw):
        ppath = (*path, i)
        pw = _dotted(ppath)
        p = d.mapping(item, ppath)
        if p is None:
            ok = False
            continue
        d.unknown_fields(p, ppath, PATCH_FIELDS)
        target = _target(d, p.get("target"), (*ppath, "target"), present="target" in p)
        has_merge, has_json = "merge" in p, "json" in p
        if has_merge == has_json:
            d.error(ppath, f"{pw}: give exactly one of merge (RFC 7386) and json (RFC 6902)")
            ok = False
            continue
        if has_merge:
            if not isinstance(p["merge"], dict):
                d.error(
                    (*ppath, "merge"),
                    f"{pw}.merge must be a mapping (an RFC 7386 merge patch), not {_describe(p['merge'])}",
                )
                ok = False
                continue
            patch = model.Patch(target=target or model.PatchTarget(), merge=p["merge"], line=d.line(ppath))
        else:
            ops = _json_patch(d, p["json"], (*ppath, "json"))
            if ops is None:
                ok = False
                continue
            patch = model.Patch(target=target or model.PatchTarget(), json=ops, line=d.line(ppath))
        if target is None:
            ok = False
            continue
        out.append(patch)
    return tuple(out) if ok else None


def _target(d: _Doc, raw: Any, path: Path_, *, present: bool) -> model.PatchTarget | None:
    where = _dotted(path)
    if not present:
        d.error(path[:-1], f"{where} is missing (kind, name, apiVersion and/or namespace)")
        return None
    t = d.mapping(raw, path)
    if t is None:
        return None
    d.unknown_fields(t, path, TARGET_FIELDS)
    values: dict[str, str | None] = {}
    ok = True
    for key in TARGET_FIELDS:
        v = t.get(key)
        if v is not None and (not isinstance(v, str) or not v):
            d.error((*path, key), f"{where}.{key} must be a non-empty string, not {_quote(v)}")
            ok = False
        values[key] = v if isinstance(v, str) and v else None
    if not ok:
        return None
    return model.PatchTarget(
        kind=values["kind"],
        name=values["name"],
        api_version=values["apiVersion"],
        namespace=values["namespace"],
    )


def _json_patch(d: _Doc, raw: Any, path: Path_) -> tuple[Mapping[str, Any], ...] | None:
    where = _dotted(path)
    if not isinstance(raw, list) or not raw:
        d.error(path, f"{where} must be a non-empty list of RFC 6902 operations, not {_describe(raw)}")
        return None
    ok = True
    for i, op in enumerate(raw):
        opath = (*path, i)
        ow = _dotted(opath)
        m = d.mapping(op, opath)
        if m is None:
            ok = False
            continue
        name = m.get("op")
        if name not in JSON_PATCH_OPS:
            d.error(
                (*opath, "op") if "op" in m else opath,
                f"{ow}.op {_quote(name) + ' ' if 'op' in m else ''}is not one of {', '.join(JSON_PATCH_OPS)}",
            )
            ok = False
            continue
        allowed = ["op", "path"]
        allowed += ["from"] if name in ("move", "copy") else []
        allowed += ["value"] if name in ("add", "replace", "test") else []
        d.unknown_fields(m, opath, allowed)
        for key in allowed:
            if key not in m:
                d.error(opath, f"{ow}: {name} needs {key}")
                ok = False
        for key in ("path", "from"):
            if key in m and key in allowed:
                v = m[key]
                if not isinstance(v, str) or (v and not v.startswith("/")):
                    d.error(
                        (*opath, key), f'{ow}.{key} {_quote(v)} is not a JSON pointer ("" or starting with /)'
                    )
                    ok = False
        if any(k not in allowed for k in m):
            ok = False
    return tuple(raw) if ok else None


def _depends_on(st: _State, d: _Doc, raw: Any, *, own: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    path: Path_ = ("spec", "dependsOn")
    if not isinstance(raw, list):
        d.error(path, f"spec.dependsOn must be a list of bundle names, not {_describe(raw)}")
        return ()
    out: list[str] = []
    for i, item in enumerate(raw):
        why = dns_label_problem(item)
        if why:
            d.error((*path, i), f"spec.dependsOn[{i}] {_quote(item)} {why}")
            continue
        out.append(str(item))
    st.dependencies[d.bundle or own] = (d, path, tuple(out))
    return tuple(out)


def _manifests(
    st: _State,
    d: _Doc,
    *,
    folder: str,
    rels: list[str],
    paths: tuple[str, ...] | None,
    namespace: str | None,
    decrypt: bool = False,
) -> tuple[tuple[model.Manifest, ...], tuple[str, ...]]:
    """The manifests of a bundle without source, and (with `decrypt`) its SOPS-encrypted files, left to
    `fleet.clients.sources` to decrypt. Without `decrypt`, an encrypted file is an error: ciphertext is never
    applied."""
    files = st.snapshot.files
    encrypted: list[str] = []
    prefix = f"bundles/{folder}/"
    inner = [rel[len(prefix) :] for rel in rels]
    ignore_rel = prefix + IGNORE_FILE
    spec = None
    if ignore_rel in files:
        try:
            text = files[ignore_rel].decode("utf-8")
        except UnicodeDecodeError:
            st.problems.append(model.Problem(st.shown(ignore_rel), 1, "not UTF-8 text", bundle=d.bundle))
            d.errors += 1
            text = ""
        spec = pathspec.GitIgnoreSpec.from_lines(text.splitlines())
    selected: list[str]
    if paths is None:
        selected = [p for p in inner if p != BUNDLE_FILE]
    else:
        chosen: set[str] = set()
        for i, entry in enumerate(paths):
            if entry in ("", "."):
                hits = [p for p in inner if p != BUNDLE_FILE]
            else:
                hits = [p for p in inner if p == entry or p.startswith(entry + "/")]
            if not hits:
                d.error(
                    ("spec", "paths", i),
                    f"spec.paths[{i}] {_quote(entry)}: no such file or folder in bundles/{folder}/",
                )
                continue
            if entry in inner and not entry.endswith(MANIFEST_SUFFIXES):
                d.error(
                    ("spec", "paths", i),
                    f"spec.paths[{i}] {_quote(entry)}: not a manifest file (.yaml, .yml or .json)",
                )
                continue
            chosen.update(hits)
        selected = [p for p in inner if p in chosen and p != BUNDLE_FILE]
    selected = [
        p
        for p in selected
        if p.endswith(MANIFEST_SUFFIXES)
        and PurePosixPath(p).name != IGNORE_FILE
        and not (spec is not None and spec.match_file(p))
    ]
    manifests: list[model.Manifest] = []
    seen: dict[tuple[str, str, str, str], str] = {}
    for p in sorted(selected):
        rel = prefix + p
        shown = st.shown(rel)
        try:
            # Field lines only for files that use ${cluster.*} (to point at the variable's field) or may
            # hold a List (to point at its items).
            data = files[rel]
            docs = st.load(rel, lines=_VARIABLE_MARK in data or b"List" in data)
        except errors.ValidationError as e:
            st.problems.append(model.Problem(shown, e.line, str(e.args[0]), bundle=d.bundle))
            d.errors += 1
            continue
        if b"sops" in data and any(is_sops_document(doc.data) for doc in docs):
            if decrypt:
                encrypted.append(rel)
            else:
                st.problems.append(
                    model.Problem(
                        shown,
                        1,
                        "is SOPS-encrypted: set spec.decrypt: sops in bundle.yaml to decrypt it (fleet never "
                        "applies ciphertext)",
                        bundle=d.bundle,
                    )
                )
                d.errors += 1
            continue
        found: list[model.Manifest] = []
        for doc in docs:
            objects, bad = manifests_of(doc, path=shown)
            for line, message in bad:
                st.problems.append(model.Problem(shown, line, message, bundle=d.bundle))
                d.errors += 1
            found.extend(objects)
        for m in found:
            ref = model.ObjectRef.of(m.obj)
            key = (ref.group, ref.kind, ref.namespace or namespace or "", ref.name)
            where = f"{shown}:{m.line}"
            if key in seen:
                st.problems.append(
                    model.Problem(
                        shown,
                        m.line,
                        f"{ref} is declared twice in bundle {_quote(folder)} (also at {seen[key]})",
                        bundle=d.bundle,
                    )
                )
                d.errors += 1
                continue
            seen[key] = where
            manifests.append(m)
    return tuple(manifests), tuple(encrypted)


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


def _decrypt(d: _Doc, spec: Mapping[str, Any]) -> str | None:
    if spec.get("decrypt") is None:
        return None
    value = spec["decrypt"]
    if value not in DECRYPTORS:
        d.error(
            ("spec", "decrypt"),
            f"spec.decrypt must be {' or '.join(DECRYPTORS)} (SOPS with age keys), not {_quote(value)}",
        )
        return None
    return str(value)


def _relative_problem(value: Any, *, variables: bool) -> str | None:
    """Why a path of spec.source (relative to the bundle folder) is refused before any I/O, or None."""
    if not isinstance(value, str) or not value:
        return f"must be a non-empty string, not {_quote(value)}"
    if not variables and "${cluster." in value:
        return "cannot use ${cluster.*} here"
    text = _VARIABLE.sub("x", value) if variables else value
    return unsafe_path(text)


def _source(st: _State, d: _Doc, spec: Mapping[str, Any], *, folder: str, name: str) -> model.Source | None:
    """`spec.source`: exactly one of kustomize and helm (docs/sources.md)."""
    path: Path_ = ("spec", "source")
    raw = d.mapping(spec["source"], path)
    if raw is None:
        return None
    d.unknown_fields(raw, path, SOURCE_FIELDS)
    chosen = [k for k in SOURCE_FIELDS if k in raw]
    if len(chosen) != 1:
        d.error(path, "spec.source must have exactly one of kustomize and helm")
        return None
    base = f"bundles/{folder}"
    files = st.snapshot.files
    line = d.line(path)
    if chosen[0] == "kustomize":
        kpath: Path_ = (*path, "kustomize")
        k = d.mapping(raw["kustomize"], kpath)
        if k is None:
            return None
        d.unknown_fields(k, kpath, KUSTOMIZE_FIELDS)
        if "path" not in k:
            d.error(
                kpath,
                "spec.source.kustomize.path is missing (a folder of the bundle holding a kustomization)",
            )
            return None
        value = k["path"]
        why = _relative_problem(value, variables=True)
        if why:
            d.error((*kpath, "path"), f"spec.source.kustomize.path {_quote(value)} {why}")
            return None
        if "${cluster." not in value:
            where = inside(base, value)
            if where is None or not any(f.startswith(where + "/") for f in files):
                d.error(
                    (*kpath, "path"), f"spec.source.kustomize.path {_quote(value)}: no such folder in {base}/"
                )
                return None
        return model.Source(
            kustomize=model.KustomizeSource(path=value, folder=base, line=d.line((*kpath, "path"))), line=line
        )
    hpath: Path_ = (*path, "helm")
    h = d.mapping(raw["helm"], hpath)
    if h is None:
        return None
    d.unknown_fields(h, hpath, HELM_FIELDS)
    ok = True
    lines: dict[str, int] = {}
    chart = h.get("chart")
    if "chart" not in h:
        d.error(hpath, "spec.source.helm.chart is missing (a chart folder of the repository)")
        ok = False
    else:
        lines["chart"] = d.line((*hpath, "chart"))
        why = _relative_problem(chart, variables=False)
        if why == 'contains ".."':  # a chart may live elsewhere in the repository: inside() decides
            why = None
        where = inside(base, chart) if isinstance(chart, str) and not why else None
        if why is None and where is None:
            why = "leaves the repository"
        if why:
            d.error((*hpath, "chart"), f"spec.source.helm.chart {_quote(chart)} {why}")
            ok = False
        elif f"{where}/{CHART_FILE}" not in files:
            d.error(
                (*hpath, "chart"),
                f"spec.source.helm.chart {_quote(chart)}: no {CHART_FILE} in {st.shown(where or '.')}/ (the chart "
                "must be vendored in the repository)",
            )
            ok = False
    release = h.get("releaseName", name)
    if "releaseName" in h:
        lines["releaseName"] = d.line((*hpath, "releaseName"))
        if not isinstance(release, str) or len(release) > 53 or not _RELEASE_NAME.fullmatch(release):
            d.error(
                (*hpath, "releaseName"),
                f"spec.source.helm.releaseName {_quote(release)} is not a Helm release name (lowercase letters, "
                "digits, '-' and '.', at most 53 characters)",
            )
            ok = False
    values: list[str] = []
    if h.get("values") is not None:
        vpath: Path_ = (*hpath, "values")
        lines["values"] = d.line(vpath)
        if not isinstance(h["values"], list):
            d.error(vpath, f"spec.source.helm.values must be a list of files, not {_describe(h['values'])}")
            ok = False
        else:
            for i, entry in enumerate(h["values"]):
                lines[f"values.{i}"] = d.value_line((*vpath, i))
                why = _relative_problem(entry, variables=True)
                if why:
                    d.error((*vpath, i), f"spec.source.helm.values[{i}] {_quote(entry)} {why}")
                    ok = False
                    continue
                if "${cluster." not in entry and f"{base}/{inside('', entry)}" not in files:
                    d.error(
                        (*vpath, i), f"spec.source.helm.values[{i}] {_quote(entry)}: no such file in {base}/"
                    )
                    ok = False
                    continue
                values.append(entry)
    settings: list[tuple[str, Any]] = []
    if h.get("set") is not None:
        spath: Path_ = (*hpath, "set")
        lines["set"] = d.line(spath)
        m = d.mapping(h["set"], spath)
        if m is None:
            ok = False
        else:
            for key, value in m.items():
                lines[f"set.{key}"] = d.line((*spath, str(key)))
                why = set_key_problem(str(key))
                if why:
                    d.error((*spath, str(key)), f"spec.source.helm.set key {_quote(key)} {why}")
                    ok = False
                    continue
                settings.append((str(key), value))
    include_crds = d.boolean(h, hpath, "includeCRDs", False)
    if not ok:
        return None
    assert isinstance(chart, str) and isinstance(release, str)
    return model.Source(
        helm=model.HelmSource(
            chart=chart,
            release_name=release,
            folder=base,
            values=tuple(values),
            set=tuple(settings),
            include_crds=include_crds,
            line=d.line(hpath),
            lines=MappingProxyType(lines),
        ),
        line=line,
    )


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


def _is_list(obj: Mapping[str, Any]) -> bool:
    """A document kubectl expands to its items: ``kind: List`` or any ``<Kind>List`` with an ``items`` list
    (or ``items: null``)."""
    kind = obj.get("kind")
    return (
        isinstance(kind, str)
        and kind.endswith("List")
        and "items" in obj
        and (obj["items"] is None or isinstance(obj["items"], list))
    )


def manifests_of(doc: yamlsafe.Document, *, path: str) -> tuple[list[model.Manifest], list[tuple[int, str]]]:
    """The objects one document declares (pure): itself, or the items of a ``List`` / ``<Kind>List``
    (nested lists too), as kubectl expands them. Problems are (line, message); messages name the document
    (1-based) and item, never a value. Shared by the plain manifests of a bundle and by what its source
    renders (`fleet.clients.sources`)."""
    out: list[model.Manifest] = []
    problems: list[tuple[int, str]] = []
    if doc.data is None:
        return out, problems
    stack: list[tuple[Any, tuple[str | int, ...], str]] = [(doc.data, (), f"document {doc.index + 1}")]
    while stack:
        obj, at, what = stack.pop()
        line = doc.lines.get(at, doc.line) if at else doc.line
        if isinstance(obj, dict) and _is_list(obj):
            items = obj.get("items") or []
            stack.extend(
                (item, (*at, "items", i), f"{what} item {i + 1}")
                for i, item in reversed(list(enumerate(items)))
            )
            continue
        why = _manifest_problem(obj, item=bool(at))
        if why is not None:
            problems.append((line, f"{what} {why}"))
            continue
        out.append(
            model.Manifest(
                path=path, line=line, index=doc.index, obj=obj, variable_lines=_variable_lines(doc, at)
            )
        )
    return out, problems


def _manifest_problem(obj: Any, *, item: bool) -> str | None:
    """Why a document (or an item of a List) is not one object fleet can apply, or None."""
    if not isinstance(obj, dict):
        one = "each item of a List" if item else "each document"
        return f"is not a mapping (got {_describe(obj)}); {one} must be one Kubernetes object"
    api, kind = obj.get("apiVersion"), obj.get("kind")
    meta = obj.get("metadata")
    missing = [
        f
        for f, ok in (
            ("apiVersion", isinstance(api, str) and bool(api)),
            ("kind", isinstance(kind, str) and bool(kind)),
            (
                "metadata.name",
                isinstance(meta, dict) and isinstance(meta.get("name"), str) and bool(meta["name"]),
            ),
        )
        if not ok
    ]
    if missing:
        return "has no " + ", no ".join(missing)
    assert isinstance(meta, dict)
    ns = meta.get("namespace")
    if ns is not None and (not isinstance(ns, str) or dns_label_problem(ns)):
        return f"has metadata.namespace {_quote(ns)} that is not a DNS-1123 label"
    if str(api).split("/")[0] == model.API_GROUP and kind in ("Bundle", "Cluster"):
        return f"is a fleet {kind}, not a manifest (a bundle folder holds one bundle.yaml at its top)"
    return None


def _variable_lines(doc: yamlsafe.Document, at: Path_ = ()) -> Mapping[str, int]:
    """Line of the first field using each ``${cluster.NAME}`` of a document (or of the item at `at` of a
    List document), keyed by NAME."""
    if not doc.lines:
        return {}
    found: dict[str, int] = {}
    root: Any = doc.data
    for part in at:
        root = root[part]
    stack: list[tuple[Path_, Any]] = [(at, root)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(((*path, str(k)), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
        elif isinstance(value, str) and "${cluster." in value:
            line = doc.lines.get(path, doc.line)
            for m in _VARIABLE.finditer(value):
                if not m.group(1):
                    found[m.group(2)] = min(line, found.get(m.group(2), line))
    return MappingProxyType(found)


# -- cross checks ------------------------------------------------------------------------------------------


def _check_dependencies(st: _State) -> None:
    """Unknown names and cycles in `dependsOn`, over every bundle that has a bundle.yaml (broken ones too)."""
    known = set(st.bundles) | st.broken_bundle_names
    graph: dict[str, set[str]] = {}
    for name, (d, path, depends) in sorted(st.dependencies.items()):
        deps: set[str] = set()
        for i, dep in enumerate(depends):
            if dep not in known:
                d.error((*path, i), f"spec.dependsOn[{i}] {_quote(dep)}: no such bundle")
                st.broken_bundle_names.add(name)
                continue
            deps.add(dep)
        graph[name] = deps
    remaining = dict(graph)
    while True:
        try:
            tuple(graphlib.TopologicalSorter(remaining).static_order())
            return
        except graphlib.CycleError as e:
            cycle: list[str] = list(e.args[1])
            # graphlib gives [a, b, ..., a]; report it starting from the smallest name, once per member.
            members = cycle[:-1]
            start = members.index(min(members))
            ordered = members[start:] + members[:start]
            text = " -> ".join([*ordered, ordered[0]])
            for member in sorted(set(members)):
                if member in st.dependencies:
                    d, path, _ = st.dependencies[member]
                    d.error(path, f"spec.dependsOn: dependency cycle {text}")
                st.broken_bundle_names.add(member)
            remaining = {k: v - set(members) for k, v in remaining.items() if k not in members}


def _check_placement_clusters(st: _State) -> None:
    known = set(st.clusters) | set(st.broken_clusters)
    for d, path, name in st.placement_clusters:
        if name not in known:
            d.warning(
                path,
                f"{_dotted(path)}: no cluster named {_quote(name)} (a cluster file may have been removed)",
            )
