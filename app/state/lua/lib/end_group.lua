-- A group ends without completing (canceled, expired, failed): the state-hash fields given are set, the group
-- leaves the expiry index and its files the completing index, its account's quota use is given back, it joins
-- the account's ended index, its keys are kept keep_ms more, its end record (the tombstone: the only thing that
-- lets a sweep delete its storage once its keys are gone) is written, and both purges (now, and after its last
-- URL lapsed) are queued. Its event (upload_group.canceled/expired/failed) is recorded for the account's webhooks;
-- why (failed: {reason = stable code, upload_id = the failed file}) goes with it.
-- Include after enqueue, usage and events. The calling script's contract names what this uses:
-- KEYS state, group, expiry_index, completing_index, usage, ended, trim, tombstone, webhooks, events;
-- ARGV session_id, now_ms, declared_bytes, account, ended_cap, key_prefix, tombstone_ms; JOBS purge, late_purge.
local function end_group(fields, keep_ms, status, upload_ids, why)
  redis.call('HSET', key.state, unpack(fields))
  redis.call('ZREM', key.expiry_index, arg.session_id)
  for _, uid in ipairs(upload_ids) do redis.call('ZREM', key.completing_index, arg.session_id .. ':' .. uid) end
  release_usage(key.usage, arg.declared_bytes)
  note_ended(key.ended, key.trim, arg.account, arg.session_id, arg.now_ms, keep_ms, arg.ended_cap)
  redis.call('PEXPIRE', key.state, keep_ms)
  redis.call('PEXPIRE', key.group, keep_ms)
  redis.call('SET', key.tombstone, status .. '\n' .. arg.key_prefix, 'PX', arg.tombstone_ms)
  enqueue(jobs.purge)
  enqueue(jobs.late_purge)
  why = why or {}
  record_event(GROUP_END_EVENT[status], arg.account, arg.session_id, '', why.upload_id or '', status, why.reason or '', '')
end
