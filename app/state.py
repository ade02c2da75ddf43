"""Redis state of upload groups: every key prefix, every Lua script, and the typed calls over them.

Each state change that touches several keys is one Lua script, so it is atomic and costs one round trip.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Sequence
from typing import Any

import msgspec
from arq.constants import default_queue_name, expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from app.models import FileStatus, GroupRecord, GroupStatus
from app.settings import Settings

# ---------------------------------------------------------------------------------------------
# Keys. Everything of one group shares the hash tag {sessionId}, so a group's keys sit on one
# Cluster slot. The indexes (expiry, per-account) and arq's queue keys are global by nature.
# ---------------------------------------------------------------------------------------------
PREFIX = "sg:"
EXPIRY_INDEX = f"{PREFIX}expiry"  # zset: sessionId scored by expiresAt (ms)
LIBRARY_COUNTER = f"{PREFIX}library:next"  # INCR source of libraryIds
LIBRARY_INDEX = f"{PREFIX}library:index"  # hash: libraryId -> sessionId
API_KEYS_INDEX = f"{PREFIX}apikeys"  # zset: key hash scored by creation time (ms)


def group_key(session_id: str) -> str:
    """Immutable group record (msgpack)."""
    return f"{PREFIX}{{{session_id}}}:g"


def state_key(session_id: str) -> str:
    """Mutable state hash: `st` group status, `<uploadId>` file status, `p:<uploadId>` progress, timestamps."""
    return f"{PREFIX}{{{session_id}}}:s"


def upload_ids_key(session_id: str) -> str:
    """The files' S3 multipart upload ids, newline-joined in file order ('' for single-PUT files).

    Kept out of the state hash on purpose: S3 upload ids are ~100+ bytes, and one value over
    hash-max-listpack-value (64) turns the whole hash into a far bigger hashtable encoding.
    """
    return f"{PREFIX}{{{session_id}}}:u"


def parts_key(session_id: str, upload_id: str) -> str:
    """Parts the store has received for a file (msgpack list of [partNumber, etag, size])."""
    return f"{PREFIX}{{{session_id}}}:parts:{upload_id}"


def account_index_key(account: str) -> str:
    """zset of an account's sessionIds scored by creation time (ms)."""
    return f"{PREFIX}account:{account}"


def idempotency_key(account: str, key_digest: str) -> str:
    """Remembered answer of a create carrying an Idempotency-Key."""
    return f"{PREFIX}idem:{account}:{key_digest}"


def api_key_key(key_digest: str) -> str:
    """Hash describing one API key (account, role, label, created)."""
    return f"{PREFIX}apikey:{key_digest}"


def library_key(session_id: str) -> str:
    """The library record created when the group completes (JSON, see README)."""
    return f"{PREFIX}{{{session_id}}}:library"


def arq_job_key(job_id: str) -> str:
    """arq's key holding a queued job."""
    return job_key_prefix + job_id


def arq_result_key(job_id: str) -> str:
    """arq's key holding a finished job's result."""
    return result_key_prefix + job_id


# State hash fields.
F_STATUS = "st"
F_CREATED = "tc"
F_UPDATED = "tu"
F_CANCELED = "tx"
F_COMPLETED = "td"
F_LIBRARY = "lib"
F_CANCELED_FILES = "cx"


def f_reason(upload_id: str) -> str:
    """State field of a file's failure (or last rejected completion) reason."""
    return f"r:{upload_id}"


def f_progress(upload_id: str) -> str:
    """State field: "parts:bytes:refreshed_ms" the store had received when last tracked."""
    return f"p:{upload_id}"


def f_attempt(upload_id: str) -> str:
    """State field counting a file's completion attempts (part of the complete job's id)."""
    return f"n:{upload_id}"


# arq jobs the scripts enqueue. Ids are deterministic, so a duplicated enqueue is a no-op.
PROVISION_JOB = "provision_group"
COMPLETE_JOB = "complete_file"
PURGE_JOB = "purge_group"
PROCESS_JOB = "process_asset_set"  # consumed by the downstream pipeline from its own queue
REFRESH_PARTS_JOB = "refresh_parts"
EXPIRE_CRON = "expire_due_groups"
ORPHAN_CRON = "abort_orphan_uploads"


