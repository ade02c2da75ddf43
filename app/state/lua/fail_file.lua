--- The assembled object is wrong: the file fails and, with a live group, the whole group fails (the set can
--- never complete): its other unfinished files fail with it, and its storage is purged.
-- KEYS: state, group, expiry_index, completing_index, usage, ended, trim, tombstone, webhooks, events
-- ARGV: upload_id, now_ms, reason, retention_ms, session_id, declared_bytes, account, ended_cap, key_prefix, tombstone_ms
-- JOBS: purge, late_purge
-- REST: upload_ids
-- REPLY: ok | stale
--! include enqueue
--! include lifecycle
--! include usage
--! include events
--! include end_group
local field = ${file_field.status} .. arg.upload_id
if redis.call('HGET', key.state, field) ~= ${file_status.completing} then return {${reply.stale}} end
redis.call('HSET', key.state, field, ${file_status.failed}, ${file_field.reason} .. arg.upload_id, arg.reason, ${field.updated}, arg.now_ms)
redis.call('ZREM', key.completing_index, arg.session_id .. ':' .. arg.upload_id)
redis.call('PUBLISH', ${channel.settled}, arg.session_id .. ':' .. arg.upload_id)
local st = redis.call('HGET', key.state, ${field.status})
if live(st) then
  for _, uid in ipairs(arg.upload_ids) do
    local other = ${file_field.status} .. uid
    if uid ~= arg.upload_id and not SETTLED_FILE[redis.call('HGET', key.state, other)] then
      redis.call('HSET', key.state, other, ${file_status.failed}, ${file_field.reason} .. uid, ${reason.group_failed})
    end
  end
  end_group({${field.status}, ${group_status.failed}, ${field.failed}, arg.now_ms}, arg.retention_ms, ${group_status.failed},
            arg.upload_ids, {reason = string.match(arg.reason, '^[^:]*'), upload_id = arg.upload_id})
end
return {${reply.ok}}
