"""Time in the service: integer epoch milliseconds inside, SPEC's ISO form outside, read from an injectable clock.

`2026-05-06T18:42:11.000Z` is the only timestamp format the API emits. Code that decides by time (lifetimes,
expiry, staleness, URL lifetimes) reads a `Clock`, so a test can move time instead of sleeping on it.
"""

from __future__ import annotations

import functools
import time
from typing import Protocol


class Clock(Protocol):
    """Where "now" comes from."""

    def now_ms(self) -> int:
        """Current time in epoch milliseconds."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        """Current wall-clock time in epoch milliseconds."""
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that stands still until moved (tests: a group's expiry without waiting for it)."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.ms = SYSTEM_CLOCK.now_ms() if start_ms is None else start_ms

    def now_ms(self) -> int:
        """The time it was set to."""
        return self.ms

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.ms += round(seconds * 1000)


SYSTEM_CLOCK = SystemClock()


def now_ms() -> int:
    """The wall clock's current time in epoch milliseconds (where no clock is injected: logs, metrics, jobs)."""
    return SYSTEM_CLOCK.now_ms()


@functools.lru_cache(maxsize=8)
def _seconds_part(second: int) -> str:
    # Formatting through time.gmtime is ~5x cheaper than datetime's strftime; a burst of calls shares a second.
    t = time.gmtime(second)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def iso_ms(epoch_ms: int) -> str:
    """Format epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    return f"{_seconds_part(epoch_ms // 1000)}.{epoch_ms % 1000:03d}Z"
