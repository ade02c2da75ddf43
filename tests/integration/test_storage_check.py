"""`spatialgen-admin storage check` and `storage apply` against the real moto server, directly and through the
SigV4-verifying front (which, unlike moto, refuses a wrong `x-amz-checksum-*` on a presigned PUT, as S3 does).

moto 5.2.5 keeps CORS and lifecycle configurations, honours `If-None-Match: *` on PutObject and on
CompleteMultipartUpload (412) and sends a Date header; it stores an object whatever checksum header comes with it,
so the check must say that moto verifies no algorithm.
"""

from __future__ import annotations

import json
import os
import pty
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import msgspec
import pytest

from app.admin.cli import run
from app.settings import CHECKSUM_ALGORITHMS, Settings
from deploy.local.devstack import BIN, free_port, stop, wait_for_port
from tests.integration.test_credentials import chain_env

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "spatialgen-admin"
ORIGIN = "https://app.example.com"
OTHER_LIFECYCLE_RULE = {"ID": "expire-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
                        "Expiration": {"Days": 30}}  # fmt: skip
OTHER_CORS_RULE = {"ID": "public-reads", "AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}


def storage_env(settings: Settings) -> dict[str, str]:
    """The SPATIALGEN_* variables that point the CLI at these settings' Redis and storage."""
    s3 = settings.storage
    return {"SPATIALGEN_REDIS_URL": settings.redis.url, "SPATIALGEN_S3_ENDPOINT_URL": s3.endpoint_url,
            "SPATIALGEN_S3_BUCKET": s3.bucket, "SPATIALGEN_S3_ACCESS_KEY_ID": s3.access_key_id,
            "SPATIALGEN_S3_SECRET_ACCESS_KEY": s3.secret_access_key,
            "SPATIALGEN_S3_CHECKSUM_ALGORITHMS": s3.checksum_algorithms}  # fmt: skip


@pytest.fixture
def fresh(settings: Settings, s3: Any) -> Settings:
    """The session's settings on a bucket of their own, just created (no CORS, no lifecycle)."""
    name = f"check-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    return settings.override(s3_bucket=name)


async def admin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, settings: Settings,
                *argv: str) -> tuple[int, str, str]:  # fmt: skip
    for name, value in storage_env(settings).items():
        monkeypatch.setenv(name, value)
    code = await run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in report["items"]}


def probes_left(s3: Any, bucket: str) -> list[str]:
    prefix = "uploads/_spatialgen/"
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])]
    return objects + uploads


async def test_fresh_bucket_lacks_cors_and_lifecycle_and_moto_verifies_no_checksum(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, fresh: Settings, s3: Any
) -> None:
    code, out, err = await admin(capsys, monkeypatch, fresh, "storage", "check", "--json")
    assert code == 1, err
    assert out.count("\n") == 1  # one JSON document
    report = json.loads(out)
    assert set(report) == {"endpoint", "bucket", "prefix", "ok", "items", "checksums"}
    assert (report["bucket"], report["prefix"], report["ok"]) == (fresh.storage.bucket, "uploads/", False)
    assert all(set(item) == {"name", "status", "reason", "action"} for item in report["items"])
    items = by_name(report)
    assert {n: i["status"] for n, i in items.items()} == {
        "bucket": "ok", "clock": "ok", "credentials": "ok", "cors": "warn", "lifecycle": "warn",
        "checksums": "fail", "conditional-put": "ok", "conditional-complete": "ok",
    }  # fmt: skip
    assert "no CORS configuration" in items["cors"]["reason"]
    assert items["cors"]["action"].startswith("spatialgen-admin storage apply --origins")
    assert "AbortIncompleteMultipartUpload" not in items["lifecycle"]["reason"]
    assert items["lifecycle"]["action"] == "spatialgen-admin storage apply"
    # moto stores a wrong checksum: nothing is verified, and the check says so rather than passing.
    checksums = report["checksums"]
    assert checksums["verified"] == [] and checksums["recommended"] == ""
    assert checksums["enabled"] == list(CHECKSUM_ALGORITHMS)
    assert {p["algorithm"]: p["verdict"] for p in checksums["probes"]} == dict.fromkeys(CHECKSUM_ALGORITHMS,
                                                                                           "unverified")  # fmt: skip
    assert items["checksums"]["action"] == "set SPATIALGEN_S3_CHECKSUM_ALGORITHMS= (empty: none)"
    assert "412" in items["conditional-put"]["reason"] and "honoured" in items["conditional-complete"]["reason"]
    assert probes_left(s3, fresh.storage.bucket) == []

    # With checksums off, what moto does is enough: only warnings, exit 0.
    off = fresh.override(s3_checksum_algorithms="")
    code, out, _ = await admin(capsys, monkeypatch, off, "storage", "check")
    assert code == 0
    lines = out.splitlines()
    assert (
        lines[0] == f"storage check: bucket {fresh.storage.bucket!r} at {fresh.storage.endpoint_url}, prefix 'uploads/'"
    )
    assert lines[-1] == "result: 6 ok, 2 warn, 0 fail"
    assert any(line.startswith("ok    checksums ") for line in lines)


