"""OpenTelemetry spans for a job's enqueue, claim, run and result (a runtime module; optional).

:func:`job_tracer` returns a :class:`JobTracer` when ``opentelemetry`` is importable *and*
configured (a tracer provider other than the default no-op one is set, e.g. by
``opentelemetry-instrument`` or the application), and ``None`` otherwise, so an unconfigured peer
pays nothing. Spans follow the messaging semantic conventions: ``send`` for an enqueue, ``receive``
for a claim, ``process`` for a run (from ``started`` to ``finished``/``failed``), ``settle`` for
the result written.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from warpmesh.observe.hub import Event

__all__ = ["JobTracer", "job_tracer"]

#: Runs whose ``process`` span is open at once, at most (the oldest is ended when more start).
MAX_OPEN = 10_000


class JobTracer:
    """Turns a peer's job events into spans on ``tracer`` (an OpenTelemetry ``Tracer``)."""

    def __init__(self, tracer: Any, node: str) -> None:
        self._tracer = tracer
        self._node = node
        self._open: OrderedDict[str, tuple[Any, str]] = OrderedDict()  # job -> (its process span, op)

    def _attrs(self, event: Event, operation: str, op: str | None = None) -> dict[str, Any]:
        attrs: dict[str, Any] = {"messaging.system": "warpmesh", "messaging.operation.type": operation,
                                 "messaging.operation.name": event.kind, "messaging.destination.name":
                                 op if op is not None else str(event.detail.get("op", "")),
                                 "messaging.client.id": self._node}
        if event.job is not None:
            attrs["messaging.message.id"] = event.job
        return attrs

    def _instant(self, name: str, event: Event, operation: str, kind: Any, op: str | None = None) -> None:
        span = self._tracer.start_span(name, kind=kind, attributes=self._attrs(event, operation, op))
        span.end()

    def on_event(self, event: Event) -> None:
        """One event of this peer (see the module docstring for which become spans)."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        op = str(event.detail.get("op", "")) or "job"
        if event.kind == "enqueued":
            self._instant(f"send {op}", event, "send", SpanKind.PRODUCER)
        elif event.kind == "claimed":
            self._instant(f"receive {op}", event, "receive", SpanKind.CONSUMER)
        elif event.kind == "started" and event.job is not None:
            span = self._tracer.start_span(f"process {op}", kind=SpanKind.CONSUMER,
                                           attributes=self._attrs(event, "process"))
            self._open[event.job] = (span, op)
            while len(self._open) > MAX_OPEN:
                self._open.popitem(last=False)[1][0].end()
        elif event.kind in ("finished", "failed") and event.job is not None:
            span, op = self._open.pop(event.job, (None, op))  # WarpCore names the op when the run starts
            if span is not None:
                if event.kind == "failed":
                    span.set_status(Status(StatusCode.ERROR, str(event.detail.get("error", ""))[:200]))
                span.end()
            self._instant(f"settle {op}", event, "settle", SpanKind.PRODUCER, op)


def job_tracer(node: str) -> JobTracer | None:
    """A tracer for ``node``'s events when OpenTelemetry is installed and configured, else None."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    # The API's default provider is a proxy/no-op until an SDK provider is set.
    if type(provider).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
        return None
    return JobTracer(trace.get_tracer("warpmesh"), node)
