--- Storage refused the parts (or the completion job gave up): the file goes back to 'uploading' with the
--- reason, so the client can fix it. Only the attempt that owns 'completing' may do it.
-- KEYS: state, completing_index
-- ARGV: upload_id, now_ms, reason, attempt, session_id
-- REPLY: ok | stale
local field = ${file_field.status} .. arg.upload_id
if redis.call('HGET', key.state, field) ~= ${file_status.completing} then return {${reply.stale}} end
if redis.call('HGET', key.state, ${file_field.attempt} .. arg.upload_id) ~= arg.attempt then return {${reply.stale}} end
redis.call('HSET', key.state, field, ${file_status.uploading}, ${file_field.reason} .. arg.upload_id, arg.reason, ${field.updated}, arg.now_ms)
redis.call('ZREM', key.completing_index, arg.session_id .. ':' .. arg.upload_id)
redis.call('PUBLISH', ${channel.settled}, arg.session_id .. ':' .. arg.upload_id)
return {${reply.ok}}
