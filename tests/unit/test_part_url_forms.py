"""The part-urls answer's two forms and its content negotiation, without services.

The compact form is checked against the full form as its reference: for the same batch (keys that need encoding,
path and virtual addressing, a session token, a short last part, a single PUT with its write-once headers), every
URL and header the uploader rebuilds from the compact parts is the full form's, byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from typing import Any

import msgspec
import pytest

from app.client.models import CompactPartUrls
from app.domain.answers import SIGNATURE_SLOT, part_url, url_filler
from app.http.encoding import accepts_gzip, wants_compact
from app.storage.presign import PresignCredentials
from app.storage.signer import PresignerConfig, SignBatch, compact_parts, shared_headers, sign_parts_json, url_template

MIB = 1024 * 1024
CREDENTIALS = [PresignCredentials("AKIDEXAMPLE", "secret"), PresignCredentials("ASIAEXAMPLE", "secret", "tok+en/=")]
CONFIGS = [PresignerConfig("http://127.0.0.1:9000", "us-east-1", "path"),
           PresignerConfig("https://s3.eu-west-3.amazonaws.com", "eu-west-3", "virtual")]  # fmt: skip
KEYS = ["uploads/acme/s/u.mov", "uploads/acme/vidéo {1}/a+b&c=d%20.mov"]


def batch(
    key: str, numbers: list[int], *, upload_id: str | None = "2~abc.DEF_ghi-", total: int = 0,
    algorithm: str | None = None,
) -> SignBatch:  # fmt: skip
    """A batch; with `algorithm`, each part has its own checksum (a distinct base64 value of that algorithm's size)."""
    part = 5 * MIB
    checksums = [checksum(algorithm, n) for n in numbers] if algorithm else None
    return SignBatch(bucket="spatialgen-test", key=key, upload_id=upload_id, part_numbers=numbers, part_size=part,
                     total_bytes=total or 1234 * part - 17, expires_in=3600, signed_at=1_780_000_000,
                     content_type=None if upload_id else "video/quicktime", checksum_algorithm=algorithm,
                     checksums=checksums)  # fmt: skip


DIGEST_BYTES = {"CRC64NVME": 8, "CRC32C": 4, "CRC32": 4, "SHA256": 32, "SHA1": 20}


def checksum(algorithm: str, part_number: int) -> str:
    """A checksum value of the algorithm's form, distinct per part (what the presigner signs is any such value)."""
    digest = hashlib.sha256(f"{algorithm}:{part_number}".encode()).digest()[: DIGEST_BYTES[algorithm]]
    return base64.b64encode(digest).decode()


def full_and_compact(config: PresignerConfig, credentials: PresignCredentials, b: SignBatch) -> tuple[Any, Any]:
    """The full answer and the compact one (as the uploader expands it) for the same batch."""
    presigner = config.presigner(credentials)
    full = msgspec.json.decode(sign_parts_json(presigner, b))
    sums = b.checksums[:1] if b.checksums is not None else None
    first = sign_parts_json(presigner, msgspec.structs.replace(b, part_numbers=b.part_numbers[:1], checksums=sums))
    template = url_template(msgspec.json.decode(first)[0]["url"], None if b.upload_id is None else b.part_numbers[0])
    parts = msgspec.json.decode(sign_parts_json(presigner, msgspec.structs.replace(b, url_template=template)))
    doc = {
        "uploadId": "u", "fileRole": "video", "fileName": "v.mov", "totalBytes": b.total_bytes,
        "partSizeBytes": b.part_size, "totalParts": -(-b.total_bytes // b.part_size),
        "uploadStrategy": "multipart" if b.upload_id else "single_put", "status": "uploading",
        "expiresAt": full[0]["expiresAt"], "urlTemplate": template, "headers": shared_headers(b), "parts": parts,
    }  # fmt: skip
    compact = msgspec.json.decode(msgspec.json.encode(doc), type=CompactPartUrls)
    return full, compact


@pytest.mark.parametrize(("config", "credentials", "key"), list(itertools.product(CONFIGS, CREDENTIALS, KEYS)))
def test_the_compact_form_rebuilds_every_url_of_the_full_form(
    config: PresignerConfig, credentials: PresignCredentials, key: str
) -> None:
    numbers = [*range(1, 120), 999, 1000, 1001, 1233, 1234]
    full, compact = full_and_compact(config, credentials, batch(key, numbers))
    assert len(compact.parts) == len(full)
    expanded = compact.expand()
    assert msgspec.to_builtins(expanded.parts) == msgspec.to_builtins(msgspec.convert(full, list[Any]))
    assert expanded.parts[-1].size_bytes == 5 * MIB - 17  # the short last part
    assert all(p.headers == {"Content-Length": str(p.size_bytes)} for p in expanded.parts)


@pytest.mark.parametrize("config", CONFIGS)
def test_a_single_put_in_the_compact_form(config: PresignerConfig) -> None:
    full, compact = full_and_compact(config, CREDENTIALS[1], batch(KEYS[1], [1], upload_id=None, total=10))
    [part] = compact.expand().parts
    assert msgspec.to_builtins(part) == full[0]
    assert part.headers == {"Content-Length": "10", "If-None-Match": "*", "Content-Type": "video/quicktime"}


@pytest.mark.parametrize(("config", "credentials"), list(zip(CONFIGS, CREDENTIALS, strict=True)))
@pytest.mark.parametrize("algorithm", ["CRC64NVME", "SHA256"])
def test_the_compact_form_with_checksums_rebuilds_the_full_form(
    config: PresignerConfig, credentials: PresignCredentials, algorithm: str
) -> None:
    numbers = [*range(1, 30), 1233, 1234]
    b = batch(KEYS[1], numbers, algorithm=algorithm)
    full, compact = full_and_compact(config, credentials, b)
    name = f"x-amz-checksum-{algorithm.lower()}"
    assert f"X-Amz-SignedHeaders=content-length%3Bhost%3B{name}&" in compact.url_template
    assert compact.headers == {}
    assert [p.headers for p in compact.parts] == [{name: checksum(algorithm, n)} for n in numbers]
    expanded = compact.expand()
    assert msgspec.to_builtins(expanded.parts) == msgspec.to_builtins(msgspec.convert(full, list[Any]))
    assert [p.headers for p in expanded.parts] == [
        {"Content-Length": str(p.size_bytes), name: checksum(algorithm, p.part_number)} for p in expanded.parts
    ]
    assert len({p.url for p in expanded.parts}) == len(numbers)


@pytest.mark.parametrize("config", CONFIGS)
def test_a_checksummed_single_put_in_the_compact_form(config: PresignerConfig) -> None:
    b = batch(KEYS[1], [1], upload_id=None, total=10, algorithm="CRC64NVME")
    full, compact = full_and_compact(config, CREDENTIALS[1], b)
    [part] = compact.expand().parts
    assert msgspec.to_builtins(part) == full[0]
    assert part.headers == {"Content-Length": "10", "If-None-Match": "*", "Content-Type": "video/quicktime",
                            "x-amz-checksum-crc64nvme": checksum("CRC64NVME", 1)}  # fmt: skip
    assert "%3Bif-none-match%3Bx-amz-checksum-crc64nvme&" in compact.url_template


def test_a_url_that_does_not_fit_the_template_fails_the_answer() -> None:
    presigner = CONFIGS[0].presigner(CREDENTIALS[0])
    b = batch(KEYS[0], [1, 2, 3])
    urls = [p["url"] for p in msgspec.json.decode(sign_parts_json(presigner, b))]
    template = url_template(urls[0], 1)
    sized = [(n, 5 * MIB) for n in (1, 2, 3)]
    own: list[dict[str, str]] = [{}, {}, {}]
    assert [p.signature for p in compact_parts(sized, urls, own, template)] == [u[-64:] for u in urls]
    other = url_template(urls[0].replace("X-Amz-Expires=3600", "X-Amz-Expires=3601"), 1)
    with pytest.raises(ValueError, match="does not fit"):
        compact_parts(sized, urls, own, other)
    odd_middle = [
        urls[0],
        urls[1].replace("content-length%3Bhost", "content-length%3Bhost%3Bx-amz-checksum-crc32"),
        urls[2],
    ]
    with pytest.raises(ValueError, match="part 2: its URL does not fit"):
        compact_parts(sized, odd_middle, own, template)
    with pytest.raises(ValueError, match="not a presigned URL"):
        url_template(urls[0].removesuffix(urls[0][-64:]) + SIGNATURE_SLOT, 1)
    with pytest.raises(ValueError, match="part number 2 is not where"):
        url_template(urls[0], 2)


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        (None, False), ("", False), ("gzip", True), ("GZip", True), ("gzip, deflate, br", True), ("x-gzip", True),
        ("deflate", False), ("identity", False), ("gzip;q=0", False), ("gzip; q=0.0", False), ("gzip;q=0.001", True),
        ("*", True), ("*;q=0", False), ("*, gzip;q=0", False), ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("gzip;q=bogus", False), (" , gzip ,", True),
    ],
)  # fmt: skip
def test_gzip_is_sent_only_when_accept_encoding_allows_it(header: str | None, gzip: bool) -> None:
    assert accepts_gzip(header) is gzip


