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
    literal_segments: int
    verb: str | None
    wildcards: int  # '**' segments

    @property
    def specificity(self) -> tuple[int, int, int, int]:
        """Sort key, most specific first: a custom verb (so `/x/{id}:cancel` wins over
        `/x/{id}` for `/x/1:cancel`), then more literals, fewer `**`, fewer variables."""
        return (0 if self.verb else 1, -self.literal_segments, self.wildcards, len(self.variables))

    def match(self, path: str) -> dict[str, str] | None:
        """Variable values by field path, or None. `path` is the raw (percent-encoded) path:
        an encoded `/` inside a single-segment value must not split the segment."""
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
        if not _LITERAL.match(verb):
            raise TemplateError(f"bad verb {verb!r} in {template!r}")
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


def _segment_regex(segment: str, is_last: bool) -> tuple[str, int, int]:
    """(regex, literal count, '**' count) of one segment."""
    if segment == "*":
        return r"[^/]+", 0, 0
    if segment == "**":
        if not is_last:
            raise TemplateError("'**' may only be the last segment")
        return r".*", 0, 1
    if not _LITERAL.match(segment):
        raise TemplateError(f"bad literal segment {segment!r}")
    return re.escape(segment), 1, 0


def parse(template: str) -> PathTemplate:
    if not template.startswith("/"):
        raise TemplateError(f"template must start with '/': {template!r}")
    body, verb = _split_verb(template)
    pieces: list[str] = []
    variables: list[Variable] = []
    literals = wildcards = 0
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
                regex, literal, wild = _segment_regex(part, is_last and position == len(inner) - 1)
                compiled.append(regex)
                literals += literal
                wildcards += wild
            multi = len(inner) > 1 or "**" in inner
            pieces.append(f"(?P<{group}>{'/'.join(compiled)})")
            variables.append(Variable(field_path, group, multi))
        else:
            regex, literal, wild = _segment_regex(segment, is_last)
            pieces.append(regex)
            literals += literal
            wildcards += wild
    pattern = "/" + "/".join(pieces) + (f":{re.escape(verb)}" if verb else "")
    return PathTemplate(template, re.compile(pattern), tuple(variables), literals, verb, wildcards)
