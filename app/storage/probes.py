"""The live half of `spatialgen-admin storage check`: what the configured store really does, found by asking it.

Reachability (HeadBucket) and the clock (its Date header), the credentials' expiry, and probes under the service's
own probe keys `{prefix}/_spatialgen/probe/{random}/…`: checksum headers (a presigned PutObject with the right and
with a wrong `x-amz-checksum-<algorithm>`, as clients send them) and conditional writes (`If-None-Match: *` on
PutObject and on CompleteMultipartUpload). Every probe object and upload is removed before the check ends.
"""

from __future__ import annotations

import contextlib
import functools
import re
import secrets
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

from app.domain.objectkeys import root_prefix
from app.settings import CHECKSUM_ALGORITHMS, StorageConfig
from app.storage.credentials import StorageCredentialsError, chain_credentials

PROBE_DIR = "_spatialgen/probe/"
"""Under the key prefix, beside the identity marker; `_` starts no account id, so no upload key looks like it."""
PROBE_BODY = b"spatialgen storage check probe\n"
# The probe body's checksums, and valid-looking ones of other bytes (a store that verifies refuses those with
# BadDigest). Constants, so the check needs no CRC64NVME/CRC32C library; tests/unit/test_storage_check.py
# recomputes them.
PROBE_CHECKSUMS = {
    "CRC64NVME": "u2e0PvXDmWw=",
    "CRC32C": "xx1PkA==",
    "CRC32": "YSMGDA==",
    "SHA256": "kUsHL+AF6MupSA7x3bApa3toMPbWb1Tr9Jdd/QMKois=",
    "SHA1": "O495ZAdHfB1XRPGx7jy7V7nhE3I=",
}
WRONG_CHECKSUMS = {
    "CRC64NVME": "R2hLGxEDyzQ=",
    "CRC32C": "kSayHA==",
    "CRC32": "lMiQuA==",
    "SHA256": "BFkaW0OIYChddnxkAT/NSfGFOOTcuoRIdwXW/wluQFk=",
    "SHA1": "yEQ3F2Kgj1mFTI7SGoB0ZSVSwH0=",
}
PRECONDITION_FAILED = ("PreconditionFailed", "412")
ChecksumVerdict = Literal["verified", "unverified", "refused", "error"]


class StorageProblem(Exception):
    """Storage cannot be used as configured; the message says what is wrong and what to check."""


class ChecksumProbe(msgspec.Struct, frozen=True):
    """What the store did with one algorithm's header: `verified` (right value stored, wrong one refused),
    `unverified` (a wrong value stored too), `refused` (the right value refused), `error` (the probe failed)."""

    algorithm: str
    verdict: ChecksumVerdict
    detail: str
    echoed: bool = False


class Conditional(msgspec.Struct, frozen=True):
    """What `If-None-Match: *` did on an existing key: `honoured` (412), `ignored` (written) or `refused`."""

    verdict: Literal["honoured", "ignored", "refused", "error"]
    detail: str


class Reach(msgspec.Struct, frozen=True):
    """HeadBucket's answer: the store's Date header and the local wall clock around the call."""

    server_date: str | None
    sent_at: float
    received_at: float


class CredentialInfo(msgspec.Struct, frozen=True):
    """Where the credentials come from and when they expire (None: they do not)."""

    source: str
    access_key_id: str
    secret_access_key: str
    session_token: str | None
    expires_at: float | None


def describe(exc: BaseException, config: StorageConfig) -> str:
    """One sentence saying what is wrong with storage and which setting to check, for any storage failure."""
    where = f"bucket {config.bucket!r} at {config.endpoint_url or 'AWS'}"
    if isinstance(exc, StorageProblem | StorageCredentialsError):
        return str(exc)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        hints = {
            "InvalidAccessKeyId": "storage does not know the access key id: check SPATIALGEN_S3_ACCESS_KEY_ID",
            "SignatureDoesNotMatch": "storage refused the signature: check SPATIALGEN_S3_SECRET_ACCESS_KEY "
                                     "and SPATIALGEN_S3_REGION",
            "AccessDenied": "the credentials are not allowed to do this (see the IAM policy in deploy/aws/)",
            "NoSuchBucket": "the bucket does not exist: create it, or check SPATIALGEN_S3_BUCKET",
            "404": "the bucket does not exist: create it, or check SPATIALGEN_S3_BUCKET",
            "403": "access refused: the credentials are wrong or lack s3:ListBucket on the bucket",
            "301": "the bucket is in another region: check SPATIALGEN_S3_REGION",
            "PermanentRedirect": "the bucket is in another region: check SPATIALGEN_S3_REGION",
            "AuthorizationHeaderMalformed": "the region is wrong: check SPATIALGEN_S3_REGION",
            "RequestTimeTooSkewed": "this machine's clock differs from storage's by more than 15 minutes: fix its "
                                    "time (NTP)",
            "ExpiredToken": "the session token has expired: renew the credentials",
            "InvalidToken": "the session token is invalid: check SPATIALGEN_S3_SESSION_TOKEN",
        }  # fmt: skip
        hint = hints.get(code, f"storage answered {status} {code}")
        return f"{where}: {hint} ({code or status})"
    if isinstance(exc, ValueError) and "endpoint" in str(exc).lower():  # botocore's, before any request
        return f"invalid SPATIALGEN_S3_ENDPOINT_URL {config.endpoint_url!r}: {exc}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, BotoCoreError | OSError | httpx.HTTPError):
        return f"cannot reach {where}: {text} (check SPATIALGEN_S3_ENDPOINT_URL and that storage is up)"
    return f"{where}: {type(exc).__name__}: {text}"