def provision_job_id(session_id: str) -> str:
    """Job that opens a group's multipart uploads."""
    return f"provision:{session_id}"


def complete_job_id(session_id: str, upload_id: str, attempt: int) -> str:
    """Job that completes one file; a rejected completion is retried under the next attempt number."""
    return f"complete:{session_id}:{upload_id}:{attempt}"


def purge_job_ids(session_id: str) -> tuple[str, str]:
    """Purge now, and once more after the last presigned URL has lapsed (a late PUT can't leave data)."""
    return f"purge:{session_id}", f"purge:{session_id}:late"


def refresh_job_id(session_id: str, upload_id: str, *, later: bool = False) -> str:
    """Parts refresh of one file. While one is queued, asking again is a no-op: that coalesces polling."""
    return f"parts{'-later' if later else ''}:{session_id}:{upload_id}"


def process_job_id(session_id: str) -> str:
    """The processing job of a completed group."""
    return f"process:{session_id}"


class JobSpec(msgspec.Struct, frozen=True):
    """An arq job ready to be written by a script: id, queue and the pickled payload arq expects."""

    job_id: str
    queue: str
    blob: bytes
    score_ms: int
    expires_ms: int

    @classmethod
    def build(
        cls,
        function: str,
        args: Sequence[Any],
        *,
        job_id: str,
        now_ms: int,
        queue: str = default_queue_name,
        defer_ms: int = 0,
    ) -> JobSpec:
        """Serialize exactly as `ArqRedis.enqueue_job` would, so an unmodified worker runs it."""
        blob = serialize_job(function, tuple(args), {}, None, now_ms, serializer=pickle.dumps)
        return cls(job_id, queue, blob, now_ms + defer_ms, defer_ms + expires_extra_ms)


