"""gRPC status -> HTTP status and the `{code, message, details}` body (DESIGN.md §4)."""

from __future__ import annotations

import json
from typing import Any

import grpc
from starlette.responses import Response

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def bearer_challenge(token_presented: bool) -> dict[str, str]:
    """RFC 6750 challenge: `invalid_token` only when a token was sent and refused."""
    if token_presented:
        return {"WWW-Authenticate": 'Bearer realm="dmb", error="invalid_token"'}
    return {"WWW-Authenticate": 'Bearer realm="dmb"'}


def error_response(
    code: grpc.StatusCode,
    message: str,
    headers: dict[str, str] | None = None,
    http_status: int | None = None,
    details: list[dict[str, Any]] | None = None,
) -> Response:
    """The DESIGN.md §4 error body; the HTTP status follows the gRPC code unless given.
    `details`: google.rpc detail messages as protojson renders Any (serve_apps.status_details)."""
    body = json.dumps({"code": code.value[0], "message": message, "details": details or []})
    all_headers = dict(headers or {})
    if code is grpc.StatusCode.UNAUTHENTICATED:
        all_headers.setdefault("WWW-Authenticate", 'Bearer realm="dmb"')
    return Response(
        body,
        status_code=http_status or HTTP_STATUS.get(code, 500),
        media_type="application/json",
        headers=all_headers,
    )
