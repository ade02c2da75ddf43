"""Redis state of upload groups: every key prefix, every Lua script, and the typed calls over them.

Each state change that touches several keys is one Lua script, so it is atomic and costs one round trip.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import msgspec
from arq.constants import default_queue_name, expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from app.models import FileStatus, GroupRecord, GroupStatus

# ---------------------------------------------------------------------------------------------
# Keys. Everything of one group shares the hash tag {sessionId}, so a group's keys sit on one
# Cluster slot. The indexes (expiry, per-account) and arq's queue keys are global by nature.
# ---------------------------------------------------------------------------------------------
PREFIX = "sg:"
EXPIRY_INDEX = f"{PREFIX}expiry"  # zset: sessionId scored by expiresAt (ms)
LIBRARY_COUNTER = f"{PREFIX}library:next"
API_KEYS_INDEX = f"{PREFIX}apikeys"  # zset: key hash scored by creation time (ms)


def group_key(session_id: str) -> str:
    """Immutable group record (msgpack)."""
    return f"{PREFIX}{{{session_id}}}:g"


def state_key(session_id: str) -> str:
    """Mutable state hash: `st` group status, `<uploadId>` file status, `u:<uploadId>` S3 upload id."""
    return f"{PREFIX}{{{session_id}}}:s"


def account_index_key(account: str) -> str:
    """zset of an account's sessionIds scored by creation time (ms)."""
    return f"{PREFIX}account:{account}"


def idempotency_key(account: str, key_digest: str) -> str:
    """Remembered answer of a create carrying an Idempotency-Key."""
    return f"{PREFIX}idem:{account}:{key_digest}"


def api_key_key(key_digest: str) -> str:
    """Hash describing one API key (account, role, label, created)."""
    return f"{PREFIX}apikey:{key_digest}"


def library_key(library_id: int) -> str:
    """The library record created when a group completes."""
    return f"{PREFIX}library:{library_id}"


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


def f_upload(upload_id: str) -> str:
    """State field of a file's S3 multipart upload id."""
    return f"u:{upload_id}"


def f_reason(upload_id: str) -> str:
    """State field of a file's failure reason."""
    return f"r:{upload_id}"


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
if KEYS[5] ~= '' then redis.call('SET', KEYS[5], ARGV[6], 'PX', ARGV[7]) end
enqueue(KEYS[6], KEYS[7], KEYS[8], ARGV[8], ARGV[9], ARGV[10], ARGV[11])
return {'created'}
"""
)

# KEYS: state. ARGV: upload id, S3 upload id.
# Returns 'ok', 'dead' (group no longer live: abort the upload) or the id already recorded.
RECORD_S3_UPLOAD = """
local st = redis.call('HGET', KEYS[1], 'st')
if not st or (st ~= 'initialized' and st ~= 'uploading') then return 'dead' end
local fst = redis.call('HGET', KEYS[1], ARGV[1])
if fst ~= 'initialized' and fst ~= 'uploading' then return 'dead' end
local field = 'u:' .. ARGV[1]
local have = redis.call('HGET', KEYS[1], field)
if have then return have end
redis.call('HSET', KEYS[1], field, ARGV[2])
return 'ok'
"""


class GroupSnapshot(msgspec.Struct, frozen=True):
    """A group's record and its mutable state, read in one round trip."""

    record: GroupRecord
    state: dict[str, str]

    @property
    def status(self) -> GroupStatus:
        """Current group status."""
        return GroupStatus(self.state.get(F_STATUS, GroupStatus.EXPIRED))

    def file_status(self, upload_id: str) -> FileStatus:
        """Current status of one file."""
        return FileStatus(self.state.get(upload_id, FileStatus.EXPIRED))

    def s3_upload_id(self, upload_id: str) -> str | None:
        """The S3 multipart upload id recorded for a file, if provisioned."""
        return self.state.get(f_upload(upload_id))


_group_decoder = msgspec.msgpack.Decoder(GroupRecord)
_encoder = msgspec.msgpack.Encoder()


def encode_group(record: GroupRecord) -> bytes:
    """msgpack bytes of a group record (array-like: compact in Redis)."""
    return _encoder.encode(record)


class UploadState:
    """Typed access to upload-group state in Redis; every write is one script."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._create = redis.register_script(CREATE_GROUP)
        self._record_s3_upload = redis.register_script(RECORD_S3_UPLOAD)

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
        result = await self._create(keys=keys, args=args)
        outcome = result[0].decode()
        return outcome, (result[1] if len(result) > 1 else None)

    async def snapshot(self, session_id: str) -> GroupSnapshot | None:
        """Read a group's record and state in one round trip; None if unknown or removed."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(group_key(session_id))
            pipe.hgetall(state_key(session_id))
            blob, raw_state = await pipe.execute()
        if blob is None or not raw_state:
            return None
        state = {k.decode(): v.decode() for k, v in raw_state.items()}
        return GroupSnapshot(_group_decoder.decode(blob), state)

    async def record_s3_upload(self, session_id: str, upload_id: str, s3_upload_id: str) -> str:
        """Attach an S3 multipart upload id to a file: 'ok', 'dead', or the id already recorded."""
        out = await self._record_s3_upload(keys=[state_key(session_id)], args=[upload_id, s3_upload_id])
        return out.decode() if isinstance(out, bytes) else str(out)
