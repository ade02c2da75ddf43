--- A complete call: the file becomes 'completing' and its completion job is queued.
-- KEYS: state, completing_index, expiry_index
-- ARGV: upload_id, now_ms, expires_ms, attempt_seen, session_id
-- JOBS: complete
-- REPLY: ok | gone | expired | group_state <status> | file_state <status> | stale
-- attempt_seen is the attempt count the caller read: if another call started an attempt since, it is stale.
--! include enqueue
--! include lifecycle
local field = ${file_field.status} .. arg.upload_id
local attempt_field = ${file_field.attempt} .. arg.upload_id
local now_state = redis.call('HMGET', key.state, ${field.status}, field, attempt_field)
local st, f = now_state[1], now_state[2]
if not st then return {${reply.gone}} end
if not live(st) then return {${reply.group_state}, st} end
if tonumber(arg.now_ms) >= tonumber(arg.expires_ms) then return {${reply.expired}} end
if not OPEN_FILE[f] then return {${reply.file_state}, tostring(f)} end
local attempt = now_state[3] or '0'
if attempt ~= arg.attempt_seen then return {${reply.stale}} end
redis.call('HSET', key.state, field, ${file_status.completing}, attempt_field, tonumber(attempt) + 1, ${field.updated}, arg.now_ms)
redis.call('HDEL', key.state, ${file_field.reason} .. arg.upload_id)
if st == ${group_status.initialized} then  -- in use now: out of the idle lifetime
  redis.call('HSET', key.state, ${field.status}, ${group_status.uploading})
  redis.call('ZADD', key.expiry_index, 'XX', arg.expires_ms, arg.session_id)
end
enqueue(jobs.complete)
redis.call('ZADD', key.completing_index, arg.now_ms, arg.session_id .. ':' .. arg.upload_id)  -- for the re-drive
return {${reply.ok}}
