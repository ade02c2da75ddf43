"""When to try again: exponential backoff with full jitter, Retry-After parsing, and the retry limits.

Pure functions; the API layer and the part uploader decide *whether* to retry, this module decides *when*.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

PART_MAX_FAILURES = 10
"""Consecutive failures of one part that stop the run (it stays resumable)."""
API_MAX_ATTEMPTS = 10
"""Tries of one API call on connection errors, 429 rate_limited and 503 before giving up."""
FIRST_CONTACT_DELAYS = (0.25, 0.75)
"""Waits between tries of a refused first connection (before the API ever answered): a wrong URL or a stopped
service fails in about a second instead of after every retry of a call."""
COMPLETE_FOLLOW_SECONDS = 3600.0
"""How long a file may stay `completing` (202 answers) before the run gives up on it (it stays resumable)."""
MAX_RETRY_AFTER = 600.0
"""Longest Retry-After honoured as given; a larger one is clipped so a wrong header cannot stall a run for days."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog): sleep uniform(0, min(cap, base * 2^(n-1)))."""

    base: float = 0.5
    cap: float = 30.0

    def delay(
        self, failures: int, retry_after: float | None = None, rand: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait after the n-th consecutive failure (n >= 1); never less than the server's Retry-After."""
        window = min(self.cap, self.base * 2.0 ** max(0, failures - 1))
        # Full jitter spreads many clients (or many parts of one client) that failed together, so they
        # do not all come back in the same instant; Retry-After is the server's explicit floor.
        jittered = window * rand()
        if retry_after is None:
            return jittered
        return max(jittered, min(retry_after, MAX_RETRY_AFTER))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
