"""`@username` mentions: found in a post's or comment's text and resolved to accounts at write
time, in the writing transaction (migration 0008's `mentions`), so that a later rename or a new
account of that name never changes who was mentioned.

A mention is `@` and a username (`^[a-z0-9_]{3,32}$`, matched case-insensitively, as Mastodon
does) not preceded by a username character (so `me@example.com` mentions nobody) nor followed by
one (so `@` and 33 letters is not a cut-down mention). At most `MAX_MENTIONS` distinct names per
text count, in order of appearance; unknown names and the author's own are left out.
"""

from __future__ import annotations

import re

from dmb.stores.postgres import AsyncConn

MAX_MENTIONS = 10
_MENTION = re.compile(r"(?<![a-z0-9_@])@([a-z0-9_]{3,32})(?![a-z0-9_@])", re.IGNORECASE | re.ASCII)


def mentioned_usernames(text: str, limit: int = MAX_MENTIONS) -> list[str]:
    """The distinct usernames `text` mentions, lower-cased, first `limit` in order of appearance."""
    names: list[str] = []
    for match in _MENTION.finditer(text):
        name = match.group(1).lower()
        if name not in names:
            names.append(name)
            if len(names) == limit:
                break
    return names


async def record_mentions(
    conn: AsyncConn, text: str, author_id: int, post_id: int, comment_id: int | None = None
) -> list[int]:
    """Resolve the text's mentions to existing accounts (not the author) and store them; the
    mentioned ids in order of appearance. One statement, inside the caller's transaction."""
    names = mentioned_usernames(text)
    if not names:
        return []
    cursor = await conn.execute(
        "WITH named AS (SELECT u.id, n.ord FROM unnest(%(names)s::text[]) WITH ORDINALITY "
        "AS n(name, ord) JOIN users u ON u.username = n.name WHERE u.id <> %(author)s), "
        "stored AS (INSERT INTO mentions (post_id, comment_id, author_id, mentioned_id) "
        "SELECT %(post)s, %(comment)s, %(author)s, id FROM named ORDER BY ord "
        "ON CONFLICT DO NOTHING) "
        "SELECT id FROM named ORDER BY ord",
        {"names": names, "author": author_id, "post": post_id, "comment": comment_id},
    )
    return [int(row[0]) for row in await cursor.fetchall()]
