"""The GitOps repository format: files of one revision -> clusters, bundles and their manifests, validated.

Owns: `parse` (a `model.Snapshot` -> `model.Repo`, pure: no I/O, no clock) and every validation rule of
the repository format (the reference for users is docs/repository.md); `manifests_of` (one document ->
the objects it declares: a `List` or `<Kind>List` expanded to its items, as kubectl does; shared with
`fleet.clients.sources`). `Limits` is `fleet.core.yamlsafe.Limits`. Its parts, in import order:
`rules` (field lists, small checks), `documents` (the parse cache, problems at their lines, one parse's
state), `cluster_files`, `selection` (placement, selectors, CEL, rollout waves), `manifest_files`,
`bundle_files`, `revision` (`parse`: the order of the work and the checks across files).
Does not: decide placement or render (`fleet.core.placement`, `fleet.core.render`; their checks that need a
cluster at hand, such as an override that matches no object, live there), or read git
(`fleet.cli.common.load_repository` reads a work tree or a commit and calls `parse`).

How problems break things (docs/repository.md: a broken cluster file freezes that cluster; malformed YAML
in one bundle fails that bundle only): every error found in ``clusters/NAME.yaml`` puts NAME in
`Repo.broken_clusters` and leaves it out of `Repo.clusters`; every error in ``bundles/NAME/...``
(bundle.yaml, a manifest, a link or an oversized file in its folder, a `dependsOn` cycle) puts NAME in
`Repo.broken_bundles`. Nothing is ever used from a half-read bundle. Warnings (an unknown cluster named in
`placement.clusters`, a revision without clusters or bundles, ignored files) break nothing.

Every problem is a `model.Problem` whose line is the line of the offending field (1 when the problem is
the file itself); messages quote the offending value, except for credential-looking fields of cluster
files, which are named and never shown.
"""

from __future__ import annotations

from fleet.core.repository.documents import ParseCache
from fleet.core.repository.manifest_files import manifests_of
from fleet.core.repository.revision import parse, parse_in_thread
from fleet.core.repository.rules import (
    BUNDLE_FILE,
    BUNDLE_SPEC_FIELDS,
    CHART_FILE,
    CLUSTER_FIELDS,
    CLUSTER_SPEC_FIELDS,
    CLUSTER_SUFFIXES,
    DECRYPTORS,
    DEFAULT_LIMITS,
    HELM_FIELDS,
    IGNORE_FILE,
    JSON_PATCH_OPS,
    KUSTOMIZE_FIELDS,
    MANIFEST_SUFFIXES,
    METADATA_FIELDS,
    OVERRIDE_FIELDS,
    PATCH_FIELDS,
    PLACEMENT_FIELDS,
    REQUIREMENT_FIELDS,
    ROLLOUT_FIELDS,
    SELECTOR_FIELDS,
    SOURCE_FIELDS,
    TARGET_FIELDS,
    WAVE_FIELDS,
    Limits,
    Path_,
    dns_label_problem,
    inside,
    is_sops_document,
    label_key_problem,
    label_value_problem,
    path_entry_problem,
    set_key_problem,
    split_set_key,
    unsafe_path,
)

__all__ = [
    "BUNDLE_FILE",
    "BUNDLE_SPEC_FIELDS",
    "CHART_FILE",
    "CLUSTER_FIELDS",
    "CLUSTER_SPEC_FIELDS",
    "CLUSTER_SUFFIXES",
    "DECRYPTORS",
    "DEFAULT_LIMITS",
    "HELM_FIELDS",
    "IGNORE_FILE",
    "JSON_PATCH_OPS",
    "KUSTOMIZE_FIELDS",
    "MANIFEST_SUFFIXES",
    "METADATA_FIELDS",
    "OVERRIDE_FIELDS",
    "PATCH_FIELDS",
    "PLACEMENT_FIELDS",
    "REQUIREMENT_FIELDS",
    "ROLLOUT_FIELDS",
    "SELECTOR_FIELDS",
    "SOURCE_FIELDS",
    "TARGET_FIELDS",
    "WAVE_FIELDS",
    "Limits",
    "ParseCache",
    "Path_",
    "dns_label_problem",
    "inside",
    "is_sops_document",
    "label_key_problem",
    "label_value_problem",
    "manifests_of",
    "parse",
    "parse_in_thread",
    "path_entry_problem",
    "set_key_problem",
    "split_set_key",
    "unsafe_path",
]
