"""A SigV4-verifying front for the local S3 (moto): presigned requests are checked the way S3 checks them.

moto stores whatever a presigned URL brings: a body of another length, a missing `If-None-Match`, a header value
the URL did not sign. Tests that PUT through this front see S3's refusals instead. It is an HTTP/1.1 server on
a loopback port (keep-alive towards clients, one upstream connection per request, `Connection: close` upstream):

- A request authenticated by query parameters (`X-Amz-Algorithm`, `X-Amz-Credential` or `X-Amz-Signature` in
  the query: a presigned URL) is verified from what was received: the method; the path, decoded and URI-encoded
  once per segment as S3 does (no double encoding, no normalisation of `//`, `.` or `..`); every query
  parameter but `X-Amz-Signature`, SigV4-encoded and sorted; the headers `X-Amz-SignedHeaders` lists with their
  received values (trimmed, inner whitespace collapsed, repeats joined by `,`); `UNSIGNED-PAYLOAD`, or the
  received `x-amz-content-sha256` when that header is signed. A signed header that was not sent is a mismatch;
  so is a chunked body when `content-length` is signed. The body is read by HTTP/1.1 framing, exactly
  Content-Length bytes: a client that sends fewer and stops gets `IncompleteBody` (or `RequestTimeout`); bytes
  past Content-Length are never part of the object (they are read as the next request, and refused when they
  are not one). A request that passes all checks is forwarded with its body.
- An `x-amz-checksum-<algorithm>` header on a presigned request is checked against the body as S3 checks it
  (moto does not): crc32 (zlib), sha1 and sha256 (hashlib) always; crc32c with `google-crc32c`, `awscrt` or
  `crc32c` importable; crc64nvme with `awscrt`. An algorithm that cannot be computed here is let through and
  named in `unverified_checksums`.
- S3's checks of multipart checksums that moto lacks: each presigned UploadPart's verified checksum is kept (by
  upload id and part number, with its length), and a CompleteMultipartUpload (Authorization header) whose part list
  names a `Checksum<ALGORITHM>` that differs from the part's is refused (400 InvalidPart, naming PartNumber), as is
  a whole-object `x-amz-checksum-<crc>` with `x-amz-checksum-type: FULL_OBJECT` that is not the CRC of the listed
  parts (400 BadDigest; combined with awscrt's combine_* functions). Every CompleteMultipartUpload's headers are
  kept in `completions` (If-None-Match among them); with `refuse_conditional_complete` one carrying If-None-Match is
  answered 501 NotImplemented, as a store without conditional completion does. A presigned PUT with a verified
  `x-amz-checksum-*` is forwarded with `x-amz-sdk-checksum-algorithm` added, so moto records the object's checksum
  (it records none without that header) as S3 does.
- Everything else (Authorization-header requests from boto3/aiobotocore, anonymous ones) is forwarded unchanged;
  `Expect: 100-continue` is answered by the front itself. Upstream answers are relayed as they are (status,
  headers, body; chunked or sized), hop-by-hop headers aside.

Refusals answer as S3 does: an `<Error>` XML document (Content-Type application/xml) with S3's code and message
and the elements S3 adds, none for HEAD. Sources: the S3 API reference, "Authenticating Requests: Using Query
Parameters (AWS Signature Version 4)" (sigv4-query-string-auth) and "Error responses" (ErrorResponses), and S3's
observed answers:

    403 SignatureDoesNotMatch             the rebuilt signature differs (tampered query/path, another method,
                                          a signed header missing or with another value, wrong secret)
    403 AccessDenied "Request has expired"          X-Amz-Date + X-Amz-Expires is past
    403 AccessDenied "Request is not valid yet"     X-Amz-Date more than 15 minutes ahead
    403 AccessDenied "There were headers present in the request which were not signed"
                                          an x-amz-* header (but x-amz-content-sha256) or Host not signed
    403 InvalidAccessKeyId                an access key id the front has no secret for
    400 AuthorizationQueryParametersError a missing or malformed X-Amz-* parameter, X-Amz-Expires > 604800
    400 InvalidArgument                   both an Authorization header and query-string authentication
    400 IncompleteBody / RequestTimeout   fewer body bytes than Content-Length (end of stream / silence)
    400 XAmzContentSHA256Mismatch         a signed hex x-amz-content-sha256 that is not the body's
    400 BadDigest "The CRC32 you specified did not match the calculated checksum."   (and CRC32C, ...; also a
                                          CompleteMultipartUpload's FULL_OBJECT checksum of the parts)
    400 InvalidPart                       a CompleteMultipartUpload part whose Checksum* is not the part's
    501 NotImplemented                    If-None-Match on CompleteMultipartUpload (refuse_conditional_complete)
    400 InvalidRequest                    a malformed x-amz-checksum-* value, or x-amz-sdk-checksum-algorithm
                                          naming another algorithm or none sent
    400 BadRequest                        not an HTTP/1.1 request it can frame (the HTTP layer's answer, not one
                                          of S3's error codes)

Every refusal is appended to `SigV4Front.refusals` (status, code, method, path, reason) before its answer is
written, and every request to `SigV4Front.exchanges`.

Run it in the test's event loop (`await SigV4Front(target).start()`), on a thread of its own with
`front_in_thread(target)` (blocking clients such as boto3 cannot stall it there), or as a process:

    python -m tests.sigv4_front --target http://127.0.0.1:PORT --port N --secret testing

which prints its URL and writes each refusal as a JSON line to stderr (and to --log FILE). Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote, unquote_to_bytes, urlsplit
from xml.sax.saxutils import escape

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "Completion",
    "Exchange",
    "Refusal",
    "SigV4Front",
    "canonical_query",
    "canonical_uri",
    "checksum_unavailable",
    "checksum_value",
    "front_in_thread",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_EXPIRES = 604_800  # SigV4 query authentication: 7 days at most
CLOCK_SKEW_SECONDS = 900  # how far ahead of the front's clock X-Amz-Date may be (S3 allows 15 minutes)
AUTH_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
_QUERY_AUTH_MARKERS = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"})
# Not forwarded: the front owns each connection (and answers Expect: 100-continue itself).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "expect", "upgrade", "te"})
_READ_SIZE = 1 << 20
_HEAD_LIMIT = 256 * 1024

# S3's messages, word for word.
_MSG_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your key and signing method."
)
_MSG_INCOMPLETE = "You did not provide the number of bytes specified by the Content-Length HTTP header."
_MSG_TIMEOUT = (
    "Your socket connection to the server was not read from or written to within the timeout period. "
    "Idle connections will be closed."
)
_MSG_PARAMS = (
    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, "
    "X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
)
_MSG_TWO_AUTHS = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter "
    "or the Authorization header should be specified"
)
_MSG_UNSIGNED = "There were headers present in the request which were not signed"
_MSG_UNKNOWN_KEY = "The AWS Access Key Id you provided does not exist in our records."
_MSG_SHA256_MISMATCH = "The provided 'x-amz-content-sha256' header does not match what was computed."
_MSG_NO_CHECKSUM = (
    "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or x-amz-trailer headers were found."
)
_MSG_NOT_IMPLEMENTED = "A header you provided implies functionality that is not implemented"
_MSG_INVALID_PART = (
    "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified "
    "entity tag may not match the part's entity tag or its checksum."
)
_MSG_MULTIPLE_CHECKSUMS = "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."


# --- checksums -----------------------------------------------------------------------------------------------


def _crc32c_function() -> Callable[[bytes], bytes] | None:
    """CRC32C from whichever package is importable (none of them is a project dependency)."""
    with contextlib.suppress(ImportError):
        import google_crc32c  # type: ignore[import-not-found]

        return lambda data: int(google_crc32c.value(data)).to_bytes(4, "big")
    with contextlib.suppress(ImportError):
        from awscrt import checksums

        return lambda data: int(checksums.crc32c(data)).to_bytes(4, "big")
    with contextlib.suppress(ImportError):
        import crc32c  # type: ignore[import-not-found]

        return lambda data: int(crc32c.crc32c(data)).to_bytes(4, "big")
    return None


def _crc64nvme_function() -> Callable[[bytes], bytes] | None:
    with contextlib.suppress(ImportError):
        from awscrt import checksums

        if hasattr(checksums, "crc64nvme"):
            return lambda data: int(checksums.crc64nvme(data)).to_bytes(8, "big")
    return None


CHECKSUM_ALGORITHMS: dict[str, Callable[[bytes], bytes] | None] = {
    "crc32": lambda data: zlib.crc32(data).to_bytes(4, "big"),
    "crc32c": _crc32c_function(),
    "crc64nvme": _crc64nvme_function(),
    "sha1": lambda data: hashlib.sha1(data).digest(),
    "sha256": lambda data: hashlib.sha256(data).digest(),
}
"""x-amz-checksum-<name> → the body's digest (big-endian CRC bytes, as S3 and botocore encode them), or None
when no installed package computes it."""
_DIGEST_SIZES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}
_PACKAGES = {"crc32c": "google-crc32c, awscrt or crc32c", "crc64nvme": "awscrt (with checksums.crc64nvme)"}


def checksum_unavailable(algorithm: str) -> str | None:
    """Why the front cannot verify (or a test compute) this algorithm here, or None when it can."""
    if CHECKSUM_ALGORITHMS[algorithm] is not None:
        return None
    return f"{algorithm} needs {_PACKAGES[algorithm]}, none of which is installed (not a project dependency)"


def checksum_value(algorithm: str, data: bytes) -> str:
    """The value of an `x-amz-checksum-<algorithm>` header for data: base64 of the digest."""
    function = CHECKSUM_ALGORITHMS[algorithm]
    if function is None:
        raise LookupError(checksum_unavailable(algorithm))
    return base64.b64encode(function(data)).decode()


# --- SigV4 canonical forms -------------------------------------------------------------------------------------


def _encode(raw: bytes, safe: str = "") -> str:
    # quote() keeps exactly RFC 3986's unreserved A-Za-z0-9-._~ (plus safe) and writes uppercase %XX.
    return quote(raw, safe=safe)


def canonical_uri(raw_path: str) -> str:
    """S3's canonical URI for a received path: decoded, then each byte outside the unreserved set encoded once
    ('/' kept). No double encoding and no normalisation of empty or dot segments."""
    return _encode(unquote_to_bytes(raw_path), safe="/") or "/"


def canonical_query(raw_query: str) -> str:
    """Every received parameter but X-Amz-Signature, decoded then SigV4-encoded, sorted by name then value.

    A '+' is a literal plus, as RFC 3986 reads a query (SigV4 signers always send a space as %20)."""
    pairs = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        encoded = _encode(unquote_to_bytes(name))
        if encoded != "X-Amz-Signature":
            pairs.append((encoded, _encode(unquote_to_bytes(value))))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _query_params(raw_query: str) -> dict[str, str]:
    """Decoded query parameters (the first of repeated names)."""
    params: dict[str, str] = {}
    for piece in raw_query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            params.setdefault(
                unquote_to_bytes(name).decode("utf-8", "replace"), unquote_to_bytes(value).decode("utf-8", "replace")
            )
    return params


def _signing_key(secret: str, date_stamp: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date_stamp, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


# --- requests and records --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """One request the front refused instead of forwarding."""

    status: int
    code: str
    method: str
    path: str
    """The raw path as received (still percent-encoded)."""
    reason: str
    """What differed, for humans (the code is what S3 says)."""


@dataclass(frozen=True)
class Completion:
    """A CompleteMultipartUpload the front saw (Authorization header): its path, upload id and headers."""

    path: str
    upload_id: str
    headers: dict[str, str]
    """Lowercase names (If-None-Match as `if-none-match`)."""


@dataclass(frozen=True)
class _PartSum:
    algorithm: str
    digest: bytes
    length: int


@dataclass(frozen=True)
class Exchange:
    """One request the front answered: forwarded (status from upstream) or refused."""

    method: str
    path: str
    auth: str
    """'presigned' (query-string SigV4), 'header' (an Authorization header) or 'none'."""
    status: int
    refused: bool = False


@dataclass
class _Head:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name]

    def first(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None


@dataclass(frozen=True)
class _QueryAuth:
    access_key: str
    amz_date: str
    scope: str
    date_stamp: str
    region: str
    service: str
    signed_at: float
    expires: int
    signed_headers: list[str]
    signature: str


@dataclass(frozen=True)
class _Verdict:
    status: int
    code: str
    message: str
    reason: str
    extra: tuple[tuple[str, str], ...] = ()
    close: bool = False
    """Close the client connection after answering (the body was not read whole)."""


class _Refused(Exception):
    def __init__(self, verdict: _Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


class _Malformed(Exception):
    """Not an HTTP/1.1 request the front can frame."""


def _refused(status: int, code: str, message: str, reason: str, *extra: tuple[str, str]) -> _Refused:
    return _Refused(_Verdict(status, code, message, reason, extra))


def _query_error(message: str, reason: str | None = None) -> _Refused:
    return _refused(400, "AuthorizationQueryParametersError", message, reason or message)


def _mismatch(reason: str, *extra: tuple[str, str]) -> _Refused:
    return _refused(403, "SignatureDoesNotMatch", _MSG_MISMATCH, reason, *extra)


def _incomplete(reason: str) -> _Refused:
    return _Refused(_Verdict(400, "IncompleteBody", _MSG_INCOMPLETE, reason, close=True))


def _parse_head(raw: bytes) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise _Malformed(f"bad request line {lines[0][:80]!r}")
    method, target, version = parts
    if not target.startswith("/"):
        if "://" not in target:
            raise _Malformed(f"bad request target {target[:80]!r}")
        url = urlsplit(target)  # absolute form: the origin form of the same resource
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise _Malformed(f"bad header line {line[:80]!r}")
        headers.append((name, value.strip(" \t")))
    return _Head(method, target, version, headers)


def _framing(head: _Head) -> tuple[str, int]:
    """('chunked', 0), ('length', n) or ('none', 0) for a request body."""
    if head.values("transfer-encoding"):
        codings = ",".join(head.values("transfer-encoding")).lower().split(",")
        if codings[-1].strip() != "chunked":
            raise _Malformed("a transfer coding other than chunked")
        return "chunked", 0
    lengths = {v.strip() for v in ",".join(head.values("content-length")).split(",")} - {""}
    if not lengths:
        return "none", 0
    if len(lengths) != 1 or not next(iter(lengths)).isdigit():
        raise _Malformed(f"bad Content-Length {sorted(lengths)}")
    return "length", int(lengths.pop())


def _keep_alive(head: _Head) -> bool:
    tokens = {t.strip().lower() for t in ",".join(head.values("connection")).split(",")}
    return head.version == "HTTP/1.1" and "close" not in tokens


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error_document(verdict: _Verdict) -> bytes:
    request_id = os.urandom(8).hex().upper()
    host_id = base64.b64encode(os.urandom(48)).decode()
    elements = [("Code", verdict.code), ("Message", verdict.message), *verdict.extra]
    elements += [("RequestId", request_id), ("HostId", host_id)]
    inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in elements)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'.encode()


# --- body I/O --------------------------------------------------------------------------------------------------


async def _read_exactly(reader: asyncio.StreamReader, size: int, timeout: float | None) -> bytes:
    try:
        return await asyncio.wait_for(reader.readexactly(size), timeout)
    except asyncio.IncompleteReadError as exc:
        raise _incomplete(f"the body ended after {len(exc.partial)} of {size} further bytes") from exc
    except TimeoutError as exc:
        raise _Refused(_Verdict(400, "RequestTimeout", _MSG_TIMEOUT, f"no body for {timeout} s", close=True)) from exc


async def _read_line(reader: asyncio.StreamReader, timeout: float | None) -> bytes:
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
        raise _incomplete("the chunked body ended early") from exc


async def _read_body(reader: asyncio.StreamReader, framing: str, length: int, timeout: float | None) -> bytes:
    """The request body (decoded when chunked); _Refused (closing) when it is cut short or stalls."""
    body = bytearray()
    if framing == "length":
        while len(body) < length:
            body += await _read_exactly(reader, min(_READ_SIZE, length - len(body)), timeout)
    elif framing == "chunked":
        while size := _chunk_size(await _read_line(reader, timeout)):
            body += await _read_exactly(reader, size + 2, timeout)
            del body[-2:]
        while await _read_line(reader, timeout) != b"\r\n":
            pass  # trailer fields
    return bytes(body)


def _chunk_size(line: bytes) -> int:
    try:
        return int(line.split(b";", 1)[0].strip(), 16)
    except ValueError as exc:
        raise _incomplete(f"bad chunk size line {line[:40]!r}") from exc


async def _copy_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framing: str, length: int) -> None:
    """Relay a body as it is framed (chunk lines included); ConnectionError when the source ends early."""
    try:
        if framing == "length":
            left = length
            while left:
                chunk = await reader.read(min(left, _READ_SIZE))
                if not chunk:
                    raise ConnectionError("the body ended early")
                writer.write(chunk)
                await writer.drain()
                left -= len(chunk)
        elif framing == "chunked":
            while True:
                line = await reader.readuntil(b"\r\n")
                writer.write(line)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if not size:
                    break
                writer.write(await reader.readexactly(size + 2))
                await writer.drain()
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                writer.write(line)
            writer.write(line)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise ConnectionError(f"cannot relay the body: {exc}") from exc
    await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


# --- the front -------------------------------------------------------------------------------------------------


@dataclass
class SigV4Front:
    """The verifying front; `await start()` in a running loop, `await close()` in the same loop."""

    target: str
    """The S3 it forwards to: http://host:port."""
    secrets: str | Mapping[str, str] = "testing"
    """One secret for any access key id, or access key id → secret (other ids: InvalidAccessKeyId)."""
    region: str | None = None
    """When set, credential scopes naming another region are refused; None accepts any."""
    host: str = "127.0.0.1"
    port: int = 0
    """0: a free port, chosen at start."""
    clock: Callable[[], float] = time.time
    body_timeout: float | None = 20.0
    """Seconds of silence mid-body before RequestTimeout (presigned requests)."""
    on_refusal: Callable[[Refusal], None] | None = None
    refusals: list[Refusal] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    unverified_checksums: list[str] = field(default_factory=list)
    """Checksum algorithms seen on presigned requests that no installed package could compute."""
    errors: list[str] = field(default_factory=list)
    """Unexpected failures inside the front (a test can assert there were none)."""
    connections: int = 0
    """Client connections accepted so far."""
    completions: list[Completion] = field(default_factory=list)
    """Every CompleteMultipartUpload forwarded or refused, with its headers."""
    refuse_conditional_complete: bool = False
    """Answer 501 NotImplemented to If-None-Match on CompleteMultipartUpload (a store without it)."""
    part_checksums: dict[tuple[str, str, int], _PartSum] = field(default_factory=dict)
    """(path, upload id, part number) -> the verified checksum of what a presigned UploadPart carried."""

    def __post_init__(self) -> None:
        target = urlsplit(self.target)
        if target.scheme != "http" or not target.hostname:
            raise ValueError(f"target must be http://host:port, got {self.target!r}")
        self._upstream = (target.hostname, target.port or 80)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        """http://host:port of the front."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> SigV4Front:
        """Listen (on a free port when port is 0)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=_HEAD_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and close every client connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def reset(self) -> None:
        """Forget what was recorded so far (a shared front between tests)."""
        self.refusals.clear()
        self.exchanges.clear()
        self.unverified_checksums.clear()
        self.errors.clear()
        self.completions.clear()

    def refusals_for(self, path_part: str) -> list[Refusal]:
        """Refusals whose raw path contains path_part."""
        return [r for r in self.refusals if path_part in r.path]

    # -- connections --

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client (or upstream) went away; nothing left to answer
        except Exception as exc:  # recorded for the tests instead of lost in the loop's log
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            await _close(writer)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection stays open for another."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # closed between requests (or mid-head: nothing to answer)
        except asyncio.LimitOverrunError:
            raw = b""
        try:
            if not raw:
                raise _Malformed("request head too large")
            head = _parse_head(raw)
            framing, length = _framing(head)
        except _Malformed as exc:
            head = _Head("-", "-", "HTTP/1.1", [])
            verdict = _Verdict(
                400, "BadRequest", "An error occurred when parsing the HTTP request.", str(exc), close=True
            )
            await self._answer_refusal(writer, head, "none", verdict, keep_alive=False)
            return False
        params = _query_params(head.query)
        if not params.keys() & _QUERY_AUTH_MARKERS:
            if (head.first("expect") or "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            auth = "header" if head.first("authorization") is not None else "none"
            if head.method == "POST" and "uploadId" in params and auth == "header":
                return await self._complete(head, params["uploadId"], reader, writer, framing, length)
            return await self._forward(head, reader, writer, framing, length, None, auth)
        return await self._presigned(head, params, reader, writer, framing, length)

    async def _presigned(
        self,
        head: _Head,
        params: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framing: str,
        length: int,
    ) -> bool:
        keep_alive = _keep_alive(head)
        expect = (head.first("expect") or "").lower() == "100-continue"
        try:
            auth = self._authenticate(head, params, framing)
        except _Refused as refused:
            if expect:  # the client waits for a word before its body: S3 answers without reading it
                await self._answer_refusal(writer, head, "presigned", refused.verdict, keep_alive=False)
                return False
            drained = await self._drain(reader, framing, length)
            await self._answer_refusal(writer, head, "presigned", refused.verdict, keep_alive=keep_alive and drained)
            return keep_alive and drained
        if expect:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = await _read_body(reader, framing, length, self.body_timeout)
            self._check_payload(head, auth, body)
        except _Refused as refused:
            keep = keep_alive and not refused.verdict.close
            await self._answer_refusal(writer, head, "presigned", refused.verdict, keep_alive=keep)
            return keep
        return await self._forward(head, reader, writer, framing, length, body, "presigned")

    async def _drain(self, reader: asyncio.StreamReader, framing: str, length: int) -> bool:
        try:
            await _read_body(reader, framing, length, self.body_timeout)
        except _Refused:
            return False
        return True

    # -- verification --

    def _authenticate(self, head: _Head, params: dict[str, str], framing: str) -> _QueryAuth:
        """Check a presigned request's parameters, time, header set and signature; _Refused if any is off."""
        auth = self._parse_auth(head, params)
        self._check_time(auth)
        secret = self._secret(auth.access_key)
        _check_header_set(head, auth, framing)
        self._check_signature(head, auth, secret)
        return auth

    def _parse_auth(self, head: _Head, params: dict[str, str]) -> _QueryAuth:
        if head.first("authorization") is not None:
            reason = "an Authorization header and query-string authentication"
            raise _refused(400, "InvalidArgument", _MSG_TWO_AUTHS, reason, ("ArgumentName", "Authorization"))
        missing = [name for name in AUTH_PARAMS if name not in params]
        if missing:
            raise _query_error(_MSG_PARAMS, f"missing {', '.join(missing)}")
        if params["X-Amz-Algorithm"] != ALGORITHM:
            raise _query_error(f'X-Amz-Algorithm only supports "{ALGORITHM}"')
        expires = _parse_expires(params["X-Amz-Expires"])
        amz_date = params["X-Amz-Date"]
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        except ValueError as exc:
            raise _query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"") from exc
        access_key, date_stamp, region, service = self._parse_credential(params["X-Amz-Credential"], amz_date)
        return _QueryAuth(
            access_key=access_key,
            amz_date=amz_date,
            scope=f"{date_stamp}/{region}/{service}/aws4_request",
            date_stamp=date_stamp,
            region=region,
            service=service,
            signed_at=signed_at,
            expires=expires,
            signed_headers=params["X-Amz-SignedHeaders"].split(";"),
            signature=params["X-Amz-Signature"],
        )

    def _parse_credential(self, credential: str, amz_date: str) -> tuple[str, str, str, str]:
        parts = credential.split("/")
        prefix = "Error parsing the X-Amz-Credential parameter; "
        if len(parts) != 5 or not parts[0]:
            raise _query_error(
                prefix + 'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
            )
        access_key, date_stamp, region, service, terminal = parts
        if date_stamp != amz_date[:8]:
            raise _query_error(
                f'Invalid credential date "{date_stamp}". This date is not the same as X-Amz-Date: "{amz_date[:8]}".'
            )
        if self.region is not None and region != self.region:
            raise _query_error(prefix + f"the region '{region}' is wrong; expecting '{self.region}'")
        if service != "s3":
            raise _query_error(prefix + f'incorrect service "{service}". This endpoint belongs to "s3".')
        if terminal != "aws4_request":
            raise _query_error(prefix + f'incorrect terminal "{terminal}". This endpoint uses "aws4_request".')
        return access_key, date_stamp, region, service

    def _check_time(self, auth: _QueryAuth) -> None:
        now = self.clock()
        ends = auth.signed_at + auth.expires
        if now > ends:
            raise _refused(
                403,
                "AccessDenied",
                "Request has expired",
                f"expired {now - ends:.0f} s ago",
                ("X-Amz-Expires", str(auth.expires)),
                ("Expires", _iso(ends)),
                ("ServerTime", _iso(now)),
            )
        if auth.signed_at > now + CLOCK_SKEW_SECONDS:
            raise _refused(
                403,
                "AccessDenied",
                "Request is not valid yet",
                f"signed for {_iso(auth.signed_at)}",
                ("X-Amz-Date", auth.amz_date),
                ("ServerTime", _iso(now)),
            )

    def _secret(self, access_key: str) -> str:
        if isinstance(self.secrets, str):
            return self.secrets
        secret = self.secrets.get(access_key)
        if secret is None:
            reason = f"unknown access key id {access_key!r}"
            raise _refused(403, "InvalidAccessKeyId", _MSG_UNKNOWN_KEY, reason, ("AWSAccessKeyId", access_key))
        return secret

    def _check_signature(self, head: _Head, auth: _QueryAuth, secret: str) -> None:
        lines = []
        for name in auth.signed_headers:
            received = head.values(name.lower())
            if not received:
                raise _mismatch(f"signed header {name} was not sent")
            lines.append(f"{name.lower()}:{','.join(' '.join(v.split()) for v in received)}\n")
        payload = UNSIGNED_PAYLOAD
        if "x-amz-content-sha256" in auth.signed_headers:
            payload = head.first("x-amz-content-sha256") or ""
        canonical = "\n".join(
            [
                head.method,
                canonical_uri(head.path),
                canonical_query(head.query),
                "".join(lines),
                ";".join(auth.signed_headers),
                payload,
            ]
        )
        string_to_sign = "\n".join(
            [ALGORITHM, auth.amz_date, auth.scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = _signing_key(secret, auth.date_stamp, auth.region, auth.service)
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
            raise _mismatch(
                "the signature rebuilt from the request differs",
                ("AWSAccessKeyId", auth.access_key),
                ("StringToSign", string_to_sign),
                ("SignatureProvided", auth.signature),
                ("StringToSignBytes", " ".join(f"{b:02x}" for b in string_to_sign.encode())),
                ("CanonicalRequest", canonical),
                ("CanonicalRequestBytes", " ".join(f"{b:02x}" for b in canonical.encode())),
            )

    def _check_payload(self, head: _Head, auth: _QueryAuth, body: bytes) -> None:
        claimed = head.first("x-amz-content-sha256")
        if "x-amz-content-sha256" in auth.signed_headers and claimed and len(claimed) == 64:
            computed = hashlib.sha256(body).hexdigest()
            if claimed.lower() != computed:
                raise _refused(
                    400,
                    "XAmzContentSHA256Mismatch",
                    _MSG_SHA256_MISMATCH,
                    "x-amz-content-sha256 is not the body's",
                    ("ClientComputedContentSHA256", claimed),
                    ("S3ComputedContentSHA256", computed),
                )
        verified = _check_checksum(head, body, self.unverified_checksums)
        if verified is not None:
            algorithm, digest = verified
            params = _query_params(head.query)
            if "uploadId" in params and params.get("partNumber", "").isdigit():
                where = (head.path, params["uploadId"], int(params["partNumber"]))
                self.part_checksums[where] = _PartSum(algorithm, digest, len(body))
            if head.first("x-amz-sdk-checksum-algorithm") is None:  # so moto records it, as S3 does
                head.headers.append(("x-amz-sdk-checksum-algorithm", algorithm.upper()))

    async def _complete(
        self, head: _Head, upload_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framing: str,
        length: int,
    ) -> bool:  # fmt: skip
        """A CompleteMultipartUpload: recorded, its checksums checked as S3 checks them, then forwarded."""
        keep_alive = _keep_alive(head)
        if (head.first("expect") or "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await _read_body(reader, framing, length, self.body_timeout)
        self.completions.append(Completion(head.path, upload_id, {k.lower(): v for k, v in head.headers}))
        try:
            if self.refuse_conditional_complete and head.first("if-none-match") is not None:
                raise _refused(501, "NotImplemented", _MSG_NOT_IMPLEMENTED, "If-None-Match on CompleteMultipartUpload",
                               ("Header", "If-None-Match"))  # fmt: skip
            self._check_complete(head, upload_id, body)
        except _Refused as refused:
            await self._answer_refusal(writer, head, "header", refused.verdict, keep_alive=keep_alive)
            return keep_alive
        return await self._forward(head, reader, writer, framing, length, body, "header")

    def _check_complete(self, head: _Head, upload_id: str, body: bytes) -> None:
        listed: list[tuple[int, str, dict[str, str]]] = []
        with contextlib.suppress(ET.ParseError):
            for part in ET.fromstring(body):
                fields = {child.tag.rpartition("}")[2]: (child.text or "").strip() for child in part}
                if fields.get("PartNumber", "").isdigit():
                    listed.append((int(fields["PartNumber"]), fields.get("ETag", ""), fields))
        for n, etag, fields in listed:
            kept = self.part_checksums.get((head.path, upload_id, n))
            for name, value in fields.items():
                if (
                    name.startswith("Checksum")
                    and kept is not None
                    and (name[8:].lower() != kept.algorithm or _b64(value) != kept.digest)
                ):
                    reason = f"part {n}: {name} {value!r} is not the part's"
                    where = (("UploadId", upload_id), ("PartNumber", str(n)), ("ETag", etag))
                    raise _refused(400, "InvalidPart", _MSG_INVALID_PART, reason, *where)
        kind = (head.first("x-amz-checksum-type") or "").upper()
        for algorithm in ("crc64nvme", "crc32c", "crc32"):
            whole = head.first(f"x-amz-checksum-{algorithm}")
            if whole is None or kind != "FULL_OBJECT":
                continue
            kept_parts = [self.part_checksums.get((head.path, upload_id, n)) for n, _, _ in listed]
            if not listed or any(k is None or k.algorithm != algorithm for k in kept_parts):
                self.unverified_checksums.append(f"{algorithm} (complete)")
                continue
            combined = _combine(algorithm, [k for k in kept_parts if k is not None])
            if combined is not None and combined != _b64(whole):
                message = f"The {algorithm.upper()} you specified did not match the calculated checksum."
                raise _refused(400, "BadDigest", message, f"whole-object x-amz-checksum-{algorithm} is not the parts'")

    # -- answers --

    async def _answer_refusal(
        self, writer: asyncio.StreamWriter, head: _Head, auth: str, verdict: _Verdict, *, keep_alive: bool
    ) -> None:
        refusal = Refusal(verdict.status, verdict.code, head.method, head.path, verdict.reason)
        self.refusals.append(refusal)  # recorded before the answer leaves, so a test sees it with the answer
        self.exchanges.append(Exchange(head.method, head.path, auth, verdict.status, refused=True))
        if self.on_refusal is not None:
            self.on_refusal(refusal)
        document = _error_document(verdict)
        reason = {400: "Bad Request", 403: "Forbidden", 501: "Not Implemented"}.get(verdict.status, "Error")
        lines = [
            f"HTTP/1.1 {verdict.status} {reason}",
            "Content-Type: application/xml",
            f"Content-Length: {len(document)}",
            f"Date: {_http_date(self.clock())}",
            "Server: AmazonS3",
            f"x-amz-request-id: {os.urandom(8).hex().upper()}",
        ]
        if not keep_alive:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if head.method != "HEAD":
            writer.write(document)
        await writer.drain()

    async def _forward(
        self,
        head: _Head,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framing: str,
        length: int,
        body: bytes | None,
        auth: str,
    ) -> bool:
        """Send the request upstream (the read body, or streamed from the client) and relay the answer."""
        keep_alive = _keep_alive(head)
        up_reader, up_writer = await asyncio.open_connection(*self._upstream, limit=_HEAD_LIMIT)
        try:
            lines = [f"{head.method} {head.target} HTTP/1.1"]
            for name, value in head.headers:
                low = name.lower()
                if low in _HOP_BY_HOP or (low == "content-length" and framing == "chunked"):
                    continue
                if body is not None and low in ("content-length", "transfer-encoding"):
                    continue  # the body was read (and de-chunked): sent with its length
                lines.append(f"{name}: {value}")
            if body is not None and framing != "none":
                lines.append(f"Content-Length: {len(body)}")
            lines.append("Connection: close")
            up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if body is not None:
                up_writer.write(body)
                await up_writer.drain()
            else:
                await _copy_body(reader, up_writer, framing, length)
            return await self._relay_answer(head, auth, up_reader, writer, keep_alive)
        finally:
            await _close(up_writer)

    async def _relay_answer(
        self, head: _Head, auth: str, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep_alive: bool
    ) -> bool:
        while True:  # interim 1xx answers are the front's business, not the client's
            status_line, *header_lines = (await up_reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            _, status_text, reason = [*status_line.split(" ", 2), ""][:3]
            status = int(status_text)
            if not 100 <= status < 200:
                break
        headers = [(n, v.strip()) for n, _, v in (line.partition(":") for line in header_lines if line)]
        answer = _Head("", "", "", headers)
        framing, length, body = "none", 0, b""
        if head.method != "HEAD" and status not in (204, 304):
            if answer.values("transfer-encoding"):
                framing = "chunked"
            elif answer.values("content-length"):
                framing, length = "length", int(answer.values("content-length")[0])
            else:
                framing, body = "eof", await up_reader.read()  # sized for the client, who keeps its connection
        lines = [f"HTTP/1.1 {status} {reason}".rstrip()]
        lines += [f"{n}: {v}" for n, v in headers if n.lower() not in _HOP_BY_HOP]
        if framing == "eof":
            lines.append(f"Content-Length: {len(body)}")
        if not keep_alive:
            lines.append("Connection: close")
        self.exchanges.append(Exchange(head.method, head.path, auth, status))
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await _copy_body(up_reader, writer, framing, length)
        return keep_alive


def _parse_expires(text: str) -> int:
    if not text.lstrip("-").isdigit():
        raise _query_error("X-Amz-Expires should be a number")
    expires = int(text)
    if expires < 0:
        raise _query_error("X-Amz-Expires must be non-negative")
    if expires > MAX_EXPIRES:
        raise _query_error(
            "X-Amz-Expires must be less than a week (in seconds) that is; 604800", f"X-Amz-Expires={expires}"
        )
    return expires


def _check_header_set(head: _Head, auth: _QueryAuth, framing: str) -> None:
    signed = {name.lower() for name in auth.signed_headers}
    unsigned = sorted(
        {name.lower() for name, _ in head.headers if name.lower().startswith("x-amz-")}
        - signed
        - {"x-amz-content-sha256"}
    )
    if "host" not in signed:
        unsigned.insert(0, "host")
    if unsigned:
        names = ", ".join(unsigned)
        raise _refused(403, "AccessDenied", _MSG_UNSIGNED, f"not signed: {names}", ("HeadersNotSigned", names))
    if framing == "chunked" and "content-length" in signed:
        raise _mismatch("a chunked body where content-length is signed")


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        return b""


def _combine(algorithm: str, parts: list[_PartSum]) -> bytes | None:
    """The CRC of the parts' concatenation from their CRCs and lengths (awscrt's combine_*), or None without awscrt."""
    try:
        from awscrt import checksums
    except ImportError:
        return None
    combine = getattr(checksums, f"combine_{algorithm}")
    size = _DIGEST_SIZES[algorithm]
    crc = int.from_bytes(parts[0].digest, "big")
    for part in parts[1:]:
        crc = combine(crc, int.from_bytes(part.digest, "big"), part.length)
    return int(crc).to_bytes(size, "big")


def _check_checksum(head: _Head, body: bytes, unverified: list[str]) -> tuple[str, bytes] | None:
    """S3's checks of x-amz-checksum-* and x-amz-sdk-checksum-algorithm against the body: the (algorithm, digest)
    verified, or None (none sent, or one that cannot be computed here)."""
    sent = [(alg, value) for alg in _DIGEST_SIZES if (value := head.first(f"x-amz-checksum-{alg}")) is not None]
    sdk = head.first("x-amz-sdk-checksum-algorithm")
    if len(sent) > 1:
        raise _refused(400, "InvalidRequest", _MSG_MULTIPLE_CHECKSUMS, f"checksums {[a for a, _ in sent]}")
    if sdk is not None and (sdk.lower() not in _DIGEST_SIZES or (sent and sent[0][0] != sdk.lower())):
        raise _refused(
            400,
            "InvalidRequest",
            "Value for x-amz-sdk-checksum-algorithm header is invalid.",
            f"x-amz-sdk-checksum-algorithm {sdk} with {[a for a, _ in sent]}",
        )
    if sdk is not None and not sent and head.first("x-amz-trailer") is None:
        raise _refused(400, "InvalidRequest", _MSG_NO_CHECKSUM, f"{sdk} without a value")
    if not sent:
        return None
    algorithm, value = sent[0]
    try:
        digest = base64.b64decode(value, validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != _DIGEST_SIZES[algorithm]:
        raise _refused(
            400,
            "InvalidRequest",
            f"Value for x-amz-checksum-{algorithm} header is invalid.",
            f"x-amz-checksum-{algorithm}: {value!r}",
        )
    function = CHECKSUM_ALGORITHMS[algorithm]
    if function is None:
        unverified.append(algorithm)
        return None
    if not hmac.compare_digest(function(body), digest):
        raise _refused(
            400,
            "BadDigest",
            f"The {algorithm.upper()} you specified did not match the calculated checksum.",
            f"x-amz-checksum-{algorithm} is not the body's",
        )
    return algorithm, digest


def _http_date(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


# --- running it ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def front_in_thread(target: str, **options: Any) -> Iterator[SigV4Front]:
    """A SigV4Front serving from an event loop on its own daemon thread, for the duration of the block.

    Blocking clients (boto3, a sync test) can use it without stalling it; its lists are appended to before each
    answer is written, so a client that has its answer sees the record."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sigv4-front", daemon=True)
    thread.start()
    try:
        front = asyncio.run_coroutine_threadsafe(SigV4Front(target, **options).start(), loop).result(timeout=30)
        try:
            yield front
        finally:
            asyncio.run_coroutine_threadsafe(front.close(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def _log_refusal(stream: IO[str] | None) -> Callable[[Refusal], None]:
    def log(refusal: Refusal) -> None:
        line = json.dumps(asdict(refusal), ensure_ascii=False)
        print(line, file=sys.stderr, flush=True)
        if stream is not None:
            print(line, file=stream, flush=True)

    return log


async def _run(args: argparse.Namespace, stream: IO[str] | None) -> None:
    secrets: str | dict[str, str] = args.secret
    if args.key:
        secrets = dict(item.split("=", 1) for item in args.key)
    front = SigV4Front(
        args.target,
        secrets=secrets,
        region=args.region,
        host=args.host,
        port=args.port,
        on_refusal=_log_refusal(stream),
    )
    await front.start()
    print(f"sigv4-front {front.url} -> {args.target}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await front.close()


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.sigv4_front --target URL [--port N] [--secret S | --key AKID=SECRET ...]`."""
    parser = argparse.ArgumentParser(prog="python -m tests.sigv4_front", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--target", required=True, help="the S3 to forward to, http://host:port")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--secret", default="testing", help="secret for every access key id (default: testing)")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="ACCESS_KEY_ID=SECRET",
        help="accept only these access key ids, each with its secret (repeatable)",
    )
    parser.add_argument("--region", help="refuse credential scopes of another region")
    parser.add_argument("--log", help="also append each refusal to this file, one JSON object a line")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(open(args.log, "a", encoding="utf-8")) if args.log else None
        asyncio.run(_run(args, stream))


if __name__ == "__main__":
    main()
