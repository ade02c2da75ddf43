-- A group leaves the live set (completed, canceled, expired, failed): its account's usage gives it back.
local function release_usage(usage_key, declared_bytes)
  redis.call('HINCRBY', usage_key, 'groups', -1)
  redis.call('HINCRBY', usage_key, 'bytes', -tonumber(declared_bytes))
end

-- A group that ended without completing (canceled, expired, failed) joins its account's ended index; when the
-- index holds more than `cap` groups (0: no cap), the account is queued for the trim, which drops its oldest
-- ended groups before their retention lapses, so a create-and-cancel loop cannot fill Redis.
local function note_ended(ended_key, trim_key, account, session_id, now_ms, retention_ms, cap)
  redis.call('ZADD', ended_key, now_ms, session_id)
  redis.call('ZREMRANGEBYSCORE', ended_key, '-inf', tonumber(now_ms) - tonumber(retention_ms))
  redis.call('PEXPIRE', ended_key, retention_ms)
  if tonumber(cap) > 0 and redis.call('ZCARD', ended_key) > tonumber(cap) then
    redis.call('SADD', trim_key, account)
  end
end
