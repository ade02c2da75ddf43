--- Create a group: record, file states, both indexes, the idempotency answer and the provisioning job.
-- KEYS: group, state, expiry_index, account_index, idempotency
-- ARGV: group_blob, session_id, created_ms, expires_ms, key_ttl_ms, idem_value, idem_ttl_ms
-- JOBS: provision
-- REST: upload_ids
-- REPLY: created | replay <stored idempotency value> | collision
-- KEYS.idempotency is '' when the request carried no Idempotency-Key.
--! include enqueue
if K.idempotency ~= '' then
  local seen = redis.call('GET', K.idempotency)
  if seen then return {${R.replay}, seen} end
end
if redis.call('EXISTS', K.group) == 1 then return {${R.collision}} end
local ttl = tonumber(A.key_ttl_ms)
redis.call('SET', K.group, A.group_blob, 'PX', ttl)
redis.call('HSET', K.state, ${F.status}, ${GROUP.initialized}, ${F.created}, A.created_ms, ${F.updated}, A.created_ms)
for _, uid in ipairs(A.upload_ids) do redis.call('HSET', K.state, ${FF.status} .. uid, ${FILE.initialized}) end
redis.call('PEXPIRE', K.state, ttl)
redis.call('ZADD', K.expiry_index, A.expires_ms, A.session_id)
redis.call('ZADD', K.account_index, A.created_ms, A.session_id)
-- entries of groups whose keys are gone by now
redis.call('ZREMRANGEBYSCORE', K.account_index, '-inf', tonumber(A.created_ms) - ttl)
if K.idempotency ~= '' then redis.call('SET', K.idempotency, A.idem_value, 'PX', A.idem_ttl_ms) end
enqueue(J.provision)
return {${R.created}}
