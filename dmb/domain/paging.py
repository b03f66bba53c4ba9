"""Page sizes and opaque cursors, the same for every list (followers, posts, comments, feed).

Lists are paged by keyset on time-ordered ids: the cursor holds the last id returned, so a page
never repeats or skips an item that existed when paging began, whatever is inserted meanwhile.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from dmb.errors import InvalidArgument
from dmb.ids import ABOVE_EVERY_ID

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_PREFIX = "v1:"


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
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidArgument("cursor is not valid: pass back a nextCursor unchanged") from None
    if not text.startswith(_PREFIX) or not text[len(_PREFIX) :].isdigit():
        raise InvalidArgument("cursor is not valid: pass back a nextCursor unchanged")
    return int(text[len(_PREFIX) :])


def page_from(page_size: int, cursor: str) -> Page:
    """Validate a request's `page_size` (0 means the default) and `cursor` (empty: first page)."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE_SIZE} (0 for default)")
    return Page(
        size=page_size or DEFAULT_PAGE_SIZE, after=decode_cursor(cursor) if cursor else None
    )


def next_cursor(ids: list[int], page: Page, fetched: int) -> str:
    """The cursor after `ids` when more items exist (`fetched` > page size), else empty."""
    return encode_cursor(ids[-1]) if fetched > page.size and ids else ""