async def test_apply_then_check_is_all_ok_and_keeps_other_rules(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, fresh: Settings, verified_settings: Settings, s3: Any
) -> None:
    """Through the verifying front every algorithm is verified, so a bucket set up by apply passes every check."""
    bucket = fresh.storage.bucket
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [OTHER_LIFECYCLE_RULE]})
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [OTHER_CORS_RULE]})
    target = verified_settings.override(s3_bucket=bucket)

    # Not a terminal and no --yes: the change is shown, nothing is written.
    code, out, _ = await admin(capsys, monkeypatch, target, "storage", "apply", "--origins", ORIGIN)
    assert code == 0
    assert "dry run: nothing changed" in out and '+    "ID": "abort-stale-multipart-uploads",' in out
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == [OTHER_LIFECYCLE_RULE]

    code, out, err = await admin(capsys, monkeypatch, target, "storage", "apply", "--origins", ORIGIN, "--yes",
                                 "--json")  # fmt: skip
    assert code == 0, (out, err)
    done = json.loads(out)
    assert done["applied"] is True and done["check"]["ok"] is True
    assert {i["name"]: i["status"] for i in done["check"]["items"]} == dict.fromkeys(
        ["bucket", "clock", "credentials", "cors", "lifecycle", "checksums", "conditional-put",
         "conditional-complete"], "ok")  # fmt: skip
    assert done["check"]["checksums"]["recommended"] == ",".join(CHECKSUM_ALGORITHMS)
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rules[0] == OTHER_LIFECYCLE_RULE and len(rules) == 2
    assert rules[1]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    cors = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert [r["ID"] for r in cors] == ["spatialgen-browser-uploads", "public-reads"]
    assert cors[0]["AllowedOrigins"] == [ORIGIN] and "ETag" in cors[0]["ExposeHeaders"]

    # Applying again changes nothing; the check passes for the origin, and not for one the rule does not name.
    code, out, _ = await admin(capsys, monkeypatch, target, "storage", "apply")
    assert code == 0 and out.startswith("nothing to change")
    code, out, _ = await admin(capsys, monkeypatch, target, "storage", "check", "--origins", ORIGIN)
    assert code == 0 and out.splitlines()[-1] == "result: 8 ok, 0 warn, 0 fail"
    code, out, _ = await admin(capsys, monkeypatch, target, "storage", "check", "--origins", "https://evil.example")
    assert code == 1 and "no rule allows PUT from https://evil.example" in out
    assert probes_left(s3, bucket) == []


