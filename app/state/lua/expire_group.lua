--- Expire one due group: it and its unfinished files become 'expired', storage is purged.
-- KEYS: state, group, expiry_index, completing_index, usage, ended, trim, tombstone, webhooks, events
-- ARGV: now_ms, retention_ms, idle_retention_ms, session_id, declared_bytes, account, ended_cap, key_prefix, tombstone_ms
-- JOBS: purge, late_purge
-- REPLY: ok | not_due | gone | group_state <status>
-- Idempotent: sweeps racing on one group change it once. A group no longer live (or whose keys are
-- gone) just leaves the index, so the index never keeps dead entries.
--! include enqueue
--! include lifecycle
--! include usage
--! include events
--! include end_group
-- A group that never got a part-urls call (still 'initialized') is kept only idle_retention_ms after.
local st = redis.call('HGET', key.state, ${field.status})
if not st or not live(st) then
  redis.call('ZREM', key.expiry_index, arg.session_id)
  if not st then return {${reply.gone}} end
  return {${reply.group_state}, st}
end
local due = redis.call('ZSCORE', key.expiry_index, arg.session_id)
if due and tonumber(due) > tonumber(arg.now_ms) then return {${reply.not_due}} end
local fields = redis.call('HGETALL', key.state)
local prefix = ${file_field.status}
local upload_ids = {}
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, #prefix) == prefix then
    upload_ids[#upload_ids + 1] = string.sub(fields[i], #prefix + 1)
    if not SETTLED_FILE[fields[i + 1]] then redis.call('HSET', key.state, fields[i], ${file_status.expired}) end
  end
end
local keep = arg.retention_ms
if st == ${group_status.initialized} then keep = arg.idle_retention_ms end
end_group({${field.status}, ${group_status.expired}, ${field.expired}, arg.now_ms, ${field.updated}, arg.now_ms}, keep,
          ${group_status.expired}, upload_ids)
return {${reply.ok}}
