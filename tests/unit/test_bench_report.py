"""The e2e benchmark says what went wrong: failures by status or exception, on its last line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness.locust import ERRORS, failures_by_kind
from benchmarks.harness.report import errors_line


def test_failures_are_counted_by_status_and_exception(tmp_path: Path) -> None:
    failures = tmp_path / "run_failures.csv"
    failures.write_text(
        "Method,Name,Error,Occurrences\n"
        'GET,GET /v1/feed,"503: {""code"": 14, ""message"": ""posts is unavailable""}",3\n'
        'POST,POST /v1/posts,"503: {""code"": 14}",2\n'
        "GET,GET /v1/feed,\"ConnectionResetError(104, 'Connection reset by peer')\",1\n"
        'GET,GET /v1/feed,"CatchResponseError(\'503: {""code"": 14}\')",4\n'
        "POST,POST /v1/posts,\"CatchResponseError('500: {}')\",1\n"
    )
    assert failures_by_kind(failures) == {
        "HTTP 503": 9.0,
        "HTTP 500": 1.0,
        "ConnectionResetError": 1.0,
    }
    assert failures_by_kind(tmp_path / "missing.csv") == {}


def test_the_last_line_names_every_error_or_says_none() -> None:
    clean: dict[str, Any] = {"levels": {8: {"product": {ERRORS: {}}, "hop": {ERRORS: {}}}}}
    assert errors_line(clean) == "errors: none"
    broken: dict[str, Any] = {
        "levels": {32: {"product": {ERRORS: {"HTTP 503": 5.0, "ReadTimeout": 1.0}}}}
    }
    assert errors_line(broken) == "ERRORS: product@32: HTTP 503 x5, ReadTimeout x1"
