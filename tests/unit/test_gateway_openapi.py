"""/openapi.json from the product's own descriptor set: the DESIGN.md §4 table, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from serve_apps.gateway.descriptors import build_service_map, exposed, load_descriptor_set
from serve_apps.gateway.openapi import build_document
from serve_apps.gateway.routes import RouteTable

CONTRACT = {  # DESIGN.md §4: path -> verb -> operationId
    "/v1/users": {"post": "UserService_Register"},
    "/v1/auth/login": {"post": "UserService_Login"},
    "/v1/auth/refresh": {"post": "UserService_Refresh"},
    "/v1/auth/logout": {"post": "UserService_Logout"},
    "/v1/users/{user_id}": {"get": "UserService_GetUser"},
    "/v1/users/{user_id}/follow": {
        "post": "FollowService_Follow",
        "delete": "FollowService_Unfollow",
    },
    "/v1/users/me": {
        "get": "UserService_GetMe",
        "patch": "UserService_UpdateProfile",
        "delete": "UserService_DeleteAccount",
    },
    "/v1/users:search": {"get": "UserService_SearchUsers"},
    "/v1/users/{user_id}/followers": {"get": "FollowService_ListFollowers"},
    "/v1/users/{user_id}/following": {"get": "FollowService_ListFollowing"},
    "/v1/users/{user_id}/stats": {"get": "FollowService_GetStats"},
    "/v1/posts": {"post": "PostService_CreatePost"},
    "/v1/posts/{post_id}": {"get": "PostService_GetPost", "delete": "PostService_DeletePost"},
    "/v1/users/{user_id}/posts": {"get": "PostService_ListUserPosts"},
    "/v1/posts/{post_id}/likes": {
        "post": "PostService_LikePost",
        "delete": "PostService_UnlikePost",
    },
    "/v1/posts/{post_id}/comments": {
        "post": "PostService_AddComment",
        "get": "PostService_ListComments",
    },
    "/v1/posts/{post_id}/comments/{comment_id}": {"delete": "PostService_DeleteComment"},
    "/v1/feed": {"get": "FeedService_GetHomeFeed"},
    "/v1/users/{user_id}/block": {
        "post": "FollowService_BlockUser",
        "delete": "FollowService_UnblockUser",
    },
    "/v1/users/{user_id}/mute": {
        "post": "FollowService_MuteUser",
        "delete": "FollowService_UnmuteUser",
    },
    "/v1/users/me/blocks": {"get": "FollowService_ListBlocks"},
    "/v1/users/me/mutes": {"get": "FollowService_ListMutes"},
    "/v1/notifications": {"get": "NotificationService_ListNotifications"},
    "/v1/notifications:markRead": {"post": "NotificationService_MarkNotificationsRead"},
    "/healthz": {"get": "healthz"},
    "/openapi.json": {"get": "openapi"},
}
PUBLIC = {"UserService_Register", "UserService_Login", "UserService_Refresh"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    files = load_descriptor_set()
    routes = RouteTable(exposed(build_service_map(files).values())).routes
    return build_document(routes, files)


def test_exactly_the_contracts_routes(document: dict[str, Any]) -> None:
    served = {
        path: {verb: op["operationId"] for verb, op in item.items()}
        for path, item in document["paths"].items()
    }
    assert served == CONTRACT  # internal methods (GetUsers, GetPosts) are not exposed


def test_public_routes_need_no_token_and_the_rest_do(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        if path in ("/healthz", "/openapi.json"):
            continue
        for operation in item.values():
            public = operation["operationId"] in PUBLIC
            assert ("security" not in operation) is public, operation["operationId"]
            assert ("401" not in operation["responses"]) is public


def test_parameters_and_schemas_follow_the_canonical_json(document: dict[str, Any]) -> None:
    listing = document["paths"]["/v1/users/{user_id}/posts"]["get"]
    params = {(p["in"], p["name"]): p["schema"] for p in listing["parameters"]}
    assert params[("path", "user_id")] == {
        "type": "string",
        "format": "int64",
        "pattern": "^[1-9][0-9]{0,17}$",  # int64 gt 0, as an integer string
    }
    assert ("query", "pageSize") in params
    assert ("query", "cursor") in params
    create = document["paths"]["/v1/posts"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/dmb.v1.CreatePostRequest"
    }
    assert create["parameters"] == []  # body "*": nothing left for the query
    post = document["components"]["schemas"]["dmb.v1.Post"]["properties"]
    assert {"id", "authorId", "content", "createdAt", "likeCount", "commentCount"} <= set(post)
    assert post["authorId"]["type"] == "string"  # int64 as a JSON string
    assert create["summary"]  # from the .proto comment


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


def test_the_field_rules_of_the_protos_are_published(document: dict[str, Any]) -> None:
    """What protovalidate enforces (proto/dmb/v1/*.proto) is what clients are told."""
    schemas = document["components"]["schemas"]
    register = schemas["dmb.v1.RegisterRequest"]
    assert register["required"] == ["username", "email", "password"]
    username = register["properties"]["username"]
    assert (username["minLength"], username["maxLength"]) == (3, 32)
    assert username["pattern"] == "^[a-z0-9_]{3,32}$"
    assert register["properties"]["email"]["format"] == "email"
    assert register["properties"]["password"]["minLength"] == 8
    login_password = schemas["dmb.v1.LoginRequest"]["properties"]["password"]
    assert login_password["minLength"] == 1  # `required` refuses ""
    content = schemas["dmb.v1.CreatePostRequest"]["properties"]["content"]
    assert content["maxLength"] == 2000
    assert "\\u3000" in content["pattern"]  # RE2's \x{3000} in ECMA 262 syntax
    listing = document["paths"]["/v1/users/{user_id}/posts"]["get"]
    params = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert (params["pageSize"]["minimum"], params["pageSize"]["maximum"]) == (0, 100)
    assert params["cursor"]["maxLength"] == 32
    assert params["cursor"]["pattern"].startswith("^(?:djE6")  # base64url of `v1:<digits>`


def test_published_patterns_accept_and_refuse_what_the_server_does(
    document: dict[str, Any],
) -> None:
    """The content rule in ECMA/Python syntax means what the RE2 rule means to protovalidate."""
    import re

    import protovalidate

    from dmb.v1 import posts_pb2

    pattern = document["components"]["schemas"]["dmb.v1.CreatePostRequest"]["properties"][
        "content"
    ]["pattern"]
    validator = protovalidate.Validator()
    for text in ["hi", " x ", "\u3000", "\u3000a", " \t\n", "a\x00", "\xa0\u2028", "é"]:
        published = re.search(pattern, text) is not None
        enforced = not validator.collect_violations(posts_pb2.CreatePostRequest(content=text))
        assert published is enforced, repr(text)
        assert enforced is bool(text.strip() and "\x00" not in text), repr(text)


def test_a_body_star_route_does_not_offer_the_fields_its_path_binds(
    document: dict[str, Any],
) -> None:
    comment = document["paths"]["/v1/posts/{post_id}/comments"]["post"]
    body = comment["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"content"}  # postId comes from the path
    assert body["required"] == ["content"]
    assert body["additionalProperties"] is False


def test_replies_link_to_the_operations_their_ids_feed(document: dict[str, Any]) -> None:
    """Stateful clients (schemathesis) follow these to use real ids, not made-up ones."""
    created = document["paths"]["/v1/posts"]["post"]["responses"]["200"]["links"]
    assert created["PostService_GetPost"]["parameters"] == {"post_id": "$response.body#/post/id"}
    assert "PostService_DeleteComment" not in created  # needs a comment_id this reply lacks
    registered = document["paths"]["/v1/users"]["post"]["responses"]["200"]["links"]
    assert registered["FollowService_Follow"]["parameters"] == {
        "user_id": "$response.body#/user/id"
    }
    commented = document["paths"]["/v1/posts/{post_id}/comments"]["post"]["responses"]["200"]
    assert commented["links"]["PostService_DeleteComment"]["parameters"] == {
        "post_id": "$response.body#/comment/postId",
        "comment_id": "$response.body#/comment/id",
    }


def test_profile_update_publishes_its_mask_and_bounds(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    profile = schemas["dmb.v1.Profile"]["properties"]
    assert profile["displayName"]["maxLength"] == 64
    assert profile["bio"]["maxLength"] == 300


def test_the_update_mask_publishes_its_allowed_paths(document: dict[str, Any]) -> None:
    request = document["components"]["schemas"]["dmb.v1.UpdateProfileRequest"]
    pattern = request["properties"]["updateMask"]["pattern"]
    assert "displayName" in pattern
    assert "bio" in pattern


def test_replies_about_the_caller_link_only_to_reads(document: dict[str, Any]) -> None:
    """GET /v1/users/me's own id into POST .../follow would be a self-follow: refused (400)."""
    for verb in ("get", "patch"):
        links = document["paths"]["/v1/users/me"][verb]["responses"]["200"].get("links", {})
        assert "FollowService_Follow" not in links
        assert "FollowService_GetStats" in links


def test_the_search_query_is_a_required_parameter(document: dict[str, Any]) -> None:
    """Omitted, `q` is refused (400): the document must say so, or generated clients and
    fuzzers send searches without one."""
    parameters = document["paths"]["/v1/users:search"]["get"]["parameters"]
    (q,) = [p for p in parameters if p["name"] == "q"]
    assert q["required"] is True
