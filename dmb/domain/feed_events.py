"""What the feed does with each change event (decoded from the CDC topics by the stores layer).

- post created: into the author's recent set; unless the author is a celebrity, also into every
  follower's feed: followers paged from Postgres in batches, handed to the fan-out port;
- post deleted: out of the author's set and every follower's feed;
- follow: the followee's recent posts merged into the follower's feed (not for celebrities,
  whose posts are read at request time); unfollow: those posts removed again;
- account deleted: its own feed and author set dropped, and its newest posts (the event carries
  them: the rows are gone) out of the feeds of the followers it had (`departed_followers`:
  the follows are gone too), which are then forgotten.
Every write is idempotent, so replaying an event after a crash is harmless.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

from dmb.domain.feed import AuthorPosts, FeedWriter
from dmb.domain.follows import CelebrityRule, FollowerBatches, forget_departed_followers
from dmb.stores.change_events import (
    AccountDeleted,
    FeedEvent,
    Followed,
    PostCreated,
    PostDeleted,
    Unfollowed,
)
from dmb.stores.postgres import Database

FanoutOp = Literal["add", "remove"]
ADD: FanoutOp = "add"
REMOVE: FanoutOp = "remove"


class FanoutPort(Protocol):
    """Writes posts into (or out of) many followers' feeds, a batch at a time (one post, but
    all of a deleted account's at once).

    Implemented by the actor layer's pool of fan-out workers (actors.fanout_pool); returns when
    every batch is written."""

    async def run(self, op: FanoutOp, post_ids: list[int], batches: list[list[int]]) -> None: ...


class FeedEventHandler:
    def __init__(
        self,
        db: Database,
        writer: FeedWriter,
        authors: AuthorPosts,
        followers: FollowerBatches,
        celebrities: CelebrityRule,
        fanout: FanoutPort,
        departed: FollowerBatches,
    ) -> None:
        self._db = db
        self._writer = writer
        self._authors = authors
        self._followers = followers
        self._celebrities = celebrities
        self._fanout = fanout
        self._departed = departed

    async def handle(self, event: FeedEvent) -> None:
        match event:
            case PostCreated(post_id, author):
                await self._writer.add_author_post(author, post_id)
                if not await self._is_celebrity(author):
                    await self._fan_out(ADD, [post_id], self._followers, author)
            case PostDeleted(post_id, author):
                await self._writer.remove_author_post(author, post_id)
                await self._fan_out(REMOVE, [post_id], self._followers, author)
            case Followed(follower, followee):
                if not await self._is_celebrity(followee):
                    await self._writer.merge(follower, await self._authors.recent(followee))
            case Unfollowed(follower, followee):
                recent = await self._authors.recent(followee)
                await self._writer.remove_from_feeds(recent, [follower])
            case AccountDeleted(user_id, post_ids):
                await self._writer.forget_user(user_id)
                await self._fan_out(REMOVE, list(post_ids), self._departed, user_id)
                await forget_departed_followers(self._db, user_id)

    async def _fan_out(
        self, op: FanoutOp, post_ids: list[int], followers: FollowerBatches, author: int
    ) -> None:
        """Every follower's batch to the port, each page of followers as soon as it is read;
        returns once all are written (an error in any is raised: the event is replayed)."""
        writes: list[asyncio.Future[None]] = []
        try:
            async for batches in followers.pages(author):
                writes.append(asyncio.ensure_future(self._fanout.run(op, post_ids, batches)))
        finally:  # a failed read still waits for the writes it started
            results = await asyncio.gather(*writes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _is_celebrity(self, user_id: int) -> bool:
        async with self._db.reading() as conn:
            return await self._celebrities.is_celebrity(conn, user_id)
