--- A completed group's processing job as the re-drive finds it: waiting for a consumer, or taken by one. The
--- job is never queued a second time because it is missing: arq removes a job's document only when a consumer
--- has finished it, so a missing document means the hand-off happened.
-- KEYS: state, handoff_index, library, process_job, process_queue
-- ARGV: session_id, process_id, now_ms
-- REPLY: running | queued | ok | gone
-- running: the document is queued (waiting, or a consumer runs it now). queued: the document is there but not
-- in the queue, so provably never taken: its queue entry is written back, same id. ok: taken (the group leaves
-- the index; a kept result, if any, says whether the consumer succeeded). gone: its retention lapsed.
if redis.call('EXISTS', key.library) == 0 then
  redis.call('ZREM', key.handoff_index, arg.session_id)
  return {${reply.gone}}
end
if redis.call('EXISTS', key.process_job) == 1 then
  if redis.call('ZSCORE', key.process_queue, arg.process_id) then return {${reply.running}} end
  redis.call('ZADD', key.process_queue, arg.now_ms, arg.process_id)
  return {${reply.queued}}
end
redis.call('ZREM', key.handoff_index, arg.session_id)
if redis.call('HGET', key.state, ${field.handoff}) == ${handoff.pending} then
  redis.call('HSET', key.state, ${field.handoff}, ${handoff.taken})
end
return {${reply.ok}}
