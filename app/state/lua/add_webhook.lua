--- Register a webhook endpoint, unless its account has as many as allowed: its hash, the account's registry (the
--- set the state scripts check before recording an event) and the global index, together.
-- KEYS: registry, endpoint, index
-- ARGV: endpoint_id, max_endpoints, created_ms
-- REST: fields
-- REPLY: ok | quota_exceeded <endpoints the account has>
local n = redis.call('SCARD', key.registry)
if n >= tonumber(arg.max_endpoints) then return {${reply.quota_exceeded}, n} end
redis.call('HSET', key.endpoint, unpack(arg.fields))
redis.call('SADD', key.registry, arg.endpoint_id)
redis.call('ZADD', key.index, arg.created_ms, arg.endpoint_id)
return {${reply.ok}}
