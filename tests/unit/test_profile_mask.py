"""The AIP-134 update mask of PATCH /v1/users/me: the rules declared on the field (checked by
protovalidate at the boundary), the columns a valid mask names, and the pattern published."""

from __future__ import annotations

import re

import pytest
from google.protobuf import field_mask_pb2

from dmb.domain.users import PROFILE_FIELDS, masked_profile_fields
from dmb.errors import InvalidFields
from dmb.v1 import users_pb2 as pb
from serve_apps import validation
from serve_apps.gateway import constraints


def _request(*paths: str) -> pb.UpdateProfileRequest:
    return pb.UpdateProfileRequest(
        profile=pb.Profile(bio="x"), update_mask=field_mask_pb2.FieldMask(paths=list(paths))
    )


def test_star_names_every_profile_field() -> None:
    assert masked_profile_fields(["*"]) == list(PROFILE_FIELDS)


def test_paths_come_back_in_a_fixed_order() -> None:
    assert masked_profile_fields(["bio", "display_name"]) == ["display_name", "bio"]


@pytest.mark.parametrize("paths", [("bio",), ("display_name", "bio"), ("*",)])
def test_valid_masks_pass_the_boundary(paths: tuple[str, ...]) -> None:
    validation.check(_request(*paths))


@pytest.mark.parametrize(
    "paths", [(), ("email",), ("bio", "username"), ("*", "bio"), ("display_name.x",)]
)
def test_unknown_empty_or_mixed_masks_are_refused_at_the_boundary(paths: tuple[str, ...]) -> None:
    with pytest.raises(InvalidFields) as refused:
        validation.check(_request(*paths))
    assert any(v.field == "update_mask" for v in refused.value.violations)


def test_the_published_pattern_says_the_same() -> None:
    field = pb.UpdateProfileRequest.DESCRIPTOR.fields_by_name["update_mask"]
    pattern = re.compile(constraints.field_mask_keywords(constraints.rules_of(field))["pattern"])
    for good in ("bio", "displayName", "displayName,bio", "*"):
        assert pattern.fullmatch(good), good
    for bad in ("", "email", "*,bio", "display_name", "bio,"):
        assert not pattern.fullmatch(bad), bad
