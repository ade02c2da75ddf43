-- A group leaves the live set (completed, canceled, expired, failed): its account's usage gives it back.
local function release_usage(usage_key, declared_bytes)
  redis.call('HINCRBY', usage_key, 'groups', -1)
  redis.call('HINCRBY', usage_key, 'bytes', -tonumber(declared_bytes))
end
