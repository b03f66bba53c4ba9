"""Finding people: accounts whose username or display name starts with what was typed.

Matching is by prefix, case-insensitive (usernames are lower case already; display names are
compared lowered), written as a "C"-collation range (`prefix_range`). Every account has up to
two entries, its username and its lowered display name; the results are the entries that start
with the query, in (text, id) order, so an exact username comes first and an account matched
by its username is not listed again for its display name. Each kind of entry is one btree
range (migration 0004) read in that order, and the two are merged under the LIMIT: a page
costs about the same whether the prefix matches ten accounts or a hundred thousand
(`benchmarks/user_search.py` prints the plan and the timings).

The cursor is the last entry of the page: the account's id and which of its texts it was
(`123u`, `123d`); the next page starts after that entry's (text, id).
"""

from __future__ import annotations

import re

from dmb.domain.paging import DEFAULT_PAGE_SIZE
from dmb.domain.relationships import HIDDEN_BY_BLOCKS
from dmb.domain.users import USER_COLUMNS, user_message
from dmb.errors import InvalidArgument
from dmb.ids import ABOVE_EVERY_ID
from dmb.stores.postgres import Database
from dmb.v1 import resources_pb2

_BY_USERNAME = 'username COLLATE "C"'
_BY_DISPLAY_NAME = 'lower(display_name) COLLATE "C"'
SEARCH_SQL = f"""
(SELECT {USER_COLUMNS}, {_BY_USERNAME} AS entry, 'u' AS kind FROM users
  WHERE ({_BY_USERNAME}, id) > (%(text)s, %(id)s) AND {_BY_USERNAME} < %(high)s
    AND id NOT IN {HIDDEN_BY_BLOCKS}
  ORDER BY {_BY_USERNAME}, id LIMIT %(limit)s)
UNION ALL
(SELECT {USER_COLUMNS}, {_BY_DISPLAY_NAME}, 'd' FROM users
  WHERE ({_BY_DISPLAY_NAME}, id) > (%(text)s, %(id)s) AND {_BY_DISPLAY_NAME} < %(high)s
    AND NOT ({_BY_USERNAME} >= %(low)s AND {_BY_USERNAME} < %(high)s)
    AND id NOT IN {HIDDEN_BY_BLOCKS}
  ORDER BY {_BY_DISPLAY_NAME}, id LIMIT %(limit)s)
ORDER BY entry, id LIMIT %(limit)s
"""
_CURSOR = re.compile(r"([1-9][0-9]{0,18})([ud])", re.ASCII)
_LAST_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def prefix_range(typed: str) -> tuple[str, str]:
    """The texts that start with `typed` (lowered), as the "C"-collation range [low, high).

    Written as a range rather than `LIKE 'ada%'`: Postgres turns LIKE into an index range only
    when it plans for a known pattern, and a pooled connection that prepares the statement can
    settle on a generic plan that scans the whole index under the LIMIT (measured: 150 ms a
    page at a million accounts instead of a few). "C" compares UTF-8 bytes, which orders like
    code points, so `high` is `low` with its last code point raised by one (a last U+10FFFF is
    dropped and the one before raised instead)."""
    low = typed.lower()
    stem = low
    while stem and ord(stem[-1]) == _LAST_CODE_POINT:
        stem = stem[:-1]
    if not stem:  # nothing but U+10FFFF: above every text a field can hold
        return low, chr(_LAST_CODE_POINT) * 400
    following = ord(stem[-1]) + 1
    if following in _SURROGATES:
        following = _SURROGATES.stop
    return low, stem[:-1] + chr(following)


def search_parameters(
    low: str, high: str, after: tuple[str, int], limit: int, reader: int = 0
) -> dict[str, str | int]:
    """SEARCH_SQL's parameters. Each range starts at ONE row bound, (text, id) > (start): with
    `text >= low` beside a row comparison, Postgres' btree may take the row comparison's weaker
    bound as the start and walk every entry below the prefix (measured: ~2,500 pages read for a
    page of nothing). The start is the cursor's entry, or (low, 0) where that is further on."""
    text, entry_id = max(after, (low, 0))
    return {
        "low": low,
        "high": high,
        "text": text,
        "id": entry_id,
        "limit": limit,
        "reader": reader,  # accounts in a block with the reader are left out
    }


def parse_cursor(cursor: str) -> tuple[int, str]:
    """(account id, entry kind) of a cursor; the .proto's pattern says which strings are one."""
    found = _CURSOR.fullmatch(cursor)
    if found is None:
        raise InvalidArgument("cursor is not valid: pass back a nextCursor unchanged")
    return min(int(found.group(1)), ABOVE_EVERY_ID), found.group(2)


class UserSearch:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def search(
        self, query: str, page_size: int, cursor: str, reader: int = 0
    ) -> tuple[list[resources_pb2.User], str]:
        """One page of matches and the cursor of the next ("" on the last page)."""
        size = page_size or DEFAULT_PAGE_SIZE
        low, high = prefix_range(query)
        after_text, after_id = "", 0
        async with self._db.reading() as conn:
            if cursor:
                after_id, kind = parse_cursor(cursor)
                found = await conn.execute(
                    f"SELECT {_BY_USERNAME if kind == 'u' else _BY_DISPLAY_NAME} "
                    "FROM users WHERE id = %s",
                    (after_id,),
                )
                row = await found.fetchone()
                if row is None:  # the account that ended the last page is gone: start over
                    after_id = 0
                else:
                    after_text = str(row[0])
            rows = await (
                await conn.execute(
                    SEARCH_SQL,
                    search_parameters(low, high, (after_text, after_id), size + 1, reader),
                )
            ).fetchall()
        users = [user_message(row[:-2], with_email=False) for row in rows[:size]]
        more = len(rows) > size
        return users, f"{rows[size - 1][0]}{rows[size - 1][-1]}" if more else ""
