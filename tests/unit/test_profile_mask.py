"""The AIP-134 update mask of PATCH /v1/users/me: which columns it names, and what it refuses."""

from __future__ import annotations

import pytest

from dmb.domain.users import PROFILE_FIELDS, masked_profile_fields
from dmb.errors import InvalidArgument


def test_star_names_every_profile_field() -> None:
    assert masked_profile_fields(["*"]) == list(PROFILE_FIELDS)


def test_paths_come_back_in_a_fixed_order() -> None:
    assert masked_profile_fields(["bio", "display_name"]) == ["display_name", "bio"]
    assert masked_profile_fields([]) == []


@pytest.mark.parametrize("paths", [["email"], ["bio", "username"], ["*", "bio"]])
def test_unknown_or_mixed_paths_are_refused(paths: list[str]) -> None:
    with pytest.raises(InvalidArgument):
        masked_profile_fields(paths)
