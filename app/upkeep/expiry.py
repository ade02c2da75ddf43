"""The expiry sweep (SPEC 2.6): groups past their expiresAt become `expired`, and accounts over their cap of ended
groups are trimmed.

Due groups are found through the time-ordered index (`sg:expiry`), never by scanning keys; each one changes in
its own script (group and unfinished files `expired`, index entry removed, quota given back, purges queued).
"""

from __future__ import annotations

import contextlib

from app.domain.clock import now_ms
from app.domain.lifecycle import Reply
from app.settings import Settings
from app.state import UploadState
from app.state.jobs import ending
from app.state.keys import METRICS_KEY, MetricField

SWEEP_BATCH = 500
"""Groups read from the index and expired per round trip."""


async def expire_due_groups(state: UploadState, settings: Settings, *, now: int | None = None) -> int:
    """Expire every group past its expiresAt, found through the time-ordered index; returns how many.

    Each group changes in one script, pipelined SWEEP_BATCH at a time. Sweeps racing each other (several
    workers on one cron tick) change each group once; a sweep that dies halfway leaves the rest in the
    index for the next tick.
    """
    now = now_ms() if now is None else now
    expired = 0
    while True:
        due = await state.due_groups(now, SWEEP_BATCH)
        if not due:
            return expired
        found = await state.records(due)
        ends = [ending(settings, sid, r.key_prefix if r else "") for sid, r in zip(due, found, strict=True)]
        outcomes = await state.expire_groups(
            due, now_ms=now, idle_retention_ms=settings.uploads.idle_group_seconds * 1000, ends=ends, records=found
        )
        expired += sum(1 for reply in outcomes if reply.code is Reply.OK)
        if len(due) < SWEEP_BATCH:
            return expired


async def expiry_sweep(state: UploadState, settings: Settings) -> int:
    """One tick of the cron: expire due groups (counted in the shared metrics), then trim the accounts whose ended
    groups are over the cap; returns how many groups expired."""
    expired = await expire_due_groups(state, settings)
    if expired:
        with contextlib.suppress(Exception):  # a lost count never fails the sweep
            await state.redis.hincrby(METRICS_KEY, MetricField.GROUPS_EXPIRED, expired)  # type: ignore[misc]
    await state.trim_ended(settings.limits.retained_ended_groups)
    return expired
