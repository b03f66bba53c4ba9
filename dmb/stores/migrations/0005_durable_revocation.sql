-- Revocation lives in Postgres, not only in Redis: a FLUSHALL, a failover or an eviction
-- (ElastiCache under `volatile-lru` evicts keys that have a TTL, which every denylist entry
-- has) must not bring a logged-out access token back. Redis keeps only a cache of this table
-- (dmb.domain.revocation). `expires_at` is the token's `exp` plus the verifier's leeway: until
-- then some verifier still accepts the token's signature, so the row must stay; afterwards it
-- is pruned (Revocations.prune, run by the counter flusher's loop).
CREATE TABLE revoked_access_tokens (
    jti        text PRIMARY KEY,
    user_id    bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_access_tokens_expires_idx ON revoked_access_tokens (expires_at);

-- Refresh tokens were already durable (refresh_tokens.revoked_at); what they lacked was a way
-- out: rows past their expiry are pruned by the same job, which this index keeps cheap.
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);
