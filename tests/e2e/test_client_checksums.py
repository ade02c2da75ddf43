"""The uploader's checksums end to end: the real `spatialgen-upload` command against the API and worker processes,
with storage reached through the SigV4-verifying front (tests/sigv4_front.py), which refuses a presigned PUT whose
signed `x-amz-checksum-*` header is missing or differs from its body, as S3 does.

The stack's store verifies CRC64NVME, CRC32C and SHA256 only (SPATIALGEN_S3_CHECKSUM_ALGORITHMS), so a fourth
algorithm is refused by the service.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from awscrt import checksums as crt
from redis.asyncio import Redis

from app.client import ChecksumUnsupported, LocalFile, UploadClient, UploadSpec
from app.client.api import ServiceClient
from app.client.state import FileState, SessionState, load_state, save_state
from app.settings import MIB, Settings
from deploy.local.devstack import free_port, stop
from tests.e2e.conftest import start_service
from tests.e2e.test_client import UPLOAD_EXE, events_of
from tests.sigv4_front import SigV4Front

ALGORITHMS = "CRC64NVME,CRC32C,SHA256"


@dataclass
class Stack:
    api_url: str
    env: dict[str, str]


@pytest.fixture(scope="module")
async def stack(settings: Settings, verified_s3: SigV4Front) -> AsyncIterator[Stack]:
    """API and worker whose presigned URLs, and own S3 calls, go through the verifying front."""
    port = free_port()
    env = {
        **os.environ,
        "SPATIALGEN_PORT": str(port),
        "SPATIALGEN_REDIS_URL": settings.redis.url,
        "SPATIALGEN_S3_ENDPOINT_URL": verified_s3.url,
        "SPATIALGEN_S3_BUCKET": settings.storage.bucket,
        "SPATIALGEN_S3_ACCESS_KEY_ID": settings.storage.access_key_id,
        "SPATIALGEN_S3_SECRET_ACCESS_KEY": settings.storage.secret_access_key,
        "SPATIALGEN_S3_CHECKSUM_ALGORITHMS": ALGORITHMS,
        "SPATIALGEN_PART_SIZE_BYTES": str(5 * MIB),
        "SPATIALGEN_KEY_CACHE_SECONDS": "1",
        "SPATIALGEN_PARTS_STALENESS_SECONDS": "0.01",
    }
    for name in ("SPATIALGEN_API_URL", "SPATIALGEN_API_KEY", "SPATIALGEN_DATA_DIR"):
        env.pop(name, None)
    Settings.from_env(env)
    procs = await asyncio.to_thread(start_service, env, port)
    try:
        yield Stack(f"http://127.0.0.1:{port}", env)
    finally:
        await asyncio.to_thread(stop, procs)


@pytest.fixture
def front(verified_s3: SigV4Front) -> SigV4Front:
    verified_s3.reset()
    return verified_s3


async def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        UPLOAD_EXE, *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def crc64(data: bytes) -> str:
    return base64.b64encode(crt.crc64nvme(data).to_bytes(8, "big")).decode()


def presigned_puts(front: SigV4Front) -> list[Any]:
    return [e for e in front.exchanges if e.method == "PUT" and e.auth == "presigned"]


async def test_send_checksums_every_part_and_verifies_each_completed_file(
    stack: Stack, front: SigV4Front, redis: Redis, store: Any, upload_key: str, tmp_path: Path
) -> None:
    movie, subs = os.urandom(12 * MIB + 5), os.urandom(2401)
    (tmp_path / "movie.mov").write_bytes(movie)
    (tmp_path / "subs.srt").write_bytes(subs)
    env = stack.env | {"SPATIALGEN_API_KEY": upload_key}
    rc, out, err = await run_cli("send", "--layout", "2D", "--name", "Checked", "--video", "movie.mov",
                                 "--subtitle", "en=subs.srt", "--api-url", stack.api_url, "--json", "--keep-state",
                                 cwd=tmp_path, env=env)  # fmt: skip
    assert rc == 0, err
    done = {e["fileName"]: e["checksum"] for e in events_of(out) if e["event"] == "file_completed"}
    # The whole file's CRC64NVME, combined from its 3 parts' by the client, checked by storage, recorded, compared.
    assert done == {
        "movie.mov": {"algorithm": "CRC64NVME", "type": "FULL_OBJECT", "value": crc64(movie), "verified": True},
        "subs.srt": {"algorithm": "CRC64NVME", "type": "FULL_OBJECT", "value": crc64(subs), "verified": True},
    }
    # Every PUT carried the checksum header its URL signs (without it the front answers SignatureDoesNotMatch) and
    # the front computed the same CRC64NVME from the body (else BadDigest).
    puts = presigned_puts(front)
    assert len(puts) == 4 and all(e.status == 200 for e in puts)
    assert front.refusals == [] and front.unverified_checksums == []
    [state_file] = (tmp_path / ".spatialgen-upload").glob("*.json")
    movie_state = next(f for f in load_state(state_file).files if f.file_name == "movie.mov")
    assert movie_state.checksum_algorithm == "CRC64NVME" and sorted(movie_state.part_checksums) == [1, 2, 3]
    assert movie_state.part_checksums[2] == crc64(movie[5 * MIB : 10 * MIB])

    # Plain output names the checksum too.
    rc, out, err = await run_cli("status", load_state(state_file).session_id, "--api-url", stack.api_url,
                                 cwd=tmp_path, env=env)  # fmt: skip
    assert rc == 0 and f"CRC64NVME {crc64(movie)}" in out, out + err


async def test_sha256_gives_s3s_composite_checksum(
    stack: Stack, front: SigV4Front, redis: Redis, store: Any, upload_key: str, tmp_path: Path
) -> None:
    movie = os.urandom(11 * MIB)
    (tmp_path / "movie.mov").write_bytes(movie)
    rc, out, err = await run_cli("send", "--layout", "2D", "--name", "Composite", "--video", "movie.mov",
                                 "--checksum", "SHA256", "--api-url", stack.api_url, "--json",
                                 cwd=tmp_path, env=stack.env | {"SPATIALGEN_API_KEY": upload_key})  # fmt: skip
    assert rc == 0, err
    [done] = [e["checksum"] for e in events_of(out) if e["event"] == "file_completed"]
    parts = [movie[i : i + 5 * MIB] for i in range(0, len(movie), 5 * MIB)]
    outer = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    assert (done["algorithm"], done["type"], done["verified"]) == ("SHA256", "COMPOSITE", True)
    assert done["value"].split("-")[0] == base64.b64encode(outer).decode()
    assert front.refusals == []


async def test_an_algorithm_the_store_does_not_verify_is_refused_with_what_to_pass(
    stack: Stack, front: SigV4Front, redis: Redis, store: Any, upload_key: str, tmp_path: Path
) -> None:
    (tmp_path / "movie.mov").write_bytes(os.urandom(1000))
    # CRC32 is not one --checksum offers, so the library is used (the command refuses it before any request).
    spec = UploadSpec("Refused", "2D", (LocalFile(tmp_path / "movie.mov", "video"),), checksum="CRC32")
    async with UploadClient(stack.api_url, upload_key) as client:
        with pytest.raises(ChecksumUnsupported) as caught:
            await client.upload_group(spec)
    assert caught.value.supported == ALGORITHMS.split(",")
    assert "does not verify CRC32 checksums (it verifies CRC64NVME, CRC32C, SHA256): pass --checksum " in str(
        caught.value
    )
    assert "--checksum CRC64NVME, or --checksum none" in str(caught.value)
    assert presigned_puts(front) == []


async def test_none_sends_no_checksum(
    stack: Stack, front: SigV4Front, redis: Redis, store: Any, upload_key: str, tmp_path: Path
) -> None:
    (tmp_path / "movie.mov").write_bytes(os.urandom(6 * MIB))
    rc, out, err = await run_cli("send", "--layout", "2D", "--name", "Unchecked", "--video", "movie.mov",
                                 "--checksum", "none", "--api-url", stack.api_url, "--json",
                                 cwd=tmp_path, env=stack.env | {"SPATIALGEN_API_KEY": upload_key})  # fmt: skip
    assert rc == 0, err
    [done] = [e for e in events_of(out) if e["event"] == "file_completed"]
    assert "checksum" not in done or done["checksum"] is None
    assert len(presigned_puts(front)) == 2 and front.refusals == []


async def test_a_resume_reads_once_the_parts_stored_before_their_checksums_were_kept(
    stack: Stack, front: SigV4Front, redis: Redis, store: Any, upload_key: str, tmp_path: Path
) -> None:
    """Parts 1 and 2 stored by another run whose state is lost: a resume naming the file sends part 3 only, and
    completes with the whole file's CRC, combined from the two parts read locally and the one sent."""
    movie = os.urandom(12 * MIB)
    path = tmp_path / "movie.mov"
    path.write_bytes(movie)
    body = {"videoName": "Half sent", "layout": "2D",
            "files": [{"fileName": "movie.mov", "fileRole": "video", "sizeBytes": len(movie),
                       "checksumAlgorithm": "CRC64NVME"}]}  # fmt: skip
    async with ServiceClient(stack.api_url, upload_key) as api:
        created = await api.start_group(body)
        [view] = created.files
        assert view.checksum_algorithm == "CRC64NVME"
        sums = {n: crc64(movie[(n - 1) * 5 * MIB : n * 5 * MIB]) for n in (1, 2)}
        urls = await api.part_urls(created.session_id, view.upload_id, checksums=sums)
        for p in urls.parts:
            await api.put_part(p.url, path, p.byte_start, p.size_bytes, headers=p.headers)
    front.reset()

    env = stack.env | {"SPATIALGEN_API_KEY": upload_key}
    rc, out, err = await run_cli("resume", created.session_id, "--video", "movie.mov", "--api-url", stack.api_url,
                                 "--json", cwd=tmp_path, env=env)  # fmt: skip
    assert rc == 0, err
    events = events_of(out)
    assert [e["partNumber"] for e in events if e["event"] == "part_done"] == [3]
    [done] = [e["checksum"] for e in events if e["event"] == "file_completed"]
    assert done == {"algorithm": "CRC64NVME", "type": "FULL_OBJECT", "value": crc64(movie), "verified": True}
    assert len(presigned_puts(front)) == 1 and front.refusals == []


