"""UploadState: typed calls over the state scripts and the reads of a group; the only code that runs them.

Every write is one script (atomic, one round trip); replies come back as `ScriptReply` with a `Reply` code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from app.domain.lifecycle import Reply
from app.domain.limits import Quota, Rate, RateState, RouteClass
from app.domain.records import GroupRecord
from app.state import keys
from app.state.jobs import JobSpec, LibraryTemplate, complete_job_id, process_job_id
from app.state.keys import (
    COMPLETING_INDEX,
    EXPIRY_INDEX,
    HANDOFF_INDEX,
    METRICS_KEY,
    arq_in_progress_key,
    arq_job_key,
    group_key,
    parts_key,
    state_key,
    upload_ids_key,
)
from app.state.pipeline import ScriptPipeline
from app.state.scripts import StateScript, all_scripts
from app.state.snapshot import GroupSnapshot, Progress, decode_group, decode_parts, encode_group, encode_parts

PARTS_CACHE_MS = 120_000
"""Part lists are a cache of ListParts: kept long enough for a resuming client to read them after a refresh,
not for the group's whole life (a 10,000-part list is ~500 KB)."""


class ScriptReply(NamedTuple):
    """A state script's answer: what happened, and the values that go with it (see each .lua header)."""

    code: Reply
    values: tuple[Any, ...] = ()

    def text(self, i: int = 0) -> str:
        """Value i as text."""
        v = self.values[i]
        return v.decode() if isinstance(v, bytes) else str(v)


def _reply(raw: list[Any], *, keep_bytes: bool = False) -> ScriptReply:
    code = Reply(raw[0].decode() if isinstance(raw[0], bytes) else raw[0])
    values = raw[1:] if keep_bytes else [v.decode() if isinstance(v, bytes) else v for v in raw[1:]]
    return ScriptReply(code, tuple(values))


