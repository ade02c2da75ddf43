--- First part-urls call of a file: the file (and the group) become 'uploading'.
-- KEYS: state, expiry_index
-- ARGV: upload_id, now_ms, expires_ms, session_id
-- The group's first one takes it out of the idle lifetime: its expiry becomes expires_ms.
-- REPLY: ok | gone | expired | group_state <status> | file_state <status>
--! include lifecycle
local st = redis.call('HGET', K.state, ${F.status})
if not st then return {${R.gone}} end
if not live(st) then return {${R.group_state}, st} end
if tonumber(A.now_ms) >= tonumber(A.expires_ms) then return {${R.expired}} end
local field = ${FF.status} .. A.upload_id
local f = redis.call('HGET', K.state, field)
if f == ${FILE.initialized} then
  redis.call('HSET', K.state, field, ${FILE.uploading}, ${F.updated}, A.now_ms)
elseif f ~= ${FILE.uploading} then
  return {${R.file_state}, tostring(f)}
end
if st == ${GROUP.initialized} then
  redis.call('HSET', K.state, ${F.status}, ${GROUP.uploading})
  redis.call('ZADD', K.expiry_index, 'XX', A.expires_ms, A.session_id)
end
return {${R.ok}}
