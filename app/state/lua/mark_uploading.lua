--- First part-urls call of a file: the file (and the group) become 'uploading'.
-- KEYS: state, expiry_index
-- ARGV: upload_id, now_ms, expires_ms, session_id
-- The group's first one takes it out of the idle lifetime: its expiry becomes expires_ms.
-- REPLY: ok | gone | expired | group_state <status> | file_state <status>
--! include lifecycle
local field = ${file_field.status} .. arg.upload_id
local now_state = redis.call('HMGET', key.state, ${field.status}, field)
local st, f = now_state[1], now_state[2]
if not st then return {${reply.gone}} end
if not live(st) then return {${reply.group_state}, st} end
if tonumber(arg.now_ms) >= tonumber(arg.expires_ms) then return {${reply.expired}} end
if f ~= ${file_status.initialized} and f ~= ${file_status.uploading} then return {${reply.file_state}, tostring(f)} end
if st == ${group_status.initialized} then
  redis.call('HSET', key.state, field, ${file_status.uploading}, ${field.updated}, arg.now_ms,
             ${field.status}, ${group_status.uploading})
  redis.call('ZADD', key.expiry_index, 'XX', arg.expires_ms, arg.session_id)
elseif f == ${file_status.initialized} then
  redis.call('HSET', key.state, field, ${file_status.uploading}, ${field.updated}, arg.now_ms)
end
return {${reply.ok}}
