"""Writing Kubernetes Events on the clusters, off the reconcile's path (docs/notifications.md).

Owns: `EventWriter`: `emit` puts an occurrence (`fleet.core.clusterevents`) in a bounded queue and returns
at once (a full queue drops the oldest, counted in ``fleet_kube_events{result="dropped"}``); its task
folds repeats into series, creates each new Event and brings a repeating one's `series` up to date at
most every `Settings.update_every` seconds; `Settings.concurrency` writer tasks, started once, take the
series due (no task per Event); every write goes through a client of its own per cluster (its own
in-flight and rate limits, a short retry budget, one write per cluster at a time), under a deadline, on
the connections of the cluster's client that `connection_of` names (the rounds': a round's Event goes out
on the connection its writes left idle, not on a TCP and TLS handshake of its own) or, without one, on
connections of its own, and asks `may_write` (a replica's ownership of the cluster) right before it is sent. A write that fails is counted and logged (aggregated), never retried in a loop and
never raised: an Event is a courtesy to the cluster's users, reconciling never waits for one.

Does not: decide which happenings are worth an Event or what they say (`fleet.core.clusterevents`), or
know the engine (it is handed a way to find a cluster's kubeconfig context and its rounds' client).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fleet.clients import kube
from fleet.controller.metrics import Metrics
from fleet.core import clusterevents as ce
from fleet.core import errors, model

log = logging.getLogger("fleet.events")

EVENTS_PATH = f"/apis/events.k8s.io/v1/namespaces/{model.INVENTORY_NAMESPACE}/events"


@dataclass(frozen=True)
class Settings:
    queue: int = 1_000  # occurrences waiting to be written; beyond it the oldest are dropped
    timeout: float = 5.0  # one write, retries included
    update_every: float = 10.0  # a repeating Event's series is written at most this often
    concurrency: int = 4  # writes in flight, all clusters together
    window: float = ce.WINDOW


ContextOf = Callable[[str], "str | None"]  # cluster -> its kubeconfig context (None: not registered)
# cluster -> a client of that cluster whose connections the writer's client sends on (None: its own)
ConnectionOf = Callable[[str], "kube.Client | None"]


class EventWriter:
    def __init__(
        self,
        *,
        instance: str,
        kubeconfig: kube.Kubeconfig,
        kube_settings: kube.Settings,
        context_of: ContextOf,
        connection_of: ConnectionOf | None = None,
        metrics: Metrics,
        tls: kube.TlsDefaults | None = None,
        settings: Settings | None = None,
        may_write: Callable[[str], bool] | None = None,
    ) -> None:
        self.instance = instance
        self._may_write = may_write  # a cluster -> whether this process may write to it now (a replica)
        self.settings = settings or Settings()
        self._kubeconfig = kubeconfig
        self._context_of = context_of
        self._connection_of = connection_of
        self._tls = tls
        # Its own limits: a slow or dead cluster API never takes the reconcile's slots or retry budget.
        self._kube_settings = kube.with_settings(
            kube_settings,
            request_timeout=min(kube_settings.request_timeout, self.settings.timeout),
            retry_budget=min(kube_settings.retry_budget, self.settings.timeout / 2),
            max_attempts=2,
            max_in_flight=1,
            qps=min(kube_settings.qps, 5.0),
            burst=min(kube_settings.burst, 20),
        )
        self._queue: deque[ce.Occurrence] = deque()
        self._wake = anyio.Event()
        self._aggregator = ce.Aggregator(window=self.settings.window)
        self._clients: dict[tuple[str, str], kube.Client] = {}
        self._busy: set[str] = set()  # clusters with a write in flight
        self._dirty: dict[str, ce.Series] = {}  # series name -> a series with counts not yet written
        self._results = {
            r: metrics.events.labels(result=r) for r in ("dropped", "created", "updated", "failed")
        }

    # -- the reconcile's side: never blocks ----------------------------------------------------------------

    def emit(self, occ: ce.Occurrence) -> None:
        if len(self._queue) >= self.settings.queue:
            self._queue.popleft()
            self._results["dropped"].inc()
        self._queue.append(occ)
        self._wake.set()

    # -- the writer's task -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Write until cancelled."""
        # Unbounded, yet it holds at most one series per cluster: a cluster is busy from the moment its
        # series is sent until its write ends, and `_take` sends nothing for a busy cluster.
        due: tuple[MemoryObjectSendStream[ce.Series], MemoryObjectReceiveStream[ce.Series]]
        due = anyio.create_memory_object_stream[ce.Series](math.inf)
        send, receive = due
        try:
            async with send, receive, anyio.create_task_group() as tg:
                for _ in range(max(1, self.settings.concurrency)):
                    tg.start_soon(self._writer, receive)
                while True:
                    with anyio.move_on_after(self.settings.update_every / 2):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                    self._take(send)
        finally:
            with anyio.CancelScope(shield=True):
                for client in self._clients.values():
                    await client.aclose()

    async def _writer(self, due: MemoryObjectReceiveStream[ce.Series]) -> None:
        async for series in due:
            await self._write(series)

    def _take(self, due: MemoryObjectSendStream[ce.Series]) -> None:
        while self._queue:
            series = self._aggregator.observe(self._queue.popleft())
            self._dirty[series.name] = series
        now = time.monotonic()
        for name, series in list(self._dirty.items()):
            cluster = series.first.cluster
            if cluster in self._busy:
                continue
            if series.written and now - series.written_at < self.settings.update_every:
                continue  # a repeat: its count waits for the next update
            del self._dirty[name]
            self._busy.add(cluster)
            due.send_nowait(series)

    async def _write(self, series: ce.Series) -> None:
        cluster = series.first.cluster
        count = series.count
        try:
            client = await self._client(cluster)
            if client is None:
                return
            with anyio.fail_after(self.settings.timeout):
                if series.written:
                    status, _ = await client.request(
                        "PATCH",
                        f"{EVENTS_PATH}/{series.name}",
                        what=f"Event/{model.INVENTORY_NAMESPACE}/{series.name}",
                        body=ce.series_patch(series),
                        content_type="application/merge-patch+json",
                        accept=(404,),
                    )
                    if status == 404:  # gone (expired): the next repeat starts a new Event
                        self._aggregator.forget(series)
                        return
                    self._results["updated"].inc()
                else:
                    await client.request(
                        "POST",
                        EVENTS_PATH,
                        what=f"Event/{model.INVENTORY_NAMESPACE}/{series.name}",
                        body=ce.body(series, instance=self.instance),
                        accept=(409,),
                    )
                    self._results["created"].inc()
            series.written, series.written_at = count, time.monotonic()
            if series.dirty:
                self._dirty[series.name] = series
        except (errors.FleetError, TimeoutError) as e:
            self._results["failed"].inc()
            log.warning("cluster %s: cannot write an Event (%s): %s", cluster, series.first.reason, _why(e))
        except Exception:  # a bug here must not end the writer, and never the controller
            self._results["failed"].inc()
            log.exception("cluster %s: writing an Event failed", cluster)
        finally:
            self._busy.discard(cluster)
            if self._dirty:
                self._wake.set()

    async def _client(self, cluster: str) -> kube.Client | None:
        context = self._context_of(cluster)
        if context is None:
            return None
        owner = self._connection_of(cluster) if self._connection_of is not None else None
        if owner is not None and owner.context.name != context:
            owner = None  # another context's connections are not this one's to use
        client = self._clients.get((cluster, context))
        if client is not None and client.shares is not owner:
            await client.aclose()  # its own connections, if it had them (a sharing client has none)
            client = None
        if client is None:
            client = kube.Client(
                cluster=cluster,
                context=self._kubeconfig.context(context),
                settings=self._kube_settings,
                tls=self._tls,
                shares=owner,
            )
            if self._may_write is not None:  # asked right before each write (docs/scaling.md "Fenced writes")
                client.may_write = functools.partial(self._may_write, cluster)
            self._clients[(cluster, context)] = client
        return client


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "no answer in time"
    return str(e)
