"""`fleet sync --workers N`: the clusters of one sync split over N worker processes (docs/reconcile.md).

Owns: starting the worker processes (`Workers.start`: the `fleet sync` process is worker 1 and forks the
N - 1 others before the event loop and before any thread exists, so a worker costs no interpreter start
and no import, and N workers are N processes, one per core; each waits for its work), handing each
worker its share of the clusters (`run`: `fleet.core.partition.split` by work, with their targets from
the revision the parent read, parsed and rendered once; the parent reconciles the first share itself),
following them (each cluster's result comes back as soon as that cluster is done and goes to the
parent's progress), each worker's deadline, a worker that dies or fails (killed, crashed, out of time,
the parent's own share included: every cluster it did not report is Failed, naming the worker, and an
error line names them all), and stopping every worker (the end of the run, an error of the parent,
Ctrl-C, SIGTERM). The messages are `multiprocessing`'s: one Pipe per worker, pickled objects
(the work one way; `("cluster", ClusterResult)` per cluster or `("crashed", why)` the other, then the
end of the pipe).
Does not: read, render or judge anything (`fleet.cli.sync` does, as for one process), or reconcile a
cluster differently: a worker runs `fleet.cluster.reconcile.reconcile_fleet` over its clusters as the
single process does over all of them.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import Any

import anyio
import typer
from anyio import wait_readable  # loaded before the fork: a worker then imports nothing

from fleet.cli import common
from fleet.clients import kube
from fleet.cluster import reconcile
from fleet.core import model, partition, plan

# Beyond its rounds (each bounded by `reconcile.round_limit`), what a worker may spend: starting its
# clients, sending results. Past it the worker is killed and its clusters not reported are Failed.
WORKER_MARGIN = 60.0
# How long an idle worker waits for its work while the parent reads and renders the revision.
WAIT_FOR_WORK = 3600.0
# How long a worker told to stop gets before it is killed.
STOP_GRACE = 5.0
# A worker lives for one sync and makes mostly acyclic garbage (freed at once by reference counting):
# the cycle collector runs after 50,000 new container objects instead of 700. With the default a cold
# sync of 20 clusters x 100 objects spent 0.3-0.45 s of its 2.1-2.6 s of CPU in some 300 collections;
# with this, 2 collections and 1.7-1.9 s (docs/benchmarks.md, `bench_sync_workers`). `fleet sync` in one
# process lives the same way (`lean_collector`): 4% fewer instructions for 10 clusters x 100 (valgrind).
WORKER_GC_THRESHOLDS = (50_000, 20, 100)


def _mappingproxy(d: dict[Any, Any]) -> types.MappingProxyType[Any, Any]:
    return types.MappingProxyType(d)


def _reduce_mappingproxy(m: types.MappingProxyType[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
    return _mappingproxy, (dict(m),)


# fleet's model holds read-only mappings (`types.MappingProxyType`); they cross the pipe as copies.
ForkingPickler.register(types.MappingProxyType, _reduce_mappingproxy)


@dataclass(frozen=True)
class Work:
    """What one worker reconciles: its clusters and their targets, and how (the parent's settings)."""

    revision: str | None
    clusters: Mapping[str, model.Cluster]
    targets: Mapping[str, Mapping[str, plan.Target]]
    protected: Mapping[str, str | plan.Target]
    kubeconfig: kube.Kubeconfig
    settings: kube.Settings
    options: reconcile.Options


@dataclass
class _Worker:
    index: int  # 1-based, as named to the user
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    busy: bool = False  # given work

    def describe(self) -> str:
        return f"sync worker {self.index} (pid {self.process.pid})"


class Workers:
    """The workers of a sync: this process (worker 1) and N - 1 forked ones waiting for their share."""

    def __init__(self, workers: list[_Worker]) -> None:
        self._workers = workers

    @property
    def count(self) -> int:
        """Workers in all, this process included."""
        return len(self._workers) + 1

    @classmethod
    def start(cls, count: int) -> Workers:
        """Fork `count - 1` workers (this process is the first). Call before the event loop and any thread
        start (a fork copies only the calling thread; a lock another thread held would stay held in the
        child forever)."""
        if threading.active_count() != 1:
            raise RuntimeError("sync workers must be started before any thread")
        sys.stdout.flush()  # what the parent buffered must not be written again by a child
        sys.stderr.flush()
        # What the parent holds (imported modules, mostly) moves out of the collector's reach: a worker's
        # collections then never scan it nor write to its pages (which stay shared with the parent).
        gc.freeze()
        ctx = multiprocessing.get_context("fork")
        workers: list[_Worker] = []
        try:
            for i in range(2, count + 1):
                parent_end, child_end = ctx.Pipe(duplex=True)
                process = ctx.Process(target=_main, args=(child_end,), name=f"fleet-sync-{i}", daemon=True)
                process.start()
                child_end.close()  # so the parent sees EOF when the worker ends, however it ends
                workers.append(_Worker(i, process, parent_end))
        except BaseException:
            cls(workers).stop()
            raise
        return cls(workers)

    def stop(self) -> None:
        """Stop every worker (blocking, bounded): an idle one is told to go, a busy one is terminated;
        any still alive after `STOP_GRACE` is killed."""
        for w in self._workers:
            if w.process.exitcode is None:
                if w.busy:
                    w.process.terminate()
                else:
                    try:
                        w.conn.send(None)
                    except OSError:
                        w.process.terminate()
        for w in self._workers:
            w.process.join(STOP_GRACE)
            if w.process.exitcode is None:
                w.process.kill()
                w.process.join(STOP_GRACE)
            w.conn.close()

    async def run(
        self,
        repo: model.Repo,
        targets: Mapping[str, Mapping[str, plan.Target]],
        protected: Mapping[str, str | plan.Target],
        *,
        kubeconfig: kube.Kubeconfig,
        settings: kube.Settings,
        options: reconcile.Options,
        on_done: Callable[[reconcile.ClusterResult], object],
    ) -> dict[str, reconcile.ClusterResult]:
        """Reconcile `repo`'s clusters over the workers, this process reconciling the first share: each
        cluster's result as one process would give it (`on_done` called for each as it comes), a Failed
        result for each one a failed worker did not report. `options.concurrency` is shared out: each
        worker reconciles its share of it at once."""
        work = {
            name: partition.cluster_work(targets.get(name, {}), paused=cluster.paused)
            for name, cluster in repo.clusters.items()
        }
        groups = partition.split(work, self.count)
        each = dataclasses.replace(
            options, concurrency=max(1, math.ceil(options.concurrency / max(1, len(groups))))
        )
        results: dict[str, reconcile.ClusterResult] = {}

        def report(result: reconcile.ClusterResult) -> None:
            results[result.cluster] = result
            on_done(result)

        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_sigterm, self)
            async with anyio.create_task_group() as followers:
                shares = [
                    Work(
                        revision=repo.revision,
                        clusters={n: repo.clusters[n] for n in names},
                        targets={n: targets.get(n, {}) for n in names},
                        protected=protected,
                        kubeconfig=kubeconfig,
                        settings=settings,
                        options=each,
                    )
                    for names in groups
                ]
                for w, share in zip(self._workers, shares[1:], strict=False):  # handed out first
                    followers.start_soon(_follow, w, share, deadline(share), report)
                if shares:
                    followers.start_soon(_own_share, shares[0], deadline(shares[0]), report)
            tg.cancel_scope.cancel()
        for name in sorted(set(repo.clusters) - set(results)):  # never an absent cluster taken as done
            report(_failed(name, targets.get(name, {}), f"cluster {name}: not reported by any sync worker"))
        return results


