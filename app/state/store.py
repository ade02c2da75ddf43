"""UploadState: the typed calls the upload steps make over the state scripts (the upkeep's are in upkeep_calls.py).

Every write is one script (atomic, one round trip); replies come back as `ScriptReply` with a `Reply` code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from app.domain.lifecycle import Reply
from app.domain.limits import Quota, Rate, RateState, RouteClass
from app.domain.records import GroupRecord
from app.state import keys
from app.state.jobs import Ending, JobSpec, LibraryTemplate, process_job_id
from app.state.keys import (
    COMPLETING_INDEX,
    EXPIRY_INDEX,
    HANDOFF_INDEX,
    METRICS_KEY,
    group_key,
    parts_key,
    state_key,
    upload_ids_key,
)
from app.state.runner import ScriptReply, reply_of
from app.state.snapshot import Progress, decode_parts, encode_group, encode_parts
from app.state.upkeep_calls import UpkeepCalls

PARTS_CACHE_MS = 120_000
"""Part lists are a cache of ListParts: kept long enough for a resuming client to read them after a refresh,
not for the group's whole life (a 10,000-part list is ~500 KB)."""


class UploadState(UpkeepCalls):
    """Typed access to upload-group state in Redis: the steps' calls here, the upkeep's in UpkeepCalls."""

    async def create_group(
        self, record: GroupRecord, *, key_id: str, rate: Rate, quota: Quota, idle_expires_ms: int, key_ttl_ms: int,
        idem_key: str | None, idem_value: bytes, idem_ttl_ms: int,
    ) -> tuple[ScriptReply, RateState]:  # fmt: skip
        """The key's rate limit, the account's quotas, then group, files, indexes, usage and idempotency answer,
        atomically: CREATED, REPLAY (values[0]: the stored idempotency value, bytes),
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
            upload_ids=[f.upload_id for f in record.files],
        )  # fmt: skip
        code, remaining, retry_ms, per_second, burst, *values = raw
        state = RateState(code != b"rate_limited", int(remaining), int(retry_ms), float(per_second), int(burst))
        return reply_of([code, *values], keep_bytes=True), state

    async def take_token(
        self, key_id: str, account: str, route_class: RouteClass, rate: Rate, *, cost: int = 1, capped: bool = True
    ) -> RateState:
        """`cost` tokens (all or none) from the key's bucket for a route class. A cost over the bucket's burst is
        charged the burst when `capped`, else refused with retry_ms -1 (it can never be paid)."""
        raw = await self._run(
            "take_token", bucket=keys.bucket_key(key_id, route_class), limits=keys.limits_key(account),
            route_class=route_class.value, default_rate=rate.per_second, default_burst=rate.burst, cost=cost,
            capped=int(capped),
        )  # fmt: skip
        code, remaining, retry_ms, per_second, burst = raw
        return RateState(code == b"ok", int(remaining), int(retry_ms), float(per_second), int(burst))

    async def library_record(self, session_id: str) -> dict[str, Any] | None:
        """The library record of a completed group."""
        raw = await self.redis.get(keys.library_key(session_id))
        return None if raw is None else msgspec.json.decode(raw, type=dict[str, Any])

    async def received_parts(self, session_id: str, upload_id: str) -> list[tuple[int, str, int]]:
        """The tracked parts of a file: (partNumber, etag, size), in part order."""
        raw = await self.redis.get(parts_key(session_id, upload_id))
        return [] if raw is None else decode_parts(raw)

    async def record_s3_upload(self, record: GroupRecord, upload_id: str, s3_upload_id: str) -> ScriptReply:
        """Attach an S3 multipart upload id to a file: OK, RECORDED (another id, values[0]) or why not."""
        sid = record.session_id
        return reply_of(await self._run(
            "record_s3_upload", state=state_key(sid), upload_ids=upload_ids_key(sid), upload_id=upload_id,
            s3_upload_id=s3_upload_id, position=record.index(upload_id) + 1, file_count=len(record.files),
        ))  # fmt: skip

    async def mark_uploading(
        self, record: GroupRecord, upload_id: str, now_ms: int, *, algorithm: str = "", late: bool = False
    ) -> ScriptReply:
        """First part-urls call of a file, fixing its checksum algorithm (`algorithm`, '' for none) with its status:
        OK (values[0]: the file's algorithm, '' for none), or why not (GONE, EXPIRED, GROUP_STATE, FILE_STATE,
        CHECKSUM_CONFLICT with the file's algorithm). `late`: an uploading file without one may still take one."""
        return reply_of(await self._run(
            "mark_uploading", state=state_key(record.session_id), expiry_index=EXPIRY_INDEX, upload_id=upload_id,
            now_ms=now_ms, expires_ms=record.expires_ms, session_id=record.session_id, algorithm=algorithm,
            late=int(late),
        ))  # fmt: skip

    async def begin_complete(
        self, record: GroupRecord, upload_id: str, *, now_ms: int, attempt_seen: int, job: JobSpec
    ) -> ScriptReply:
        """Move a file to 'completing' and queue its job: OK, STALE, or why not."""
        return reply_of(await self._run(
            "begin_complete", state=state_key(record.session_id), completing_index=COMPLETING_INDEX,
            expiry_index=EXPIRY_INDEX,
            upload_id=upload_id, now_ms=now_ms, expires_ms=record.expires_ms, attempt_seen=attempt_seen,
            session_id=record.session_id, complete=job,
        ))  # fmt: skip

    async def finish_complete(
        self, record: GroupRecord, upload_id: str, *, now_ms: int, retention_ms: int, library: LibraryTemplate,
        processing_queue: str, checksum: str = "", checksums_seen: str = "",
    ) -> ScriptReply:  # fmt: skip
        """Mark a verified file completed, and fully received: FILE_COMPLETED, GROUP_COMPLETED (values[0]:
        libraryId) or why not. `checksum`: the verified checksum to record (encoded, '' for none);
        `checksums_seen`: the files' checksums the library template was built with (GroupSnapshot.checksums_seen,
        this file's as `checksum`), CHECKSUMS_CHANGED when another file's changed meanwhile."""
        f = record.files[record.index(upload_id)]
        sid = record.session_id
        job_id = process_job_id(sid)
        return reply_of(await self._run(
            "finish_complete", replicated=True,
            state=state_key(sid), group=group_key(sid), library=keys.library_key(sid),
            library_counter=keys.LIBRARY_COUNTER, expiry_index=EXPIRY_INDEX, completing_index=COMPLETING_INDEX,
            handoff_index=HANDOFF_INDEX,
            metrics=METRICS_KEY, usage=keys.usage_key(record.account),
            process_job=keys.arq_job_key(job_id), process_result=keys.arq_result_key(job_id),
            process_queue=processing_queue, webhooks=keys.webhook_registry_key(record.account),
            events=keys.EVENTS_STREAM, account=record.account,
            upload_id=upload_id, now_ms=now_ms, retention_ms=retention_ms, session_id=sid,
            expires_ms=record.expires_ms, library_tail=library.record_tail, process_id=job_id,
            job_head=library.job_head, job_tail=library.job_tail, job_expires_ms=0,
            declared_bytes=record.declared_bytes, progress=Progress(f.total_parts, f.total_bytes, now_ms).encode(),
            checksum=checksum, checksums_seen=checksums_seen, upload_ids=[g.upload_id for g in record.files],
        ))  # fmt: skip

    async def reject_complete(self, session_id: str, upload_id: str, *, attempt: int, now_ms: int, reason: str) -> bool:
        """Storage refused the parts: back to 'uploading' with the reason kept (False: another attempt owns it)."""
        out = reply_of(await self._run(
            "reject_complete", state=state_key(session_id), completing_index=COMPLETING_INDEX, upload_id=upload_id,
            now_ms=now_ms, reason=reason, attempt=attempt, session_id=session_id,
        ))  # fmt: skip
        return out.code is Reply.OK

    async def fail_file(self, record: GroupRecord, upload_id: str, *, now_ms: int, reason: str, end: Ending) -> bool:
        """The assembled object is wrong: file and group become 'failed' and the group's storage is purged."""
        out = reply_of(await self._run(
            "fail_file", **self._ending_values(record, record.session_id, end), upload_id=upload_id, now_ms=now_ms,
            reason=reason, retention_ms=end.retention_ms, upload_ids=[f.upload_id for f in record.files],
        ))  # fmt: skip
        return out.code is Reply.OK

    async def cancel_group(self, record: GroupRecord, *, now_ms: int, end: Ending) -> ScriptReply:
        """Cancel a live group: OK (values: canceledAt ms, canceled file count; also on repeats) or why not."""
        return reply_of(await self._run(
            "cancel_group", **self._ending_values(record, record.session_id, end), now_ms=now_ms,
            expires_ms=record.expires_ms, retention_ms=end.retention_ms, upload_ids=[f.upload_id for f in record.files],
        ))  # fmt: skip

    async def record_parts(
        self, session_id: str, upload_id: str, parts: Sequence[tuple[int, str, int]] | None, *, progress: Progress,
        cache_ms: int = PARTS_CACHE_MS,
    ) -> bool:  # fmt: skip
        """Store what storage has received for a file: the summary, and the part list as a short-lived cache."""
        out = reply_of(await self._run(
            "record_parts", state=state_key(session_id), parts=parts_key(session_id, upload_id),
            upload_id=upload_id, summary=progress.encode(),
            parts_blob=b"" if parts is None else encode_parts(list(parts)), cache_ms=cache_ms,
        ))  # fmt: skip
        return out.code is Reply.OK

    async def note_provisioning(self, session_id: str, upload_id: str, now_ms: int) -> None:
        """A try to open a file's multipart upload begins (before CreateMultipartUpload): if it stops before recording
        the upload, the next try knows to look for it and adopt it."""
        field = keys.file_field(keys.FileField.PROVISIONING, upload_id)
        await self.redis.hset(state_key(session_id), field, str(now_ms))  # type: ignore[misc]

    async def enqueue(self, *jobs: JobSpec) -> int:
        """Enqueue arq jobs in one round trip; ids already queued (or with a kept result) are skipped."""
        return int(reply_of(await self._run("enqueue_jobs", jobs=list(jobs))).values[0])
