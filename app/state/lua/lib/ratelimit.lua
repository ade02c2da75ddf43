-- A token bucket per API key and route class, refilled continuously; Redis's clock, so every API process
-- shares one bucket. The account's own rate/burst (`rate:<class>`, `burst:<class>` in its limits hash)
-- override the defaults; a rate of 0 means unlimited.
-- A request takes `cost` tokens (the work it causes: URLs signed, files refreshed, parts handed to storage),
-- all or none. A cost over the burst can never be paid: with `capped` it is charged the burst instead (the
-- request waits for a full bucket), otherwise it is refused with a retry of -1 (never).
-- Returns allowed (1/0), tokens left (floored), ms until the cost is back when refused, rate, burst.
local function take_tokens(bucket_key, limits_key, class, default_rate, default_burst, cost, capped)
  local over = redis.call('HMGET', limits_key, 'rate:' .. class, 'burst:' .. class)
  local rate = tonumber(over[1] or default_rate)
  local burst = tonumber(over[2] or default_burst)
  if rate <= 0 then return {1, burst, 0, rate, burst} end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local held = redis.call('HMGET', bucket_key, 'tk', 'ts')
  local tokens = tonumber(held[1]) or burst
  local since = tonumber(held[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - since) * rate / 1000)
  cost = tonumber(cost)
  if cost > burst then
    if capped ~= '1' then return {0, math.floor(tokens), -1, rate, burst} end
    cost = burst
  end
  local allowed, retry_ms = 0, 0
  if tokens >= cost then
    tokens = tokens - cost
    allowed = 1
  else
    retry_ms = math.ceil((cost - tokens) * 1000 / rate)
  end
  redis.call('HSET', bucket_key, 'tk', string.format('%.6f', tokens), 'ts', now)
  redis.call('PEXPIRE', bucket_key, math.ceil(burst * 1000 / rate) + 1000)  -- a full bucket needs no key
  return {allowed, math.floor(tokens), retry_ms, rate, burst}
end

local function take_token(bucket_key, limits_key, class, default_rate, default_burst)
  return take_tokens(bucket_key, limits_key, class, default_rate, default_burst, 1, '1')
end
