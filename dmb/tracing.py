"""Traces and request ids: one OpenTelemetry trace per request, from the gateway to the ZADD.

Everything that makes a span or moves trace context goes through this module, so the rest of the
code names what it does (`span("sql INSERT")`) and never which SDK does it. Spans are placed by
hand at the hops that matter (gateway, handle hop, RPC boundary, SQL, Redis, CDC relay, feed
consumer, fan-out worker) rather than by auto-instrumentation, which patches libraries globally
and would trace Ray's and Serve's own internals too.

Off by default (`DMB_OTEL_EXPORTER=none`): `span()` then hands out one shared no-op context
manager, `outgoing()` carries only the request id, and the store clients are built without their
tracing wrappers, so the request path pays a flag check per hop and nothing else.

Context crosses process boundaries as a small carrier dict (W3C `traceparent`/`tracestate`, plus
`x-request-id`): in the gateway's handle call per coalesced item, in the WAL as a transactional
logical message (dmb.stores.postgres), in Kafka record headers, and in the fan-out worker's call.

The request id lives in a context variable for the whole request, in every process it reaches;
`RequestIdFilter` puts it (and the trace id) on every log record of the `dmb` loggers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import IO, TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from dmb.settings import Settings

Span = trace.Span
Carrier = dict[str, str]
Attributes = Mapping[str, AttributeValue]
REQUEST_ID_KEY = "x-request-id"
SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL = (
    SpanKind.SERVER,
    SpanKind.CLIENT,
    SpanKind.PRODUCER,
    SpanKind.CONSUMER,
    SpanKind.INTERNAL,
)

_request_id: ContextVar[str | None] = ContextVar("dmb_request_id", default=None)
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
_propagator = TraceContextTextMapPropagator()
INVALID_SPAN = trace.INVALID_SPAN
_NOOP = contextlib.nullcontext(INVALID_SPAN)  # reusable: nullcontext keeps no state
_lock = threading.Lock()
_enabled = False
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None


# -- set-up, once per process --------------------------------------------------------------------


def configure(settings: Settings) -> bool:
    """Build this process's tracer provider from the settings (first call only; later calls
    are no-ops). True when tracing is on. Called by the composition root of every process."""
    with _lock:
        if _provider is not None or settings.otel_exporter == "none":
            return _enabled
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        resource = Resource.create(
            {
                "service.name": settings.otel_service_name,
                "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
                "process.pid": os.getpid(),
            }
        )
        provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.otel_sample_ratio))
        )
        exporter = _exporter(settings)
        # The JSON-lines exporter serves tests and local debugging: write soon, not every 5 s.
        delay = 200 if settings.otel_exporter == "jsonl" else 5_000
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
        _install(provider)
        return True


def _install(provider: TracerProvider | None) -> None:
    global _enabled, _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("dmb") if provider is not None else trace.NoOpTracer()
    _enabled = provider is not None


@contextlib.contextmanager
def installed(provider: TracerProvider) -> Iterator[None]:
    """Tracing on with `provider` inside the block, off again after (unit tests: an in-memory
    exporter sees everything one process makes)."""
    _install(provider)
    try:
        yield
    finally:
        _install(None)


def _exporter(settings: Settings) -> SpanExporter:
    if settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=settings.otel_endpoint)  # None: OTEL_* env or default
    if settings.otel_exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    folder = settings.otel_spans_dir or settings.data_dir / "spans"
    return JsonLinesExporter(folder)


def flush(timeout_millis: int = 5_000) -> None:
    """Export every finished span now (tests; a process about to exit)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis)


def enabled() -> bool:
    return _enabled


