-- A group ends without completing (canceled, expired, failed): the state-hash fields given are set, the group
-- leaves the expiry index, its account's quota use is given back, it joins the account's ended index, its keys
-- are kept keep_ms more, and both purges (now, and after its last URL lapsed) are queued.
-- Include after enqueue and usage. The calling script's contract names what this uses:
-- KEYS state, group, expiry_index, usage, ended, trim; ARGV session_id, now_ms, declared_bytes, account, ended_cap;
-- JOBS purge, late_purge.
local function end_group(fields, keep_ms)
  redis.call('HSET', key.state, unpack(fields))
  redis.call('ZREM', key.expiry_index, arg.session_id)
  release_usage(key.usage, arg.declared_bytes)
  note_ended(key.ended, key.trim, arg.account, arg.session_id, arg.now_ms, keep_ms, arg.ended_cap)
  redis.call('PEXPIRE', key.state, keep_ms)
  redis.call('PEXPIRE', key.group, keep_ms)
  enqueue(jobs.purge)
  enqueue(jobs.late_purge)
end
