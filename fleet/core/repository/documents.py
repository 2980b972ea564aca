"""One parse's working state: documents read through the cache, problems collected at their lines.

Owns: `ParseCache` (the parsed files of the previous revision), the per-document problem collector with
line lookup, and the state one `parse` fills. Does not: know what a cluster or a bundle file holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.core import errors, model, yamlsafe
from fleet.core.repository import rules

# ----------------------------------------------------------------------------------------------------------
# Problem collection with line lookup.


class Doc:
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
        self.secret_paths: set[rules.Path_] = set()

    def line(self, path: rules.Path_) -> int:
        lines = self.doc.lines
        for end in range(len(path), 0, -1):
            found = lines.get(path[:end])
            if found is not None:
                return found
        return self.doc.line

    def value_line(self, path: rules.Path_) -> int:
        return self.doc.value_lines.get(path, self.line(path))

    def error(
        self, path: rules.Path_, message: str, *, line: int | None = None, secret: bool = False
    ) -> None:
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

    def warning(self, path: rules.Path_, message: str) -> None:
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

    def mapping(self, obj: Any, path: rules.Path_, *, what: str = "a mapping") -> dict[str, Any] | None:
        if isinstance(obj, dict):
            return obj
        self.error(path, f"{rules.dotted(path)} must be {what}, not {rules.describe(obj)}")
        return None

    def unknown_fields(
        self,
        obj: Mapping[str, Any],
        path: rules.Path_,
        allowed: Sequence[str],
        *,
        skip: Iterable[rules.Path_] = (),
    ) -> None:
        skipped = set(skip)
        for key in obj:
            if key in allowed:
                continue
            sub = (*path, str(key))
            if sub in skipped:
                continue
            self.error(sub, f'unknown field "{rules.dotted(sub)}"{rules.suggest(str(key), allowed)}')

    def api_version_and_kind(self, obj: Mapping[str, Any], kind: str) -> None:
        api = obj.get("apiVersion")
        if "apiVersion" not in obj:
            self.error((), f'apiVersion is missing (expected "{model.API_VERSION}")', line=self.doc.line)
        elif api != model.API_VERSION:
            self.error(("apiVersion",), f'apiVersion must be "{model.API_VERSION}", not {rules.quote(api)}')
        got = obj.get("kind")
        if "kind" not in obj:
            self.error((), f'kind is missing (expected "{kind}")', line=self.doc.line)
        elif got != kind:
            self.error(("kind",), f'kind must be "{kind}", not {rules.quote(got)}')

    def string_map(self, obj: Any, path: rules.Path_, *, values: bool) -> dict[str, str]:
        """metadata.labels / annotations: keys are label keys; label values when `values`."""
        if obj is None:
            return {}
        m = self.mapping(obj, path)
        if m is None:
            return {}
        out: dict[str, str] = {}
        for key, value in m.items():
            sub = (*path, str(key))
            why = rules.label_key_problem(key)
            if why:
                self.error(sub, f"{rules.dotted(path)} key {rules.quote(key)} {why}")
                continue
            if values:
                why = rules.label_value_problem(value)
                if why:
                    self.error(sub, f"{rules.dotted(sub)} value {rules.quote(value)} {why}")
                    continue
            elif not isinstance(value, str):
                self.error(
                    sub, f"{rules.dotted(sub)} must be a string, not {rules.describe(value)} (quote it)"
                )
                continue
            out[str(key)] = value
        return out

    def boolean(self, obj: Mapping[str, Any], path: rules.Path_, key: str, default: bool) -> bool:
        if key not in obj:
            return default
        value = obj[key]
        if not isinstance(value, bool):
            self.error(
                (*path, key), f"{rules.dotted((*path, key))} must be true or false, not {rules.quote(value)}"
            )
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
class State:
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
    dependencies: dict[str, tuple[Doc, rules.Path_, tuple[str, ...]]] = field(default_factory=dict)
    placement_clusters: list[tuple[Doc, rules.Path_, str]] = field(default_factory=list)

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


def warning(path: str, message: str, *, line: int = 1) -> model.Problem:
    return model.Problem(path, line, message, model.Severity.WARNING)


def check_name(d: Doc, meta: Mapping[str, Any]) -> str | None:
    if "name" not in meta:
        d.error(("metadata",), "metadata.name is missing")
        return None
    name = meta["name"]
    why = rules.dns_label_problem(name)
    if why:
        d.error(("metadata", "name"), f"metadata.name {rules.quote(name)} {why}")
        return None
    return str(name)
