"""Gateway routing and transcoding, driven by a test-only service compiled at test time.

Compiling tests/protos/testonly/v1/library.proto and handing its descriptor set to the gateway
is all it takes to expose it: no gateway code names this service.
"""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

from serve_apps.gateway.descriptors import MethodSpec, build_service_map, exposed
from serve_apps.gateway.openapi import build_document
from serve_apps.gateway.routes import RouteNotFound, RouteTable, VerbNotAllowed
from serve_apps.gateway.templates import TemplateError, parse
from serve_apps.gateway.transcode import TranscodeError, request_message, response_document
from tests.protos.compile import compile_descriptor_set


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    return compile_descriptor_set(tmp_path_factory.mktemp("library"))


@pytest.fixture(scope="module")
def library(files: descriptor_pb2.FileDescriptorSet) -> dict[str, MethodSpec]:
    return build_service_map(files)


@pytest.fixture(scope="module")
def table(library: dict[str, MethodSpec]) -> RouteTable:
    return RouteTable(exposed(library.values()))


def _request(table: RouteTable, verb: str, path: str, query=(), body=b"") -> Message:  # type: ignore[no-untyped-def]
    match = table.match(verb, path)
    return request_message(match.route, match.path_values, list(query), body)


def test_a_new_service_is_mapped_from_its_descriptors(library: dict[str, MethodSpec]) -> None:
    spec = library["testonly.v1.LibraryService.GetBook"]
    assert (spec.app, spec.deployment) == ("library", "LibraryService")
    assert library["testonly.v1.LibraryService.SearchBooks"].public
    assert not spec.public
    assert library["testonly.v1.LibraryService.Internal"].rules == ()


def test_internal_methods_get_no_route(table: RouteTable) -> None:
    assert all(route.method.name != "Internal" for route in table.routes)


def test_pattern_variables_and_additional_bindings(table: RouteTable) -> None:
    assert _request(table, "GET", "/v1/shelves/s1/books/b2").name == "shelves/s1/books/b2"  # type: ignore[attr-defined]
    assert _request(table, "GET", "/v1/books/a/b/c").name == "a/b/c"  # type: ignore[attr-defined]
    with pytest.raises(RouteNotFound):
        table.match("GET", "/v1/shelves/s1/books")


def test_nested_path_fields_and_body_field(table: RouteTable) -> None:
    message = _request(
        table,
        "PATCH",
        "/v1/shelves/s9/books/b7",
        query=[("validateOnly", "true")],
        body=b'{"name": "Dune", "pages": "412", "tags": ["sf"], "genre": "GENRE_FICTION"}',
    )
    book = message.book  # type: ignore[attr-defined]
    assert (book.id, book.shelf.id, book.name, book.pages) == ("b7", "s9", "Dune", 412)
    assert list(book.tags) == ["sf"]
    assert message.validate_only  # type: ignore[attr-defined]


def test_query_fills_nested_and_repeated_fields(table: RouteTable) -> None:
    message = _request(
        table,
        "GET",
        "/v1/books:search",
        query=[
            ("query", "dune"),
            ("tags", "sf"),
            ("tags", "classic"),
            ("filter.minPages", "100"),
            ("filter.signed", "true"),
            ("filter.genre", "GENRE_FICTION"),
            ("page_size", "5"),
        ],
    )
    assert list(message.tags) == ["sf", "classic"]  # type: ignore[attr-defined]
    assert message.filter.min_pages == 100  # type: ignore[attr-defined]
    assert message.filter.signed  # type: ignore[attr-defined]
    assert message.page_size == 5  # type: ignore[attr-defined]


def test_custom_verbs(table: RouteTable) -> None:
    assert _request(table, "ARCHIVE", "/v1/books/b1").id == "b1"  # type: ignore[attr-defined]
    with pytest.raises(VerbNotAllowed) as caught:
        table.match("DELETE", "/v1/books/b1")
    assert "ARCHIVE" in caught.value.allowed


@pytest.mark.parametrize(
    ("query", "body", "named"),
    [
        ([("nope", "1")], b"", "nope"),
        ([("filter.minPages", "lots")], b"", "min_pages"),
        ([("filter.signed", "maybe")], b"", "filter.signed"),
        ([("filter", "x")], b"", "filter"),
    ],
)
def test_bad_query_values_name_the_field(table: RouteTable, query, body, named) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TranscodeError, match=named):
        _request(table, "GET", "/v1/books:search", query=query, body=body)


def test_bad_bodies_are_refused(table: RouteTable) -> None:
    path = "/v1/shelves/s/books/b"
    with pytest.raises(TranscodeError, match="not valid JSON"):
        _request(table, "PATCH", path, body=b"{oops")
    with pytest.raises(TranscodeError, match="colour"):
        _request(table, "PATCH", path, body=b'{"colour": "red"}')
    with pytest.raises(TranscodeError, match="pages"):
        _request(table, "PATCH", path, body=b'{"pages": "many"}')


