"""The re-drive: work whose job is gone, found through the indexes the state scripts keep.

A completion stuck in `completing` whose job is neither queued nor running goes back to `uploading` with a stable
reason (the client's next complete starts a new attempt); a completed group whose processing job was lost gets it
queued again under the same id.
"""

from __future__ import annotations

import logging

from app.domain import reasons
from app.domain.clock import now_ms
from app.domain.lifecycle import Reply
from app.domain.reasons import Reason
from app.settings import Settings
from app.state import UploadState
from app.state.jobs import processing_job

log = logging.getLogger("spatialgen.upkeep")

REDRIVE_MIN_AGE_MS = 30_000
"""A completion or hand-off younger than this is not judged yet (its job is normally just starting)."""
REDRIVE_BATCH = 500
INTERRUPTED = reasons.stored(Reason.COMPLETION_INTERRUPTED)
"""The stable reason a file is handed back with when its completion job is gone."""


async def redrive(state: UploadState, settings: Settings, *, now: int | None = None) -> dict[str, int]:
    """Re-drive work whose job is gone: completions stuck in 'completing', and lost processing jobs.

    A file stays 'completing' only while its completion job is queued or running (arq keeps the job key
    until the job ends, after the job has recorded its outcome). A file 'completing' with neither key goes
    back to 'uploading' with a stable reason; the client's next complete starts a new attempt. A completed
    group whose processing job is neither queued, running nor finished gets it queued again, same id.
    """
    now = now_ms() if now is None else now
    counts = {"completions_handed_back": 0, "processing_requeued": 0}
    for sid, uid in await state.completing_since(now - REDRIVE_MIN_AGE_MS, REDRIVE_BATCH):
        snap = await state.snapshot(sid)
        attempt = snap.attempt(uid) if snap is not None else 0
        reply = await state.redrive_completion(sid, uid, attempt=attempt, now_ms=now, reason=INTERRUPTED)
        counts["completions_handed_back"] += reply.code is Reply.OK
    for sid in await state.handoffs_since(now - REDRIVE_MIN_AGE_MS, REDRIVE_BATCH):
        record = await state.library_record(sid)
        job = processing_job(sid, record or {}, settings.worker.processing_queue_name, now_ms())  # due at once
        reply = await state.redrive_handoff(sid, job)
        counts["processing_requeued"] += reply.code is Reply.QUEUED
    if any(counts.values()):
        log.warning("re-drive: %s", counts)
    return counts
