"""Bounded waiting: read something until it says "done" or the time is up (the API's waits on workers).

The one place that decides how often we look and how long we wait, for part-urls, complete and parts. Looks start
close together (a fast worker answers within tens of milliseconds) and spread out (doubling, up to once a second),
so a client waiting five seconds costs about ten reads, not a hundred.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
FIRST_INTERVAL = 0.05
MAX_INTERVAL = 1.0


async def poll_until(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, within: float,
    interval: float = FIRST_INTERVAL, max_interval: float = MAX_INTERVAL, first_after: float = 0.0,
) -> tuple[T, bool]:  # fmt: skip
    """Call `read` after `first_after` s (capped by `within`), then after `interval` s, doubling the pause up to
    `max_interval`, until `done(value)` or `within` s have passed; returns (last value, done). A wait of 0 s still
    looks once (at once), and the last look is at the deadline. `first_after` skips looks that cannot succeed
    (work queued a moment ago is not done yet)."""
    deadline = time.monotonic() + within
    if first_after > 0:
        await asyncio.sleep(min(first_after, within))
    pause = interval
    while True:
        value = await read()
        if done(value):
            return value, True
        left = deadline - time.monotonic()
        if left <= 0:
            return value, False
        await asyncio.sleep(min(pause, left))
        pause = min(max_interval, pause * 2)