@pytest.mark.parametrize(
    "body", [b"", b"{}", b"  {}\n", b'{"query": "x"}', b"[not json at all", b"\xff\xfe"]
)
def test_a_route_without_a_body_rule_never_reads_the_body(table: RouteTable, body: bytes) -> None:
    """As grpc-gateway: a rule with no `body` ignores whatever was sent (clients send `{}`)."""
    message = _request(table, "GET", "/v1/books:search", query=[("query", "dune")], body=body)
    assert message.query == "dune"  # type: ignore[attr-defined]
    archived = _request(table, "ARCHIVE", "/v1/books/b1", body=body)
    assert archived.id == "b1"  # type: ignore[attr-defined]


def test_a_mapped_body_still_refuses_unknown_fields(table: RouteTable) -> None:
    with pytest.raises(TranscodeError, match="colour"):
        _request(table, "PUT", "/v1/shelves/s1", body=b'{"theme": "sf", "colour": "red"}')
    with pytest.raises(TranscodeError, match="colour"):
        _request(table, "PATCH", "/v1/shelves/s/books/b", body=b'{"colour": "red"}')


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested more than 32 levels"),
        (b'{"theme": ' + b"[" * 40 + b"]" * 40 + b"}", "nested more than 32 levels"),
        (b'{"max_books": ' + b"9" * 4_400 + b"}", "number json cannot read"),
        (b'{"theme": "' + b"x" * 10_000 + b'", "max_books": "many"}', "max_books"),
    ],
)
def test_hostile_bodies_are_refused_with_a_short_clear_message(
    table: RouteTable, body: bytes, said: str
) -> None:
    with pytest.raises(TranscodeError, match=said) as refused:
        _request(table, "PUT", "/v1/shelves/s1", body=body)
    assert len(str(refused.value)) <= 300


@pytest.mark.parametrize("raw", ["1_000", "+5", " 5", "\u0663", "5.0", "9" * 4_400])
def test_path_and_query_integers_are_plain_ascii_decimals(table: RouteTable, raw: str) -> None:
    with pytest.raises(TranscodeError, match="page_size"):
        _request(table, "GET", "/v1/books:search", query=[("pageSize", raw)])


def test_response_body_selects_one_field(table: RouteTable, library: dict[str, MethodSpec]) -> None:
    match = table.match("GET", "/v1/books:search")
    reply = library["testonly.v1.LibraryService.SearchBooks"].output_type()
    reply.books.add(id="b1", pages=3)  # type: ignore[attr-defined]
    document = response_document(match.route, reply)
    assert document[0]["id"] == "b1"
    assert document[0]["pages"] == "3"  # int64 as a string
    assert document[0]["signed"] is False  # defaults printed


def test_openapi_describes_the_new_service(table: RouteTable) -> None:
    document = build_document(table.routes)
    search = document["paths"]["/v1/books:search"]["get"]
    assert "security" not in search
    names = {p["name"] for p in search["parameters"]}
    assert {"query", "tags", "pageSize"} <= names
    patch = document["paths"]["/v1/shelves/{book.shelf.id}/books/{book.id}"]["patch"]
    assert patch["security"] == [{"bearerAuth": []}]
    assert "requestBody" in patch
    assert "/v1/{name}" in document["paths"]


@pytest.mark.parametrize(
    "template", ["v1/x", "/v1/**/x", "/v1/{bad-name}", "/v1/{name=**/x}", "/v1/{open"]
)
def test_malformed_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        parse(template)


def test_single_segment_variables_are_percent_decoded() -> None:
    template = parse("/v1/users/{user_id}")
    assert template.match("/v1/users/a%20b") == {"user_id": "a b"}
    assert template.match("/v1/users/a/b") is None
    multi = parse("/v1/{name=files/**}")
    assert multi.match("/v1/files/a%2Fb/c") == {"name": "files/a%2Fb/c"}


def test_a_custom_verb_wins_over_a_variable_that_would_swallow_it(table: RouteTable) -> None:
    match = table.match("GET", "/v1/shelves/s1/books/b2:preview")
    assert match.route.method.name == "PreviewBook"
    assert match.path_values == {"name": "shelves/s1/books/b2"}
    assert table.match("GET", "/v1/shelves/s1/books/b2").route.method.name == "GetBook"


def test_body_star_takes_either_name_form_and_the_path_wins(table: RouteTable) -> None:
    body = b'{"theme": "sf", "id": "other", "max_books": 3}'
    message = _request(table, "PUT", "/v1/shelves/s1", body=body)
    assert (message.id, message.theme, message.max_books) == ("s1", "sf", 3)  # type: ignore[attr-defined]
    assert _request(table, "PUT", "/v1/shelves/s", body=b'{"maxBooks": 4}').max_books == 4  # type: ignore[attr-defined]
    with pytest.raises(TranscodeError, match=r"max_books.*twice"):
        _request(table, "PUT", "/v1/shelves/s1", body=b'{"max_books": 1, "maxBooks": 2}')
    with pytest.raises(TranscodeError, match="duplicate key 'theme'"):
        _request(table, "PUT", "/v1/shelves/s1", body=b'{"theme": "a", "theme": "b"}')
    with pytest.raises(TranscodeError, match="JSON object"):
        _request(table, "PUT", "/v1/shelves/s1", body=b"[1, 2]")


