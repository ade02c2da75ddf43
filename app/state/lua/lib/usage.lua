-- A group leaves the live set (completed, canceled, expired, failed): its account's usage gives it back.
local function release_usage(usage_key, declared_bytes)
  redis.call('HINCRBY', usage_key, 'groups', -1)
  redis.call('HINCRBY', usage_key, 'bytes', -tonumber(declared_bytes))
end

-- A group that ended without completing (canceled, expired, failed) joins its account's ended index, scored
-- by when its keys go (now + keep_ms), so entries of groups gone by their TTL leave it and never count; when
-- the index holds more than `cap` groups (0: no cap), the account is queued for the trim, which drops the
-- groups due to go first, so a create-and-cancel loop cannot fill Redis.
local function note_ended(ended_key, trim_key, account, session_id, now_ms, keep_ms, cap)
  redis.call('ZADD', ended_key, tonumber(now_ms) + tonumber(keep_ms), session_id)
  redis.call('ZREMRANGEBYSCORE', ended_key, '-inf', now_ms)
  if redis.call('PTTL', ended_key) < tonumber(keep_ms) then redis.call('PEXPIRE', ended_key, keep_ms) end
  if tonumber(cap) > 0 and redis.call('ZCARD', ended_key) > tonumber(cap) then
    redis.call('SADD', trim_key, account)
  end
end
