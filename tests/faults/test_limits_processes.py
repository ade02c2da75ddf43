"""Rate limits hold across API processes: one key sending three times its rate through two API processes (in
turn) gets 429s and no more than its bucket allows in all, while a second key of the same account is unaffected.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.processes import Stack, report

RATE, BURST = 10, 10
BODY = {"videoName": "v", "layout": "2D", "files": [{"fileName": "v.mp4", "fileRole": "video", "sizeBytes": 10}]}


async def send(apis: list[httpx.AsyncClient], key: dict[str, str], per_second: float, seconds: float) -> list[int]:
    """Creates at a steady pace, alternating API processes; the statuses answered."""
    statuses = []
    start = time.monotonic()
    for i in range(int(per_second * seconds)):
        await asyncio.sleep(max(0.0, start + i / per_second - time.monotonic()))
        r = await apis[i % len(apis)].post("/api/videos/uploads", json=BODY, headers=key)
        statuses.append(r.status_code)
    return statuses


async def test_one_key_over_its_rate_is_limited_across_processes_and_another_key_is_not(stack: Stack) -> None:
    stack.start_stores()
    env = {"SPATIALGEN_RATE_LIMITS": f"create={RATE}/{BURST}"}
    bases = [stack.start_api(**env), stack.start_api(**env)]
    noisy, quiet = await stack.key("acme"), await stack.key("acme")
    apis = [httpx.AsyncClient(base_url=b, timeout=30) for b in bases]
    try:
        started = time.monotonic()
        loud, calm = await asyncio.gather(send(apis, noisy, 3 * RATE, 4.0), send(apis, quiet, RATE / 2, 4.0))
        elapsed = time.monotonic() - started
    finally:
        for c in apis:
            await c.aclose()
    accepted = loud.count(201)
    assert set(loud) == {201, 429} and loud.count(429) > 0
    # One bucket for both processes: at most the burst plus what the rate refills (two buckets would let ~2x in).
    assert accepted <= BURST + RATE * elapsed + 1
    assert calm == [201] * len(calm)
    report(f"rate limit across 2 API processes: a key at {3 * RATE}/s got {accepted} of {len(loud)} accepted "
           f"in {elapsed:.1f} s (bucket {RATE}/s, burst {BURST}); a second key at {RATE / 2:g}/s: "
           f"all {len(calm)} accepted")  # fmt: skip
