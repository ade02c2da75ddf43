"""Upload integrity as S3 enforces it: the service's real flow with storage behind the SigV4-verifying front.

The API (in-process) and a worker use `verified_settings`: presigned URLs are signed for the front
(tests/sigv4_front.py), which checks each PUT the way S3 does before moto stores it, and the service's own S3
calls pass through it. The headers a part-urls answer lists are the ones its URL signed, so a client must send
them with exactly those values: the exact bytes with the listed headers are stored and the file completes; a
body one byte shorter or longer, or a missing `If-None-Match: *` on a single PUT, is refused 403 and logged by
the front; a second single PUT after a stored one gets moto's 412.

Checksum headers: a file without a checksum algorithm gets URLs that sign none, so a client that adds an
`x-amz-checksum-*` header is refused (403 AccessDenied, a header the URL did not sign; see the last test). Files
with one (SPEC 3.8) are tested in test_checksums.py, with `checksum_headers` and `put_part`: the listed headers
pass; the checksum header left out, or sent with another value, is refused 403 SignatureDoesNotMatch; the signed
checksum sent with other bytes of the same length is refused 400 BadDigest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from arq.connections import RedisSettings
from arq.worker import Worker
from redis.asyncio import Redis

from app.settings import MIB, Settings
from app.state.apikeys import create_key
from app.storage.s3 import ObjectStore
from tests.conftest import arq_pool, open_uploads, stored_objects
from tests.integration.conftest import api_client
from tests.sigv4_front import SigV4Front, checksum_value
from worker.settings import WorkerSettings

URL = "/api/videos/uploads"
Client = httpx.AsyncClient


@pytest.fixture
def front(verified_s3: SigV4Front) -> Iterator[SigV4Front]:
    """The session's verifying front with an empty record; it must end with no internal error."""
    verified_s3.reset()
    yield verified_s3
    assert verified_s3.errors == []


@pytest.fixture
def small(verified_settings: Settings) -> Settings:
    """Storage through the front, and 5 MiB parts (S3's minimum)."""
    return verified_settings.override(part_size_bytes=5 * MIB, provision_wait_seconds=5.0)


@pytest.fixture
async def api(small: Settings, redis: Redis, front: SigV4Front) -> AsyncIterator[Client]:
    async with api_client(small) as client:
        yield client


@pytest.fixture
async def key(redis: Redis) -> dict[str, str]:
    secret, _ = await create_key(redis, account="acme", role="upload")
    return {"X-SPATIALGEN-APPKEY": secret}


@pytest.fixture
async def worker(small: Settings, store: ObjectStore) -> AsyncIterator[Worker]:
    """The service's arq worker in the background, its storage calls through the front too."""
    pool = arq_pool(small.redis.url)
    worker = Worker(
        functions=WorkerSettings.functions,
        on_startup=WorkerSettings.on_startup,
        on_shutdown=WorkerSettings.on_shutdown,
        queue_name=small.worker.queue_name,
        job_serializer=WorkerSettings.job_serializer,
        job_deserializer=WorkerSettings.job_deserializer,
        redis_settings=RedisSettings.from_dsn(small.redis.url),
        redis_pool=pool,
        poll_delay=0.02,
        handle_signals=False,
        ctx={"settings": small},
    )
    task = asyncio.create_task(worker.main())
    yield worker
    worker.allow_pick_jobs = False  # let the poll loop go idle so the cancel lands in its sleep (as running_worker)
    await asyncio.sleep(0.2)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    running = [t for t in worker.tasks.values() if not t.done()]
    if running:
        await asyncio.wait(running, timeout=30)
    await worker.close()
    await pool.aclose()


async def start(api: Client, key: dict[str, str], sizes: dict[str, int]) -> dict[str, Any]:
    names = {"video_left": "l.mov", "video_right": "r.mov"}
    files = [{"fileName": names[role], "fileRole": role, "sizeBytes": size} for role, size in sizes.items()]
    answer = await api.post(URL, json={"videoName": "integrity", "layout": "Separate", "files": files}, headers=key)
    assert answer.status_code == 201, answer.text
    group: dict[str, Any] = answer.json()
    return group


async def part_urls(api: Client, key: dict[str, str], sid: str, file: dict[str, Any]) -> list[dict[str, Any]]:
    answer = await api.post(f"{URL}/{sid}/files/{file['uploadId']}/part-urls", headers=key)
    assert answer.status_code == 200, answer.text
    parts: list[dict[str, Any]] = answer.json()["parts"]
    return parts


async def complete(api: Client, key: dict[str, str], sid: str, uid: str, parts: list[dict[str, Any]] | None) -> Any:
    body = {} if parts is None else {"parts": parts}
    for _ in range(20):  # 202: still completing
        answer = await api.post(f"{URL}/{sid}/files/{uid}/complete", json=body, headers=key)
        if answer.status_code != 202:
            return answer
    raise AssertionError("complete stayed 202")


