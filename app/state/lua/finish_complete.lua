--- A verified file becomes 'completed'. If it was the group's last, in the same step: the group is
--- 'completed', one libraryId is taken, one library record written and one processing job queued.
-- KEYS: state, group, library, library_counter, expiry_index, handoff_index, metrics, usage, process_job, process_result, process_queue
-- ARGV: upload_id, now_ms, retention_ms, session_id, expires_ms, library_tail, process_id, job_head, job_tail, job_expires_ms, declared_bytes
-- REST: upload_ids
-- REPLY: file_completed | group_completed <libraryId> | gone | group_state <status> | stale <file status>
-- job_expires_ms is 0: the processing job's key never expires (it waits for the pipeline however long).
-- Nothing else can interleave, so concurrent completions (and a racing cancel) yield exactly one record
-- and one job, or none. A group that died meanwhile (canceled, failed, expired) takes the file with it.
--! include enqueue
--! include lifecycle
--! include usage
local st = redis.call('HGET', K.state, ${F.status})
if not st then return {${R.gone}} end
local field = ${FF.status} .. A.upload_id
local f = redis.call('HGET', K.state, field)
if live(st) and tonumber(A.now_ms) >= tonumber(A.expires_ms) then st = ${GROUP.expired} end  -- the sweep will mark it
if not live(st) then
  if f == ${FILE.completing} then redis.call('HSET', K.state, field, st) end
  return {${R.group_state}, st}
end
if f ~= ${FILE.completing} then return {${R.stale}, tostring(f)} end
redis.call('HSET', K.state, field, ${FILE.completed}, ${F.updated}, A.now_ms)
for _, uid in ipairs(A.upload_ids) do
  if redis.call('HGET', K.state, ${FF.status} .. uid) ~= ${FILE.completed} then return {${R.file_completed}} end
end
-- The libraryId: max(last + 1, µs since the id epoch by Redis's clock), so a crash that loses the last
-- second of AOF can never make an id that was handed out be handed out again (keys.LIBRARY_EPOCH_US).
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lib = math.max(tonumber(redis.call('GET', K.library_counter) or '0') + 1, now_us - ${N.library_epoch_us})
local lib_text = string.format('%.0f', lib)
redis.call('SET', K.library_counter, lib_text)
local ttl = tonumber(A.retention_ms)
redis.call('HSET', K.state, ${F.status}, ${GROUP.completed}, ${F.completed}, A.now_ms, ${F.library}, lib_text)
redis.call('SET', K.library, '{"libraryId":' .. lib_text .. A.library_tail, 'PX', ttl)
redis.call('ZREM', K.expiry_index, A.session_id)
release_usage(K.usage, A.declared_bytes)
redis.call('ZADD', K.handoff_index, A.now_ms, A.session_id)
redis.call('HINCRBY', K.metrics, ${M.groups_completed}, 1)
redis.call('PEXPIRE', K.state, ttl)
redis.call('PEXPIRE', K.group, ttl)
-- The job document carries the libraryId as a msgpack uint64: 8 bytes, big-endian, after job_head.
local be = {}
for i = 7, 0, -1 do be[#be + 1] = string.char(math.floor(lib / 2 ^ (8 * i)) % 256) end
enqueue({key = K.process_job, result = K.process_result, queue = K.process_queue, id = A.process_id,
         blob = A.job_head .. table.concat(be) .. A.job_tail, expires = A.job_expires_ms, score = A.now_ms})
return {${R.group_completed}, lib}
