--- Store what storage has received for a file: the summary for the group's life, the part list as a cache.
-- KEYS: state, parts
-- ARGV: upload_id, summary, parts_blob, cache_ms
-- REPLY: ok | gone
-- summary is "parts:bytes:refreshed_ms"; parts_blob '' means "no list" (storage is the truth, this is a cache).
if redis.call('HEXISTS', key.state, ${file_field.status} .. arg.upload_id) == 0 then return {${reply.gone}} end
redis.call('HSET', key.state, ${file_field.progress} .. arg.upload_id, arg.summary)
if arg.parts_blob ~= '' then redis.call('SET', key.parts, arg.parts_blob, 'PX', arg.cache_ms) end
return {${reply.ok}}
