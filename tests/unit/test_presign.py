"""Unit tests for app.presign: URLs must match botocore's generate_presigned_url exactly.

botocore is the reference: same inputs and a frozen clock must give the same signature.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

import botocore.auth
import botocore.config
import botocore.session
import pytest

import app.storage.presign
from app.storage.presign import PresignCredentials, S3Presigner

ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
# STS tokens are base64, so '+', '/' and '=' must be encoded in the query string.
SESSION_TOKEN = "FwoGZXIvYXdzEJr//////////wEaDOPk+Ux3/ab=="
BUCKET = "spatialgen-test"
# Microseconds on purpose: both sides must truncate to whole seconds the same way.
FROZEN_NOW = datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)
LOCAL_PORT = 9000  # a non-default port, which must appear in the signed Host header

# (endpoint_url, region): both endpoints under every region, plus the R2 shape.
TARGETS = [
    *itertools.product(
        [f"http://127.0.0.1:{LOCAL_PORT}", "https://s3.eu-west-3.amazonaws.com"],
        ["us-east-1", "eu-west-3", "auto"],
    ),
    ("https://0123456789abcdef.r2.cloudflarestorage.com", "auto"),
]

KEYS = [
    "video.mov",
    "my folder/my video (1).mov",
    "vidéo/日本 語.mov",
    "a+b=c&d%e~f.mov",
    "literal%2Fslash and %20space.mov",
    "dir//double///slashes/x.mov",
    "/leading/and/trailing/",
    "q?uery#frag;semi,comma:colon@at$dollar!*'(\"[]).mov",
    "emoji 🎬/ü.mov",
    # botocore (and S3) keep dot segments verbatim; note that WHATWG URL parsers (browsers,
    # fetch) resolve "./" and "../" before sending, so such a key cannot be PUT from a browser.
    "./dot/../segments/x.mov",
]

UPLOAD_IDS = [
    # Shapes of real AWS upload ids ('.', '-', '_' are unreserved and stay as-is).
    "2~iCw_lDWkpDUT1BC7UR9a6nAtDOpUvbW.Jfd4g-Hy_sAzKn",
    "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA",
    # moto's ids are base64 with '+', '/' and '=' that must be %-encoded.
    "dGVzdA+/x7Q==",
    "a b&c=d%e",
]

PART_NUMBERS = [1, 42, 10_000]
# Body lengths a URL binds: empty, small, the 5 MiB part minimum, and S3's 5 GiB single-PUT maximum.
LENGTHS = [0, 2_401, 5 * 1024 * 1024, 5 * 1024**3]

# One UploadPart case per key, cycling upload ids and part numbers so each appears with
# several keys without multiplying the matrix.
UPLOAD_PART_CASES = [
    (key, upload_id, part_number, length)
    for key, upload_id, part_number, length in zip(
        KEYS,
        itertools.cycle(UPLOAD_IDS),
        itertools.cycle(PART_NUMBERS),
        itertools.cycle(LENGTHS),
        strict=False,
    )
]


@pytest.fixture
def frozen_botocore_clock(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Freeze the timestamp botocore signs with and return it."""

    # botocore 1.43's SigV4Auth/SigV4QueryAuth.add_auth call the name
    # `get_current_datetime` that botocore.auth imported from botocore.compat (it wraps
    # datetime.datetime.now(timezone.utc) and strips tzinfo); botocore.auth.datetime is not
    # consulted for the timestamp, so that name is the one to patch.
    def fake_now(remove_tzinfo: bool = True) -> datetime:
        return FROZEN_NOW.replace(tzinfo=None) if remove_tzinfo else FROZEN_NOW

    monkeypatch.setattr(botocore.auth, "get_current_datetime", fake_now)
    if botocore.auth.HAS_CRT:  # with awscrt installed botocore signs through botocore.crt.auth, which has its own
        monkeypatch.setattr(importlib.import_module("botocore.crt.auth"), "get_current_datetime", fake_now)
    return FROZEN_NOW


