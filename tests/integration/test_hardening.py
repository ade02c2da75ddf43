"""Fixes from the adversarial review: body edge cases, a failed group's other files, a completion job that gives up."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec
import pytest
from redis.asyncio import Redis

from app.domain.lifecycle import Reply
from app.domain.reasons import Reason
from app.http.app import create_app, open_services
from app.settings import Settings
from app.state import UploadState
from app.state.apikeys import Principal, Role, create_key
from app.state.jobs import COMPLETE_JOB, JobSpec, complete_job_id
from app.storage.s3 import ObjectStore
from app.uploads import start
from app.uploads.service import UploadService
from deploy.local.devstack import free_port
from tests.conftest import SEED_REQUEST
from worker import jobs

URL = "/api/videos/uploads"
ACME = Principal("acme", Role.UPLOAD, "test")


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({}, b'{"videoName": "\xe9"}', 400, "malformed_json"),
        ({"Content-Type": "application/json; charset=latin-1"}, b"{}", 415, "unsupported_media_type"),
        ({"Content-Type": "application/json; charset=UTF-8"}, b"[]", 400, "invalid_request"),
        ({"Content-Encoding": "gzip"}, b"{}", 415, "unsupported_media_type"),
    ],
)
async def test_body_encodings(
    client: httpx.AsyncClient, upload_key: str, headers: dict[str, str], body: bytes, status: int, code: str
) -> None:
    r = await client.post(URL, content=body, headers={"X-SPATIALGEN-APPKEY": upload_key, **headers})
    assert r.status_code == status and r.json()["code"] == code, r.text


async def raw_call(settings: Settings, key: str, receive: Any) -> tuple[int, dict[str, Any]]:
    """Call the ASGI app directly with a custom receive(), as a server does for a misbehaving client."""
    app = create_app(settings)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": URL, "raw_path": URL.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "state": {},
             "headers": [(b"x-spatialgen-appkey", key.encode()), (b"content-type", b"application/json"),
                         (b"content-length", b"500")]}  # fmt: skip
    async with open_services(settings) as services:
        app.state.services = services
        await app(scope, receive, send)  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], msgspec.json.decode(body)


async def test_client_disconnect_mid_body_is_400(settings: Settings, upload_key: str) -> None:
    messages = [{"type": "http.request", "body": b'{"videoName": ', "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    status, doc = await raw_call(settings, upload_key, receive)
    assert (status, doc["code"]) == (400, "body_incomplete")


async def test_a_body_that_never_arrives_is_408(settings: Settings, upload_key: str) -> None:
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"{", "more_body": True}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    impatient = settings.override(body_timeout_seconds=0.3)
    status, doc = await asyncio.wait_for(raw_call(impatient, upload_key, receive), 10)
    assert (status, doc["code"]) == (408, "body_timeout")


async def test_a_failed_file_fails_the_other_unfinished_files(
    settings: Settings, state: UploadState, running_worker: Any, s3: Any
) -> None:
    from tests.integration.conftest import api_client

    async with api_client(settings) as api:
        secret, _ = await create_key(state.redis, account="acme", role="upload")
        key = {"X-SPATIALGEN-APPKEY": secret}
        body = {"videoName": "x", "layout": "2D", "files": [
            {"fileName": "v.mp4", "fileRole": "video", "sizeBytes": 10},
            {"fileName": "s.srt", "fileRole": "subtitle", "sizeBytes": 5, "languageTag": "en"}]}  # fmt: skip
        doc = (await api.post(URL, json=body, headers=key)).json()
        sid, video = doc["sessionId"], doc["files"][0]
        url = (await api.post(f"{URL}/{sid}/files/{video['uploadId']}/part-urls", headers=key)).json()["parts"][0][
            "url"
        ]
        async with httpx.AsyncClient() as http:
            assert (await http.put(url, content=b"short")).status_code == 200
        r = await api.post(f"{URL}/{sid}/files/{video['uploadId']}/complete", headers=key)
        assert r.status_code == 409 and r.json()["code"] == "file_failed"
        status = (await api.get(f"{URL}/{sid}", headers=key)).json()
    assert status["status"] == "failed"
    assert [(f["status"], f["failureReason"], f["failureDetail"]) for f in status["files"]] == [
        ("failed", "size_mismatch", "the stored object has 5 bytes but the file was registered with 10"),
        ("failed", "group_failed", "another file of the group failed"),
    ]


async def test_a_completion_that_gives_up_hands_the_file_back(settings: Settings, state: UploadState) -> None:
    service = UploadService(settings, state)
    body = {"videoName": "x", "layout": "2D", "files": [{"fileName": "v.mp4", "fileRole": "video", "sizeBytes": 10}]}
    sid = (await start.start_upload_group(service, ACME, msgspec.json.encode(body), None)).session_id
    snap = await state.snapshot(sid)
    assert snap is not None
    uid = snap.record.files[0].upload_id
    job = JobSpec.build(
        COMPLETE_JOB, (sid, uid, 1, []), job_id=complete_job_id(sid, uid, 1), now_ms=snap.record.created_ms
    )
    reply = await state.begin_complete(snap.record, uid, now_ms=snap.record.created_ms, attempt_seen=0, job=job)
    assert reply.code is Reply.OK
    dead = settings.override(s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    async with ObjectStore.connect(dead.storage, connect_timeout=1.0) as down:
        ctx = {"state": state, "store": down, "settings": settings, "job_try": jobs.MAX_TRIES, "redis": state.redis}
        with pytest.raises(Exception):  # noqa: B017 - the storage error itself propagates after the hand-back
            await jobs.complete_file(ctx, sid, uid, 1, [])
    after = await state.snapshot(sid)
    assert after is not None and after.file_status(uid) == "uploading"
    assert after.failure(uid) == (
        Reason.STORAGE_UNAVAILABLE,
        "storage could not complete the file; call complete again",
    )


async def test_uuid_with_trailing_newline_is_404(client: httpx.AsyncClient, upload_key: str, redis: Redis) -> None:
    doc = (await client.post(URL, json=SEED_REQUEST, headers={"X-SPATIALGEN-APPKEY": upload_key})).json()
    r = await client.get(f"{URL}/{doc['sessionId']}%0A", headers={"X-SPATIALGEN-APPKEY": upload_key})
    assert r.status_code == 404


async def test_large_batches_are_signed_in_the_signer_process_identically(
    settings: Settings, state: UploadState
) -> None:
    from app.storage.credentials import CredentialSource
    from app.storage.signer import PresignerConfig, SignBatch, Signer, sign_parts_json

    batch = SignBatch(bucket="spatialgen-test", key="uploads/a/s/u.mov", upload_id="Up+Load/Id=",
                      part_numbers=list(range(1, 601)), part_size=5 * 1024 * 1024,
                      total_bytes=600 * 5 * 1024 * 1024 - 7, expires_in=3600, signed_at=1_800_000_000)  # fmt: skip
    config = PresignerConfig.from_settings(settings.storage)
    offloading = Signer(config, CredentialSource(settings.storage), offload_min_parts=100)
    try:
        in_process = sign_parts_json(config.presigner(await CredentialSource(settings.storage).current()), batch)
        offloaded = await offloading.sign(batch)
        assert offloading.helper_pid() is not None  # the large batch really went to the signer process
    finally:
        offloading.close()
    assert offloaded == in_process
    parts = msgspec.json.decode(offloaded)
    assert len(parts) == 600 and parts[-1]["byteEnd"] == batch.total_bytes


async def test_checksummed_batches_are_signed_piece_by_piece_and_in_the_signer_process_identically(
    settings: Settings,
) -> None:
    import base64

    from app.storage.credentials import CredentialSource
    from app.storage.signer import PIECE_PARTS, PresignerConfig, SignBatch, Signer, sign_parts_json

    numbers = list(range(1, 1202))
    sums = [base64.b64encode(n.to_bytes(8, "big")).decode() for n in numbers]  # a different value per part
    batch = SignBatch(bucket="spatialgen-test", key="uploads/a/s/u.mov", upload_id="Up+Load/Id=",
                      part_numbers=numbers, part_size=5 * 1024 * 1024, total_bytes=1201 * 5 * 1024 * 1024 - 7,
                      expires_in=3600, signed_at=1_800_000_000, checksum_algorithm="CRC64NVME",
                      checksums=sums)  # fmt: skip
    config = PresignerConfig.from_settings(settings.storage)
    credentials = await CredentialSource(settings.storage).current()
    offloading = Signer(config, CredentialSource(settings.storage), offload_min_parts=100)
    try:
        in_process = msgspec.json.decode(sign_parts_json(config.presigner(credentials), batch))
        pieces = [msgspec.json.decode(p) async for p in offloading.pieces(credentials, batch, "k")]
        assert offloading.helper_pid() is not None
    finally:
        offloading.close()
    assert [len(p) for p in pieces] == [PIECE_PARTS, PIECE_PARTS, 201]
    assert [part for piece in pieces for part in piece] == in_process
    assert [p["headers"]["x-amz-checksum-crc64nvme"] for p in in_process] == sums
    assert len({p["url"] for p in in_process}) == len(numbers)
