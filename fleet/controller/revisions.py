"""Following the repository: fetching, and taking in each new revision once.

Owns: the fetch loop (poll with jitter or when the webhook asks, at most once per `fetch_min_gap`; a
failing fetch keeps the last good revision, reports the error and its age, and retries with backoff); a
tip over a content limit reported as that; after a restart with the remote unreachable, the last good
revision kept in the mirror enforced (or said plainly that nothing is); for a new revision, the span tree
(`revision <sha>` with fetch, parse, placement and sources children), parse, the sources step, the
pipeline (`fleet.core.pipeline`), the empty-revision refusal, this controller's claim, the rollouts begun,
older renders still held loaded, the cluster registry updated (workers started and stopped) and the
clusters it changes woken.
Does not: reconcile (`fleet.controller.workers`).
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from typing import Any

import anyio
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from fleet.clients import source, statedb
from fleet.clients import sources as sources_mod
from fleet.controller import base, runtime, workers
from fleet.core import (
    backoff,
    errors,
    inventory,
    model,
    pipeline,
    placement,
    repository,
)

log = logging.getLogger("fleet.engine")
tracer = trace.get_tracer("fleet.engine")


class Revisions(workers.Workers):
    """The engine's part described above."""

    async def _fetch_loop(self) -> None:
        failures = 0
        while not self._stopping:
            began = time.monotonic()
            ok = await self._fetch_once()
            if self.desired is None and not self._stopping:
                await self._enforce_last_good()
            if self.store_health.behind:  # writes of the state database failed: try again
                await self._save_everything()
            failures = 0 if ok else failures + 1
            delay = (
                runtime.jitter(self.settings.interval)
                if ok
                # the engine's first retry waits twice `retry_base` (docs/operations.md)
                else backoff.delay(
                    failures + 1, base=self.settings.retry_base, cap=self.settings.retry_cap, max_doublings=10
                )
            )
            with anyio.move_on_after(delay):
                await self._fetch_wake.wait()
            # At most one fetch per `fetch_min_gap` however many webhooks ask (docs/operations.md, "Webhook"):
            # those arriving until the next fetch begins are answered by it; one arriving during it, by
            # another after it (the push may have come after that fetch read the branch).
            await anyio.sleep(max(0.0, began + self.settings.fetch_min_gap - time.monotonic()))
            self._fetch_wake = anyio.Event()

    async def _fetch_once(self) -> bool:
        """Fetch, and act on a new revision. False when the fetch or read failed (last good kept)."""
        started_ns = time.time_ns()
        try:
            if self.settings.rev is None:
                sha = await self.source.fetch_tip(self.follow)
            else:  # pinned: resolved and fetched once
                self._pinned = self._pinned or await self.source.fetch_tip(self.follow)
                sha = self._pinned
        except errors.FleetError as e:
            self._fetch_failed(str(e))
            return False
        fetched_ns = time.time_ns()
        if sha == self.revision.sha and self.desired is not None:
            self.metrics.fetches.labels(result="unchanged").inc()
            self._clear_fetch_error()
            self._refused = None
            return True
        if self._refused is not None and self._refused[0] == sha:
            self.metrics.fetches.labels(result="refused").inc()
            self._clear_fetch_error()
            return True
        try:
            snapshot = await self.source.snapshot(sha, subpath=self.settings.path)
        except errors.InputError as e:  # over a content limit, or no --path folder at this revision
            self._content_refused(sha, e)
            return True
        except errors.FleetError as e:  # the mirror cannot be read
            self._fetch_failed(str(e))
            return False
        self.metrics.fetches.labels(result="new").inc()
        await self._new_revision(snapshot, started_ns=started_ns, fetched_ns=fetched_ns)
        return True

    def _content_refused(self, sha: str, error: errors.InputError) -> None:
        """The tip was fetched but its content is refused as a whole (docs/operations.md): not a fetch
        failure. The last good revision stays enforced; the same tip is not read again."""
        self.metrics.fetches.labels(result="refused").inc()
        self._clear_fetch_error()
        detail = error.args[0] if error.args else str(error)
        if not detail.startswith("revision "):
            detail = f"revision {sha[:12]}: {detail}"
        message = f"{detail} (not applied; the last good revision stays enforced)"
        if self._refused != (sha, message):
            log.error("%s", message)
        self._refused = (sha, message)

    async def _enforce_last_good(self) -> None:
        """Nothing is enforced yet in this process (a restart) and the followed revision cannot be used:
        enforce the last good revision the mirror holds, or say plainly that nothing is enforced."""
        try:
            sha = await self.source.last_good(self.follow)
            snapshot = None if sha is None else await self.source.snapshot(sha, subpath=self.settings.path)
            why = f"the local mirror holds no last good revision of {self.follow}"
        except errors.FleetError as e:
            snapshot, why = None, str(e)
        if snapshot is None:
            if self._nothing_enforced != why:
                log.error("nothing is enforced: %s", why)
                for rt in self.clusters.values():  # restored from the state database: not reconciled now
                    rt.state = model.State.PENDING
                    rt.last_error = f"not reconciled since the restart: nothing is enforced ({why})"
            self._nothing_enforced = why
            self._refresh_fetch_error()
            return
        self._nothing_enforced = None
        now = time.time_ns()
        await self._new_revision(snapshot, started_ns=now, fetched_ns=now, from_mirror=True)
        log.warning(
            "enforcing the last good revision %s from the local mirror", (snapshot.revision or "")[:12]
        )
        self._refresh_fetch_error()

    def _clear_fetch_error(self) -> None:
        if self.fetch_error is not None:
            log.info("repository reachable again")
        self.fetch_error = None
        self.fetch_error_at = None
        self._fetch_message = None
        self._from_mirror = False

    def _fetch_failed(self, message: str) -> None:
        self.metrics.fetches.labels(result="error").inc()
        if self.fetch_error is None:
            self.fetch_error_at = runtime.now_rfc3339()
        self._fetch_message = message
        self._refresh_fetch_error()
        log.warning("%s", self.fetch_error)
        self.fetched_once = self.fetched_once or self.desired is not None

    def _refresh_fetch_error(self) -> None:
        """The status line of a failing fetch: what fails since when, and what is enforced meanwhile."""
        message = self._fetch_message
        if message is None or self.fetch_error_at is None:
            return
        since = self.fetch_error_at
        if self.desired is None:
            self.fetch_error = f"fetch failed (since {since}): {message}"
        elif self._from_mirror:
            rev = self.revision
            self.fetch_error = (
                f"fetch failed (last good revision kept, since {since}): {message}; enforcing the last good "
                f"revision {(rev.sha or '')[:12]} from the local mirror (committed {rev.committed_at}, "
                f"fetched {rev.fetched_at or 'before the restart'})"
            )
        else:
            self.fetch_error = f"fetch failed (last good revision kept, since {since}): {message}"

    async def _new_revision(
        self, snapshot: model.Snapshot, *, started_ns: int, fetched_ns: int, from_mirror: bool = False
    ) -> None:
        """Parse, place and render a revision and hand it to the workers; `from_mirror`: the last good
        revision read back from the mirror after a restart (the remote was not read)."""
        sha = snapshot.revision or ""
        fetched_at = self.revision.fetched_at if from_mirror and self.revision.sha == sha else None
        root = tracer.start_span(
            f"revision {sha[:7]}",
            kind=SpanKind.INTERNAL,
            start_time=started_ns,
            attributes={"fleet.revision": sha},
        )
        ctx = trace.set_span_in_context(root)
        tracer.start_span("fetch", context=ctx, start_time=started_ns).end(end_time=fetched_ns)
        try:
            try:
                with tracer.start_as_current_span("parse", context=ctx) as span:
                    repo = await repository.parse_in_thread(snapshot, cache=self._caches.parse)
                    span.set_attribute("fleet.files", len(snapshot.files))
                    span.set_attribute("fleet.problems", len(repo.problems))
                with tracer.start_as_current_span("placement", context=ctx) as span:
                    placed = await anyio.to_thread.run_sync(
                        functools.partial(placement.place, repo, cache=self._caches.placement)
                    )
                    expanded = await self._expand(repo, placed, snapshot)
                    desired = await anyio.to_thread.run_sync(
                        functools.partial(
                            pipeline.place_and_render,
                            repo,
                            revision=snapshot.revision,
                            instance=self.settings.instance,
                            placement_cache=self._caches.placement,
                            render_cache=self._caches.render,
                            placed=placed,
                            expanded=expanded,
                        )
                    )
                    span.set_attribute("fleet.bundles", len(desired.repo.bundles))
                    span.set_attribute("fleet.clusters", len(desired.repo.clusters))
                refused = self._refusal(desired)
                problems = tuple(
                    {"path": p.path, "line": p.line, "message": p.message}
                    for p in desired.problems
                    if p.severity is model.Severity.ERROR
                )
            except Exception as e:  # no revision's content may ever end the controller
                refused, problems = base._content_failure(e, sha=sha), ()
            if refused:
                problems = ({"path": self.settings.path or ".", "line": 1, "message": refused}, *problems)
                root.set_status(Status(StatusCode.ERROR, refused))
                self._set_revision(snapshot, problems)
                if not from_mirror:
                    self._clear_fetch_error()
                self.fetched_once = True
                log.error("revision %s refused: %s", sha[:7], refused)
                await self._persist_revision()
                return
            claim = await self._claim(snapshot, from_mirror=from_mirror)
            previous = self.desired
            if previous is not None and previous.repo.revision:
                # Clusters may still hold it: until the rollouts took this revision in, every cluster does.
                self._renders.setdefault(previous.repo.revision, previous)
            self.desired, self.claim = desired, claim  # together: a round reads both at once
            self.adopted = [*self.adopted, claim][-base.ADOPTED :]
            # The claim's instant is kept with it (and kept while a newer tip is refused): restored after a
            # restart, the controller's own revision records are still its own, not another writer's
            # (`inventory.Claim.by_another`; docs/reconcile.md, "Replicas of one source").
            self._set_revision(
                snapshot,
                problems,
                fetched_at=fetched_at if from_mirror else runtime.now_rfc3339(),
                claimed=(sha, claim.observed_at),
            )
            if from_mirror:
                self._from_mirror = True
            else:
                self._clear_fetch_error()
                self._refused = None
                await self._keep(sha)
            self.revision_context = root.get_span_context()
            self.audit.commit(sha, author=snapshot.author, subject=self.revision.message)
            self._update_registry(desired)
            self._batch = set()
            await self.rollouts.begin(
                revision=sha,
                author=snapshot.author,
                repo=desired.repo,
                placed=self._placed(desired),
                waves=desired.waves,
                held=self._held,
                paused={n for n, c in desired.repo.clusters.items() if c.paused},
                context=self.revision_context,
            )
            await self._load_renders(keep=desired)
            started, self._batch = self._batch, None
            changed = self._wake_changed(desired, sha=sha, started=started)
            forgotten, self._forgotten = self._forgotten, []
            for name in forgotten:
                await self._save(functools.partial(self.store.forget_cluster, name))
            root.set_attribute("fleet.clusters_selected", len(changed))
            root.set_attribute("fleet.bundles", len(desired.repo.bundles))
            self.fetched_once = True
            await self._persist_revision()
            log.info(
                "revision %s: %d clusters, %d bundles, %d clusters to reconcile",
                sha[:7],
                len(desired.repo.clusters),
                len(desired.repo.bundles),
                len(changed),
            )
        finally:
            root.end()

    async def _expand(
        self, repo: model.Repo, placed: model.PlacementResult, snapshot: model.Snapshot
    ) -> dict[str, model.Expansion]:
        """The sources step (Kustomize, Helm, SOPS: docs/sources.md), in a span of its own when it has
        anything to render; renderer processes started are counted in the metrics."""
        if not any(b.sourced for b in repo.bundles.values()):
            return {}
        cache = self._caches.sources
        before = dict(cache.runner.started)
        with tracer.start_as_current_span("sources") as span:
            expanded = await sources_mod.expand(
                repo, placed, snapshot, settings=self.settings.sources, cache=cache
            )
            started = {t: n - before.get(t, 0) for t, n in cache.runner.started.items()}
            for tool, n in started.items():
                if n:
                    self.metrics.renderer_processes.labels(tool=tool).inc(n)
            span.set_attribute("fleet.renderer_processes", sum(started.values()))
            span.set_attribute("fleet.bundles_expanded", len(expanded))
        return expanded

    async def _keep(self, sha: str) -> None:
        """Record an accepted revision in the mirror: after a restart without the remote, it is enforced."""
        try:
            await self.source.keep(self.follow, sha)
        except errors.FleetError as e:
            log.warning("cannot record the last good revision %s: %s", sha[:12], e)

    async def _claim(self, snapshot: model.Snapshot, *, from_mirror: bool = False) -> inventory.Claim:
        """This controller's claim for a revision it adopts (see the module docstring). A revision read
        back from the mirror (the remote unreachable after a restart) counts as seen when the state says
        it was first fetched, else as seen long ago: it never overrides what another replica recorded."""
        if self.source_id is None:
            self.source_id = await anyio.to_thread.run_sync(
                functools.partial(source.identity, self.settings.repo, subpath=self.settings.path)
            )
        sha = snapshot.revision or ""
        restored_sha, restored_at = self._restored_seen
        if sha and sha == restored_sha and restored_at:
            seen = restored_at
        elif from_mirror:
            seen = base.LONG_AGO
        else:
            seen = inventory.now_rfc3339()
        return inventory.Claim(
            source=self.source_id,
            revision=sha,
            observed_at=seen,
            committed_at=snapshot.committed_at,
            writer=f"fleet serve on {socket.gethostname()}",
        )

    def _refusal(self, desired: pipeline.Desired) -> str | None:
        if self.settings.allow_empty_repo:
            return None
        empty = pipeline.emptiness(desired.repo)
        return (
            f"{empty} at this revision: refused as a whole (a broken checkout looks like this)"
            if empty
            else None
        )

    def _set_revision(
        self,
        snapshot: model.Snapshot,
        problems: tuple[dict[str, Any], ...],
        *,
        fetched_at: str | None = "",
        claimed: tuple[str | None, str | None] | None = None,
    ) -> None:
        """The revision shown (the newest fetched, refused or not); `claimed`: the revision enforced and its
        claim's instant, when it changes (kept as it was when a tip is refused)."""
        claimed_sha, claimed_at = claimed or (self.revision.claimed_sha, self.revision.claimed_at)
        self.revision = statedb.RevisionRow(
            sha=snapshot.revision,
            message=(snapshot.message or "").splitlines()[0] if snapshot.message else None,
            author=snapshot.author,
            committed_at=snapshot.committed_at,
            fetched_at=runtime.now_rfc3339() if fetched_at == "" else fetched_at,
            problems=problems,
            claimed_sha=claimed_sha,
            claimed_at=claimed_at,
        )
        self.metrics.revision_timestamp.set(time.time())

    def _held(self, cluster: str, bundle: str) -> tuple[str | None, str | None]:
        """What a cluster holds of a bundle: the revision it was last Synced at there (None: unknown or
        nothing) and the hash last handed to it."""
        rt = self.clusters.get(cluster)
        if rt is None:
            return None, None
        status = rt.bundles.get(bundle)
        return (status.revision if status is not None else None), rt.signature.get(bundle)

    async def _load_renders(self, *, keep: pipeline.Desired) -> None:
        """Have the render of every older revision a cluster still holds at hand (the previous revision's is
        kept from memory; others, after a restart, come from the mirror: parse, place and render at that
        revision), and drop those no longer needed."""
        needed = self.rollouts.needed_revisions() - {keep.repo.revision}
        for sha in sorted(needed - set(self._renders)):
            try:
                snapshot = await self.source.snapshot(sha, subpath=self.settings.path)
                repo = await repository.parse_in_thread(snapshot)
                self._renders[sha] = await anyio.to_thread.run_sync(
                    functools.partial(
                        pipeline.place_and_render, repo, revision=sha, instance=self.settings.instance
                    )
                )
            except errors.FleetError as e:
                log.error(
                    "revision %s: cannot render it for the clusters that still hold it: %s", sha[:12], e
                )
        for sha in set(self._renders) - needed:
            del self._renders[sha]

    def _update_registry(self, desired: pipeline.Desired) -> None:
        """Start, stop and update cluster workers for this revision."""
        repo = desired.repo
        wanted = set(repo.clusters) | set(repo.broken_clusters)
        for name in sorted(set(self.clusters) - wanted):
            rt = self.clusters.pop(name)
            if rt.scope is not None:
                rt.scope.cancel()
            self._stop_watch(rt)
            self.metrics.forget_cluster(name)
            self._forgotten.append(name)
            log.info("cluster %s: removed from the repository, no longer managed (its objects stay)", name)
        for name in sorted(wanted):
            if name not in self.clusters:
                self.clusters[name] = runtime.ClusterRuntime(name=name, cluster=None)
            rt = self.clusters[name]
            if name in repo.broken_clusters:
                problems = repo.broken_clusters[name]
                rt.broken = str(problems[0]) if problems else "broken cluster file"
                self._stop_watch(rt)
                rt.state = model.State.FAILED
                rt.last_error = f"cluster {name}: registration frozen at its last good version: {rt.broken}"
                rt.attempted = True
            else:
                rt.broken = None
                rt.cluster = repo.clusters[name]
            runtime.mark_protected(rt, desired.protected)

    def _wake_changed(self, desired: pipeline.Desired, *, sha: str, started: set[str]) -> list[str]:
        """Wake the clusters whose targets this revision changes under the rollouts (a bundle merely left
        as it is until its turn is no change), and those a rollout started; start workers."""
        changed: list[str] = []
        for name in sorted(set(desired.repo.clusters) | set(desired.repo.broken_clusters)):
            rt = self.clusters[name]
            targets, holds = self._composite(rt, desired)
            sig = pipeline.signature(targets, desired.protected)
            moved = runtime.changed(rt, sig)
            if rt.scope is None and rt.cluster is not None and self._tg is not None:
                self._tg.start_soon(self._worker, rt)
            if rt.broken is None and (moved or name in started):
                changed.append(name)
                self._wake(rt, reason="revision", context=self.revision_context)
            elif rt.broken is None and not rt.attempted:
                self._wake(rt, reason="start")
            elif rt.broken is None:
                runtime.hold_newest(rt, sha=sha, holds=holds, now=runtime.now_rfc3339())
        return changed