async def test_a_part_whose_kept_checksum_storage_refuses_at_completion_is_sent_again(
    stack: Stack, front: SigV4Front, redis: Redis, store: Any, upload_key: str, tmp_path: Path
) -> None:
    """The state file keeps a wrong checksum for part 2, which storage holds: complete answers 409 checksum_mismatch
    naming part 2, and the uploader computes it again from the file, sends the part again and completes."""
    movie = os.urandom(12 * MIB)
    path = tmp_path / "movie.mov"
    path.write_bytes(movie)
    body = {"videoName": "Wrong kept checksum", "layout": "2D",
            "files": [{"fileName": "movie.mov", "fileRole": "video", "sizeBytes": len(movie),
                       "checksumAlgorithm": "CRC64NVME"}]}  # fmt: skip
    right = {n: crc64(movie[(n - 1) * 5 * MIB : n * 5 * MIB]) for n in (1, 2, 3)}
    async with ServiceClient(stack.api_url, upload_key) as api:
        created = await api.start_group(body)
        [view] = created.files
        urls = await api.part_urls(created.session_id, view.upload_id, checksums={1: right[1], 2: right[2]})
        for p in urls.parts:
            await api.put_part(p.url, path, p.byte_start, p.size_bytes, headers=p.headers)
    state = SessionState(api_url=stack.api_url, session_id=created.session_id, video_name="Wrong kept checksum",
                         files=[FileState(upload_id=view.upload_id, path=str(path), file_name="movie.mov",
                                          file_role="video", size_bytes=len(movie), part_size_bytes=5 * MIB,
                                          total_parts=3, upload_strategy="multipart", mtime_ns=path.stat().st_mtime_ns,
                                          checksum_algorithm="CRC64NVME",
                                          part_checksums={1: right[1], 2: crc64(b"not part 2")})])  # fmt: skip
    state_file = tmp_path / "state.json"
    save_state(state, state_file)
    front.reset()

    rc, out, err = await run_cli("resume", created.session_id, "--state", str(state_file), "--api-url",
                                 stack.api_url, "--json", "--keep-state", cwd=tmp_path,
                                 env=stack.env | {"SPATIALGEN_API_KEY": upload_key})  # fmt: skip
    assert rc == 0, err
    events = events_of(out)
    retries = [e for e in events if e["event"] == "retry"]
    assert [(e["call"], e["reason"]) for e in retries] == [("complete", "409 checksum_mismatch")]
    assert [e["partNumber"] for e in events if e["event"] == "part_done"] == [3, 2]
    [done] = [e["checksum"] for e in events if e["event"] == "file_completed"]
    assert done == {"algorithm": "CRC64NVME", "type": "FULL_OBJECT", "value": crc64(movie), "verified": True}
    assert [r.code for r in front.refusals] == ["InvalidPart"]  # the first completion, naming part 2
    assert load_state(state_file).files[0].part_checksums == right
