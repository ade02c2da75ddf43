"""Timestamps: the hand-rolled ISO formatter equals datetime's, across the whole range the service uses."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from app.domain.clock import iso_ms


def test_iso_ms_matches_datetime_formatting() -> None:
    rng = random.Random(7)
    cases = [0, 999, 1_780_000_000_123, 946_684_799_999, 951_782_400_000, 253_402_300_799_999]
    cases += [rng.randrange(0, 4_102_444_800_000) for _ in range(5000)]
    for ms in cases:
        dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
        assert iso_ms(ms) == f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z", ms
