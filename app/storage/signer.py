"""The signer: turns a part-urls selection into the answer's `parts` JSON, inline or in its own process.

A 10,000-part answer is ~90 ms of CPU; signed on the event loop it would hold up every other request of
the API process, so batches of at least `offload_min_parts` go to one helper process per API process, in pieces of
PIECE_PARTS URLs: API keys take turns at the helper piece by piece (app/storage/turns.py), and a large answer is
signed piece by piece as it is sent (`pieces`). The compact form (`url_template`, `compact_parts`) answers each URL
as its part number and signature, its shared rest written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import threading
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import msgspec

from app.domain.answers import PART_NUMBER_SLOT, SIGNATURE_SLOT, CompactPart, PartUrl, url_filler
from app.domain.clock import iso_ms
from app.domain.parts import part_range
from app.settings import StorageConfig
from app.storage.credentials import CredentialSource
from app.storage.presign import PresignCredentials, S3Presigner
from app.storage.turns import FairTurns

log = logging.getLogger("spatialgen.signer")
PIECE_PARTS = 500
"""URLs signed per turn at the helper, and per piece of a streamed answer (~350 KB of JSON)."""
_json = msgspec.json.Encoder()


class PresignerConfig(msgspec.Struct, frozen=True):
    """Where URLs point (credentials are separate: they change when temporary ones are refreshed)."""

    endpoint_url: str
    region: str
    addressing_style: str

    @classmethod
    def from_settings(cls, config: StorageConfig) -> PresignerConfig:
        """URLs name the endpoint clients reach (S3_PUBLIC_ENDPOINT_URL when set)."""
        return cls(endpoint_url=config.public_endpoint_url or config.endpoint_url,
                   region=config.region, addressing_style=config.addressing_style)  # fmt: skip

    def presigner(self, credentials: PresignCredentials) -> S3Presigner:
        """A presigner for this configuration signing with these credentials."""
        return S3Presigner(endpoint_url=self.endpoint_url, region=self.region, credentials=credentials,
                           addressing_style=self.addressing_style)  # fmt: skip


class _Presigners:
    """The presigner for the latest credentials (a refresh builds a new one; its signing keys start empty)."""

    def __init__(self, config: PresignerConfig) -> None:
        self.config = config
        self._latest: tuple[PresignCredentials, S3Presigner] | None = None

    def get(self, credentials: PresignCredentials) -> S3Presigner:
        latest = self._latest
        if latest is not None and latest[0] == credentials:
            return latest[1]
        presigner = self.config.presigner(credentials)
        self._latest = (credentials, presigner)
        return presigner


class SignBatch(msgspec.Struct, frozen=True, kw_only=True):
    """One part-urls answer to sign: a PutObject URL (no upload id) or UploadPart URLs."""

    bucket: str
    key: str
    upload_id: str | None
    part_numbers: list[int]
    part_size: int
    total_bytes: int
    expires_in: int
    signed_at: int
    content_type: str | None = None
    """Signed into a single PUT's URL (the client sends it as is); parts carry none."""
    checksum_algorithm: str | None = None
    """The file's checksum algorithm (SPEC 3.8): each URL then signs its part's x-amz-checksum-* value."""
    checksums: list[str] | None = None
    """With checksum_algorithm: the parts' checksums, aligned with part_numbers."""
    url_template: str | None = None
    """Set for the compact form (`url_template`): the parts are answered as CompactPart, each URL checked to be
    this template filled in."""


def shared_headers(batch: SignBatch) -> dict[str, str]:
    """Headers every URL of the batch signs besides its Content-Length: a `single_put` URL signs `If-None-Match: *`
    (once the object is stored nothing can replace it through the URL) and its Content-Type; parts sign none."""
    if batch.upload_id is not None:
        return {}
    write_once = {"If-None-Match": "*"}
    if batch.content_type is not None:
        write_once["Content-Type"] = batch.content_type
    return write_once


def _signed(presigner: S3Presigner, batch: SignBatch) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[str]]:
    """The batch's (part number, size) pairs, byte ranges and URLs."""
    when = datetime.fromtimestamp(batch.signed_at, tz=UTC)
    ranges = [part_range(n, batch.part_size, batch.total_bytes) for n in batch.part_numbers]
    sized = [(n, hi - lo) for n, (lo, hi) in zip(batch.part_numbers, ranges, strict=True)]
    algorithm, checksums = batch.checksum_algorithm, batch.checksums
    if batch.upload_id is None:
        checksum = (algorithm, checksums[0]) if algorithm is not None and checksums else None
        urls = [presigner.presign_put_object(batch.bucket, batch.key, content_length=sized[0][1],
                                             expires_in=batch.expires_in, now=when, if_none_match=True,
                                             content_type=batch.content_type, checksum=checksum)]  # fmt: skip
    else:
        urls = presigner.presign_upload_parts(
            batch.bucket, batch.key, upload_id=batch.upload_id, parts=sized, expires_in=batch.expires_in, now=when,
            checksum_algorithm=algorithm, checksums=checksums,
        )  # fmt: skip
    return sized, ranges, urls