class UploadState:
    """Typed access to upload-group state in Redis."""

    def __init__(self, redis: Redis, *, write_replicas: int = 0) -> None:
        self.redis = redis
        self.write_replicas = write_replicas  # creates and completions wait for this many replicas (WAIT)
        self._pipeline = ScriptPipeline(redis)
        self._scripts = all_scripts()
        self._registered: dict[str, AsyncScript] = {
            name: redis.register_script(s.source) for name, s in self._scripts.items()
        }

    def close(self) -> None:
        """Close the pipelined connection (the redis-py client is closed by its owner)."""
        self._pipeline.close()

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script now, so a broken one stops the process at start, not on first use."""
        for script in self._scripts.values():
            sha = await self.redis.script_load(script.source)
            if sha != script.sha:  # pragma: no cover - Redis hashes what we hashed
                raise RuntimeError(f"{script.name}: Redis loaded it as {sha}, expected {script.sha}")

    async def _run(self, name: str, *, client: Any = None, replicated: bool = False, **values: Any) -> Any:
        """Run a script: on the shared pipelined connection, or queued in a redis-py pipeline (`client`).

        replicated: the write must reach SPATIALGEN_REDIS_WRITE_REPLICAS replicas before it counts.
        """
        script: StateScript = self._scripts[name]
        keys_, args = script.bind(**values)
        registered = self._registered[name]
        if client is None:
            return await self._pipeline(registered, keys_, args, replicas=self.write_replicas if replicated else 0)
        return await registered(keys=keys_, args=args, client=client)

    # --- create and reads -------------------------------------------------------------------------

    async def create_group(
        self, record: GroupRecord, *, key_id: str, rate: Rate, quota: Quota, idle_expires_ms: int, key_ttl_ms: int,
        job: JobSpec, idem_key: str | None, idem_value: bytes, idem_ttl_ms: int,
    ) -> tuple[ScriptReply, RateState]:  # fmt: skip
        """The key's rate limit, the account's quotas, then group, files, indexes, usage, idempotency answer and
        provisioning job, atomically: CREATED, REPLAY (values[0]: the stored idempotency value, bytes),
        COLLISION, RATE_LIMITED or QUOTA_EXCEEDED (values: limit name, limit, use); with the bucket's state.
        """
        sid = record.session_id
        raw = await self._run(
            "create_group", replicated=True,
            group=group_key(sid), state=state_key(sid), expiry_index=EXPIRY_INDEX,
            account_index=keys.account_index_key(record.account), idempotency=idem_key or "",
            bucket=keys.bucket_key(key_id, RouteClass.CREATE), limits=keys.limits_key(record.account),
            usage=keys.usage_key(record.account),
            group_blob=encode_group(record), session_id=sid, created_ms=record.created_ms,
            expires_ms=record.expires_ms, idle_expires_ms=idle_expires_ms, key_ttl_ms=key_ttl_ms,
            idem_value=idem_value, idem_ttl_ms=idem_ttl_ms, default_rate=rate.per_second, default_burst=rate.burst,
            max_groups=quota.live_groups, max_bytes=quota.live_bytes, declared_bytes=record.declared_bytes,
            provision=job, upload_ids=[f.upload_id for f in record.files],
        )  # fmt: skip
        code, remaining, retry_ms, per_second, burst, *values = raw
        state = RateState(code != b"rate_limited", int(remaining), int(retry_ms), float(per_second), int(burst))
        return _reply([code, *values], keep_bytes=True), state

    async def take_token(self, key_id: str, account: str, route_class: RouteClass, rate: Rate) -> RateState:
        """One request's token from the key's bucket for a route class."""
        raw = await self._run(
            "take_token", bucket=keys.bucket_key(key_id, route_class), limits=keys.limits_key(account),
            route_class=route_class.value, default_rate=rate.per_second, default_burst=rate.burst,
        )  # fmt: skip
        code, remaining, retry_ms, per_second, burst = raw
        return RateState(code == b"ok", int(remaining), int(retry_ms), float(per_second), int(burst))

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

    async def library_record(self, session_id: str) -> dict[str, Any] | None:
        """The library record of a completed group."""
        raw = await self.redis.get(keys.library_key(session_id))
        return None if raw is None else msgspec.json.decode(raw, type=dict[str, Any])

    async def received_parts(self, session_id: str, upload_id: str) -> list[tuple[int, str, int]]:
        """The tracked parts of a file: (partNumber, etag, size), in part order."""
        raw = await self.redis.get(parts_key(session_id, upload_id))
        return [] if raw is None else decode_parts(raw)

    async def due_groups(self, now_ms: int, limit: int) -> list[str]:
        """Session ids whose expiresAt has passed, oldest first (the index, never a key scan)."""
        return [x.decode() for x in await self.redis.zrangebyscore(EXPIRY_INDEX, "-inf", now_ms, start=0, num=limit)]

    # --- file and group transitions ---------------------------------------------------------------

    async def record_s3_upload(self, record: GroupRecord, upload_id: str, s3_upload_id: str) -> ScriptReply:
        """Attach an S3 multipart upload id to a file: OK, RECORDED (another id, values[0]) or why not."""
        sid = record.session_id
        return _reply(await self._run(
            "record_s3_upload", state=state_key(sid), upload_ids=upload_ids_key(sid), upload_id=upload_id,
            s3_upload_id=s3_upload_id, position=record.index(upload_id) + 1, file_count=len(record.files),
        ))  # fmt: skip

    async def mark_uploading(self, record: GroupRecord, upload_id: str, now_ms: int) -> ScriptReply:
        """First part-urls call of a file: OK, or why not (GONE, EXPIRED, GROUP_STATE, FILE_STATE)."""
        return _reply(await self._run(
            "mark_uploading", state=state_key(record.session_id), expiry_index=EXPIRY_INDEX, upload_id=upload_id,
            now_ms=now_ms, expires_ms=record.expires_ms, session_id=record.session_id,
        ))  # fmt: skip

    async def begin_complete(
        self, record: GroupRecord, upload_id: str, *, now_ms: int, attempt_seen: int, job: JobSpec
    ) -> ScriptReply:
        """Move a file to 'completing' and queue its job: OK, STALE, or why not."""
        return _reply(await self._run(
            "begin_complete", state=state_key(record.session_id), completing_index=COMPLETING_INDEX,
            expiry_index=EXPIRY_INDEX,
            upload_id=upload_id, now_ms=now_ms, expires_ms=record.expires_ms, attempt_seen=attempt_seen,
            session_id=record.session_id, complete=job,
        ))  # fmt: skip

    async def finish_complete(
        self, record: GroupRecord, upload_id: str, *, now_ms: int, retention_ms: int, library: LibraryTemplate,
        processing_queue: str,
    ) -> ScriptReply:  # fmt: skip
        """Mark a verified file completed: FILE_COMPLETED, GROUP_COMPLETED (values[0]: libraryId) or why not."""
        sid = record.session_id
        job_id = process_job_id(sid)
        return _reply(await self._run(
            "finish_complete", replicated=True,
            state=state_key(sid), group=group_key(sid), library=keys.library_key(sid),
            library_counter=keys.LIBRARY_COUNTER, expiry_index=EXPIRY_INDEX, handoff_index=HANDOFF_INDEX,
            metrics=METRICS_KEY, usage=keys.usage_key(record.account),
            process_job=keys.arq_job_key(job_id), process_result=keys.arq_result_key(job_id),
            process_queue=processing_queue,
            upload_id=upload_id, now_ms=now_ms, retention_ms=retention_ms, session_id=sid,
            expires_ms=record.expires_ms, library_tail=library.record_tail, process_id=job_id,
            job_head=library.job_head, job_tail=library.job_tail, job_expires_ms=0,
            declared_bytes=record.declared_bytes,
            upload_ids=[f.upload_id for f in record.files],
        ))  # fmt: skip

    async def reject_complete(self, session_id: str, upload_id: str, *, attempt: int, now_ms: int, reason: str) -> bool:
        """Storage refused the parts: back to 'uploading' with the reason kept (False: another attempt owns it)."""
        out = _reply(await self._run(
            "reject_complete", state=state_key(session_id), upload_id=upload_id, now_ms=now_ms, reason=reason,
            attempt=attempt,
        ))  # fmt: skip
        return out.code is Reply.OK

    async def fail_file(
        self, record: GroupRecord, upload_id: str, *, now_ms: int, reason: str, retention_ms: int,
        purges: tuple[JobSpec, JobSpec], ended_cap: int = 0,
    ) -> bool:  # fmt: skip
        """The assembled object is wrong: file and group become 'failed' and the group's storage is purged.

        ended_cap (here and for cancel and expiry): the account's ended groups kept at most (0: no cap; see trim_ended).
        """
        sid = record.session_id
        out = _reply(await self._run(
            "fail_file", state=state_key(sid), group=group_key(sid), expiry_index=EXPIRY_INDEX,
            usage=keys.usage_key(record.account), declared_bytes=record.declared_bytes,
            ended=keys.ended_index_key(record.account), trim=keys.TRIM_QUEUE, account=record.account,
            ended_cap=ended_cap,
            upload_id=upload_id, now_ms=now_ms, reason=reason, retention_ms=retention_ms, session_id=sid,
            purge=purges[0], late_purge=purges[1], upload_ids=[f.upload_id for f in record.files],
        ))  # fmt: skip
        return out.code is Reply.OK

    async def cancel_group(
        self, record: GroupRecord, *, now_ms: int, retention_ms: int, purges: tuple[JobSpec, JobSpec],
        ended_cap: int = 0,
    ) -> ScriptReply:  # fmt: skip
        """Cancel a live group: OK (values: canceledAt ms, canceled file count; also on repeats) or why not."""
        sid = record.session_id
        return _reply(await self._run(
            "cancel_group", state=state_key(sid), group=group_key(sid), expiry_index=EXPIRY_INDEX,
            usage=keys.usage_key(record.account), declared_bytes=record.declared_bytes,
            ended=keys.ended_index_key(record.account), trim=keys.TRIM_QUEUE, account=record.account,
            ended_cap=ended_cap,
            now_ms=now_ms, expires_ms=record.expires_ms, retention_ms=retention_ms, session_id=sid,
            purge=purges[0], late_purge=purges[1], upload_ids=[f.upload_id for f in record.files],
        ))  # fmt: skip

    async def records(self, session_ids: Sequence[str]) -> list[GroupRecord | None]:
        """The records of several groups in one round trip (None where the keys are gone)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in session_ids:
                pipe.get(group_key(sid))
            blobs = await pipe.execute()
        return [decode_group(b) if b is not None else None for b in blobs]

    async def expire_groups(
        self, session_ids: Sequence[str], *, now_ms: int, retention_ms: int, idle_retention_ms: int,
        purges: Sequence[tuple[JobSpec, JobSpec]], ended_cap: int = 0,
        records: Sequence[GroupRecord | None] | None = None,
    ) -> list[ScriptReply]:  # fmt: skip
        """Expire each due group (one script each, pipelined in one round trip); records: already read."""
        found = await self.records(session_ids) if records is None else records
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid, record, (purge, late) in zip(session_ids, found, purges, strict=True):
                account, declared = (record.account, record.declared_bytes) if record else ("", 0)
                await self._run(
                    "expire_group", client=pipe, state=state_key(sid), group=group_key(sid),
                    expiry_index=EXPIRY_INDEX, usage=keys.usage_key(account), now_ms=now_ms,
                    retention_ms=retention_ms, idle_retention_ms=idle_retention_ms, session_id=sid,
                    declared_bytes=declared, purge=purge, late_purge=late, ended=keys.ended_index_key(account),
                    trim=keys.TRIM_QUEUE, account=account, ended_cap=ended_cap,
                )  # fmt: skip
            out = await pipe.execute()
        return [_reply(x) for x in out]

    async def trim_ended(self, cap: int) -> int:
        """Drop the ended groups due to go first of every account queued for it (by the scripts above) down to `cap`.

        The groups are terminal (canceled, expired, failed: nothing revives them), so their keys go before their
        retention lapses; a status read then answers 404. Storage they may still hold is their purge jobs' (which
        carry the group's prefix), then the orphan sweep's and the reconciliation's. Each account
        is popped by one sweep (and queued again if the trim fails); a sweep that dies between ZPOPMIN and DEL
        leaves those few groups to their TTL. Returns how many.
        """
        dropped = 0
        while (popped := await self.redis.spop(keys.TRIM_QUEUE)) is not None:  # type: ignore[misc]
            account = popped.decode() if isinstance(popped, bytes) else str(popped)
            try:
                dropped += await self._trim_account(account, cap)
            except BaseException:
                await self.redis.sadd(keys.TRIM_QUEUE, account)  # type: ignore[misc]  # the next sweep tries again
                raise
        return dropped

    async def _trim_account(self, account: str, cap: int) -> int:
        ended = keys.ended_index_key(account)
        excess = int(await self.redis.zcard(ended)) - cap
        if cap <= 0 or excess <= 0:
            return 0
        first = [m.decode() for m, _ in await self.redis.zpopmin(ended, excess)]  # due to go first anyway
        if not first:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in first:
                pipe.delete(group_key(sid), state_key(sid), keys.upload_ids_key(sid), keys.library_key(sid))
            pipe.zrem(keys.account_index_key(account), *first)
            await pipe.execute()
        return len(first)

    async def record_parts(
        self, session_id: str, upload_id: str, parts: Sequence[tuple[int, str, int]] | None, *, progress: Progress,
        cache_ms: int = PARTS_CACHE_MS,
    ) -> bool:  # fmt: skip
        """Store what storage has received for a file: the summary, and the part list as a short-lived cache."""
        out = _reply(await self._run(
            "record_parts", state=state_key(session_id), parts=parts_key(session_id, upload_id),
            upload_id=upload_id, summary=progress.encode(),
            parts_blob=b"" if parts is None else encode_parts(list(parts)), cache_ms=cache_ms,
        ))  # fmt: skip
        return out.code is Reply.OK

    async def redrive_completion(
        self, session_id: str, upload_id: str, *, attempt: int, now_ms: int, reason: str
    ) -> ScriptReply:
        """Hand a file whose completion job is gone back to 'uploading': OK, RUNNING, STALE, GONE or FILE_STATE."""
        job_id = complete_job_id(session_id, upload_id, attempt)
        return _reply(await self._run(
            "redrive_completion", state=state_key(session_id), completing_index=COMPLETING_INDEX,
            job=arq_job_key(job_id), in_progress=arq_in_progress_key(job_id), member=f"{session_id}:{upload_id}",
            upload_id=upload_id, attempt=attempt, now_ms=now_ms, reason=reason,
        ))  # fmt: skip

    async def redrive_handoff(self, session_id: str, job: JobSpec) -> ScriptReply:
        """A completed group's processing job: RUNNING (waiting), OK (picked up), QUEUED (was lost) or GONE."""
        return _reply(await self._run(
            "redrive_handoff", handoff_index=HANDOFF_INDEX, library=keys.library_key(session_id),
            in_progress=arq_in_progress_key(job.job_id), session_id=session_id, process=job,
        ))  # fmt: skip

    async def completing_since(self, before_ms: int, limit: int) -> list[tuple[str, str]]:
        """(sessionId, uploadId) of files that entered 'completing' before `before_ms`, oldest first."""
        members = await self.redis.zrangebyscore(COMPLETING_INDEX, "-inf", before_ms, start=0, num=limit)
        return [(sid, uid) for sid, _, uid in (m.decode().partition(":") for m in members)]

    async def handoffs_since(self, before_ms: int, limit: int) -> list[str]:
        """Completed groups (oldest first) whose processing job was not yet seen picked up."""
        return [m.decode() for m in await self.redis.zrangebyscore(HANDOFF_INDEX, "-inf", before_ms, start=0,
                                                                      num=limit)]  # fmt: skip

    async def enqueue(self, *jobs: JobSpec) -> int:
        """Enqueue arq jobs in one round trip; ids already queued (or with a kept result) are skipped."""
        return int(_reply(await self._run("enqueue_jobs", jobs=list(jobs))).values[0])