COMPACT = "application/vnd.spatialgen.part-urls.compact+json"


@pytest.mark.parametrize(
    ("header", "compact"),
    [
        (None, False), ("application/json", False), ("*/*", False), (COMPACT, True),
        (f"{COMPACT}, application/json;q=0.5", True), (f"application/json, {COMPACT};q=0", False),
        (COMPACT.upper(), True), (f"{COMPACT}+x", False),
    ],
)  # fmt: skip
def test_the_compact_form_is_sent_only_when_accept_names_it(header: str | None, compact: bool) -> None:
    assert wants_compact(header) is compact


@pytest.mark.parametrize(
    "template",
    ["https://h/b/k?X-Amz-Date=1&partNumber={partNumber}&uploadId=u&X-Amz-Signature={signature}",
     "https://h/b/k?X-Amz-Date=1&X-Amz-Signature={signature}", "https://h/{signature}/k?partNumber={partNumber}",
     "https://h/b/k?partNumber={partNumber}&x={partNumber}&X-Amz-Signature={signature}"],
)  # fmt: skip
def test_the_fast_url_filler_fills_in_what_part_url_does(template: str) -> None:
    fill = url_filler(template)
    for n, signature in ((1, "ab" * 32), (10_000, "0f" * 32)):
        assert fill(n, signature) == part_url(template, n, signature)
