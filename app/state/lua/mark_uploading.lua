--- First part-urls call of a file: the file (and the group) become 'uploading', and its checksum algorithm is fixed.
-- KEYS: state, expiry_index
-- ARGV: upload_id, now_ms, expires_ms, session_id, algorithm, late
-- The group's first one takes it out of the idle lifetime: its expiry becomes expires_ms.
-- algorithm ('' for none) is fixed with the status, in the same HSET: concurrent first calls naming different
-- algorithms get one winner, and the other a checksum_conflict. An uploading file without one takes one only
-- when late is 1 (a single_put: no storage upload was opened without it).
-- REPLY: ok <the file's algorithm, '' for none> | gone | expired | group_state <status> | file_state <status>
--        | checksum_conflict <the file's algorithm, '' for none>
--! include lifecycle
local field = ${file_field.status} .. arg.upload_id
local alg_field = ${file_field.checksum_algorithm} .. arg.upload_id
local now_state = redis.call('HMGET', key.state, ${field.status}, field, alg_field)
local st, f, alg = now_state[1], now_state[2], now_state[3] or ''
if not st then return {${reply.gone}} end
if not live(st) then return {${reply.group_state}, st} end
if tonumber(arg.now_ms) >= tonumber(arg.expires_ms) then return {${reply.expired}} end
if f ~= ${file_status.initialized} and f ~= ${file_status.uploading} then return {${reply.file_state}, tostring(f)} end
local fix = {}
if arg.algorithm ~= '' and arg.algorithm ~= alg then
  if alg ~= '' or (f == ${file_status.uploading} and arg.late ~= '1') then return {${reply.checksum_conflict}, alg} end
  fix = {alg_field, arg.algorithm}
  alg = arg.algorithm
end
if st == ${group_status.initialized} then
  redis.call('HSET', key.state, field, ${file_status.uploading}, ${field.updated}, arg.now_ms,
             ${field.status}, ${group_status.uploading}, unpack(fix))
  redis.call('ZADD', key.expiry_index, 'XX', arg.expires_ms, arg.session_id)
elseif f == ${file_status.initialized} then
  redis.call('HSET', key.state, field, ${file_status.uploading}, ${field.updated}, arg.now_ms, unpack(fix))
elseif #fix > 0 then
  redis.call('HSET', key.state, unpack(fix))
end
return {${reply.ok}, alg}
