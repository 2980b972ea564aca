"""What a Kustomize build would read, found before it runs (pure: no I/O).

Owns: `inputs` (an overlay folder of a revision -> every repository file its build reads, walking
``resources``, ``components``, patches, generators and the other fields that name files, recursively) and
the refusals that make a build offline and contained (docs/sources.md): a remote base or any path that is
not a file or folder of the repository (``..`` that leaves it, an absolute path, a URL, a link the source
layer dropped), and the fields that run programs or reach the network (``helmCharts``, ``generators``,
``transformers``, ``validators``: plugins). A field the walker does not know is refused too, so a future
field that names a file cannot slip past it. Does not: run kustomize (`fleet.clients.sources`).

kustomize itself runs with its load restrictor (``LoadRestrictionsRootOnly``) and without plugins; this
walk is what keeps a base folder (which the restrictor allows anywhere) inside the repository, and it is
also the exact list of files the run gets: nothing else of the repository is written for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.core import errors, repository, yamlsafe

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# Fields of a Kustomization / Component (kustomize v5) that name no file.
_PLAIN = frozenset(
    {
        "apiVersion",
        "kind",
        "metadata",
        "namePrefix",
        "nameSuffix",
        "namespace",
        "commonLabels",
        "labels",
        "commonAnnotations",
        "images",
        "replicas",
        "vars",
        "sortOptions",
        "generatorOptions",
        "buildMetadata",
        "inventory",
    }
)
# Fields that run programs or fetch charts: refused.
_REFUSED = {
    "helmCharts": "inflates Helm charts inside kustomize (use spec.source.helm instead)",
    "helmGlobals": "configures Helm inside kustomize (use spec.source.helm instead)",
    "helmChartInflationGenerator": "inflates Helm charts inside kustomize (use spec.source.helm instead)",
    "generators": "runs generator plugins (use configMapGenerator / secretGenerator)",
    "transformers": "runs transformer plugins (use patches, labels, images, replacements ...)",
    "validators": "runs validator plugins",
}
_FILE_LISTS = ("crds", "configurations")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^git@|^github\.com/|^gitlab\.com/|^bitbucket\.org/")
MAX_KUSTOMIZATIONS = 500


class Refused(errors.ValidationError):
    """A kustomization that fleet will not build (path and line of the offending field)."""


@dataclass
class _Walk:
    files: Mapping[str, bytes]
    folders: frozenset[str]
    shown: Any  # Callable[[str], str]: repository path -> path as users see it
    read: set[str] = field(default_factory=set)
    visited: set[str] = field(default_factory=set)


def _folders(files: Mapping[str, bytes]) -> frozenset[str]:
    out: set[str] = set()
    for rel in files:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            out.add("/".join(parts[:i]))
    return frozenset(out)


def kustomization_in(files: Mapping[str, bytes], folder: str) -> str | None:
    """The kustomization file of `folder` (relative to the root), if it has one."""
    for name in KUSTOMIZATION_FILES:
        rel = f"{folder}/{name}" if folder else name
        if rel in files:
            return rel
    return None


def inputs(
    files: Mapping[str, bytes],
    overlay: str,
    *,
    shown: Any = lambda rel: rel,
    folders: frozenset[str] | None = None,
    where: tuple[str, int] | None = None,
) -> tuple[str, frozenset[str]]:
    """The kustomization file of folder `overlay` and every repository file a build of it reads.

    Raises `Refused` (path and line) for anything that would leave the repository, reach the network or
    run a plugin, and for a folder without kustomization (reported at `where`, the field naming it)."""
    w = _Walk(files=files, folders=folders if folders is not None else _folders(files), shown=shown)
    top = _kustomization(w, overlay, where=where)
    return top, frozenset(w.read)


def _kustomization(w: _Walk, folder: str, *, where: tuple[str, int] | None) -> str:
    rel = kustomization_in(w.files, folder)
    if rel is None:
        path, line = where if where is not None else (w.shown(folder or "."), 1)
        raise Refused(
            f"{w.shown(folder or '.')}/ holds no kustomization.yaml (a kustomize base or overlay needs one)",
            path=path,
            line=line,
        )
    if rel in w.visited:
        return rel
    if len(w.visited) >= MAX_KUSTOMIZATIONS:
        raise Refused(f"more than {MAX_KUSTOMIZATIONS} kustomizations in one build", path=w.shown(rel))
    w.visited.add(rel)
    w.read.add(rel)
    try:
        docs = yamlsafe.load_yaml(w.files[rel], path=w.shown(rel), lines=True)
    except errors.ValidationError as e:
        raise Refused(str(e.args[0]), path=w.shown(rel), line=e.line) from None
    present = [d for d in docs if d.data is not None]
    if len(present) != 1 or not isinstance(present[0].data, dict):
        raise Refused("a kustomization file holds exactly one mapping", path=w.shown(rel))
    doc = present[0]
    k: dict[str, Any] = doc.data

    def refuse(at: tuple[str | int, ...], message: str) -> Refused:
        return Refused(message, path=w.shown(rel), line=doc.lines.get(at, doc.line))

    def file_at(at: tuple[str | int, ...], value: Any, what: str) -> None:
        target = _resolve(w, folder, value, at=at, refuse=refuse, what=what)
        if target not in w.files:
            if target in w.folders:
                raise refuse(at, f"{what} {_q(value)} is a folder, not a file")
            raise refuse(at, f"{what} {_q(value)}: no such file in the repository (links are refused)")
        w.read.add(target)

    def file_or_folder(at: tuple[str | int, ...], value: Any, what: str) -> None:
        target = _resolve(w, folder, value, at=at, refuse=refuse, what=what)
        if target in w.files:
            w.read.add(target)
        elif target in w.folders or target == "":
            _kustomization(w, target, where=(w.shown(rel), doc.lines.get(at, doc.line)))
        else:
            raise refuse(
                at,
                f"{what} {_q(value)}: no such file or folder in the repository (fleet never fetches remote "
                "bases; links are refused)",
            )

    for key, value in k.items():
        if key in _PLAIN:
            continue
        if key in _REFUSED:
            raise refuse((key,), f"{key} is refused: it {_REFUSED[key]}")
        if key in ("resources", "bases", "components"):
            for i, entry in enumerate(_strings(value, key, (key,), refuse)):
                file_or_folder((key, i), entry, f"{key}[{i}]")
        elif key in _FILE_LISTS:
            for i, entry in enumerate(_strings(value, key, (key,), refuse)):
                file_at((key, i), entry, f"{key}[{i}]")
        elif key == "openapi":
            if isinstance(value, dict) and "path" in value:
                file_at((key, "path"), value["path"], "openapi.path")
        elif key == "patchesStrategicMerge":
            for i, entry in enumerate(_strings(value, key, (key,), refuse)):
                if not _inline(entry):
                    file_at((key, i), entry, f"{key}[{i}]")
        elif key in ("patches", "patchesJson6902", "replacements"):
            for i, item in enumerate(_list(value, key, refuse)):
                if isinstance(item, dict) and item.get("path") is not None:
                    file_at((key, i, "path"), item["path"], f"{key}[{i}].path")
        elif key in ("configMapGenerator", "secretGenerator"):
            for i, item in enumerate(_list(value, key, refuse)):
                if not isinstance(item, dict):
                    continue
                for j, entry in enumerate(
                    _strings(item.get("files"), f"{key}[{i}].files", (key, i, "files"), refuse)
                ):
                    _key, eq, source = entry.partition("=")
                    file_at((key, i, "files", j), source if eq else entry, f"{key}[{i}].files[{j}]")
                for j, entry in enumerate(
                    _strings(item.get("envs"), f"{key}[{i}].envs", (key, i, "envs"), refuse)
                ):
                    file_at((key, i, "envs", j), entry, f"{key}[{i}].envs[{j}]")
                if item.get("env"):
                    file_at((key, i, "env"), item["env"], f"{key}[{i}].env")
        else:
            raise refuse(
                (key,), f"unknown kustomization field {key!r}: fleet refuses what it cannot check is offline"
            )
    return rel


def _q(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else '"' + value + '"'
    return text if len(text) <= 100 else text[:97] + '..."'


def _inline(entry: str) -> bool:
    """A patchesStrategicMerge entry written inline (YAML of an object) rather than a file name."""
    return "\n" in entry or entry.lstrip().startswith("{") or ": " in entry


def _list(value: Any, key: str, refuse: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise refuse((key,), f"{key} must be a list")
    return value


def _strings(value: Any, what: str, at: tuple[str | int, ...], refuse: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or any(not isinstance(i, str) or not i for i in value):
        raise refuse(at, f"{what} must be a list of non-empty strings")
    return value


def _resolve(w: _Walk, folder: str, value: Any, *, at: tuple[str | int, ...], refuse: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise refuse(at, f"{what} must be a non-empty string")
    if _URL.match(value) or "?ref=" in value or "//" in value:
        raise refuse(at, f"{what} {_q(value)} is remote: fleet never fetches remote bases (vendor it)")
    if value.startswith("/") or value.startswith("~"):
        raise refuse(at, f"{what} {_q(value)} is an absolute path: only paths inside the repository")
    if "\\" in value or "\x00" in value:
        raise refuse(at, f"{what} {_q(value)} is not a plain relative path")
    target = repository.inside(folder, value)
    if target is None:
        raise refuse(at, f"{what} {_q(value)} leaves the repository")
    return target