def probe_prefix(config: StorageConfig) -> str:
    """A fresh probe directory for one check."""
    return f"{root_prefix(config.key_prefix)}{PROBE_DIR}{secrets.token_hex(6)}/"


async def credentials(config: StorageConfig, session: Any) -> CredentialInfo:
    """The credentials storage calls are signed with now (static ones, or the provider chain's)."""
    if config.access_key_id:
        token = config.session_token or None
        source = "static keys with a session token (never refreshed)" if token else "static keys"
        return CredentialInfo(source, config.access_key_id, config.secret_access_key, token, None)
    provider = await chain_credentials(session)
    try:
        frozen = await provider.get_frozen_credentials()
    except Exception as exc:  # botocore's refresh errors vary by provider (STS, IMDS, a process)
        raise StorageCredentialsError(f"fetching S3 credentials failed: {type(exc).__name__}: {exc}") from exc
    expiry = getattr(provider, "_expiry_time", None)  # botocore's refreshable credentials keep it here
    return CredentialInfo(f"the provider chain ({getattr(provider, 'method', 'unknown')})", frozen.access_key,
                          frozen.secret_key, frozen.token or None, expiry.timestamp() if expiry else None)  # fmt: skip


@contextlib.asynccontextmanager
async def check_client(config: StorageConfig, creds: CredentialInfo, session: Any) -> AsyncIterator[Any]:
    """An S3 client for the check: one retry, short timeouts, and no checksum the check did not ask for."""
    client_config = AioConfig(
        signature_version="s3v4", s3={"addressing_style": config.addressing_style}, connect_timeout=5,
        read_timeout=20, retries={"total_max_attempts": 2, "mode": "standard"},
        request_checksum_calculation="when_required", response_checksum_validation="when_required",
    )  # fmt: skip
    async with session.create_client(
        "s3", endpoint_url=config.endpoint_url or None, region_name=config.region,
        aws_access_key_id=creds.access_key_id, aws_secret_access_key=creds.secret_access_key,
        aws_session_token=creds.session_token, config=client_config,
    ) as client:  # fmt: skip
        yield client