@cache
def botocore_client(
    endpoint_url: str, region: str, addressing_style: str, session_token: str | None
) -> Any:  # botocore clients are generated classes without stubs
    """Return a (cached) botocore S3 client configured like the presigner under test."""
    return botocore.session.get_session().create_client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        aws_session_token=session_token,
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": addressing_style}),
    )


def make_presigner(endpoint_url: str, region: str, addressing_style: str, session_token: str | None) -> S3Presigner:
    """Build the presigner under test with the shared test credentials."""
    return S3Presigner(
        endpoint_url=endpoint_url,
        region=region,
        credentials=PresignCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY, session_token),
        addressing_style=addressing_style,
    )


def presign_part(
    presigner: S3Presigner, bucket: str, key: str, *, upload_id: str, part_number: int, content_length: int,
    expires_in: int, now: datetime,
) -> str:  # fmt: skip
    """One part's URL, signed the way part-urls signs every part (a batch of one)."""
    return presigner.presign_upload_parts(
        bucket, key, upload_id=upload_id, parts=[(part_number, content_length)], expires_in=expires_in, now=now
    )[0]


def assert_same_url(ours: str, theirs: str) -> None:
    """Compare two presigned URLs field by field (botocore orders its parameters differently)."""
    a, b = urlsplit(ours), urlsplit(theirs)
    assert a.scheme == b.scheme
    assert a.netloc == b.netloc
    # The raw (still encoded) path: S3 verifies the signature against exactly these bytes.
    assert a.path == b.path
    assert not a.fragment
    assert not b.fragment
    ours_params = parse_qs(a.query, keep_blank_values=True, strict_parsing=True)
    theirs_params = parse_qs(b.query, keep_blank_values=True, strict_parsing=True)
    assert ours_params["X-Amz-Signature"] == theirs_params["X-Amz-Signature"]
    assert ours_params == theirs_params
    # Same encoded name=value pairs too, not just the same decoded values.
    assert sorted(a.query.split("&")) == sorted(b.query.split("&"))


style_param = pytest.mark.parametrize("addressing_style", ["path", "virtual"])
token_param = pytest.mark.parametrize("session_token", [None, SESSION_TOKEN], ids=["no-token", "token"])
target_param = pytest.mark.parametrize(("endpoint_url", "region"), TARGETS)


def botocore_put_object(client: Any, bucket: str, key: str, length: int, *, write_once: bool, expires: int) -> str:
    """botocore's PutObject URL signing the same headers as ours: Content-Length, and If-None-Match when write-once."""
    params: dict[str, Any] = {"Bucket": bucket, "Key": key, "ContentLength": length}
    if write_once:
        params["IfNoneMatch"] = "*"
    return str(client.generate_presigned_url("put_object", Params=params, ExpiresIn=expires))


@target_param
@style_param
@pytest.mark.parametrize("content_type", ["video/quicktime", "application/x-subrip", "audio/mp4"])
@pytest.mark.parametrize("write_once", [True, False], ids=["if-none-match", "overwritable"])
@pytest.mark.usefixtures("frozen_botocore_clock")
def test_put_object_with_a_content_type_matches_botocore(
    endpoint_url: str, region: str, addressing_style: str, content_type: str, write_once: bool
) -> None:
    client = botocore_client(endpoint_url, region, addressing_style, None)
    params: dict[str, Any] = {"Bucket": BUCKET, "Key": "a/b.mov", "ContentLength": 123, "ContentType": content_type}
    if write_once:
        params["IfNoneMatch"] = "*"
    theirs = str(client.generate_presigned_url("put_object", Params=params, ExpiresIn=900))
    ours = make_presigner(endpoint_url, region, addressing_style, None).presign_put_object(
        BUCKET, "a/b.mov", content_length=123, expires_in=900, now=FROZEN_NOW, if_none_match=write_once,
        content_type=content_type,
    )  # fmt: skip
    assert_same_url(ours, theirs)
    signed = parse_qs(urlsplit(ours).query)["X-Amz-SignedHeaders"][0]
    assert signed == "content-length;content-type;host" + (";if-none-match" if write_once else "")


