"""The S3 adapter: the few object-store calls the service makes, over aiobotocore.

Only workers (and the readiness probe) call it; the API never waits on storage while creating groups.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from app.settings import StorageConfig
from app.storage.credentials import chain_credentials


class StoredPart(msgspec.Struct, frozen=True):
    """A part as the store has received it."""

    part_number: int
    etag: str
    size: int
    checksum: str | None = None
    """The part's checksum of the upload's algorithm, when the store reports one (list_parts' `algorithm`)."""


class HeadResult(msgspec.Struct, frozen=True):
    """A stored object's size, ETag and checksum (HeadObject with ChecksumMode ENABLED)."""

    size: int
    etag: str
    checksums: dict[str, str]
    """S3's algorithm name -> value (`<base64>-<parts>` for a COMPOSITE one), those the store returned."""
    checksum_type: str | None


class OpenUpload(msgspec.Struct, frozen=True):
    """An in-progress multipart upload as listed by the store."""

    key: str
    upload_id: str
    initiated_ms: int


class StoredObject(msgspec.Struct, frozen=True):
    """An object as listed by the store."""

    key: str
    size: int
    modified_ms: int


class StorageDeleteError(Exception):
    """DeleteObjects reported keys it did not delete (retried like any storage outage)."""


def error_code(exc: ClientError) -> str:
    """The S3 error code of a ClientError ('NoSuchUpload', 'InvalidPart', ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


class ObjectStore:
    """Thin async wrapper over the S3 calls used: multipart lifecycle, list, head, delete."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        config: StorageConfig,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        attempts: int = 4,
        pool_size: int = 64,
        session: Any = None,
    ) -> AsyncIterator[ObjectStore]:
        """Open an aiobotocore S3 client for the configured endpoint and close it afterwards.

        Workers use the defaults (retries with backoff); the readiness probe asks for one attempt and
        short timeouts, so a dead store is reported now.
        """
        client_config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": config.addressing_style},
            connect_timeout=connect_timeout,
            read_timeout=max(connect_timeout, read_timeout),
            retries={"total_max_attempts": attempts, "mode": "standard"},
            max_pool_connections=pool_size,
        )
        session = session or get_session()
        if not config.access_key_id:
            # The provider chain: resolved here so a process without credentials stops at start; the client
            # reuses the session's (refreshable) credentials, refreshed by botocore before they expire.
            await chain_credentials(session)
        async with session.create_client(
            "s3",
            endpoint_url=config.endpoint_url or None,
            region_name=config.region,
            aws_access_key_id=config.access_key_id or None,
            aws_secret_access_key=config.secret_access_key or None,
            aws_session_token=config.session_token or None,
            config=client_config,
        ) as client:
            yield cls(client, config.bucket)

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (dev stack and tests)."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            await self.client.create_bucket(Bucket=self.bucket)

    async def ping(self) -> None:
        """Raise if the bucket cannot be reached."""
        await self.client.head_bucket(Bucket=self.bucket)

    async def create_multipart(
        self, key: str, content_type: str | None = None, *, checksum: tuple[str, str] | None = None
    ) -> str:
        """Start a multipart upload; returns its S3 upload id. checksum: (algorithm, type), e.g. ("CRC64NVME",
        "FULL_OBJECT"): every part must then carry its checksum, and the object gets one of that type."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if content_type:
            kwargs["ContentType"] = content_type
        if checksum is not None:
            kwargs["ChecksumAlgorithm"], kwargs["ChecksumType"] = checksum
        resp = await self.client.create_multipart_upload(**kwargs)
        return str(resp["UploadId"])

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]], *, algorithm: str | None = None,
        part_checksums: dict[int, str] | None = None, whole: tuple[str, str] | None = None,
        if_none_match: bool = False,
    ) -> None:  # fmt: skip
        """Assemble the object from the given (part number, ETag) pairs. With algorithm, each part with a value in
        part_checksums carries it (storage compares it with the part's); whole: (value, checksum type) of the whole
        object, which storage verifies. if_none_match: `If-None-Match: *` (never replace an object at the key)."""
        sums = part_checksums or {}
        listed = []
        for n, etag in parts:
            part: dict[str, Any] = {"PartNumber": n, "ETag": etag}
            if algorithm is not None and n in sums:
                part[f"Checksum{algorithm}"] = sums[n]
            listed.append(part)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                                  "MultipartUpload": {"Parts": listed}}  # fmt: skip
        if algorithm is not None and whole is not None:
            kwargs[f"Checksum{algorithm}"], kwargs["ChecksumType"] = whole
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        await self.client.complete_multipart_upload(**kwargs)

    async def abort_multipart(self, key: str, upload_id: str) -> bool:
        """Abort a multipart upload; False if it was already gone."""
        try:
            await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchUpload", "404"):
                return False
            raise
        return True

    async def list_parts(self, key: str, upload_id: str, algorithm: str | None = None) -> list[StoredPart]:
        """Every part the store has received for an upload, in part order (with its checksum of `algorithm` when
        the store reports it)."""
        parts: list[StoredPart] = []
        marker = 0
        while True:
            resp = await self.client.list_parts(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker, MaxParts=1000
            )
            for p in resp.get("Parts", []):
                checksum = p.get(f"Checksum{algorithm}") if algorithm else None
                parts.append(StoredPart(int(p["PartNumber"]), str(p["ETag"]), int(p["Size"]), checksum))
            if not resp.get("IsTruncated"):
                return parts
            marker = int(resp["NextPartNumberMarker"])

    async def open_upload_pages(self, prefix: str) -> AsyncIterator[list[OpenUpload]]:
        """In-progress multipart uploads whose key starts with prefix, one listing page (up to 1,000) at a time."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            resp = await self.client.list_multipart_uploads(**kwargs)
            yield [OpenUpload(str(u["Key"]), str(u["UploadId"]), int(u["Initiated"].timestamp() * 1000))
                   for u in resp.get("Uploads", [])]  # fmt: skip
            if not resp.get("IsTruncated"):
                return
            kwargs["KeyMarker"] = resp.get("NextKeyMarker", "")
            kwargs["UploadIdMarker"] = resp.get("NextUploadIdMarker", "")

    async def list_open_uploads(self, prefix: str) -> list[OpenUpload]:
        """Every in-progress multipart upload whose key starts with prefix (for one file or one group)."""
        return [u async for page in self.open_upload_pages(prefix) for u in page]

    async def object_pages(self, prefix: str) -> AsyncIterator[list[StoredObject]]:
        """Stored objects whose key starts with prefix, one listing page (up to 1,000) at a time."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            resp = await self.client.list_objects_v2(**kwargs)
            yield [StoredObject(str(o["Key"]), int(o["Size"]), int(o["LastModified"].timestamp() * 1000))
                   for o in resp.get("Contents", [])]  # fmt: skip
            if not resp.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]

    async def head_size(self, key: str) -> int | None:
        """Size of a stored object, or None if it does not exist."""
        try:
            resp = await self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(resp["ContentLength"])

    async def head(self, key: str) -> HeadResult | None:
        """A stored object's size, ETag and checksums, or None if it does not exist."""
        try:
            resp = await self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        sums = {k.removeprefix("Checksum"): str(v) for k, v in resp.items() if k.startswith("Checksum") and
                k != "ChecksumType" and v}  # fmt: skip
        kind = resp.get("ChecksumType")
        return HeadResult(int(resp["ContentLength"]), str(resp.get("ETag", "")), sums, str(kind) if kind else None)

    async def get_small(self, key: str) -> bytes | None:
        """A small object's bytes (a marker), or None if it does not exist."""
        try:
            resp = await self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        async with resp["Body"] as body:
            return bytes(await body.read())

    async def put_small(self, key: str, data: bytes, *, only_if_absent: bool = False) -> bool:
        """Write a small object; with only_if_absent, False (nothing written) when one is there already."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data}
        if only_if_absent:
            kwargs["IfNoneMatch"] = "*"
        try:
            await self.client.put_object(**kwargs)
        except ClientError as exc:
            if only_if_absent and error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
        return True

    async def delete_objects(self, keys: list[str]) -> None:
        """Delete objects (missing ones are fine); raise StorageDeleteError naming any key storage refused."""
        failed: list[str] = []
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            resp = await self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
            # Quiet mode lists only the failures; each one is a key still there.
            failed += [f"{e.get('Key')}: {e.get('Code')}" for e in resp.get("Errors", [])]
        if failed:
            raise StorageDeleteError(f"storage did not delete {len(failed)} objects: {', '.join(failed[:5])}")
