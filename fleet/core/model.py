"""The immutable values that flow between fleet's layers.

Owns: the data types only (frozen dataclasses and enums), and the few pure helpers that belong to one of
them. Does not: read files, talk to clusters, or decide anything; the layers that do are `repository`
(files -> `Repo`), `placement` (`Repo` -> `PlacementResult`), `render` (`Repo` x placement ->
`DesiredSet`s), `plan` and `apply`.

Mappings held here are read-only by convention (`types.MappingProxyType` where cheap). Manifest bodies
(`Manifest.obj`) are plain parsed JSON values that no layer mutates: copy before changing.

The pipeline::

    Snapshot (source) -> Repo (repository) -> PlacementResult (placement)
        -> Expansion per sourced bundle (sources: Kustomize, Helm, SOPS) -> DesiredSet (render)
        -> Plan (plan) -> ChangeSet (apply) -> status, metrics, spans
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# ----------------------------------------------------------------------------------------------------------
# Marks fleet leaves on clusters (docs/reconcile.md).

API_GROUP = "fleet.dev"
API_VERSION = "fleet.dev/v1alpha1"
LABEL_BUNDLE = "fleet.dev/bundle"
LABEL_OWNER = "fleet.dev/owner"
ANNOTATION_REVISION = "fleet.dev/revision"
# The claim of the controller that last wrote an object (`fleet.core.inventory.Claim.mark`): left out of
# every hash and comparison, like the revision (docs/reconcile.md, "The claim on every object").
ANNOTATION_CLAIM = "fleet.dev/claim"
ANNOTATION_ADOPT = "fleet.dev/adopt"
ANNOTATION_PRUNE = "fleet.dev/prune"
ANNOTATION_SUBSTITUTE = "fleet.dev/substitute"
FIELD_MANAGER = "fleet"
DEFAULT_INSTANCE = "fleet"
INVENTORY_NAMESPACE = "fleet-system"


def inventory_name(*, instance: str, bundle: str) -> str:
    """Name of the inventory ConfigMap of one bundle on a cluster."""
    return f"{instance}-inventory-{bundle}"


# ----------------------------------------------------------------------------------------------------------
# Problems found in a repository.


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in the repository, printed as ``PATH:LINE: message``.

    `path` is relative to the repository root (with `--path`, still relative to the root), POSIX style.
    `line` is 1-based; 1 when the problem is the file itself. `bundle`/`cluster` name what it breaks, if
    anything in particular.
    """

    path: str
    line: int
    message: str
    severity: Severity = Severity.ERROR
    bundle: str | None = None
    cluster: str | None = None

    def __str__(self) -> str:
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return f"{self.path}:{self.line}: {prefix}{self.message}"


# ----------------------------------------------------------------------------------------------------------
# What the source layer reads.


@dataclass(frozen=True)
class Snapshot:
    """The files of one revision (or of a work tree, `revision=None`) below the repository root.

    `files` maps POSIX paths relative to the root (or to `--path`'s folder, which is then `base`) to their
    bytes. Symlinks and submodules never appear: the source layer reports them in `problems`.
    """

    revision: str | None
    files: Mapping[str, bytes]
    base: str = ""
    message: str | None = None
    author: str | None = None
    committed_at: str | None = None  # RFC 3339 UTC
    problems: tuple[Problem, ...] = ()


# ----------------------------------------------------------------------------------------------------------
# Cluster registrations.


@dataclass(frozen=True)
class Cluster:
    """A cluster registered by ``clusters/<name>.yaml``."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    context: str = ""  # kubeconfig context; defaults to name when parsed
    paused: bool = False
    facts: Mapping[str, Any] = field(default_factory=dict)
    path: str = ""  # file it came from, relative to the repo root

    def activation(self) -> dict[str, Any]:
        """What CEL sees as `cluster` and what `${cluster.*}` substitution reads."""
        return {
            "name": self.name,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "facts": dict(self.facts),
        }


# ----------------------------------------------------------------------------------------------------------
# Bundles.


class Operator(enum.StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True)
class Requirement:
    """One entry of `matchExpressions`."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes LabelSelector: every `match_labels` pair and every requirement must hold."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()


