--- A completed group's processing job: still waiting, picked up by the pipeline, or lost (then queued
--- again under the same id, so the pipeline never runs it twice).
-- KEYS: handoff_index, library, in_progress
-- ARGV: session_id
-- JOBS: process
-- REPLY: running | ok | queued | gone
-- ok: the pipeline has it (running, or its kept result exists): the group leaves the index.
--! include enqueue
if redis.call('EXISTS', K.library) == 0 then  -- retention lapsed: nothing left to hand off
  redis.call('ZREM', K.handoff_index, A.session_id)
  return {${R.gone}}
end
if redis.call('EXISTS', J.process.key) == 1 then return {${R.running}} end
if redis.call('EXISTS', J.process.result, K.in_progress) > 0 then
  redis.call('ZREM', K.handoff_index, A.session_id)
  return {${R.ok}}
end
enqueue(J.process)
return {${R.queued}}
