--- A delivery gives its slot back (job_id '' : none, just look at the line), and the first parked deliveries get the
--- free slots: each is kept for it (a lease) and its job document queued again on the webhook queue.
-- KEYS: busy, waiting, parked, waiting_index, queue
-- ARGV: job_id, now_ms, lease_ms, limit, endpoint_id, job_key_prefix, expires_ms
-- REPLY: ok <deliveries woken>
if arg.job_id ~= '' then redis.call('ZREM', key.busy, arg.job_id) end
redis.call('ZREMRANGEBYSCORE', key.busy, '-inf', arg.now_ms)
local woken = 0
while redis.call('ZCARD', key.busy) < tonumber(arg.limit) do
  local first = redis.call('ZPOPMIN', key.waiting)
  if #first == 0 then break end
  local blob = redis.call('HGET', key.parked, first[1])
  redis.call('HDEL', key.parked, first[1])
  if blob then
    local arq_id = first[1] .. ':woken:' .. arg.now_ms
    redis.call('ZADD', key.busy, tonumber(arg.now_ms) + tonumber(arg.lease_ms), first[1])
    redis.call('PEXPIRE', key.busy, arg.lease_ms)
    redis.call('SET', arg.job_key_prefix .. arq_id, blob, 'PX', arg.expires_ms)
    redis.call('ZADD', key.queue, arg.now_ms, arq_id)
    woken = woken + 1
  end
end
if redis.call('ZCARD', key.waiting) == 0 then redis.call('SREM', key.waiting_index, arg.endpoint_id) end
return {${reply.ok}, woken}
