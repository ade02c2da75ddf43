"""The SigV4 front (tests/sigv4_front.py) against botocore's presigned URLs and our presigner's.

The front runs in the test's event loop before a stand-in upstream that records what reaches it, so every case
shows both the answer and whether anything got through. botocore is the reference signer: its URLs must pass
when sent as signed, and each change to what it signed must be refused with S3's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import botocore.auth
import botocore.config
import botocore.session
import httpx
import pytest

from app.storage.presign import PresignCredentials, S3Presigner
from tests.sigv4_front import (
    CHECKSUM_ALGORITHMS,
    SigV4Front,
    canonical_query,
    canonical_uri,
    checksum_unavailable,
    checksum_value,
)

BUCKET = "spatialgen-test"
ACCESS_KEY_ID = "AKIDEXAMPLE"
SECRET = "testing"
SESSION_TOKEN = "FwoGZXIvYXdzEJr//////////wEaDOPk+Ux3/ab=="

# Keys whose encoding a verifier gets wrong first: space, '+', '=', '%', unicode, emoji, empty segments,
# reserved characters, and dot segments (sent byte for byte, since HTTP clients resolve them).
KEYS = [
    "video.mov",
    "my folder/my video (1).mov",
    "a+b=c&d%e~f.mov",
    "vidéo/日本 語.mov",
    "emoji 🎬/ü.mov",
    "literal%2Fslash and %20space.mov",
    "dir//double///slashes/x.mov",
    "/leading/and/trailing/",
    "q?uery#frag;semi,comma:colon@at$dollar!*'(\"[]).mov",
    "./dot/../segments/x.mov",
]
UPLOAD_IDS = ["2~iCw_lDWkpDUT1BC7UR9a6nAtDOpUvbW.Jfd4g-Hy_sAzKn", "dGVzdA+/x7Q==", "a b&c=d%e"]
BODY = b"0123456789abcdef" * 64 + b"tail"


# --- a stand-in for S3 -------------------------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    """Records each request that reaches it and answers 200 with an ETag (or what `answer` returns)."""

    answer: Callable[[Received], bytes] | None = None
    received: list[Received] = field(default_factory=list)
    port: int = 0

    async def start(self) -> Upstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {n.strip().lower(): v.strip() for n, _, v in (x.partition(":") for x in lines[1:] if x)}
            if headers.get("transfer-encoding") == "chunked":
                body = b""
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    body += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            else:
                body = await reader.readexactly(int(headers.get("content-length", "0")))
            seen = Received(method, target, headers, body)
            self.received.append(seen)
            reply = self.answer(seen) if self.answer else b'HTTP/1.1 200 OK\r\nETag: "e"\r\nContent-Length: 0\r\n\r\n'
            writer.write(reply)
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class Clock:
    """The front's clock: the real time unless a test sets `now`."""

    def __init__(self) -> None:
        self.now: float | None = None

    def __call__(self) -> float:
        return datetime.now(UTC).timestamp() if self.now is None else self.now


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = await Upstream().start()
    yield server
    await server.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def front(upstream: Upstream, clock: Clock) -> AsyncIterator[SigV4Front]:
    """The front in this test's loop, before the stand-in upstream; it must end with no internal error."""
    server = await SigV4Front(upstream.url, secrets=SECRET, clock=clock).start()
    yield server
    await server.close()
    assert server.errors == []


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


# --- signers -----------------------------------------------------------------------------------------------------


SESSION = botocore.session.get_session()  # one session: its loader keeps the S3 model between clients


def botocore_client(endpoint: str, *, secret: str = SECRET, style: str = "path", token: str | None = None) -> Any:
    return SESSION.create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": style}),
    )


def presign(client: Any, operation: str, expires: int = 300, **params: Any) -> str:
    return str(client.generate_presigned_url(operation, Params={"Bucket": BUCKET, **params}, ExpiresIn=expires))


@contextlib.contextmanager
def botocore_clock(at: datetime) -> Iterator[None]:
    """Sign as of `at` (botocore.auth calls get_current_datetime for its timestamp, as test_presign.py patches)."""
    with pytest.MonkeyPatch.context() as patch:

        def clock(remove_tzinfo: bool = True) -> datetime:
            return at.replace(tzinfo=None) if remove_tzinfo else at

        patch.setattr(botocore.auth, "get_current_datetime", clock)
        if botocore.auth.HAS_CRT:  # with awscrt installed, botocore signs through botocore.crt.auth
            patch.setattr(importlib.import_module("botocore.crt.auth"), "get_current_datetime", clock)
        yield