def own_headers(batch: SignBatch) -> list[dict[str, str]]:
    """Each part's signed headers besides its Content-Length and the batch's `shared_headers`, aligned with
    part_numbers: its `x-amz-checksum-<algorithm>` value when the file has a checksum algorithm (SPEC 3.8), else
    none."""
    algorithm, checksums = batch.checksum_algorithm, batch.checksums
    if algorithm is None or checksums is None:
        return [{} for _ in batch.part_numbers]
    header = f"x-amz-checksum-{algorithm.lower()}"
    return [{header: value} for value in checksums]


def sign_parts_json(presigner: S3Presigner, batch: SignBatch) -> bytes:
    """Presign a batch and return its `parts` array as JSON (PartUrl, or CompactPart for the compact form).

    Each URL binds its part's exact length, the batch's `shared_headers` and the part's `own_headers`; `headers`
    lists what the client must send.
    """
    sized, ranges, urls = _signed(presigner, batch)
    own = own_headers(batch)
    if batch.url_template is not None:
        return _json.encode(compact_parts(sized, urls, own, batch.url_template))
    expires_at = iso_ms((batch.signed_at + batch.expires_in) * 1000)
    shared = shared_headers(batch)
    parts = []
    for (n, size), (lo, hi), url, mine in zip(sized, ranges, urls, own, strict=True):
        headers = {"Content-Length": str(size), **shared, **mine}
        parts.append(PartUrl(part_number=n, size_bytes=size, byte_start=lo, byte_end=hi, url=url,
                             expires_at=expires_at, headers=headers))  # fmt: skip
    return _json.encode(parts)


_SIGNATURE_PARAM = "&X-Amz-Signature="
_SIGNATURE_HEX = 64


def url_template(url: str, part_number: int | None) -> str:
    """A signed URL as a compact answer's template: its signature (and, for a part, its part number) made slots.

    Every URL of one batch shares everything else (one timestamp, one expiry, one signed-header list), which
    `compact_parts` checks URL by URL."""
    head, sep, signature = url.rpartition(_SIGNATURE_PARAM)
    if not sep or len(signature) != _SIGNATURE_HEX or "{" in url or "}" in url:
        raise ValueError(f"not a presigned URL this answer can template: {url[:120]!r}")
    template = head + sep + SIGNATURE_SLOT
    if part_number is not None:
        marker = f"&partNumber={part_number}&"
        if template.count(marker) != 1:
            raise ValueError(f"part number {part_number} is not where a template expects it: {url[:120]!r}")
        template = template.replace(marker, f"&partNumber={PART_NUMBER_SLOT}&")
    return template


def compact_parts(
    sized: list[tuple[int, int]], urls: list[str], own: list[dict[str, str]], template: str
) -> list[CompactPart]:
    """The compact form of signed URLs: part number, signature and the part's own headers (`own_headers`: its
    checksum, if any), after checking that the template filled in gives back each URL exactly (a part whose URL had
    another shape would fail the answer here, not a client's PUT); ~3 ms per 10,000 URLs."""
    fill = url_filler(template)
    parts = []
    for (n, _), url, mine in zip(sized, urls, own, strict=True):
        signature = url[-_SIGNATURE_HEX:]
        if fill(n, signature) != url:
            raise ValueError(f"part {n}: its URL does not fit the answer's template")
        parts.append(CompactPart(part_number=n, signature=signature, headers=mine))
    return parts


class SignRequest(msgspec.Struct, frozen=True):
    """What the helper process receives: the credentials current when the call was made, and the batch."""

    credentials: PresignCredentials
    batch: SignBatch


_request_decoder = msgspec.msgpack.Decoder(SignRequest)
_request_encoder = msgspec.msgpack.Encoder()


def _serve(conn: Connection, config: PresignerConfig) -> None:
    """Helper-process main: sign each batch received until the pipe closes.

    The pipe closes when the API process ends, however it ends (a server may kill its workers without
    running exit hooks), so the helper never outlives it.
    """
    presigners = _Presigners(config)
    while True:
        try:
            request = _request_decoder.decode(conn.recv_bytes())
        except (EOFError, OSError):
            return
        conn.send_bytes(sign_parts_json(presigners.get(request.credentials), request.batch))