@dataclass(frozen=True)
class Placement:
    """Which clusters get a bundle (or an override). A clause that is None is absent.

    `line` maps a clause name (``clusters``, ``clusterSelector``, ``cel``) to its line in the file, for
    error messages.
    """

    clusters: tuple[str, ...] | None = None
    cluster_selector: LabelSelector | None = None
    cel: str | None = None
    lines: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PatchTarget:
    kind: str | None = None
    name: str | None = None
    api_version: str | None = None
    namespace: str | None = None


@dataclass(frozen=True)
class Patch:
    """One patch of an override: exactly one of `merge` (RFC 7386) and `json` (RFC 6902) is set."""

    target: PatchTarget
    merge: Any = None
    json: tuple[Mapping[str, Any], ...] | None = None
    line: int = 1


@dataclass(frozen=True)
class Override:
    placement: Placement
    patches: tuple[Patch, ...]
    line: int = 1


@dataclass(frozen=True)
class Manifest:
    """One object declared in a bundle: a document of a manifest file.

    `obj` is the parsed document (read-only). `path` is relative to the repo root, `line` the line where
    the document starts, `index` its position among the documents of that file.
    """

    path: str
    line: int
    index: int
    obj: Mapping[str, Any]
    # Line of the first field using ``${cluster.NAME}``, keyed by NAME (filled by the repository parser;
    # absent: the document start, `line`). Not part of equality.
    variable_lines: Mapping[str, int] = field(default_factory=dict, compare=False)

    @property
    def api_version(self) -> str:
        return str(self.obj.get("apiVersion", ""))

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata") or {}
        return str(meta.get("name", ""))

    @property
    def namespace(self) -> str | None:
        meta = self.obj.get("metadata") or {}
        ns = meta.get("namespace")
        return str(ns) if ns else None


# ----------------------------------------------------------------------------------------------------------
# Rollout strategy of a bundle (docs/rollouts.md).


class Approval(enum.StrEnum):
    NONE = "none"
    BEFORE = "before"
    AFTER = "after"


class OnFailure(enum.StrEnum):
    HALT = "halt"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Count:
    """A number of clusters: absolute (``3``) or a percentage of a wave (``"25%"``)."""

    value: int
    percent: bool = False

    def of(self, total: int, *, at_least_one: bool) -> int:
        """This count over a wave of `total` clusters; percentages round down."""
        n = total * self.value // 100 if self.percent else self.value
        return max(n, 1) if at_least_one else max(n, 0)

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


@dataclass(frozen=True)
class WaveSpec:
    """One wave of `spec.rollout.waves`. `placement` None: every cluster no earlier wave took."""

    name: str
    placement: Placement | None = None
    max_concurrency: Count = Count(25, percent=True)
    max_failures: Count = Count(0)
    soak: float = 0.0  # seconds
    approval: Approval = Approval.NONE
    line: int = 1


@dataclass(frozen=True)
class RolloutSpec:
    """`spec.rollout` of a bundle; `DEFAULT_ROLLOUT` when the bundle has none."""

    waves: tuple[WaveSpec, ...]
    progress_deadline: float = 600.0  # seconds
    on_failure: OnFailure = OnFailure.HALT
    line: int = 1


DEFAULT_ROLLOUT = RolloutSpec(waves=(WaveSpec(name="all"),))


@dataclass(frozen=True)
class KustomizeSource:
    """`spec.source.kustomize`: ``kustomize build`` of `path`, a folder relative to the bundle folder (it may
    use ``${cluster.*}``). `folder` is the bundle folder relative to the repository (or `--path`) root."""

    path: str
    folder: str
    line: int = 1


