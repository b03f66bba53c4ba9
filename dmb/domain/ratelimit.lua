-- Token buckets for one request, checked and charged atomically in ONE call: all or nothing.
-- A request passes only if every bucket holds `cost` tokens; then each bucket gives `cost`,
-- otherwise none does. The clock is Redis' own (TIME), so gateway replicas with skewed clocks
-- share one refill schedule. Same arithmetic as buckets.py (refill, take_all).
-- KEYS[i]  bucket hash {tokens, at (microseconds)}; all KEYS share one hash tag (Redis Cluster).
-- ARGV[1]  cost; ARGV[2i], ARGV[2i+1]  capacity and refill tokens per second of KEYS[i].
-- Returns {allowed (0/1), then per bucket: tokens left, seconds until `cost` tokens, seconds
-- until full} (fractions as strings: Redis truncates Lua numbers to integers).
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local cost = tonumber(ARGV[1])
local levels, capacities, rates = {}, {}, {}
local allowed = 1
for i = 1, #KEYS do
  local capacity = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1])
  local stored = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local tokens, at = tonumber(stored[1]), tonumber(stored[2])
  local level = capacity
  if tokens ~= nil and at ~= nil then
    level = math.min(capacity, tokens + math.max(0, now_us - at) / 1000000 * rate)
  end
  levels[i], capacities[i], rates[i] = level, capacity, rate
  if level < cost then
    allowed = 0
  end
end
local reply = {allowed}
for i = 1, #KEYS do
  local left = levels[i]
  if allowed == 1 then
    left = left - cost
  end
  local until_full = (capacities[i] - left) / rates[i]
  -- %.17g round-trips a double exactly: no rounding can mint a token.
  redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', left), 'at', string.format('%.0f', now_us))
  -- Gone once it would be full again: a missing bucket reads as full, so nothing is lost.
  redis.call('PEXPIRE', KEYS[i], math.ceil(until_full * 1000) + 1000)
  reply[#reply + 1] = string.format('%.6f', left)
  reply[#reply + 1] = string.format('%.6f', math.max(0, cost - left) / rates[i])
  reply[#reply + 1] = string.format('%.6f', until_full)
end
return reply
