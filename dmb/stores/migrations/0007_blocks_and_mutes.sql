-- Blocks and mutes (issue 15 item 3), dmb/domain/relationships.py.
--
-- A block is mutual in effect: neither account sees the other in feeds, lists or search, the
-- blocked one cannot follow, like or comment on the blocker's posts, and the follows between
-- them go when the block is made (through CDC, like any unfollow). A mute only hides the muted
-- account's posts from the muter's home feed. `id` orders each list in time for cursors.
CREATE TABLE blocks (
    blocker_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id         bigint NOT NULL DEFAULT dmb_next_id(),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker_id, blocked_id),
    CONSTRAINT blocks_not_self CHECK (blocker_id <> blocked_id)
);
CREATE INDEX blocks_blocker_idx ON blocks (blocker_id, id DESC);  -- my blocks, newest first
CREATE INDEX blocks_blocked_idx ON blocks (blocked_id);           -- who blocked me

CREATE TABLE mutes (
    muter_id   bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    muted_id   bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id         bigint NOT NULL DEFAULT dmb_next_id(),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (muter_id, muted_id),
    CONSTRAINT mutes_not_self CHECK (muter_id <> muted_id)
);
CREATE INDEX mutes_muter_idx ON mutes (muter_id, id DESC);
