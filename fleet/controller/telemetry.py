"""OpenTelemetry setup for fleet: one place that decides whether traces are exported, and where.

Owns: building the TracerProvider (resource attributes service.name, service.version,
service.instance.id; a BatchSpanProcessor; the OTLP/HTTP protobuf exporter), reading the standard
``OTEL_*`` variables, installing it as the global provider, the logging filters (one stamps trace and span
ids on log records; `RepeatFilter` aggregates identical lines so a flood of one error cannot flood the
log), and shutting it down. Does not: create spans (the layers do, through the
OpenTelemetry API only, ``trace.get_tracer(__name__)``), or put anything on them.

Export is on when ``--otlp-endpoint`` (a base URL), ``OTEL_EXPORTER_OTLP_ENDPOINT`` (base URL) or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (full URL) is set, and off otherwise, or with
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. When off, no SDK provider is installed: the
API's no-op tracer costs nothing measurable. ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER(_ARG)``, ``OTEL_EXPORTER_OTLP_HEADERS`` and the BSP variables work as the SDK
defines them. Only ``http/protobuf`` is shipped; ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` is refused with
a clear error (install ``opentelemetry-exporter-otlp-proto-grpc`` to use it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opentelemetry import trace

import fleet
from fleet.core import errors

EXPORT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Settings:
    """Where traces go; `endpoint` is the traces URL (``.../v1/traces``) or None when export is off."""

    endpoint: str | None
    protocol: str = "http/protobuf"
    service_name: str = "fleet"

    def __repr__(self) -> str:
        return f"Settings(endpoint={redact_url(self.endpoint)!r}, protocol={self.protocol!r})"


def redact_url(url: str | None) -> str | None:
    """A URL without user info or query string (they may carry credentials)."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def settings_from(*, otlp_endpoint: str | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Decide from the option and the environment whether and where to export (pure)."""
    env = os.environ if environ is None else environ
    service_name = env.get("OTEL_SERVICE_NAME") or "fleet"
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Settings(endpoint=None, service_name=service_name)
    exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    if exporters == ["none"]:
        return Settings(endpoint=None, service_name=service_name)
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    endpoint: str | None
    if otlp_endpoint:
        endpoint = otlp_endpoint.rstrip("/") + "/v1/traces"
    elif env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        endpoint = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    else:
        endpoint = None
    if endpoint is not None and protocol != "http/protobuf":
        raise errors.InputError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: only http/protobuf is supported by this installation"
        )
    return Settings(endpoint=endpoint, protocol=protocol, service_name=service_name)


class _TraceIdFilter(logging.Filter):
    """Adds `trace_id` and `span_id` (hex, or empty) to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else ""
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else ""
        return True


TRACE_ID_FILTER = _TraceIdFilter()


@dataclass
class _Seen:
    start: float  # when this window began
    count: int  # lines in this window
    suppressed: int = 0  # of them, not shown


class RepeatFilter(logging.Filter):
    """Aggregates identical log lines (same logger, level and text): at most `burst` of them per `window`
    seconds pass; the rest are counted, and the first line of the next window, or `flush()`, says how
    many were not shown. Lines that differ (another cluster, another error) are never held back.

    Holds at most `max_keys` distinct lines (the least recently seen are forgotten). Thread-safe: records
    come from worker threads too.
    """

    def __init__(
        self,
        *,
        window: float = 10.0,
        burst: int = 5,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window = window
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, int, str], _Seen] = OrderedDict()
        self.suppressed_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.start < self.window:
                self._seen.move_to_end(key)
                seen.count += 1
                if seen.count <= self.burst:
                    return True
                seen.suppressed += 1
                self.suppressed_total += 1
                return False
            before = seen.suppressed if seen is not None else 0
            self._seen[key] = _Seen(start=now, count=1)
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        if before:
            record.msg = "%s [and %d more identical lines not shown in %gs]"
            record.args = (key[2], before, self.window)
        return True

    def flush(self) -> list[tuple[str, int, str]]:
        """Lines whose window ended with some not shown: (logger, level, summary line); counts reset."""
        now = self._clock()
        out: list[tuple[str, int, str]] = []
        with self._lock:
            for (name, level, text), seen in self._seen.items():
                if seen.suppressed and now - seen.start >= self.window:
                    out.append(
                        (
                            name,
                            level,
                            f"{text} [and {seen.suppressed} more identical lines not shown in "
                            f"{self.window:g}s]",
                        )
                    )
                    seen.suppressed = 0
        return out


class Telemetry:
    """The installed tracing setup; `shutdown()` flushes what is queued (bounded by the export timeout)."""

    def __init__(self, settings: Settings, *, instance: str) -> None:
        self.settings = settings
        self._provider = None
        if settings.endpoint is None:
            return
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create(
            {
                "service.name": settings.service_name,
                "service.version": fleet.__version__,
                "service.instance.id": instance,
            }
        )
        provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(endpoint=settings.endpoint, timeout=EXPORT_TIMEOUT_S)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        self._provider = provider

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    def force_flush(self, timeout_s: float = EXPORT_TIMEOUT_S) -> None:
        if self._provider is not None:
            self._provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None


def setup(*, otlp_endpoint: str | None, instance: str) -> Telemetry:
    """Install tracing as the options and environment say; also stamp trace ids on fleet's log records."""
    telemetry = Telemetry(settings_from(otlp_endpoint=otlp_endpoint), instance=instance)
    logger = logging.getLogger("fleet")
    if TRACE_ID_FILTER not in logger.filters:
        logger.addFilter(TRACE_ID_FILTER)
    return telemetry


def trace_id_hex(span: trace.Span | None = None) -> str | None:
    """The current (or given) span's trace id as 32 hex digits, or None when there is no valid span."""
    ctx = (span or trace.get_current_span()).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
