"""What a Helm render needs and may do, checked before it runs (pure: no I/O).

Owns: `chart_files` (every file of a vendored chart folder), `check_dependencies` (every dependency a
chart, or a chart it vendors, declares must be vendored under its ``charts/``: Helm is never asked to
fetch one), `set_values` (``spec.source.helm.set`` -> the nested values document fleet passes as the last
values file), `argv` (the ``helm template`` command line) and `sources_of` (which template each rendered
document came from, by Helm's ``# Source:`` comments). Does not: run Helm (`fleet.clients.sources`).
"""

from __future__ import annotations

import bisect
import io
import json
import re
import tarfile
from collections.abc import Mapping, Sequence
from typing import Any

from fleet.core import errors, repository, yamlsafe

SET_FILE = ".fleet/set.json"  # where the `set` values are written in a run's folder (not a repository path)
_SOURCE = re.compile(rb"^# Source: (\S.*)$", re.MULTILINE)


class Refused(errors.ValidationError):
    """A chart fleet will not render (path and line of the offending field or file)."""


def under(keys: Sequence[str], folder: str) -> list[str]:
    """The paths of sorted `keys` below `folder` (relative to the root; "" is the root)."""
    if not folder:
        return list(keys)
    prefix = folder + "/"
    start = bisect.bisect_left(keys, prefix)
    out = []
    for i in range(start, len(keys)):
        if not keys[i].startswith(prefix):
            break
        out.append(keys[i])
    return out


def chart_files(files: Mapping[str, bytes], keys: Sequence[str], chart: str) -> dict[str, bytes]:
    """Every file of the chart folder `chart` (relative to the root), by path."""
    return {rel: files[rel] for rel in under(keys, chart)}


def _dependencies(doc: Any) -> list[dict[str, Any]]:
    deps = doc.get("dependencies") if isinstance(doc, dict) else None
    return [d for d in deps if isinstance(d, dict)] if isinstance(deps, list) else []


def _load_one(data: bytes, *, path: str) -> Any:
    docs = yamlsafe.load_yaml(data, path=path)
    present = [d.data for d in docs if d.data is not None]
    return present[0] if present else None


def _archive_name(data: bytes) -> str | None:
    """The chart name in a vendored chart archive (its top ``Chart.yaml``), or None when unreadable."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] == repository.CHART_FILE and member.isfile():
                    f = tar.extractfile(member)
                    if f is None or member.size > 1024 * 1024:
                        return None
                    doc = _load_one(f.read(), path=member.name)
                    name = doc.get("name") if isinstance(doc, dict) else None
                    return name if isinstance(name, str) else None
    except (tarfile.TarError, OSError, EOFError, errors.ValidationError):
        return None
    return None


def check_dependencies(files: Mapping[str, bytes], chart: str, *, shown: Any) -> None:
    """Raise `Refused` when `chart`, or a chart vendored below it, declares a dependency that is not
    vendored in its ``charts/`` folder (by chart name, as Helm matches them): fleet never lets Helm fetch
    a chart from a repository or an OCI registry."""
    stack = [chart]
    seen: set[str] = set()
    while stack:
        folder = stack.pop()
        if folder in seen:
            continue
        seen.add(folder)
        vendored: dict[str, str] = {}
        prefix = f"{folder}/charts/"
        for rel in files:
            if not rel.startswith(prefix):
                continue
            rest = rel[len(prefix) :]
            parts = rest.split("/")
            if len(parts) == 2 and parts[1] == repository.CHART_FILE:
                sub = prefix + parts[0]
                try:
                    doc = _load_one(files[rel], path=shown(rel))
                except errors.ValidationError as e:
                    raise Refused(str(e.args[0]), path=shown(rel), line=e.line) from None
                name = doc.get("name") if isinstance(doc, dict) else None
                if isinstance(name, str):
                    vendored[name] = sub
                stack.append(sub)
            elif len(parts) == 1 and rest.endswith((".tgz", ".tar.gz")):
                name = _archive_name(files[rel])
                if name is not None:
                    vendored.setdefault(name, rel)
        for meta in (repository.CHART_FILE, "requirements.yaml"):
            rel = f"{folder}/{meta}"
            if rel not in files:
                continue
            try:
                doc = _load_one(files[rel], path=shown(rel))
            except errors.ValidationError as e:
                raise Refused(str(e.args[0]), path=shown(rel), line=e.line) from None
            for dep in _dependencies(doc):
                name = dep.get("name")
                if not isinstance(name, str) or name in vendored:
                    continue
                where = "from a chart repository" if dep.get("repository") else "not in charts/"
                raise Refused(
                    f'dependency "{name}" ({where}) is not vendored in {shown(folder)}/charts/: fleet never '
                    "fetches charts; run `helm dependency build` and commit the charts/ folder",
                    path=shown(rel),
                )


def set_values(pairs: Sequence[tuple[str, Any]]) -> bytes:
    """`spec.source.helm.set` as one nested values document (JSON), in order: ``image.tag: "1.27"`` ->
    ``{"image": {"tag": "1.27"}}``. Values keep their YAML types; a later key wins over an earlier one."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = repository.split_set_key(key)
        node = root
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = value
    return json.dumps(root, ensure_ascii=False).encode()


def argv(
    helm: str,
    *,
    release: str,
    chart: str,
    namespace: str,
    values: Sequence[str],
    include_crds: bool,
) -> list[str]:
    """``helm template``: a local chart folder, no repository, tests left out (`helm install` never runs
    them), CRDs only when asked. Paths are relative to the run's folder."""
    out = [helm, "template", release, chart, "--namespace", namespace, "--skip-tests"]
    if include_crds:
        out.append("--include-crds")
    for v in values:
        out += ["--values", v]
    return out


def sources_of(output: bytes) -> list[tuple[int, str]]:
    """(line, template) of every ``# Source: CHART/templates/...`` comment of Helm's output, in order."""
    found = []
    for m in _SOURCE.finditer(output):
        line = output.count(b"\n", 0, m.start()) + 1
        found.append((line, m.group(1).decode("utf-8", errors="replace").strip()))
    return found