async def reach(client: Any, config: StorageConfig) -> Reach:
    """HeadBucket; a refusal is explained (HEAD answers carry no error code, so a GET asks again for it)."""
    sent = time.time()
    try:
        resp = await client.head_bucket(Bucket=config.bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("403", "400"):
            await client.list_objects_v2(Bucket=config.bucket, MaxKeys=1, Prefix=root_prefix(config.key_prefix))
        raise
    headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return Reach(headers.get("date"), sent, time.time())


def clock_skew(found: Reach) -> float | None:
    """Storage's clock minus ours, in seconds (None without a Date header). The Date header counts whole seconds,
    so the answer is taken from the middle of its second and compared with the middle of the call."""
    if not found.server_date:
        return None
    try:
        server = parsedate_to_datetime(found.server_date).timestamp() + 0.5
    except (TypeError, ValueError):
        return None
    return server - (found.sent_at + found.received_at) / 2


def session() -> Any:
    """A fresh aiobotocore session."""
    return get_session()


async def probe_checksums(
    client: Any, config: StorageConfig, creds: CredentialInfo, prefix: str
) -> list[ChecksumProbe]:
    """Each algorithm S3 defines, tried on presigned PutObject requests as clients send them."""
    results = []
    signer = Credentials(creds.access_key_id, creds.secret_access_key, creds.session_token)
    async with httpx.AsyncClient(timeout=20) as http:
        for algorithm in CHECKSUM_ALGORITHMS:
            key = f"{prefix}checksum-{algorithm.lower()}"
            url = await client.generate_presigned_url("put_object", Params={"Bucket": config.bucket, "Key": key},
                                                      ExpiresIn=300)  # fmt: skip
            base = urlunsplit(urlsplit(url)._replace(query=""))
            put = functools.partial(_signed_put, http, region=config.region, creds=signer, algorithm=algorithm)
            right = await put(base, PROBE_CHECKSUMS[algorithm])
            if right[0] // 100 != 2:
                verdict: ChecksumVerdict = "refused" if right[0] in (400, 501) else "error"
                detail = f"the right value was refused: {right[0]} {right[1]}".rstrip()
                results.append(ChecksumProbe(algorithm, verdict, detail))
                continue
            echoed = right[2] == PROBE_CHECKSUMS[algorithm]
            wrong = await put(base + "-wrong", WRONG_CHECKSUMS[algorithm])
            if wrong[0] // 100 == 2:
                results.append(ChecksumProbe(algorithm, "unverified", "a wrong value was stored too", echoed))
            elif wrong[0] == 400 and wrong[1] in ("BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"):
                results.append(ChecksumProbe(algorithm, "verified", f"a wrong value was refused ({wrong[1]})", echoed))
            else:
                results.append(
                    ChecksumProbe(algorithm, "error", f"a wrong value got {wrong[0]} {wrong[1]}".rstrip(), echoed)
                )
    return results


async def _signed_put(
    http: httpx.AsyncClient, url: str, value: str, *, region: str, creds: Credentials, algorithm: str
) -> tuple[int, str, str | None]:
    """PUT the probe body to a URL presigned with its checksum headers; (status, error code, echoed checksum)."""
    header = f"x-amz-checksum-{algorithm.lower()}"
    headers = {header: value, "x-amz-sdk-checksum-algorithm": algorithm, "content-length": str(len(PROBE_BODY))}
    request = AWSRequest(method="PUT", url=url, headers=headers)
    S3SigV4QueryAuth(creds, "s3", region, expires=300).add_auth(request)
    resp = await http.put(request.url, content=PROBE_BODY, headers={k: v for k, v in headers.items()
                                                                     if k != "content-length"})  # fmt: skip
    code = re.search(r"<Code>([^<]*)</Code>", resp.text)
    return resp.status_code, code.group(1) if code else "", resp.headers.get(header)


async def probe_conditional_put(client: Any, config: StorageConfig, prefix: str) -> Conditional:
    """PutObject with `If-None-Match: *` over an object just written there: 412 expected."""
    key = f"{prefix}conditional"
    await client.put_object(Bucket=config.bucket, Key=key, Body=PROBE_BODY)
    try:
        await client.put_object(Bucket=config.bucket, Key=key, Body=PROBE_BODY, IfNoneMatch="*")
    except ClientError as exc:
        return _refusal(exc)
    return Conditional("ignored", "the object was replaced")


async def probe_conditional_complete(client: Any, config: StorageConfig, prefix: str) -> Conditional:
    """CompleteMultipartUpload with `If-None-Match: *` of a one-part upload to the existing probe key."""
    key = f"{prefix}conditional"
    upload = (await client.create_multipart_upload(Bucket=config.bucket, Key=key))["UploadId"]
    try:
        part = await client.upload_part(Bucket=config.bucket, Key=key, UploadId=upload, PartNumber=1, Body=PROBE_BODY)
        await client.complete_multipart_upload(
            Bucket=config.bucket, Key=key, UploadId=upload, IfNoneMatch="*",
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )  # fmt: skip
    except ClientError as exc:
        return _refusal(exc)
    finally:
        with contextlib.suppress(ClientError):  # already completed: nothing to abort
            await client.abort_multipart_upload(Bucket=config.bucket, Key=key, UploadId=upload)
    return Conditional("ignored", "the multipart upload replaced the object")


def _refusal(exc: ClientError) -> Conditional:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in PRECONDITION_FAILED or status == 412:
        return Conditional("honoured", f"refused with {status} {code}")
    if status in (400, 501):
        return Conditional("refused", f"the store refuses the header: {status} {code}")
    return Conditional("error", f"{status} {code}")


async def remove_probes(client: Any, config: StorageConfig, prefix: str) -> list[str]:
    """Abort the probe uploads and delete the probe objects; what could not be removed."""
    left: list[str] = []
    uploads = await client.list_multipart_uploads(Bucket=config.bucket, Prefix=prefix)
    for u in uploads.get("Uploads", []):
        try:
            await client.abort_multipart_upload(Bucket=config.bucket, Key=u["Key"], UploadId=u["UploadId"])
        except ClientError:
            left.append(f"{u['Key']} (upload {u['UploadId']})")
    listed = await client.list_objects_v2(Bucket=config.bucket, Prefix=prefix)
    keys = [o["Key"] for o in listed.get("Contents", [])]
    for key in keys:  # one by one: DeleteObjects needs a Content-MD5/checksum some stores insist on
        try:
            await client.delete_object(Bucket=config.bucket, Key=key)
        except ClientError:
            left.append(key)
    return left
