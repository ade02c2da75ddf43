--- Shorten arq's long in-progress locks of due jobs to lock_ms. arq sizes a job's lock to the longest job
--- timeout (15 minutes here); a running job renews its own short lock (worker/liveness.py), so a lock still
--- long belongs to a job whose worker died before the job's function began: it runs again within lock_ms.
-- KEYS: queue
-- ARGV: now_ms, lock_ms, slack_ms, limit
-- REPLY: ok <locks shortened>
-- Only the first `limit` due jobs are looked at: those are the ones workers take next.
local ids = redis.call('ZRANGEBYSCORE', key.queue, '-inf', arg.now_ms, 'LIMIT', 0, tonumber(arg.limit))
local lock = tonumber(arg.lock_ms)
local n = 0
for _, id in ipairs(ids) do
  local lock_key = ${arq.in_progress_prefix} .. id
  if redis.call('PTTL', lock_key) > lock + tonumber(arg.slack_ms) then
    redis.call('PEXPIRE', lock_key, lock)
    n = n + 1
  end
end
return {${reply.ok}, n}
