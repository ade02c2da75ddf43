--- One of an endpoint's delivery slots for a delivery (its concurrency across every worker), or a place in its line.
--- A slot is a lease that lapses by itself, so a killed worker's slot comes back without anyone giving it back. A
--- delivery that finds every slot taken, or others already waiting, parks its job document in the endpoint's line
--- and its job ends: no job slot is held and nothing polls. release_webhook_slot.lua queues the line's first again.
-- KEYS: busy, waiting, parked, waiting_index
-- ARGV: job_id, now_ms, lease_ms, limit, endpoint_id, blob
-- REPLY: ok (taken, or renewed: a woken delivery's slot was kept for it) | running <deliveries in flight> (parked)
redis.call('ZREMRANGEBYSCORE', key.busy, '-inf', arg.now_ms)
local mine = redis.call('ZSCORE', key.busy, arg.job_id)
local n = redis.call('ZCARD', key.busy)
if not mine and (n >= tonumber(arg.limit) or redis.call('ZCARD', key.waiting) > 0) then
  redis.call('ZADD', key.waiting, 'NX', arg.now_ms, arg.job_id)
  redis.call('HSET', key.parked, arg.job_id, arg.blob)
  redis.call('SADD', key.waiting_index, arg.endpoint_id)
  return {${reply.running}, n}
end
redis.call('ZADD', key.busy, tonumber(arg.now_ms) + tonumber(arg.lease_ms), arg.job_id)
redis.call('PEXPIRE', key.busy, arg.lease_ms)
return {${reply.ok}}