def deadline(work: Work) -> float:
    """Seconds a worker may take for `work`: its clusters in batches of its concurrency, each batch as
    long as the longest round allowed (`reconcile.round_limit`), plus `WORKER_MARGIN`."""
    limits = [reconcile.round_limit(work.targets.get(n, {}), work.options) for n in work.clusters]
    longest = max((x for x in limits if x is not None), default=600.0)
    batches = math.ceil(len(work.clusters) / max(1, work.options.concurrency))
    return batches * longest + WORKER_MARGIN


async def _stop_on_sigterm(workers: Workers) -> None:
    """SIGTERM stops every worker and the run (exit 143), as Ctrl-C does (exit 130, `fleet.cli.main`)."""
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            common.info("interrupted (SIGTERM): stopping the sync workers; clusters not reported are unknown")
            await anyio.to_thread.run_sync(workers.stop)
            raise typer.Exit(143)


async def _own_share(work: Work, limit: float, report: Callable[[reconcile.ClusterResult], None]) -> None:
    """The first share, reconciled in this process as a forked worker reconciles its own; what it did not
    report (a bug, its deadline) is Failed as for any worker."""
    reported: set[str] = set()

    def sent(result: reconcile.ClusterResult) -> None:
        reported.add(result.cluster)
        report(result)

    who = f"sync worker 1 (pid {os.getpid()}, the fleet sync process)"
    why = ""
    with anyio.move_on_after(limit) as scope:
        try:
            await _reconcile_share(work, sent)
        except Exception as e:  # a bug: the other workers go on, this share's clusters fail below
            why = f"{who} failed: {_why(e)}"
    if scope.cancelled_caught:
        why = f"{who} did not finish within {limit:g}s (its deadline) and was stopped"
    missing = sorted(set(work.clusters) - reported)
    if not missing:
        return
    why = why or f"{who} ended before reporting every cluster"
    common.info(f"error: {why}; clusters it did not report: {', '.join(missing)}")
    for name in missing:
        message = (
            f"cluster {name}: not reported: {why}; what it applied there is unknown until the next sync "
            "reads it"
        )
        report(_failed(name, work.targets.get(name, {}), message))


