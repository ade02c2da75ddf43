"""The SigV4 front (tests/sigv4_front.py) before the session's real moto server: what passes is stored, what it
refuses never reaches storage, moto's own answers come back unchanged, and it runs as a process too."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import botocore.config
import httpx
import pytest
from botocore.exceptions import ClientError

from app.settings import Settings
from app.storage.presign import PresignCredentials, S3Presigner
from app.storage.s3 import ObjectStore
from deploy.local.devstack import free_port, stop, wait_for_port
from tests.sigv4_front import SigV4Front, checksum_value

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def front(verified_s3: SigV4Front, store: ObjectStore) -> Iterator[SigV4Front]:
    """The session's front with an empty record (and an emptied bucket); it must end with no internal error."""
    verified_s3.reset()
    yield verified_s3
    assert verified_s3.errors == []


def client_via(endpoint: str, settings: Settings, secret: str | None = None) -> Any:
    """A boto3 client (Authorization-header requests; presigned URLs signed for endpoint's host)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.storage.region,
        aws_access_key_id=settings.storage.access_key_id,
        aws_secret_access_key=secret or settings.storage.secret_access_key,
        config=botocore.config.Config(signature_version="s3v4"),
    )


def exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "404"
        return False
    return True


KEY = "dir/vidéo 1+2=3.mov"


def test_botocore_urls_store_through_the_front(front: SigV4Front, settings: Settings, s3: Any) -> None:
    bucket = settings.storage.bucket
    boto = client_via(front.url, settings)
    put = boto.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": KEY, "ContentLength": 5, "IfNoneMatch": "*"}, ExpiresIn=60
    )
    upload_id = boto.create_multipart_upload(Bucket=bucket, Key=KEY + ".parts")["UploadId"]
    part_body = os.urandom(5 * 1024 * 1024)
    part = boto.generate_presigned_url(
        "upload_part",
        Params={
            "Bucket": bucket,
            "Key": KEY + ".parts",
            "UploadId": upload_id,
            "PartNumber": 1,
            "ContentLength": len(part_body),
            "ChecksumCRC32": checksum_value("crc32", part_body),
        },
        ExpiresIn=60,
    )
    with httpx.Client() as http:
        assert http.put(put, content=b"hello", headers={"If-None-Match": "*"}).status_code == 200
        answer = http.put(part, content=part_body, headers={"x-amz-checksum-crc32": checksum_value("crc32", part_body)})
        assert answer.status_code == 200, answer.text
    boto.complete_multipart_upload(
        Bucket=bucket,
        Key=KEY + ".parts",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": answer.headers["etag"]}]},
    )
    assert s3.get_object(Bucket=bucket, Key=KEY)["Body"].read() == b"hello"
    assert s3.get_object(Bucket=bucket, Key=KEY + ".parts")["Body"].read() == part_body
    assert front.refusals == []
    assert {(e.method, e.auth) for e in front.exchanges} == {("PUT", "presigned"), ("POST", "header")}


def test_our_presigner_urls_store_through_the_front(front: SigV4Front, settings: Settings, s3: Any) -> None:
    bucket, now = settings.storage.bucket, datetime.now(UTC)
    credentials = PresignCredentials(settings.storage.access_key_id, settings.storage.secret_access_key)
    presigner = S3Presigner(endpoint_url=front.url, region=settings.storage.region, credentials=credentials)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=KEY)["UploadId"]
    sizes = [(1, 5 * 1024 * 1024), (2, 7)]
    urls = presigner.presign_upload_parts(bucket, KEY, upload_id=upload_id, parts=sizes, expires_in=60, now=now)
    data = os.urandom(sum(size for _, size in sizes))
    parts, start = [], 0
    with httpx.Client() as http:
        for (number, size), url in zip(sizes, urls, strict=True):
            answer = http.put(url, content=data[start : start + size])
            assert answer.status_code == 200, answer.text
            parts.append({"PartNumber": number, "ETag": answer.headers["etag"]})
            start += size
        single = presigner.presign_put_object(
            bucket, KEY + ".1", content_length=3, expires_in=60, now=now, if_none_match=True
        )
        assert http.put(single, content=b"abc", headers={"If-None-Match": "*"}).status_code == 200
    s3.complete_multipart_upload(Bucket=bucket, Key=KEY, UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key=KEY)["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key=KEY + ".1")["Body"].read() == b"abc"
    assert front.refusals == []


def test_refused_puts_store_nothing(
    front: SigV4Front, settings: Settings, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = settings.storage.bucket
    params = {"Bucket": bucket, "Key": KEY, "ContentLength": 4, "IfNoneMatch": "*"}
    url = client_via(front.url, settings).generate_presigned_url("put_object", Params=params, ExpiresIn=60)
    wrong_secret = client_via(front.url, settings, secret="nope").generate_presigned_url("put_object", Params=params)
    past = datetime.now(UTC) - timedelta(hours=1)

    def clock(remove_tzinfo: bool = True) -> datetime:
        return past.replace(tzinfo=None) if remove_tzinfo else past

    monkeypatch.setattr(botocore.auth, "get_current_datetime", clock)
    if botocore.auth.HAS_CRT:  # with awscrt installed, botocore signs through botocore.crt.auth
        monkeypatch.setattr(importlib.import_module("botocore.crt.auth"), "get_current_datetime", clock)
    expired = client_via(front.url, settings).generate_presigned_url("put_object", Params=params, ExpiresIn=60)
    attempts = [
        (url, b"abc", {"If-None-Match": "*"}, 403, "SignatureDoesNotMatch"),
        (url, b"abcde", {"If-None-Match": "*"}, 403, "SignatureDoesNotMatch"),
        (url, b"abcd", {}, 403, "SignatureDoesNotMatch"),
        (wrong_secret, b"abcd", {"If-None-Match": "*"}, 403, "SignatureDoesNotMatch"),
        (expired, b"abcd", {"If-None-Match": "*"}, 403, "AccessDenied"),
    ]
    with httpx.Client() as http:
        for target, body, headers, status, code in attempts:
            answer = http.put(target, content=body, headers=headers)
            assert (answer.status_code, answer.headers["content-type"]) == (status, "application/xml")
            assert f"<Code>{code}</Code>" in answer.text
    assert [(r.status, r.code) for r in front.refusals] == [(s, c) for *_, s, c in attempts]
    assert not exists(s3, bucket, KEY)


def test_storage_answers_come_back_unchanged(front: SigV4Front, settings: Settings, s3: Any) -> None:
    bucket = settings.storage.bucket
    url = client_via(front.url, settings).generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": KEY, "ContentLength": 1, "IfNoneMatch": "*"}, ExpiresIn=60
    )
    with httpx.Client() as http:
        assert http.put(url, content=b"a", headers={"If-None-Match": "*"}).status_code == 200
        again = http.put(url, content=b"b", headers={"If-None-Match": "*"})
    # moto's conditional write: a 412 it answered, relayed, not a refusal of the front's.
    assert again.status_code == 412 and "<Code>PreconditionFailed</Code>" in again.text
    assert front.refusals == []
    assert [(e.auth, e.status, e.refused) for e in front.exchanges] == [
        ("presigned", 200, False),
        ("presigned", 412, False),
    ]
    assert s3.get_object(Bucket=bucket, Key=KEY)["Body"].read() == b"a"


def test_authorization_header_clients_work_through_the_front(front: SigV4Front, settings: Settings, s3: Any) -> None:
    bucket = settings.storage.bucket
    boto = client_via(front.url, settings)
    big = os.urandom(3 * 1024 * 1024 + 5)  # botocore sends it with Expect: 100-continue
    boto.put_object(Bucket=bucket, Key=KEY, Body=big)
    assert boto.get_object(Bucket=bucket, Key=KEY)["Body"].read() == big
    assert boto.head_object(Bucket=bucket, Key=KEY)["ContentLength"] == len(big)
    assert [o["Key"] for o in boto.list_objects_v2(Bucket=bucket)["Contents"]] == [KEY]
    with pytest.raises(ClientError) as missing:
        boto.get_object(Bucket=bucket, Key="absent")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    boto.delete_object(Bucket=bucket, Key=KEY)
    assert not exists(s3, bucket, KEY)
    assert front.refusals == []
    assert {e.auth for e in front.exchanges} == {"header"}
    assert front.connections >= 1


async def test_the_services_store_works_through_the_front(front: SigV4Front, verified_settings: Settings) -> None:
    async with ObjectStore.connect(verified_settings.storage) as store:
        await store.ensure_bucket()
        assert await store.list_open_uploads("") == []
    assert front.refusals == []
    assert front.exchanges and {e.auth for e in front.exchanges} == {"header"}


@pytest.mark.usefixtures("store")
def test_the_front_runs_as_a_process(s3_endpoint: str, settings: Settings, tmp_path: Path, s3: Any) -> None:
    port, log = free_port(), tmp_path / "refusals.jsonl"
    command = [
        sys.executable,
        "-m",
        "tests.sigv4_front",
        "--target",
        s3_endpoint,
        "--port",
        str(port),
        "--secret",
        "testing",
        "--log",
        str(log),
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, process)
        url = client_via(f"http://127.0.0.1:{port}", settings).generate_presigned_url(
            "put_object", Params={"Bucket": settings.storage.bucket, "Key": "proc", "ContentLength": 2}, ExpiresIn=60
        )
        with httpx.Client() as http:
            assert http.put(url, content=b"ok").status_code == 200
            assert http.put(url, content=b"longer").status_code == 403
        deadline = time.monotonic() + 5
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        (line,) = log.read_text().splitlines()
        assert json.loads(line) | {"reason": ""} == {
            "status": 403,
            "code": "SignatureDoesNotMatch",
            "method": "PUT",
            "path": f"/{settings.storage.bucket}/proc",
            "reason": "",
        }
        assert s3.get_object(Bucket=settings.storage.bucket, Key="proc")["Body"].read() == b"ok"
    finally:
        stop([process])
        out, err = process.communicate()
    assert process.returncode == 0, err
    assert out.startswith(f"sigv4-front http://127.0.0.1:{port} -> {s3_endpoint}")
    assert '"code": "SignatureDoesNotMatch"' in err


def test_completion_checksums_are_checked_as_s3_checks_them(front: SigV4Front, settings: Settings, s3: Any) -> None:
    bucket, key = settings.storage.bucket, KEY + ".crc"
    boto = boto3.client(
        "s3", endpoint_url=front.url, region_name=settings.storage.region,
        aws_access_key_id=settings.storage.access_key_id, aws_secret_access_key=settings.storage.secret_access_key,
        # boto3's default (legacy) retry mode sends a BadDigest and a 501 again; the service's standard mode does not
        config=botocore.config.Config(signature_version="s3v4", retries={"total_max_attempts": 1}),
    )  # fmt: skip
    upload_id = boto.create_multipart_upload(
        Bucket=bucket, Key=key, ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT"
    )["UploadId"]
    bodies = [os.urandom(5 * 1024 * 1024), os.urandom(9)]
    parts = []
    with httpx.Client() as http:
        for n, body in enumerate(bodies, 1):
            value = checksum_value("crc64nvme", body)
            url = boto.generate_presigned_url("upload_part", ExpiresIn=60, Params={
                "Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": n, "ContentLength": len(body),
                "ChecksumCRC64NVME": value})  # fmt: skip
            answer = http.put(url, content=body, headers={"x-amz-checksum-crc64nvme": value})
            assert answer.status_code == 200, answer.text
            parts.append({"PartNumber": n, "ETag": answer.headers["etag"], "ChecksumCRC64NVME": value})
    whole = checksum_value("crc64nvme", b"".join(bodies))

    def finish(listed: list[dict[str, Any]], value: str, **extra: Any) -> Any:
        return boto.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, ChecksumType="FULL_OBJECT", ChecksumCRC64NVME=value,
            MultipartUpload={"Parts": listed}, **extra,
        )  # fmt: skip

    wrong_part = [parts[0], parts[1] | {"ChecksumCRC64NVME": checksum_value("crc64nvme", b"other")}]
    with pytest.raises(ClientError) as refused:
        finish(wrong_part, whole)
    assert refused.value.response["Error"]["Code"] == "InvalidPart"
    assert refused.value.response["Error"]["PartNumber"] == "2"
    with pytest.raises(ClientError) as refused:
        finish(parts, checksum_value("crc64nvme", bodies[0]))  # the first part's CRC, not the whole object's
    assert refused.value.response["Error"]["Code"] == "BadDigest"
    front.refuse_conditional_complete = True
    try:
        with pytest.raises(ClientError) as refused:
            finish(parts, whole, IfNoneMatch="*")
    finally:
        front.refuse_conditional_complete = False
    assert refused.value.response["Error"]["Code"] == "NotImplemented"
    assert not exists(s3, bucket, key)  # nothing refused reached storage
    finish(parts, whole, IfNoneMatch="*")
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == whole  # moto's own computation agrees with the parts' combined CRC
    assert [(r.status, r.code) for r in front.refusals] == [(400, "InvalidPart"), (400, "BadDigest"),
                                                            (501, "NotImplemented")]  # fmt: skip
    assert [c.headers.get("if-none-match") for c in front.completions] == [None, None, "*", "*"]
