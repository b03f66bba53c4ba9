"""Measurements taken beside the load: post-to-follower freshness, and one GET of a post through
the gateway's handle hop against a direct gRPC call to the service."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import requests

from benchmarks import wrk
from benchmarks.harness.system import PASSWORD


def _account(base: str, prefix: str) -> tuple[str, dict[str, str]]:
    """A fresh account: (user id, the headers of its logged-in session)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    requests.post(
        f"{base}/v1/users",
        json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
        timeout=30,
    )
    login = requests.post(
        f"{base}/v1/auth/login", json={"username": name, "password": PASSWORD}, timeout=30
    ).json()
    return login["userId"], {"Authorization": f"Bearer {login['accessToken']}"}


class FreshnessProbe(threading.Thread):
    """While load runs: an author posts, a follower polls its feed until the post shows up."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        author, author_headers = _account(self.base, "probe")
        _, reader_headers = _account(self.base, "probe")
        requests.post(f"{self.base}/v1/users/{author}/follow", headers=reader_headers, timeout=30)
        while not self.stop.is_set():
            created = requests.post(
                f"{self.base}/v1/posts",
                json={"content": "fresh?"},
                headers=author_headers,
                timeout=30,
            )
            if created.status_code != 200:
                time.sleep(0.5)
                continue
            post_id = created.json()["post"]["id"]
            started = time.perf_counter()
            while time.perf_counter() - started < 60 and not self.stop.is_set():
                feed = requests.get(
                    f"{self.base}/v1/feed?pageSize=5", headers=reader_headers, timeout=30
                )
                if feed.status_code == 200 and any(
                    p["id"] == post_id for p in feed.json().get("posts", [])
                ):
                    self.samples.append((time.perf_counter() - started) * 1000)
                    break
                time.sleep(0.02)
            time.sleep(0.5)

    def summary(self) -> dict[str, Any]:
        samples = sorted(self.samples)
        return {
            "samples": len(samples),
            "p50": samples[len(samples) // 2] if samples else None,
            "p99": samples[int(len(samples) * 0.99)] if samples else None,
        }


async def grpc_get_post(
    address: str, token: str, post_id: int, concurrency: int, seconds: float
) -> dict[str, float]:
    import grpc

    from dmb.v1 import posts_pb2, posts_pb2_grpc

    latencies: list[float] = []
    errors = 0
    metadata = (("application", "posts"), ("authorization", f"Bearer {token}"))
    deadline = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(address) as channel:
        stub = posts_pb2_grpc.PostServiceStub(channel)

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await stub.GetPost(posts_pb2.GetPostRequest(post_id=post_id), metadata=metadata)
                    latencies.append((time.perf_counter() - started) * 1000)
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*[client() for _ in range(concurrency)])
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": latencies[len(latencies) // 2] if latencies else 0.0,
        "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
        "errors": float(errors),
    }


def hop_vs_grpc(base: str, grpc_address: str, level: int) -> dict[str, Any]:
    """GET of one post at `level` concurrent clients: through the gateway (wrk), and straight
    to PostService over Serve's gRPC ingress."""
    _, headers = _account(base, "hop")
    post = requests.post(
        f"{base}/v1/posts", json={"content": "measured"}, headers=headers, timeout=30
    ).json()["post"]
    http = wrk.run(f"{base}/v1/posts/{post['id']}", connections=level, seconds=10, headers=headers)
    token = headers["Authorization"].removeprefix("Bearer ")
    direct = asyncio.run(grpc_get_post(grpc_address, token, int(post["id"]), level, 10.0))
    return {"http_gateway_handle": http.as_dict(), "grpc_ingress_direct": direct}
