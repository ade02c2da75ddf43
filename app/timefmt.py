"""Time in the service: integer epoch milliseconds inside, SPEC's ISO form outside.

`2026-05-06T18:42:11.000Z` is the only timestamp format the API emits.
"""

from __future__ import annotations

import functools
import time


def now_ms() -> int:
    """Current wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


@functools.lru_cache(maxsize=8)
def _seconds_part(second: int) -> str:
    # Formatting through time.gmtime is ~5x cheaper than datetime's strftime; a burst of calls shares a second.
    t = time.gmtime(second)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def iso_ms(epoch_ms: int) -> str:
    """Format epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    return f"{_seconds_part(epoch_ms // 1000)}.{epoch_ms % 1000:03d}Z"
