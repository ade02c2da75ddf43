--- Plain arq enqueues of any number of jobs, in one round trip.
-- JOBS: ...jobs
-- REPLY: ok <number enqueued>
--! include enqueue
local n = 0
for _, job in ipairs(J) do n = n + enqueue(job) end
return {${R.ok}, n}