class Signer:
    """Signs part-urls batches: small ones inline, large ones in the helper process it owns."""

    def __init__(self, config: PresignerConfig, credentials: CredentialSource, *, offload_min_parts: int) -> None:
        self.config = config
        self.credentials = credentials
        self.offload_min_parts = offload_min_parts
        self._presigners = _Presigners(config)
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # one batch at a time on the pipe (held by the thread doing the exchange)
        self._turns = FairTurns()  # who goes next when several wait for the helper

    @classmethod
    def from_settings(cls, config: StorageConfig, *, offload_min_parts: int) -> Signer:
        """A signer for the configured endpoint, signing with the configured (or the provider chain's) credentials."""
        return cls(PresignerConfig.from_settings(config), CredentialSource(config), offload_min_parts=offload_min_parts)

    def start(self) -> None:
        """Start the helper process (API startup), so the first large batch does not wait for it."""
        if self._process is not None or self.offload_min_parts <= 0:
            return
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe(duplex=True)
        process = ctx.Process(target=_serve, args=(theirs, self.config), name="spatialgen-signer", daemon=True)
        process.start()
        theirs.close()  # only the helper holds its end now: our exit closes the pipe and ends the helper
        self._process, self._conn = process, ours

    async def sign(self, batch: SignBatch, who: str = "") -> bytes:
        """The batch's `parts` JSON, signed with the credentials valid now (StorageCredentialsError if none)."""
        return await self._sign(await self.credentials.current(), batch, who)

    async def sign_with(self, credentials: PresignCredentials, batch: SignBatch, who: str) -> bytes:
        """The batch's `parts` JSON, signed with these credentials (in one turn at the helper)."""
        return await self._sign(credentials, batch, who)

    def url_template(self, credentials: PresignCredentials, batch: SignBatch) -> str:
        """The compact form's URL template of a batch, from its first URL signed here (one HMAC: no helper turn)."""
        sums = batch.checksums[:1] if batch.checksums is not None else None
        first = msgspec.structs.replace(batch, part_numbers=batch.part_numbers[:1], checksums=sums)
        _, _, (url,) = _signed(self._presigners.get(credentials), first)
        return url_template(url, None if batch.upload_id is None else batch.part_numbers[0])

    async def pieces(self, credentials: PresignCredentials, batch: SignBatch, who: str) -> AsyncGenerator[bytes]:
        """The batch's `parts` JSON as arrays of at most PIECE_PARTS URLs each (their elements, in order, are the
        whole array's), the next one signed while the previous one is sent: a large answer is signed while it is
        sent and never held whole (two pieces at most). `credentials` are fetched once by the caller (before
        answering), so every URL of one answer is signed with the same ones."""
        numbers = batch.part_numbers

        def sign(start: int) -> asyncio.Task[bytes]:
            sums = batch.checksums[start : start + PIECE_PARTS] if batch.checksums is not None else None
            piece = msgspec.structs.replace(batch, part_numbers=numbers[start : start + PIECE_PARTS], checksums=sums)
            return asyncio.ensure_future(self._sign(credentials, piece, who))

        # One piece ahead: the helper signs piece k + 1 while this process compresses and sends piece k (two cores
        # at work instead of one after the other), and a reader that stops holds back the signing after that.
        start = 0
        ahead: asyncio.Task[bytes] | None = sign(start)
        try:
            while ahead is not None:
                current, start = ahead, start + PIECE_PARTS
                ahead = sign(start) if start < len(numbers) else None
                yield await current
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ahead

    async def _sign(self, credentials: PresignCredentials, batch: SignBatch, who: str) -> bytes:
        if self.offload_min_parts <= 0 or len(batch.part_numbers) < self.offload_min_parts:
            return sign_parts_json(self._presigners.get(credentials), batch)
        if self._conn is None:
            self.start()
        request = _request_encoder.encode(SignRequest(credentials, batch))
        try:
            async with self._turns.turn(who):  # the helper is shared: keys take turns, batch by batch
                return await asyncio.to_thread(self._exchange, request)
        except (EOFError, OSError):  # the helper died (OOM-killed, say): sign this one here, start a new one
            log.warning("signer process died; restarting it")
            self.close()
            return sign_parts_json(self._presigners.get(credentials), batch)

    @property
    def waiting(self) -> int:
        """Batches waiting for their turn at the helper process."""
        return self._turns.waiting

    def helper_pid(self) -> int | None:
        """The helper process's pid while it runs."""
        return self._process.pid if self._process is not None else None

    def _exchange(self, request: bytes) -> bytes:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise EOFError("signer closed")
            conn.send_bytes(request)
            return conn.recv_bytes()

    def close(self) -> None:
        """Stop the helper process now (server workers may exit without running Python's exit hooks)."""
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            conn.close()
        if process is not None:
            process.terminate()
            process.join(1)
