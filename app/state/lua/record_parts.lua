--- Store what storage has received for a file: the summary for the group's life, the part list as a cache.
-- KEYS: state, parts
-- ARGV: upload_id, summary, parts_blob, cache_ms
-- REPLY: ok | gone
-- summary is "parts:bytes:refreshed_ms"; parts_blob '' means "no list" (storage is the truth, this is a cache).
if redis.call('HEXISTS', K.state, ${FF.status} .. A.upload_id) == 0 then return {${R.gone}} end
redis.call('HSET', K.state, ${FF.progress} .. A.upload_id, A.summary)
if A.parts_blob ~= '' then redis.call('SET', K.parts, A.parts_blob, 'PX', A.cache_ms) end
return {${R.ok}}
