-- One more failed login for one account, and the account's lock for the backoff, atomically.
-- The first ARGV[1] failures in a window are free; each one after doubles the lock, from
-- ARGV[2] ms up to ARGV[3] ms (the same arithmetic as login_guard.backoff_ms).
-- KEYS[1]  failure counter; KEYS[2]  lock (a key whose remaining PX is the wait). One hash tag.
-- ARGV[4]  seconds without a failure after which the counter starts again.
-- Returns {failures so far, lock in ms (0: none)}.
local failures = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
local over = failures - tonumber(ARGV[1])
if over <= 0 then
  return {failures, 0}
end
local lock_ms = math.floor(math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ math.min(over - 1, 60)))
redis.call('SET', KEYS[2], '1', 'PX', lock_ms)
return {failures, lock_ms}
