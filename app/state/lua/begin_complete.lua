--- A complete call: the file becomes 'completing' and its completion job is queued.
-- KEYS: state, completing_index, expiry_index
-- ARGV: upload_id, now_ms, expires_ms, attempt_seen, session_id
-- JOBS: complete
-- REPLY: ok | gone | expired | group_state <status> | file_state <status> | stale
-- attempt_seen is the attempt count the caller read: if another call started an attempt since, it is stale.
--! include enqueue
--! include lifecycle
local st = redis.call('HGET', K.state, ${F.status})
if not st then return {${R.gone}} end
if not live(st) then return {${R.group_state}, st} end
if tonumber(A.now_ms) >= tonumber(A.expires_ms) then return {${R.expired}} end
local field = ${FF.status} .. A.upload_id
local f = redis.call('HGET', K.state, field)
if not OPEN_FILE[f] then return {${R.file_state}, tostring(f)} end
local attempt_field = ${FF.attempt} .. A.upload_id
local attempt = redis.call('HGET', K.state, attempt_field) or '0'
if attempt ~= A.attempt_seen then return {${R.stale}} end
redis.call('HSET', K.state, field, ${FILE.completing}, attempt_field, tonumber(attempt) + 1, ${F.updated}, A.now_ms)
redis.call('HDEL', K.state, ${FF.reason} .. A.upload_id)
if st == ${GROUP.initialized} then  -- in use now: out of the idle lifetime
  redis.call('HSET', K.state, ${F.status}, ${GROUP.uploading})
  redis.call('ZADD', K.expiry_index, 'XX', A.expires_ms, A.session_id)
end
enqueue(J.complete)
redis.call('ZADD', K.completing_index, A.now_ms, A.session_id .. ':' .. A.upload_id)  -- for the re-drive
return {${R.ok}}
