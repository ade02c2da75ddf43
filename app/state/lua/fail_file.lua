--- The assembled object is wrong: the file fails and, with a live group, the whole group fails (the set can
--- never complete): its other unfinished files fail with it, and its storage is purged.
-- KEYS: state, group, expiry_index, usage, ended, trim
-- ARGV: upload_id, now_ms, reason, retention_ms, session_id, declared_bytes, account, ended_cap
-- JOBS: purge, late_purge
-- REST: upload_ids
-- REPLY: ok | stale
--! include enqueue
--! include lifecycle
--! include usage
local field = ${FF.status} .. A.upload_id
if redis.call('HGET', K.state, field) ~= ${FILE.completing} then return {${R.stale}} end
redis.call('HSET', K.state, field, ${FILE.failed}, ${FF.reason} .. A.upload_id, A.reason, ${F.updated}, A.now_ms)
local st = redis.call('HGET', K.state, ${F.status})
if live(st) then
  for _, uid in ipairs(A.upload_ids) do
    local other = ${FF.status} .. uid
    if uid ~= A.upload_id and not SETTLED_FILE[redis.call('HGET', K.state, other)] then
      redis.call('HSET', K.state, other, ${FILE.failed}, ${FF.reason} .. uid, ${WHY.group_failed})
    end
  end
  redis.call('HSET', K.state, ${F.status}, ${GROUP.failed}, ${F.failed}, A.now_ms)
  redis.call('ZREM', K.expiry_index, A.session_id)
  release_usage(K.usage, A.declared_bytes)
  note_ended(K.ended, K.trim, A.account, A.session_id, A.now_ms, A.retention_ms, A.ended_cap)
  redis.call('PEXPIRE', K.state, A.retention_ms)
  redis.call('PEXPIRE', K.group, A.retention_ms)
  enqueue(J.purge)
  enqueue(J.late_purge)
end
return {${R.ok}}
