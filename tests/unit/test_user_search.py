"""The search's prefix range and its cursors (pure logic)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmb.domain.user_search import parse_cursor, prefix_range
from dmb.errors import InvalidArgument


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("Ada", ("ada", "adb")), ("a_%", ("a_%", "a_&")), ("z\U0010ffff", ("z\U0010ffff", "{"))],
)
def test_prefix_range(typed: str, expected: tuple[str, str]) -> None:
    assert prefix_range(typed) == expected


texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)


@given(typed=texts.filter(bool), text=texts)
def test_the_range_holds_exactly_the_texts_with_the_prefix(typed: str, text: str) -> None:
    """Python compares str by code point, as "C" compares UTF-8 bytes."""
    low, high = prefix_range(typed)
    assert (low <= text < high) == text.startswith(typed.lower())


def test_cursors_name_an_account_and_the_entry_kind() -> None:
    assert parse_cursor("123u") == (123, "u")
    assert parse_cursor("9" * 19 + "d")[1] == "d"


@pytest.mark.parametrize("cursor", ["u", "0u", "12x", "12", " 12u", "\u0661\u0662u"])
def test_other_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_cursor(cursor)
