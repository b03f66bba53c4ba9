-- One token bucket, checked and charged atomically. The time comes from Redis itself, so
-- gateway replicas with skewed clocks still share one refill schedule.
-- KEYS[1] bucket hash; ARGV[1] capacity, ARGV[2] refill tokens per second, ARGV[3] cost.
-- Returns {allowed (0/1), tokens left, seconds until a token, seconds until full} as strings.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
local retry_after = 0
if allowed == 0 then
  retry_after = (cost - tokens) / rate
end
return {allowed, tostring(tokens), tostring(retry_after), tostring((capacity - tokens) / rate)}