def test_enums_by_number_and_wrappers_from_the_query(table: RouteTable) -> None:
    message = _request(
        table,
        "GET",
        "/v1/books:search",
        query=[("filter.genre", "1"), ("maxPages", "300")],
    )
    assert message.filter.genre == 1  # type: ignore[attr-defined]
    assert message.HasField("max_pages")
    assert message.max_pages.value == 300  # type: ignore[attr-defined]
    with pytest.raises(TranscodeError, match="max_pages"):
        _request(table, "GET", "/v1/books:search", query=[("maxPages", "lots")])


def test_an_encoded_slash_stays_inside_one_segment(table: RouteTable) -> None:
    match = table.match("ARCHIVE", "/v1/books/a%2Fb")
    assert match.path_values == {"id": "a/b"}
    with pytest.raises(RouteNotFound):
        table.match("GET", "/v1/shelves/s1/books/a/b/c/d")


def test_routes_are_tried_most_specific_first() -> None:
    ordered = sorted(
        [parse("/v1/{name=**}"), parse("/v1/{id}"), parse("/v1/x"), parse("/v1/{id}:go")],
        key=lambda template: template.specificity,
    )
    assert [t.source for t in ordered] == ["/v1/{id}:go", "/v1/x", "/v1/{id}", "/v1/{name=**}"]


def test_openapi_carries_comments_nested_query_and_wrappers(
    table: RouteTable, files: descriptor_pb2.FileDescriptorSet
) -> None:
    document = build_document(table.routes, files)
    schemas = document["components"]["schemas"]
    assert schemas["testonly.v1.Shelf"]["description"] == "A shelf of books."
    assert schemas["testonly.v1.Shelf"]["properties"]["id"]["description"] == "Unique per library."
    search = document["paths"]["/v1/books:search"]["get"]
    by_name = {p["name"]: p for p in search["parameters"]}
    assert {"filter.minPages", "filter.signed", "filter.genre"} <= set(by_name)
    assert by_name["filter.minPages"]["schema"] == {
        "type": "string",
        "format": "int64",
        "pattern": "^(0|-?[1-9][0-9]{0,17})$",  # an integer string
    }
    assert by_name["filter.genre"]["schema"]["enum"] == ["GENRE_UNSPECIFIED", "GENRE_FICTION"]
    assert by_name["tags"]["schema"]["type"] == "array"
    assert by_name["maxPages"]["schema"]["format"] == "int64"
    preview = document["paths"]["/v1/{name}:preview"]["get"]
    assert preview["summary"].startswith("Shows a book's first pages")
    assert search["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/testonly.v1.Book"},
    }


def test_cursors_decode_exactly_what_the_published_pattern_admits() -> None:
    """The cursor rule of the .protos and the domain's decoder agree, string for string."""
    import base64
    import random
    import re

    from dmb.domain.paging import decode_cursor, encode_cursor
    from dmb.errors import InvalidArgument
    from dmb.v1 import feed_pb2
    from serve_apps.gateway.constraints import rules_of

    field = feed_pb2.GetHomeFeedRequest.DESCRIPTOR.fields_by_name["cursor"]
    rules = rules_of(field)
    assert rules is not None
    pattern = re.compile(rules.string.pattern)

    def decodes(cursor: str) -> bool:
        try:
            decode_cursor(cursor)
        except InvalidArgument:
            return False
        return True

    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    chooser = random.Random(7)
    for digits in range(21):
        number = "".join(chooser.choice("0123456789") for _ in range(digits))
        cursor = b64("v1:" + number)
        assert bool(pattern.search(cursor)) is decodes(cursor) is (1 <= digits <= 19), cursor
    for hostile in [b64("v1:²"), b64("v1:٣"), b64("v1:-1"), "djE6MN", "!!", b64("v2:1")]:
        assert not pattern.search(hostile), hostile
        assert not decodes(hostile), hostile
    assert decode_cursor(encode_cursor(247829761228800)) == 247829761228800
    assert decode_cursor(b64("v1:" + "9" * 19)) == 2**53  # past every id: from the top


@pytest.mark.parametrize(
    ("verb", "path", "body", "named"),
    [
        ("PUT", "/v1/shelves/s1", b'{"theme": null}', "theme"),
        ("PUT", "/v1/shelves/s1", b'{"maxBooks": null}', "maxBooks"),
        ("PATCH", "/v1/shelves/s/books/b", b'{"pages": null}', "pages"),
    ],
)
def test_null_is_refused_where_the_document_publishes_no_null(
    table: RouteTable, verb: str, path: str, body: bytes, named: str
) -> None:
    """Proto3 JSON would read null as the default ("" or 0): a quiet change the client never
    asked for, and a value the OpenAPI schema (type string/integer) calls invalid."""
    with pytest.raises(TranscodeError, match=rf"{named}.*null"):
        _request(table, verb, path, body=body)
