"""AWS SigV4 query-string presigner for S3 PutObject and UploadPart URLs.

Pure computation (stdlib hmac/hashlib, no I/O); signs exactly what botocore's generate_presigned_url signs.
Every URL signs `content-length` (storage refuses a body of any other length) besides `host`; a PutObject
URL may also sign `if-none-match: *` (storage refuses to replace an existing object), and any URL an
`x-amz-checksum-<algorithm>` value (storage refuses a body with another checksum; SPEC 3.8).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from _hashlib import HASH

__all__ = ["PresignCredentials", "S3Presigner"]

_ALGORITHM = "AWS4-HMAC-SHA256"
_SERVICE = "s3"
_TERMINATOR = "aws4_request"
# Presigned URLs never see the body, so S3 expects this literal in place of the payload hash.
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_MAX_EXPIRES = 604_800  # 7 days: the SigV4 hard limit for query-string auth.
_MAX_PART_NUMBER = 10_000
# The most one PUT may carry (PutObject and UploadPart alike): 5 GiB.
_MAX_OBJECT_BYTES = 5 * 1024**3
# Signed header lists, names sorted: every URL binds its body length; a write-once PUT also signs
# "If-None-Match: *" so storage refuses to replace an object already at the key.
_SIGNED_SIZED = "content-length;host"
_SIGNED_WRITE_ONCE = "content-length;host;if-none-match"
_CHECKSUM_ALGORITHMS = frozenset({"crc64nvme", "crc32c", "crc32", "sha256", "sha1"})
_CHECKSUM_VALUE_RE = re.compile(r"^[A-Za-z0-9+/]{1,64}={0,2}$")
_CONTENT_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# How many (date, region) signing keys to keep: today's plus a few around midnight UTC.
_SIGNING_KEY_CACHE_SIZE = 4

# botocore's own bucket validation (handlers.VALID_BUCKET); anything else it rejects client-side.
_BUCKET_RE = re.compile(r"^[a-zA-Z0-9.\-_]{1,255}$")
# RFC 1123 host label, as botocore's endpoint rules test it (endpoint_provider.VALID_HOST_LABEL_RE).
_HOST_LABEL_RE = re.compile(r"^(?!-)[a-zA-Z\d-]{1,63}(?<!-)$")
_IPV4_RE = re.compile(r"^(?:[0-9]{1,3}\.){3}[0-9]{1,3}$")
# An endpoint path prefix is used verbatim in both the URL and the canonical URI, so it must
# already be in canonical (unreserved-only) form.
_BASE_PATH_RE = re.compile(r"^[A-Za-z0-9\-._~/]*$")

# HMAC pads (RFC 2104); SHA-256 has a 64-byte block and the signing key is 32 bytes.
_SHA256_BLOCK = 64
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


@dataclass(frozen=True, slots=True)
class PresignCredentials:
    """AWS credentials; the secret and token are kept out of repr(). `expires_at` (epoch seconds) is set for
    temporary ones from the provider chain: a URL signed with them stops working then, whatever it says."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class _SigningKey:
    """A derived SigV4 signing key plus its pre-padded HMAC-SHA256 hash states.

    ``inner``/``outer`` have already absorbed key^ipad / key^opad, so an HMAC is two
    ``copy()`` calls instead of hmac.new()'s key setup; they are never updated in place.
    """

    key: bytes
    inner: HASH
    outer: HASH


def _hmac_sha256(key: bytes, msg: str) -> bytes:
    return hmac.digest(key, msg.encode(), "sha256")


def _uri_encode(value: str, safe: str = "") -> str:
    """Percent-encode the UTF-8 bytes of value the SigV4 way.

    quote() keeps exactly the RFC 3986 unreserved set A-Za-z0-9-._~ (plus ``safe``) and
    emits uppercase %XX, which is what SigV4 requires; a space becomes %20, never '+'.
    """
    return quote(value, safe=safe)


