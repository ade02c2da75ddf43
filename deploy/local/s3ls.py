"""What the dev stack's S3 holds: stored objects and open multipart uploads (`python -m deploy.local.s3ls [PREFIX]`).

Reads the endpoint, bucket and keys from the environment, else from the `.data/dev.env` a running `make run` wrote
(SPATIALGEN_DATA_DIR moves it), so next to `make run` it needs no flags. Dev only: boto3 is a dev dependency.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from app.settings import Settings, with_dev_env


def _pages(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key, [])


def _size(n: int) -> str:
    value, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


def listing(client: Any, bucket: str, prefix: str) -> list[str]:
    """The lines printed: every object (time, size, key), then every open multipart upload with its parts."""
    lines = []
    objects = list(_pages(client, "list_objects_v2", "Contents", Bucket=bucket, Prefix=prefix))
    total = sum(int(o["Size"]) for o in objects)
    lines.append(f"objects: {len(objects)} ({_size(total)})")
    for o in objects:
        lines.append(f"  {o['LastModified']:%Y-%m-%d %H:%M:%S}  {int(o['Size']):>13,}  {o['Key']}")
    uploads = list(_pages(client, "list_multipart_uploads", "Uploads", Bucket=bucket, Prefix=prefix))
    lines.append(f"open multipart uploads: {len(uploads)}")
    for u in uploads:
        parts = list(_pages(client, "list_parts", "Parts", Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]))
        held = sum(int(p["Size"]) for p in parts)
        lines.append(f"  {u['Initiated']:%Y-%m-%d %H:%M:%S}  {u['Key']}  upload {u['UploadId']}: "
                     f"{len(parts)} parts, {held:,} bytes")  # fmt: skip
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """List the bucket of the dev stack (or of the SPATIALGEN_S3_* settings)."""
    parser = argparse.ArgumentParser(prog="python -m deploy.local.s3ls", description=__doc__)
    parser.add_argument("prefix", nargs="?", default="", help="only keys starting with this (e.g. uploads/dev/SID/)")
    args = parser.parse_args(argv)
    storage = Settings.from_env(with_dev_env()).storage
    # moto (the dev stack's S3) takes any keys; elsewhere the provider chain finds real ones.
    client = boto3.client(
        "s3", endpoint_url=storage.endpoint_url or None, region_name=storage.region,
        aws_access_key_id=storage.access_key_id or None, aws_secret_access_key=storage.secret_access_key or None,
        aws_session_token=storage.session_token or None,
    )  # fmt: skip
    print(f"s3 {storage.endpoint_url} bucket {storage.bucket}" + (f" prefix {args.prefix}" if args.prefix else ""))
    try:
        print("\n".join(listing(client, storage.bucket, args.prefix)))
    except (BotoCoreError, ClientError) as exc:
        print(f"error: {exc} (is `make run` running? it writes .data/dev.env)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