@dataclass(frozen=True)
class HelmSource:
    """`spec.source.helm`: ``helm template`` of a vendored chart folder.

    `chart` and `values` are relative to the bundle folder (`folder`, relative to the repository root);
    `values` entries and `set` values may use ``${cluster.*}``. `set` keeps the order of bundle.yaml.
    `lines` maps ``chart``, ``values``, ``values.N``, ``set`` and ``set.KEY`` to their line in bundle.yaml.
    """

    chart: str
    release_name: str
    folder: str
    values: tuple[str, ...] = ()
    set: tuple[tuple[str, Any], ...] = ()
    include_crds: bool = False
    line: int = 1
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Source:
    """`spec.source` (docs/sources.md): exactly one of `kustomize` and `helm`."""

    kustomize: KustomizeSource | None = None
    helm: HelmSource | None = None
    line: int = 1


@dataclass(frozen=True)
class SourceRender:
    """The manifests one run of a bundle's source produced (`fleet.clients.sources`), shared by every cluster whose
    inputs were the same. `key` is a hash of everything the run read (so equal keys mean equal manifests);
    `substitute` says whether ``${cluster.*}`` is still substituted in them (not in Helm's output, whose
    cluster values went in through the chart's values); `cluster_scoped` lists the (group, kind) of the
    cluster-scoped CRDs among them."""

    key: str
    manifests: tuple[Manifest, ...]
    substitute: bool = True
    cluster_scoped: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Expansion:
    """What a bundle's source (or its SOPS decryption) gave for each of its placed clusters: the render it
    gets, or the problem that broke it there. `key` is a hash of the whole assignment."""

    bundle: str
    key: str
    renders: Mapping[str, SourceRender] = field(default_factory=dict)  # cluster -> render
    errors: Mapping[str, Problem] = field(default_factory=dict)  # cluster -> problem


@dataclass(frozen=True)
class Bundle:
    """A bundle parsed from ``bundles/<name>/bundle.yaml`` and its manifests.

    With `source` (Kustomize or Helm) or `decrypt` (``"sops"``), `manifests` is not the whole story: the
    sources step (`fleet.clients.sources`) renders an `Expansion` that the render layer uses instead (`manifests`
    then holds the plain, unencrypted manifests of a `decrypt` bundle without source, and `encrypted` the
    SOPS-encrypted files among its manifest files, relative to the repository root).
    """

    name: str
    path: str  # the bundle.yaml path, relative to the repo root
    namespace: str | None = None
    paths: tuple[str, ...] | None = None
    placement: Placement | None = None
    overrides: tuple[Override, ...] = ()
    depends_on: tuple[str, ...] = ()
    prune: bool = True
    allow_empty: bool = False
    adopt: bool = False
    suspend: bool = False
    rollout: RolloutSpec = DEFAULT_ROLLOUT
    manifests: tuple[Manifest, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    source: Source | None = None
    decrypt: str | None = None  # "sops"
    encrypted: tuple[str, ...] = ()
    # Lines of fields of bundle.yaml for messages, e.g. ``dependsOn`` and ``dependsOn.NAME`` (one entry);
    # absent: 1. Not part of equality.
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)

    @property
    def sourced(self) -> bool:
        """Rendered through `fleet.clients.sources` (a Kustomize or Helm source, or SOPS decryption)."""
        return self.source is not None or self.decrypt is not None


@dataclass(frozen=True)
class Repo:
    """Everything parsed from one revision.

    `clusters` and `bundles` hold what parsed well enough to use. A cluster file or bundle that is broken
    is named in `broken_clusters` / `broken_bundles` (name -> problems) and is absent from the maps above:
    the engine keeps its last good registration/revision. `problems` lists everything, warnings included,
    sorted by path and line.
    """

    revision: str | None
    clusters: Mapping[str, Cluster]
    bundles: Mapping[str, Bundle]
    problems: tuple[Problem, ...] = ()
    broken_clusters: Mapping[str, tuple[Problem, ...]] = field(default_factory=dict)
    broken_bundles: Mapping[str, tuple[Problem, ...]] = field(default_factory=dict)
    message: str | None = None
    author: str | None = None
    committed_at: str | None = None

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.WARNING)


