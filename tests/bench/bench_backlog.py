"""Benchmark: time from create to the first part URL for a new group, with an empty provisioning queue and with
20,000 provisioning jobs queued ahead of it (a worker busy on the backlog), in the same run.

Starts its own Valkey, moto, one API process (spatialgen-api) and one worker (spatialgen-worker). Never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import msgspec  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from app.state import UploadState  # noqa: E402
from app.state.apikeys import Principal, Role  # noqa: E402
from app.uploads.service import UploadService  # noqa: E402
from tests.processes import Stack  # noqa: E402

BODY = {"videoName": "backlog", "layout": "2D",
        "files": [{"fileName": "v.mp4", "fileRole": "video", "sizeBytes": 12 * 1024 * 1024}]}  # fmt: skip


async def first_part_url(api: httpx.AsyncClient, key: dict[str, str]) -> float:
    """Seconds from POST create to the answer of the first part-urls call (retrying a 503 as a client would)."""
    t0 = time.perf_counter()
    doc = (await api.post("/api/videos/uploads", json=BODY, headers=key)).json()
    url = f"/api/videos/uploads/{doc['sessionId']}/files/{doc['files'][0]['uploadId']}/part-urls"
    while True:
        r = await api.post(url, json={"partNumbers": [1]}, headers=key)
        if r.status_code == 200:
            return time.perf_counter() - t0
        if r.status_code != 503:
            raise SystemExit(f"part-urls answered {r.status_code}: {r.text[:300]}")
        await asyncio.sleep(float(r.headers.get("retry-after", "1")))


async def sample(api: httpx.AsyncClient, key: dict[str, str], n: int) -> list[float]:
    return [await first_part_url(api, key) for _ in range(n)]


async def controls(
    api: httpx.AsyncClient, key: dict[str, str], bucket_url: str, n: int
) -> tuple[list[float], list[float]]:
    """Seconds of requests that neither wait for a queue nor (the first) touch storage, to tell queueing from the
    2 cores being shared: a status read of an existing group, and a CreateMultipartUpload sent to moto directly
    (the storage call part-urls makes for a file not provisioned yet; moto checks no signature)."""
    sid = (await api.post("/api/videos/uploads", json=BODY, headers=key)).json()["sessionId"]
    reads, creates = [], []
    for i in range(n):
        t0 = time.perf_counter()
        if (await api.get(f"/api/videos/uploads/{sid}", headers=key)).status_code != 200:
            raise SystemExit("status read failed")
        t1 = time.perf_counter()
        r = await api.post(f"{bucket_url}/bench-control/{i}?uploads")
        if r.status_code != 200:
            raise SystemExit(f"CreateMultipartUpload on moto answered {r.status_code}: {r.text[:300]}")
        reads.append(t1 - t0)
        creates.append(time.perf_counter() - t1)
    return reads, creates


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[98]


def fmt(label: str, xs: list[float], unit: str = "groups") -> str:
    q = statistics.quantiles(xs, n=100, method="inclusive")
    return (
        f"{label}: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {max(xs) * 1000:.1f} ms ({len(xs)} {unit})"
    )


async def run(args: argparse.Namespace, stack: Stack) -> None:
    stack.start_stores()
    base = stack.start_api()
    stack.start_worker()
    key = await stack.key("bench")
    async with httpx.AsyncClient(base_url=base, timeout=60) as api:
        await sample(api, key, 3)  # warm-up
        empty = await sample(api, key, args.samples)
        empty_reads, empty_s3 = await controls(api, key, f"{stack.s3_url}/{stack.bucket}", args.samples)
        redis = Redis.from_url(stack.redis_url)
        state = UploadState(redis)
        try:
            service = UploadService(stack.settings(), state)
            who = Principal("backlog", Role.UPLOAD, "bench")
            t0 = time.perf_counter()
            body = msgspec.json.encode(BODY)
            for start in range(0, args.backlog, 500):
                await asyncio.gather(*(start.start_upload_group(service, who, body, None)
                                       for _ in range(min(500, args.backlog - start))))  # fmt: skip
            queued = await redis.zcard(stack.settings().worker.queue_name)
            print(f"queued {args.backlog} groups (one provisioning job each) in {time.perf_counter() - t0:.1f} s; "
                  f"upload queue holds {queued} jobs", flush=True)  # fmt: skip
            busy = await sample(api, key, args.samples)
            busy_reads, busy_s3 = await controls(api, key, f"{stack.s3_url}/{stack.bucket}", args.samples)
            left = await redis.zcard(stack.settings().worker.queue_name)
        finally:
            state.close()
            await redis.aclose()
    print(fmt("empty queue      ", empty))
    print(fmt(f"{args.backlog} jobs ahead", busy) + f" (still {left} jobs queued after the samples)")
    print(fmt("control, status read: empty", empty_reads, "calls") + " | " + fmt("backlog", busy_reads, "calls"))
    print(fmt("control, CreateMultipartUpload straight to moto: empty", empty_s3, "calls") + " | "
          + fmt("backlog", busy_s3, "calls"))  # fmt: skip
    print(
        f"controls, p99 with backlog / p99 empty: status read {p99(busy_reads) / p99(empty_reads):.2f}, moto "
        f"{p99(busy_s3) / p99(empty_s3):.2f} (neither waits for the queue: their growth is the cores being shared)"
    )
    print(f"create -> first part URL, p99 with backlog / p99 empty: {p99(busy) / p99(empty):.2f} (target <= 2.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=20_000, help="provisioning jobs queued ahead (default 20000)")
    parser.add_argument("--samples", type=int, default=60, help="groups timed per phase (default 60)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_backlog_") as tmp:
        stack = Stack(Path(tmp))
        # 20,000 creates from one key in seconds: the limiter and quotas would refuse them (they are not measured here).
        stack.settings_env |= {"SPATIALGEN_RATE_LIMITS": "off", "SPATIALGEN_QUOTA_LIVE_GROUPS": str(10**9),
                               "SPATIALGEN_QUOTA_LIVE_BYTES": str(2**62)}  # fmt: skip
        try:
            asyncio.run(run(args, stack))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