@pytest.mark.parametrize("bad", ["text/html; charset=utf-8", "video", "Video/MP4", "a/b\nx-amz-acl:public", ""])
def test_a_content_type_that_is_not_a_plain_media_type_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="content type"):
        make_presigner(*TARGETS[0], "path", None).presign_put_object(
            BUCKET, "k", content_length=1, expires_in=60, now=FROZEN_NOW, content_type=bad
        )


def botocore_upload_part(client: Any, bucket: str, key: str, upload_id: str, part_number: int, length: int,
                         expires: int = 3600) -> str:  # fmt: skip
    """botocore's UploadPart URL signing Content-Length, as ours does."""
    params = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": part_number, "ContentLength": length}
    return str(client.generate_presigned_url("upload_part", Params=params, ExpiresIn=expires))


@target_param
@style_param
@token_param
@pytest.mark.parametrize(("key", "length"), list(zip(KEYS, itertools.cycle(LENGTHS), strict=False)))
@pytest.mark.parametrize("write_once", [True, False], ids=["if-none-match", "overwritable"])
@pytest.mark.usefixtures("frozen_botocore_clock")
def test_put_object_matches_botocore(
    endpoint_url: str,
    region: str,
    addressing_style: str,
    session_token: str | None,
    key: str,
    length: int,
    write_once: bool,
) -> None:
    client = botocore_client(endpoint_url, region, addressing_style, session_token)
    theirs = botocore_put_object(client, BUCKET, key, length, write_once=write_once, expires=900)
    ours = make_presigner(endpoint_url, region, addressing_style, session_token).presign_put_object(
        BUCKET, key, content_length=length, expires_in=900, now=FROZEN_NOW, if_none_match=write_once
    )
    assert_same_url(ours, theirs)
    signed = parse_qs(urlsplit(ours).query)["X-Amz-SignedHeaders"]
    assert signed == (["content-length;host;if-none-match"] if write_once else ["content-length;host"])


@target_param
@style_param
@token_param
@pytest.mark.parametrize(("key", "upload_id", "part_number", "length"), UPLOAD_PART_CASES)
@pytest.mark.usefixtures("frozen_botocore_clock")
def test_upload_part_matches_botocore(
    *,
    endpoint_url: str,
    region: str,
    addressing_style: str,
    session_token: str | None,
    key: str,
    upload_id: str,
    part_number: int,
    length: int,
) -> None:
    client = botocore_client(endpoint_url, region, addressing_style, session_token)
    theirs = botocore_upload_part(client, BUCKET, key, upload_id, part_number, length)
    ours = presign_part(
        make_presigner(endpoint_url, region, addressing_style, session_token),
        BUCKET,
        key,
        upload_id=upload_id,
        part_number=part_number,
        content_length=length,
        expires_in=3600,
        now=FROZEN_NOW,
    )
    assert_same_url(ours, theirs)


