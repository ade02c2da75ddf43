--- A file left 'completing' by a completion job that is gone (killed past its retries, timed out, expired
--- unrun, or whose hand-back itself failed) goes back to 'uploading' with a stable reason: the client's
--- next complete call starts a new attempt. A job still queued or running is left alone.
-- KEYS: state, completing_index, job, in_progress
-- ARGV: member, upload_id, attempt, now_ms, reason
-- REPLY: ok | running | stale | gone | file_state <status>
-- KEYS.job / KEYS.in_progress belong to the attempt the caller read; a newer attempt makes this stale.
local f = redis.call('HGET', key.state, ${file_field.status} .. arg.upload_id)
if not f then
  redis.call('ZREM', key.completing_index, arg.member)
  return {${reply.gone}}
end
if f ~= ${file_status.completing} then
  redis.call('ZREM', key.completing_index, arg.member)
  return {${reply.file_state}, f}
end
if redis.call('HGET', key.state, ${file_field.attempt} .. arg.upload_id) ~= arg.attempt then return {${reply.stale}} end
if redis.call('EXISTS', key.job, key.in_progress) > 0 then return {${reply.running}} end
redis.call('HSET', key.state, ${file_field.status} .. arg.upload_id, ${file_status.uploading}, ${file_field.reason} .. arg.upload_id, arg.reason,
           ${field.updated}, arg.now_ms)
redis.call('ZREM', key.completing_index, arg.member)
redis.call('PUBLISH', ${channel.settled}, arg.member)
return {${reply.ok}}