@contextlib.contextmanager
def botocore_canonical_requests() -> Iterator[list[str]]:
    """Collect the canonical requests botocore signs."""
    seen: list[str] = []
    original = botocore.auth.S3SigV4QueryAuth.canonical_request

    def recording(self: Any, request: Any) -> str:
        seen.append(original(self, request))
        return seen[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.auth.S3SigV4QueryAuth, "canonical_request", recording)
        # With awscrt installed botocore presigns through botocore.crt.auth, which shows no canonical request.
        patch.setitem(botocore.auth.AUTH_TYPE_MAPS, "s3v4-query", botocore.auth.S3SigV4QueryAuth)
        yield seen


def our_presigner(endpoint: str, style: str = "path", token: str | None = None) -> S3Presigner:
    credentials = PresignCredentials(ACCESS_KEY_ID, SECRET, token)
    return S3Presigner(endpoint_url=endpoint, region="us-east-1", credentials=credentials, addressing_style=style)


# --- sending -----------------------------------------------------------------------------------------------------


def raw_request(url: str, method: str = "PUT", headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """The bytes of a request for url, target exactly as in the URL (no client normalising it)."""
    parts = urlsplit(url)
    head = [f"{method} {parts.path}?{parts.query} HTTP/1.1", f"Host: {parts.netloc}"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def raw_exchange(port: int, data: bytes, *, end: bool = True, timeout: float = 10) -> bytes:
    """Send bytes on one connection (then end our side) and read until the front closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if end:
            writer.write_eof()
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def statuses(answer: bytes) -> list[int]:
    """The status of each HTTP answer in a byte stream."""
    return [int(line.split(b" ")[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def error_of(text: str | bytes) -> dict[str, str]:
    """The elements of an S3 <Error> document."""
    root = ET.fromstring(text)
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def assert_refused(front: SigV4Front, upstream: Upstream, answer: httpx.Response, status: int, code: str) -> None:
    """Refused with S3's status, code and XML; logged by the front; nothing reached upstream."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/xml"
    assert error_of(answer.content)["Code"] == code
    assert upstream.received == []
    assert [(r.status, r.code) for r in front.refusals] == [(status, code)]
    assert front.refusals[0].path == urlsplit(str(answer.request.url)).path


# --- correct requests pass ---------------------------------------------------------------------------------------

# Each: the extra PutObject parameters botocore signs, and the headers a client must then send.
PUT_VARIANTS: dict[str, Callable[[bytes], tuple[dict[str, Any], dict[str, str]]]] = {
    "host-only": lambda body: ({}, {}),
    "content-length": lambda body: ({"ContentLength": len(body)}, {}),
    "if-none-match": lambda body: ({"ContentLength": len(body), "IfNoneMatch": "*"}, {"If-None-Match": "*"}),
    "crc32": lambda body: (
        {"ContentLength": len(body), "ChecksumCRC32": checksum_value("crc32", body)},
        {"x-amz-checksum-crc32": checksum_value("crc32", body)},
    ),
    "sha256+algorithm": lambda body: (
        {"ChecksumSHA256": checksum_value("sha256", body), "ChecksumAlgorithm": "SHA256"},
        {"x-amz-checksum-sha256": checksum_value("sha256", body), "x-amz-sdk-checksum-algorithm": "SHA256"},
    ),
}


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("variant", list(PUT_VARIANTS))
async def test_botocore_put_object_urls_pass(front: SigV4Front, upstream: Upstream, key: str, variant: str) -> None:
    params, headers = PUT_VARIANTS[variant](BODY)
    url = presign(botocore_client(front.url, token=SESSION_TOKEN), "put_object", Key=key, **params)
    answer = await raw_exchange(front.port, raw_request(url, headers={"Content-Length": str(len(BODY)), **headers},
                                                        body=BODY))  # fmt: skip
    assert statuses(answer) == [200], answer.decode(errors="replace")
    (got,) = upstream.received
    assert got.body == BODY
    parts = urlsplit(url)
    assert got.target == f"{parts.path}?{parts.query}"  # forwarded as received
    assert front.refusals == []
    assert [(e.auth, e.status) for e in front.exchanges] == [("presigned", 200)]


@pytest.mark.parametrize("upload_id", UPLOAD_IDS)
@pytest.mark.parametrize("checksum", [False, True], ids=["length", "length+crc32"])
async def test_botocore_upload_part_urls_pass(
    front: SigV4Front, upstream: Upstream, http: httpx.AsyncClient, upload_id: str, checksum: bool
) -> None:
    params: dict[str, Any] = {"Key": "vidéo/a b.mov", "UploadId": upload_id, "PartNumber": 7, "ContentLength": 9}
    headers = {}
    if checksum:
        params["ChecksumCRC32"] = headers["x-amz-checksum-crc32"] = checksum_value("crc32", b"part body")
    url = presign(botocore_client(front.url), "upload_part", **params)
    answer = await http.put(url, content=b"part body", headers=headers)
    assert answer.status_code == 200, answer.text
    assert [r.body for r in upstream.received] == [b"part body"]


@pytest.mark.parametrize("signer", ["botocore", "ours"])
async def test_virtual_host_urls_pass(
    front: SigV4Front, upstream: Upstream, http: httpx.AsyncClient, signer: str
) -> None:
    # Signed for bucket.localhost:port; sent to the loopback address with that Host (no DNS needed).
    endpoint = f"http://localhost:{front.port}"
    if signer == "botocore":
        url = presign(botocore_client(endpoint, style="virtual"), "put_object", Key="a b/c.mov", ContentLength=3)
    else:
        url = our_presigner(endpoint, "virtual").presign_put_object(
            BUCKET, "a b/c.mov", content_length=3, expires_in=300, now=datetime.now(UTC)
        )
    parts = urlsplit(url)
    assert parts.netloc == f"{BUCKET}.localhost:{front.port}"
    loopback = urlunsplit(parts._replace(netloc=f"127.0.0.1:{front.port}"))
    assert (await http.put(loopback, content=b"abc", headers={"Host": parts.netloc})).status_code == 200
    other = await http.put(loopback, content=b"abc", headers={"Host": f"other.localhost:{front.port}"})
    assert other.status_code == 403 and error_of(other.content)["Code"] == "SignatureDoesNotMatch"
    assert [r.body for r in upstream.received] == [b"abc"]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("token", [None, SESSION_TOKEN], ids=["no-token", "token"])
async def test_our_presigner_urls_pass(front: SigV4Front, upstream: Upstream, key: str, token: str | None) -> None:
    presigner = our_presigner(front.url, token=token)
    now = datetime.now(UTC)
    put = presigner.presign_put_object(BUCKET, key, content_length=5, expires_in=60, now=now, if_none_match=True)
    parts = presigner.presign_upload_parts(BUCKET, key, upload_id="dGVzdA+/x7Q==", parts=[(1, 4), (2, 3)],
                                           expires_in=60, now=now)  # fmt: skip
    for url, body, headers in [
        (put, b"hello", {"If-None-Match": "*"}),
        (parts[0], b"abcd", {}),
        (parts[1], b"xyz", {}),
    ]:
        sized = {"Content-Length": str(len(body)), **headers}
        assert statuses(await raw_exchange(front.port, raw_request(url, headers=sized, body=body))) == [200]
    assert [r.body for r in upstream.received] == [b"hello", b"abcd", b"xyz"]
    assert front.refusals == []


@pytest.mark.parametrize("key", KEYS)
async def test_rebuilt_canonical_request_is_botocores(front: SigV4Front, upstream: Upstream, key: str) -> None:
    # Signed with another secret, so the front refuses and shows the canonical request it rebuilt from the
    # bytes it received: it must be the one botocore signed.
    with botocore_canonical_requests() as signed:
        url = presign(botocore_client(front.url, secret="not-the-secret"), "upload_part", Key=key,
                      UploadId="dGVzdA+/x7Q==", PartNumber=3, ContentLength=4)  # fmt: skip
    answer = await raw_exchange(front.port, raw_request(url, headers={"Content-Length": "4"}, body=b"abcd"))
    assert statuses(answer) == [403]
    error = error_of(answer.split(b"\r\n\r\n", 1)[1])
    assert error["Code"] == "SignatureDoesNotMatch"
    assert error["CanonicalRequest"] == signed[0]
    assert error["AWSAccessKeyId"] == ACCESS_KEY_ID
    assert upstream.received == []


def test_canonical_forms() -> None:
    assert canonical_uri("/b/a%20b%2Bc%3D/%C3%A9") == "/b/a%20b%2Bc%3D/%C3%A9"
    assert canonical_uri("/b/a b+c=(x)") == "/b/a%20b%2Bc%3D%28x%29"  # unencoded on the wire: encoded once
    assert canonical_uri("/b/%252F//./..") == "/b/%252F//./.."  # no double encoding, no normalisation
    assert canonical_query("b=2&a=1&X-Amz-Signature=s&uploads&a=0") == "a=0&a=1&b=2&uploads="
    assert canonical_query("k=a+b%2fc") == "k=a%2Bb%2Fc"


# --- changes to what was signed are refused ------------------------------------------------------------------------


@dataclass
class Attempt:
    """A request to send instead of the signed one."""

    url: str
    method: str = "PUT"
    body: bytes = b"abcd"
    headers: dict[str, str] = field(default_factory=lambda: {"If-None-Match": "*"})


def replace_param(url: str, name: str, value: str | None) -> str:
    parts = urlsplit(url)
    pairs = [p for p in parts.query.split("&") if not p.startswith(f"{name}=")]
    if value is not None:
        pairs.append(f"{name}={value}")
    return urlunsplit(parts._replace(query="&".join(pairs)))


TAMPERED: dict[str, tuple[Callable[[Attempt], None], int, str]] = {
    "part number": (lambda a: setattr(a, "url", replace_param(a.url, "partNumber", "3")), 403, "SignatureDoesNotMatch"),
    "upload id": (lambda a: setattr(a, "url", replace_param(a.url, "uploadId", "other")), 403, "SignatureDoesNotMatch"),
    "added parameter": (lambda a: setattr(a, "url", a.url + "&x-id=PutObject"), 403, "SignatureDoesNotMatch"),
    "removed parameter": (lambda a: setattr(a, "url", replace_param(a.url, "uploadId", None)), 403,
                          "SignatureDoesNotMatch"),
    "expires": (lambda a: setattr(a, "url", replace_param(a.url, "X-Amz-Expires", "3600")), 403,
                "SignatureDoesNotMatch"),
    "signature": (lambda a: setattr(a, "url", replace_param(a.url, "X-Amz-Signature", "0" * 64)), 403,
                  "SignatureDoesNotMatch"),
    "key": (lambda a: setattr(a, "url", a.url.replace("/k.mov?", "/K.mov?")), 403, "SignatureDoesNotMatch"),
    "method": (lambda a: setattr(a, "method", "POST"), 403, "SignatureDoesNotMatch"),
    "shorter body": (lambda a: setattr(a, "body", b"abc"), 403, "SignatureDoesNotMatch"),
    "longer body": (lambda a: setattr(a, "body", b"abcde"), 403, "SignatureDoesNotMatch"),
    "if-none-match missing": (lambda a: a.headers.pop("If-None-Match"), 403, "SignatureDoesNotMatch"),
    "if-none-match other": (lambda a: a.headers.update({"If-None-Match": '"abc"'}), 403, "SignatureDoesNotMatch"),
    "host": (lambda a: a.headers.update({"Host": "localhost"}), 403, "SignatureDoesNotMatch"),
    "unsigned x-amz header": (lambda a: a.headers.update({"x-amz-meta-a": "1"}), 403, "AccessDenied"),
    "algorithm": (lambda a: setattr(a, "url", replace_param(a.url, "X-Amz-Algorithm", "AWS4-HMAC-SHA1")), 400,
                  "AuthorizationQueryParametersError"),
    "date dropped": (lambda a: setattr(a, "url", replace_param(a.url, "X-Amz-Date", None)), 400,
                     "AuthorizationQueryParametersError"),
    "authorization header too": (lambda a: a.headers.update({"Authorization": "AWS4-HMAC-SHA256 x"}), 400,
                                 "InvalidArgument"),
}  # fmt: skip


@pytest.mark.parametrize("change", list(TAMPERED))
async def test_changes_to_what_was_signed_are_refused(
    front: SigV4Front, upstream: Upstream, http: httpx.AsyncClient, change: str
) -> None:
    mutate, status, code = TAMPERED[change]
    client = botocore_client(front.url)
    # PutObject has no uploadId: the id-related changes need an UploadPart URL (which cannot sign If-None-Match).
    if change in ("part number", "upload id", "removed parameter"):
        attempt = Attempt(presign(client, "upload_part", Key="k.mov", UploadId="u1", PartNumber=2, ContentLength=4),
                          headers={})  # fmt: skip
    else:
        attempt = Attempt(presign(client, "put_object", Key="k.mov", ContentLength=4, IfNoneMatch="*"))
    signed = await http.request(attempt.method, attempt.url, content=attempt.body, headers=attempt.headers)
    assert signed.status_code == 200, signed.text  # as signed, it passes
    upstream.received.clear()
    front.reset()
    mutate(attempt)
    answer = await http.request(attempt.method, attempt.url, content=attempt.body, headers=attempt.headers)
    assert_refused(front, upstream, answer, status, code)


async def test_refusals_carry_s3s_details(front: SigV4Front, upstream: Upstream, http: httpx.AsyncClient) -> None:
    url = presign(botocore_client(front.url), "put_object", Key="k", ContentLength=4, IfNoneMatch="*")
    missing = await http.put(url, content=b"abcd")
    assert error_of(missing.content)["Message"].startswith("The request signature we calculated does not match")
    assert front.refusals[-1].reason == "signed header if-none-match was not sent"
    unsigned = await http.put(url, content=b"abcd", headers={"If-None-Match": "*", "x-amz-checksum-crc32": "AAAAAA=="})
    error = error_of(unsigned.content)
    assert error["Message"] == "There were headers present in the request which were not signed"
    assert error["HeadersNotSigned"] == "x-amz-checksum-crc32"
    head = await http.head(url, headers={"If-None-Match": "*"})  # a HEAD is refused without a body, as S3 does
    assert head.status_code == 403 and head.content == b""
    assert upstream.received == []


async def test_wrong_secret_and_unknown_access_key(upstream: Upstream, http: httpx.AsyncClient) -> None:
    front = await SigV4Front(upstream.url, secrets={ACCESS_KEY_ID: SECRET, "OTHER": "other-secret"}).start()
    try:
        good = presign(botocore_client(front.url), "put_object", Key="k", ContentLength=1)
        assert (await http.put(good, content=b"x")).status_code == 200
        wrong = presign(botocore_client(front.url, secret="other-secret"), "put_object", Key="k", ContentLength=1)
        assert error_of((await http.put(wrong, content=b"x")).content)["Code"] == "SignatureDoesNotMatch"
        unknown = good.replace(f"X-Amz-Credential={ACCESS_KEY_ID}", "X-Amz-Credential=NOBODY")
        answer = await http.put(unknown, content=b"x")
        assert answer.status_code == 403 and error_of(answer.content)["Code"] == "InvalidAccessKeyId"
        assert [r.code for r in front.refusals] == ["SignatureDoesNotMatch", "InvalidAccessKeyId"]
        assert len(upstream.received) == 1
    finally:
        await front.close()


async def test_region_is_checked_when_configured(upstream: Upstream, http: httpx.AsyncClient) -> None:
    front = await SigV4Front(upstream.url, region="eu-west-3").start()
    try:
        url = presign(botocore_client(front.url), "put_object", Key="k", ContentLength=1)  # us-east-1
        answer = await http.put(url, content=b"x")
        assert answer.status_code == 400
        assert "the region 'us-east-1' is wrong; expecting 'eu-west-3'" in error_of(answer.content)["Message"]
    finally:
        await front.close()


# --- time ----------------------------------------------------------------------------------------------------------


async def test_an_expired_url_is_refused(front: SigV4Front, upstream: Upstream, http: httpx.AsyncClient) -> None:
    signed_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    with botocore_clock(signed_at):
        url = presign(botocore_client(front.url), "put_object", expires=60, Key="k", ContentLength=4)
    answer = await http.put(url, content=b"abcd")
    assert_refused(front, upstream, answer, 403, "AccessDenied")
    error = error_of(answer.content)
    assert error["Message"] == "Request has expired"
    assert error["X-Amz-Expires"] == "60"
    assert error["Expires"] == (signed_at + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_expiry_boundary_and_future_dates(
    front: SigV4Front, upstream: Upstream, clock: Clock, http: httpx.AsyncClient
) -> None:
    signed_at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    url = our_presigner(front.url).presign_put_object(BUCKET, "k", content_length=1, expires_in=60, now=signed_at)
    clock.now = signed_at.timestamp() + 60  # the last second it is valid
    assert (await http.put(url, content=b"x")).status_code == 200
    clock.now += 1
    assert error_of((await http.put(url, content=b"x")).content)["Message"] == "Request has expired"
    clock.now = signed_at.timestamp() - 15 * 60  # X-Amz-Date 15 minutes ahead: tolerated clock skew
    assert (await http.put(url, content=b"x")).status_code == 200
    clock.now -= 1
    assert error_of((await http.put(url, content=b"x")).content)["Message"] == "Request is not valid yet"
    assert len(upstream.received) == 2


@pytest.mark.parametrize(("expires", "message"), [(604_800, None), (604_801, "must be less than a week")])
async def test_expires_over_a_week_is_refused(
    front: SigV4Front, upstream: Upstream, http: httpx.AsyncClient, expires: int, message: str | None
) -> None:
    url = presign(botocore_client(front.url), "put_object", expires=expires, Key="k", ContentLength=1)
    answer = await http.put(url, content=b"x")
    if message is None:
        assert answer.status_code == 200
    else:
        assert_refused(front, upstream, answer, 400, "AuthorizationQueryParametersError")
        assert message in error_of(answer.content)["Message"]


# --- checksums -----------------------------------------------------------------------------------------------------

BOTOCORE_CHECKSUM_PARAMS = {"crc32": "ChecksumCRC32", "crc32c": "ChecksumCRC32C", "crc64nvme": "ChecksumCRC64NVME",
                            "sha1": "ChecksumSHA1", "sha256": "ChecksumSHA256"}  # fmt: skip


def assert_computable(algorithm: str) -> None:
    # awscrt and crc32c are locked dev dependencies: every algorithm is computed here, none let through unchecked.
    assert checksum_unavailable(algorithm) is None


@pytest.mark.parametrize("algorithm", list(CHECKSUM_ALGORITHMS))
async def test_a_signed_checksum_that_is_not_the_bodys_is_bad_digest(
    front: SigV4Front, upstream: Upstream, http: httpx.AsyncClient, algorithm: str
) -> None:
    assert_computable(algorithm)
    good = checksum_value(algorithm, BODY)
    bad = checksum_value(algorithm, BODY + b"!")
    client = botocore_client(front.url)
    for value, status in [(good, 200), (bad, 400)]:
        url = presign(client, "upload_part", Key="k", UploadId="u", PartNumber=1, ContentLength=len(BODY),
                      **{BOTOCORE_CHECKSUM_PARAMS[algorithm]: value})  # fmt: skip
        answer = await http.put(url, content=BODY, headers={f"x-amz-checksum-{algorithm}": value})
        assert answer.status_code == status, answer.text
    error = error_of(answer.content)
    assert error["Code"] == "BadDigest"
    assert error["Message"] == f"The {algorithm.upper()} you specified did not match the calculated checksum."
    assert [r.code for r in front.refusals] == ["BadDigest"]
    assert len(upstream.received) == 1


# botocore signs these parameters as headers; each request is sent with exactly the headers its URL signed.
CHECKSUM_REQUESTS: dict[str, tuple[dict[str, str], str]] = {
    "not base64": ({"ChecksumCRC32": "****"}, "Value for x-amz-checksum-crc32 header is invalid."),
    "wrong size": ({"ChecksumSHA256": "AAAAAA=="}, "Value for x-amz-checksum-sha256 header is invalid."),
    "other algorithm named": ({"ChecksumCRC32": "AAAAAA==", "ChecksumAlgorithm": "SHA256"},
                              "Value for x-amz-sdk-checksum-algorithm header is invalid."),
    "algorithm without value": ({"ChecksumAlgorithm": "CRC32"},
                                "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or "
                                "x-amz-trailer headers were found."),
    "two checksums": ({"ChecksumCRC32": "AAAAAA==", "ChecksumSHA1": "A" * 27 + "="},
                      "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."),
}  # fmt: skip
HEADER_OF_PARAM = {param: f"x-amz-checksum-{alg}" for alg, param in BOTOCORE_CHECKSUM_PARAMS.items()}
HEADER_OF_PARAM["ChecksumAlgorithm"] = "x-amz-sdk-checksum-algorithm"


@pytest.mark.parametrize("case", list(CHECKSUM_REQUESTS))
async def test_malformed_checksum_headers_are_invalid_requests(
    front: SigV4Front, upstream: Upstream, http: httpx.AsyncClient, case: str
) -> None:
    params, message = CHECKSUM_REQUESTS[case]
    url = presign(botocore_client(front.url), "put_object", Key="k", ContentLength=1, **params)
    signed = urlsplit(url).query.split("X-Amz-SignedHeaders=")[1].split("&")[0].split("%3B")
    headers = {HEADER_OF_PARAM[name]: value for name, value in params.items()}
    assert sorted(["content-length", "host", *headers]) == signed  # the signature holds: only the values are off
    answer = await http.put(url, content=b"x", headers=headers)
    assert_refused(front, upstream, answer, 400, "InvalidRequest")
    assert error_of(answer.content)["Message"] == message


# --- framing -------------------------------------------------------------------------------------------------------


async def test_a_body_cut_short_is_incomplete(front: SigV4Front, upstream: Upstream) -> None:
    url = presign(botocore_client(front.url), "put_object", Key="k", ContentLength=10)
    # The client claims the signed length but sends 9 bytes and ends its side.
    answer = await raw_exchange(front.port, raw_request(url, headers={"Content-Length": "10"}, body=b"123456789"))
    assert statuses(answer) == [400]
    assert error_of(answer.split(b"\r\n\r\n", 1)[1])["Code"] == "IncompleteBody"
    assert [r.code for r in front.refusals] == ["IncompleteBody"]
    assert upstream.received == []


async def test_a_stalled_body_times_out(upstream: Upstream) -> None:
    front = await SigV4Front(upstream.url, body_timeout=0.3).start()
    try:
        url = presign(botocore_client(front.url), "put_object", Key="k", ContentLength=10)
        request = raw_request(url, headers={"Content-Length": "10"}, body=b"12345")
        answer = await raw_exchange(front.port, request, end=False)  # sends half and waits
        assert statuses(answer) == [400]
        assert error_of(answer.split(b"\r\n\r\n", 1)[1])["Code"] == "RequestTimeout"
        assert upstream.received == []
    finally:
        await front.close()


async def test_bytes_past_content_length_never_reach_the_object(front: SigV4Front, upstream: Upstream) -> None:
    url = presign(botocore_client(front.url), "put_object", Key="k", ContentLength=4)
    # HTTP/1.1 framing: the body is the 4 signed bytes; what follows is read as the next request.
    answer = await raw_exchange(front.port, raw_request(url, headers={"Content-Length": "4"}, body=b"abcd!"))
    assert statuses(answer) == [200]
    assert [r.body for r in upstream.received] == [b"abcd"]
    answer = await raw_exchange(front.port, raw_request(url, headers={"Content-Length": "4"},
                                                        body=b"abcdEXTRA BYTES\r\n\r\n"))  # fmt: skip
    assert statuses(answer) == [200, 400]
    assert [r.body for r in upstream.received] == [b"abcd", b"abcd"]
    assert [r.code for r in front.refusals] == ["BadRequest"]


def chunked(body: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 3]), body[i : i + 3]) for i in range(0, len(body), 3)) + (
        b"0\r\n\r\n"
    )