@pytest.mark.parametrize("length", [1, 2_401, 5 * 1024 * 1024])
@pytest.mark.parametrize("write_once", [True, False])
@pytest.mark.usefixtures("frozen_botocore_clock")
def test_a_body_of_another_length_does_not_match_the_signature(length: int, write_once: bool) -> None:
    """What storage checks: the signature it recomputes from the request's own Content-Length.

    botocore stands in for storage here (moto does not check signatures): it recomputes the signature for
    the length a client would send; only the declared length gives the URL's signature.
    """
    endpoint = f"http://127.0.0.1:{LOCAL_PORT}"
    client = botocore_client(endpoint, "us-east-1", "path", None)
    presigner = make_presigner(endpoint, "us-east-1", "path", None)

    def signature(url: str) -> str:
        return parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]

    put = presigner.presign_put_object(BUCKET, "k", content_length=length, expires_in=60, now=FROZEN_NOW,
                                       if_none_match=write_once)  # fmt: skip
    part = presign_part(presigner, BUCKET, "k", upload_id="u", part_number=2, content_length=length,
                                         expires_in=60, now=FROZEN_NOW)  # fmt: skip
    for sent in (length - 1, length + 1, 0, 5 * 1024**3):
        if sent == length:
            continue
        theirs_put = botocore_put_object(client, BUCKET, "k", sent, write_once=write_once, expires=60)
        assert signature(theirs_put) != signature(put)
        assert signature(botocore_upload_part(client, BUCKET, "k", "u", 2, sent, 60)) != signature(part)
    assert signature(botocore_put_object(client, BUCKET, "k", length, write_once=write_once, expires=60)) == signature(
        put
    )
    # A PUT that leaves out If-None-Match is a different request too: the header is part of the signature.
    if write_once:
        assert signature(botocore_put_object(client, BUCKET, "k", length, write_once=False, expires=60)) != signature(
            put
        )


# Endpoint/bucket shapes where botocore rewrites the request: these pin the Host value
# and addressing fallbacks, which S3 checks as part of the signature.
EDGE_CASES = [
    # Virtual style against an IP literal: botocore silently falls back to path style.
    pytest.param(f"http://127.0.0.1:{LOCAL_PORT}", "virtual", BUCKET, id="ip-virtual"),
    pytest.param("http://[::1]:9000", "path", BUCKET, id="ipv6-path"),
    pytest.param("http://[::1]:9000", "virtual", BUCKET, id="ipv6-virtual"),
    pytest.param("http://localhost:9000", "virtual", BUCKET, id="localhost-virtual"),
    # Dotted buckets: virtual over http (bucket.host), path over https (TLS wildcard).
    pytest.param("http://minio.local:9000", "virtual", "my.bucket", id="dots-http"),
    pytest.param("https://s3.eu-west-3.amazonaws.com", "virtual", "my.bucket", id="dots-https"),
    # Not DNS-compatible (uppercase, '_', too short): path style even when virtual asked.
    pytest.param("https://s3.eu-west-3.amazonaws.com", "virtual", "My_Bucket", id="not-dns"),
    pytest.param("https://s3.eu-west-3.amazonaws.com", "virtual", "ab", id="short"),
    pytest.param("https://s3.eu-west-3.amazonaws.com", "virtual", "1.2.3.4", id="ipv4-ish"),
    # Explicit default port and uppercase host: the URL keeps them as written, but the
    # signed Host is lowercase without ":443" (what an HTTP client actually sends).
    pytest.param("https://S3.EU-West-3.amazonaws.com:443", "path", BUCKET, id="default-port-path"),
    pytest.param("https://S3.EU-West-3.amazonaws.com:443", "virtual", BUCKET, id="default-port-vhost"),
    pytest.param("http://minio.local:80", "path", BUCKET, id="http-default-port"),
    # An endpoint path prefix (reverse proxies) is kept before bucket/key.
    pytest.param("https://proxy.example.com/s3/", "path", BUCKET, id="prefix-path"),
    pytest.param("https://proxy.example.com/s3", "virtual", BUCKET, id="prefix-vhost"),
]


@pytest.mark.parametrize(("endpoint_url", "addressing_style", "bucket"), EDGE_CASES)
@pytest.mark.usefixtures("frozen_botocore_clock")
def test_endpoint_edge_cases_match_botocore(endpoint_url: str, addressing_style: str, bucket: str) -> None:
    client = botocore_client(endpoint_url, "us-east-1", addressing_style, SESSION_TOKEN)
    presigner = make_presigner(endpoint_url, "us-east-1", addressing_style, SESSION_TOKEN)
    key = "dir/vidéo 1.mov"
    theirs = botocore_put_object(client, bucket, key, 10, write_once=True, expires=60)
    ours = presigner.presign_put_object(
        bucket, key, content_length=10, expires_in=60, now=FROZEN_NOW, if_none_match=True
    )
    assert_same_url(ours, theirs)
    theirs = botocore_upload_part(client, bucket, key, "u+/=", 3, 10, 60)
    ours = presign_part(
        presigner, bucket, key, upload_id="u+/=", part_number=3, content_length=10, expires_in=60, now=FROZEN_NOW
    )
    assert_same_url(ours, theirs)


