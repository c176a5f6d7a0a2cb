"""OpenTelemetry spans for a job's enqueue, claim, run and result (messaging conventions); a no-op unconfigured."""

from __future__ import annotations

import pytest

from warpmesh.observe.hub import Event
from warpmesh.observe.tracing import JobTracer, job_tracer

sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed (dev extra)")


def test_job_events_become_messaging_spans() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = JobTracer(provider.get_tracer("test"), "a")
    for kind, job, detail in [("enqueued", "j1", {"op": "sq"}), ("claimed", "j1", {"op": "sq"}),
                              ("started", "j1", {"op": "sq"}), ("finished", "j1", {}),
                              ("started", "j2", {"op": "boom"}), ("failed", "j2", {"error": "kaboom"})]:
        tracer.on_event(Event(kind, 0.0, "a", job=job, peer="a", detail=detail))
    spans = {(s.name, s.attributes["messaging.message.id"]): s for s in exporter.get_finished_spans()}
    assert set(spans) == {("send sq", "j1"), ("receive sq", "j1"), ("process sq", "j1"), ("settle sq", "j1"),
                          ("process boom", "j2"), ("settle boom", "j2")}
    run = spans[("process sq", "j1")]
    assert run.kind is SpanKind.CONSUMER
    assert run.attributes["messaging.system"] == "warpmesh"
    assert run.attributes["messaging.operation.type"] == "process"
    assert run.attributes["messaging.destination.name"] == "sq"
    assert spans[("send sq", "j1")].kind is SpanKind.PRODUCER
    assert spans[("process boom", "j2")].status.status_code is StatusCode.ERROR


def test_without_a_configured_provider_there_is_no_tracer() -> None:
    assert job_tracer("a") is None  # the API's default provider is a no-op: nothing is created