def test_apply_asks_at_a_terminal(fresh: Settings, s3: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPATIALGEN_")} | storage_env(fresh)
    for answer, applied in ((b"n\n", False), (b"y\n", True)):
        terminal, stdin = pty.openpty()
        proc = subprocess.Popen([str(SCRIPT), "storage", "apply", "--origins", ORIGIN], stdin=stdin, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        os.close(stdin)
        os.write(terminal, answer)
        out, err = proc.communicate(timeout=60)
        os.close(terminal)
        assert "apply these changes? [y/N] " in out, (out, err)
        if applied:
            assert s3.get_bucket_cors(Bucket=fresh.storage.bucket)["CORSRules"][0]["AllowedOrigins"] == [ORIGIN]
            assert out.splitlines()[-1].startswith("result: ")  # and the check ran
        else:
            assert proc.returncode == 0 and out.endswith("[y/N] nothing changed\n")
            with pytest.raises(s3.exceptions.ClientError, match="NoSuchCORSConfiguration"):
                s3.get_bucket_cors(Bucket=fresh.storage.bucket)


async def test_a_lifecycle_rule_shorter_than_a_group_fails(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, fresh: Settings, s3: Any
) -> None:
    short = {"ID": "too-soon", "Status": "Enabled", "Filter": {"Prefix": ""},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}}  # fmt: skip
    s3.put_bucket_lifecycle_configuration(Bucket=fresh.storage.bucket, LifecycleConfiguration={"Rules": [short]})
    code, out, _ = await admin(capsys, monkeypatch, fresh, "storage", "check", "--json")
    item = by_name(json.loads(out))["lifecycle"]
    assert code == 1 and item["status"] == "fail" and "'too-soon' (2 days)" in item["reason"]


async def test_temporary_credentials_shorter_than_the_urls_warn(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, fresh: Settings, tmp_path: Path
) -> None:
    issuer, _ = chain_env(tmp_path, monkeypatch)
    issuer.plan(3600)  # an hour, as an EKS web identity role gives by default; URLs live a day
    chain = fresh.override(s3_access_key_id="", s3_secret_access_key="", s3_checksum_algorithms="")
    code, out, _ = await admin(capsys, monkeypatch, chain, "storage", "check", "--json")
    item = by_name(json.loads(out))["credentials"]
    assert code == 0 and item["status"] == "warn", item
    assert item["reason"].startswith("the provider chain (custom-process): they expire in 60 min")
    assert "SPATIALGEN_PART_URL_TTL_SECONDS=86400" in item["reason"]


class AuthenticatingS3(msgspec.Struct, frozen=True):
    """A moto server checking access keys and IAM policies, with a bucket and a user holding the service's policy."""

    url: str
    bucket: str
    service_key: tuple[str, str]
    list_only_key: tuple[str, str]


@pytest.fixture(scope="module")
def authenticating_s3() -> Iterator[AuthenticatingS3]:
    """moto with INITIAL_NO_AUTH_ACTION_COUNT=7: the seven set-up calls below go unchecked, every later one is checked
    against the IAM users' policies (the service's, deploy/aws/s3-policy.json, and its bucket statement only); moto
    knows none of the tests' usual keys."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "7"}
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port, proc)
        url, bucket = f"http://127.0.0.1:{port}", "spatialgen-test"
        anyone = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "setup",
                  "aws_secret_access_key": "setup"}  # fmt: skip
        boto3.client("s3", **anyone).create_bucket(Bucket=bucket)
        iam = boto3.client("iam", **anyone)
        policy = json.loads((ROOT / "deploy" / "aws" / "s3-policy.json").read_text())
        policy = json.loads(json.dumps(policy).replace("example-spatialgen-uploads", bucket))
        policy["Statement"][0]["Action"].append("s3:HeadBucket")  # moto's name for HeadBucket (AWS: s3:ListBucket)
        keys = []
        for user, statements in (("spatialgen", policy["Statement"]), ("lister", policy["Statement"][:1])):
            iam.create_user(UserName=user)
            document = json.dumps({**policy, "Statement": statements})
            iam.put_user_policy(UserName=user, PolicyName="storage", PolicyDocument=document)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys.append((key["AccessKeyId"], key["SecretAccessKey"]))
        yield AuthenticatingS3(url, bucket, keys[0], keys[1])
    finally:
        stop([proc])


async def test_with_the_services_own_policy_only_the_bucket_rules_cannot_be_read(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, settings: Settings, authenticating_s3: AuthenticatingS3
) -> None:
    """Run where the API runs, with its least-privilege policy: CORS and lifecycle warn that they cannot be read,
    the probes pass (moto does not serve presigned requests when it checks keys: the checksum probes say so)."""
    auth = authenticating_s3
    pod = settings.override(s3_endpoint_url=auth.url, s3_access_key_id=auth.service_key[0],
                            s3_secret_access_key=auth.service_key[1], s3_checksum_algorithms="")  # fmt: skip
    code, out, err = await admin(capsys, monkeypatch, pod, "storage", "check", "--json")
    report = json.loads(out)
    assert code == 0, (out, err)
    items = by_name(report)
    assert {n: i["status"] for n, i in items.items()} == {
        "bucket": "ok", "clock": "ok", "credentials": "ok", "cors": "warn", "lifecycle": "warn", "checksums": "ok",
        "conditional-put": "ok", "conditional-complete": "ok",
    }  # fmt: skip
    assert "these credentials lack s3:GetBucketCORS" in items["cors"]["reason"]
    assert "these credentials lack s3:GetLifecycleConfiguration" in items["lifecycle"]["reason"]
    assert {p["verdict"] for p in report["checksums"]["probes"]} == {"error"}
    # apply needs more than the service's policy: it says so and changes nothing.
    code, out, err = await admin(capsys, monkeypatch, pod, "storage", "apply", "--yes", "--origins", ORIGIN)
    assert (code, out) == (1, "") and err.startswith("error: cannot read the bucket's cors configuration: these "
                                                     "credentials lack s3:GetBucketCORS")  # fmt: skip

    # Credentials that may list but not write: the probes fail, saying why.
    lister = pod.override(s3_access_key_id=auth.list_only_key[0], s3_secret_access_key=auth.list_only_key[1])
    code, out, err = await admin(capsys, monkeypatch, lister, "storage", "check", "--json")
    items = by_name(json.loads(out))
    assert code == 1 and items["bucket"]["status"] == "ok", (out, err)
    assert items["probes"]["status"] == "fail" and "not allowed to do this" in items["probes"]["reason"]
    assert items["probes"]["action"].startswith("the probes write, list and delete under uploads/_spatialgen/probe/")


@pytest.mark.parametrize("command", ["check", "identity"])
async def test_wrong_missing_credentials_and_unreachable_storage_are_one_sentence(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, settings: Settings, authenticating_s3: AuthenticatingS3,
    tmp_path: Path,
    command: str,
) -> None:  # fmt: skip
    """What is wrong and which setting to check, no traceback (check: exit 1; the other storage commands: 2)."""
    failed = 1 if command == "check" else 2
    code, out, err = await admin(capsys, monkeypatch, settings.override(s3_endpoint_url=authenticating_s3.url),
                                 "storage", command)  # fmt: skip
    assert code == failed, out + err
    assert (
        "storage does not know the access key id: check SPATIALGEN_S3_ACCESS_KEY_ID (InvalidAccessKeyId)" in out + err
    )

    dead = f"http://127.0.0.1:{free_port()}"
    code, out, err = await admin(capsys, monkeypatch, settings.override(s3_endpoint_url=dead), "storage", command)
    assert code == failed, out + err
    assert f"cannot reach bucket 'spatialgen-test' at {dead}" in out + err and "SPATIALGEN_S3_ENDPOINT_URL" in out + err

    nowhere = str(tmp_path / "none")  # a provider chain with no source of credentials at all
    for name, value in {"AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere,
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in [n for n in os.environ if n.startswith("AWS_") and n not in ("AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_DISABLED")]:  # fmt: skip
        monkeypatch.delenv(name)
    keyless = settings.override(s3_access_key_id="", s3_secret_access_key="")
    code, out, err = await admin(capsys, monkeypatch, keyless, "storage", command)
    assert code == failed, out + err
    assert "no S3 credentials: set SPATIALGEN_S3_ACCESS_KEY_ID and SPATIALGEN_S3_SECRET_ACCESS_KEY" in out + err


def test_the_console_script_says_it_without_a_traceback(
    settings: Settings, authenticating_s3: AuthenticatingS3
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPATIALGEN_")}
    env |= storage_env(settings) | {"SPATIALGEN_S3_ENDPOINT_URL": authenticating_s3.url}
    proc = subprocess.run([str(SCRIPT), "storage", "check"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines()[1:] == [
        "fail  bucket  bucket 'spatialgen-test' at "
        f"{authenticating_s3.url}: storage does not know the access key id: check SPATIALGEN_S3_ACCESS_KEY_ID "
        "(InvalidAccessKeyId)",
        "              -> fix the storage settings; the other checks need the bucket",
        "result: 0 ok, 0 warn, 1 fail",
    ]