def test_signed_host_keeps_non_default_port() -> None:
    url = make_presigner(f"http://127.0.0.1:{LOCAL_PORT}", "us-east-1", "path", None).presign_put_object(
        BUCKET, "k", content_length=1, expires_in=60, now=FROZEN_NOW
    )
    assert url.startswith(f"http://127.0.0.1:{LOCAL_PORT}/{BUCKET}/k?")


def test_virtual_host_puts_bucket_in_host() -> None:
    url = make_presigner("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "virtual", None).presign_put_object(
        BUCKET, "a b/c.mov", content_length=1, expires_in=60, now=FROZEN_NOW
    )
    parts = urlsplit(url)
    assert parts.netloc == f"{BUCKET}.s3.eu-west-3.amazonaws.com"
    assert parts.path == "/a%20b/c.mov"


@pytest.mark.parametrize("expires_in", [1, 604_800])
@pytest.mark.usefixtures("frozen_botocore_clock")
def test_expires_in_bounds_match_botocore(expires_in: int) -> None:
    endpoint = f"http://127.0.0.1:{LOCAL_PORT}"
    theirs = botocore_put_object(
        botocore_client(endpoint, "eu-west-3", "path", None), BUCKET, "k", 1, write_once=False, expires=expires_in
    )
    ours = make_presigner(endpoint, "eu-west-3", "path", None).presign_put_object(
        BUCKET, "k", content_length=1, expires_in=expires_in, now=FROZEN_NOW
    )
    assert_same_url(ours, theirs)