async def _follow(
    w: _Worker, work: Work, limit: float, report: Callable[[reconcile.ClusterResult], None]
) -> None:
    """Hand `w` its work, take its results until it ends; Failed results for what it did not report."""
    reported: set[str] = set()
    crash = ""
    w.busy = True
    with anyio.move_on_after(limit) as scope:
        try:
            await anyio.to_thread.run_sync(w.conn.send, work)
        except OSError:  # the worker is gone already: what it did not report fails below
            pass
        except Exception as e:  # the work could not be sent (a bug): the worker is stopped, its clusters fail
            crash = f"could not be handed its work ({type(e).__name__}: {e})"
            w.process.terminate()
        try:
            while not crash:
                await anyio.wait_readable(w.conn.fileno())
                kind, value = w.conn.recv()
                if kind == "cluster" and value.cluster in work.clusters and value.cluster not in reported:
                    reported.add(value.cluster)
                    report(value)
                elif kind == "crashed":
                    crash = str(value)
        except (EOFError, OSError):  # the worker ended (after "done", or not): its pipe is closed
            pass
        except Exception as e:  # an unreadable message: the worker is not trusted further
            crash = f"sent an unreadable message ({type(e).__name__})"
    if scope.cancelled_caught:
        w.process.kill()
    await anyio.to_thread.run_sync(w.process.join, STOP_GRACE)
    if w.process.exitcode is None:
        w.process.kill()
        await anyio.to_thread.run_sync(w.process.join, STOP_GRACE)
    code = w.process.exitcode
    missing = sorted(set(work.clusters) - reported)
    if not missing:  # every cluster's result is in, whatever happened to the worker afterwards
        return
    if scope.cancelled_caught:
        why = f"{w.describe()} did not finish within {limit:g}s (its deadline) and was killed"
    elif crash:
        why = f"{w.describe()} failed: {crash}"
    elif code is not None and code < 0:
        why = f"{w.describe()} was killed by {_signal_name(-code)}"
    else:
        why = f"{w.describe()} exited with code {code} before reporting every cluster"
    if missing:
        common.info(f"error: {why}; clusters it did not report: {', '.join(missing)}")
    else:
        common.info(f"error: {why}")
    for name in missing:
        message = (
            f"cluster {name}: not reported: {why}; what it applied there is unknown until the next sync "
            "reads it"
        )
        report(_failed(name, work.targets.get(name, {}), message))


