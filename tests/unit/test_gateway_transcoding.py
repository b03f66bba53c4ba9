"""Gateway routing and transcoding, driven by a test-only service compiled at test time.

Compiling tests/protos/testonly/v1/library.proto and handing its descriptor set to the gateway
is all it takes to expose it: no gateway code names this service.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

from dmb import codegen
from serve_apps.gateway.descriptors import MethodSpec, build_service_map, exposed
from serve_apps.gateway.openapi import build_document
from serve_apps.gateway.routes import RouteNotFound, RouteTable, VerbNotAllowed
from serve_apps.gateway.templates import TemplateError, parse
from serve_apps.gateway.transcode import TranscodeError, request_message, response_document

TEST_PROTOS = Path(__file__).resolve().parents[1] / "protos"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MethodSpec]:
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("library") / "set.binpb"
    includes = [str(TEST_PROTOS), *codegen._include_paths()]
    args = [
        "protoc",
        *(f"-I{path}" for path in includes),
        f"--descriptor_set_out={out}",
        "--include_imports",
        "testonly/v1/library.proto",
    ]
    assert protoc.main(args) == 0
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(out.read_bytes())
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
    with pytest.raises(TranscodeError, match="no request body"):
        _request(table, "GET", "/v1/books:search", body=b'{"query": "x"}')


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
