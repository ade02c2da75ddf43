--- Storage refused the parts (or the completion job gave up): the file goes back to 'uploading' with the
--- reason, so the client can fix it. Only the attempt that owns 'completing' may do it.
-- KEYS: state
-- ARGV: upload_id, now_ms, reason, attempt
-- REPLY: ok | stale
local field = ${FF.status} .. A.upload_id
if redis.call('HGET', K.state, field) ~= ${FILE.completing} then return {${R.stale}} end
if redis.call('HGET', K.state, ${FF.attempt} .. A.upload_id) ~= A.attempt then return {${R.stale}} end
redis.call('HSET', K.state, field, ${FILE.uploading}, ${FF.reason} .. A.upload_id, A.reason, ${F.updated}, A.now_ms)
return {${R.ok}}
