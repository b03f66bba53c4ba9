"""The composition root of one process: settings, store clients and the domain objects, built
once and wired together here, nowhere else.

Every Serve replica and every pipeline actor is its own process; each asks `process_components()`
for what it needs (the posts service takes `posts`, the counter flusher `counters`, ...). Objects
are built on first use, so a process holds only what it uses, and shared ones (the store clients,
the token verifier) exist once per process however many users they have. The single-process
monolith (benchmarks/monolith.py) and the tests build a `Components` of their own the same way.
"""

from __future__ import annotations

import functools
import logging
import sys
from functools import cached_property

from dmb import gc_pauses, tracing
from dmb.domain.account_deletion import AccountDeletion
from dmb.domain.admission import Admission
from dmb.domain.counters import Counters
from dmb.domain.feed import AuthorPosts, FeedWriter, HomeFeed, SetRebuilder
from dmb.domain.feed_events import FanoutPort, FeedEventHandler
from dmb.domain.follows import CelebrityRule, FollowerBatches, FollowGraph
from dmb.domain.identity import AccessTokenIssuer, TokenVerifier
from dmb.domain.login_guard import LoginGuard
from dmb.domain.notifications import NotificationHandler, Notifications
from dmb.domain.posts import Posts
from dmb.domain.relationships import Relationships
from dmb.domain.revocation import Revocations
from dmb.domain.user_search import UserSearch
from dmb.domain.users import UserAccounts
from dmb.settings import Settings, load_settings
from dmb.stores.clients import StoreClients
from dmb.stores.health import StoreHealth


class Components:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- stores ------------------------------------------------------------------------------

    @cached_property
    def stores(self) -> StoreClients:
        return StoreClients(self.settings)

    async def ready(self) -> None:
        """Open the store clients (once; called before every request, a no-op afterwards)."""
        await self.stores.ready()

    async def close(self) -> None:
        if "health" in self.__dict__:
            await self.health.close()
        if "stores" in self.__dict__:
            await self.stores.close()

    @cached_property
    def health(self) -> StoreHealth:
        return StoreHealth(self.settings, self.stores.redis, self.stores.db)

    # -- identity and admission --------------------------------------------------------------

    @cached_property
    def revocations(self) -> Revocations:
        return Revocations(self.settings, self.stores.db, self.stores.redis)

    @cached_property
    def verifier(self) -> TokenVerifier:
        return TokenVerifier(self.settings, self.stores.redis, self.revocations)

    @cached_property
    def admission(self) -> Admission:
        return Admission(self.settings, self.stores.redis)

    @cached_property
    def accounts(self) -> UserAccounts:
        issuer = AccessTokenIssuer(self.settings)
        guard = LoginGuard(self.settings, self.stores.redis)
        return UserAccounts(
            self.settings, self.stores.db, self.stores.redis, issuer, guard, self.revocations
        )

    @cached_property
    def account_deletion(self) -> AccountDeletion:
        guard = LoginGuard(
            self.settings, self.stores.redis, scope="close-account", attempts="wrong passwords"
        )
        return AccountDeletion(
            self.settings, self.stores.db, self.counters, self.revocations, guard
        )

    @cached_property
    def user_search(self) -> UserSearch:
        return UserSearch(self.stores.db)

    # -- follows, posts, counters ------------------------------------------------------------

    @cached_property
    def celebrities(self) -> CelebrityRule:
        return CelebrityRule(self.settings.celebrity_threshold)

    @cached_property
    def relationships(self) -> Relationships:
        return Relationships(self.stores.db)

    @cached_property
    def follow_graph(self) -> FollowGraph:
        return FollowGraph(self.stores.db, self.celebrities)

    @cached_property
    def counters(self) -> Counters:
        return Counters(self.stores.db, self.stores.redis)

    @cached_property
    def posts(self) -> Posts:
        return Posts(self.stores.db, self.counters)

    # -- notifications -----------------------------------------------------------------------

    @cached_property
    def notifications(self) -> Notifications:
        return Notifications(self.stores.db)

    @cached_property
    def notification_handler(self) -> NotificationHandler:
        return NotificationHandler(self.stores.db)

    # -- the feed ----------------------------------------------------------------------------

    @cached_property
    def feed_writer(self) -> FeedWriter:
        return FeedWriter(self.stores.redis, self.settings.feed_max_length)

    @cached_property
    def _rebuilder(self) -> SetRebuilder:
        return SetRebuilder(self.stores.db, self.stores.redis, self.settings.feed_ttl_seconds)

    @cached_property
    def author_posts(self) -> AuthorPosts:
        return AuthorPosts(self.stores.redis, self._rebuilder, self.settings.feed_max_length)

    @cached_property
    def home_feed(self) -> HomeFeed:
        return HomeFeed(
            self.stores.db,
            self.stores.redis,
            self.posts,
            self.author_posts,
            self._rebuilder,
            self.celebrities,
            self.settings.feed_max_length,
        )

    def feed_event_handler(self, fanout: FanoutPort) -> FeedEventHandler:
        """The handler of the feed's change events, handing batches to `fanout`."""
        return FeedEventHandler(
            self.stores.db,
            self.feed_writer,
            self.author_posts,
            FollowerBatches(self.stores.db, self.settings.fanout_batch_size),
            self.celebrities,
            fanout,
            FollowerBatches(
                self.stores.db, self.settings.fanout_batch_size, table="departed_followers"
            ),
        )


LOG_FORMAT = "%(levelname)s %(name)s request_id=%(request_id)s: %(message)s"
TRACED_LOG_FORMAT = (
    "%(levelname)s %(name)s request_id=%(request_id)s trace_id=%(trace_id)s: %(message)s"
)


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time: in a Serve replica, Serve redirects it
    into the replica's log file (after our handler may have been made); elsewhere, the
    worker's log, which Ray streams to the driver."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _: object) -> None:
        pass


def configure_logging(settings: Settings) -> None:
    """Our loggers at DMB_LOG_LEVEL, each line with its request id (and trace id when tracing
    is on): one handler on the `dmb` logger, installed once per process."""
    logger = logging.getLogger("dmb")
    logger.setLevel(settings.log_level)
    if any(isinstance(handler, _CurrentStderr) for handler in logger.handlers):
        return
    handler = _CurrentStderr()
    handler.addFilter(tracing.RequestIdFilter())
    handler.setFormatter(logging.Formatter(TRACED_LOG_FORMAT if tracing.enabled() else LOG_FORMAT))
    logger.addHandler(handler)
    logger.propagate = False  # one line per record, not a second one from the root's handlers


@functools.cache
def process_components() -> Components:
    """This process's one `Components`, from the DMB_* environment (the only place a Ray worker
    reads its settings); also sets up the process's tracing and logging, once."""
    settings = load_settings()
    tracing.configure(settings)
    configure_logging(settings)
    components = Components(settings)
    tame_garbage_collection(settings)
    return components


def tame_garbage_collection(settings: Settings) -> None:
    """Freeze what the process built so far (Ray, our modules) out of full collections, then
    time the collections that are left (dmb.gc_pauses). Once per process, at the end of its
    set-up: the freeze's own collection is a start-up cost, not a request's."""
    if settings.gc_freeze:
        frozen = gc_pauses.freeze_startup_heap()
        logging.getLogger("dmb.gc").info("gc: froze %d start-up objects", frozen)
    if settings.gc_slow_pause_ms:
        gc_pauses.PauseWatch(
            slow_seconds=settings.gc_slow_pause_ms / 1000, refreeze=settings.gc_freeze
        ).install()
