"""dmb.tracing in one process: spans and carriers with an in-memory exporter, the no-op path
when tracing is off, request ids on log records, and trace context through the WAL decoder."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dmb import tracing
from dmb.settings import load_settings
from dmb.stores.change_events import TRACE_MESSAGE_PREFIX
from dmb.stores.postgres import sql_operation
from dmb.stores.wal2json import Decoder, Transaction

pytestmark = pytest.mark.unit


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with tracing.installed(provider):
        yield memory


def test_off_by_default_and_free() -> None:
    assert load_settings(environ={}).otel_exporter == "none"
    assert not tracing.enabled()
    first = tracing.span("a")
    assert first is tracing.span("b")  # one shared no-op, nothing made per call
    with first as span:
        assert not span.is_recording()
    assert tracing.outgoing() == {}
    with tracing.request("req-1"):
        assert tracing.outgoing() == {"x-request-id": "req-1"}  # no trace headers when off
    assert not tracing.recording()


def test_a_carrier_continues_the_trace_in_another_process(
    exporter: InMemorySpanExporter,
) -> None:
    with tracing.request("req-2"), tracing.span("gateway", tracing.SERVER):
        carrier = tracing.outgoing()
    assert carrier["x-request-id"] == "req-2"
    assert carrier["traceparent"].startswith("00-")

    async def elsewhere() -> str | None:  # a fresh context, as in the service's process
        with tracing.incoming(carrier, "service"):
            with tracing.span("sql INSERT", tracing.CLIENT):
                pass
            return tracing.request_id()

    assert asyncio.run(elsewhere()) == "req-2"
    assert tracing.request_id() is None
    spans = {span.name: span for span in exporter.get_finished_spans()}
    gateway, service, sql = spans["gateway"], spans["service"], spans["sql INSERT"]
    assert service.context.trace_id == gateway.context.trace_id == sql.context.trace_id
    assert service.parent is not None
    assert service.parent.span_id == gateway.context.span_id
    assert sql.parent is not None
    assert sql.parent.span_id == service.context.span_id


def test_a_manual_span_is_the_parent_of_what_its_carrier_reaches(
    exporter: InMemorySpanExporter,
) -> None:
    publish = tracing.start_span("cdc publish", tracing.PRODUCER)
    headers = tracing.to_headers(tracing.outgoing(publish))
    publish.end()
    with tracing.incoming(tracing.from_headers(headers), "feed handle", tracing.CONSUMER):
        pass
    made = {span.name: span for span in exporter.get_finished_spans()}
    handled = made["feed handle"]
    assert handled.parent is not None
    assert handled.parent.span_id == made["cdc publish"].context.span_id


def test_log_records_carry_the_request_id_and_trace_id(exporter: InMemorySpanExporter) -> None:
    record = logging.LogRecord("dmb.test", logging.INFO, __file__, 1, "hello", None, None)
    tracing.RequestIdFilter().filter(record)
    assert (record.__dict__["request_id"], record.__dict__["trace_id"]) == ("-", "-")
    with tracing.request("req-3"), tracing.span("work"):
        tracing.RequestIdFilter().filter(record)
        assert record.__dict__["request_id"] == "req-3"
        trace_id = record.__dict__["trace_id"]
        assert trace_id == tracing.current_trace_id()
        assert len(trace_id) == 32


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123", True), ("a" * 64, True), ("a" * 65, False), ("bad id!", False), ("", False)],
)
def test_request_ids_are_bounded_tokens(given: str, kept: bool) -> None:
    assert (tracing.valid_request_id(given) == given) is kept


def test_carriers_from_the_wal_never_raise() -> None:
    assert tracing.decode_carrier(None) is None
    assert tracing.decode_carrier("not json") is None
    assert tracing.decode_carrier("[1, 2]") is None
    assert tracing.decode_carrier('{"traceparent": "00-x", "n": 1}') == {"traceparent": "00-x"}


def test_the_trace_message_rides_on_every_change_of_its_transaction() -> None:
    carrier = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "x-request-id": "r"}
    decoder = Decoder(message_prefixes=[TRACE_MESSAGE_PREFIX])
    messages = [
        {"action": "B", "xid": 7},
        {
            "action": "M",
            "transactional": True,
            "prefix": TRACE_MESSAGE_PREFIX,
            "content": tracing.encode_carrier(carrier),
        },
        {
            "action": "I",
            "xid": 7,
            "schema": "public",
            "table": "posts",
            "columns": [{"name": "id", "value": 1}, {"name": "author_id", "value": 2}],
        },
        {"action": "C", "xid": 7, "timestamp": "2026-01-01 00:00:00+00"},
    ]
    results = [decoder.feed(f"0/{i}", json.dumps(m)) for i, m in enumerate(messages)]
    done = results[-1]
    assert isinstance(done, Transaction)
    assert [change.trace for change in done.changes] == [carrier]


@pytest.mark.parametrize(
    ("sql", "verb"),
    [
        ("SELECT 1", "SELECT"),
        ("  insert into posts values (1)", "INSERT"),
        ("WITH p AS (INSERT INTO posts (a) VALUES (1) RETURNING id) SELECT * FROM p", "INSERT"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "SELECT"),
        ("", "SQL"),
    ],
)
def test_sql_spans_are_named_by_what_the_statement_does(sql: str, verb: str) -> None:
    assert sql_operation(sql) == verb


def test_store_spans_and_untraced_events_start_no_trace(exporter: InMemorySpanExporter) -> None:
    with tracing.child_span("sql UPDATE"):  # the counter flusher, outside any request
        pass
    with tracing.incoming({"x-request-id": "r"}, "feed handle", continue_only=True) as span:
        assert not span.is_recording()
        assert tracing.request_id() == "r"
    assert exporter.get_finished_spans() == ()
    with tracing.span("request"), tracing.child_span("sql UPDATE"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["sql UPDATE", "request"]