def purge_jobs(settings: Settings, session_id: str, now: int) -> tuple[JobSpec, JobSpec]:
    """Purge now, and again once every URL handed out has lapsed (a late PUT can't leave data)."""
    first, late = purge_job_ids(session_id)
    q = settings.queue_name
    return (
        JobSpec.build(PURGE_JOB, (session_id,), job_id=first, now_ms=now, queue=q),
        JobSpec.build(
            PURGE_JOB, (session_id,), job_id=late, now_ms=now, queue=q,
            defer_ms=(settings.part_url_ttl_seconds + 60) * 1000,
        ),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Lua. Shared snippets are prepended to the scripts that need them.
# ---------------------------------------------------------------------------------------------

# arq's enqueue, inlined: a job id that is queued or has a kept result is not enqueued again.
_LUA_ENQUEUE = """
local function enqueue(job_key, result_key, queue_key, job_id, blob, expires_ms, score)
  if redis.call('EXISTS', job_key, result_key) > 0 then return 0 end
  redis.call('PSETEX', job_key, expires_ms, blob)
  redis.call('ZADD', queue_key, score, job_id)
  return 1
end
"""

# KEYS: group, state, expiry index, account index, idempotency (or ''), job, result, queue
# ARGV: group blob, session id, created ms, expires ms, key ttl ms, idem value, idem ttl ms,
#       job id, job blob, job expires ms, job score, then file upload ids...
CREATE_GROUP = (
    _LUA_ENQUEUE
    + """
if KEYS[5] ~= '' then
  local seen = redis.call('GET', KEYS[5])
  if seen then return {'replay', seen} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'collision'} end
local ttl = tonumber(ARGV[5])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('HSET', KEYS[2], 'st', 'initialized', 'tc', ARGV[3], 'tu', ARGV[3])
for i = 12, #ARGV do redis.call('HSET', KEYS[2], ARGV[i], 'initialized') end
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', tonumber(ARGV[3]) - ttl)  -- groups whose keys are gone
if KEYS[5] ~= '' then redis.call('SET', KEYS[5], ARGV[6], 'PX', ARGV[7]) end
enqueue(KEYS[6], KEYS[7], KEYS[8], ARGV[8], ARGV[9], ARGV[10], ARGV[11])
return {'created'}
"""
)

# KEYS: state, upload ids. ARGV: upload id, S3 upload id, file position (1-based), file count.
# Returns 'ok', 'dead' (group no longer live: abort the upload) or the id already recorded.
RECORD_S3_UPLOAD = """
local st = redis.call('HGET', KEYS[1], 'st')
if not st or (st ~= 'initialized' and st ~= 'uploading') then return 'dead' end
local fst = redis.call('HGET', KEYS[1], ARGV[1])
if fst ~= 'initialized' and fst ~= 'uploading' then return 'dead' end
local raw = redis.call('GET', KEYS[2]) or ''
local ids, pos = {}, 1
for i = 1, tonumber(ARGV[4]) do
  local stop = string.find(raw, '\\n', pos, true)
  if stop then ids[i] = string.sub(raw, pos, stop - 1); pos = stop + 1
  else ids[i] = string.sub(raw, pos); pos = #raw + 2 end
end
local at = tonumber(ARGV[3])
if ids[at] ~= '' then return ids[at] end
ids[at] = ARGV[2]
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('SET', KEYS[2], table.concat(ids, '\\n'), 'PX', ttl)
else redis.call('SET', KEYS[2], table.concat(ids, '\\n')) end
return 'ok'
"""


# Group states a file may still change in.
_LUA_LIVE = """
local function live(st) return st == 'initialized' or st == 'uploading' end
"""

# KEYS: state. ARGV: upload id, now ms, expires ms.
# First part-urls call of a file: file (and group) become 'uploading'.
MARK_UPLOADING = (
    _LUA_LIVE
    + """
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return 'gone' end
if not live(st) then return st end
if tonumber(ARGV[2]) >= tonumber(ARGV[3]) then return 'expired' end
local f = redis.call('HGET', KEYS[1], ARGV[1])
if f == 'initialized' then
  redis.call('HSET', KEYS[1], ARGV[1], 'uploading', 'tu', ARGV[2])
elseif f ~= 'uploading' then
  return 'file:' .. tostring(f)
end
if st == 'initialized' then redis.call('HSET', KEYS[1], 'st', 'uploading') end
return 'ok'
"""
)

# KEYS: state, job, result, queue. ARGV: upload id, now ms, expires ms, attempt seen, job id, blob,
# job expires ms, score. Moves the file to 'completing' and queues its complete job, or says why not.
BEGIN_COMPLETE = (
    _LUA_ENQUEUE
    + _LUA_LIVE
    + """
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return {'gone'} end
if not live(st) then return {st} end
if tonumber(ARGV[2]) >= tonumber(ARGV[3]) then return {'expired'} end
local f = redis.call('HGET', KEYS[1], ARGV[1])
if f ~= 'initialized' and f ~= 'uploading' then return {'file', tostring(f)} end
local attempt = redis.call('HGET', KEYS[1], 'n:' .. ARGV[1]) or '0'
if attempt ~= ARGV[4] then return {'stale'} end
redis.call('HSET', KEYS[1], ARGV[1], 'completing', 'n:' .. ARGV[1], tonumber(attempt) + 1, 'tu', ARGV[2])
redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
if st == 'initialized' then redis.call('HSET', KEYS[1], 'st', 'uploading') end
enqueue(KEYS[2], KEYS[3], KEYS[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return {'ok'}
"""
)

# KEYS: state, group, library record, library counter, library index, expiry index,
#       processing job, processing result, processing queue.
# ARGV: upload id, now ms, retention ms, session id, library JSON tail, job blob head, job blob tail,
#       job expires ms, group expires ms, then every upload id of the group.
# The verified file becomes 'completed'. If it was the group's last, in the same step: group
# 'completed', one libraryId, one library record, one processing job. Nothing else can interleave,
# so concurrent completions (and a racing cancel) yield exactly one of each or none.
FINISH_COMPLETE = (
    _LUA_ENQUEUE
    + _LUA_LIVE
    + """
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return {'gone'} end
local f = redis.call('HGET', KEYS[1], ARGV[1])
if live(st) and tonumber(ARGV[2]) >= tonumber(ARGV[9]) then st = 'expired' end  -- the sweep will mark it
if not live(st) then
  -- canceled, failed or expired while we assembled it: the file shares the group's fate
  if f == 'completing' then redis.call('HSET', KEYS[1], ARGV[1], st) end
  return {'dead', st}
end
if f ~= 'completing' then return {'stale', tostring(f)} end
redis.call('HSET', KEYS[1], ARGV[1], 'completed', 'tu', ARGV[2])
for i = 10, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= 'completed' then return {'file_completed'} end
end
local lib = redis.call('INCR', KEYS[4])
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'st', 'completed', 'td', ARGV[2], 'lib', lib)
redis.call('SET', KEYS[3], '{"libraryId":' .. lib .. ARGV[5], 'PX', ttl)
redis.call('HSET', KEYS[5], lib, ARGV[4])
redis.call('ZREM', KEYS[6], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
-- The processing job's pickle carries the libraryId as a 4-byte little-endian BININT.
local le = string.char(lib % 256, math.floor(lib / 256) % 256, math.floor(lib / 65536) % 256,
                       math.floor(lib / 16777216) % 256)
local blob = ARGV[6] .. le .. ARGV[7]
enqueue(KEYS[7], KEYS[8], KEYS[9], 'process:' .. ARGV[4], blob, ARGV[8], ARGV[2])
return {'group_completed', lib}
"""
)

# KEYS: state. ARGV: upload id, now ms, reason, attempt. The store refused the parts (or the job gave
# up): back to 'uploading' so the client can fix it. Only the attempt that owns 'completing' may do it.
REJECT_COMPLETE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'completing' then return 0 end
if redis.call('HGET', KEYS[1], 'n:' .. ARGV[1]) ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 'uploading', 'r:' .. ARGV[1], ARGV[3], 'tu', ARGV[2])
return 1
"""

# KEYS: state, group, expiry index, then (job, result, queue) for the purge now and the late purge.
# ARGV: upload id, now ms, reason, retention ms, session id, purge id, blob, expires, score,
#       late purge id, blob, expires, score, then every upload id.
# The assembled object is wrong: file and group 'failed' (terminal), storage purged.
FAIL_FILE = (
    _LUA_ENQUEUE
    + _LUA_LIVE
    + """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'completing' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 'failed', 'r:' .. ARGV[1], ARGV[3], 'tu', ARGV[2])
