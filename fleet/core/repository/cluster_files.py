"""Cluster files (``clusters/NAME.yaml``) -> `model.Cluster`, or the problems that freeze that cluster.

Owns: the fields of a cluster file, its labels and facts, and the refusal of anything that looks like a
credential (named, never shown). Does not: decide which bundles a cluster gets (fleet.core.placement).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from fleet.core import errors, model
from fleet.core.repository import documents, rules

# -- clusters ----------------------------------------------------------------------------------------------


def parse_cluster(st: documents.State, rel: str) -> None:
    filename = rel.split("/", 1)[1]
    shown = st.shown(rel)
    if filename.startswith("."):
        return
    if not filename.endswith(rules.CLUSTER_SUFFIXES):
        st.problems.append(documents.warning(shown, "ignored: cluster files end in .yaml"))
        return
    stem = rules.stem(filename)
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
            _scan_credentials(
                documents.Doc(path=shown, doc=extra, sink=st.problems, cluster=stem), extra.data
            )
    d = documents.Doc(path=shown, doc=present[0], sink=st.problems, cluster=stem)
    cluster = _cluster_from(d, stem=stem, filename=filename)
    if d.errors or len(present) > 1 or cluster is None:
        st.broken_clusters.setdefault(stem, [])
        return
    if cluster.name in st.cluster_files:
        d.error(
            ("metadata", "name"),
            f"cluster {rules.quote(cluster.name)} is also defined in {st.cluster_files[cluster.name]}",
        )
        st.broken_clusters.setdefault(stem, [])
        return
    st.cluster_files[cluster.name] = shown
    st.clusters[cluster.name] = cluster


def _scan_credentials(d: documents.Doc, obj: Any) -> set[rules.Path_]:
    """Report every credential-looking field of a cluster file (by path, never by value)."""
    found: set[rules.Path_] = set()
    stack: list[tuple[rules.Path_, Any]] = [((), obj)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                sub = (*path, str(k))
                if rules.credential_word(str(k)):
                    found.add(sub)
                    continue
                stack.append((sub, v))
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
        elif isinstance(value, str):
            what = rules.credential_value(value)
            if what:
                found.add(path)
    d.secret_paths.update(found)
    for path in sorted(found, key=lambda p: d.line(p)):
        d.error(
            path,
            secret=True,
            message=f'credential-looking field "{rules.dotted(path)}": credentials never live in the repository '
            "(put them in the controller's kubeconfig); the value is not shown",
        )
    return found


def _cluster_from(d: documents.Doc, *, stem: str, filename: str) -> model.Cluster | None:
    obj = d.doc.data
    if not isinstance(obj, dict):
        d.error((), f"expected a mapping (a Cluster), not {rules.describe(obj)}", line=d.doc.line)
        return None
    secret_paths = _scan_credentials(d, obj)
    d.api_version_and_kind(obj, "Cluster")
    d.unknown_fields(obj, (), rules.CLUSTER_FIELDS, skip=secret_paths)
    meta = d.mapping(obj.get("metadata"), ("metadata",)) if "metadata" in obj else None
    if "metadata" not in obj:
        d.error((), "metadata.name is missing", line=d.doc.line)
    name: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if meta is not None:
        d.unknown_fields(meta, ("metadata",), rules.METADATA_FIELDS, skip=secret_paths)
        name = documents.check_name(d, meta)
        if name is not None and name != stem:
            d.error(
                ("metadata", "name"),
                f'file name "{filename}" does not match metadata.name {rules.quote(name)} '
                f"(expected clusters/{name}.yaml)",
            )
        labels = d.string_map(meta.get("labels"), ("metadata", "labels"), values=True)
        annotations = d.string_map(meta.get("annotations"), ("metadata", "annotations"), values=False)
    spec: dict[str, Any] = {}
    if "spec" in obj and obj["spec"] is not None:
        spec = d.mapping(obj["spec"], ("spec",)) or {}
    d.unknown_fields(spec, ("spec",), rules.CLUSTER_SPEC_FIELDS, skip=secret_paths)
    context = spec.get("context")
    if "context" in spec and (not isinstance(context, str) or not context):
        d.error(("spec", "context"), f"spec.context must be a non-empty string, not {rules.quote(context)}")
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
