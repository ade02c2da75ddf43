--- Cancel a live group: its unfinished files and the group become 'canceled', storage is purged.
-- KEYS: state, group, expiry_index, usage, ended, trim
-- ARGV: now_ms, expires_ms, retention_ms, session_id, declared_bytes, account, ended_cap
-- JOBS: purge, late_purge
-- REST: upload_ids
-- REPLY: ok <canceledAt ms> <canceled file count> (also on repeats) | gone | expired | group_state <status>
--! include enqueue
--! include lifecycle
--! include usage
local st = redis.call('HGET', K.state, ${F.status})
if not st then return {${R.gone}} end
if st == ${GROUP.canceled} then
  return {${R.ok}, redis.call('HGET', K.state, ${F.canceled}), redis.call('HGET', K.state, ${F.canceled_files})}
end
if not live(st) then return {${R.group_state}, st} end
if tonumber(A.now_ms) >= tonumber(A.expires_ms) then return {${R.expired}} end
local n = 0
for _, uid in ipairs(A.upload_ids) do
  local field = ${FF.status} .. uid
  if not SETTLED_FILE[redis.call('HGET', K.state, field)] then
    redis.call('HSET', K.state, field, ${FILE.canceled})
    n = n + 1
  end
end
redis.call('HSET', K.state, ${F.status}, ${GROUP.canceled}, ${F.canceled}, A.now_ms, ${F.canceled_files}, n,
           ${F.updated}, A.now_ms)
redis.call('ZREM', K.expiry_index, A.session_id)
release_usage(K.usage, A.declared_bytes)
note_ended(K.ended, K.trim, A.account, A.session_id, A.now_ms, A.retention_ms, A.ended_cap)
redis.call('PEXPIRE', K.state, A.retention_ms)
redis.call('PEXPIRE', K.group, A.retention_ms)
enqueue(J.purge)
enqueue(J.late_purge)
return {${R.ok}, A.now_ms, tostring(n)}