def _failed(cluster: str, targets: Mapping[str, plan.Target], message: str) -> reconcile.ClusterResult:
    bundles = {
        b: reconcile.BundleResult(
            b, model.State.SUSPENDED if t.suspended else model.State.FAILED, message=message
        )
        for b, t in targets.items()
    }
    return reconcile.ClusterResult(cluster, model.State.FAILED, bundles=bundles, message=message)


def _why(e: BaseException) -> str:
    """What went wrong, as a line: the (first) error itself, not the task groups that carried it."""
    more = 0
    while isinstance(e, BaseExceptionGroup):
        more += len(e.exceptions) - 1
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}" + (f" (and {more} more)" if more else "")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# ----------------------------------------------------------------------------------------------------------
# In the worker process


def lean_collector() -> None:
    """A one-shot sync process (a worker, or `fleet sync` in one process): what it holds so far (imported
    modules, mostly) moves out of the cycle collector's reach and the collector runs after
    `WORKER_GC_THRESHOLDS` new containers, not 700."""
    gc.freeze()
    gc.set_threshold(*WORKER_GC_THRESHOLDS)


def _main(conn: multiprocessing.connection.Connection) -> None:
    """A worker process: `serve`, then exit with its code (0 quietly through multiprocessing)."""
    gc.set_threshold(*WORKER_GC_THRESHOLDS)  # the parent froze what it held before the fork
    code = serve(conn)
    if code:
        os._exit(code)


def serve(conn: multiprocessing.connection.Connection) -> int:
    """A worker's life: wait for its work (or None: nothing to do), reconcile it sending each cluster's
    result, and return its exit code: 0, 130 on Ctrl-C, 1 after sending `("crashed", why)` when anything
    else went wrong. It ends by itself when the parent is gone (its parent sentinel), so no worker outlives
    its sync. Never prints: the parent reports."""
    code = 0
    try:
        parent = multiprocessing.parent_process()
        sentinel = parent.sentinel if parent is not None else None
        waiting = [conn] + ([sentinel] if sentinel is not None else [])
        ready = multiprocessing.connection.wait(waiting, timeout=WAIT_FOR_WORK)
        if conn not in ready:
            return 0
        work = conn.recv()
        if work is None:
            return 0
        anyio.run(_reconcile, conn, work, sentinel)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent reports it
        code = 130
    except BaseException as e:  # reported to the parent, which fails the clusters
        code = 1
        try:
            conn.send(("crashed", _why(e)))
        except OSError:
            pass
    finally:
        conn.close()
    return code


async def _reconcile(conn: multiprocessing.connection.Connection, work: Work, sentinel: int | None) -> None:
    def sent(result: reconcile.ClusterResult) -> None:
        conn.send(("cluster", result))

    async with anyio.create_task_group() as tg:
        if sentinel is not None:
            tg.start_soon(_orphaned, sentinel)
        await _reconcile_share(work, sent)
        tg.cancel_scope.cancel()


async def _reconcile_share(work: Work, on_done: Callable[[reconcile.ClusterResult], None]) -> None:
    """One worker's share, in whichever process: its clusters as the single process reconciles them."""
    repo = model.Repo(revision=work.revision, clusters=work.clusters, bundles={})
    async with kube.Clients(work.kubeconfig, settings=work.settings) as clients:
        await reconcile.reconcile_fleet(
            repo,
            work.targets,
            clients=clients,
            options=work.options,
            on_done=on_done,
            protected=work.protected,
        )


async def _orphaned(sentinel: int) -> None:
    """Returns never: raises once the parent process is gone (its sentinel becomes readable)."""
    await wait_readable(sentinel)
    raise RuntimeError("the parent fleet sync is gone")
