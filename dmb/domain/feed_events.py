"""What the feed does with each change event from Kafka (Debezium envelopes from the CDC relay).

- post created: celebrity author -> only the author's recent set; otherwise the author's set and
  every follower's feed, followers paged from Postgres in batches handed to the fan-out pool;
- post deleted: out of the author's set and every follower's feed;
- follow: the followee's recent posts merged into the follower's feed (not for celebrities,
  whose posts are read at request time); unfollow: those posts removed again.
Every write is idempotent, so replaying an event after a crash is harmless.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from dmb.domain import follows
from dmb.domain.feed import FeedWriter, HomeFeed
from dmb.settings import Settings
from dmb.stores.postgres import Database

# (operation, post id, follower ids) -> awaited until every batch is written
SubmitBatches = Callable[[str, int, list[list[int]]], Awaitable[None]]
ADD = "add"
REMOVE = "remove"


class FeedEventHandler:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        writer: FeedWriter,
        home: HomeFeed,
        submit: SubmitBatches,
    ) -> None:
        self._settings = settings
        self._db = db
        self._writer = writer
        self._home = home
        self._submit = submit

    async def handle(self, topic: str, envelope: dict[str, Any]) -> None:
        table = topic.rsplit(".", 1)[-1]
        op = envelope.get("op")
        if table == "posts" and op == "c":
            await self.post_created(envelope["after"])
        elif table == "posts" and op == "d":
            await self.post_deleted(envelope["before"])
        elif table == "follows" and op == "c":
            await self.followed(envelope["after"])
        elif table == "follows" and op == "d":
            await self.unfollowed(envelope["before"])

    async def post_created(self, row: dict[str, Any]) -> None:
        post_id, author = int(row["id"]), int(row["author_id"])
        await self._writer.add_author_post(author, post_id)
        if await self._is_celebrity(author):
            return
        await self._submit(ADD, post_id, await self._follower_batches(author))

    async def post_deleted(self, row: dict[str, Any]) -> None:
        post_id, author = int(row["id"]), int(row["author_id"])
        await self._writer.remove_author_post(author, post_id)
        await self._submit(REMOVE, post_id, await self._follower_batches(author))

    async def followed(self, row: dict[str, Any]) -> None:
        follower, followee = int(row["follower_id"]), int(row["followee_id"])
        if await self._is_celebrity(followee):
            return
        await self._writer.merge(follower, await self._home.ensure_author_set(followee))

    async def unfollowed(self, row: dict[str, Any]) -> None:
        follower, followee = int(row["follower_id"]), int(row["followee_id"])
        recent: Sequence[int] = await self._home.ensure_author_set(followee)
        await self._writer.remove_from_feeds(list(recent), [follower])

    async def _is_celebrity(self, user_id: int) -> bool:
        async with self._db.reading() as conn:
            cursor = await conn.execute(
                "SELECT follower_count >= %s FROM user_stats WHERE user_id = %s",
                (self._settings.celebrity_threshold, user_id),
            )
            row = await cursor.fetchone()
        return bool(row and row[0])

    async def _follower_batches(self, author: int) -> list[list[int]]:
        batches: list[list[int]] = []
        after: int | None = None
        size = self._settings.fanout_batch_size
        while True:
            page = await follows.follower_ids_page(self._db, author, after, size)
            if not page:
                return batches
            batches.append([follower for _, follower in page])
            after = page[-1][0]
            if len(page) < size:
                return batches
