--- A file left 'completing' by a completion job that is gone (killed past its retries, timed out, expired
--- unrun, or whose hand-back itself failed) goes back to 'uploading' with a stable reason: the client's
--- next complete call starts a new attempt. A job still queued or running is left alone.
-- KEYS: state, completing_index, job, in_progress
-- ARGV: member, upload_id, attempt, now_ms, reason
-- REPLY: ok | running | stale | gone | file_state <status>
-- KEYS.job / KEYS.in_progress belong to the attempt the caller read; a newer attempt makes this stale.
local f = redis.call('HGET', K.state, ${FF.status} .. A.upload_id)
if not f then
  redis.call('ZREM', K.completing_index, A.member)
  return {${R.gone}}
end
if f ~= ${FILE.completing} then
  redis.call('ZREM', K.completing_index, A.member)
  return {${R.file_state}, f}
end
if redis.call('HGET', K.state, ${FF.attempt} .. A.upload_id) ~= A.attempt then return {${R.stale}} end
if redis.call('EXISTS', K.job, K.in_progress) > 0 then return {${R.running}} end
redis.call('HSET', K.state, ${FF.status} .. A.upload_id, ${FILE.uploading}, ${FF.reason} .. A.upload_id, A.reason,
           ${F.updated}, A.now_ms)
redis.call('ZREM', K.completing_index, A.member)
return {${R.ok}}
