"""The part-urls answer on the wire (issue 18): gzip when Accept-Encoding allows it, the compact form when Accept
names it, identity and the full form otherwise; each decodes to exactly what the plain answer says. The API runs
in-process on a stopped clock, so two calls sign the same URLs; the uploader's own call is checked through the
SigV4-verifying front (the URLs it rebuilds from the compact form store its bytes)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.client.api import ServiceClient
from app.domain.answers import COMPACT_PART_URLS, part_url
from app.domain.clock import ManualClock
from app.domain.parts import part_range
from app.settings import MIB, Settings
from app.state.apikeys import create_key
from app.storage.s3 import ObjectStore
from tests.integration.conftest import api_client
from tests.sigv4_front import SigV4Front, checksum_value

URL = "/api/videos/uploads"


@pytest.fixture
async def key(redis: Redis) -> dict[str, str]:
    secret, _ = await create_key(redis, account="acme", role="upload")
    return {"X-SPATIALGEN-APPKEY": secret}


@pytest.fixture
async def api(settings: Settings, redis: Redis, store: ObjectStore) -> AsyncIterator[httpx.AsyncClient]:
    """The API with 5 MiB parts on a clock that does not move: every call signs at the same second."""
    slow_storage_ok = settings.override(part_size_bytes=5 * MIB, provision_wait_seconds=15.0)  # moto on busy cores
    async with api_client(slow_storage_ok, clock=ManualClock()) as client:
        yield client


async def file_of(api: httpx.AsyncClient, key: dict[str, str], parts: int) -> str:
    """The part-urls path of a new video of `parts` parts (its upload opened by a first call)."""
    body = {"videoName": "v", "layout": "2D",
            "files": [{"fileName": "v.mov", "fileRole": "video", "sizeBytes": parts * 5 * MIB - 7}]}  # fmt: skip
    r = await api.post(URL, json=body, headers=key)
    assert r.status_code == 201, r.text
    path = f"{URL}/{r.json()['sessionId']}/files/{r.json()['files'][0]['uploadId']}/part-urls"
    assert (await api.post(path, json={"count": 1}, headers=key)).status_code == 200
    return path


async def raw_answer(
    api: httpx.AsyncClient, path: str, headers: dict[str, str | None], body: Any = None
) -> tuple[httpx.Response, bytes]:
    """The answer and its body as sent (not decoded); a header given as None is not sent at all."""
    request = api.build_request("POST", path, json=body)
    for name, value in headers.items():
        if value is None:
            del request.headers[name]
        else:
            request.headers[name] = value
    response = await api.send(request, stream=True)
    body = b"".join([chunk async for chunk in response.aiter_raw()])
    await response.aclose()
    assert response.status_code == 200, body[:300]
    return response, body


@pytest.mark.parametrize("parts", [3, 1234])  # one plain answer; an answer streamed piece by piece (> 500 URLs)
async def test_gzip_is_negotiated_and_decodes_to_the_identity_answer(
    api: httpx.AsyncClient, key: dict[str, str], parts: int
) -> None:
    path = await file_of(api, key, parts)
    plain, plain_body = await raw_answer(api, path, {**key, "Accept-Encoding": None})
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept, Accept-Encoding"
    assert plain.headers["content-type"] == "application/json"
    assert len(json.loads(plain_body)["parts"]) == parts
    zipped, zipped_body = await raw_answer(api, path, {**key, "Accept-Encoding": "br;q=1.0, gzip;q=0.8"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept, Accept-Encoding"
    assert gzip.decompress(zipped_body) == plain_body
    assert len(zipped_body) * (5 if parts > 500 else 2) < len(plain_body)
    if parts > 500:
        assert "content-length" not in zipped.headers  # still streamed
    else:
        assert zipped.headers["content-length"] == str(len(zipped_body))


@pytest.mark.parametrize("accept_encoding", ["identity", "gzip;q=0", "*;q=0", "deflate", "*, gzip;q=0"])
async def test_identity_unless_gzip_is_acceptable(
    api: httpx.AsyncClient, key: dict[str, str], accept_encoding: str
) -> None:
    path = await file_of(api, key, 2)
    r, body = await raw_answer(api, path, {**key, "Accept-Encoding": accept_encoding})
    assert "content-encoding" not in r.headers and r.headers["vary"] == "Accept, Accept-Encoding"
    assert len(json.loads(body)["parts"]) == 2


@pytest.mark.parametrize("parts", [3, 1234])
async def test_the_compact_form_gives_back_every_url_and_header_of_the_full_form(
    api: httpx.AsyncClient, key: dict[str, str], parts: int
) -> None:
    path = await file_of(api, key, parts)
    _, full_body = await raw_answer(api, path, {**key, "Accept-Encoding": None})
    full = json.loads(full_body)
    r, body = await raw_answer(api, path, {**key, "Accept": f"{COMPACT_PART_URLS}, application/json;q=0.5",
                                           "Accept-Encoding": "gzip"})  # fmt: skip
    assert r.headers["content-type"] == COMPACT_PART_URLS and r.headers["content-encoding"] == "gzip"
    compact = json.loads(gzip.decompress(body))
    assert list(compact)[-1] == "parts"
    assert {k: v for k, v in compact.items() if k in full and k != "parts"} == {
        k: v for k, v in full.items() if k != "parts"
    }
    assert compact["headers"] == {} and compact["expiresAt"] == full["parts"][0]["expiresAt"]
    rebuilt = []
    for p in compact["parts"]:
        start, end = part_range(p["partNumber"], compact["partSizeBytes"], compact["totalBytes"])
        rebuilt.append({
            "partNumber": p["partNumber"], "sizeBytes": end - start, "byteStart": start, "byteEnd": end,
            "url": part_url(compact["urlTemplate"], p["partNumber"], p["signature"]),
            "expiresAt": compact["expiresAt"], "headers": {"Content-Length": str(end - start), **compact["headers"]},
        })  # fmt: skip
    assert rebuilt == full["parts"]
    assert len(body) * (10 if parts > 500 else 2) < len(full_body)


async def test_a_single_put_in_the_compact_form(api: httpx.AsyncClient, key: dict[str, str]) -> None:
    body = {"videoName": "v", "layout": "2D", "files": [{"fileName": "v.mov", "fileRole": "video", "sizeBytes": 10}]}
    r = await api.post(URL, json=body, headers=key)
    path = f"{URL}/{r.json()['sessionId']}/files/{r.json()['files'][0]['uploadId']}/part-urls"
    _, full = await raw_answer(api, path, {**key, "Accept-Encoding": None})
    [part] = json.loads(full)["parts"]
    _, answer = await raw_answer(api, path, {**key, "Accept": COMPACT_PART_URLS, "Accept-Encoding": None})
    compact = json.loads(answer)
    assert "{partNumber}" not in compact["urlTemplate"]
    assert compact["headers"] == {"If-None-Match": "*", "Content-Type": "video/quicktime"}
    [p] = compact["parts"]
    assert part_url(compact["urlTemplate"], 1, p["signature"]) == part["url"]
    assert {"Content-Length": "10", **compact["headers"]} == part["headers"]


async def test_the_uploader_asks_for_compact_gzip_and_its_urls_store_the_bytes(
    verified_settings: Settings, verified_s3: SigV4Front, redis: Redis, store: ObjectStore, key: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    verified_s3.reset()
    seen: list[httpx.Response] = []

    async def record(response: httpx.Response) -> None:
        seen.append(response)

    data = bytes(range(256)) * (5 * MIB // 256) * 2 + b"tail"
    source = tmp_path / "v.mov"
    source.write_bytes(data)
    settings = verified_settings.override(part_size_bytes=5 * MIB, provision_wait_seconds=15.0)
    async with api_client(settings) as api, ServiceClient("http://testserver", key["X-SPATIALGEN-APPKEY"]) as client:
        client._api = httpx.AsyncClient(base_url="http://testserver", headers=client._api.headers,
                                        transport=api._transport, event_hooks={"response": [record]})  # fmt: skip
        files = [{"fileName": "v.mov", "fileRole": "video", "sizeBytes": len(data)}]
        body: dict[str, Any] = {"videoName": "v", "layout": "2D", "files": files}
        created = await client.start_group(body)
        sid, uid = created.session_id, created.files[0].upload_id
        answer = await client.part_urls(sid, uid)
        [sent] = [r for r in seen if r.url.path.endswith("/part-urls")]
        assert sent.request.headers["accept-encoding"] == "gzip"
        assert sent.request.headers["accept"].startswith(COMPACT_PART_URLS)
        assert sent.headers["content-encoding"] == "gzip" and sent.headers["content-type"] == COMPACT_PART_URLS
        assert [p.part_number for p in answer.parts] == [1, 2, 3]
        etags = []
        for p in answer.parts:
            assert p.headers == {"Content-Length": str(p.size_bytes)}
            etags.append((p.part_number, await client.put_part(p.url, source, p.byte_start, p.size_bytes,
                                                               headers=p.headers)))  # fmt: skip
        assert verified_s3.refusals == []
        assert (await client.complete_file(sid, uid, etags, follow=False)).status in ("completing", "completed")


def fake_sums(numbers: range) -> dict[str, str]:
    """A CRC64NVME-shaped value per part (8 bytes, base64), distinct per part: what part-urls signs (no PUT here)."""
    return {str(n): base64.b64encode(hashlib.sha256(str(n).encode()).digest()[:8]).decode() for n in numbers}


@pytest.mark.parametrize("parts", [3, 1234])  # signed at once; signed piece by piece, each piece its checksums
async def test_the_compact_form_with_checksums_gives_back_the_full_form(
    api: httpx.AsyncClient, key: dict[str, str], parts: int
) -> None:
    body = {"videoName": "v", "layout": "2D", "files": [
        {"fileName": "v.mov", "fileRole": "video", "sizeBytes": parts * 5 * MIB - 7, "checksumAlgorithm": "CRC64NVME"},
    ]}  # fmt: skip
    r = await api.post(URL, json=body, headers=key)
    assert r.status_code == 201, r.text
    path = f"{URL}/{r.json()['sessionId']}/files/{r.json()['files'][0]['uploadId']}/part-urls"
    sums = fake_sums(range(1, parts + 1))
    _, full_body = await raw_answer(api, path, {**key, "Accept-Encoding": None}, {"checksums": sums})
    full = json.loads(full_body)
    r, raw = await raw_answer(api, path, {**key, "Accept": COMPACT_PART_URLS, "Accept-Encoding": "gzip"},
                              {"checksums": sums})  # fmt: skip
    compact = json.loads(gzip.decompress(raw))
    assert r.headers["content-type"] == COMPACT_PART_URLS
    assert "X-Amz-SignedHeaders=content-length%3Bhost%3Bx-amz-checksum-crc64nvme&" in compact["urlTemplate"]
    assert compact["headers"] == {} and compact["checksumAlgorithm"] == full["checksumAlgorithm"] == "CRC64NVME"
    assert [p["headers"] for p in compact["parts"]] == [
        {"x-amz-checksum-crc64nvme": sums[str(n)]} for n in range(1, parts + 1)
    ]
    rebuilt = []
    for p in compact["parts"]:
        start, end = part_range(p["partNumber"], compact["partSizeBytes"], compact["totalBytes"])
        rebuilt.append({
            "partNumber": p["partNumber"], "sizeBytes": end - start, "byteStart": start, "byteEnd": end,
            "url": part_url(compact["urlTemplate"], p["partNumber"], p["signature"]),
            "expiresAt": compact["expiresAt"],
            "headers": {"Content-Length": str(end - start), **compact["headers"], **p["headers"]},
        })  # fmt: skip
    assert rebuilt == full["parts"]


async def test_the_uploader_sends_checksummed_files_through_the_compact_gzip_form(
    verified_settings: Settings, verified_s3: SigV4Front, redis: Redis, store: ObjectStore, key: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """A CRC64NVME multipart video and single-PUT subtitle: each part's signed checksum header comes back from the
    compact parts' own `headers`, and the verifying front (which refuses a PUT without the header its URL signs, or
    with another body's checksum) stores every part."""
    verified_s3.reset()
    seen: list[httpx.Response] = []

    async def record(response: httpx.Response) -> None:
        seen.append(response)

    video, subs = bytes(range(256)) * (5 * MIB // 256) * 2 + b"tail", b"1\n00:00:01,000 --> 00:00:02,000\nHi\n"
    (tmp_path / "v.mov").write_bytes(video)
    (tmp_path / "s.srt").write_bytes(subs)
    settings = verified_settings.override(part_size_bytes=5 * MIB, provision_wait_seconds=15.0)
    async with api_client(settings) as api, ServiceClient("http://testserver", key["X-SPATIALGEN-APPKEY"]) as client:
        client._api = httpx.AsyncClient(base_url="http://testserver", headers=client._api.headers,
                                        transport=api._transport, event_hooks={"response": [record]})  # fmt: skip
        files = [
            {"fileName": "v.mov", "fileRole": "video", "sizeBytes": len(video), "checksumAlgorithm": "CRC64NVME"},
            {"fileName": "s.srt", "fileRole": "subtitle", "sizeBytes": len(subs), "languageTag": "en",
             "checksumAlgorithm": "CRC64NVME"},
        ]  # fmt: skip
        created = await client.start_group({"videoName": "v", "layout": "2D", "files": files})
        sid = created.session_id
        for f, data, name in zip(created.files, (video, subs), ("v.mov", "s.srt"), strict=True):
            size = f.part_size_bytes
            sums = {
                n: checksum_value("crc64nvme", data[(n - 1) * size : n * size]) for n in range(1, f.total_parts + 1)
            }
            answer = await client.part_urls(sid, f.upload_id, checksums=sums)
            sent = [r for r in seen if r.url.path.endswith(f"/{f.upload_id}/part-urls")][-1]
            assert sent.headers["content-encoding"] == "gzip" and sent.headers["content-type"] == COMPACT_PART_URLS
            compact = json.loads(sent.content)  # httpx undid the gzip
            assert [p["headers"] for p in compact["parts"]] == [{"x-amz-checksum-crc64nvme": v} for v in sums.values()]
            etags = []
            for p in answer.parts:
                assert p.headers["x-amz-checksum-crc64nvme"] == sums[p.part_number]
                etag = await client.put_part(p.url, tmp_path / name, p.byte_start, p.size_bytes, headers=p.headers)
                etags.append((p.part_number, etag))
            assert len(etags) == (3 if name == "v.mov" else 1)
            multipart = f.total_parts > 1
            done = await client.complete_file(sid, f.upload_id, etags if multipart else None,
                                              part_checksums=sums if multipart else None, follow=False)  # fmt: skip
            assert done.status in ("completing", "completed")
        puts = [e for e in verified_s3.exchanges if e.method == "PUT" and e.auth == "presigned"]
        assert len(puts) == 4 and all(e.status == 200 for e in puts)
        assert verified_s3.refusals == [] and verified_s3.unverified_checksums == []


async def test_the_openapi_document_describes_both_forms(api: httpx.AsyncClient, key: dict[str, str]) -> None:
    doc = (await api.get("/schema/openapi.json")).json()
    ok = doc["paths"][URL + "/{session_id}/files/{upload_id}/part-urls"]["post"]["responses"]["200"]
    assert set(ok["content"]) == {"application/json", COMPACT_PART_URLS}
    assert {"Content-Encoding", "Vary"} <= set(ok["headers"])
    schema = ok["content"][COMPACT_PART_URLS]["schema"]
    example = ok["content"][COMPACT_PART_URLS]["examples"]["part-urls-compact"]["value"]
    path = await file_of(api, key, 2)
    _, body = await raw_answer(api, path, {**key, "Accept": COMPACT_PART_URLS, "Accept-Encoding": None})
    real = json.loads(body)
    # checksumAlgorithm: only for a file that has one (SPEC 3.8)
    assert list(example) == list(real) == [p for p in schema["properties"] if p != "checksumAlgorithm"]
    assert "checksumAlgorithm" in schema["properties"]
    assert list(example["parts"][0]) == list(real["parts"][0])
