"""Bounded waiting: read something until it says "done" or the time is up (the API's waits on workers).

The one place that decides how often we look and how long we wait, for part-urls, complete and parts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def poll_until(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, within: float, interval: float = 0.05
) -> tuple[T, bool]:
    """Call `read` now and then every `interval` s until `done(value)`; returns (last value, done).

    The first read happens at once, so a wait of 0 s still looks once.
    """
    deadline = time.monotonic() + within
    while True:
        value = await read()
        if done(value):
            return value, True
        if time.monotonic() >= deadline:
            return value, False
        await asyncio.sleep(interval)