@pytest.mark.parametrize("with_length", [False, True], ids=["chunked", "chunked+content-length"])
async def test_a_chunked_body_where_content_length_is_signed_is_refused(
    front: SigV4Front, upstream: Upstream, with_length: bool
) -> None:
    url = presign(botocore_client(front.url), "put_object", Key="k", ContentLength=4)
    headers = {"Transfer-Encoding": "chunked", **({"Content-Length": "4"} if with_length else {})}
    answer = await raw_exchange(front.port, raw_request(url, headers=headers, body=chunked(b"abcd")))
    assert statuses(answer) == [403]
    assert error_of(answer.split(b"\r\n\r\n", 1)[1])["Code"] == "SignatureDoesNotMatch"
    assert front.refusals[0].reason == "a chunked body where content-length is signed"
    assert upstream.received == []


async def test_a_chunked_body_where_only_host_is_signed_passes(front: SigV4Front, upstream: Upstream) -> None:
    url = presign(botocore_client(front.url), "put_object", Key="k")
    answer = await raw_exchange(front.port, raw_request(url, headers={"Transfer-Encoding": "chunked"},
                                                        body=chunked(b"abcdefgh")))  # fmt: skip
    assert statuses(answer) == [200]
    (got,) = upstream.received
    assert got.body == b"abcdefgh" and got.headers["content-length"] == "8" and "transfer-encoding" not in got.headers