class JsonLinesExporter(SpanExporter):
    """Spans as JSON lines, one file per process in `folder` (`DMB_OTEL_EXPORTER=jsonl`).

    Spans are made in many Ray processes, so an in-memory exporter in one of them sees only its
    own; each process appends to its own file here and a reader (the tracing test, an operator
    with `jq`) joins them into trees."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"spans-{socket.gethostname()}-{os.getpid()}.jsonl"
        self._file: IO[str] | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        for span in spans:
            self._file.write(span.to_json(indent=None) + "\n")
        self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


# -- spans ---------------------------------------------------------------------------------------


def span(
    name: str,
    kind: SpanKind = INTERNAL,
    attributes: Attributes | None = None,
    parent: Carrier | None = None,
    links: Sequence[Link] = (),
    fail_on_exception: bool = True,
) -> contextlib.AbstractContextManager[Span]:
    """A span around a block, current inside it; its parent is the current span, or the one
    `parent` names (a carrier from another process). An exception marks it failed (unless
    `fail_on_exception` is False: the caller decides, e.g. a domain error is an answer) and
    propagates."""
    if not _enabled:
        return _NOOP
    return _tracer.start_as_current_span(
        name,
        context=context_of(parent) if parent else None,
        kind=kind,
        attributes=attributes,
        links=links,
        record_exception=fail_on_exception,
        set_status_on_exception=fail_on_exception,
    )


def child_span(
    name: str, kind: SpanKind = CLIENT, attributes: Attributes | None = None
) -> contextlib.AbstractContextManager[Span]:
    """A span only inside a sampled one: the stores' statements and commands. Work outside any
    request (the counter flusher's SQL every second) makes no traces of its own."""
    if not _enabled or not trace.get_current_span().is_recording():
        return _NOOP
    return _tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def start_span(
    name: str,
    kind: SpanKind = INTERNAL,
    attributes: Attributes | None = None,
    parent: Carrier | None = None,
) -> Span:
    """A span that the caller ends (`span.end()`), for work that does not fit one block: the
    relay's publish spans last from the send until the broker's acknowledgement."""
    if not _enabled:
        return trace.INVALID_SPAN
    return _tracer.start_span(
        name, context=context_of(parent) if parent else None, kind=kind, attributes=attributes
    )


def failed(span: Span, description: str, error: BaseException | None = None) -> None:
    """Mark `span` failed (an HTTP 5xx answered normally, a bug caught at a boundary)."""
    if _enabled:
        if error is not None:
            span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, description))


def recording() -> bool:
    """True when the current span is sampled: only then is context worth writing to the WAL."""
    return _enabled and trace.get_current_span().is_recording()


def current_trace_id() -> str | None:
    if not _enabled:
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


# -- carriers: context across processes ----------------------------------------------------------


def outgoing(span: Span | None = None) -> Carrier:
    """What another process needs to continue this request: the request id and (tracing on) the
    W3C trace context of `span`, or of the current span."""
    carrier: Carrier = {}
    request_id = _request_id.get()
    if request_id:
        carrier[REQUEST_ID_KEY] = request_id
    if _enabled:
        context = trace.set_span_in_context(span) if span is not None else None
        _propagator.inject(carrier, context=context)
    return carrier


def context_of(carrier: Mapping[str, str]) -> Context:
    return _propagator.extract(carrier)


def encode_carrier(carrier: Carrier) -> str:
    return json.dumps(carrier, separators=(",", ":"), sort_keys=True)


def decode_carrier(text: str | bytes | None) -> Carrier | None:
    """A carrier read back from the WAL; None for anything that is not one (never raises: a
    bad trace message must not stop the relay)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str)}


def from_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> Carrier | None:
    """The carrier in a Kafka record's headers (None: the record has none)."""
    if not headers:
        return None
    carrier = {
        key: value.decode("utf-8", "replace")
        for key, value in headers
        if value is not None and key in (REQUEST_ID_KEY, "traceparent", "tracestate")
    }
    return carrier or None


def to_headers(carrier: Carrier) -> list[tuple[str, bytes]]:
    return [(key, value.encode()) for key, value in carrier.items()]


# -- request ids ---------------------------------------------------------------------------------


@contextlib.contextmanager
def request(request_id: str | None) -> Iterator[None]:
    """Inside the block, log records (and outgoing carriers) carry `request_id`."""
    if request_id is None:
        yield
        return
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


@contextlib.contextmanager
def incoming(
    carrier: Carrier | None,
    name: str,
    kind: SpanKind = SERVER,
    attributes: Attributes | None = None,
    fail_on_exception: bool = True,
    continue_only: bool = False,
) -> Iterator[Span]:
    """Continue another process's request: its request id for the logs, and a span whose parent
    is the carrier's span (or the current one, for an in-process call without a carrier).
    `continue_only`: no span unless the carrier names a parent (the pipeline: an event whose
    write was not traced starts no trace of its own)."""
    untraced = continue_only and not (carrier and "traceparent" in carrier)
    scope = (
        _NOOP
        if untraced
        else span(name, kind, attributes, carrier, fail_on_exception=fail_on_exception)
    )
    with request(carrier.get(REQUEST_ID_KEY) if carrier else None), scope as current:
        yield current


def valid_request_id(text: str | None) -> str | None:
    """`text` when it is a sane request id (1-64 of A-Z a-z 0-9 . _ -), else None: a client's
    header goes into every log line, so it must not carry spaces, newlines or kilobytes."""
    return text if text and _VALID_REQUEST_ID.fullmatch(text) else None


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id() -> str | None:
    return _request_id.get()


class RequestIdFilter(logging.Filter):
    """Adds `request_id` and `trace_id` to every record ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get() or "-"
        record.trace_id = current_trace_id() or "-"
        return True
