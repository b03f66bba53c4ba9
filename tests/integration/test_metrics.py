"""The metrics address `dmb status` prints is a Prometheus endpoint that answers for every node."""

from __future__ import annotations

import time
import uuid

import ray
import requests

from entrypoints.cluster_status import metrics_url
from entrypoints.launcher import LocalSystem


def test_every_node_has_a_scrapeable_metrics_address(serve_system: LocalSystem) -> None:
    urls = [metrics_url(node) for node in ray.nodes() if node["Alive"]]  # type: ignore[no-untyped-call]
    assert urls
    for url in urls:
        assert url is not None
        deadline = time.monotonic() + 60  # Ray's first export waits for its report interval
        body = ""
        while time.monotonic() < deadline:
            reply = requests.get(url, timeout=10)
            assert reply.status_code == 200, reply.text
            body = reply.text
            if "\nray_" in body:
                break
            time.sleep(1)
        assert "\nray_" in body, body[:2000]


def _scrape_all(urls: list[str]) -> str:
    return "\n".join(requests.get(url, timeout=10).text for url in urls)


def test_our_series_are_exported_after_a_post(serve_system: LocalSystem) -> None:
    base = str(serve_system.addresses()["http"])
    name = f"m_{uuid.uuid4().hex[:12]}"
    user = {"username": name, "email": f"{name}@example.com", "password": "metrics password"}
    assert requests.post(f"{base}/v1/users", json=user, timeout=30).status_code == 200
    credentials = {"username": name, "password": user["password"]}
    login = requests.post(f"{base}/v1/auth/login", json=credentials, timeout=30)
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['accessToken']}"}
    post = requests.post(f"{base}/v1/posts", json={"content": "hi"}, headers=headers, timeout=30)
    assert post.status_code == 200, post.text
    urls = [metrics_url(node) for node in ray.nodes() if node["Alive"]]  # type: ignore[no-untyped-call]
    wanted = [
        "ray_dmb_http_requests_total{",
        'route="/v1/posts"',
        "ray_dmb_http_request_seconds_bucket{",
        "ray_dmb_fanout_workers{",
        "ray_dmb_feed_consumers{",
        "ray_dmb_consumer_lag_messages{",
        "ray_dmb_cdc_lag_seconds{",  # set every second by the relay, stuck or not
    ]
    deadline = time.monotonic() + 90  # each process exports every report interval
    body = ""
    while time.monotonic() < deadline:
        body = _scrape_all([url for url in urls if url is not None])
        if all(name in body for name in wanted):
            break
        time.sleep(2)
    missing = [name for name in wanted if name not in body]
    assert not missing, missing
    assert f"/v1/posts/{post.json()['post']['id']}" not in body  # routes by template, not raw path
