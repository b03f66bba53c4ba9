"""What the feed does with each change event (decoded from the CDC topics by the stores layer).

- post created: into the author's recent set; unless the author is a celebrity, also into every
  follower's feed: followers paged from Postgres in batches, handed to the fan-out port;
- post deleted: out of the author's set and every follower's feed;
- follow: the followee's recent posts merged into the follower's feed (not for celebrities,
  whose posts are read at request time); unfollow: those posts removed again.
Every write is idempotent, so replaying an event after a crash is harmless.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

from dmb.domain.feed import AuthorPosts, FeedWriter
from dmb.domain.follows import CelebrityRule, FollowerBatches
from dmb.stores.change_events import FeedEvent, Followed, PostCreated, PostDeleted, Unfollowed
from dmb.stores.postgres import Database

FanoutOp = Literal["add", "remove"]
ADD: FanoutOp = "add"
REMOVE: FanoutOp = "remove"


class FanoutPort(Protocol):
    """Writes one post into (or out of) many followers' feeds, a batch at a time.

    Implemented by the actor layer's pool of fan-out workers (actors.fanout_pool); returns when
    every batch is written."""

    async def run(self, op: FanoutOp, post_id: int, batches: list[list[int]]) -> None: ...


class FeedEventHandler:
    def __init__(
        self,
        db: Database,
        writer: FeedWriter,
        authors: AuthorPosts,
        followers: FollowerBatches,
        celebrities: CelebrityRule,
        fanout: FanoutPort,
    ) -> None:
        self._db = db
        self._writer = writer
        self._authors = authors
        self._followers = followers
        self._celebrities = celebrities
        self._fanout = fanout

    async def handle(self, event: FeedEvent) -> None:
        match event:
            case PostCreated(post_id, author):
                await self._writer.add_author_post(author, post_id)
                if not await self._is_celebrity(author):
                    await self._fan_out(ADD, post_id, author)
            case PostDeleted(post_id, author):
                await self._writer.remove_author_post(author, post_id)
                await self._fan_out(REMOVE, post_id, author)
            case Followed(follower, followee):
                if not await self._is_celebrity(followee):
                    await self._writer.merge(follower, await self._authors.recent(followee))
            case Unfollowed(follower, followee):
                recent = await self._authors.recent(followee)
                await self._writer.remove_from_feeds(recent, [follower])

    async def _fan_out(self, op: FanoutOp, post_id: int, author: int) -> None:
        """Every follower's batch to the port, each page of followers as soon as it is read;
        returns once all are written (an error in any is raised: the event is replayed)."""
        writes: list[asyncio.Future[None]] = []
        try:
            async for batches in self._followers.pages(author):
                writes.append(asyncio.ensure_future(self._fanout.run(op, post_id, batches)))
        finally:  # a failed read still waits for the writes it started
            results = await asyncio.gather(*writes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _is_celebrity(self, user_id: int) -> bool:
        async with self._db.reading() as conn:
            return await self._celebrities.is_celebrity(conn, user_id)