local st = redis.call('HGET', KEYS[1], 'st')
if live(st) then
  -- the set can never complete: every other unfinished file fails with it (completed ones stay so)
  for i = 14, #ARGV do
    if ARGV[i] ~= ARGV[1] and redis.call('HGET', KEYS[1], ARGV[i]) ~= 'completed' then
      redis.call('HSET', KEYS[1], ARGV[i], 'failed', 'r:' .. ARGV[i], 'another file of the group failed')
    end
  end
  redis.call('HSET', KEYS[1], 'st', 'failed', 'tf', ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  enqueue(KEYS[4], KEYS[5], KEYS[6], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
  enqueue(KEYS[7], KEYS[8], KEYS[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13])
end
return 1
"""
)

# KEYS: state, group, expiry index, then (job, result, queue) for the purge now and the late purge.
# ARGV: now ms, expires ms, retention ms, session id, purge id, blob, expires, score,
#       late purge id, blob, expires, score, then every upload id.
# Returns {'canceled', canceledAt, canceledFileCount} (also on repeats) or {status} if it can't.
CANCEL_GROUP = (
    _LUA_ENQUEUE
    + _LUA_LIVE
    + """
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return {'gone'} end
if st == 'canceled' then
  return {'canceled', redis.call('HGET', KEYS[1], 'tx'), redis.call('HGET', KEYS[1], 'cx')}
end
if not live(st) then return {st} end
if tonumber(ARGV[1]) >= tonumber(ARGV[2]) then return {'expired'} end
local n = 0
for i = 13, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= 'completed' then
    redis.call('HSET', KEYS[1], ARGV[i], 'canceled')
    n = n + 1
  end
end
redis.call('HSET', KEYS[1], 'st', 'canceled', 'tx', ARGV[1], 'cx', n, 'tu', ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
enqueue(KEYS[4], KEYS[5], KEYS[6], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
enqueue(KEYS[7], KEYS[8], KEYS[9], ARGV[9], ARGV[10], ARGV[11], ARGV[12])
return {'canceled', ARGV[1], tostring(n)}
"""
)


# KEYS: state, group, expiry index, then (job, result, queue) for the purge now and the late purge.
# ARGV: now ms, retention ms, session id, purge id, blob, expires, score, late id, blob, expires, score.
# Expires one due group: the group and its unfinished files become 'expired', storage is purged.
# Idempotent: sweeps racing on the same group change it once; a group no longer live (or whose
# keys are gone) just leaves the index, so the index never keeps dead entries.
EXPIRE_GROUP = (
    _LUA_ENQUEUE
    + _LUA_LIVE
    + """
local st = redis.call('HGET', KEYS[1], 'st')
if not st or not live(st) then
  redis.call('ZREM', KEYS[3], ARGV[3])
  return 'skipped:' .. (st or 'gone')
end
local due = redis.call('ZSCORE', KEYS[3], ARGV[3])
if due and tonumber(due) > tonumber(ARGV[1]) then return 'live' end
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  -- file status fields are named by the bare 36-character uploadId
  if #fields[i] == 36 and fields[i + 1] ~= 'completed' then redis.call('HSET', KEYS[1], fields[i], 'expired') end
end
redis.call('HSET', KEYS[1], 'st', 'expired', 'te', ARGV[1], 'tu', ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
enqueue(KEYS[4], KEYS[5], KEYS[6], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
enqueue(KEYS[7], KEYS[8], KEYS[9], ARGV[8], ARGV[9], ARGV[10], ARGV[11])
return 'expired'
"""
)

# KEYS: state, parts. ARGV: upload id, "parts:bytes:ms", parts blob ('' = none), parts cache ms.
# The summary lives as long as the group; the part list is a cache of ListParts (storage is the truth).
RECORD_PARTS = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'p:' .. ARGV[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
return 1
"""

# KEYS: (job, result, queue) per job. ARGV: (id, blob, expires, score) per job. Plain arq enqueues.
ENQUEUE_JOBS = (
    _LUA_ENQUEUE
    + """
local n = 0
for i = 0, #KEYS / 3 - 1 do
  n = n + enqueue(KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3], ARGV[4 * i + 1], ARGV[4 * i + 2],
                  ARGV[4 * i + 3], ARGV[4 * i + 4])
end
return n
"""
)


class LibraryTemplate(msgspec.Struct, frozen=True):
    """Library record and processing job, prepared before the libraryId exists.

    The id is minted by INCR inside FINISH_COMPLETE, so the script splices it in: the record is
    JSON whose first member is the id, and the job is arq's pickle with the id as a 4-byte BININT
    at a known offset (same length whatever the id, so pickle framing stays valid).
    """

    record_tail: bytes
    job_head: bytes
    job_tail: bytes

    @classmethod
    def build(cls, payload: dict[str, Any], *, now_ms: int) -> LibraryTemplate:
        """payload: the library document without libraryId (see README, "processing job")."""
        rest = msgspec.json.encode(payload)
        for sentinel in range(0x5A5A5A5A, 0x5A5A5A5A + 64):
            marker = b"J" + sentinel.to_bytes(4, "little")
            blob = serialize_job(PROCESS_JOB, ({"libraryId": sentinel, **payload},), {}, None, now_ms)
            if blob.count(marker) == 1:
                head, tail = blob.split(marker)
                return cls(b"," + rest[1:], head + b"J", tail)
        raise ValueError("could not place the libraryId marker in the processing job")  # pragma: no cover


class GroupSnapshot(msgspec.Struct, frozen=True):
    """A group's record and its mutable state, read in one round trip."""

    record: GroupRecord
    state: dict[str, str]
    upload_ids: tuple[str, ...] = ()

    @property
    def status(self) -> GroupStatus:
        """Current group status."""
        return GroupStatus(self.state.get(F_STATUS, GroupStatus.EXPIRED))

    def file_status(self, upload_id: str) -> FileStatus:
        """Current status of one file."""
        return FileStatus(self.state.get(upload_id, FileStatus.EXPIRED))

    def s3_upload_id(self, upload_id: str) -> str | None:
        """The S3 multipart upload id recorded for a file, if provisioned."""
        for f, s3_id in zip(self.record.files, self.upload_ids, strict=False):
            if f.upload_id == upload_id:
                return s3_id or None
        return None

    def attempt(self, upload_id: str) -> int:
        """How many completions of this file have been started."""
        return int(self.state.get(f_attempt(upload_id), 0))

    def reason(self, upload_id: str) -> str | None:
        """Why the file failed, or why its last completion was refused."""
        return self.state.get(f_reason(upload_id))

    def tracked(self, upload_id: str) -> tuple[int, int, int | None]:
        """(parts received, bytes received, refreshed at ms or None) as last tracked by workers."""
        raw = self.state.get(f_progress(upload_id))
        if not raw:
            return 0, 0, None
        count, size, refreshed = raw.split(":")
        return int(count), int(size), int(refreshed)

    def ms(self, field: str) -> int | None:
        """A timestamp field of the state hash (tc created, tu updated, tx canceled, td completed...)."""
        v = self.state.get(field)
        return int(v) if v else None

    @property
    def library_id(self) -> int | None:
        """The libraryId, once the group has completed."""
        lib = self.state.get(F_LIBRARY)
        return int(lib) if lib else None


# Part lists are a cache of ListParts: kept long enough for a resuming client to read them after a
# refresh, not for the group's whole life (a 10,000-part list is ~500 KB).
PARTS_CACHE_MS = 120_000

_group_decoder = msgspec.msgpack.Decoder(GroupRecord)
_parts_decoder = msgspec.msgpack.Decoder(list[tuple[int, str, int]])
_encoder = msgspec.msgpack.Encoder()


def encode_group(record: GroupRecord) -> bytes:
    """msgpack bytes of a group record (array-like: compact in Redis)."""
    return _encoder.encode(record)


def decode_group(blob: bytes) -> GroupRecord:
    """The group record stored by encode_group."""
    return _group_decoder.decode(blob)


class ScriptBatcher:
    """Auto-pipelining: script calls made in the same event-loop tick go to Redis as one pipeline.

    Under load many requests reach their Redis call in the same tick; one round trip for all of them
    costs far less CPU than one per request (redis-py's per-command overhead dominates our hot path).
    Each script stays atomic on its own; only the network trip is shared. A script Redis no longer
    knows (restart, SCRIPT FLUSH) falls back to the normal call, which loads it.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[tuple[AsyncScript, list[Any], list[Any], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """Run one script in the next shared pipeline and return its reply."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((script, keys, args, fut))
        return await fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)  # keep a reference until done
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[AsyncScript, list[Any], list[Any], asyncio.Future[Any]]]) -> None:
        # The RESP is written here rather than through redis-py's pipeline: its pack_command cost
        # ~180 µs for one create call (26 arguments, one a pickled job), more than the round trip.
        payload = b"".join(_resp(b"EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args, _ in batch)
        pool = self.redis.connection_pool
        replies: list[Any] = []
        try:
            conn = await pool.get_connection()
            try:
                await conn.send_packed_command(payload, check_health=False)
                for _ in batch:
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as exc:  # one script's error; the connection is still in sync
                        replies.append(exc)
            finally:
                await pool.release(conn)
        except Exception as exc:  # connection trouble: every caller gets it (-> 503)
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (script, keys, args, fut), reply in zip(batch, replies, strict=True):
            if fut.done():
                continue
            outcome = reply
            if isinstance(reply, NoScriptError):
                try:
                    outcome = await script(keys=keys, args=args)
                except Exception as exc:
                    outcome = exc
            if isinstance(outcome, Exception):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)


def _resp(*parts: bytes | str | int) -> bytes:
    """One command in the Redis protocol (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out += (b"$%d\r\n" % len(raw), raw, b"\r\n")
    return b"".join(out)


class UploadState:
    """Typed access to upload-group state in Redis; every write is one script."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._batch = ScriptBatcher(redis)
        self._create = redis.register_script(CREATE_GROUP)
        self._record_s3_upload = redis.register_script(RECORD_S3_UPLOAD)
        self._mark_uploading = redis.register_script(MARK_UPLOADING)
        self._begin_complete = redis.register_script(BEGIN_COMPLETE)
        self._finish_complete = redis.register_script(FINISH_COMPLETE)
        self._reject_complete = redis.register_script(REJECT_COMPLETE)
        self._fail_file = redis.register_script(FAIL_FILE)
        self._cancel = redis.register_script(CANCEL_GROUP)
        self._expire = redis.register_script(EXPIRE_GROUP)
        self._record_parts = redis.register_script(RECORD_PARTS)
        self._enqueue = redis.register_script(ENQUEUE_JOBS)

    async def create_group(
        self,
        record: GroupRecord,
        *,
        key_ttl_ms: int,
        job: JobSpec,
        idem_key: str | None,
        idem_value: bytes,
        idem_ttl_ms: int,
    ) -> tuple[str, bytes | None]:
        """Write group, files, indexes, idempotency answer and the provisioning job atomically.

        Returns ('created', None), ('replay', stored idempotency value) or ('collision', None).
        """
        sid = record.session_id
        keys = [
            group_key(sid),
            state_key(sid),
            EXPIRY_INDEX,
            account_index_key(record.account),
            idem_key or "",
            arq_job_key(job.job_id),
            arq_result_key(job.job_id),
            job.queue,
        ]
        args: list[Any] = [
            encode_group(record),
            sid,
            record.created_ms,
            record.expires_ms,
            key_ttl_ms,
            idem_value,
            idem_ttl_ms,
            job.job_id,
            job.blob,
            job.expires_ms,
            job.score_ms,
            *(f.upload_id for f in record.files),
        ]
        result = await self._batch(self._create, keys, args)
        outcome = result[0].decode()
        return outcome, (result[1] if len(result) > 1 else None)

    async def snapshot(self, session_id: str) -> GroupSnapshot | None:
        """Read a group's record and state in one round trip; None if unknown or removed."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(group_key(session_id))
            pipe.hgetall(state_key(session_id))
            pipe.get(upload_ids_key(session_id))
            blob, raw_state, raw_ids = await pipe.execute()
        if blob is None or not raw_state:
            return None
        state = {k.decode(): v.decode() for k, v in raw_state.items()}
        ids = tuple(raw_ids.decode().split("\n")) if raw_ids else ()
        return GroupSnapshot(decode_group(blob), state, ids)

    async def record_s3_upload(self, record: GroupRecord, upload_id: str, s3_upload_id: str) -> str:
        """Attach an S3 multipart upload id to a file: 'ok', 'dead', or the id already recorded."""
        sid = record.session_id
        args: list[Any] = [upload_id, s3_upload_id, record.index(upload_id) + 1, len(record.files)]
        out = await self._record_s3_upload(keys=[state_key(sid), upload_ids_key(sid)], args=args)
        return out.decode() if isinstance(out, bytes) else str(out)

    async def mark_uploading(self, record: GroupRecord, upload_id: str, now_ms: int) -> str:
        """First part-urls call: 'ok', or the status that forbids it ('canceled', 'expired', 'file:completed'...)."""
        out = await self._mark_uploading(
            keys=[state_key(record.session_id)], args=[upload_id, now_ms, record.expires_ms]
        )
        return str(out.decode())

    async def begin_complete(
        self, record: GroupRecord, upload_id: str, *, now_ms: int, attempt_seen: int, job: JobSpec
    ) -> list[str]:
        """Move a file to 'completing' and queue its job; returns ['ok'] or why not."""
        keys = [state_key(record.session_id), arq_job_key(job.job_id), arq_result_key(job.job_id), job.queue]
        args: list[Any] = [upload_id, now_ms, record.expires_ms, attempt_seen, job.job_id, job.blob, job.expires_ms,
                           job.score_ms]  # fmt: skip
        return [x.decode() for x in await self._begin_complete(keys=keys, args=args)]

    async def finish_complete(
        self, record: GroupRecord, upload_id: str, *, now_ms: int, retention_ms: int, library: LibraryTemplate,
        processing_queue: str,
    ) -> tuple[str, int | None]:  # fmt: skip
        """Mark a verified file completed; returns ('group_completed', libraryId) when it was the last."""
        sid = record.session_id
        job_id = process_job_id(sid)
        keys = [state_key(sid), group_key(sid), library_key(sid), LIBRARY_COUNTER, LIBRARY_INDEX, EXPIRY_INDEX,
                arq_job_key(job_id), arq_result_key(job_id), processing_queue]  # fmt: skip
        args: list[Any] = [upload_id, now_ms, retention_ms, sid, library.record_tail, library.job_head,
                           library.job_tail, expires_extra_ms, record.expires_ms,
                           *(f.upload_id for f in record.files)]  # fmt: skip
        out = await self._finish_complete(keys=keys, args=args)
        outcome = out[0].decode()
        return outcome, (int(out[1]) if outcome == "group_completed" else None)

    async def reject_complete(self, session_id: str, upload_id: str, *, attempt: int, now_ms: int, reason: str) -> bool:
        """The store refused the parts: back to 'uploading' with the reason kept."""
        args: list[Any] = [upload_id, now_ms, reason, attempt]
        return bool(await self._reject_complete(keys=[state_key(session_id)], args=args))

    async def fail_file(
        self, record: GroupRecord, upload_id: str, *, now_ms: int, reason: str, retention_ms: int,
        purges: tuple[JobSpec, JobSpec],
    ) -> bool:  # fmt: skip
        """The assembled object is wrong: file and group become 'failed' and the group's storage is purged."""
        sid = record.session_id
        keys = [state_key(sid), group_key(sid), EXPIRY_INDEX, *_job_keys(purges)]
        args = [upload_id, now_ms, reason, retention_ms, sid, *_job_args(purges), *(f.upload_id for f in record.files)]
        return bool(await self._fail_file(keys=keys, args=args))

    async def cancel_group(
        self, record: GroupRecord, *, now_ms: int, retention_ms: int, purges: tuple[JobSpec, JobSpec]
    ) -> list[str]:
        """Cancel a live group: ['canceled', canceledAt ms, canceled file count] (also on repeats) or [status]."""
        sid = record.session_id
        keys = [state_key(sid), group_key(sid), EXPIRY_INDEX, *_job_keys(purges)]
        args: list[Any] = [now_ms, record.expires_ms, retention_ms, sid, *_job_args(purges),
                           *(f.upload_id for f in record.files)]  # fmt: skip
        return [x.decode() for x in await self._cancel(keys=keys, args=args)]

    async def library_record(self, session_id: str) -> dict[str, Any] | None:
        """The library record of a completed group."""
        raw = await self.redis.get(library_key(session_id))
        return None if raw is None else msgspec.json.decode(raw, type=dict[str, Any])

    async def enqueue(self, *jobs: JobSpec) -> int:
        """Enqueue arq jobs in one round trip; ids already queued (or with a kept result) are skipped."""
        return int(await self._enqueue(keys=_job_keys(jobs), args=_job_args(jobs)))

    async def record_parts(
        self, session_id: str, upload_id: str, parts: Sequence[tuple[int, str, int]] | None, *, count: int,
        size: int, now_ms: int, cache_ms: int = PARTS_CACHE_MS,
    ) -> bool:  # fmt: skip
        """Store what the store has received for a file: the summary, and the part list as a short-lived cache."""
        blob = b"" if parts is None else _encoder.encode(list(parts))
        keys = [state_key(session_id), parts_key(session_id, upload_id)]
        return bool(await self._record_parts(keys=keys, args=[upload_id, f"{count}:{size}:{now_ms}", blob, cache_ms]))

    async def received_parts(self, session_id: str, upload_id: str) -> list[tuple[int, str, int]]:
        """The tracked parts of a file: (partNumber, etag, size), in part order."""
        raw = await self.redis.get(parts_key(session_id, upload_id))
        return [] if raw is None else _parts_decoder.decode(raw)

    async def due_groups(self, now_ms: int, limit: int) -> list[str]:
        """Session ids whose expiresAt has passed, oldest first (the index, never a key scan)."""
        return [x.decode() for x in await self.redis.zrangebyscore(EXPIRY_INDEX, "-inf", now_ms, start=0, num=limit)]

    async def expire_groups(
        self, session_ids: Sequence[str], *, now_ms: int, retention_ms: int, purges: Sequence[tuple[JobSpec, JobSpec]]
    ) -> list[str]:
        """Run EXPIRE_GROUP for each session in one pipelined round trip; returns each outcome."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid, jobs in zip(session_ids, purges, strict=True):
                keys = [state_key(sid), group_key(sid), EXPIRY_INDEX, *_job_keys(jobs)]
                await self._expire(keys=keys, args=[now_ms, retention_ms, sid, *_job_args(jobs)], client=pipe)
            out = await pipe.execute()
        return [x.decode() if isinstance(x, bytes) else str(x) for x in out]


def _job_keys(jobs: Sequence[JobSpec]) -> list[str]:
    return [k for j in jobs for k in (arq_job_key(j.job_id), arq_result_key(j.job_id), j.queue)]


def _job_args(jobs: Sequence[JobSpec]) -> list[Any]:
    return [a for j in jobs for a in (j.job_id, j.blob, j.expires_ms, j.score_ms)]
