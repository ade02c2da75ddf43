"""The uploader end to end: the real `spatialgen-upload` command and UploadClient against the API and worker
processes, Valkey and moto, with a loopback proxy in front of storage (and of the API) that can fail requests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from app.client import Backoff, LocalFile, PartFailed, ServiceError, UploadClient, UploadSpec
from app.client.events import Event, Retry
from app.client.state import load_state
from app.settings import MIB, Settings
from app.state.keys import account_index_key
from tests.conftest import open_uploads
from tests.e2e.conftest import FORWARD, LOSE_ANSWER, RESET, ClientStack, LoopbackProxy, Reply, Seen

UPLOAD_EXE = str(Path(sys.executable).with_name("spatialgen-upload"))
SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
EXPIRED = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"


def problem(status: int, code: str) -> bytes:
    """A problem+json body as the API writes it."""
    doc = {"status": status, "code": code, "title": code, "detail": f"{code} (from the test proxy)"}
    return json.dumps(doc).encode()


@pytest.fixture
def s3_proxy(client_stack: ClientStack) -> LoopbackProxy:
    """The storage proxy, forwarding everything again, with an empty log."""
    proxy = client_stack.s3_proxy
    proxy.decide = lambda seen, i: FORWARD
    proxy.delay = 0.0
    proxy.phase = ""
    proxy.seen.clear()
    return proxy


def write_random(path: Path, size: int) -> str:
    """Write `size` random bytes; returns their SHA-256."""
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def stored_digests(s3: Any, bucket: str, account: str, session_id: str) -> dict[str, str]:
    """SHA-256 of every object of a group, by upload id (read straight from moto, not through the proxy)."""
    out = {}
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"uploads/{account}/{session_id}/")["Contents"]
    for obj in listed:
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        out[obj["Key"].rsplit("/", 1)[1].split(".")[0]] = hashlib.sha256(body).hexdigest()
    return out


async def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Run spatialgen-upload without blocking the event loop (the proxies live on it)."""
    proc = await asyncio.create_subprocess_exec(
        UPLOAD_EXE, *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def key_file(folder: Path, key: str, mode: int = 0o600) -> Path:
    """The key in a file of that mode."""
    path = folder / "api-key"
    path.write_text(key + "\n")
    path.chmod(mode)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def events_of(stdout: str) -> list[dict[str, Any]]:
    """The --json events of a run."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


async def test_send_separate_group_with_no_flags_next_to_make_run(
    client_stack: ClientStack, s3_proxy: LoopbackProxy, redis: Redis, store: Any, s3: Any, settings: Settings,
    upload_key: str, tmp_path: Path,
) -> None:  # fmt: skip
    sizes = {"left-eye.mov": 12 * MIB + 5, "right-eye.mov": 12 * MIB + 9, "english.mp4": 6 * MIB, "subs.srt": 2401}
    digests = {name: write_random(tmp_path / name, size) for name, size in sizes.items()}
    # What `make run` writes; the command finds it with no flags and no SPATIALGEN_API_* variables.
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "dev.env").write_text(
        f"# written by make run\nSPATIALGEN_API_URL={client_stack.api_url}\nSPATIALGEN_API_KEY={upload_key}\n"
    )
    rc, out, err = await run_cli(
        "send", "--layout", "Separate", "--name", "My Spatial Video", "--perspective", "Regular",
        "--video-left", "left-eye.mov", "--video-right", "right-eye.mov", "--audio", "en=english.mp4",
        "--subtitle", "en=subs.srt", "--parallel", "4", "--keep-state",
        cwd=tmp_path, env=client_stack.env,
    )  # fmt: skip
    assert rc == 0, err
    library_id = int(out.strip().splitlines()[-1])
    [state_file] = (tmp_path / ".spatialgen-upload").glob("*.json")  # kept: --keep-state
    # The owner's alone, whatever the umask (the test's is 022): the folder 0700, the file 0600.
    assert (mode_of(state_file.parent), mode_of(state_file)) == (0o700, 0o600)
    state = load_state(state_file)
    assert state.status == "completed" and state.library_id == library_id
    assert [f.total_parts for f in state.files] == [3, 3, 2, 1]
    assert all(f.completed for f in state.files)
    stored = stored_digests(s3, settings.storage.bucket, "acme", state.session_id)
    assert {f.upload_id: digests[f.file_name] for f in state.files} == stored
    assert open_uploads(s3, settings.storage.bucket) == []
    parts = [p.part for p in s3_proxy.puts()]
    assert len(parts) == len(set(parts)) == 9  # every part once: nothing failed, nothing was sent twice

    # The same command again continues the same (completed) group: nothing is sent, the same libraryId.
    rc, out, err = await run_cli(
        "send", "--layout", "Separate", "--name", "My Spatial Video", "--perspective", "Regular",
        "--video-left", "left-eye.mov", "--video-right", "right-eye.mov", "--audio", "en=english.mp4",
        "--subtitle", "en=subs.srt", "--json",
        cwd=tmp_path, env=client_stack.env,
    )  # fmt: skip
    assert rc == 0, err
    events = events_of(out)
    assert events[0]["event"] == "group_started" and events[0]["sessionId"] == state.session_id
    assert events[-1] == {**events[-1], "event": "group_completed", "libraryId": library_id, "bytesSent": 0}
    assert len(s3_proxy.puts()) == 9
    # Without --keep-state the completed group's state file is gone, and so is the emptied folder.
    assert not (tmp_path / ".spatialgen-upload").exists()

    # Once more, with no state file: the Idempotency-Key finds the same completed group; nothing is sent.
    rc, out, err = await run_cli(
        "send", "--layout", "Separate", "--name", "My Spatial Video", "--perspective", "Regular",
        "--video-left", "left-eye.mov", "--video-right", "right-eye.mov", "--audio", "en=english.mp4",
        "--subtitle", "en=subs.srt", "--json",
        cwd=tmp_path, env=client_stack.env,
    )  # fmt: skip
    assert rc == 0, err
    events = events_of(out)
    assert events[0]["sessionId"] == state.session_id
    assert events[-1] == {**events[-1], "event": "group_completed", "libraryId": library_id, "bytesSent": 0}
    assert len(s3_proxy.puts()) == 9 and not (tmp_path / ".spatialgen-upload").exists()


async def test_killed_client_resumes_without_sending_a_stored_part_again(
    client_stack: ClientStack, s3_proxy: LoopbackProxy, redis: Redis, store: Any, s3: Any, settings: Settings,
    upload_key: str, tmp_path: Path,
) -> None:  # fmt: skip
    sizes = {"movie.mov": 40 * MIB, "en.m4a": 11 * MIB}
    digests = {name: write_random(tmp_path / name, size) for name, size in sizes.items()}
    flags = ["--api-url", client_stack.api_url, "--api-key-file", str(key_file(tmp_path, upload_key)), "--json"]
    s3_proxy.phase = "first"
    s3_proxy.delay = 0.2  # slow storage down so the kill lands mid-upload
    proc = await asyncio.create_subprocess_exec(
        UPLOAD_EXE, "send", "--layout", "2D", "--name", "Killed midway", "--video", "movie.mov", "--audio", "en=en.m4a",
        "--parallel", "2", *flags, cwd=tmp_path, env=client_stack.env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    session_id, done = "", 0
    while done < 3:
        event = json.loads(await proc.stdout.readline())
        session_id = event.get("sessionId", session_id)
        done += event["event"] == "part_done"
    proc.send_signal(signal.SIGKILL)
    assert await proc.wait() == -signal.SIGKILL

    s3_proxy.phase = "resume"
    s3_proxy.delay = 0.0
    rc, out, err = await run_cli("resume", session_id, *flags, "--keep-state", cwd=tmp_path, env=client_stack.env)
    assert rc == 0, err
    events = events_of(out)
    assert events[0]["event"] == "group_started" and events[0]["resumed"] is True
    assert sum(e.get("presentParts", 0) for e in events if e["event"] == "file_started") >= 3
    assert events[-1]["event"] == "group_completed" and isinstance(events[-1]["libraryId"], int)

    stored_first = {p.part for p in s3_proxy.puts("first") if p.status == 200}
    resumed = [p.part for p in s3_proxy.puts("resume")]
    assert len(resumed) == len(set(resumed)), "a part was sent twice after the resume"
    assert not stored_first & set(resumed), "a part storage already held was sent again"
    assert len(stored_first | set(resumed)) == 8 + 3
    assert [e["event"] for e in events].count("part_done") == len(resumed)
    state = load_state(tmp_path / ".spatialgen-upload" / f"{session_id}.json")
    stored = stored_digests(s3, settings.storage.bucket, "acme", session_id)
    assert {f.upload_id: digests[f.file_name] for f in state.files} == stored


async def test_storage_failures_are_retried_to_correct_bytes(
    client_stack: ClientStack, s3_proxy: LoopbackProxy, redis: Redis, store: Any, s3: Any, settings: Settings,
    upload_key: str, tmp_path: Path,
) -> None:  # fmt: skip
    def decide(seen: Seen, i: int) -> str | Reply:
        if seen.method != "PUT":
            return FORWARD
        if i % 10 == 3:  # 10 % of PUTs: the connection is reset halfway through the body
            return RESET
        if i % 10 == 7:  # another 10 %: storage is overloaded
            return Reply(503, {"Content-Type": "application/xml"}, SLOW_DOWN)
        if i == 5:  # once: the URL is refused as expired, so a fresh one is fetched
            return Reply(403, {"Content-Type": "application/xml"}, EXPIRED)
        return FORWARD

    s3_proxy.decide = decide
    names = {"movie.mp4": 31 * MIB, "english.mp4": 6 * MIB, "subs.srt": 5000}
    digests = {name: write_random(tmp_path / name, size) for name, size in names.items()}
    files = (LocalFile(tmp_path / "movie.mp4", "video"), LocalFile(tmp_path / "english.mp4", "audio", "en"),
             LocalFile(tmp_path / "subs.srt", "subtitle", "en"))  # fmt: skip
    spec = UploadSpec("Flaky storage", "2D", files)
    events: list[Event] = []
    async with UploadClient(client_stack.api_url, upload_key, parallel=4, backoff=Backoff(0.05, 0.5)) as client:
        result = await client.upload_group(spec, on_progress=events.append, state_dir=tmp_path / "state")
    assert isinstance(result.library_id, int)
    actions = [s.action for s in s3_proxy.puts()]
    assert actions.count(RESET) >= 1 and actions.count("reply 503") >= 1 and actions.count("reply 403") == 1
    retries = [e for e in events if isinstance(e, Retry) and e.what == "part"]
    assert len(retries) == len(actions) - (7 + 2 + 1)
    assert [r.new_url for r in retries].count(True) == 1
    assert any("503 SlowDown" in r.reason for r in retries)
    state = load_state(tmp_path / "state" / f"{result.session_id}.json")
    stored = stored_digests(s3, settings.storage.bucket, "acme", result.session_id)
    assert {f.upload_id: digests[f.file_name] for f in state.files} == stored


async def test_a_single_put_whose_answer_was_lost_counts_as_stored_on_retry(
    client_stack: ClientStack, s3_proxy: LoopbackProxy, redis: Redis, store: Any, s3: Any, settings: Settings,
    upload_key: str, tmp_path: Path,
) -> None:  # fmt: skip
    def decide(seen: Seen, i: int) -> str | Reply:
        # The first write of the single_put object reaches storage, but its answer never reaches the client.
        single = seen.method == "PUT" and "partNumber" not in seen.query
        if single and not any("partNumber" not in s.query for s in s3_proxy.puts()):
            return LOSE_ANSWER
        return FORWARD

    s3_proxy.decide = decide
    names = {"movie.mp4": 11 * MIB, "subs.srt": 5000}
    digests = {name: write_random(tmp_path / name, size) for name, size in names.items()}
    files = (LocalFile(tmp_path / "movie.mp4", "video"), LocalFile(tmp_path / "subs.srt", "subtitle", "en"))
    async with UploadClient(client_stack.api_url, upload_key, parallel=2, backoff=Backoff(0.05, 0.5)) as client:
        result = await client.upload_group(UploadSpec("Lost answer", "2D", files), state_dir=tmp_path / "state")
    assert isinstance(result.library_id, int)
    singles = [s for s in s3_proxy.puts() if "partNumber" not in s.query]
    # Stored by the first PUT (answer lost), refused by the retry: the URL is write-once.
    assert [(s.action, s.status) for s in singles] == [(LOSE_ANSWER, 200), (FORWARD, 412)]
    assert all(s.headers["if-none-match"] == "*" and s.headers["content-length"] == "5000" for s in singles)
    parts = [s for s in s3_proxy.puts() if "partNumber" in s.query]
    assert parts and all("if-none-match" not in s.headers for s in parts)
    state = load_state(tmp_path / "state" / f"{result.session_id}.json")
    stored = stored_digests(s3, settings.storage.bucket, "acme", result.session_id)
    assert {f.upload_id: digests[f.file_name] for f in state.files} == stored


async def test_a_part_that_keeps_failing_stops_the_run_resumably(
    client_stack: ClientStack, s3_proxy: LoopbackProxy, redis: Redis, store: Any, s3: Any, settings: Settings,
    upload_key: str, tmp_path: Path,
) -> None:  # fmt: skip
    s3_proxy.decide = lambda seen, i: Reply(503, {}, SLOW_DOWN) if seen.method == "PUT" else FORWARD
    digest = write_random(tmp_path / "movie.mov", 6 * MIB)
    spec = UploadSpec("Storage down", "2D", (LocalFile(tmp_path / "movie.mov", "video"),))
    async with UploadClient(client_stack.api_url, upload_key, parallel=1, backoff=Backoff(0.001, 0.01)) as client:
        with pytest.raises(PartFailed, match=r"part 1 of movie.mov failed 10 times in a row \(last: 503 SlowDown\)"):
            await client.upload_group(spec, state_dir=tmp_path)
        assert len(s3_proxy.puts()) == 10
        [state] = [load_state(Path(p.path)) for p in os.scandir(tmp_path) if p.name.endswith(".json")]
        state_file = tmp_path / f"{state.session_id}.json"
        s3_proxy.decide = lambda seen, i: FORWARD
        result = await client.resume_group(state.session_id, state_file=state_file)
    assert isinstance(result.library_id, int) and result.resumed
    assert stored_digests(s3, settings.storage.bucket, "acme", result.session_id) == {state.files[0].upload_id: digest}


@pytest.fixture
async def api_proxy(client_stack: ClientStack) -> AsyncIterator[LoopbackProxy]:
    """A proxy in front of the API."""
    proxy = await LoopbackProxy(int(client_stack.api_url.rsplit(":", 1)[1])).start()
    yield proxy
    await proxy.close()


async def test_api_429_and_503_are_honoured_and_a_lost_start_answer_makes_no_second_group(
    client_stack: ClientStack, api_proxy: LoopbackProxy, s3_proxy: LoopbackProxy, redis: Redis, store: Any,
    upload_key: str, tmp_path: Path,
) -> None:  # fmt: skip
    calls: dict[str, int] = {}

    def decide(seen: Seen, i: int) -> str | Reply:
        call = seen.path.rsplit("/", 1)[1] if seen.method == "POST" else seen.method
        n = calls[call] = calls.get(call, 0) + 1
        limited = {"Retry-After": "1", "Content-Type": "application/problem+json"}
        if call == "uploads" and n == 1:
            return Reply(429, limited, problem(429, "rate_limited"))
        if call == "uploads" and n == 2:
            return LOSE_ANSWER  # the group is created, the client never hears of it
        if call == "part-urls" and n <= 2:
            return Reply(503, limited, problem(503, "storage_not_ready"))
        return FORWARD

    api_proxy.decide = decide
    write_random(tmp_path / "movie.mov", 2 * MIB)
    spec = UploadSpec("Busy API", "2D", (LocalFile(tmp_path / "movie.mov", "video"),))
    events: list[Event] = []
    async with UploadClient(api_proxy.url, upload_key) as client:
        result = await client.upload_group(spec, on_progress=events.append)
    assert isinstance(result.library_id, int)
    retries = [(e.call, e.reason, e.delay_seconds) for e in events if isinstance(e, Retry)]
    assert [(call, reason) for call, reason, _ in retries] == [
        ("start", "429 rate_limited"), ("start", "503 Proxy"),
        ("part-urls", "503 storage_not_ready"), ("part-urls", "503 storage_not_ready"),
    ]  # fmt: skip
    assert all(delay >= 1.0 for call, reason, delay in retries if reason != "503 Proxy")  # Retry-After: 1
    starts = [s for s in api_proxy.seen if s.path == "/api/videos/uploads"]
    assert len({s.headers["idempotency-key"] for s in starts}) == 1
    assert [s.status for s in starts] == [0, 201, 201]  # the third got the first group back
    assert await redis.zcard(account_index_key("acme")) == 1


async def test_quota_exceeded_is_final(
    client_stack: ClientStack, api_proxy: LoopbackProxy, redis: Redis, upload_key: str, tmp_path: Path
) -> None:
    api_proxy.decide = lambda seen, i: Reply(429, {"Retry-After": "1"}, problem(429, "quota_exceeded"))
    write_random(tmp_path / "movie.mov", 1000)
    spec = UploadSpec("Over quota", "2D", (LocalFile(tmp_path / "movie.mov", "video"),))
    async with UploadClient(api_proxy.url, upload_key) as client:
        with pytest.raises(ServiceError) as caught:
            await client.upload_group(spec)
    assert (caught.value.status, caught.value.code) == (429, "quota_exceeded")
    assert len(api_proxy.seen) == 1


async def test_the_key_goes_only_to_the_url_configured_for_the_run(
    client_stack: ClientStack, api_proxy: LoopbackProxy, s3_proxy: LoopbackProxy, redis: Redis, store: Any,
    upload_key: str, tmp_path: Path,
) -> None:  # fmt: skip
    """`api_proxy` stands for a server a state file names (copied from elsewhere, or edited): nothing may reach it."""
    write_random(tmp_path / "movie.mov", 1000)
    key = key_file(tmp_path, upload_key)
    api = ["--api-url", client_stack.api_url]
    rc, out, err = await run_cli(
        "send", "--layout", "2D", "--name", "Where the key goes", "--video", "movie.mov", "--keep-state", *api,
        "--api-key-file", str(key), cwd=tmp_path, env=client_stack.env,
    )  # fmt: skip
    assert rc == 0, err
    [state_file] = (tmp_path / ".spatialgen-upload").glob("*.json")
    sid = state_file.stem
    state = load_state(state_file)
    state.api_url = api_proxy.url
    state_file.write_bytes(msgspec.json.encode(state))
    state_file.chmod(0o644)  # as an older client (or a copy) left it
    env = client_stack.env | {"SPATIALGEN_API_KEY": upload_key}

    # Another URL configured (the environment): refused, both URLs named, nothing sent anywhere.
    rc, _, err = await run_cli("status", sid, cwd=tmp_path, env=env | {"SPATIALGEN_API_URL": client_stack.api_url})
    assert rc == 2
    assert f"records the API URL {api_proxy.url}, but SPATIALGEN_API_URL gives {client_stack.api_url}" in err, err
    # No URL configured at all: refused too, with the --api-url to add.
    rc, _, err = await run_cli("resume", sid, cwd=tmp_path, env=env)
    assert rc == 2 and "no URL is configured for this run" in err and f"add --api-url {api_proxy.url}" in err, err
    # The key as an argument, even towards the state file's own URL: refused before anything is sent.
    rc, out, err = await run_cli("status", sid, "--api-url", api_proxy.url, "--api-key", upload_key, cwd=tmp_path,
                                 env=client_stack.env)  # fmt: skip
    assert rc == 2 and "--api-key is not accepted" in err and upload_key not in out + err
    # A key file others can read: refused, the key not shown.
    key.chmod(0o640)
    rc, out, err = await run_cli("status", sid, *api, "--api-key-file", str(key), cwd=tmp_path, env=client_stack.env)
    assert rc == 2 and "is open to other users (mode 0640)" in err and upload_key not in out + err
    assert api_proxy.seen == []

    # --api-url on the command line settles it: the configured service finishes the (completed) group.
    key.chmod(0o600)
    rc, out, err = await run_cli("resume", sid, *api, "--api-key-file", str(key), "--json", "--keep-state",
                                 cwd=tmp_path, env=client_stack.env)  # fmt: skip
    assert rc == 0, err
    assert f"note: the state file .spatialgen-upload/{sid}.json records {api_proxy.url}; using" in err
    assert events_of(out)[-1]["event"] == "group_completed"
    assert api_proxy.seen == []
    assert mode_of(state_file) == 0o600  # read (and written again) by this client: made private
    assert load_state(state_file).api_url == client_stack.api_url  # it now records where the run went
    rc, out, err = await run_cli("status", sid, "--api-key-file", str(key), cwd=tmp_path,
                                 env=client_stack.env | {"SPATIALGEN_API_URL": client_stack.api_url})  # fmt: skip
    assert rc == 0 and "completed" in out and "note:" not in err, err
