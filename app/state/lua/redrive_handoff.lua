--- A completed group's processing job: still waiting, picked up by the pipeline, or lost (then queued
--- again under the same id, so the pipeline never runs it twice).
-- KEYS: handoff_index, library, in_progress
-- ARGV: session_id
-- JOBS: process
-- REPLY: running | ok | queued | gone
-- ok: the pipeline has it (running, or its kept result exists): the group leaves the index.
--! include enqueue
if redis.call('EXISTS', key.library) == 0 then  -- retention lapsed: nothing left to hand off
  redis.call('ZREM', key.handoff_index, arg.session_id)
  return {${reply.gone}}
end
if redis.call('EXISTS', jobs.process.key) == 1 then return {${reply.running}} end
if redis.call('EXISTS', jobs.process.result, key.in_progress) > 0 then
  redis.call('ZREM', key.handoff_index, arg.session_id)
  return {${reply.ok}}
end
enqueue(jobs.process)
return {${reply.queued}}
