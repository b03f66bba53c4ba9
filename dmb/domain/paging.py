"""Page sizes and opaque cursors, the same for every list (followers, posts, comments, feed).

Lists are paged by keyset on time-ordered ids: the cursor holds the last id returned, so a page
never repeats or skips an item that existed when paging began, whatever is inserted meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from dmb.errors import InvalidArgument
from dmb.ids import ABOVE_EVERY_ID

DEFAULT_PAGE_SIZE = 20  # for page_size 0; the bounds (0..100) are the .protos' field rules
_PREFIX = "v1:"
# What encode_cursor writes: ASCII digits only (str.isdigit also takes '²' and '٣'), at most
# 19 of them; the .protos' cursor pattern says the same of the base64 text.
_CURSOR_TEXT = re.compile(r"v1:([0-9]{1,19})", re.ASCII)
_INVALID = "cursor is not valid: pass back a nextCursor unchanged"


@dataclass(frozen=True)
class Page:
    """A validated page request: how many items, and the id after which to continue."""

    size: int
    after: int | None

    @property
    def below(self) -> int:
        """Newest-first lists continue with ids below this one (the first page: below every id)."""
        return self.after if self.after is not None else ABOVE_EVERY_ID

    @property
    def above(self) -> int:
        """Oldest-first lists continue with ids above this one (the first page: above 0)."""
        return self.after if self.after is not None else 0


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor holds, or InvalidArgument for anything encode_cursor did not write."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii"))
        text = raw.decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidArgument(_INVALID) from None
    found = _CURSOR_TEXT.fullmatch(text)
    # Canonical base64 only (b64decode ignores stray low bits: 'djE6MN' reads as 'djE6MA'), so
    # exactly the strings of the .proto's cursor pattern decode.
    if found is None or base64.urlsafe_b64encode(raw).decode().rstrip("=") != cursor:
        raise InvalidArgument(_INVALID)
    # An id past every id continues from the top (newest-first) or finds nothing (oldest-first),
    # and stays a valid bigint.
    return min(int(found.group(1)), ABOVE_EVERY_ID)


def page_from(page_size: int, cursor: str) -> Page:
    """A request's page: `page_size` 0 means the default; an empty `cursor` the first page."""
    return Page(
        size=page_size or DEFAULT_PAGE_SIZE, after=decode_cursor(cursor) if cursor else None
    )


def next_cursor(ids: list[int], page: Page, fetched: int) -> str:
    """The cursor after `ids` when more items exist (`fetched` > page size), else empty."""
    return encode_cursor(ids[-1]) if fetched > page.size and ids else ""