def checksum_headers(algorithm: str, data: bytes) -> dict[str, str]:
    """The header carrying data's checksum (for the checksum cases, once the service signs one)."""
    return {f"x-amz-checksum-{algorithm}": checksum_value(algorithm, data)}


async def put_part(
    http: Client, part: dict[str, Any], data: bytes, *, drop: tuple[str, ...] = (), extra: dict[str, str] | None = None
) -> httpx.Response:
    """PUT data to a part's URL with its listed headers, less `drop`, plus `extra`."""
    headers = {name: value for name, value in part["headers"].items() if name not in drop} | (extra or {})
    return await http.put(part["url"], content=data, headers=headers)


def path_of(part: dict[str, Any]) -> str:
    return urlsplit(part["url"]).path


async def test_exact_bytes_with_the_listed_headers_are_stored_and_complete(
    api: Client, key: dict[str, str], worker: Worker, front: SigV4Front, s3: Any, small: Settings
) -> None:
    group = await start(api, key, {"video_left": 11 * MIB + 7, "video_right": 20})
    sid = group["sessionId"]
    assert [(f["uploadStrategy"], f["totalParts"]) for f in group["files"]] == [("multipart", 3), ("single_put", 1)]
    payloads = {f["uploadId"]: os.urandom(f["totalBytes"]) for f in group["files"]}
    async with httpx.AsyncClient(timeout=60) as http:
        for file in group["files"]:
            data, done = payloads[file["uploadId"]], []
            for part in await part_urls(api, key, sid, file):
                answer = await put_part(http, part, data[part["byteStart"] : part["byteEnd"]])
                assert answer.status_code == 200, answer.text
                done.append({"partNumber": part["partNumber"], "etag": answer.headers["etag"]})
            multipart = file["uploadStrategy"] == "multipart"
            answer = await complete(api, key, sid, file["uploadId"], done if multipart else None)
            assert answer.status_code == 200 and answer.json()["status"] == "completed", answer.text
    stored = {o["Key"]: o["Size"] for o in stored_objects(s3, small.storage.bucket)}
    assert sorted(stored.values()) == [20, 11 * MIB + 7]
    for name in stored:
        body = s3.get_object(Bucket=small.storage.bucket, Key=name)["Body"].read()
        assert body in payloads.values()
    assert front.refusals == []
    puts = [(e.auth, e.status) for e in front.exchanges if e.method == "PUT" and e.auth == "presigned"]
    assert puts == [("presigned", 200)] * 4
    assert {e.auth for e in front.exchanges} == {"presigned", "header"}  # the service's own calls went through too


