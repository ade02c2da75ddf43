"""UploadState's calls for the upkeep: expiry, the storage sweeps' evidence, the re-drive, hand-offs, locks.

Every write is one script (app/state/lua); reads are pipelined, one round trip per batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from app.domain.records import GroupRecord
from app.state import keys
from app.state.jobs import Ending, JobSpec, complete_job_id, process_job_id
from app.state.keys import (
    COMPLETING_INDEX,
    EXPIRY_INDEX,
    HANDOFF_INDEX,
    METRICS_KEY,
    arq_in_progress_key,
    arq_job_key,
    group_key,
    state_key,
    upload_ids_key,
)
from app.state.runner import ScriptReply, ScriptRunner, reply_of
from app.state.snapshot import GroupSnapshot, decode_group


class UpkeepCalls(ScriptRunner):
    """The calls the upkeep (app/upkeep), the worker's liveness and the admin CLI make."""

    instance_key = keys.INSTANCE_KEY

    async def claim_instance(self) -> str:
        """This Redis's identity: written once (SET NX) by the first service process that starts on it, so a Redis
        that lost its data gets a new one (app/upkeep/identity.py)."""
        await self.redis.set(keys.INSTANCE_KEY, uuid.uuid4().hex, nx=True)
        current = await self.redis.get(keys.INSTANCE_KEY)
        return current.decode() if current else ""

    async def evidence(self, session_ids: Sequence[str]) -> dict[str, tuple[GroupSnapshot | None, str | None]]:
        """What Redis knows of each group, in one round trip: its snapshot, and its end record's status (canceled,
        expired, failed) if it has one. What the storage sweeps decide on."""
        ids = list(dict.fromkeys(session_ids))
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.get(group_key(sid))
                pipe.hgetall(state_key(sid))
                pipe.get(upload_ids_key(sid))
                pipe.get(keys.tombstone_key(sid))
            raw = await pipe.execute()
        out: dict[str, tuple[GroupSnapshot | None, str | None]] = {}
        for i, sid in enumerate(ids):
            blob, raw_state, raw_ids, tomb = raw[4 * i : 4 * i + 4]
            snap = None
            if blob is not None and raw_state:
                state = {k.decode(): v.decode() for k, v in raw_state.items()}
                snap = GroupSnapshot(decode_group(blob), state, tuple(raw_ids.decode().split("\n")) if raw_ids else ())
            out[sid] = (snap, tomb.decode().partition("\n")[0] if tomb else None)
        return out

    async def end_record(self, session_id: str) -> tuple[str, str] | None:
        """A group's end record: (status, storage prefix), while deletion may still be pending."""
        raw = await self.redis.get(keys.tombstone_key(session_id))
        if raw is None:
            return None
        status, _, prefix = raw.decode().partition("\n")
        return status, prefix

    async def due_groups(self, now_ms: int, limit: int) -> list[str]:
        """Session ids whose expiresAt has passed, oldest first (the index, never a key scan)."""
        return [x.decode() for x in await self.redis.zrangebyscore(EXPIRY_INDEX, "-inf", now_ms, start=0, num=limit)]

    # --- file and group transitions ---------------------------------------------------------------

    async def expire_groups(
        self, session_ids: Sequence[str], *, now_ms: int, idle_retention_ms: int, ends: Sequence[Ending],
        records: Sequence[GroupRecord | None] | None = None,
    ) -> list[ScriptReply]:  # fmt: skip
        """Expire each due group (one script each, pipelined in one round trip); records: already read."""
        found = await self.records(session_ids) if records is None else records
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid, record, end in zip(session_ids, found, ends, strict=True):
                await self._run(
                    "expire_group", client=pipe, **self._ending_values(record, sid, end), now_ms=now_ms,
                    retention_ms=end.retention_ms, idle_retention_ms=idle_retention_ms,
                )  # fmt: skip
            out = await pipe.execute()
        return [reply_of(x) for x in out]

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

    async def overdue(self, index: str, before_ms: int, *, offset: int, limit: int) -> list[str]:
        """Members of a re-drive index (COMPLETING_INDEX, HANDOFF_INDEX) older than before_ms, oldest first, from
        position `offset` (the entries a pass keeps are skipped on its next page)."""
        return [m.decode() for m in await self.redis.zrangebyscore(index, "-inf", before_ms, start=offset, num=limit)]

    async def redrive_completions(
        self, members: Sequence[str], *, now_ms: int, reason: str
    ) -> list[ScriptReply]:  # fmt: skip
        """For each `sessionId:uploadId` of the completing index, in two round trips: a file whose completion job is
        gone goes back to 'uploading' (OK); RUNNING, STALE, GONE or FILE_STATE otherwise."""
        pairs = [m.partition(":")[::2] for m in members]
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid, uid in pairs:
                pipe.hget(state_key(sid), keys.file_field(keys.FileField.ATTEMPT, uid))
            attempts = [int(a or 0) for a in await pipe.execute()]
        async with self.redis.pipeline(transaction=False) as pipe:
            for member, (sid, uid), attempt in zip(members, pairs, attempts, strict=True):
                job_id = complete_job_id(sid, uid, attempt)
                await self._run(
                    "redrive_completion", client=pipe, state=state_key(sid), completing_index=COMPLETING_INDEX,
                    job=arq_job_key(job_id), in_progress=arq_in_progress_key(job_id), member=member, upload_id=uid,
                    attempt=attempt, now_ms=now_ms, reason=reason,
                )  # fmt: skip
            return [reply_of(x) for x in await pipe.execute()]

    async def redrive_handoffs(self, session_ids: Sequence[str], *, queue: str, now_ms: int) -> list[ScriptReply]:
        """Where each completed group's processing job stands (redrive_handoff.lua), in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in session_ids:
                job_id = process_job_id(sid)
                await self._run(
                    "redrive_handoff", client=pipe, state=state_key(sid), handoff_index=HANDOFF_INDEX,
                    library=keys.library_key(sid), process_job=arq_job_key(job_id), process_queue=queue,
                    session_id=sid, process_id=job_id, now_ms=now_ms,
                )  # fmt: skip
            return [reply_of(x) for x in await pipe.execute()]

    async def processing_results(self, session_ids: Sequence[str]) -> list[bytes | None]:
        """arq's kept results of the groups' processing jobs (None where the consumer keeps none)."""
        if not session_ids:
            return []
        return list(await self.redis.mget([keys.arq_result_key(process_job_id(sid)) for sid in session_ids]))

    async def record_handoff_failures(self, session_ids: Sequence[str], *, now_ms: int) -> None:
        """The consumer finished these groups' processing jobs with an error: visible in the status document, the
        failed-handoffs index (spatialgen-admin handoffs) and the metrics; an operator retries them."""
        if not session_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in session_ids:
                pipe.hset(state_key(sid), keys.Field.HANDOFF, keys.HandoffState.FAILED)
                pipe.zadd(keys.HANDOFF_FAILED_INDEX, {sid: now_ms})
            pipe.hincrby(METRICS_KEY, keys.MetricField.HANDOFFS_FAILED, len(session_ids))
            await pipe.execute()

    async def retry_handoff(self, session_id: str, job: JobSpec, *, now_ms: int) -> ScriptReply:
        """Queue a group's failed processing job again (retry_handoff.lua): OK, GONE, or STALE (it did not fail)."""
        return reply_of(await self._run(
            "retry_handoff", state=state_key(session_id), handoff_index=HANDOFF_INDEX,
            failed_index=keys.HANDOFF_FAILED_INDEX, library=keys.library_key(session_id), session_id=session_id,
            now_ms=now_ms, process=job,
        ))  # fmt: skip

    async def shorten_locks(self, queue: str, *, now_ms: int, lock_ms: int, slack_ms: int, limit: int) -> int:
        """Shorten the long in-progress locks of the first `limit` due jobs of a queue (shorten_locks.lua)."""
        return int(reply_of(await self._run(
            "shorten_locks", queue=queue, now_ms=now_ms, lock_ms=lock_ms, slack_ms=slack_ms, limit=limit
        )).values[0])  # fmt: skip
