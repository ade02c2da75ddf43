--- A verified file becomes 'completed'. If it was the group's last, in the same step: the group is
--- 'completed', one libraryId is taken, one library record written and one processing job queued.
-- KEYS: state, group, library, library_counter, expiry_index, completing_index, handoff_index, metrics, usage, process_job, process_result, process_queue, webhooks, events
-- ARGV: upload_id, now_ms, retention_ms, session_id, expires_ms, library_tail, process_id, job_head, job_tail, job_expires_ms, declared_bytes, progress, account, checksum, checksums_seen
-- REST: upload_ids
-- REPLY: file_completed | group_completed <libraryId> | gone | group_state <status> | stale <file status>
--        | checksums_changed
-- checksum: the verified checksum recorded with the file ('' for none). checksums_seen: every file's recorded
-- checksum (this one's as checksum), newline-joined, as the library template was built with ('' when no file of
-- the group has an algorithm): when this completes the group and another file's changed meanwhile (it completed
-- concurrently), nothing is written and the caller builds the template again.
-- job_expires_ms is 0: the processing job's key never expires (it waits for the pipeline however long).
-- Nothing else can interleave, so concurrent completions (and a racing cancel) yield exactly one record
-- and one job, or none. A group that died meanwhile (canceled, failed, expired) takes the file with it.
--! include enqueue
--! include lifecycle
--! include usage
--! include events
local field = ${file_field.status} .. arg.upload_id
local now_state = redis.call('HMGET', key.state, ${field.status}, field)
local st, f = now_state[1], now_state[2]
if not st then return {${reply.gone}} end
if arg.checksums_seen ~= '' and f == ${file_status.completing} and live(st) then
  local n, fields = #arg.upload_ids, {}
  for i, uid in ipairs(arg.upload_ids) do fields[i] = ${file_field.status} .. uid; fields[n + i] = ${file_field.checksum} .. uid end
  local got, seen, last = redis.call('HMGET', key.state, unpack(fields)), {}, true
  for i, uid in ipairs(arg.upload_ids) do
    if uid == arg.upload_id then seen[i] = arg.checksum
    else
      seen[i] = got[n + i] or ''
      if got[i] ~= ${file_status.completed} then last = false end
    end
  end
  if last and table.concat(seen, '\n') ~= arg.checksums_seen then return {${reply.checksums_changed}} end
end
if f == ${file_status.completing} then  -- whatever the outcome below, this attempt's work ends here
  redis.call('ZREM', key.completing_index, arg.session_id .. ':' .. arg.upload_id)
  redis.call('PUBLISH', ${channel.settled}, arg.session_id .. ':' .. arg.upload_id)
end
if live(st) and tonumber(arg.now_ms) >= tonumber(arg.expires_ms) then st = ${group_status.expired} end  -- the sweep will mark it
if not live(st) then
  if f == ${file_status.completing} then redis.call('HSET', key.state, field, st) end
  return {${reply.group_state}, st}
end
if f ~= ${file_status.completing} then return {${reply.stale}, tostring(f)} end
-- progress: "parts:bytes:refreshed_ms", the whole file (everything listed is in the object now)
redis.call('HSET', key.state, field, ${file_status.completed}, ${field.updated}, arg.now_ms,
           ${file_field.progress} .. arg.upload_id, arg.progress)
if arg.checksum ~= '' then redis.call('HSET', key.state, ${file_field.checksum} .. arg.upload_id, arg.checksum) end
local others = {}
for i, uid in ipairs(arg.upload_ids) do others[i] = ${file_field.status} .. uid end
for _, status in ipairs(redis.call('HMGET', key.state, unpack(others))) do
  if status ~= ${file_status.completed} then
    record_event(${event.file_completed}, arg.account, arg.session_id, arg.upload_id, arg.upload_id, st, '', '')
    return {${reply.file_completed}}
  end
end
-- The libraryId: max(last + 1, µs since the id epoch by Redis's clock), so a crash that loses the last
-- second of AOF can never make an id that was handed out be handed out again (keys.LIBRARY_EPOCH_US).
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lib = math.max(tonumber(redis.call('GET', key.library_counter) or '0') + 1, now_us - ${number.library_epoch_us})
local lib_text = string.format('%.0f', lib)
redis.call('SET', key.library_counter, lib_text)
local ttl = tonumber(arg.retention_ms)
redis.call('HSET', key.state, ${field.status}, ${group_status.completed}, ${field.completed}, arg.now_ms, ${field.library}, lib_text,
           ${field.handoff}, ${handoff.pending})
redis.call('SET', key.library, '{"libraryId":' .. lib_text .. arg.library_tail, 'PX', ttl)
redis.call('ZREM', key.expiry_index, arg.session_id)
release_usage(key.usage, arg.declared_bytes)
redis.call('ZADD', key.handoff_index, arg.now_ms, arg.session_id)
redis.call('HINCRBY', key.metrics, ${metric.groups_completed}, 1)
redis.call('PEXPIRE', key.state, ttl)
redis.call('PEXPIRE', key.group, ttl)
-- The job document carries the libraryId as a msgpack uint64: 8 bytes, big-endian, after job_head.
local be = {}
for i = 7, 0, -1 do be[#be + 1] = string.char(math.floor(lib / 2 ^ (8 * i)) % 256) end
enqueue({key = key.process_job, result = key.process_result, queue = key.process_queue, id = arg.process_id,
         blob = arg.job_head .. table.concat(be) .. arg.job_tail, expires = arg.job_expires_ms, score = arg.now_ms})
record_event(${event.file_completed}, arg.account, arg.session_id, arg.upload_id, arg.upload_id, ${group_status.completed}, '',
             lib_text)
record_event(${event.group_completed}, arg.account, arg.session_id, '', '', ${group_status.completed}, '', lib_text)
return {${reply.group_completed}, lib}
