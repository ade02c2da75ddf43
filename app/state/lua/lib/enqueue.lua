-- arq's enqueue, inlined: a job id that is queued or has a kept result is not enqueued again.
-- job: {key, result, queue, id, blob, expires, score} (a JOBS slot of the contract)
local function enqueue(job)
  if redis.call('EXISTS', job.key, job.result) > 0 then return 0 end
  redis.call('PSETEX', job.key, job.expires, job.blob)
  redis.call('ZADD', job.queue, job.score, job.id)
  return 1
end
