--- Attach a file's S3 multipart upload id (kept newline-joined, in file order, beside the state hash).
-- KEYS: state, upload_ids
-- ARGV: upload_id, s3_upload_id, position, file_count
-- REPLY: ok | group_state <status> | file_state <status> | gone | recorded <the id already recorded>
-- A group or file that no longer takes uploads gets no id: the caller aborts the upload it opened.
--! include lifecycle
local st = redis.call('HGET', K.state, ${F.status})
if not st then return {${R.gone}} end
if not live(st) then return {${R.group_state}, st} end
local f = redis.call('HGET', K.state, ${FF.status} .. A.upload_id)
if not OPEN_FILE[f] then return {${R.file_state}, tostring(f)} end
local raw = redis.call('GET', K.upload_ids) or ''
local ids, pos = {}, 1
for i = 1, tonumber(A.file_count) do
  local stop = string.find(raw, '\n', pos, true)
  if stop then ids[i] = string.sub(raw, pos, stop - 1); pos = stop + 1
  else ids[i] = string.sub(raw, pos); pos = #raw + 2 end
end
local at = tonumber(A.position)
if ids[at] ~= '' then return {${R.recorded}, ids[at]} end
ids[at] = A.s3_upload_id
local ttl = redis.call('PTTL', K.state)
if ttl > 0 then redis.call('SET', K.upload_ids, table.concat(ids, '\n'), 'PX', ttl)
else redis.call('SET', K.upload_ids, table.concat(ids, '\n')) end
return {${R.ok}}
