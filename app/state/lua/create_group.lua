--- Create a group: the key's rate limit and the account's quotas first, then the record, file states, both
--- indexes, the account's usage, the idempotency answer and the provisioning job.
-- KEYS: group, state, expiry_index, account_index, idempotency, bucket, limits, usage
-- ARGV: group_blob, session_id, created_ms, expires_ms, idle_expires_ms, key_ttl_ms, idem_value, idem_ttl_ms, default_rate, default_burst, max_groups, max_bytes, declared_bytes
-- JOBS: provision
-- REST: upload_ids
-- REPLY: every reply is {code, tokens left, retry ms, rate, burst, ...}: created | replay <stored idempotency
-- value> | collision | rate_limited | quota_exceeded <limit name> <limit> <current use>
-- KEYS.idempotency is '' when the request carried no Idempotency-Key. A group enters the expiry index at
-- idle_expires_ms: a group that gets no part-urls call expires early (mark_uploading moves it to expires_ms).
--! include enqueue
--! include ratelimit
local rl = take_token(K.bucket, K.limits, 'create', A.default_rate, A.default_burst)
local function answer(code, ...) return {code, rl[2], rl[3], rl[4], rl[5], ...} end
if rl[1] == 0 then return answer(${R.rate_limited}) end
if K.idempotency ~= '' then
  local seen = redis.call('GET', K.idempotency)
  if seen then return answer(${R.replay}, seen) end
end
if redis.call('EXISTS', K.group) == 1 then return answer(${R.collision}) end
local quota = redis.call('HMGET', K.limits, 'live_groups', 'live_bytes')
local used = redis.call('HMGET', K.usage, 'groups', 'bytes')
local max_groups = tonumber(quota[1] or A.max_groups)
local max_bytes = tonumber(quota[2] or A.max_bytes)
local groups, bytes = tonumber(used[1] or '0'), tonumber(used[2] or '0')
if groups + 1 > max_groups then return answer(${R.quota_exceeded}, 'liveGroups', max_groups, groups) end
if bytes + tonumber(A.declared_bytes) > max_bytes then
  return answer(${R.quota_exceeded}, 'liveBytes', string.format('%.0f', max_bytes), string.format('%.0f', bytes))
end
redis.call('HINCRBY', K.usage, 'groups', 1)
redis.call('HINCRBY', K.usage, 'bytes', A.declared_bytes)
local ttl = tonumber(A.key_ttl_ms)
redis.call('SET', K.group, A.group_blob, 'PX', ttl)
redis.call('HSET', K.state, ${F.status}, ${GROUP.initialized}, ${F.created}, A.created_ms, ${F.updated}, A.created_ms)
for _, uid in ipairs(A.upload_ids) do redis.call('HSET', K.state, ${FF.status} .. uid, ${FILE.initialized}) end
redis.call('PEXPIRE', K.state, ttl)
redis.call('ZADD', K.expiry_index, A.idle_expires_ms, A.session_id)
redis.call('ZADD', K.account_index, A.created_ms, A.session_id)
-- entries of groups whose keys are gone by now
redis.call('ZREMRANGEBYSCORE', K.account_index, '-inf', tonumber(A.created_ms) - ttl)
if K.idempotency ~= '' then redis.call('SET', K.idempotency, A.idem_value, 'PX', A.idem_ttl_ms) end
enqueue(J.provision)
return answer(${R.created})
