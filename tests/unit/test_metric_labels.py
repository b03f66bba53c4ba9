"""Metric tags stay bounded: routes by template, lag from offsets (pure logic, no stores)."""

from __future__ import annotations

from dmb.stores.kafka import lag_by_partition
from serve_apps.gateway.core import UNMATCHED_ROUTE, route_label
from serve_apps.gateway.descriptors import build_service_map, exposed, load_descriptor_set
from serve_apps.gateway.routes import RouteTable


def test_route_tag_is_the_template_never_the_raw_path() -> None:
    table = RouteTable(exposed(build_service_map(load_descriptor_set()).values()))
    assert route_label(table, "GET", "/v1/posts/123") == "/v1/posts/{post_id}"
    assert route_label(table, "GET", "/v1/posts/456") == "/v1/posts/{post_id}"
    assert route_label(table, "POST", "/v1/posts") == "/v1/posts"
    assert route_label(table, "GET", "/healthz") == "/healthz"
    assert route_label(table, "GET", "/wp-admin/../etc/passwd") == UNMATCHED_ROUTE
    assert route_label(table, "PATCH", "/v1/posts") == UNMATCHED_ROUTE  # 405: no template


def test_lag_is_end_minus_position_per_partition() -> None:
    ends = {("posts", 0): 10, ("posts", 1): 5, ("follows", 0): 3}
    positions = {("posts", 0): 7, ("posts", 1): 6}  # follows/0: no position known yet
    assert lag_by_partition(ends, positions) == {("posts", 0): 3, ("posts", 1): 0}
