--- An operator retries the hand-off of a group whose processing job failed in its consumer: the failed result
--- goes, the job is queued again under its id, and the group waits in the hand-off index once more.
-- KEYS: state, handoff_index, failed_index, library
-- ARGV: session_id, now_ms
-- JOBS: process
-- REPLY: ok | gone | stale <hand-off state>
-- stale: the hand-off did not fail (pending or taken): nothing to retry.
--! include enqueue
if redis.call('EXISTS', key.library) == 0 then return {${reply.gone}} end
local now = redis.call('HGET', key.state, ${field.handoff})
if now ~= ${handoff.failed} then return {${reply.stale}, tostring(now)} end
redis.call('DEL', jobs.process.result)
enqueue(jobs.process)
redis.call('HSET', key.state, ${field.handoff}, ${handoff.pending})
redis.call('ZREM', key.failed_index, arg.session_id)
redis.call('ZADD', key.handoff_index, arg.now_ms, arg.session_id)
return {${reply.ok}}
