--- Expire one due group: it and its unfinished files become 'expired', storage is purged.
-- KEYS: state, group, expiry_index, usage, ended, trim
-- ARGV: now_ms, retention_ms, idle_retention_ms, session_id, declared_bytes, account, ended_cap
-- JOBS: purge, late_purge
-- REPLY: ok | not_due | gone | group_state <status>
-- Idempotent: sweeps racing on one group change it once. A group no longer live (or whose keys are
-- gone) just leaves the index, so the index never keeps dead entries.
--! include enqueue
--! include lifecycle
--! include usage
-- A group that never got a part-urls call (still 'initialized') is kept only idle_retention_ms after.
local st = redis.call('HGET', K.state, ${F.status})
if not st or not live(st) then
  redis.call('ZREM', K.expiry_index, A.session_id)
  if not st then return {${R.gone}} end
  return {${R.group_state}, st}
end
local due = redis.call('ZSCORE', K.expiry_index, A.session_id)
if due and tonumber(due) > tonumber(A.now_ms) then return {${R.not_due}} end
local fields = redis.call('HGETALL', K.state)
local prefix = ${FF.status}
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, #prefix) == prefix and not SETTLED_FILE[fields[i + 1]] then
    redis.call('HSET', K.state, fields[i], ${FILE.expired})
  end
end
local keep = A.retention_ms
if st == ${GROUP.initialized} then keep = A.idle_retention_ms end
redis.call('HSET', K.state, ${F.status}, ${GROUP.expired}, ${F.expired}, A.now_ms, ${F.updated}, A.now_ms)
redis.call('ZREM', K.expiry_index, A.session_id)
release_usage(K.usage, A.declared_bytes)
note_ended(K.ended, K.trim, A.account, A.session_id, A.now_ms, keep, A.ended_cap)
redis.call('PEXPIRE', K.state, keep)
redis.call('PEXPIRE', K.group, keep)
enqueue(J.purge)
enqueue(J.late_purge)
return {${R.ok}}