# ----------------------------------------------------------------------------------------------------------
# Placement and render results.


@dataclass(frozen=True)
class ClauseResult:
    """How one placement clause judged one cluster, for `fleet plan --explain`."""

    clause: str  # "clusters" | "clusterSelector" | "cel"
    held: bool | None  # None: not evaluated (an earlier clause failed) or evaluation error
    reason: str


@dataclass(frozen=True)
class PlacementResult:
    """Bundle -> sorted cluster names, plus errors per (bundle, cluster) pair.

    A pair in `errors` is in no list of `bundles`: nothing is applied or pruned for it.
    """

    bundles: Mapping[str, tuple[str, ...]]
    errors: Mapping[str, Mapping[str, str]]
    explanations: Mapping[str, Mapping[str, tuple[ClauseResult, ...]]] = field(default_factory=dict)
    warnings: tuple[Problem, ...] = ()

    def clusters_of(self, bundle: str) -> tuple[str, ...]:
        return self.bundles.get(bundle, ())

    def bundles_on(self, cluster: str) -> tuple[str, ...]:
        return tuple(sorted(b for b, cs in self.bundles.items() if cluster in cs))


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Identity of an object on a cluster (group, version, kind, namespace, name)."""

    group: str
    version: str
    kind: str
    namespace: str
    name: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        api_version = str(obj.get("apiVersion", ""))
        group, _, version = api_version.rpartition("/")
        meta = obj.get("metadata") or {}
        return cls(
            group=group,
            version=version,
            kind=str(obj.get("kind", "")),
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name", "")),
        )


@dataclass(frozen=True)
class DesiredSet:
    """The exact objects one bundle puts on one cluster, in apply order, and a stable hash of them.

    `hash` covers the objects without the revision annotation, so a commit that does not change a
    target's content does not change its hash.
    """

    bundle: str
    cluster: str
    objects: tuple[Mapping[str, Any], ...]
    hash: str
    namespace: str | None = None  # the bundle namespace fleet creates if missing (not owned)

    @functools.cached_property
    def refs(self) -> tuple[ObjectRef, ...]:
        return tuple(ObjectRef.of(o) for o in self.objects)


# ----------------------------------------------------------------------------------------------------------
# Results of acting on a cluster.


class Action(enum.StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    SKIPPED = "skipped"
    CONFLICT = "conflict"
    FAILED = "failed"


@dataclass(frozen=True)
class Change:
    ref: ObjectRef
    action: Action
    message: str = ""
    retriable: bool = False  # FAILED by an error a retry can fix (`fleet.core.errors`: `retriable`)


@dataclass(frozen=True)
class ChangeSet:
    """What one apply or prune did, per object, in order."""

    changes: tuple[Change, ...] = ()

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    @property
    def failed(self) -> bool:
        return any(c.action in (Action.FAILED, Action.CONFLICT) for c in self.changes)

    def __add__(self, other: ChangeSet) -> ChangeSet:
        return ChangeSet(self.changes + other.changes)


class State(enum.StrEnum):
    """States of a bundle on a cluster, and of a cluster (its worst bundle state)."""

    SYNCED = "Synced"
    PROGRESSING = "Progressing"
    FAILED = "Failed"
    UNREACHABLE = "Unreachable"
    PAUSED = "Paused"
    PENDING = "Pending"
    SUSPENDED = "Suspended"


_SEVERITY = {
    State.SYNCED: 0,
    State.PENDING: 1,
    State.PROGRESSING: 2,
    State.UNREACHABLE: 3,
    State.FAILED: 4,
}


def worst_state(states: Sequence[State], *, paused: bool = False) -> State:
    """A cluster's state: its worst bundle state (Failed > Unreachable > Progressing > Pending > Synced),
    Suspended bundles left out, Paused overriding all. No bundle at all: Synced."""
    if paused:
        return State.PAUSED
    ranked = [s for s in states if s in _SEVERITY]
    if not ranked:
        return State.SYNCED
    return max(ranked, key=lambda s: _SEVERITY[s])
