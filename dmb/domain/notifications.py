"""Notifications: written by the notifications consumer from the change events, read newest
first with likes of one post grouped, and marked read up to an id.

Kept in Postgres (migration 0008), so a Redis flush loses none. The handler is at-least-once
and idempotent: the unique key of `notifications` turns a replayed event into a no-op. It
writes nothing for the caller's own actions, nor when the recipient and the actor are in a
block either way or the recipient muted the actor (`HIDDEN_FROM_FEED`), nor when the subject is
already gone by the time the event is handled (a like taken back, a follow undone, a comment or
post deleted: the insert checks the row still exists). A like taken back later takes its
notification away (Unliked); a deleted post or comment takes its notifications with it
(ON DELETE CASCADE), as on Mastodon. Reads filter blocks and mutes again, so a block made after
the notification hides it at once.

Grouping is done at read time: a page item is one notification, or all likes of one post (its
id the newest like's, its actors the newest three, its count all of them). Pages are keyed on
the item's id; a new like moves its group to the top, above the cursor of a reader who is
paging, which then sees the group on its first page again rather than twice further down.
"""

from __future__ import annotations

from dataclasses import dataclass

from dmb.domain.identity import Caller
from dmb.domain.paging import Page, next_cursor
from dmb.domain.relationships import HIDDEN_FROM_FEED
from dmb.domain.timestamps import to_timestamp
from dmb.stores.change_events import (
    Commented,
    Followed,
    Liked,
    Mentioned,
    NotificationEvent,
    Unliked,
)
from dmb.stores.postgres import Database
from dmb.v1 import notifications_pb2 as pb

UNREAD_CAP = 100
GROUP_ACTORS = 3
KINDS = {
    "follow": pb.NOTIFICATION_KIND_FOLLOW,
    "like": pb.NOTIFICATION_KIND_LIKE,
    "comment": pb.NOTIFICATION_KIND_COMMENT,
    "mention": pb.NOTIFICATION_KIND_MENTION,
}
# Insert one notification unless it is the recipient's own action, the two are in a block or
# the recipient muted the actor, or the subject is gone (%(exists)s is an EXISTS(...) test).
_INSERT = (
    "INSERT INTO notifications (recipient_id, kind, actor_id, post_id, comment_id) "
    "SELECT %(reader)s, %(kind)s, %(actor)s, %(post)s, %(comment)s "
    "WHERE %(reader)s IS NOT NULL AND %(reader)s <> %(actor)s "
    f"AND %(actor)s NOT IN {HIDDEN_FROM_FEED} AND {{exists}} ON CONFLICT DO NOTHING"
)
# Notifications of %(reader)s still visible to them, grouped: one row per item.
_ITEMS = (
    "SELECT max(n.id) AS id, n.kind, "
    f"(array_agg(n.actor_id ORDER BY n.id DESC))[1:{GROUP_ACTORS}] AS actors, "
    "count(*) AS total, max(n.post_id) AS post_id, max(n.comment_id) AS comment_id, "
    "max(n.created_at) AS created_at FROM notifications n "
    f"WHERE n.recipient_id = %(reader)s AND n.actor_id NOT IN {HIDDEN_FROM_FEED} "
    "GROUP BY n.kind, CASE WHEN n.kind = 'like' THEN -n.post_id ELSE n.id END"
)
_UNREAD = (
    "SELECT count(*) FROM (SELECT 1 FROM notifications n "
    "WHERE n.recipient_id = %(reader)s AND n.id > COALESCE((SELECT last_read_id FROM "
    "notification_reads WHERE user_id = %(reader)s), 0) "
    f"AND n.actor_id NOT IN {HIDDEN_FROM_FEED} LIMIT {UNREAD_CAP}) unread"
)


@dataclass(frozen=True)
class NotificationPage:
    items: list[pb.Notification]
    next_cursor: str
    unread_count: int


