"""Benchmark: 10,000 UploadPart URLs with app.presign versus botocore's generate_presigned_url.

Run with `python tests/bench/bench_presign.py`; prints medians of 3 alternating rounds, never asserts timings.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import botocore.auth
import botocore.config
import botocore.session

from app.storage.presign import PresignCredentials, S3Presigner

ENDPOINT_URL = "http://127.0.0.1:9000"
REGION = "us-east-1"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEJr//////////wEaDOPk+Ux3/ab=="
BUCKET = "spatialgen-test"
KEY = "uploads/0f8fad5b-d9cb-469f-a165-70867728950e/left-eye.mov"
UPLOAD_ID = "2~iCw_lDWkpDUT1BC7UR9a6nAtDOpUvbW.Jfd4g-Hy_sAzKn"
EXPIRES_IN = 3600
PARTS = range(1, 10_001)
PART_BYTES = 8 * 1024 * 1024
LAST_BYTES = 1_234_567
SIZED = [(n, PART_BYTES if n < PARTS[-1] else LAST_BYTES) for n in PARTS]
ROUNDS = 3


def main() -> None:
    """Time both presigners over alternating rounds and print one summary line."""
    now = datetime.now(UTC).replace(microsecond=0)
    ours = S3Presigner(
        endpoint_url=ENDPOINT_URL,
        region=REGION,
        credentials=PresignCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN),
    )
    client = botocore.session.get_session().create_client(
        "s3",
        region_name=REGION,
        endpoint_url=ENDPOINT_URL,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        aws_session_token=SESSION_TOKEN,
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )

    def run_ours() -> list[str]:
        return ours.presign_upload_parts(BUCKET, KEY, upload_id=UPLOAD_ID, parts=SIZED, expires_in=EXPIRES_IN, now=now)

    def run_botocore() -> list[str]:
        return [
            client.generate_presigned_url(
                "upload_part",
                Params={
                    "Bucket": BUCKET,
                    "Key": KEY,
                    "UploadId": UPLOAD_ID,
                    "PartNumber": part,
                    "ContentLength": length,
                },
                ExpiresIn=EXPIRES_IN,
            )
            for part, length in SIZED
        ]

    # Make sure both sides do the same work: with botocore's clock pinned to `now`, the
    # first and last URLs must carry identical parameters (botocore orders them differently).
    # botocore's Python signer: with awscrt installed botocore presigns through botocore.crt.auth instead.
    python_signer = {"s3v4-query": botocore.auth.S3SigV4QueryAuth}
    pinned = now.replace(tzinfo=None)
    with mock.patch.object(botocore.auth, "get_current_datetime", lambda remove_tzinfo=True: pinned), \
            mock.patch.dict(botocore.auth.AUTH_TYPE_MAPS, python_signer):  # fmt: skip
        for part, length in (SIZED[0], SIZED[-1]):
            theirs = client.generate_presigned_url(
                "upload_part",
                Params={"Bucket": BUCKET, "Key": KEY, "UploadId": UPLOAD_ID, "PartNumber": part,
                        "ContentLength": length},
                ExpiresIn=EXPIRES_IN,
            )  # fmt: skip
            (mine,) = ours.presign_upload_parts(
                BUCKET, KEY, upload_id=UPLOAD_ID, parts=[(part, length)], expires_in=EXPIRES_IN, now=now,
            )  # fmt: skip
            if parse_qs(urlsplit(mine).query) != parse_qs(urlsplit(theirs).query):
                raise SystemExit(f"outputs differ:\n ours     {mine}\n botocore {theirs}")

    timings: dict[str, list[float]] = {"ours": [], "botocore": []}
    runners: dict[str, Callable[[], list[str]]] = {"ours": run_ours, "botocore": run_botocore}
    for _ in range(ROUNDS):
        # Alternate so that drift in machine load hits both sides alike.
        for name, run in runners.items():
            started = time.perf_counter()
            urls = run()
            timings[name].append(time.perf_counter() - started)
            assert len(urls) == len(PARTS)

    ours_s = statistics.median(timings["ours"])
    boto_s = statistics.median(timings["botocore"])
    count = len(PARTS)
    print(
        f"presign {count // 1000}k parts: ours {ours_s * 1e3:.1f} ms, botocore {boto_s * 1e3:.1f} ms, "
        f"ratio {boto_s / ours_s:.0f}x"
    )
    print(f"per URL: ours {ours_s / count * 1e6:.2f} µs, botocore {boto_s / count * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
