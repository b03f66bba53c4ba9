"""protovalidate field rules as JSON Schema keywords, for /openapi.json.

The rules are declared once, in the .protos (`buf.validate.field`), and enforced at the RPC
boundary (serve_apps.validation); this module tells clients the same rules in OpenAPI terms:
minLength/maxLength/pattern/format for strings, minimum/maximum for 32-bit integers (JSON
numbers), minItems/maxItems for repeated fields, and `required`. 64-bit integers are strings in
the canonical JSON mapping, so they are published as decimal patterns: without a sign when the
rule forbids negatives, without zero when it forbids zero (a lower bound above 1 is not
expressible and stays server-side), at most 18 digits (19 for unsigned), so that every string
the pattern admits is in range. Rules OpenAPI cannot say (CEL expressions,
`not_in`, ...) are enforced all the same, just not published.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from buf.validate import validate_pb2

_INT32_RULES = ("int32", "sint32", "sfixed32", "uint32", "fixed32")
_INT64_RULES = ("int64", "sint64", "sfixed64", "uint64", "fixed64")
_UNSIGNED_64 = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)
_INT64_TYPES = (
    *_UNSIGNED_64,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
)
_STRING_FORMATS = {
    "email": "email",
    "hostname": "hostname",
    "ipv4": "ipv4",
    "ipv6": "ipv6",
    "uri": "uri",
    "uuid": "uuid",
}
_RE2_CODE_POINT = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def rules_of(field: FieldDescriptor) -> validate_pb2.FieldRules | None:
    options = field.GetOptions()
    if not options.HasExtension(validate_pb2.field):
        return None
    rules: validate_pb2.FieldRules = options.Extensions[validate_pb2.field]
    return rules


def is_required(field: FieldDescriptor) -> bool:
    rules = rules_of(field)
    return bool(rules and rules.required)


def ecma_pattern(re2: str) -> str:
    """An RE2 pattern (protovalidate's dialect) in ECMA 262 syntax (OpenAPI's): the one escape
    that differs in the patterns we write is a code point, `\\x{3000}`, which ECMA spells
    `\\u3000`."""

    def code_point(found: re.Match[str]) -> str:
        value = int(found.group(1), 16)
        if value > 0xFFFF:
            raise ValueError(f"pattern {re2!r}: write code points above U+FFFF literally")
        return f"\\u{value:04x}"

    return _RE2_CODE_POINT.sub(code_point, re2)


def scalar_keywords(
    field: FieldDescriptor, rules: validate_pb2.FieldRules | None
) -> dict[str, Any]:
    """JSON Schema keywords for one value of `field` (an item, for a repeated field)."""
    kind = rules.WhichOneof("type") if rules is not None else None
    if field.type in _INT64_TYPES:
        return {"pattern": _int64_pattern(field, rules, kind)}
    if rules is None or kind is None:
        return {}
    if kind == "string":
        keywords = _string_keywords(rules.string)
        if rules.required:  # protovalidate's `required` refuses the empty string
            keywords.setdefault("minLength", 1)
        return keywords
    if kind in _INT32_RULES:
        return _number_keywords(getattr(rules, kind))
    return {}


def field_mask_keywords(rules: validate_pb2.FieldRules | None) -> dict[str, Any]:
    """A FieldMask's JSON form is one string of camelCase paths joined by commas; `field_mask.in`
    becomes the pattern of that string (`*`, where allowed, only on its own)."""
    if rules is None or rules.WhichOneof("type") != "field_mask":
        return {}
    allowed = list(getattr(rules.field_mask, "in"))
    if not allowed:
        return {}
    paths = "|".join(re.escape(_camel(path)) for path in allowed if path != "*")
    listed = f"(?:{paths})(?:,(?:{paths}))*"
    return {"pattern": rf"^(?:\*|{listed})$" if "*" in allowed else f"^{listed}$"}


def _camel(path: str) -> str:
    """`display_name.first` -> `displayName.first` (protobuf's JSON name of each segment)."""
    return ".".join(
        head + "".join(word.capitalize() for word in rest)
        for head, *rest in (segment.split("_") for segment in path.split("."))
    )


def repeated_keywords(rules: validate_pb2.FieldRules | None) -> dict[str, Any]:
    if rules is None or rules.WhichOneof("type") != "repeated":
        return {}
    repeated = rules.repeated
    keywords: dict[str, Any] = {}
    if repeated.HasField("min_items"):
        keywords["minItems"] = repeated.min_items
    if repeated.HasField("max_items"):
        keywords["maxItems"] = repeated.max_items
    if repeated.unique:
        keywords["uniqueItems"] = True
    return keywords


def item_rules(rules: validate_pb2.FieldRules | None) -> validate_pb2.FieldRules | None:
    if rules is None or rules.WhichOneof("type") != "repeated":
        return None
    return rules.repeated.items if rules.repeated.HasField("items") else None


def _string_keywords(rules: validate_pb2.StringRules) -> dict[str, Any]:
    keywords: dict[str, Any] = {}
    if rules.HasField("len"):
        keywords["minLength"] = keywords["maxLength"] = rules.len
    if rules.HasField("min_len"):
        keywords["minLength"] = rules.min_len
    if rules.HasField("max_len"):
        keywords["maxLength"] = rules.max_len
    if rules.HasField("pattern"):
        keywords["pattern"] = ecma_pattern(rules.pattern)
    known = rules.WhichOneof("well_known")
    if known in _STRING_FORMATS and getattr(rules, known):
        keywords["format"] = _STRING_FORMATS[known]
    return keywords


def _number_keywords(rules: Any) -> dict[str, Any]:
    """gt/gte/lt/lte of an integer rule as inclusive bounds (integers: gt n is minimum n+1)."""
    keywords: dict[str, Any] = {}
    lower = rules.WhichOneof("greater_than")
    if lower == "gt":
        keywords["minimum"] = rules.gt + 1
    elif lower == "gte":
        keywords["minimum"] = rules.gte
    upper = rules.WhichOneof("less_than")
    if upper == "lt":
        keywords["maximum"] = rules.lt - 1
    elif upper == "lte":
        keywords["maximum"] = rules.lte
    return keywords


def _int64_pattern(
    field: FieldDescriptor, rules: validate_pb2.FieldRules | None, kind: str | None
) -> str:
    unsigned = field.type in _UNSIGNED_64
    lowest: int | None = 0 if unsigned else None
    if rules is not None and kind in _INT64_RULES:
        bounds = _number_keywords(getattr(rules, kind))
        if "minimum" in bounds:
            lowest = bounds["minimum"]
    digits = 18 if not unsigned else 19  # every such decimal is in range
    if lowest is not None and lowest >= 1:
        return f"^[1-9][0-9]{{0,{digits - 1}}}$"
    if lowest is not None and lowest >= 0:
        return f"^(0|[1-9][0-9]{{0,{digits - 1}}})$"
    return f"^(0|-?[1-9][0-9]{{0,{digits - 1}}})$"
