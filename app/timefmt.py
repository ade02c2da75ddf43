"""Time in the service: integer epoch milliseconds inside, SPEC's ISO form outside.

`2026-05-06T18:42:11.000Z` is the only timestamp format the API emits.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    """Current wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def iso_ms(epoch_ms: int) -> str:
    """Format epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    dt = datetime.fromtimestamp(epoch_ms // 1000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"
