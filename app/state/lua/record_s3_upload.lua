--- Attach a file's S3 multipart upload id (kept newline-joined, in file order, beside the state hash).
-- KEYS: state, upload_ids
-- ARGV: upload_id, s3_upload_id, position, file_count
-- REPLY: ok | group_state <status> | file_state <status> | gone | recorded <the id already recorded>
-- A group or file that no longer takes uploads gets no id: the caller aborts the upload it opened.
--! include lifecycle
local st = redis.call('HGET', key.state, ${field.status})
if not st then return {${reply.gone}} end
if not live(st) then return {${reply.group_state}, st} end
local f = redis.call('HGET', key.state, ${file_field.status} .. arg.upload_id)
if not OPEN_FILE[f] then return {${reply.file_state}, tostring(f)} end
local raw = redis.call('GET', key.upload_ids) or ''
local ids, pos = {}, 1
for i = 1, tonumber(arg.file_count) do
  local stop = string.find(raw, '\n', pos, true)
  if stop then ids[i] = string.sub(raw, pos, stop - 1); pos = stop + 1
  else ids[i] = string.sub(raw, pos); pos = #raw + 2 end
end
local at = tonumber(arg.position)
if ids[at] ~= '' then return {${reply.recorded}, ids[at]} end
ids[at] = arg.s3_upload_id
local ttl = redis.call('PTTL', key.state)
if ttl > 0 then redis.call('SET', key.upload_ids, table.concat(ids, '\n'), 'PX', ttl)
else redis.call('SET', key.upload_ids, table.concat(ids, '\n')) end
return {${reply.ok}}
