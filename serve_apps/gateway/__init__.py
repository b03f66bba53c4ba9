"""The HTTP gateway: routes from the descriptor set, JWT auth, rate limiting, transcoding."""

from serve_apps.gateway.app import build_app

__all__ = ["build_app"]