async def test_expect_100_continue(front: SigV4Front, upstream: Upstream) -> None:
    url = presign(botocore_client(front.url), "put_object", Key="k", ContentLength=4)
    good = raw_request(url, headers={"Content-Length": "4", "Expect": "100-continue"}, body=b"abcd")
    assert statuses(await raw_exchange(front.port, good)) == [100, 200]
    # Refused before the body is sent: no 100, the answer, and the connection is closed.
    bad = raw_request(replace_param(url, "X-Amz-Signature", "0" * 64), headers={"Content-Length": "4",
                      "Expect": "100-continue"})  # fmt: skip
    answer = await raw_exchange(front.port, bad, end=False)
    assert statuses(answer) == [403] and b"Connection: close" in answer
    assert [r.body for r in upstream.received] == [b"abcd"]


# --- forwarding ----------------------------------------------------------------------------------------------------


async def test_authorization_header_requests_are_forwarded_unchanged(
    front: SigV4Front, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    headers = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/s3/aws4_request, Signature=0",
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "x-amz-date": "20260101T000000Z",
        "Content-Type": "a/b",
    }
    answer = await http.put(f"{front.url}/{BUCKET}/a%20b?uploadId=x&partNumber=1", content=b"body", headers=headers)
    assert answer.status_code == 200 and answer.headers["etag"] == '"e"'
    (got,) = upstream.received
    assert (got.method, got.target, got.body) == ("PUT", f"/{BUCKET}/a%20b?uploadId=x&partNumber=1", b"body")
    assert {k: got.headers[k.lower()] for k in headers} == headers
    assert got.headers["host"] == f"127.0.0.1:{front.port}"
    assert got.headers["connection"] == "close"
    assert [(e.auth, e.status) for e in front.exchanges] == [("header", 200)]


