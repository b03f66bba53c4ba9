-- Mentions and notifications (issue 15 item 5), dmb/domain/mentions.py and notifications.py.
--
-- A mention is resolved at write time, in the post's or comment's transaction: one row per
-- mentioned account (at most 10 per text), gone with the post or comment. The notifications
-- consumer (actors/notification_consumer.py) reads follows, likes, comments and mentions from
-- CDC and writes `notifications`; its unique key makes a replayed event a no-op, and the foreign
-- keys take a notification away with its post, comment or either account.
CREATE TABLE mentions (
    id           bigint PRIMARY KEY DEFAULT dmb_next_id(),
    post_id      bigint NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    comment_id   bigint REFERENCES comments (id) ON DELETE CASCADE,  -- NULL: in the post itself
    author_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    mentioned_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX mentions_once_idx ON mentions (post_id, COALESCE(comment_id, 0), mentioned_id);
CREATE INDEX mentions_comment_idx ON mentions (comment_id) WHERE comment_id IS NOT NULL;
CREATE INDEX mentions_mentioned_idx ON mentions (mentioned_id);

CREATE TABLE notifications (
    id           bigint PRIMARY KEY DEFAULT dmb_next_id(),
    recipient_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         text NOT NULL,
    actor_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    post_id      bigint REFERENCES posts (id) ON DELETE CASCADE,
    comment_id   bigint REFERENCES comments (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_kind CHECK (kind IN ('follow', 'like', 'comment', 'mention')),
    CONSTRAINT notifications_not_self CHECK (recipient_id <> actor_id)
);
-- One notification per recipient, kind, actor and subject: what makes a replay idempotent.
CREATE UNIQUE INDEX notifications_once_idx ON notifications
    (recipient_id, kind, actor_id, COALESCE(post_id, 0), COALESCE(comment_id, 0));
CREATE INDEX notifications_recipient_idx ON notifications (recipient_id, id DESC);
CREATE INDEX notifications_actor_idx ON notifications (actor_id);
CREATE INDEX notifications_post_idx ON notifications (post_id) WHERE post_id IS NOT NULL;
CREATE INDEX notifications_comment_idx ON notifications (comment_id) WHERE comment_id IS NOT NULL;

-- The newest notification id each user has read: unread = the ids above it.
CREATE TABLE notification_reads (
    user_id      bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    last_read_id bigint NOT NULL DEFAULT 0
);

-- CDC: a deleted like must name its post and liker (the primary key does), a comment its post
-- and author for the record key; mentions are only inserted (and cascade away).
ALTER TABLE comments REPLICA IDENTITY FULL;