class NotificationHandler:
    """What the notifications consumer does with each change event."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def handle(self, event: NotificationEvent) -> None:
        match event:
            case Followed(follower, followee):
                await self._insert(
                    "follow",
                    follower,
                    None,
                    None,
                    "EXISTS (SELECT 1 FROM follows WHERE follower_id = %(actor)s "
                    "AND followee_id = %(reader)s)",
                    recipient=followee,
                )
            case Liked(post_id, user_id):
                await self._insert(
                    "like",
                    user_id,
                    post_id,
                    None,
                    "EXISTS (SELECT 1 FROM likes WHERE post_id = %(post)s AND user_id = %(actor)s)",
                    recipient_of_post=post_id,
                )
            case Unliked(post_id, user_id):
                async with self._db.transaction() as conn:
                    await conn.execute(
                        "DELETE FROM notifications WHERE kind = 'like' AND post_id = %s "
                        "AND actor_id = %s AND NOT EXISTS (SELECT 1 FROM likes "
                        "WHERE post_id = %s AND user_id = %s)",
                        (post_id, user_id, post_id, user_id),
                    )
            case Commented(comment_id, post_id, author_id):
                await self._insert(
                    "comment",
                    author_id,
                    post_id,
                    comment_id,
                    "EXISTS (SELECT 1 FROM comments WHERE id = %(comment)s)",
                    recipient_of_post=post_id,
                )
            case Mentioned(post_id, comment_id, author_id, mentioned_id):
                exists = (
                    "EXISTS (SELECT 1 FROM posts WHERE id = %(post)s)"
                    if comment_id is None
                    else "EXISTS (SELECT 1 FROM comments WHERE id = %(comment)s)"
                )
                await self._insert(
                    "mention", author_id, post_id, comment_id, exists, recipient=mentioned_id
                )

    async def _insert(
        self,
        kind: str,
        actor: int,
        post_id: int | None,
        comment_id: int | None,
        exists: str,
        recipient: int | None = None,
        recipient_of_post: int | None = None,
    ) -> None:
        reader = (
            "%(recipient)s::bigint"
            if recipient_of_post is None
            else "(SELECT author_id FROM posts WHERE id = %(post)s)"
        )
        sql = _INSERT.format(exists=exists).replace("%(reader)s", reader)
        async with self._db.transaction() as conn:
            await conn.execute(
                sql,
                {
                    "recipient": recipient,
                    "kind": kind,
                    "actor": actor,
                    "post": post_id,
                    "comment": comment_id,
                },
            )


class Notifications:
    """The notification service's reads and the read marker."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def page(self, caller: Caller, page: Page) -> NotificationPage:
        params = {"reader": caller.user_id, "below": page.below, "limit": page.size + 1}
        async with self._db.reading(for_user=caller.user_id) as conn:
            marker = await (
                await conn.execute(
                    "SELECT last_read_id FROM notification_reads WHERE user_id = %s",
                    (caller.user_id,),
                )
            ).fetchone()
            last_read = int(marker[0]) if marker else 0
            cursor = await conn.execute(
                f"SELECT * FROM ({_ITEMS}) items WHERE id < %(below)s "
                "ORDER BY id DESC LIMIT %(limit)s",
                params,
            )
            rows = await cursor.fetchall()
            unread = await (await conn.execute(_UNREAD, params)).fetchone()
        shown = rows[: page.size]
        items = [
            pb.Notification(
                id=int(item_id),
                kind=KINDS[str(kind)],
                actor_ids=[int(actor) for actor in actors],
                actor_count=int(total),
                post_id=int(post_id or 0),
                comment_id=int(comment_id or 0),
                created_at=to_timestamp(created_at),
                unread=int(item_id) > last_read,
            )
            for item_id, kind, actors, total, post_id, comment_id, created_at in shown
        ]
        return NotificationPage(
            items=items,
            next_cursor=next_cursor([int(row[0]) for row in shown], page, len(rows)),
            unread_count=int(unread[0]) if unread else 0,
        )

    async def mark_read(self, caller: Caller, up_to_id: int) -> int:
        """Move the caller's read marker up to `up_to_id` (an id above the newest notification
        counts as the newest, so no future notification is read before it exists); never back.
        The unread count afterwards."""
        params = {"reader": caller.user_id, "up_to": up_to_id}
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO notification_reads (user_id, last_read_id) "
                "SELECT %(reader)s, LEAST(%(up_to)s::bigint, newest) "
                "FROM (SELECT COALESCE(max(id), 0) AS newest FROM notifications "
                "WHERE recipient_id = %(reader)s) n "
                "ON CONFLICT (user_id) DO UPDATE SET last_read_id = GREATEST("
                "notification_reads.last_read_id, EXCLUDED.last_read_id)",
                params,
            )
            await self._db.remember_write(conn, caller.user_id)
            unread = await (await conn.execute(_UNREAD, params)).fetchone()
        return int(unread[0]) if unread else 0
