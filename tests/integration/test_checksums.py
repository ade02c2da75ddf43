"""Checksums end to end (SPEC 3.8, issue 18), against storage behind the SigV4-verifying front.

The API and a worker use `verified_settings` (fixtures of test_integrity_front.py): URLs sign each part's
`x-amz-checksum-<algorithm>`, the front checks it against the body (moto does not), and checks the part and
whole-object checksums of the service's CompleteMultipartUpload against what the parts carried (moto does not
either). moto computes the assembled object's CRC64NVME (with awscrt), CRC32C (with the crc32c package; without it,
CRC32 labelled CRC32C), CRC32 and SHA-256 composite checksum, which HeadObject returns and the service records.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from typing import Any

import httpx
import msgspec
import pytest
from redis.asyncio import Redis

from app.settings import MIB, Settings
from app.state.jobs import process_job_id
from app.state.keys import arq_job_key, library_key
from tests.integration.test_integrity_front import (  # noqa: F401 - fixtures
    URL,
    Client,
    api,
    complete,
    front,
    key,
    put_part,
    small,
    worker,
)
from tests.sigv4_front import SigV4Front, checksum_value

pytestmark = pytest.mark.usefixtures("worker")


async def start(api: Client, key: dict[str, str], files: list[dict[str, Any]]) -> dict[str, Any]:
    answer = await api.post(URL, json={"videoName": "checksums", "layout": "Separate", "files": files}, headers=key)
    assert answer.status_code == 201, answer.text
    group: dict[str, Any] = answer.json()
    return group


async def urls(api: Client, key: dict[str, str], sid: str, uid: str, body: dict[str, Any] | None) -> httpx.Response:
    return await api.post(f"{URL}/{sid}/files/{uid}/part-urls", json=body, headers=key)


def sums(algorithm: str, data: bytes, file: dict[str, Any]) -> dict[str, str]:
    """Every part's checksum of a file's bytes, keyed as part-urls takes them."""
    size, out = file["partSizeBytes"], {}
    for n in range(1, file["totalParts"] + 1):
        out[str(n)] = checksum_value(algorithm, data[(n - 1) * size : n * size])
    return out


async def status(api: Client, key: dict[str, str], sid: str) -> dict[str, Any]:
    answer = await api.get(f"{URL}/{sid}", headers=key)
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


async def test_crc64nvme_parts_and_a_crc32_single_put_are_verified_and_recorded(
    api: Client, key: dict[str, str], front: SigV4Front, redis: Redis
) -> None:
    group = await start(api, key, [
        {"fileName": "l.mov", "fileRole": "video_left", "sizeBytes": 11 * MIB + 7, "checksumAlgorithm": "CRC64NVME"},
        {"fileName": "r.mov", "fileRole": "video_right", "sizeBytes": 20, "checksumAlgorithm": "CRC32"},
    ])  # fmt: skip
    sid, (left, right) = group["sessionId"], group["files"]
    assert [f["checksumAlgorithm"] for f in group["files"]] == ["CRC64NVME", "CRC32"]
    data = {left["uploadId"]: os.urandom(left["totalBytes"]), right["uploadId"]: os.urandom(20)}
    body = data[left["uploadId"]]

    refused = await urls(api, key, sid, left["uploadId"], None)  # every part, none with its checksum
    assert refused.status_code == 400 and refused.json()["code"] == "checksum_required", refused.text
    assert refused.json()["partNumbers"] == [1, 2, 3]
    answer = await urls(api, key, sid, left["uploadId"], {"checksums": sums("crc64nvme", body, left)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["checksumAlgorithm"] == "CRC64NVME"
    parts = answer.json()["parts"]
    assert [p["headers"]["x-amz-checksum-crc64nvme"] for p in parts] == list(sums("crc64nvme", body, left).values())
    done = []
    async with httpx.AsyncClient(timeout=60) as http:
        first = parts[0]
        chunk = body[first["byteStart"] : first["byteEnd"]]
        other = os.urandom(len(chunk))
        wrong_value = {"x-amz-checksum-crc64nvme": checksum_value("crc64nvme", other)}
        assert (await put_part(http, first, chunk, extra=wrong_value)).status_code == 403  # another value: not signed
        assert (await put_part(http, first, chunk, drop=("x-amz-checksum-crc64nvme",))).status_code == 403  # missing
        bad = await put_part(http, first, other)  # the signed value with other bytes of the same length
        assert bad.status_code == 400 and "<Code>BadDigest</Code>" in bad.text
        assert [(r.status, r.code) for r in front.refusals] == [
            (403, "SignatureDoesNotMatch"), (403, "SignatureDoesNotMatch"), (400, "BadDigest")
        ]  # fmt: skip
        for part in parts:
            sent = await put_part(http, part, body[part["byteStart"] : part["byteEnd"]])
            assert sent.status_code == 200, sent.text
            done.append({"partNumber": part["partNumber"], "etag": sent.headers["etag"]})

        whole = checksum_value("crc64nvme", body)
        assembled = await complete(api, key, sid, left["uploadId"], done)  # no checksums: storage's own are used
        assert assembled.status_code == 200, assembled.text
        assert assembled.json()["checksum"] == {"algorithm": "CRC64NVME", "type": "FULL_OBJECT", "value": whole}

        (single,) = (await urls(api, key, sid, right["uploadId"], {
            "checksums": {"1": checksum_value("crc32", data[right["uploadId"]])}})).json()["parts"]  # fmt: skip
        assert single["headers"]["x-amz-checksum-crc32"] == checksum_value("crc32", data[right["uploadId"]])
        assert (await put_part(http, single, data[right["uploadId"]])).status_code == 200
    finished = await complete(api, key, sid, right["uploadId"], None)
    assert finished.status_code == 200, finished.text
    assert finished.json()["checksum"] == {
        "algorithm": "CRC32", "type": "FULL_OBJECT", "value": checksum_value("crc32", data[right["uploadId"]])
    }  # fmt: skip
    recorded = {
        left["uploadId"]: {"algorithm": "CRC64NVME", "type": "FULL_OBJECT", "value": whole},
        right["uploadId"]: {"algorithm": "CRC32", "type": "FULL_OBJECT",
                            "value": checksum_value("crc32", data[right["uploadId"]])},
    }  # fmt: skip
    doc = await status(api, key, sid)
    assert doc["status"] == "completed"
    assert {f["uploadId"]: f["checksum"] for f in doc["files"]} == recorded
    library = msgspec.json.decode(await redis.get(library_key(sid)))
    assert {f["uploadId"]: f["checksum"] for f in library["files"]} == recorded
    job = msgspec.msgpack.decode(await redis.get(arq_job_key(process_job_id(sid))))
    assert {f["uploadId"]: f["checksum"] for f in job["a"][0]["files"]} == recorded
    (completion,) = front.completions
    assert completion.headers.get("if-none-match") == "*"  # SPATIALGEN_S3_CONDITIONAL_COMPLETE (default on)


@pytest.mark.parametrize("algorithm", ["CRC64NVME", "CRC32C", "CRC32"])
async def test_a_wrong_whole_file_checksum_is_a_409_and_the_file_stays_uploading(
    api: Client, key: dict[str, str], front: SigV4Front, algorithm: str
) -> None:
    alg = algorithm.lower()
    group = await start(api, key, [
        {"fileName": "l.mov", "fileRole": "video_left", "sizeBytes": 5 * MIB + 3},
        {"fileName": "r.mov", "fileRole": "video_right", "sizeBytes": 5},
    ])  # fmt: skip
    sid, left = group["sessionId"], group["files"][0]
    assert "checksumAlgorithm" not in left
    body = os.urandom(left["totalBytes"])
    answer = await urls(api, key, sid, left["uploadId"], {"checksumAlgorithm": algorithm,
                                                          "checksums": sums(alg, body, left)})  # fmt: skip
    assert answer.status_code == 200, answer.text
    done = []
    async with httpx.AsyncClient(timeout=60) as http:
        for part in answer.json()["parts"]:
            sent = await put_part(http, part, body[part["byteStart"] : part["byteEnd"]])
            done.append({"partNumber": part["partNumber"], "etag": sent.headers["etag"]})
    wrong_whole = checksum_value(alg, body[::-1])
    refused = await api.post(f"{URL}/{sid}/files/{left['uploadId']}/complete", headers=key,
                             json={"parts": done, "checksum": wrong_whole})  # fmt: skip
    for _ in range(20):
        if refused.status_code != 202:
            break
        refused = await api.post(f"{URL}/{sid}/files/{left['uploadId']}/complete", headers=key,
                                 json={"parts": done, "checksum": wrong_whole})  # fmt: skip
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["code"] == "checksum_mismatch" and problem["expected"] == wrong_whole, problem
    assert "partNumber" not in problem
    assert [(r.status, r.code) for r in front.refusals] == [(400, "BadDigest")]  # the front, as S3 answers it
    doc = await status(api, key, sid)
    assert doc["files"][0]["status"] == "uploading" and "checksum" not in doc["files"][0]
    # A wrong part checksum in the part list: storage names the part.
    other = checksum_value(alg, b"not the part")
    wrong_part = [done[0] | {"checksum": other}, done[1]]
    refused = await complete(api, key, sid, left["uploadId"], wrong_part)
    assert refused.status_code == 409 and refused.json()["code"] == "checksum_mismatch", refused.text
    assert refused.json()["partNumber"] == 1 and refused.json()["expected"] == other
    # Repaired: the right checksum completes it.
    right_whole = checksum_value(alg, body)
    fixed = await api.post(f"{URL}/{sid}/files/{left['uploadId']}/complete", headers=key,
                           json={"parts": done, "checksum": right_whole})  # fmt: skip
    for _ in range(20):
        if fixed.status_code != 202:
            break
        fixed = await complete(api, key, sid, left["uploadId"], done)
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["checksum"] == {"algorithm": algorithm, "type": "FULL_OBJECT", "value": right_whole}
    assert [c.headers.get(f"x-amz-checksum-{alg}") for c in front.completions] == [
        wrong_whole, None, right_whole
    ]  # fmt: skip
    assert front.completions[-1].headers.get("x-amz-checksum-type") == "FULL_OBJECT"


async def test_sha256_parts_give_a_composite_checksum(api: Client, key: dict[str, str], front: SigV4Front) -> None:
    group = await start(api, key, [
        {"fileName": "l.mov", "fileRole": "video_left", "sizeBytes": 5 * MIB + 9, "checksumAlgorithm": "SHA256"},
        {"fileName": "r.mov", "fileRole": "video_right", "sizeBytes": 5},
    ])  # fmt: skip
    sid, left = group["sessionId"], group["files"][0]
    body = os.urandom(left["totalBytes"])
    part_sums = sums("sha256", body, left)
    answer = await urls(api, key, sid, left["uploadId"], {"checksums": part_sums})
    assert answer.status_code == 200, answer.text
    done = []
    async with httpx.AsyncClient(timeout=60) as http:
        for part in answer.json()["parts"]:
            sent = await put_part(http, part, body[part["byteStart"] : part["byteEnd"]])
            assert sent.status_code == 200, sent.text
            done.append({"partNumber": part["partNumber"], "etag": sent.headers["etag"],
                         "checksum": part_sums[str(part["partNumber"])]})  # fmt: skip
    digest = hashlib.sha256(b"".join(base64.b64decode(v) for v in part_sums.values())).digest()
    composite = base64.b64encode(digest).decode()
    wrong = await api.post(f"{URL}/{sid}/files/{left['uploadId']}/complete", headers=key,
                           json={"parts": done, "checksum": base64.b64encode(bytes(32)).decode() + "-2"})  # fmt: skip
    for _ in range(20):
        if wrong.status_code != 202:
            break
        wrong = await complete(api, key, sid, left["uploadId"], done)
    assert wrong.status_code == 409 and wrong.json()["received"] == f"{composite}-2", wrong.text
    ok = await api.post(f"{URL}/{sid}/files/{left['uploadId']}/complete", headers=key,
                        json={"parts": done, "checksum": f"{composite}-2"})  # fmt: skip
    for _ in range(20):
        if ok.status_code != 202:
            break
        ok = await complete(api, key, sid, left["uploadId"], done)
    assert ok.status_code == 200, ok.text
    recorded = ok.json()["checksum"]
    assert recorded["algorithm"] == "SHA256" and recorded["type"] == "COMPOSITE"
    assert recorded["value"].partition("-")[0] == composite  # moto returns it without S3's -2
    assert front.completions[-1].headers.get("x-amz-checksum-type") is None  # composite: the parts carry them


async def test_concurrent_first_calls_naming_different_algorithms_get_one_winner(
    api: Client, key: dict[str, str]
) -> None:
    group = await start(api, key, [
        {"fileName": "l.mov", "fileRole": "video_left", "sizeBytes": 10},
        {"fileName": "r.mov", "fileRole": "video_right", "sizeBytes": 5},
    ])  # fmt: skip
    sid, uid = group["sessionId"], group["files"][0]["uploadId"]
    data = os.urandom(10)
    bodies = [{"checksumAlgorithm": a, "checksums": {"1": checksum_value(a.lower(), data)}}
              for a in ("CRC32", "SHA1") * 4]  # fmt: skip
    answers = await asyncio.gather(*(urls(api, key, sid, uid, b) for b in bodies))
    codes = sorted(a.status_code for a in answers)
    winner = {a.json()["checksumAlgorithm"] for a in answers if a.status_code == 200}
    assert len(winner) == 1 and codes == [200] * 4 + [409] * 4, [a.text for a in answers]
    assert all(a.json()["code"] == "checksum_algorithm_conflict" for a in answers if a.status_code == 409)
    assert (await status(api, key, sid))["files"][0]["checksumAlgorithm"] == winner.pop()


async def test_a_store_without_conditional_completion_is_completed_without_it(
    api: Client, key: dict[str, str], front: SigV4Front, caplog: pytest.LogCaptureFixture
) -> None:
    group = await start(api, key, [
        {"fileName": "l.mov", "fileRole": "video_left", "sizeBytes": 5 * MIB + 1},
        {"fileName": "r.mov", "fileRole": "video_right", "sizeBytes": 5},
    ])  # fmt: skip
    sid, left = group["sessionId"], group["files"][0]
    body = os.urandom(left["totalBytes"])
    answer = await urls(api, key, sid, left["uploadId"], None)
    assert answer.status_code == 200 and "checksumAlgorithm" not in answer.json(), answer.text
    done = []
    async with httpx.AsyncClient(timeout=60) as http:
        for part in answer.json()["parts"]:
            assert set(part["headers"]) == {"Content-Length"}  # no checksum: exactly as before
            sent = await put_part(http, part, body[part["byteStart"] : part["byteEnd"]])
            done.append({"partNumber": part["partNumber"], "etag": sent.headers["etag"]})
    front.refuse_conditional_complete = True
    try:
        finished = await complete(api, key, sid, left["uploadId"], done)
    finally:
        front.refuse_conditional_complete = False
    assert finished.status_code == 200 and "checksum" not in finished.json(), finished.text
    assert [c.headers.get("if-none-match") for c in front.completions] == ["*", None]
    assert [(r.status, r.code) for r in front.refusals] == [(501, "NotImplemented")]
    assert "SPATIALGEN_S3_CONDITIONAL_COMPLETE=false" in caplog.text


async def test_checksums_for_a_store_that_takes_none_are_refused(
    small: Settings, redis: Redis, front: SigV4Front, key: dict[str, str]
) -> None:
    from tests.integration.conftest import api_client

    async with api_client(small.override(s3_checksum_algorithms="")) as client:
        answer = await client.post(URL, headers=key, json={"videoName": "x", "layout": "2D", "files": [
            {"fileName": "v.mov", "fileRole": "video", "sizeBytes": 10, "checksumAlgorithm": "CRC32"}]})  # fmt: skip
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == "checksum_unsupported" and answer.json()["supported"] == []