async def test_a_part_one_byte_shorter_or_longer_is_refused(
    api: Client, key: dict[str, str], worker: Worker, front: SigV4Front, s3: Any, small: Settings
) -> None:
    group = await start(api, key, {"video_left": 5 * MIB + 7, "video_right": 20})
    multipart = group["files"][0]
    part = (await part_urls(api, key, group["sessionId"], multipart))[1]  # the 7-byte last part
    data = os.urandom(part["sizeBytes"])
    async with httpx.AsyncClient() as http:
        for body in (data[:-1], data + b"!"):  # an honest client sending another length
            answer = await put_part(http, part, body, drop=("Content-Length",))
            assert answer.status_code == 403, answer.text
            assert "<Code>SignatureDoesNotMatch</Code>" in answer.text
        # A client that claims the listed length but sends one byte less, then ends its side.
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        url = urlsplit(part["url"])
        head = [f"PUT {url.path}?{url.query} HTTP/1.1", f"Host: {url.netloc}"]
        head += [f"{name}: {value}" for name, value in part["headers"].items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data[:-1])
        writer.write_eof()
        lying = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
        assert lying.startswith(b"HTTP/1.1 400 ") and b"<Code>IncompleteBody</Code>" in lying
        assert [(r.status, r.code, r.path) for r in front.refusals] == [
            (403, "SignatureDoesNotMatch", path_of(part)),
            (403, "SignatureDoesNotMatch", path_of(part)),
            (400, "IncompleteBody", path_of(part)),
        ]
        (upload,) = open_uploads(s3, small.storage.bucket)
        listed = s3.list_parts(Bucket=small.storage.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        assert listed.get("Parts", []) == []  # nothing refused reached storage
        assert (await put_part(http, part, data)).status_code == 200  # the URL still works with the exact bytes


async def test_a_single_put_needs_if_none_match_and_writes_once(
    api: Client, key: dict[str, str], worker: Worker, front: SigV4Front, s3: Any, small: Settings
) -> None:
    group = await start(api, key, {"video_left": 10, "video_right": 20})
    sid, single = group["sessionId"], group["files"][0]
    (part,) = await part_urls(api, key, sid, single)
    assert part["headers"] == {"Content-Length": "10", "If-None-Match": "*", "Content-Type": "video/quicktime"}
    async with httpx.AsyncClient() as http:
        without = await put_part(http, part, b"a" * 10, drop=("If-None-Match",))
        assert without.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in without.text
        assert [(r.code, r.reason) for r in front.refusals] == [
            ("SignatureDoesNotMatch", "signed header if-none-match was not sent")
        ]
        assert stored_objects(s3, small.storage.bucket) == []
        assert (await put_part(http, part, b"a" * 10)).status_code == 200
        again = await put_part(http, part, b"b" * 10)  # storage's conditional write, through the front
        assert again.status_code == 412 and "<Code>PreconditionFailed</Code>" in again.text
        assert (await complete(api, key, sid, single["uploadId"], None)).status_code == 200
        after = await put_part(http, part, b"b" * 10)
        assert after.status_code == 412
    assert len(front.refusals) == 1  # the 412s are moto's answers, not the front's refusals
    assert [e.status for e in front.exchanges if e.auth == "presigned"] == [403, 200, 412, 412]
    (stored,) = stored_objects(s3, small.storage.bucket)
    assert s3.get_object(Bucket=small.storage.bucket, Key=stored["Key"])["Body"].read() == b"a" * 10


async def test_every_listed_header_is_required(
    api: Client, key: dict[str, str], worker: Worker, front: SigV4Front, s3: Any, small: Settings
) -> None:
    group = await start(api, key, {"video_left": 5 * MIB + 7, "video_right": 20})
    sid = group["sessionId"]
    last_part = (await part_urls(api, key, sid, group["files"][0]))[1]
    (single,) = await part_urls(api, key, sid, group["files"][1])
    async with httpx.AsyncClient() as http:
        for part in (last_part, single):
            data = os.urandom(part["sizeBytes"])
            for name in part["headers"]:
                if name == "Content-Length":  # left out, the body goes chunked: a length the URL did not sign

                    async def stream(body: bytes = data) -> AsyncIterator[bytes]:
                        yield body

                    answer = await http.put(part["url"], content=stream(), headers={"If-None-Match": "*"})
                else:
                    answer = await put_part(http, part, data, drop=(name,))
                assert answer.status_code == 403, (name, answer.text)
            assert (await put_part(http, part, data)).status_code == 200
    assert [r.reason for r in front.refusals] == [
        "a chunked body where content-length is signed",
        "a chunked body where content-length is signed",
        "signed header if-none-match was not sent",
        "signed header content-type was not sent",
    ]


async def test_objects_are_stored_with_the_content_type_of_their_extension(
    api: Client, key: dict[str, str], worker: Worker, front: SigV4Front, s3: Any, small: Settings
) -> None:
    names = {"video_left": "l.MOV", "video_right": "r.mp4"}
    files = [{"fileName": names[role], "fileRole": role, "sizeBytes": size}
             for role, size in (("video_left", 5 * MIB + 1), ("video_right", 30))]  # fmt: skip
    answer = await api.post(URL, json={"videoName": "types", "layout": "Separate", "files": files}, headers=key)
    assert answer.status_code == 201, answer.text
    group = answer.json()
    sid = group["sessionId"]
    big, single = group["files"]
    (put,) = await part_urls(api, key, sid, single)
    assert put["headers"]["Content-Type"] == "video/mp4"
    async with httpx.AsyncClient() as http:
        wrong = await put_part(http, put, b"x" * 30, extra={"Content-Type": "text/html"})
        assert wrong.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in wrong.text
        assert (await put_part(http, put, b"x" * 30)).status_code == 200
        data, done = os.urandom(big["totalBytes"]), []
        for part in await part_urls(api, key, sid, big):
            assert "Content-Type" not in part["headers"]  # parts carry none: the upload was created with it
            sent = await put_part(http, part, data[part["byteStart"] : part["byteEnd"]])
            done.append({"partNumber": part["partNumber"], "etag": sent.headers["etag"]})
    assert (await complete(api, key, sid, single["uploadId"], None)).status_code == 200
    assert (await complete(api, key, sid, big["uploadId"], done)).status_code == 200
    types = {o["Key"].rsplit(".", 1)[1]: s3.head_object(Bucket=small.storage.bucket, Key=o["Key"])["ContentType"]
             for o in stored_objects(s3, small.storage.bucket)}  # fmt: skip
    assert types == {"mov": "video/quicktime", "mp4": "video/mp4"}


async def test_a_checksum_header_the_url_does_not_sign_is_refused(
    api: Client, key: dict[str, str], worker: Worker, front: SigV4Front
) -> None:
    # A file without a checksum algorithm signs no checksum header: storage refuses any a client adds, even a correct
    # one.
    group = await start(api, key, {"video_left": 10, "video_right": 20})
    (part,) = await part_urls(api, key, group["sessionId"], group["files"][0])
    data = os.urandom(10)
    async with httpx.AsyncClient() as http:
        answer = await put_part(http, part, data, extra=checksum_headers("crc32", data))
        assert answer.status_code == 403, answer.text
        assert "<HeadersNotSigned>x-amz-checksum-crc32</HeadersNotSigned>" in answer.text
        assert (await put_part(http, part, data)).status_code == 200
    assert [(r.status, r.code) for r in front.refusals] == [(403, "AccessDenied")]
