-- A token bucket per API key and route class, refilled continuously; Redis's clock, so every API process
-- shares one bucket. The account's own rate/burst (`rate:<class>`, `burst:<class>` in its limits hash)
-- override the defaults; a rate of 0 means unlimited.
-- Returns allowed (1/0), tokens left (floored), ms until a token is back when refused, rate, burst.
local function take_token(bucket_key, limits_key, class, default_rate, default_burst)
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
  local allowed, retry_ms = 0, 0
  if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
  else
    retry_ms = math.ceil((1 - tokens) * 1000 / rate)
  end
  redis.call('HSET', bucket_key, 'tk', string.format('%.6f', tokens), 'ts', now)
  redis.call('PEXPIRE', bucket_key, math.ceil(burst * 1000 / rate) + 1000)  -- a full bucket needs no key
  return {allowed, math.floor(tokens), retry_ms, rate, burst}
end
