--- One of an endpoint's delivery slots for a delivery job (its concurrency across every worker): a lease that
--- lapses by itself, so a killed worker's slot comes back without anyone releasing it.
-- KEYS: busy
-- ARGV: job_id, now_ms, lease_ms, limit
-- REPLY: ok (taken, or renewed for the same job) | running <deliveries in flight>
redis.call('ZREMRANGEBYSCORE', key.busy, '-inf', arg.now_ms)
if not redis.call('ZSCORE', key.busy, arg.job_id) then
  local n = redis.call('ZCARD', key.busy)
  if n >= tonumber(arg.limit) then return {${reply.running}, n} end
end
redis.call('ZADD', key.busy, tonumber(arg.now_ms) + tonumber(arg.lease_ms), arg.job_id)
redis.call('PEXPIRE', key.busy, arg.lease_ms)
return {${reply.ok}}