async def test_streamed_chunked_and_absolute_form_requests_are_forwarded(front: SigV4Front, upstream: Upstream) -> None:
    request = (f"POST http://127.0.0.1:{front.port}/{BUCKET}/k?uploads HTTP/1.1\r\nHost: 127.0.0.1:{front.port}\r\n"
               "Transfer-Encoding: chunked\r\n\r\n").encode() + chunked(b"<xml/>" * 100)  # fmt: skip
    assert statuses(await raw_exchange(front.port, request)) == [200]
    (got,) = upstream.received
    assert (got.target, got.body) == (f"/{BUCKET}/k?uploads", b"<xml/>" * 100)


ANSWERS: dict[str, tuple[bytes, int, bytes]] = {
    # upstream's answer → the status and body the client must get
    "sized": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", 200, b"hello"),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"hello world"), 200,
                b"hello world"),
    "until close": (b"HTTP/1.0 404 Not Found\r\nContent-Type: application/xml\r\n\r\n<Error/>", 404, b"<Error/>"),
    "no content": (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b""),
    "interim first": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok"),
}  # fmt: skip


@pytest.mark.parametrize("shape", list(ANSWERS))
async def test_answers_are_relayed_on_a_kept_connection(front: SigV4Front, upstream: Upstream, shape: str) -> None:
    reply, status, body = ANSWERS[shape]
    upstream.answer = lambda seen: reply
    async with httpx.AsyncClient() as http:
        for _ in range(3):
            answer = await http.get(f"{front.url}/{BUCKET}/k")
            assert (answer.status_code, answer.content) == (status, body)
        head = await http.head(f"{front.url}/{BUCKET}/k")  # sized but bodiless: must not hang
        assert head.content == b""
    assert front.connections == 1  # the client kept its connection throughout
    assert len(upstream.received) == 4


async def test_malformed_requests_get_400(front: SigV4Front, upstream: Upstream) -> None:
    for request in [b"NOT HTTP\r\n\r\n", b"PUT /x HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\nx"]:
        answer = await raw_exchange(front.port, request)
        assert statuses(answer) == [400]
    assert [r.code for r in front.refusals] == ["BadRequest", "BadRequest"]
    assert upstream.received == []
