"""Tracing setup: when export is on, where it goes, and that spans arrive as real OTLP protobuf."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from fleet.controller import telemetry
from fleet.core import errors
from tests.support import otlp


@pytest.mark.parametrize(
    ("option", "env", "expected"),
    [
        (None, {}, None),
        ("http://collector:4318", {}, "http://collector:4318/v1/traces"),
        ("http://collector:4318/", {}, "http://collector:4318/v1/traces"),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
        (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom"}, "http://c:4318/custom"),
        ("http://opt:4318", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318"}, "http://opt:4318/v1/traces"),
        ("http://c:4318", {"OTEL_SDK_DISABLED": "true"}, None),
        ("http://c:4318", {"OTEL_TRACES_EXPORTER": "none"}, None),
    ],
    ids=[
        "off",
        "option",
        "option-slash",
        "base-env",
        "traces-env",
        "option-wins",
        "sdk-disabled",
        "exporter-none",
    ],
)
def test_export_is_on_exactly_when_an_endpoint_is_configured(
    option: str | None, env: dict[str, str], expected: str | None
) -> None:
    assert telemetry.settings_from(otlp_endpoint=option, environ=env).endpoint == expected


def test_grpc_protocol_is_refused_with_a_clear_error() -> None:
    with pytest.raises(errors.InputError, match="only http/protobuf"):
        telemetry.settings_from(
            otlp_endpoint="http://c:4317", environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        )


def test_settings_repr_never_shows_credentials_in_the_endpoint() -> None:
    s = telemetry.Settings(endpoint="https://user:hunter2@collector:4318/v1/traces?token=abc")
    assert "hunter2" not in repr(s) and "abc" not in repr(s)
    assert "collector:4318/v1/traces" in repr(s)


@pytest.mark.slow  # starts processes: python
def test_spans_reach_a_real_otlp_receiver_with_fleet_resource_attributes() -> None:
    with otlp.running() as receiver:
        script = textwrap.dedent(
            f"""
            from opentelemetry import trace
            from fleet.controller import telemetry
            t = telemetry.setup(otlp_endpoint={receiver.url!r}, instance="blue")
            tracer = trace.get_tracer("test")
            with tracer.start_as_current_span("revision abc1234"):
                with tracer.start_as_current_span("cluster eu-1"):
                    pass
            t.shutdown()
            """
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        spans = receiver.snapshot()
    names = {s.name: s for s in spans}
    assert set(names) == {"revision abc1234", "cluster eu-1"}
    assert names["cluster eu-1"].parent_span_id == names["revision abc1234"].span_id
    assert names["cluster eu-1"].resource["service.name"] == "fleet"
    assert names["cluster eu-1"].resource["service.instance.id"] == "blue"


def test_log_records_carry_the_active_trace_id() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    record = logging.LogRecord("fleet", logging.INFO, __file__, 1, "hello", None, None)
    with tracer.start_as_current_span("s") as span:
        telemetry.TRACE_ID_FILTER.filter(record)
        assert record.trace_id == format(span.get_span_context().trace_id, "032x")  # type: ignore[attr-defined]
    outside = logging.LogRecord("fleet", logging.INFO, __file__, 1, "hello", None, None)
    telemetry.TRACE_ID_FILTER.filter(outside)
    assert outside.trace_id == ""  # type: ignore[attr-defined]
    assert trace.get_current_span().get_span_context().is_valid is False
