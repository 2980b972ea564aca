"""Bundle folders (``bundles/NAME/bundle.yaml`` and the files beside it) -> `model.Bundle`.

Owns: the bundle spec's fields (namespace, paths, dependsOn, overrides and their patches, source and
decrypt), and which files of the folder are its manifests. Does not: parse the selecting fields
(`selection`) or the manifests themselves (`manifests`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

from fleet.core import errors, model
from fleet.core.repository import documents, manifest_files, rules, selection

# -- bundles -----------------------------------------------------------------------------------------------


def parse_bundle(st: documents.State, folder: str, rels: list[str], *, broken: bool) -> None:
    prefix = f"bundles/{folder}/"
    bundle_rel = prefix + rules.BUNDLE_FILE
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
            st.problems.append(
                documents.warning(st.shown(prefix.rstrip("/")), "ignored: folder has no bundle.yaml")
            )
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
    d = documents.Doc(path=shown, doc=present[0], sink=st.problems, bundle=key)
    if len(present) > 1:
        d.error((), "one Bundle per file: found a second document", line=present[1].line)
    bundle = _bundle_from(st, d, folder=folder, rels=rels)
    if broken or d.errors or bundle is None:
        st.broken_bundle_names.add(key)
    else:  # valid: its name is its folder's, so unique
        st.bundles[bundle.name] = bundle


def _bundle_from(
    st: documents.State, d: documents.Doc, *, folder: str, rels: list[str]
) -> model.Bundle | None:
    obj = d.doc.data
    if not isinstance(obj, dict):
        d.error((), f"expected a mapping (a Bundle), not {rules.describe(obj)}", line=d.doc.line)
        return None
    d.api_version_and_kind(obj, "Bundle")
    d.unknown_fields(obj, (), rules.CLUSTER_FIELDS)
    meta = d.mapping(obj.get("metadata"), ("metadata",)) if "metadata" in obj else None
    if "metadata" not in obj:
        d.error((), "metadata.name is missing", line=d.doc.line)
    name: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if meta is not None:
        d.unknown_fields(meta, ("metadata",), rules.METADATA_FIELDS)
        name = documents.check_name(d, meta)
        if name is not None and name != folder:
            d.error(
                ("metadata", "name"),
                f'folder "bundles/{folder}" does not match metadata.name {rules.quote(name)} '
                f"(expected bundles/{name}/)",
            )
        labels = d.string_map(meta.get("labels"), ("metadata", "labels"), values=True)
        annotations = d.string_map(meta.get("annotations"), ("metadata", "annotations"), values=False)
    spec: dict[str, Any] = {}
    if "spec" in obj and obj["spec"] is not None:
        spec = d.mapping(obj["spec"], ("spec",)) or {}
    d.unknown_fields(spec, ("spec",), rules.BUNDLE_SPEC_FIELDS)

    namespace = None
    if spec.get("namespace") is not None:
        why = rules.dns_label_problem(spec["namespace"])
        if why:
            d.error(("spec", "namespace"), f"spec.namespace {rules.quote(spec['namespace'])} {why}")
        else:
            namespace = str(spec["namespace"])

    paths = _check_paths(d, spec)
    placement = None
    if "placement" in spec:
        placement = selection.placement_of(st, d, spec["placement"], ("spec", "placement"))
    overrides = _overrides(st, d, spec.get("overrides"))
    depends = _depends_on(st, d, spec.get("dependsOn"), own=name or folder)
    prune = d.boolean(spec, ("spec",), "prune", True)
    allow_empty = d.boolean(spec, ("spec",), "allowEmpty", False)
    adopt = d.boolean(spec, ("spec",), "adopt", False)
    suspend = d.boolean(spec, ("spec",), "suspend", False)
    rollout = selection.rollout_of(st, d, spec) if "rollout" in spec else model.DEFAULT_ROLLOUT

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
        manifests, encrypted = manifest_files.bundle_manifests(
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


def _check_paths(d: documents.Doc, spec: Mapping[str, Any]) -> tuple[str, ...] | None:
    if "paths" not in spec or spec["paths"] is None:
        return None
    raw = spec["paths"]
    if not isinstance(raw, list):
        d.error(("spec", "paths"), f"spec.paths must be a list of paths, not {rules.describe(raw)}")
        return ()
    out: list[str] = []
    for i, entry in enumerate(raw):
        why = rules.path_entry_problem(entry)
        if why:
            d.error(("spec", "paths", i), f"spec.paths[{i}] {rules.quote(entry)} {why}")
            continue
        norm = "/".join(p for p in PurePosixPath(entry).parts if p not in (".",))
        out.append(norm)
    return tuple(out)


def _overrides(st: documents.State, d: documents.Doc, raw: Any) -> tuple[model.Override, ...]:
    if raw is None:
        return ()
    path: rules.Path_ = ("spec", "overrides")
    if not isinstance(raw, list):
        d.error(path, f"spec.overrides must be a list, not {rules.describe(raw)}")
        return ()
    out: list[model.Override] = []
    for i, item in enumerate(raw):
        ipath = (*path, i)
        ov = d.mapping(item, ipath)
        if ov is None:
            continue
        d.unknown_fields(ov, ipath, rules.OVERRIDE_FIELDS)
        if "placement" not in ov:
            d.error(
                ipath,
                f"{rules.dotted(ipath)}.placement is missing (an override applies to the clusters it selects)",
            )
            placement = None
        else:
            placement = selection.placement_of(st, d, ov["placement"], (*ipath, "placement"))
        patches = _patches(d, ov.get("patches"), (*ipath, "patches"), present="patches" in ov)
        if placement is not None and patches is not None:
            out.append(model.Override(placement=placement, patches=patches, line=d.line(ipath)))
    return tuple(out)


def _patches(
    d: documents.Doc, raw: Any, path: rules.Path_, *, present: bool
) -> tuple[model.Patch, ...] | None:
    where = rules.dotted(path)
    if not present or not isinstance(raw, list) or not raw:
        d.error(path, f"{where} must be a non-empty list of patches")
        return None
    out: list[model.Patch] = []
    ok = True
    for i, item in enumerate(raw):
        ppath = (*path, i)
        pw = rules.dotted(ppath)
        p = d.mapping(item, ppath)
        if p is None:
            ok = False
            continue
        d.unknown_fields(p, ppath, rules.PATCH_FIELDS)
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
                    f"{pw}.merge must be a mapping (an RFC 7386 merge patch), not {rules.describe(p['merge'])}",
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


def _target(d: documents.Doc, raw: Any, path: rules.Path_, *, present: bool) -> model.PatchTarget | None:
    where = rules.dotted(path)
    if not present:
        d.error(path[:-1], f"{where} is missing (kind, name, apiVersion and/or namespace)")
        return None
    t = d.mapping(raw, path)
    if t is None:
        return None
    d.unknown_fields(t, path, rules.TARGET_FIELDS)
    values: dict[str, str | None] = {}
    ok = True
    for key in rules.TARGET_FIELDS:
        v = t.get(key)
        if v is not None and (not isinstance(v, str) or not v):
            d.error((*path, key), f"{where}.{key} must be a non-empty string, not {rules.quote(v)}")
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


def _json_patch(d: documents.Doc, raw: Any, path: rules.Path_) -> tuple[Mapping[str, Any], ...] | None:
    where = rules.dotted(path)
    if not isinstance(raw, list) or not raw:
        d.error(path, f"{where} must be a non-empty list of RFC 6902 operations, not {rules.describe(raw)}")
        return None
    ok = True
    for i, op in enumerate(raw):
        opath = (*path, i)
        ow = rules.dotted(opath)
        m = d.mapping(op, opath)
        if m is None:
            ok = False
            continue
        name = m.get("op")
        if name not in rules.JSON_PATCH_OPS:
            d.error(
                (*opath, "op") if "op" in m else opath,
                f"{ow}.op {rules.quote(name) + ' ' if 'op' in m else ''}is not one of {', '.join(rules.JSON_PATCH_OPS)}",
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
                        (*opath, key),
                        f'{ow}.{key} {rules.quote(v)} is not a JSON pointer ("" or starting with /)',
                    )
                    ok = False
        if any(k not in allowed for k in m):
            ok = False
    return tuple(raw) if ok else None


def _depends_on(st: documents.State, d: documents.Doc, raw: Any, *, own: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    path: rules.Path_ = ("spec", "dependsOn")
    if not isinstance(raw, list):
        d.error(path, f"spec.dependsOn must be a list of bundle names, not {rules.describe(raw)}")
        return ()
    out: list[str] = []
    for i, item in enumerate(raw):
        why = rules.dns_label_problem(item)
        if why:
            d.error((*path, i), f"spec.dependsOn[{i}] {rules.quote(item)} {why}")
            continue
        out.append(str(item))
    st.dependencies[d.bundle or own] = (d, path, tuple(out))
    return tuple(out)


def _decrypt(d: documents.Doc, spec: Mapping[str, Any]) -> str | None:
    if spec.get("decrypt") is None:
        return None
    value = spec["decrypt"]
    if value not in rules.DECRYPTORS:
        d.error(
            ("spec", "decrypt"),
            f"spec.decrypt must be {' or '.join(rules.DECRYPTORS)} (SOPS with age keys), not {rules.quote(value)}",
        )
        return None
    return str(value)


def _source(
    st: documents.State, d: documents.Doc, spec: Mapping[str, Any], *, folder: str, name: str
) -> model.Source | None:
    """`spec.source`: exactly one of kustomize and helm (docs/sources.md)."""
    path: rules.Path_ = ("spec", "source")
    raw = d.mapping(spec["source"], path)
    if raw is None:
        return None
    d.unknown_fields(raw, path, rules.SOURCE_FIELDS)
    chosen = [k for k in rules.SOURCE_FIELDS if k in raw]
    if len(chosen) != 1:
        d.error(path, "spec.source must have exactly one of kustomize and helm")
        return None
    base = f"bundles/{folder}"
    files = st.snapshot.files
    line = d.line(path)
    if chosen[0] == "kustomize":
        kpath: rules.Path_ = (*path, "kustomize")
        k = d.mapping(raw["kustomize"], kpath)
        if k is None:
            return None
        d.unknown_fields(k, kpath, rules.KUSTOMIZE_FIELDS)
        if "path" not in k:
            d.error(
                kpath,
                "spec.source.kustomize.path is missing (a folder of the bundle holding a kustomization)",
            )
            return None
        value = k["path"]
        why = rules.relative_problem(value, variables=True)
        if why:
            d.error((*kpath, "path"), f"spec.source.kustomize.path {rules.quote(value)} {why}")
            return None
        if "${cluster." not in value:
            where = rules.inside(base, value)
            if where is None or not any(f.startswith(where + "/") for f in files):
                d.error(
                    (*kpath, "path"),
                    f"spec.source.kustomize.path {rules.quote(value)}: no such folder in {base}/",
                )
                return None
        return model.Source(
            kustomize=model.KustomizeSource(path=value, folder=base, line=d.line((*kpath, "path"))), line=line
        )
    hpath: rules.Path_ = (*path, "helm")
    h = d.mapping(raw["helm"], hpath)
    if h is None:
        return None
    d.unknown_fields(h, hpath, rules.HELM_FIELDS)
    ok = True
    lines: dict[str, int] = {}
    chart = h.get("chart")
    if "chart" not in h:
        d.error(hpath, "spec.source.helm.chart is missing (a chart folder of the repository)")
        ok = False
    else:
        lines["chart"] = d.line((*hpath, "chart"))
        why = rules.relative_problem(chart, variables=False)
        if why == 'contains ".."':  # a chart may live elsewhere in the repository: inside() decides
            why = None
        where = rules.inside(base, chart) if isinstance(chart, str) and not why else None
        if why is None and where is None:
            why = "leaves the repository"
        if why:
            d.error((*hpath, "chart"), f"spec.source.helm.chart {rules.quote(chart)} {why}")
            ok = False
        elif f"{where}/{rules.CHART_FILE}" not in files:
            d.error(
                (*hpath, "chart"),
                f"spec.source.helm.chart {rules.quote(chart)}: no {rules.CHART_FILE} in {st.shown(where or '.')}/ (the chart "
                "must be vendored in the repository)",
            )
            ok = False
    release = h.get("releaseName", name)
    if "releaseName" in h:
        lines["releaseName"] = d.line((*hpath, "releaseName"))
        if not isinstance(release, str) or len(release) > 53 or not rules.RELEASE_NAME.fullmatch(release):
            d.error(
                (*hpath, "releaseName"),
                f"spec.source.helm.releaseName {rules.quote(release)} is not a Helm release name (lowercase letters, "
                "digits, '-' and '.', at most 53 characters)",
            )
            ok = False
    values: list[str] = []
    if h.get("values") is not None:
        vpath: rules.Path_ = (*hpath, "values")
        lines["values"] = d.line(vpath)
        if not isinstance(h["values"], list):
            d.error(
                vpath, f"spec.source.helm.values must be a list of files, not {rules.describe(h['values'])}"
            )
            ok = False
        else:
            for i, entry in enumerate(h["values"]):
                lines[f"values.{i}"] = d.value_line((*vpath, i))
                why = rules.relative_problem(entry, variables=True)
                if why:
                    d.error((*vpath, i), f"spec.source.helm.values[{i}] {rules.quote(entry)} {why}")
                    ok = False
                    continue
                if "${cluster." not in entry and f"{base}/{rules.inside('', entry)}" not in files:
                    d.error(
                        (*vpath, i),
                        f"spec.source.helm.values[{i}] {rules.quote(entry)}: no such file in {base}/",
                    )
                    ok = False
                    continue
                values.append(entry)
    settings: list[tuple[str, Any]] = []
    if h.get("set") is not None:
        spath: rules.Path_ = (*hpath, "set")
        lines["set"] = d.line(spath)
        m = d.mapping(h["set"], spath)
        if m is None:
            ok = False
        else:
            for key, value in m.items():
                lines[f"set.{key}"] = d.line((*spath, str(key)))
                why = rules.set_key_problem(str(key))
                if why:
                    d.error((*spath, str(key)), f"spec.source.helm.set key {rules.quote(key)} {why}")
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