@pytest.mark.parametrize("expires_in", [0, -1, 604_801, 10**9])
def test_expires_in_out_of_range_is_rejected(expires_in: int) -> None:
    presigner = make_presigner("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "path", None)
    with pytest.raises(ValueError, match="expires_in"):
        presigner.presign_put_object(BUCKET, "k", content_length=1, expires_in=expires_in, now=FROZEN_NOW)
    with pytest.raises(ValueError, match="expires_in"):
        presign_part(
            presigner,
            BUCKET,
            "k",
            upload_id="u",
            part_number=1,
            content_length=1,
            expires_in=expires_in,
            now=FROZEN_NOW,
        )
    with pytest.raises(ValueError, match="expires_in"):
        presigner.presign_upload_parts(
            BUCKET, "k", upload_id="u", parts=[(1, 1)], expires_in=expires_in, now=FROZEN_NOW
        )


@pytest.mark.parametrize("expires_in", [True, 60.0, "60"])
def test_expires_in_must_be_an_int(expires_in: object) -> None:
    presigner = make_presigner("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "path", None)
    with pytest.raises(TypeError, match="expires_in"):
        presigner.presign_put_object(
            BUCKET,
            "k",
            content_length=1,
            expires_in=expires_in,  # type: ignore[arg-type]
            now=FROZEN_NOW,
        )


@pytest.mark.parametrize(
    ("part_number", "error"), [(0, ValueError), (10_001, ValueError), (True, TypeError), (1.0, TypeError)]
)
def test_bad_part_numbers_are_rejected(part_number: object, error: type[Exception]) -> None:
    presigner = make_presigner("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "path", None)
    with pytest.raises(error, match="part number"):
        presigner.presign_upload_parts(
            BUCKET,
            "k",
            upload_id="u",
            parts=[(1, 1), (part_number, 1)],  # type: ignore[list-item]
            expires_in=60,
            now=FROZEN_NOW,
        )


@pytest.mark.parametrize(("length", "error"), [(-1, ValueError), (5 * 1024**3 + 1, ValueError), (True, TypeError),
                                               (1.0, TypeError), ("1", TypeError)])  # fmt: skip
def test_bad_content_lengths_are_rejected(length: object, error: type[Exception]) -> None:
    presigner = make_presigner("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "path", None)
    with pytest.raises(error, match="content length"):
        presigner.presign_put_object(BUCKET, "k", content_length=length, expires_in=60, now=FROZEN_NOW)  # type: ignore[arg-type]
    with pytest.raises(error, match="content length"):
        presigner.presign_upload_parts(BUCKET, "k", upload_id="u", parts=[(1, length)], expires_in=60,  # type: ignore[list-item]
                                       now=FROZEN_NOW)  # fmt: skip


@pytest.mark.parametrize(("bucket", "key"), [("", "k"), ("bad/bucket", "k"), ("bad bucket", "k"), (BUCKET, "")])
def test_bad_bucket_or_key_is_rejected(bucket: str, key: str) -> None:
    presigner = make_presigner("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "path", None)
    with pytest.raises(ValueError, match=r"bucket|key"):
        presigner.presign_put_object(bucket, key, content_length=1, expires_in=60, now=FROZEN_NOW)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"endpoint_url": "ftp://host"}, "endpoint_url"),
        ({"endpoint_url": "127.0.0.1:9000"}, "endpoint_url"),
        ({"endpoint_url": "https://user:pw@host"}, "endpoint_url"),
        ({"endpoint_url": "https://host/?a=b"}, "endpoint_url"),
        ({"endpoint_url": "https://host/a b"}, "path"),
        ({"region": ""}, "region"),
        ({"addressing_style": "auto"}, "addressing_style"),
        ({"credentials": PresignCredentials("", "secret")}, "credentials"),
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict[str, Any], match: str) -> None:
    config: dict[str, Any] = {
        "endpoint_url": "https://s3.eu-west-3.amazonaws.com",
        "region": "eu-west-3",
        "credentials": PresignCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY),
    } | kwargs
    with pytest.raises(ValueError, match=match):
        S3Presigner(**config)


def test_now_must_be_timezone_aware() -> None:
    presigner = make_presigner("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "path", None)
    with pytest.raises(ValueError, match="timezone-aware"):
        presigner.presign_put_object(BUCKET, "k", content_length=1, expires_in=60, now=FROZEN_NOW.replace(tzinfo=None))


def test_non_utc_now_is_converted_to_utc() -> None:
    presigner = make_presigner("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "path", None)
    paris = FROZEN_NOW.astimezone(timezone(timedelta(hours=1)))
    in_paris = presigner.presign_put_object(BUCKET, "k", content_length=1, expires_in=60, now=paris)
    assert in_paris == presigner.presign_put_object(BUCKET, "k", content_length=1, expires_in=60, now=FROZEN_NOW)


@target_param
@style_param
def test_batch_equals_one_by_one(endpoint_url: str, region: str, addressing_style: str) -> None:
    presigner = make_presigner(endpoint_url, region, addressing_style, SESSION_TOKEN)
    # Any order, duplicates allowed, lengths mixed (full parts and a short last one).
    parts = [(3, 7), (1, 5 * 1024**2), (2, 5 * 1024**2), (10_000, 7), *((n, n) for n in range(4, 60)), (3, 7)]

    def one_by_one() -> Iterator[str]:
        for number, length in parts:
            yield presign_part(
                presigner,
                BUCKET,
                "vidéo/日本 語.mov",
                upload_id="dGVzdA+/x7Q==",
                part_number=number,
                content_length=length,
                expires_in=900,
                now=FROZEN_NOW,
            )

    batch = presigner.presign_upload_parts(
        BUCKET,
        "vidéo/日本 語.mov",
        upload_id="dGVzdA+/x7Q==",
        parts=iter(parts),  # a one-shot iterator is enough
        expires_in=900,
        now=FROZEN_NOW,
    )
    assert batch == list(one_by_one())


def test_batch_of_no_parts_is_empty() -> None:
    presigner = make_presigner("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "path", None)
    assert presigner.presign_upload_parts(BUCKET, "k", upload_id="u", parts=[], expires_in=60, now=FROZEN_NOW) == []


def reference_signing_key(secret: str, date_stamp: str, region: str) -> bytes:
    """Derive the SigV4 signing key step by step, as the AWS documentation spells it out."""
    key = ("AWS4" + secret).encode()
    for part in (date_stamp, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def test_signing_key_is_cached_per_date(monkeypatch: pytest.MonkeyPatch) -> None:
    presigner = make_presigner("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "path", None)
    derivations: list[str] = []
    real_hmac = app.storage.presign._hmac_sha256  # wrapped to count derivation steps

    def counting_hmac(key: bytes, msg: str) -> bytes:
        derivations.append(msg)
        return real_hmac(key, msg)

    monkeypatch.setattr(app.storage.presign, "_hmac_sha256", counting_hmac)

    day1 = presigner.signing_key("20260304")
    assert day1 == reference_signing_key(SECRET_ACCESS_KEY, "20260304", "eu-west-3")
    assert len(derivations) == 4  # date, region, service, terminator

    # Same date: served from the cache, for direct calls and for every URL of that day.
    assert presigner.signing_key("20260304") == day1
    presigner.presign_upload_parts(
        BUCKET, "k", upload_id="u", parts=((n, 1) for n in range(1, 101)), expires_in=60, now=FROZEN_NOW
    )
    assert len(derivations) == 4

    day2 = presigner.signing_key("20260305")
    assert day2 != day1
    assert day2 == reference_signing_key(SECRET_ACCESS_KEY, "20260305", "eu-west-3")
    assert len(derivations) == 8

    # A different region derives a different key for the same date.
    other = make_presigner("https://s3.eu-west-3.amazonaws.com", "auto", "path", None)
    assert other.signing_key("20260304") != day1


def test_signing_key_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    presigner = make_presigner("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "path", None)
    derivations: list[str] = []
    real_hmac = app.storage.presign._hmac_sha256  # wrapped to count derivation steps

    def counting_hmac(key: bytes, msg: str) -> bytes:
        derivations.append(msg)
        return real_hmac(key, msg)

    monkeypatch.setattr(app.storage.presign, "_hmac_sha256", counting_hmac)
    for day in range(1, 31):
        presigner.signing_key(f"202603{day:02d}")
    # Long-running processes see a new date every day; old keys must not pile up, so the
    # very first date has been evicted and is derived again.
    derivations.clear()
    presigner.signing_key("20260301")
    assert len(derivations) == 4


@pytest.mark.parametrize("date_stamp", ["2026-03-04", "2026030", "abcdefgh"])
def test_signing_key_rejects_malformed_dates(date_stamp: str) -> None:
    presigner = make_presigner("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "path", None)
    with pytest.raises(ValueError, match="YYYYMMDD"):
        presigner.signing_key(date_stamp)


def test_credentials_repr_hides_secrets() -> None:
    text = repr(PresignCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN))
    assert ACCESS_KEY_ID in text
    assert SECRET_ACCESS_KEY not in text
    assert SESSION_TOKEN not in text


def signed_at(url: str) -> datetime:
    """The X-Amz-Date a URL was signed at. botocore takes the time for a URL with a checksum parameter where the
    frozen clock does not reach, so ours signs with botocore's own timestamp."""
    stamp = parse_qs(urlsplit(url).query)["X-Amz-Date"][0]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


CHECKSUM_CASES = [
    ("CRC64NVME", "j6cFt2eoaMM="),
    ("CRC32C", "yZRlqg=="),
    ("CRC32", "NSRBwg=="),
    ("SHA256", "LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564="),
    ("SHA1", "L9ThxnotKPzthJ7hu3bnORuT6xI="),
]


@target_param
@style_param
@pytest.mark.parametrize(("algorithm", "value"), CHECKSUM_CASES)
@pytest.mark.parametrize("write_once", [True, False], ids=["if-none-match", "overwritable"])
@pytest.mark.usefixtures("frozen_botocore_clock")
def test_put_object_with_a_checksum_matches_botocore(
    endpoint_url: str, region: str, addressing_style: str, algorithm: str, value: str, write_once: bool
) -> None:
    client = botocore_client(endpoint_url, region, addressing_style, SESSION_TOKEN)
    params: dict[str, Any] = {"Bucket": BUCKET, "Key": KEYS[2], "ContentLength": 2401, "ContentType": "video/mp4",
                              f"Checksum{algorithm}": value}  # fmt: skip
    if write_once:
        params["IfNoneMatch"] = "*"
    theirs = str(client.generate_presigned_url("put_object", Params=params, ExpiresIn=900))
    ours = make_presigner(endpoint_url, region, addressing_style, SESSION_TOKEN).presign_put_object(
        BUCKET, KEYS[2], content_length=2401, expires_in=900, now=signed_at(theirs), if_none_match=write_once,
        content_type="video/mp4", checksum=(algorithm, value),
    )  # fmt: skip
    assert_same_url(ours, theirs)
    signed = parse_qs(urlsplit(ours).query)["X-Amz-SignedHeaders"][0]
    assert signed.endswith(f";x-amz-checksum-{algorithm.lower()}")


@target_param
@style_param
@pytest.mark.parametrize(("algorithm", "value"), CHECKSUM_CASES)
@pytest.mark.usefixtures("frozen_botocore_clock")
def test_upload_parts_with_checksums_match_botocore(
    endpoint_url: str, region: str, addressing_style: str, algorithm: str, value: str
) -> None:
    client = botocore_client(endpoint_url, region, addressing_style, None)
    parts = [(1, 5 * 1024 * 1024), (42, 2_401), (10_000, 7)]
    # A different value per part: each URL must sign its own.
    values = [value, value[::-1].lstrip("=") + "=" * (len(value) - len(value.rstrip("="))), value.swapcase()]
    theirs = [
        str(client.generate_presigned_url("upload_part", ExpiresIn=3600, Params={
            "Bucket": BUCKET, "Key": KEYS[3], "UploadId": UPLOAD_IDS[2], "PartNumber": n, "ContentLength": length,
            f"Checksum{algorithm}": v}))
        for (n, length), v in zip(parts, values, strict=True)
    ]  # fmt: skip
    for when in {signed_at(url) for url in theirs}:  # one timestamp, or two if a second passed between them
        ours = make_presigner(endpoint_url, region, addressing_style, None).presign_upload_parts(
            BUCKET, KEYS[3], upload_id=UPLOAD_IDS[2], parts=parts, expires_in=3600, now=when,
            checksum_algorithm=algorithm, checksums=values,
        )  # fmt: skip
        for url, their in zip(ours, theirs, strict=True):
            if signed_at(their) == when:
                assert_same_url(url, their)
    assert len(set(ours)) == 3


@pytest.mark.parametrize(
    ("algorithm", "values", "match"),
    [
        ("MD5", ["AAAAAA=="], "algorithm"),
        ("CRC32", ["AA\nx-amz-acl:public"], "value"),
        ("CRC32", ["a", "b"], "one checksum per part"),
    ],
)
def test_bad_checksums_are_refused(algorithm: str, values: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_presigner(*TARGETS[0], "path", None).presign_upload_parts(
            BUCKET,
            "k",
            upload_id="u",
            parts=[(1, 5)],
            expires_in=60,
            now=FROZEN_NOW,
            checksum_algorithm=algorithm,
            checksums=values,
        )
