"""CompleteMultipartUpload with `If-None-Match: *` against moto (app/uploads/assemble.py): a retried completion of
the same upload is completed, an object of another upload at the key is never replaced (`object_replaced`), and the
multipart ETag the service recognises its own object by is the one storage gives."""

from __future__ import annotations

import os
from typing import Any

from app.domain import reasons
from app.domain.reasons import Reason
from app.settings import MIB, Settings
from app.storage.s3 import ObjectStore
from app.uploads.assemble import Completion, multipart_etag


async def uploaded(store: ObjectStore, s3: Any, bucket: str, key: str) -> tuple[str, list[tuple[int, str]]]:
    s3_id = await store.create_multipart(key, "video/quicktime")
    parts = []
    for n, data in ((1, os.urandom(5 * MIB)), (2, os.urandom(10))):
        answer = s3.upload_part(Bucket=bucket, Key=key, UploadId=s3_id, PartNumber=n, Body=data)
        parts.append((n, str(answer["ETag"])))
    return s3_id, parts


def completion(store: ObjectStore, key: str, s3_id: str, parts: list[tuple[int, str]]) -> Completion:
    return Completion(store, key, s3_id, parts, algorithm=None, kind=None, part_checksums={}, whole=None,
                      conditional=True)  # fmt: skip


async def test_a_retried_conditional_completion_is_completed(store: ObjectStore, s3: Any, settings: Settings) -> None:
    bucket, key = settings.storage.bucket, f"uploads/acme/{os.urandom(4).hex()}/a.mov"
    s3_id, parts = await uploaded(store, s3, bucket, key)
    assert await completion(store, key, s3_id, parts).run() is None
    head = await store.head(key)
    assert head is not None and head.size == 5 * MIB + 10
    assert head.etag.strip('"') == multipart_etag([etag for _, etag in parts])  # how it knows its own object
    assert await completion(store, key, s3_id, parts).run() is None  # the same upload again: done, not refused


async def test_an_object_of_another_upload_is_never_replaced(store: ObjectStore, s3: Any, settings: Settings) -> None:
    bucket, key = settings.storage.bucket, f"uploads/acme/{os.urandom(4).hex()}/b.mov"
    s3_id, parts = await uploaded(store, s3, bucket, key)
    s3.put_object(Bucket=bucket, Key=key, Body=b"already here")
    assert await completion(store, key, s3_id, parts).run() == reasons.stored(Reason.OBJECT_REPLACED)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"already here"
    unconditional = completion(store, key, s3_id, parts)
    unconditional.conditional = False  # what a store without conditional completion would do
    assert await unconditional.run() is None
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == 5 * MIB + 10
