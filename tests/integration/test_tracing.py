"""One trace per request, from the HTTP POST to the fan-out's write into Redis (issue 13 item 4),
and the request id on every log line of that request.

The spans are made in five kinds of Ray process (gateway, posts replica, CDC relay, feed
consumer, fan-out worker), so no in-memory exporter in this process could see them: the system
under test runs with `DMB_OTEL_EXPORTER=jsonl`, each process appending its spans to a file of
its own, and the test joins the files into trees. It is a `dmb up` of its own (the session's
system runs with tracing off, as a real deployment does by default), as small as it can be:
one node, one consumer, one fan-out worker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from dmb.localstack import scratch_data_dir
from dmb.localstack.process import free_port
from tests.integration.helpers import eventually, register_and_login

DMB = [sys.executable, "-m", "entrypoints.cli"]
PASSWORD = "tracing password"
TIMEOUT = 30


@dataclass
class System:
    data_dir: Path
    env: dict[str, str]
    base: str
    process: subprocess.Popen[bytes]

    @property
    def spans_dir(self) -> Path:
        return self.data_dir / "spans"

    def session_dir(self) -> Path:
        result = subprocess.run(
            [*DMB, "status", "--json"], env=self.env, capture_output=True, text=True, timeout=120
        )
        status: dict[str, Any] = json.loads(result.stdout)
        return Path(status["ray"]["session_dir"])


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    data_dir = scratch_data_dir("dmb-tracing-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DMB_", "RAY_", "OTEL_"))}
    env.update(
        DMB_DATA_DIR=str(data_dir),
        DMB_HTTP_PORT=str(free_port()),
        DMB_GRPC_PORT=str(free_port()),
        DMB_OTEL_EXPORTER="jsonl",
        DMB_OTEL_SPANS_DIR=str(data_dir / "spans"),
        DMB_LOG_LEVEL="DEBUG",
        DMB_FANOUT_WORKERS="1",
        DMB_FEED_CONSUMERS="1",
        DMB_RATE_LIMIT_IP_CAPACITY="1000000",
        # Serve's fast-ingress mode buffers 1,000 records before a replica's log file sees
        # them: write each at once, so the test can read the lines of its one request.
        RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE="1",
    )
    log_path = data_dir / "up.out"
    with log_path.open("w") as log:
        process = subprocess.Popen([*DMB, "up"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while "running." not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.5)
        yield System(data_dir, env, f"http://127.0.0.1:{env['DMB_HTTP_PORT']}", process)
    finally:
        subprocess.run([*DMB, "down"], env=env, capture_output=True, text=True, timeout=300)
        try:
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
            shutil.rmtree(data_dir, ignore_errors=True)


# -- the spans, as the JSON-lines exporter wrote them ----------------------------------------------


@dataclass(frozen=True)
class Span:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, Any]
    pid: int

    @classmethod
    def of(cls, document: dict[str, Any]) -> Span:
        return cls(
            name=document["name"],
            kind=document["kind"].removeprefix("SpanKind."),
            trace_id=document["context"]["trace_id"],
            span_id=document["context"]["span_id"],
            parent_id=document.get("parent_id"),
            attributes=document.get("attributes") or {},
            pid=int(document["resource"]["attributes"]["process.pid"]),
        )


def read_spans(folder: Path) -> list[Span]:
    spans = []
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if line.strip():
                spans.append(Span.of(json.loads(line)))
    return spans


class Tree:
    """The spans of one trace, with the questions the test asks of them."""

    def __init__(self, spans: list[Span]) -> None:
        self.spans = spans
        self.by_id = {span.span_id: span for span in spans}

    def children(self, parent: Span) -> list[Span]:
        return [span for span in self.spans if span.parent_id == parent.span_id]

    def child(self, parent: Span, name: str, kind: str | None = None) -> Span:
        found = [
            s for s in self.children(parent) if s.name == name and (kind is None or s.kind == kind)
        ]
        assert len(found) == 1, f"{name} under {parent.name}: {found}\n{self.render()}"
        return found[0]

    def descendants(self, root: Span) -> list[Span]:
        below = []
        for child in self.children(root):
            below += [child, *self.descendants(child)]
        return below

    def render(self) -> str:
        """The tree as text, for assertion messages."""
        lines: list[str] = []

        def walk(span: Span, depth: int) -> None:
            lines.append(f"{'  ' * depth}{span.name} [{span.kind}, pid {span.pid}]")
            for child in self.children(span):
                walk(child, depth + 1)

        for root in (s for s in self.spans if s.parent_id not in self.by_id):
            walk(root, 0)
        return "\n".join(lines)


# -- the test --------------------------------------------------------------------------------------


def test_one_post_is_one_trace_from_the_http_request_to_the_fanout_write(system: System) -> None:
    suffix = uuid.uuid4().hex[:10]
    author = register_and_login(system.base, f"t_author_{suffix}", PASSWORD)
    follower = register_and_login(system.base, f"t_follower_{suffix}", PASSWORD)
    author_headers = {"Authorization": f"Bearer {author['accessToken']}"}
    follower_headers = {"Authorization": f"Bearer {follower['accessToken']}"}
    followed = requests.post(
        f"{system.base}/v1/users/{author['userId']}/follow",
        headers=follower_headers,
        json={},
        timeout=TIMEOUT,
    )
    assert followed.status_code == 200, followed.text

    def feed() -> list[int]:
        page = requests.get(f"{system.base}/v1/feed", headers=follower_headers, timeout=TIMEOUT)
        page.raise_for_status()
        return [int(post["id"]) for post in page.json()["posts"]]

    assert feed() == []  # the follower's feed set now exists: the fan-out writes into it

    request_id = f"trace-{suffix}"
    created = requests.post(
        f"{system.base}/v1/posts",
        headers={**author_headers, "X-Request-Id": request_id},
        json={"content": "followed from POST to ZADD"},
        timeout=TIMEOUT,
    )
    assert created.status_code == 200, created.text
    assert created.headers["X-Request-Id"] == request_id
    post_id = int(created.json()["post"]["id"])
    eventually(lambda: post_id in feed(), "the post in the follower's feed", timeout=90)

    def fanned_out() -> list[Span] | None:
        spans = read_spans(system.spans_dir)
        writes = [
            s
            for s in spans
            if s.name == "fanout write" and s.attributes.get("dmb.post_id") == post_id
        ]
        if not writes or not any(s.parent_id == writes[0].span_id for s in spans):
            return None  # the worker's Redis span is exported with it, or just after
        if not any(s.span_id == writes[0].parent_id for s in spans):
            return None  # the consumer's span ends, and is exported, after the worker's
        trace = writes[0].trace_id
        return [s for s in spans if s.trace_id == trace]

    tree = Tree(eventually(fanned_out, "the fan-out worker's span in the spans files", timeout=90))

    # The request: gateway -> handle hop -> service -> its SQL and Redis calls.
    (gateway,) = [s for s in tree.spans if s.name == "POST /v1/posts"]
    shown = tree.render()
    assert gateway.parent_id is None, shown
    assert gateway.kind == "SERVER"
    assert gateway.attributes["dmb.request_id"] == request_id
    assert gateway.attributes["http.response.status_code"] == 200
    admission = tree.child(gateway, "redis PIPELINE", "CLIENT")  # the one admission round trip
    assert "EVALSHA" in admission.attributes["dmb.redis.commands"]
    hop = tree.child(gateway, "dmb.v1.PostService/CreatePost", "CLIENT")
    assert hop.pid == gateway.pid
    service = tree.child(hop, "dmb.v1.PostService/CreatePost", "SERVER")
    assert service.pid != gateway.pid, "the service span comes from the posts replica"
    inserts = [s for s in tree.children(service) if s.name == "sql INSERT"]
    assert len(inserts) == 1, shown
    assert "INSERT INTO posts" in inserts[0].attributes["db.query.text"]
    assert inserts[0].attributes["dmb.db.pool"] == "primary"
    assert any(s.name == "redis SET" for s in tree.children(service)), shown  # read-your-writes

    # The event: relay publish (context from the WAL) -> consumer (record headers) -> worker.
    publish = tree.child(service, "cdc publish dmb.public.posts", "PRODUCER")
    consumer = tree.child(publish, "feed handle dmb.public.posts", "CONSUMER")
    write = tree.child(consumer, "fanout write", "SERVER")
    assert len({service.pid, publish.pid, consumer.pid, write.pid}) == 4, shown
    assert write.attributes["dmb.fanout.op"] == "add"
    assert write.attributes["dmb.fanout.feeds"] == 1
    zadd = tree.child(write, "redis PIPELINE", "CLIENT")
    assert zadd.attributes["dmb.redis.commands"] == ["EVALSHA"], shown  # the add-if-present ZADD
    assert zadd.attributes["db.operation.batch.size"] == 1

    # The request id is on the log lines of the service and of the pipeline for the event.
    logs = system.session_dir() / "logs"

    def lines_with(pattern: str, logger: str) -> list[str]:
        return [
            line
            for path in logs.glob(pattern)
            for line in path.read_text(errors="replace").splitlines()
            if f"{logger} request_id={request_id}" in line
        ]

    assert eventually(
        lambda: lines_with("serve/replica_posts_*.log", "dmb.rpc"), "the log line", timeout=90
    )
    assert eventually(
        lambda: lines_with("worker-*", "dmb.feed_consumer"), "the consumer's line", timeout=90
    )
    assert eventually(lambda: lines_with("worker-*", "dmb.fanout"), "the worker's line", timeout=90)
