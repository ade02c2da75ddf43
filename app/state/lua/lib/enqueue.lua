-- arq's enqueue, inlined: a job id that is queued or has a kept result is not enqueued again.
-- job: {key, result, queue, id, blob, expires, score} (a JOBS slot of the contract). expires '0': the job
-- key never expires (a processing job waits for its pipeline however long that is down).
local function enqueue(job)
  if redis.call('EXISTS', job.key, job.result) > 0 then return 0 end
  if tonumber(job.expires) > 0 then redis.call('PSETEX', job.key, job.expires, job.blob)
  else redis.call('SET', job.key, job.blob) end
  redis.call('ZADD', job.queue, job.score, job.id)
  return 1
end
