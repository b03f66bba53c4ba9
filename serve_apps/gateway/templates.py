"""google.api.http path templates: parsing and matching, as grpc-gateway and Envoy do.

    Template = "/" Segments [ Verb ] ;   Segment = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;   Verb = ":" LITERAL ;

A template compiles to one regular expression with a named group per variable. `*` matches one
segment, `**` any number (last only); a variable without a pattern is one segment. Variables
that match one segment are percent-decoded fully; multi-segment ones keep `%2F` encoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_LITERAL = re.compile(r"^[A-Za-z0-9_.~\-%]+$")
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class TemplateError(ValueError):
    """A path template in a .proto does not follow the google.api.http grammar."""


@dataclass(frozen=True)
class Variable:
    field_path: str
    group: str
    multi_segment: bool


@dataclass(frozen=True)
class PathTemplate:
    source: str
    regex: re.Pattern[str]
    variables: tuple[Variable, ...]
    literal_segments: int  # more literals = more specific, tried first

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        values = {}
        for variable in self.variables:
            raw = found.group(variable.group)
            values[variable.field_path] = (
                _decode_multi(raw) if variable.multi_segment else unquote(raw)
            )
        return values


def _decode_multi(raw: str) -> str:
    return "/".join(unquote(part).replace("/", "%2F") for part in raw.split("/"))


def _split_verb(template: str) -> tuple[str, str | None]:
    last = template.rsplit("/", 1)[-1]
    if ":" in last and "}" not in last.split(":", 1)[1]:
        body, verb = template.rsplit(":", 1)
        return body, verb
    return template, None


def _segments(text: str) -> list[str]:
    """Split on '/' outside braces."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == "/" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _segment_regex(segment: str, is_last: bool) -> tuple[str, int]:
    if segment == "*":
        return r"[^/]+", 0
    if segment == "**":
        if not is_last:
            raise TemplateError("'**' may only be the last segment")
        return r".*", 0
    if not _LITERAL.match(segment):
        raise TemplateError(f"bad literal segment {segment!r}")
    return re.escape(segment), 1


def parse(template: str) -> PathTemplate:
    if not template.startswith("/"):
        raise TemplateError(f"template must start with '/': {template!r}")
    body, verb = _split_verb(template)
    pieces: list[str] = []
    variables: list[Variable] = []
    literals = 0
    segments = _segments(body[1:])
    for index, segment in enumerate(segments):
        is_last = index == len(segments) - 1
        if segment.startswith("{"):
            if not segment.endswith("}"):
                raise TemplateError(f"unclosed variable in {template!r}")
            field_path, _, pattern = segment[1:-1].partition("=")
            if not _FIELD_PATH.match(field_path):
                raise TemplateError(f"bad field path {field_path!r} in {template!r}")
            group = f"v{len(variables)}"
            inner = _segments(pattern) if pattern else ["*"]
            compiled = []
            for position, part in enumerate(inner):
                regex, literal = _segment_regex(part, is_last and position == len(inner) - 1)
                compiled.append(regex)
                literals += literal
            multi = len(inner) > 1 or "**" in inner
            pieces.append(f"(?P<{group}>{'/'.join(compiled)})")
            variables.append(Variable(field_path, group, multi))
        else:
            regex, literal = _segment_regex(segment, is_last)
            pieces.append(regex)
            literals += literal
    pattern = "/" + "/".join(pieces) + (f":{re.escape(verb)}" if verb else "")
    return PathTemplate(template, re.compile(pattern), tuple(variables), literals)
