"""S3 credentials from botocore's provider chain: temporary ones are refreshed as they age, the presigner and
the S3 clients always use the current ones, and a process without any credentials stops at start.

The chain is fed by a real `credential_process` (a script run by botocore, as AWS's own tooling is), whose
every run hands out a new key expiring when the test says; moto takes any key, so the keys a request really
carried are read from its Authorization header.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from redis.asyncio import Redis

from app.settings import Settings
from app.state.apikeys import create_key
from app.storage.credentials import CredentialSource, NoStorageCredentials
from app.storage.s3 import ObjectStore
from deploy.local.devstack import free_port
from tests.conftest import SEED_REQUEST
from tests.integration.conftest import api_client

URL = "/api/videos/uploads"
# botocore refreshes credentials that expire within 15 minutes (advisory) and blocks callers in the last 10.
ADVISORY_REFRESH_SECONDS = 15 * 60

ISSUER = textwrap.dedent(
    """
    import datetime, json, pathlib, sys
    state = pathlib.Path(sys.argv[1])
    plan = json.loads((state / "plan.json").read_text())
    runs = state / "runs"
    n = len(runs.read_text().split()) + 1 if runs.exists() else 1
    runs.write_text(runs.read_text() + f"{n}\\n" if runs.exists() else "1\\n")
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=plan[min(n, len(plan)) - 1])
    print(json.dumps({"Version": 1, "AccessKeyId": f"ASIATEST{n:04d}", "SecretAccessKey": f"secret-{n}",
                      "SessionToken": f"token-{n}", "Expiration": expires.isoformat()}))
    """
)


@dataclass
class Issuer:
    """A credential_process: run n hands out key ASIATEST000n expiring plan[n-1] seconds later."""

    state: Path

    def plan(self, *lifetimes: float) -> None:
        (self.state / "plan.json").write_text(json.dumps(list(lifetimes)))

    @property
    def runs(self) -> int:
        runs = self.state / "runs"
        return len(runs.read_text().split()) if runs.exists() else 0


def chain_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[Issuer, dict[str, str]]:
    """AWS config whose default profile runs the issuer; every other source of credentials switched off."""
    state = tmp_path / "issuer"
    state.mkdir()
    (state / "issuer.py").write_text(ISSUER)
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\ncredential_process = {sys.executable} {state / 'issuer.py'} {state}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    if monkeypatch is not None:
        for name in os.environ:
            if name.startswith("AWS_"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            if name.startswith("AWS_"):
                monkeypatch.setenv(name, value)
    return Issuer(state), env


@pytest.fixture
def issuer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Issuer]:
    found, _ = chain_env(tmp_path, monkeypatch)
    yield found


@pytest.fixture
def chain_settings(settings: Settings) -> Settings:
    return settings.override(s3_access_key_id="", s3_secret_access_key="")


def credential_of(url: str) -> tuple[str, str]:
    """(access key id, session token) a presigned URL was signed with."""
    query = parse_qs(urlsplit(url).query)
    return query["X-Amz-Credential"][0].split("/")[0], query["X-Amz-Security-Token"][0]


async def test_the_presigner_signs_with_refreshed_credentials(issuer: Issuer, chain_settings: Settings) -> None:
    # Run 1 expires just outside botocore's refresh window: good now, due for a refresh two seconds later.
    issuer.plan(ADVISORY_REFRESH_SECONDS + 2, 3600)
    source = CredentialSource(chain_settings.storage)
    assert source.from_chain
    first = await source.current()
    assert (first.access_key_id, first.session_token) == ("ASIATEST0001", "token-1")
    assert await source.current() is first  # unchanged credentials: no new object, no new process run
    assert issuer.runs == 1
    await asyncio.sleep(2.5)
    second = await source.current()
    assert (second.access_key_id, second.secret_access_key, second.session_token) == (
        "ASIATEST0002", "secret-2", "token-2"
    )  # fmt: skip
    assert issuer.runs == 2


async def test_an_already_lapsed_credential_is_never_used(issuer: Issuer, chain_settings: Settings) -> None:
    issuer.plan(-60, 3600)  # the first answer has lapsed already
    source = CredentialSource(chain_settings.storage)
    assert (await source.current()).access_key_id == "ASIATEST0002"


@pytest.mark.usefixtures("store")  # the bucket, emptied
async def test_part_urls_and_the_storage_client_follow_the_refresh(
    issuer: Issuer, chain_settings: Settings, redis: Redis
) -> None:
    # Each process-wide user of the chain (the API's presigner, the storage client) fetches its own first
    # credentials; both are due for a refresh 3 s later.
    issuer.plan(ADVISORY_REFRESH_SECONDS + 3, ADVISORY_REFRESH_SECONDS + 3, 3600)
    secret, _ = await create_key(redis, account="acme", role="upload")
    key = {"X-SPATIALGEN-APPKEY": secret}
    async with api_client(chain_settings) as api:
        doc = (await api.post(URL, json=SEED_REQUEST, headers=key)).json()
        subtitle = doc["files"][3]  # a single_put file: no storage call needed before signing
        path = f"{URL}/{doc['sessionId']}/files/{subtitle['uploadId']}/part-urls"
        r = await api.post(path, headers=key)
        assert r.status_code == 200, r.text
        assert credential_of(r.json()["parts"][0]["url"]) == ("ASIATEST0001", "token-1")

        # The S3 client resolves through the same chain; what it sends is read off the wire.
        sent: list[str] = []
        async with ObjectStore.connect(chain_settings.storage) as store:
            store.client.meta.events.register(
                "before-send.s3", lambda request, **_: sent.append(request.headers["Authorization"].decode())
            )
            await store.ping()
            await asyncio.sleep(3.5)
            await store.ping()
            r = await api.post(path, headers=key)
    assert r.status_code == 200, r.text
    key_ids = [header.split("Credential=")[1].split("/")[0] for header in sent]
    assert key_ids[0] == "ASIATEST0002" and key_ids[-1] > key_ids[0]
    assert credential_of(r.json()["parts"][0]["url"])[0] > "ASIATEST0001"


@pytest.mark.usefixtures("store")
async def test_urls_never_outlive_the_credentials_that_signed_them(
    issuer: Issuer, chain_settings: Settings, redis: Redis
) -> None:
    lifetime = ADVISORY_REFRESH_SECONDS + 300  # 20 minutes: not due for a refresh yet
    issuer.plan(lifetime, lifetime)
    secret, _ = await create_key(redis, account="acme", role="upload")
    key = {"X-SPATIALGEN-APPKEY": secret}
    assert chain_settings.uploads.part_url_ttl_seconds > lifetime  # the setting alone would promise longer
    async with api_client(chain_settings) as api:
        doc = (await api.post(URL, json=SEED_REQUEST, headers=key)).json()
        asked = time.time()
        path = f"{URL}/{doc['sessionId']}/files/{doc['files'][3]['uploadId']}/part-urls"
        r = await api.post(path, headers=key)
    assert r.status_code == 200, r.text
    part = r.json()["parts"][0]
    expires_at = datetime.fromisoformat(part["expiresAt"]).timestamp()
    assert asked + lifetime - 5 <= expires_at <= asked + lifetime + 1  # the credentials' end, not 24 h
    query = parse_qs(urlsplit(part["url"]).query)
    signed_for = int(query["X-Amz-Expires"][0])
    # The request reads its clock before the chain issues the credentials, so their end (issue + lifetime) can fall
    # in the second after that reading: the URL may be signed for one second more than `lifetime` from it, and still
    # ends with them. What the answer promises is exactly what the signature allows.
    assert lifetime - 5 <= signed_for <= lifetime + 1
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    assert signed_at + signed_for == expires_at


async def test_no_credentials_anywhere_stops_a_storage_client_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chain_settings: Settings
) -> None:
    chain_env(tmp_path, monkeypatch)
    (tmp_path / "aws-config").write_text("[default]\nregion = us-east-1\n")  # a profile without credentials
    with pytest.raises(NoStorageCredentials, match="SPATIALGEN_S3_ACCESS_KEY_ID"):
        async with ObjectStore.connect(chain_settings.storage):
            pass
    with pytest.raises(NoStorageCredentials):
        await CredentialSource(chain_settings.storage).current()


@pytest.mark.parametrize("command", ["spatialgen-api", "spatialgen-worker"])
def test_a_process_without_credentials_exits_at_start(command: str, tmp_path: Path, settings: Settings) -> None:
    _, env = chain_env(tmp_path)
    (tmp_path / "aws-config").write_text("[default]\nregion = us-east-1\n")
    env |= {"SPATIALGEN_REDIS_URL": settings.redis.url, "SPATIALGEN_S3_ENDPOINT_URL": settings.storage.endpoint_url,
            "SPATIALGEN_PORT": str(free_port()), "SPATIALGEN_S3_ACCESS_KEY_ID": "",
            "SPATIALGEN_S3_SECRET_ACCESS_KEY": ""}  # fmt: skip
    exe = Path(sys.executable).with_name(command)
    done = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "no S3 credentials: set SPATIALGEN_S3_ACCESS_KEY_ID and SPATIALGEN_S3_SECRET_ACCESS_KEY, or provide them "
        "through the AWS provider chain (AWS_* variables, a profile, web identity, an instance role)"
    )
