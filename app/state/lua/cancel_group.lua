--- Cancel a live group: its unfinished files and the group become 'canceled', storage is purged.
-- KEYS: state, group, expiry_index, completing_index, usage, ended, trim, tombstone, webhooks, events
-- ARGV: now_ms, expires_ms, retention_ms, session_id, declared_bytes, account, ended_cap, key_prefix, tombstone_ms
-- JOBS: purge, late_purge
-- REST: upload_ids
-- REPLY: ok <canceledAt ms> <canceled file count> (also on repeats) | gone | expired | group_state <status>
--! include enqueue
--! include lifecycle
--! include usage
--! include events
--! include end_group
local st = redis.call('HGET', key.state, ${field.status})
if not st then return {${reply.gone}} end
if st == ${group_status.canceled} then
  return {${reply.ok}, redis.call('HGET', key.state, ${field.canceled}), redis.call('HGET', key.state, ${field.canceled_files})}
end
if not live(st) then return {${reply.group_state}, st} end
if tonumber(arg.now_ms) >= tonumber(arg.expires_ms) then return {${reply.expired}} end
local n = 0
for _, uid in ipairs(arg.upload_ids) do
  local field = ${file_field.status} .. uid
  if not SETTLED_FILE[redis.call('HGET', key.state, field)] then
    redis.call('HSET', key.state, field, ${file_status.canceled})
    n = n + 1
  end
end
end_group({${field.status}, ${group_status.canceled}, ${field.canceled}, arg.now_ms, ${field.canceled_files}, n,
           ${field.updated}, arg.now_ms}, arg.retention_ms, ${group_status.canceled}, arg.upload_ids)
return {${reply.ok}, arg.now_ms, tostring(n)}
