"""The `rollout <bundle>` spans of the rollouts' conductor (docs/tracing.md, docs/rollouts.md "Traces and
metrics").

Owns: `Spans`, the base of `fleet.controller.rollouts.Conductor` that keeps one open span per bundle
whose rollout runs here: opened when the rollout starts (a child of the revision's trace), continued in
a new span linked to the stored one after a restart, ended when the rollout ends, is replaced or is
followed from another replica; its events (waves started, approvals, halts with their reason,
completion, roll-backs) and the warning logged when a rollout halts; the stored identity of a span.

Does not: decide or store rollouts (`fleet.controller.rollouts`), or trace the actions people take on
them (the conductor links those to the span).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link

from fleet.core import rollout as ro

log = logging.getLogger("fleet.rollouts")
tracer = trace.get_tracer("fleet.rollouts")


class Spans:
    def __init__(self) -> None:
        self._spans: dict[str, trace.Span] = {}
        self._announced: dict[tuple[str, str], set[str]] = {}  # (bundle, revision) -> waves that started

    def _continue_span(self, r: ro.Rollout, stored: object) -> None:
        """The span of a rollout begun by an earlier process is gone: continue in a new one, linked to it
        (`stored`: what `_span_ids` gave when the rollout was stored)."""
        links = []
        if isinstance(stored, Mapping) and stored.get("trace") and stored.get("span"):
            links = [
                Link(
                    trace.SpanContext(
                        int(stored["trace"], 16),
                        int(stored["span"], 16),
                        is_remote=True,
                        trace_flags=trace.TraceFlags(1),
                    )
                )
            ]
        self._open_span(r, context=None, links=links, event="continued after a restart")

    def _span_ids(self, bundle: str) -> dict[str, Any] | None:
        """The open span of `bundle`'s rollout, as stored beside it."""
        span = self._spans.get(bundle)
        if span is None:
            return None
        sc = span.get_span_context()
        return {"trace": f"{sc.trace_id:032x}", "span": f"{sc.span_id:016x}"}

    def _open_span(
        self, r: ro.Rollout, *, context: trace.SpanContext | None, links: list[Link], event: str
    ) -> None:
        self._end_span(r.bundle, "replaced")
        parent = trace.set_span_in_context(
            trace.NonRecordingSpan(context) if context is not None else trace.INVALID_SPAN
        )
        span = tracer.start_span(
            f"rollout {r.bundle}",
            context=parent,
            links=links,
            attributes={
                "fleet.bundle": r.bundle,
                "fleet.revision": r.revision,
                "fleet.waves": len(r.spec.waves),
            },
        )
        span.add_event(event)
        self._spans[r.bundle] = span

    def _end_span(self, bundle: str, why: str) -> None:
        span = self._spans.pop(bundle, None)
        if span is not None:
            span.add_event("ended", {"reason": why})
            span.end()

    def _trace_transitions(self, old: ro.Rollout, new: ro.Rollout) -> None:
        span = self._spans.get(new.bundle)
        if span is None:
            return
        if new.approved != old.approved:
            for w in sorted(new.approved - old.approved):
                span.add_event("approved", {"wave": w})
        if new.phase is not old.phase:
            if new.phase is ro.Phase.HALTED:
                span.add_event("halted", {"reason": new.reason})
                span.set_status(trace.Status(trace.StatusCode.ERROR, "halted"))
            elif new.phase is ro.Phase.COMPLETED:
                span.add_event("completed")
            elif new.phase is ro.Phase.WAITING_APPROVAL:
                span.add_event("waiting for approval", {"wave": new.wave_name})
            elif new.phase is ro.Phase.ROLLED_BACK:
                span.add_event("rolled back", {"reason": new.reason})
        if new.phase is ro.Phase.HALTED and old.phase is not ro.Phase.HALTED:
            log.warning("bundle %s: rollout of %s halted: %s", new.bundle, new.revision[:12], new.reason)

    def _announce_waves(self, step: ro.Step) -> None:
        """A `wave started` span event when a wave sends its first cluster the revision."""
        r = step.rollout
        span = self._spans.get(r.bundle)
        if span is None or not step.start:
            return
        announced = self._announced.setdefault((r.bundle, r.revision), set())
        for c in step.start:
            wave = r.spec.waves[r.members[c].wave].name
            if wave not in announced:
                announced.add(wave)
                span.add_event("wave started", {"wave": wave})
