"""The route map: HTTP verb + path template -> method, built from `google.api.http` rules."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.api import http_pb2

from serve_apps.gateway.descriptors import MethodSpec
from serve_apps.gateway.templates import PathTemplate, parse

_VERBS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Route:
    verb: str  # upper case: GET, POST, ... or a custom verb
    template: PathTemplate
    method: MethodSpec
    body: str  # "" (none), "*" or a top-level field name
    response_body: str


@dataclass(frozen=True)
class Match:
    route: Route
    path_values: dict[str, str]


class RouteNotFound(LookupError):
    pass


class VerbNotAllowed(LookupError):
    def __init__(self, allowed: list[str]) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = allowed


def _route(rule: http_pb2.HttpRule, method: MethodSpec) -> Route:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        verb, path = rule.custom.kind.upper(), rule.custom.path
    elif pattern in _VERBS:
        verb, path = pattern.upper(), getattr(rule, pattern)
    else:
        raise ValueError(f"{method.full_name}: http rule without a pattern")
    return Route(verb, parse(path), method, rule.body, rule.response_body)


class RouteTable:
    """All routes, most specific template first; answers 404 vs 405 the way clients expect."""

    def __init__(self, methods: Iterable[MethodSpec]) -> None:
        routes = [_route(rule, method) for method in methods for rule in method.rules]
        self.routes = sorted(routes, key=lambda r: r.template.specificity)

    def match(self, verb: str, path: str) -> Match:
        allowed: list[str] = []
        for route in self.routes:
            values = route.template.match(path)
            if values is None:
                continue
            if route.verb == verb:
                return Match(route, values)
            allowed.append(route.verb)
        if allowed:
            raise VerbNotAllowed(sorted(set(allowed)))
        raise RouteNotFound(path)
