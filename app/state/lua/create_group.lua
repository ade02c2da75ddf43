--- Create a group: the key's rate limit and the account's quotas first, then the record, file states, both
--- indexes, the account's usage and the idempotency answer. Storage is not touched: a file's multipart upload is
--- opened when it first needs URLs (app/uploads/provisioning.py), so a create that is canceled costs no storage call.
-- KEYS: group, state, expiry_index, account_index, idempotency, bucket, limits, usage
-- ARGV: group_blob, session_id, created_ms, expires_ms, idle_expires_ms, key_ttl_ms, idem_value, idem_ttl_ms, default_rate, default_burst, max_groups, max_bytes, declared_bytes
-- REST: upload_ids
-- REPLY: every reply is {code, tokens left, retry ms, rate, burst, ...}: created | replay <stored idempotency
-- value> | collision | rate_limited | quota_exceeded <limit name> <limit> <current use>
-- KEYS.idempotency is '' when the request carried no Idempotency-Key. A group enters the expiry index at
-- idle_expires_ms: a group that gets no part-urls call expires early (mark_uploading moves it to expires_ms).
--! include ratelimit
local rl = take_token(key.bucket, key.limits, 'create', arg.default_rate, arg.default_burst)
local function answer(code, ...) return {code, rl[2], rl[3], rl[4], rl[5], ...} end
if rl[1] == 0 then return answer(${reply.rate_limited}) end
if key.idempotency ~= '' then
  local seen = redis.call('GET', key.idempotency)
  if seen then return answer(${reply.replay}, seen) end
end
if redis.call('EXISTS', key.group) == 1 then return answer(${reply.collision}) end
local quota = redis.call('HMGET', key.limits, 'live_groups', 'live_bytes')
local used = redis.call('HMGET', key.usage, 'groups', 'bytes')
local max_groups = tonumber(quota[1] or arg.max_groups)
local max_bytes = tonumber(quota[2] or arg.max_bytes)
local groups, bytes = tonumber(used[1] or '0'), tonumber(used[2] or '0')
if groups + 1 > max_groups then return answer(${reply.quota_exceeded}, 'liveGroups', max_groups, groups) end
if bytes + tonumber(arg.declared_bytes) > max_bytes then
  return answer(${reply.quota_exceeded}, 'liveBytes', string.format('%.0f', max_bytes), string.format('%.0f', bytes))
end
redis.call('HINCRBY', key.usage, 'groups', 1)
redis.call('HINCRBY', key.usage, 'bytes', arg.declared_bytes)
local ttl = tonumber(arg.key_ttl_ms)
redis.call('SET', key.group, arg.group_blob, 'PX', ttl)
redis.call('HSET', key.state, ${field.status}, ${group_status.initialized}, ${field.created}, arg.created_ms, ${field.updated}, arg.created_ms)
for _, uid in ipairs(arg.upload_ids) do redis.call('HSET', key.state, ${file_field.status} .. uid, ${file_status.initialized}) end
redis.call('PEXPIRE', key.state, ttl)
redis.call('ZADD', key.expiry_index, arg.idle_expires_ms, arg.session_id)
redis.call('ZADD', key.account_index, arg.created_ms, arg.session_id)
-- entries of groups whose keys are gone by now
redis.call('ZREMRANGEBYSCORE', key.account_index, '-inf', tonumber(arg.created_ms) - ttl)
if key.idempotency ~= '' then redis.call('SET', key.idempotency, arg.idem_value, 'PX', arg.idem_ttl_ms) end
return answer(${reply.created})
