"""The re-drive: work whose job is gone, found through the two indexes the state scripts keep.

- Completions: a file enters `sg:completing` when a complete call queues its job, and leaves it when that work ends
  (verified, refused, failed, canceled, expired). An entry older than REDRIVE_MIN_AGE_MS whose job is neither queued
  nor running goes back to `uploading` with a stable reason; the client's next complete starts a new attempt.
- Hand-offs: a completed group enters `sg:handoff` with its processing job, and leaves it once a consumer has taken
  the job (arq removes a job's document only when it has finished it). The job is never queued a second time
  because it is missing; a consumer's failure (its kept result says so) is recorded, shown and counted, and an
  operator retries it (`spatialgen-admin handoffs retry`).

Every overdue entry is looked at on every pass, page by page, wherever it sits in the index.
"""

from __future__ import annotations

import logging

import msgspec

from app.domain import reasons
from app.domain.clock import now_ms
from app.domain.lifecycle import Reply
from app.domain.reasons import Reason
from app.settings import Settings
from app.state import UploadState
from app.state.keys import COMPLETING_INDEX, HANDOFF_INDEX

log = logging.getLogger("spatialgen.upkeep")

REDRIVE_MIN_AGE_MS = 30_000
"""A completion or hand-off younger than this is not judged yet (its job is normally just starting)."""
REDRIVE_BATCH = 500
"""Index entries looked at per round trip."""
INTERRUPTED = reasons.stored(Reason.COMPLETION_INTERRUPTED)
"""The stable reason a file is handed back with when its completion job is gone."""


def consumer_failed(result: bytes | None) -> bool:
    """True when a kept arq result (msgpack, our job format) says the consumer's job failed.

    A consumer that keeps no result (keep_result=0), or writes it in another format, is never judged failed.
    """
    if result is None:
        return False
    try:
        doc = msgspec.msgpack.decode(result)
    except (msgspec.DecodeError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("s") is False


async def redrive(state: UploadState, settings: Settings, *, now: int | None = None) -> dict[str, int]:
    """One pass over both indexes; returns what it did."""
    now = now_ms() if now is None else now
    counts = {"completions_handed_back": 0, "completions_running": 0, "processing_waiting": 0,
              "processing_taken": 0, "processing_failed": 0, "processing_requeued": 0}  # fmt: skip
    offset = 0
    while members := await state.overdue(COMPLETING_INDEX, now - REDRIVE_MIN_AGE_MS, offset=offset,
                                         limit=REDRIVE_BATCH):  # fmt: skip
        replies = await state.redrive_completions(members, now_ms=now, reason=INTERRUPTED)
        counts["completions_handed_back"] += sum(r.code is Reply.OK for r in replies)
        kept = sum(r.code in (Reply.RUNNING, Reply.STALE) for r in replies)  # still in the index
        counts["completions_running"] += kept
        offset += kept
    offset = 0
    queue = settings.worker.processing_queue_name
    while sids := await state.overdue(HANDOFF_INDEX, now - REDRIVE_MIN_AGE_MS, offset=offset, limit=REDRIVE_BATCH):
        replies = await state.redrive_handoffs(sids, queue=queue, now_ms=now_ms())  # a queue score: arq's clock
        waiting = sum(r.code in (Reply.RUNNING, Reply.QUEUED) for r in replies)
        counts["processing_waiting"] += waiting
        counts["processing_requeued"] += sum(r.code is Reply.QUEUED for r in replies)
        taken = [sid for sid, r in zip(sids, replies, strict=True) if r.code is Reply.OK]
        counts["processing_taken"] += len(taken)
        failed = [sid for sid, result in zip(taken, await state.processing_results(taken), strict=True)
                  if consumer_failed(result)]  # fmt: skip
        await state.record_handoff_failures(failed, now_ms=now)
        counts["processing_failed"] += len(failed)
        offset += waiting
    if counts["completions_handed_back"] or counts["processing_failed"] or counts["processing_requeued"]:
        log.warning("re-drive: %s", counts)
    return counts
