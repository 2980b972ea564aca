"""Delivering notifications from the durable outbox (docs/notifications.md).

Owns: `Notifier`: rendering a `fleet.core.notices.Notice` into one outbox message per receiver
(`messages`, stored by the caller in the same transaction as the change that caused it), and one
delivery task per receiver that sends its oldest undelivered message, deletes it once the receiver
answered 2xx, and otherwise keeps it and tries again after a capped, jittered backoff (so delivery is
at least once, in order per receiver, and resumes after a restart from what the database holds). Every
send has a total deadline; a receiver that is down or slow holds only its own task. Answers 400, 404,
410 and 422 (a payload the receiver will never take: an unknown repository or commit) drop the message,
loudly; everything else (5xx, 401/403, 408, 429, no answer) is retried. Tokens are read from their files
at each send (a rotated token is picked up) and only ever go into a header.

Does not: decide what to tell (`fleet.core.notices`), or write the outbox rows of new notices (the
rollout conductor stores them with the rollout change; `fleet.clients.statedb` keeps them). Logs and metrics name a
receiver by its kind and scheme://host only: a webhook URL's path may hold a token (Slack's does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

import fleet
from fleet.clients import statedb
from fleet.controller.metrics import Metrics
from fleet.core import backoff as backoff_rule
from fleet.core import errors, notices

log = logging.getLogger("fleet.notify")

_PERMANENT = frozenset({400, 404, 410, 422})


@dataclass(frozen=True)
class Settings:
    receivers: tuple[notices.Receiver, ...] = ()
    token_files: Mapping[str, Path] = field(default_factory=dict)  # receiver key -> token file
    instance: str = "fleet"
    external_url: str | None = None  # the status page, linked from every notification
    timeout: float = 10.0  # one delivery attempt, connect to last byte
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    idle_poll: float = 60.0  # an idle receiver looks at the outbox at least this often

    @property
    def context(self) -> str:
        """The commit status context (GitHub) or name (GitLab)."""
        return f"fleet/{self.instance}"

    def __repr__(self) -> str:  # never the webhook URLs (a path may hold a token)
        return f"Settings(receivers={[r.label for r in self.receivers]}, instance={self.instance!r})"


def backoff(attempts: int, *, base: float, cap: float) -> float:
    """Seconds before attempt `attempts + 1`: doubling from `base`, capped, with full jitter above half."""
    return backoff_rule.delay(attempts, base=base, cap=cap, max_doublings=20)


class Notifier:
    def __init__(
        self,
        *,
        store: statedb.StateStore,
        settings: Settings,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self._metrics = metrics
        self._clock = clock
        self._wakes = {r.key: anyio.Event() for r in settings.receivers}

    @property
    def enabled(self) -> bool:
        return bool(self.settings.receivers)

    def messages(self, notice: notices.Notice) -> tuple[statedb.Message, ...]:
        """One outbox message per receiver for `notice` (its final payload, without credentials)."""
        s = self.settings
        link = s.external_url.rstrip("/") + "/" if s.external_url else None
        out = []
        for r in s.receivers:
            path, body = notices.payload(notice, r, instance=s.instance, link=link, context=s.context)
            out.append(
                statedb.Message(
                    receiver=r.key,
                    kind=f"{notice.event}:{notice.state}",
                    body=notices.encode(body),
                    path=path,
                    created_at=notice.at,
                )
            )
        return tuple(out)

    def wake(self) -> None:
        """New messages were stored: every receiver looks at its queue now."""
        for event in self._wakes.values():
            event.set()

    async def run(self) -> None:
        """Deliver until cancelled; first drop the queues of receivers no longer configured, and let every
        message left by an earlier process be tried at once."""
        keys = tuple(r.key for r in self.settings.receivers)
        try:
            gone = await anyio.to_thread.run_sync(lambda: self.store.outbox_forget(keep=keys))
            await anyio.to_thread.run_sync(self.store.outbox_reset_waits)
        except errors.StateError as e:
            log.error("notifications: cannot read the outbox (%s)", e)
            gone = {}
        for key, n in gone.items():
            log.warning(
                "notifications: %d undelivered for a receiver no longer configured (%s) dropped", n, key
            )
        if not self.settings.receivers:
            return
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.settings.timeout), follow_redirects=False, trust_env=False
        ) as client:
            async with anyio.create_task_group() as tg:
                for r in self.settings.receivers:
                    tg.start_soon(self._deliver, r, client)

    async def _deliver(self, r: notices.Receiver, client: httpx.AsyncClient) -> None:
        failures = 0
        while True:
            try:
                head = await anyio.to_thread.run_sync(self.store.outbox_head, r.key)
                await self._count(r)
            except errors.StateError as e:
                failures += 1
                log.error("notifications to %s: cannot read the outbox: %s", r.label, e)
                await anyio.sleep(
                    backoff(failures, base=self.settings.backoff_base, cap=self.settings.backoff_cap)
                )
                continue
            failures = 0
            wait = self.settings.idle_poll if head is None else head.next_at - self._clock()
            if wait > 0:
                with anyio.move_on_after(wait):
                    await self._wakes[r.key].wait()
                self._wakes[r.key] = anyio.Event()
                continue
            assert head is not None
            outcome = await self._send(r, head, client)
            try:
                await self._settle(r, head, outcome)
            except errors.StateError as e:
                log.error("notifications to %s: cannot update the outbox: %s", r.label, e)
                await anyio.sleep(self.settings.backoff_base)

    async def _send(self, r: notices.Receiver, m: statedb.Message, client: httpx.AsyncClient) -> int | str:
        """The HTTP status of one attempt, or why there was none."""
        headers = {"Content-Type": "application/json", "User-Agent": f"fleet/{fleet.__version__}"}
        token_file = self.settings.token_files.get(r.key)
        if token_file is not None:
            try:
                token = (await anyio.to_thread.run_sync(token_file.read_bytes)).strip().decode()
            except (OSError, UnicodeDecodeError) as e:
                return f"the token file {token_file} cannot be read ({type(e).__name__})"
            if r.kind == notices.GITHUB:
                headers["Authorization"] = f"Bearer {token}"
                headers["Accept"] = "application/vnd.github+json"
                headers["X-GitHub-Api-Version"] = "2022-11-28"
            else:
                headers["PRIVATE-TOKEN"] = token
        url = r.url.rstrip("/") + m.path if m.path else r.url
        try:
            with anyio.fail_after(self.settings.timeout):
                resp = await client.post(url, content=m.body, headers=headers)
        except TimeoutError:
            return f"no answer within {self.settings.timeout:g} s"
        except httpx.HTTPError as e:
            return type(e).__name__
        return resp.status_code

    async def _settle(self, r: notices.Receiver, m: statedb.Message, outcome: int | str) -> None:
        labels = {"receiver": r.key}
        if isinstance(outcome, int) and 200 <= outcome < 300:
            await anyio.to_thread.run_sync(self.store.outbox_delivered, m.seq)
            self._metrics.notifications.labels(**labels, result="delivered").inc()
            if m.attempts:
                log.info("notifications to %s: delivered after %d failed attempts", r.label, m.attempts)
            return
        what = f"HTTP {outcome}" if isinstance(outcome, int) else outcome
        if isinstance(outcome, int) and outcome in _PERMANENT:
            await anyio.to_thread.run_sync(self.store.outbox_delivered, m.seq)
            self._metrics.notifications.labels(**labels, result="dropped").inc()
            log.error(
                "notifications to %s: %s refused with %s; dropped (it would never be taken: check the "
                "repository, the commit and the payload settings)",
                r.label,
                m.kind,
                what,
            )
            return
        attempts = m.attempts + 1
        delay = backoff(attempts, base=self.settings.backoff_base, cap=self.settings.backoff_cap)
        await anyio.to_thread.run_sync(
            lambda: self.store.outbox_retry(
                m.seq, attempts=attempts, next_at=self._clock() + delay, error=what
            )
        )
        self._metrics.notifications.labels(**labels, result="retried").inc()
        log.warning(
            "notifications to %s: %s (attempt %d); next try in %.0f s", r.label, what, attempts, delay
        )

    async def _count(self, r: notices.Receiver) -> None:
        counts = await anyio.to_thread.run_sync(self.store.outbox_counts)
        self._metrics.notifications_pending.labels(receiver=r.key).set(counts.get(r.key, 0))
