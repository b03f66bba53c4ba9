-- Account deletion (issue 15 item 2).
--
-- `account_deletions` is both the record that an account is closed and the outbox the feed
-- pipeline acts on. The deleting transaction writes its row; the CDC relay captures it (topic
-- dmb.public.account_deletions) and the feed consumer takes `post_ids` (the account's newest
-- posts: the only ones any home feed can still hold, since feeds keep their newest entries)
-- out of the feeds of the followers listed in `departed_followers`, then clears those rows.
-- The row itself stays:
--   - every access token of the account is refused while its user id is here (ids are never
--     reused), whichever jti it carries: dmb.domain.revocation reads it on a cache miss;
--   - the username stays taken until `username_free_at` (DMB_USERNAME_HOLD_SECONDS), so nobody
--     can pose as the departed account to those who knew it.
CREATE TABLE account_deletions (
    user_id          bigint PRIMARY KEY,
    username         text NOT NULL,
    post_ids         bigint[] NOT NULL,
    deleted_at       timestamptz NOT NULL DEFAULT now(),
    username_free_at timestamptz NOT NULL
);
CREATE INDEX account_deletions_username_idx ON account_deletions (username, username_free_at);

-- The follows of the deleted account, as they were when it was deleted (same columns as
-- `follows`, so one paging query reads both): the follows themselves go with the account at
-- once (lists and counts change in the same transaction), but fanning its posts out of those
-- followers' feeds happens later, in the feed consumer, which must still know who they were.
CREATE TABLE departed_followers (
    followee_id bigint NOT NULL,
    follower_id bigint NOT NULL,
    id          bigint NOT NULL,
    PRIMARY KEY (followee_id, follower_id)
);
CREATE INDEX departed_followers_page_idx ON departed_followers (followee_id, id DESC);
