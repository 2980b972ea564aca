"""Manifest files -> `model.Manifest`s: one document -> the objects it declares.

Owns: `manifests_of` (a ``List`` or ``<Kind>List`` expanded to its items, as kubectl does; shared with
fleet.clients.sources), the checks of an object's identity fields, and where ``${cluster.*}`` variables
sit. Does not: substitute variables or patch (fleet.core.render).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

import pathspec

from fleet.core import errors, model, yamlsafe
from fleet.core.repository import documents, rules


def bundle_manifests(
    st: documents.State,
    d: documents.Doc,
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
    ignore_rel = prefix + rules.IGNORE_FILE
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
        selected = [p for p in inner if p != rules.BUNDLE_FILE]
    else:
        chosen: set[str] = set()
        for i, entry in enumerate(paths):
            if entry in ("", "."):
                hits = [p for p in inner if p != rules.BUNDLE_FILE]
            else:
                hits = [p for p in inner if p == entry or p.startswith(entry + "/")]
            if not hits:
                d.error(
                    ("spec", "paths", i),
                    f"spec.paths[{i}] {rules.quote(entry)}: no such file or folder in bundles/{folder}/",
                )
                continue
            if entry in inner and not entry.endswith(rules.MANIFEST_SUFFIXES):
                d.error(
                    ("spec", "paths", i),
                    f"spec.paths[{i}] {rules.quote(entry)}: not a manifest file (.yaml, .yml or .json)",
                )
                continue
            chosen.update(hits)
        selected = [p for p in inner if p in chosen and p != rules.BUNDLE_FILE]
    selected = [
        p
        for p in selected
        if p.endswith(rules.MANIFEST_SUFFIXES)
        and PurePosixPath(p).name != rules.IGNORE_FILE
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
            docs = st.load(rel, lines=rules.VARIABLE_MARK in data or b"List" in data)
        except errors.ValidationError as e:
            st.problems.append(model.Problem(shown, e.line, str(e.args[0]), bundle=d.bundle))
            d.errors += 1
            continue
        if b"sops" in data and any(rules.is_sops_document(doc.data) for doc in docs):
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
                        f"{ref} is declared twice in bundle {rules.quote(folder)} (also at {seen[key]})",
                        bundle=d.bundle,
                    )
                )
                d.errors += 1
                continue
            seen[key] = where
            manifests.append(m)
    return tuple(manifests), tuple(encrypted)


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
        return f"is not a mapping (got {rules.describe(obj)}); {one} must be one Kubernetes object"
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
    if ns is not None and (not isinstance(ns, str) or rules.dns_label_problem(ns)):
        return f"has metadata.namespace {rules.quote(ns)} that is not a DNS-1123 label"
    if str(api).split("/")[0] == model.API_GROUP and kind in ("Bundle", "Cluster"):
        return f"is a fleet {kind}, not a manifest (a bundle folder holds one bundle.yaml at its top)"
    return None


def _variable_lines(doc: yamlsafe.Document, at: rules.Path_ = ()) -> Mapping[str, int]:
    """Line of the first field using each ``${cluster.NAME}`` of a document (or of the item at `at` of a
    List document), keyed by NAME."""
    if not doc.lines:
        return {}
    found: dict[str, int] = {}
    root: Any = doc.data
    for part in at:
        root = root[part]
    stack: list[tuple[rules.Path_, Any]] = [(at, root)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(((*path, str(k)), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
        elif isinstance(value, str) and "${cluster." in value:
            line = doc.lines.get(path, doc.line)
            for m in rules.VARIABLE.finditer(value):
                if not m.group(1):
                    found[m.group(2)] = min(line, found.get(m.group(2), line))
    return MappingProxyType(found)
