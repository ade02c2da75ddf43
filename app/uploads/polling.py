"""Bounded waiting: read something until it says "done" or the time is up (the API's waits on workers).

The one place that decides how often we look and how long we wait, for part-urls, complete and parts. Looks start
close together (a fast worker answers within tens of milliseconds) and spread out (doubling, up to once a second),
so a client waiting five seconds costs about ten reads, not a hundred.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
FIRST_INTERVAL = 0.05
MAX_INTERVAL = 1.0


async def poll_until(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, within: float,
    interval: float = FIRST_INTERVAL, max_interval: float = MAX_INTERVAL, first_after: float = 0.0,
    wake: asyncio.Event | None = None,
) -> tuple[T, bool]:  # fmt: skip
    """Call `read` after `first_after` s (capped by `within`), then after `interval` s, doubling the pause up to
    `max_interval`, until `done(value)` or `within` s have passed; returns (last value, done). A wait of 0 s still
    looks once (at once), and the last look is at the deadline. `first_after` skips looks that cannot succeed
    (work queued a moment ago is not done yet). `wake`, when set, cuts the current pause short (a notification that
    what `read` looks at has changed); it is cleared before each look."""
    deadline = time.monotonic() + within
    if first_after > 0:
        await _pause(min(first_after, within), wake)
    pause = interval
    while True:
        if wake is not None:
            wake.clear()
        value = await read()
        if done(value):
            return value, True
        left = deadline - time.monotonic()
        if left <= 0:
            return value, False
        await _pause(min(pause, left), wake)
        pause = min(max_interval, pause * 2)


async def _pause(seconds: float, wake: asyncio.Event | None) -> None:
    if wake is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), seconds)
