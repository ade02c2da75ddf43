"""The uploader's pure parts: backoff, Retry-After, part planning, resume selection, state files, config, streaming."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from app.client import config
from app.client.errors import LocalFileChanged, ServiceError, StateFileError
from app.client.events import BytesSent, FileStarted, GroupStarted, PartDone, Retry
from app.client.models import PartUrl, ReceivedPart
from app.client.plan import (
    FileAction,
    check_part_url,
    file_action,
    missing_parts,
    part_range,
    present_parts,
    url_batch,
)
from app.client.progress import JsonLines, PlainLines
from app.client.retry import MAX_RETRY_AFTER, Backoff, parse_retry_after
from app.client.state import (
    FileState,
    SessionState,
    find_state,
    fingerprint,
    idempotency_key,
    load_state,
    save_state,
    state_path,
)
from app.client.transfer import CHUNK_BYTES, read_range
from app.domain.parts import part_range as server_part_range
from app.domain.parts import plan_parts
from app.settings import MIB

# --- backoff -------------------------------------------------------------------------------------


def test_backoff_window_doubles_up_to_the_cap_with_full_jitter() -> None:
    b = Backoff(base=0.5, cap=30.0)
    assert [b.delay(n, rand=lambda: 1.0) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert b.delay(7, rand=lambda: 0.0) == 0.0  # full jitter: anywhere from zero
    assert b.delay(3, rand=lambda: 0.25) == 0.5


def test_backoff_never_waits_less_than_retry_after_and_clips_absurd_ones() -> None:
    b = Backoff(base=0.5, cap=30.0)
    assert b.delay(1, retry_after=3.0, rand=lambda: 1.0) == 3.0
    assert b.delay(8, retry_after=3.0, rand=lambda: 1.0) == 30.0
    assert b.delay(1, retry_after=86_400.0, rand=lambda: 0.0) == MAX_RETRY_AFTER


def test_retry_after_as_seconds_or_http_date() -> None:
    now = datetime(2026, 5, 6, 18, 42, 11, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-3", now) is None
    assert parse_retry_after(None, now) is None


# --- part planning and resume selection ----------------------------------------------------------


def test_part_ranges_match_the_services() -> None:
    for size in (1, 2401, 5 * MIB, 5 * MIB + 1, 187_340_032, 1_287_340_032, 2 * 1024**4 + 7):
        plan = plan_parts(size, 100 * MIB)
        for n in {1, 2, plan.total_parts - 1, plan.total_parts} - {0}:
            assert part_range(n, plan.part_size, size) == server_part_range(n, plan.part_size, size)


def test_present_parts_counts_only_whole_parts() -> None:
    size = 12 * MIB + 5  # parts of 5 MiB: 5, 5, 2 MiB + 5
    received = [
        ReceivedPart(part_number=1, etag='"a"', size_bytes=5 * MIB),
        ReceivedPart(part_number=2, etag='"b"', size_bytes=5 * MIB - 1),  # cut short: sent again
        ReceivedPart(part_number=3, etag='"c"', size_bytes=2 * MIB + 5),
        ReceivedPart(part_number=4, etag='"d"', size_bytes=5),  # not a part of this file
    ]
    present = present_parts(received, part_size=5 * MIB, total_bytes=size, total_parts=3)
    assert present == {1: '"a"', 3: '"c"'}
    assert missing_parts(3, present) == [2]
    assert missing_parts(4, []) == [1, 2, 3, 4]


def test_url_batches_take_the_wanted_part_and_the_next_pending_ones() -> None:
    assert url_batch(5, [1, 2, 5, 6, 9, 12], batch=3) == [5, 6, 9]
    assert url_batch(12, [1, 2, 12], batch=3) == [12]
    assert url_batch(1, list(range(1, 10_001)))[-1] == 200


def test_a_part_url_with_another_byte_range_is_refused() -> None:
    good = PartUrl(part_number=2, size_bytes=5 * MIB, byte_start=5 * MIB, byte_end=10 * MIB, url="u", expires_at="")
    check_part_url(good, part_size=5 * MIB, total_bytes=12 * MIB)
    bad = PartUrl(part_number=2, size_bytes=6 * MIB, byte_start=6 * MIB, byte_end=12 * MIB, url="u", expires_at="")
    with pytest.raises(ServiceError, match=r"bytes \[6291456, 12582912\)"):
        check_part_url(bad, part_size=5 * MIB, total_bytes=12 * MIB)


def test_resume_action_per_file_status() -> None:
    assert file_action("completed", file_name="a") is FileAction.SKIP
    assert file_action("completing", file_name="a") is FileAction.WAIT
    assert file_action("initialized", file_name="a") is FileAction.UPLOAD
    assert file_action("uploading", file_name="a") is FileAction.UPLOAD
    for status in ("canceled", "expired", "failed"):
        with pytest.raises(ServiceError) as caught:
            file_action(status, file_name="a.mov", failure_reason="size 3 != 4")
        assert caught.value.status == 409 and caught.value.code == f"file_{status}"
        assert "a.mov is " + status in str(caught.value)


# --- state files and idempotency keys ------------------------------------------------------------


def session(key: str = "sgu1-x", url: str = "http://api") -> SessionState:
    f = FileState(upload_id="u1", path="/data/l.mov", file_name="l.mov", file_role="video_left", size_bytes=12,
                  part_size_bytes=5, total_parts=3, upload_strategy="multipart", mtime_ns=123)  # fmt: skip
    return SessionState(api_url=url, session_id="s1", video_name="Film", files=[f], idempotency_key=key)


def test_state_file_round_trip_is_plain_json(tmp_path: Path) -> None:
    path = state_path(tmp_path / "state", "s1")
    save_state(session(), path)
    assert load_state(path) == session()
    doc = json.loads(path.read_text())
    assert doc["sessionId"] == "s1" and doc["files"][0]["uploadId"] == "u1" and doc["idempotencyKey"] == "sgu1-x"
    assert "apiKey" not in doc and os.listdir(path.parent) == ["s1.json"]  # no temp file left behind


def test_unreadable_state_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="no state file"):
        load_state(tmp_path / "nope.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(StateFileError, match="not an upload state file"):
        load_state(tmp_path / "junk.json")
    save_state(session(), tmp_path / "old.json")
    (tmp_path / "old.json").write_text((tmp_path / "old.json").read_text().replace('"version": 1', '"version": 9'))
    with pytest.raises(StateFileError, match="state version 9"):
        load_state(tmp_path / "old.json")


def test_an_earlier_run_is_found_by_key_and_service(tmp_path: Path) -> None:
    save_state(session("k1"), tmp_path / "a.json")
    save_state(session("k2", url="http://other"), tmp_path / "b.json")
    (tmp_path / "c.json").write_text("[]")
    found = find_state(tmp_path, "http://api", "k1")
    assert found is not None and found[0] == tmp_path / "a.json"
    assert find_state(tmp_path, "http://api", "k2") is None
    assert find_state(tmp_path / "missing", "http://api", "k1") is None


def test_idempotency_key_follows_the_inputs(tmp_path: Path) -> None:
    body = {"videoName": "Film", "layout": "2D", "files": [{"fileName": "v.mov", "fileRole": "video", "sizeBytes": 9}]}
    key = idempotency_key(body, ["f1"])
    assert key == idempotency_key(json.loads(json.dumps(body, sort_keys=True)), ["f1"])  # key order is irrelevant
    assert key != idempotency_key({**body, "videoName": "Film 2"}, ["f1"])
    assert key != idempotency_key(body, ["f2"])
    assert idempotency_key(body, ["f1"], fresh=True) != idempotency_key(body, ["f1"], fresh=True)
    assert key.isascii() and key.isprintable() and len(key) <= 255


def test_fingerprint_sees_changes_at_either_end(tmp_path: Path) -> None:
    path = tmp_path / "v.mov"
    data = bytearray(os.urandom(300_000))
    path.write_bytes(data)
    first = fingerprint(path, len(data))
    data[-1] ^= 1
    path.write_bytes(data)
    assert fingerprint(path, len(data)) != first
    (tmp_path / "small").write_bytes(b"abc")
    assert fingerprint(tmp_path / "small", 3) == fingerprint(tmp_path / "small", 3)


# --- where the service is ------------------------------------------------------------------------


def test_flag_then_environment_then_dev_env(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    data.mkdir()
    (data / "dev.env").write_text(
        "# written by make run\nSPATIALGEN_API_URL=http://dev\nSPATIALGEN_API_KEY = sgk_dev\n"
    )
    key_file = tmp_path / "key"
    key_file.write_text("sgk_file\n")
    key_file.chmod(0o600)

    def found(api_url: str | None, env: dict[str, str], **kw: Any) -> tuple[str | None, str | None]:
        target = config.locate(api_url, env, **kw)
        return target.url, target.key

    env = {"SPATIALGEN_DATA_DIR": str(data)}
    assert found(None, env) == ("http://dev", "sgk_dev")
    env |= {"SPATIALGEN_API_URL": "http://env", "SPATIALGEN_API_KEY": "sgk_env"}
    assert found(None, env) == ("http://env", "sgk_env")
    assert found(None, env, recorded_url="http://env/") == ("http://env", "sgk_env")
    assert found("http://flag", env, api_key_file=key_file, recorded_url="http://state") == ("http://flag", "sgk_file")
    assert found(None, {"SPATIALGEN_DATA_DIR": str(tmp_path / "none")}) == (None, None)


# --- streaming a part from disk ------------------------------------------------------------------


async def test_a_part_is_read_in_chunks_of_at_most_1_mib(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 100)
    (tmp_path / "v.mov").write_bytes(data)
    counted: list[int] = []
    chunks = [c async for c in read_range(tmp_path / "v.mov", 100, 3 * MIB - 50, counted.append)]
    assert b"".join(chunks) == data[100 : 100 + 3 * MIB - 50]
    assert max(map(len, chunks)) <= CHUNK_BYTES and counted == [len(c) for c in chunks]


async def test_a_file_that_shrank_stops_the_part(tmp_path: Path) -> None:
    (tmp_path / "v.mov").write_bytes(b"x" * 1000)
    with pytest.raises(LocalFileChanged, match="ends at byte 1000"):
        async for _ in read_range(tmp_path / "v.mov", 500, 1000, lambda n: None):
            pass


# --- progress output -----------------------------------------------------------------------------


def test_json_lines_are_one_event_each_without_byte_ticks() -> None:
    out = io.StringIO()
    report = JsonLines(out)
    report(BytesSent(upload_id="u", size_bytes=1 << 20))
    report(PartDone(upload_id="u", file_name="v.mov", part_number=3, size_bytes=5 * MIB))
    report(Retry(what="part", reason="503 SlowDown", attempt=1, delay_seconds=0.4, upload_id="u", part_number=4))
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"event": "part_done", "uploadId": "u", "fileName": "v.mov", "partNumber": 3, "sizeBytes": 5 * MIB,
         "attempts": 1},
        {"event": "retry", "what": "part", "reason": "503 SlowDown", "attempt": 1, "delaySeconds": 0.4, "call": None,
         "uploadId": "u", "partNumber": 4, "newUrl": False},
    ]  # fmt: skip


def test_plain_lines_name_the_file_and_the_retry() -> None:
    out = io.StringIO()
    report = PlainLines(out)
    report(FileStarted(upload_id="u", file_name="v.mov", total_bytes=10, total_parts=2, missing_parts=1,
                       present_parts=1, present_bytes=5))  # fmt: skip
    report(Retry(what="part", reason="403 AccessDenied", attempt=1, delay_seconds=0.0, upload_id="u", part_number=2,
                 new_url=True))  # fmt: skip
    assert out.getvalue().splitlines() == [
        "v.mov: 1 of 2 parts to send, storage holds 1",
        "v.mov: retry part 2 (failure 1: 403 AccessDenied); new URL, next try in 0.0 s",
    ]


def test_plain_lines_overall_counts_files_storage_already_holds() -> None:
    # A resumed run: one file is sent now, the other was completed before it (learned after the first bytes went).
    out = io.StringIO()
    report = PlainLines(out)
    report(GroupStarted(session_id="s", video_name="v", file_count=2, total_bytes=100, resumed=True))
    report(FileStarted(upload_id="a", file_name="a.mov", total_bytes=50, total_parts=2, missing_parts=2,
                       present_parts=0, present_bytes=0))  # fmt: skip
    report(BytesSent(upload_id="a", size_bytes=50))
    report(FileStarted(upload_id="b", file_name="b.mov", total_bytes=50, total_parts=2, missing_parts=0,
                       present_parts=2, present_bytes=50))  # fmt: skip
    overall = [line for line in out.getvalue().splitlines() if " of 100 B " in line]
    assert [line.split(",")[0] for line in overall] == ["50 B of 100 B (50 %)", "100 B of 100 B (100 %)"]
    # Storage refused the part list and the file is listed again: its bytes are what storage holds now, not more.
    report(FileStarted(upload_id="a", file_name="a.mov", total_bytes=50, total_parts=2, missing_parts=1,
                       present_parts=1, present_bytes=25))  # fmt: skip
    assert report.done == 75
    report(BytesSent(upload_id="a", size_bytes=25))  # back at 100 %: said again
    overall = [line for line in out.getvalue().splitlines() if " of 100 B " in line]
    assert [line.split(",")[0] for line in overall[2:]] == ["100 B of 100 B (100 %)"]
    assert report.sent == 75  # the throughput counts only what this run sent


# --- the client ships alone ----------------------------------------------------------------------


def test_the_client_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, app.client, app.client.cli\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    modules = set(out.split())
    server = {"litestar", "arq", "redis", "aiobotocore", "botocore", "boto3", "granian", "prometheus_client"}
    assert not {m.split(".")[0] for m in modules} & server
    # The client, and the pure domain layer whose rules it checks with (msgspec and the standard library only).
    assert {m for m in modules if m.startswith("app.")} <= {
        m for m in modules if m.startswith(("app.client", "app.domain"))
    }
    assert not {m for m in modules if m.startswith("app.") and not m.startswith(("app.client", "app.domain"))}
    assert {"httpx", "rich", "msgspec"} <= {m.split(".")[0] for m in modules} | {"rich"}
