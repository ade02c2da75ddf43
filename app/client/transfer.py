"""Sending one part: the file range streamed from disk in chunks of at most 1 MiB, PUT to its presigned URL.

One attempt per call; a failure says whether to try again or fetch a fresh URL first (upload.py decides).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncGenerator, Callable, Mapping
from pathlib import Path

import httpx

from app.client import checksums
from app.client.errors import LocalFileChanged
from app.client.retry import parse_retry_after

CHUNK_BYTES = 1024 * 1024
"""Largest read from disk and largest buffer per part in flight: memory stays flat whatever the part size."""
_S3_CODE = re.compile(r"<Code>([^<]{1,64})</Code>")


class PutFailure(Exception):
    """A part PUT that did not store the part."""

    def __init__(self, reason: str, *, sent: int, retry_after: float | None = None, new_url: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent
        """Bytes of this attempt already reported as sent (progress rewinds them)."""
        self.retry_after = retry_after
        self.new_url = new_url
        """The URL was refused or has expired: fetch a fresh one before trying again."""


async def read_range(
    path: Path,
    start: int,
    size: int,
    on_chunk: Callable[[int], None],
    chunk: int = CHUNK_BYTES,
    *,
    expect: tuple[str, str] | None = None,
) -> AsyncGenerator[bytes, None]:
    """Yield bytes [start, start + size) of a file, each read in a worker thread so the event loop never blocks.

    With `expect` (algorithm, base64 value: the checksum the URL signs, computed before the PUT) the bytes are
    checksummed as they are sent; different bytes (the file changed meanwhile) stop the PUT with LocalFileChanged
    before its end, instead of storage refusing them again at every try.
    """
    digest = checksums.Digest(expect[0]) if expect else None
    loop = asyncio.get_running_loop()
    try:
        fd = await loop.run_in_executor(None, os.open, path, os.O_RDONLY)
    except OSError as exc:
        raise LocalFileChanged(f"cannot open {path}: {exc.strerror}") from None
    try:
        offset, left = start, size
        while left:
            try:
                data = await loop.run_in_executor(None, os.pread, fd, min(chunk, left), offset)
            except OSError as exc:
                raise LocalFileChanged(f"cannot read {path}: {exc.strerror}") from None
            if not data:
                raise LocalFileChanged(f"{path} ends at byte {offset}; it was larger when the upload started")
            offset += len(data)
            left -= len(data)
            if digest is not None:
                digest.update(data)
                if not left and expect and digest.value() != expect[1]:
                    raise LocalFileChanged(
                        f"{path} changed while it was being sent: bytes [{start}, {start + size}) have the "
                        f"{expect[0]} checksum {digest.value()} now, {expect[1]} when the part was prepared; "
                        "start a new group with send --new"
                    )
            on_chunk(len(data))
            yield data
    finally:
        os.close(fd)


ALREADY_STORED = ""
"""What put_part returns in place of an ETag when a write-once URL finds its object already stored."""


async def put_part(
    http: httpx.AsyncClient,
    url: str,
    path: Path,
    start: int,
    size: int,
    *,
    on_bytes: Callable[[int], None],
    headers: Mapping[str, str] | None = None,
    expect: tuple[str, str] | None = None,
) -> str:
    """PUT bytes [start, start + size) of a file to a presigned URL with an exact Content-Length; return the ETag.

    `headers` are the ones the URL signs (the part-urls answer lists them).  A write-once URL (`If-None-Match:
    *`, a `single_put`) answers 412 when the object is already there: an earlier attempt stored it (its answer
    was lost), so that counts as done and ALREADY_STORED is returned; completion verifies the size.
    """
    sent = 0

    def count(n: int) -> None:
        nonlocal sent
        sent += n
        on_bytes(n)

    body = read_range(path, start, size, count, expect=expect)
    try:
        # An explicit Content-Length makes httpx send the stream as is instead of chunked encoding, which
        # S3 refuses for PUT; the URL may also sign content-length (SPEC 3.7).
        response = await http.put(url, content=body, headers={**(headers or {}), "Content-Length": str(size)})
    except httpx.TransportError as exc:  # connect/read/write errors and timeouts
        raise PutFailure(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, sent=sent) from None
    finally:
        await body.aclose()
    status = response.status_code
    if status == 412 and headers and headers.get("If-None-Match") == "*":
        return ALREADY_STORED
    if 200 <= status < 300:
        etag = response.headers.get("etag")
        if etag:
            return str(etag)
        raise PutFailure(f"{status} without an ETag", sent=sent)
    match = _S3_CODE.search(response.text)
    reason = f"{status} {match.group(1) if match else response.reason_phrase}".strip()
    if status == 429 or status >= 500:
        raise PutFailure(reason, sent=sent, retry_after=parse_retry_after(response.headers.get("retry-after")))
    # 403 (expired or refused signature), 400 with an expired request, 404 (upload gone): a fresh URL from
    # part-urls either works or the service says why the file no longer takes parts (a 409).
    raise PutFailure(reason, sent=sent, new_url=True)
