-- The event outbox (webhooks, SPEC 3.9): the event is appended to the stream in the same script as the state change
-- that causes it, so no crash can separate them. Only accounts with a webhook endpoint get events; every other
-- account's change pays one EXISTS. The id is derived from the transition (type, group, and for a file's event the
-- file), never minted, so a script run again names the same event (app/domain/events.py: event_id).
-- The calling script's contract names what this uses: KEYS webhooks, events; ARGV now_ms.
local GROUP_END_EVENT = {[${group_status.canceled}] = ${event.group_canceled}, [${group_status.expired}] = ${event.group_expired},
                         [${group_status.failed}] = ${event.group_failed}}
-- subject: the file of a file's event ('' for a group's); upload_id: the file the event names (a failed group's too).
local has_webhooks = nil  -- asked once per script run, however many events it records
local function record_event(etype, account, session_id, subject, upload_id, status, reason, library_id)
  if has_webhooks == nil then has_webhooks = redis.call('EXISTS', key.webhooks) == 1 end
  if not has_webhooks then return end
  local id = 'evt_' .. string.sub(redis.sha1hex(etype .. ':' .. session_id .. ':' .. subject), 1, 32)
  redis.call('XADD', key.events, '*', 'id', id, 'type', etype, 'account', account, 'sid', session_id, 'uid', upload_id,
             'status', status, 'reason', reason, 'lib', library_id, 'at', arg.now_ms)
end