class S3Presigner:
    """SigV4 query-string presigner for PutObject / UploadPart."""

    __slots__ = (
        "_base_path",
        "_credential_prefix",
        "_host",
        "_host_is_ip",
        "_netloc",
        "_region",
        "_scheme",
        "_secret",
        "_signing_keys",
        "_token_param",
        "_virtual",
    )

    def __init__(
        self,
        *,
        endpoint_url: str,
        region: str,
        credentials: PresignCredentials,
        addressing_style: str = "path",
    ) -> None:
        """Validate the endpoint and precompute everything that does not depend on the request."""
        parts = urlsplit(endpoint_url)
        if parts.scheme not in _DEFAULT_PORTS:
            raise ValueError(f"endpoint_url must be http(s)://host[:port], got {endpoint_url!r}")
        hostname = parts.hostname
        if not hostname or "@" in parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"endpoint_url must be http(s)://host[:port], got {endpoint_url!r}")
        if not _BASE_PATH_RE.match(parts.path):
            raise ValueError(f"endpoint_url path must be unreserved characters only: {parts.path!r}")
        if addressing_style not in ("path", "virtual"):
            raise ValueError(f"addressing_style must be 'path' or 'virtual', got {addressing_style!r}")
        if not region or "/" in region:
            raise ValueError(f"invalid region {region!r}")
        if not credentials.access_key_id or not credentials.secret_access_key:
            raise ValueError("credentials need an access key id and a secret access key")

        port = parts.port  # also validates the port number
        self._scheme = parts.scheme
        # The URL keeps the endpoint's netloc as written (case, explicit default port), as botocore
        # does; the *signed* Host value is normalised the way the HTTP client will send it:
        # lowercase, IPv6 in brackets, port only when it is not the scheme's default.
        self._netloc = parts.netloc
        host = f"[{hostname}]" if ":" in hostname else hostname
        if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
            host = f"{host}:{port}"
        self._host = host
        self._host_is_ip = ":" in hostname or _IPV4_RE.match(hostname) is not None
        self._base_path = parts.path.rstrip("/")
        self._virtual = addressing_style == "virtual"
        self._region = region
        self._secret = credentials.secret_access_key
        # X-Amz-Credential is "<akid>/<date>/<region>/s3/aws4_request" encoded as one query value,
        # so its slashes become %2F; only the date part varies per call.
        self._credential_prefix = _uri_encode(credentials.access_key_id) + "%2F"
        self._token_param = (
            ""
            if credentials.session_token is None
            else "&X-Amz-Security-Token=" + _uri_encode(credentials.session_token)
        )
        self._signing_keys: dict[tuple[str, str], _SigningKey] = {}

    def signing_key(self, date_stamp: str) -> bytes:
        """Return the (cached) SigV4 signing key for a YYYYMMDD date in this presigner's region."""
        return self._signing_key(date_stamp).key

    def presign_put_object(
        self,
        bucket: str,
        key: str,
        *,
        content_length: int,
        expires_in: int,
        now: datetime,
        if_none_match: bool = False,
        content_type: str | None = None,
        checksum: tuple[str, str] | None = None,
    ) -> str:
        """Return a presigned PUT URL for a single-request object upload of exactly content_length bytes.

        With if_none_match the URL also signs ``If-None-Match: *``: the client must send that header, and
        storage refuses (412) to write when the key already holds an object. With content_type it signs
        ``Content-Type``: the object is stored with that type and no other. With checksum (algorithm, base64
        value) it signs ``x-amz-checksum-<algorithm>``: storage refuses a body whose checksum differs.
        """
        parts = ((0, content_length),)
        return self._presign(
            bucket, key, expires_in=expires_in, now=now, upload_id=None, parts=parts, if_none_match=if_none_match,
            content_type=content_type, checksum_algorithm=checksum[0] if checksum else None,
            checksums=(checksum[1],) if checksum else None,
        )[0]  # fmt: skip

    def presign_upload_parts(
        self,
        bucket: str,
        key: str,
        *,
        upload_id: str,
        parts: Iterable[tuple[int, int]],
        expires_in: int,
        now: datetime,
        checksum_algorithm: str | None = None,
        checksums: Sequence[str] | None = None,
    ) -> list[str]:
        """Return presigned UploadPart URLs for (part number, content length) pairs, in order, sharing one timestamp.

        With checksum_algorithm, each URL also signs ``x-amz-checksum-<algorithm>`` with its part's value in
        checksums (aligned with parts)."""
        return self._presign(bucket, key, expires_in=expires_in, now=now, upload_id=upload_id, parts=parts,
                             checksum_algorithm=checksum_algorithm, checksums=checksums)  # fmt: skip

    def _signing_key(self, date_stamp: str) -> _SigningKey:
        # The derivation chain (4 HMACs) only depends on the secret, the UTC date and the region,
        # so it is computed once per day and reused by every URL signed that day.  The dict is
        # tiny and bounded; concurrent threads may at worst derive the same key twice.
        cache_key = (date_stamp, self._region)
        cached = self._signing_keys.get(cache_key)
        if cached is not None:
            return cached
        if len(date_stamp) != 8 or not date_stamp.isdigit():
            raise ValueError(f"date_stamp must be YYYYMMDD, got {date_stamp!r}")
        k = _hmac_sha256(("AWS4" + self._secret).encode(), date_stamp)
        k = _hmac_sha256(k, self._region)
        k = _hmac_sha256(k, _SERVICE)
        k = _hmac_sha256(k, _TERMINATOR)
        padded = k.ljust(_SHA256_BLOCK, b"\0")
        entry = _SigningKey(
            key=k,
            inner=hashlib.sha256(padded.translate(_IPAD)),
            outer=hashlib.sha256(padded.translate(_OPAD)),
        )
        if len(self._signing_keys) >= _SIGNING_KEY_CACHE_SIZE:
            self._signing_keys.clear()
        self._signing_keys[cache_key] = entry
        return entry

    def _target(self, bucket: str, key: str) -> tuple[str, str, str]:
        """Return (URL netloc, signed Host value, canonical URI) for bucket/key."""
        if not _BUCKET_RE.match(bucket):
            raise ValueError(f"invalid bucket name {bucket!r}")
        if not key:
            raise ValueError("object key must not be empty")
        # S3 canonicalises the path as sent: each segment URI-encoded once (no double encoding,
        # unlike other services), '/' kept, and no normalisation of '//', '.' or '..'.  The same
        # string is used in the URL, so the URL path *is* the canonical URI.
        encoded_key = _uri_encode(key, safe="/")
        if self._virtual and self._virtual_hostable(bucket):
            return (
                f"{bucket}.{self._netloc}",
                f"{bucket}.{self._host}",
                f"{self._base_path}/{encoded_key}",
            )
        return self._netloc, self._host, f"{self._base_path}/{bucket}/{encoded_key}"

    def _virtual_hostable(self, bucket: str) -> bool:
        # Mirrors botocore's endpoint rules: virtual-hosted style silently falls back to path
        # style when the bucket cannot be a DNS name (uppercase, '_', too short, IPv4-like), when
        # the endpoint is an IP literal, or when the bucket has dots and the scheme is https (a
        # dotted bucket would not match the endpoint's wildcard TLS certificate).
        if self._host_is_ip or len(bucket) < 3 or bucket.lower() != bucket:
            return False
        if _IPV4_RE.match(bucket):
            return False
        if "." in bucket and self._scheme != "http":
            return False
        return all(_HOST_LABEL_RE.match(label) for label in bucket.split("."))

    def _presign(  # noqa: PLR0915 - SigV4's steps in one place; the per-URL loop must stay call-free
        self,
        bucket: str,
        key: str,
        *,
        expires_in: int,
        now: datetime,
        upload_id: str | None,
        parts: Iterable[tuple[int, int]],
        if_none_match: bool = False,
        content_type: str | None = None,
        checksum_algorithm: str | None = None,
        checksums: Sequence[str] | None = None,
    ) -> list[str]:
        """Sign one PutObject (upload_id None) or many UploadPart URLs sharing one timestamp."""
        if isinstance(expires_in, bool) or not isinstance(expires_in, int):
            raise TypeError(f"expires_in must be an int, got {type(expires_in).__name__}")
        if not 1 <= expires_in <= _MAX_EXPIRES:
            raise ValueError(f"expires_in must be within 1..{_MAX_EXPIRES} seconds, got {expires_in}")
        if now.utcoffset() is None:
            raise ValueError("now must be a timezone-aware datetime")
        amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        date_stamp = amz_date[:8]
        signing = self._signing_key(date_stamp)
        netloc, host, canonical_uri = self._target(bucket, key)
        scope = f"{date_stamp}/{self._region}/{_SERVICE}/{_TERMINATOR}"
        signed_headers = _SIGNED_WRITE_ONCE if if_none_match else _SIGNED_SIZED
        if content_type is not None:
            if not _CONTENT_TYPE_RE.match(content_type):
                raise ValueError(f"invalid content type {content_type!r}")
            signed_headers = signed_headers.replace("content-length;", "content-length;content-type;")
        checksum_line, parts, sums = _checksums(checksum_algorithm, checksums, parts)
        if checksum_line:
            signed_headers += f";{checksum_line[:-1]}"  # x-amz-checksum-*: sorts last, after host and if-none-match

        # Canonical query string: parameters sorted by encoded name (byte order), so the
        # uppercase X-Amz-* names come first, then partNumber, then uploadId.  The URL carries
        # the same string, so the shared part is built once for every URL of the call.
        common_query = (
            f"X-Amz-Algorithm={_ALGORITHM}"
            f"&X-Amz-Credential={self._credential_prefix}{_uri_encode(scope)}"
            f"&X-Amz-Date={amz_date}"
            f"&X-Amz-Expires={expires_in}"
            f"{self._token_param}"
            f"&X-Amz-SignedHeaders={_uri_encode(signed_headers)}"
        )
        # Canonical headers, sorted by name, each line ending in "\n"; the request's lines are joined by
        # "\n", hence the empty line before the signed-header list.  Only content-length varies per URL.
        after_host = "if-none-match:*\n" if if_none_match else ""
        typed = f"\ncontent-type:{content_type}" if content_type is not None else ""
        before_checksum = f"{typed}\nhost:{host}\n{after_host}"
        after_checksum = f"\n{signed_headers}\n{_UNSIGNED_PAYLOAD}"
        after_length = before_checksum + after_checksum
        canonical_head = f"PUT\n{canonical_uri}\n{common_query}"
        url_head = f"{self._scheme}://{netloc}{canonical_uri}?{common_query}"

        # HMAC(signing_key, string_to_sign) where string_to_sign = fixed prefix + hex(sha256(CR)):
        # the inner hash state absorbs key^ipad and the fixed prefix once, then per URL only the
        # 64 hex chars are fed in.
        inner_base = signing.inner.copy()
        inner_base.update(f"{_ALGORITHM}\n{amz_date}\n{scope}\n".encode())
        outer_base = signing.outer

        if upload_id is None:
            ((_, length),) = parts
            after_length = f"{before_checksum}{checksum_line}{sums[0]}\n{after_checksum}" if sums else after_length
            canonical_request = f"{canonical_head}\ncontent-length:{_content_length(length)}{after_length}"
            inner = inner_base.copy()
            inner.update(hashlib.sha256(canonical_request.encode()).hexdigest().encode())
            outer = outer_base.copy()
            outer.update(inner.digest())
            return [f"{url_head}&X-Amz-Signature={outer.hexdigest()}"]

        encoded_upload_id = _uri_encode(upload_id)
        # Per part, the canonical request differs only by the part number digits and the length, so
        # the hash of everything before them is computed once and copied; a file has at most two
        # distinct part lengths (full parts and the last), so their tails are built once each.
        cr_base = hashlib.sha256(f"{canonical_head}&partNumber=".encode())
        tails: dict[int, bytes] = {}
        url_part_head = f"{url_head}&partNumber="
        url_part_mid = f"&uploadId={encoded_upload_id}&X-Amz-Signature="

        urls: list[str] = []
        append = urls.append
        cr_copy, inner_copy, outer_copy = cr_base.copy, inner_base.copy, outer_base.copy
        for i, (part_number, length) in enumerate(parts):
            # Exact-int check: rejects bool (str(True) would sign "partNumber=True") cheaply.
            if type(part_number) is not int:
                raise TypeError(f"part number must be an int, got {type(part_number).__name__}")
            if not 1 <= part_number <= _MAX_PART_NUMBER:
                raise ValueError(f"part number must be within 1..{_MAX_PART_NUMBER}, got {part_number}")
            tail = tails.get(length) if sums is None else (  # each URL signs its own checksum: no shared tail
                f"&uploadId={encoded_upload_id}\ncontent-length:{_content_length(length)}{before_checksum}"
                f"{checksum_line}{sums[i]}\n{after_checksum}").encode()  # fmt: skip
            if tail is None:
                tail = tails[length] = (
                    f"&uploadId={encoded_upload_id}\ncontent-length:{_content_length(length)}{after_length}".encode()
                )
            digits = str(part_number)
            cr = cr_copy()
            cr.update(digits.encode() + tail)
            inner = inner_copy()
            inner.update(cr.hexdigest().encode())
            outer = outer_copy()
            outer.update(inner.digest())
            append(url_part_head + digits + url_part_mid + outer.hexdigest())
        return urls


def _checksums(
    algorithm: str | None, checksums: Sequence[str] | None, parts: Iterable[tuple[int, int]]
) -> tuple[str, Iterable[tuple[int, int]], Sequence[str] | None]:
    """('x-amz-checksum-<algorithm>:' or '' for none, the parts, their checksums checked to be base64, one per
    part: nothing else can enter the canonical request)."""
    if algorithm is None:
        return "", parts, None
    listed = list(parts)
    if algorithm.lower() not in _CHECKSUM_ALGORITHMS or checksums is None or len(checksums) != len(listed):
        raise ValueError(f"invalid checksum algorithm {algorithm!r}, or not one checksum per part")
    for value in checksums:
        if not _CHECKSUM_VALUE_RE.match(value):
            raise ValueError(f"invalid checksum value {value!r}")
    return f"x-amz-checksum-{algorithm.lower()}:", listed, checksums


def _content_length(length: int) -> str:
    if type(length) is not int:
        raise TypeError(f"content length must be an int, got {type(length).__name__}")
    if not 0 <= length <= _MAX_OBJECT_BYTES:
        raise ValueError(f"content length must be within 0..{_MAX_OBJECT_BYTES}, got {length}")
    return str(length)
