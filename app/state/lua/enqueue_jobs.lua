--- Plain arq enqueues of any number of jobs, in one round trip.
-- JOBS: ...jobs
-- REPLY: ok <number enqueued>
--! include enqueue
local n = 0
for _, job in ipairs(jobs) do n = n + enqueue(job) end
return {${reply.ok}, n}
