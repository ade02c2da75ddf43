"""Every state-changing Lua script, driven over every (group status, file status) pair on the real Valkey.

The expected transitions are written out here, independently of app/domain/lifecycle.py's sets: the tables below
name every status on purpose, so adding a status fails these tests until its behaviour is decided.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from app.domain.checksums import Checksum
from app.domain.clock import now_ms
from app.domain.contract import FileRole, Layout, UploadStrategy
from app.domain.lifecycle import LIVE_GROUP, OPEN_FILE, SETTLED_FILE, FileStatus, GroupStatus, Reply
from app.domain.limits import Quota, Rate
from app.domain.records import FileRecord, GroupRecord
from app.settings import Settings
from app.state import ScriptReply, UploadState
from app.state.jobs import Ending, JobSpec, LibraryTemplate, purge_jobs
from app.state.keys import EXPIRY_INDEX, FileField, arq_job_key, file_field, state_key
from app.state.scripts import Contract, all_scripts, render

G, F = GroupStatus, FileStatus
GROUP_LIVE = {G.INITIALIZED: True, G.UPLOADING: True, G.COMPLETED: False, G.CANCELED: False, G.EXPIRED: False,
              G.FAILED: False}  # fmt: skip
FILE_OPEN = {F.INITIALIZED: True, F.UPLOADING: True, F.COMPLETING: False, F.COMPLETED: False, F.CANCELED: False,
             F.EXPIRED: False, F.FAILED: False}  # fmt: skip
FILE_SETTLED = {F.INITIALIZED: False, F.UPLOADING: False, F.COMPLETING: False, F.COMPLETED: True, F.CANCELED: False,
                F.EXPIRED: False, F.FAILED: False}  # fmt: skip
PAIRS = list(itertools.product(GroupStatus, FileStatus))
UNLIMITED = Rate(0.0, 1)


def test_the_tables_name_every_status_and_agree_with_the_lifecycle_sets() -> None:
    assert set(GROUP_LIVE) == set(GroupStatus) and set(FILE_OPEN) == set(FILE_SETTLED) == set(FileStatus)
    assert {g for g, live in GROUP_LIVE.items() if live} == LIVE_GROUP
    assert {f for f, open_ in FILE_OPEN.items() if open_} == OPEN_FILE
    assert {f for f, settled in FILE_SETTLED.items() if settled} == SETTLED_FILE


class Expect(NamedTuple):
    """A script's reply and the statuses it leaves: the group, the file acted on, and its sibling file."""

    code: Reply
    values: tuple[str, ...]
    group: GroupStatus
    file: FileStatus
    sibling: FileStatus = F.UPLOADING


class Case(NamedTuple):
    """A group of two files in (g, f): the file acted on has status f; its sibling is uploading or completed."""

    state: UploadState
    record: GroupRecord
    now: int

    @property
    def uid(self) -> str:
        return self.record.files[0].upload_id

    @property
    def sibling(self) -> str:
        return self.record.files[1].upload_id


def make_record(now: int, settings: Settings, n: int) -> GroupRecord:
    sid = f"00000000-0000-4000-8000-{n:012d}"
    files = tuple(
        FileRecord(upload_id=f"00000000-0000-4000-9000-{n:06d}{i:06d}", role=role, name=f"{role.value}.mov",
                   total_bytes=200 * 1024 * 1024, part_size=100 * 1024 * 1024, total_parts=2,
                   strategy=UploadStrategy.MULTIPART, language=None, ext=".mov")
        for i, role in enumerate((FileRole.VIDEO_LEFT, FileRole.VIDEO_RIGHT))
    )  # fmt: skip
    return GroupRecord(session_id=sid, account="acme", key_prefix=f"uploads/acme/{sid}/", video_name="v",
                       description=None, layout=Layout.SEPARATE, perspective=None, folder_name=None, created_ms=now,
                       expires_ms=now + settings.uploads.session_ttl_seconds * 1000, files=files)  # fmt: skip


async def setup_case(state: UploadState, settings: Settings, n: int, g: GroupStatus, f: FileStatus,
                     sibling: FileStatus = F.UPLOADING) -> Case:  # fmt: skip
    now = now_ms()
    record = make_record(now, settings, n)
    reply, _ = await state.create_group(
        record, key_id="k", rate=UNLIMITED, quota=Quota(10**6, 10**18), idle_expires_ms=record.expires_ms,
        key_ttl_ms=10**9, idem_key=None, idem_value=b"", idem_ttl_ms=1,
    )  # fmt: skip
    assert reply.code is Reply.CREATED
    uid, sib = record.files[0].upload_id, record.files[1].upload_id
    await state.redis.hset(state_key(record.session_id), mapping={
        "st": g.value, file_field(FileField.STATUS, uid): f.value, file_field(FileField.STATUS, sib): sibling.value,
        file_field(FileField.ATTEMPT, uid): "1",
    })  # fmt: skip
    return Case(state, record, now)


async def statuses(case: Case) -> tuple[GroupStatus, FileStatus, FileStatus]:
    snap = await case.state.snapshot(case.record.session_id)
    assert snap is not None
    return snap.status, snap.file_status(case.uid), snap.file_status(case.sibling)


async def drive(
    state: UploadState, settings: Settings, run: Callable[[Case], Awaitable[ScriptReply]],
    expect: Callable[[GroupStatus, FileStatus], Expect], *, sibling: FileStatus = F.UPLOADING,
) -> None:  # fmt: skip
    """Run one script over every pair; every mismatch is reported at once."""
    wrong = []
    for n, (g, f) in enumerate(PAIRS):
        case = await setup_case(state, settings, n, g, f, sibling)
        reply = await run(case)
        want = expect(g, f)
        got = Expect(reply.code, tuple(str(v) for v in reply.values[: len(want.values)]), *await statuses(case))
        if got != want:
            wrong.append(f"({g}, {f}): got {got}, expected {want}")
    assert wrong == []


async def test_mark_uploading(state: UploadState, settings: Settings) -> None:
    def expect(g: GroupStatus, f: FileStatus) -> Expect:
        if not GROUP_LIVE[g]:
            return Expect(Reply.GROUP_STATE, (g,), g, f)
        if not FILE_OPEN[f]:
            return Expect(Reply.FILE_STATE, (f,), g, f)
        return Expect(Reply.OK, (), G.UPLOADING, F.UPLOADING)

    await drive(state, settings, lambda c: c.state.mark_uploading(c.record, c.uid, c.now), expect)


async def test_begin_complete(state: UploadState, settings: Settings) -> None:
    def expect(g: GroupStatus, f: FileStatus) -> Expect:
        if not GROUP_LIVE[g]:
            return Expect(Reply.GROUP_STATE, (g,), g, f)
        if not FILE_OPEN[f]:
            return Expect(Reply.FILE_STATE, (f,), g, f)
        return Expect(Reply.OK, (), G.UPLOADING, F.COMPLETING)

    async def run(c: Case) -> ScriptReply:
        job = JobSpec.build("complete_file", (), job_id=f"complete:{c.uid}:2", now_ms=c.now)
        reply = await c.state.begin_complete(c.record, c.uid, now_ms=c.now, attempt_seen=1, job=job)
        queued = await c.state.redis.exists(arq_job_key(job.job_id))
        assert queued == (reply.code is Reply.OK)  # the job is queued exactly when the file moved
        return reply

    await drive(state, settings, run, expect)


async def test_begin_complete_with_a_stale_attempt_changes_nothing(state: UploadState, settings: Settings) -> None:
    c = await setup_case(state, settings, 1, G.UPLOADING, F.UPLOADING)
    job = JobSpec.build("complete_file", (), job_id="complete:x", now_ms=c.now)
    reply = await c.state.begin_complete(c.record, c.uid, now_ms=c.now, attempt_seen=0, job=job)
    assert reply.code is Reply.STALE and await statuses(c) == (G.UPLOADING, F.UPLOADING, F.UPLOADING)
    assert not await c.state.redis.exists(arq_job_key("complete:x"))


@pytest.mark.parametrize("sibling", [F.COMPLETED, F.UPLOADING])
async def test_finish_complete(state: UploadState, settings: Settings, sibling: FileStatus) -> None:
    def expect(g: GroupStatus, f: FileStatus) -> Expect:
        if not GROUP_LIVE[g]:  # the group ended meanwhile: a completing file shares its fate
            return Expect(Reply.GROUP_STATE, (g,), g, FileStatus(g) if f is F.COMPLETING else f, sibling)
        if f is not F.COMPLETING:
            return Expect(Reply.STALE, (f,), g, f, sibling)
        if sibling is F.COMPLETED:
            return Expect(Reply.GROUP_COMPLETED, (), G.COMPLETED, F.COMPLETED, sibling)
        return Expect(Reply.FILE_COMPLETED, (), g, F.COMPLETED, sibling)

    async def run(c: Case) -> ScriptReply:
        library = LibraryTemplate.build({"sessionId": c.record.session_id}, now_ms=c.now)
        return await c.state.finish_complete(
            c.record, c.uid, now_ms=c.now, retention_ms=10**6, library=library, processing_queue="q"
        )

    await drive(state, settings, run, expect, sibling=sibling)


async def test_reject_complete(state: UploadState, settings: Settings) -> None:
    def expect(g: GroupStatus, f: FileStatus) -> Expect:
        return Expect(Reply.OK, (), g, F.UPLOADING) if f is F.COMPLETING else Expect(Reply.STALE, (), g, f)

    async def run(c: Case) -> ScriptReply:
        ok = await c.state.reject_complete(c.record.session_id, c.uid, attempt=1, now_ms=c.now, reason="no")
        return ScriptReply(Reply.OK if ok else Reply.STALE)

    await drive(state, settings, run, expect)


def end_of(c: Case) -> Ending:
    """How the case's group is wound down when it ends (kept 10**6 ms, its end record as long)."""
    return Ending(retention_ms=10**6, purges=purge_jobs(Settings(), c.record.session_id), tombstone_ms=10**6)


async def test_fail_file(state: UploadState, settings: Settings) -> None:
    def expect(g: GroupStatus, f: FileStatus) -> Expect:
        if f is not F.COMPLETING:
            return Expect(Reply.STALE, (), g, f)
        if GROUP_LIVE[g]:  # the set can never complete: the group and its unfinished files fail
            return Expect(Reply.OK, (), G.FAILED, F.FAILED, F.FAILED)
        return Expect(Reply.OK, (), g, F.FAILED)

    async def run(c: Case) -> ScriptReply:
        ok = await c.state.fail_file(c.record, c.uid, now_ms=c.now, reason="size", end=end_of(c))
        return ScriptReply(Reply.OK if ok else Reply.STALE)

    await drive(state, settings, run, expect)


async def test_cancel_group(state: UploadState, settings: Settings) -> None:
    def expect(g: GroupStatus, f: FileStatus) -> Expect:
        if g is G.CANCELED:  # a repeat answers like the first cancel
            return Expect(Reply.OK, (), g, f)
        if not GROUP_LIVE[g]:
            return Expect(Reply.GROUP_STATE, (g,), g, f)
        return Expect(Reply.OK, (), G.CANCELED, f if FILE_SETTLED[f] else F.CANCELED, F.CANCELED)

    async def run(c: Case) -> ScriptReply:
        return await c.state.cancel_group(c.record, now_ms=c.now, end=end_of(c))

    await drive(state, settings, run, expect)


async def test_expire_group(state: UploadState, settings: Settings, redis: Redis) -> None:
    def expect(g: GroupStatus, f: FileStatus) -> Expect:
        if not GROUP_LIVE[g]:
            return Expect(Reply.GROUP_STATE, (g,), g, f)
        return Expect(Reply.OK, (), G.EXPIRED, f if FILE_SETTLED[f] else F.EXPIRED, F.EXPIRED)

    async def run(c: Case) -> ScriptReply:
        later = c.record.expires_ms + 1
        [reply] = await c.state.expire_groups([c.record.session_id], now_ms=later, idle_retention_ms=10**6,
                                              ends=[end_of(c)])  # fmt: skip
        assert await redis.zscore(EXPIRY_INDEX, c.record.session_id) is None  # the index never keeps it
        return reply

    await drive(state, settings, run, expect)


async def test_record_s3_upload(state: UploadState, settings: Settings) -> None:
    def expect(g: GroupStatus, f: FileStatus) -> Expect:
        if not GROUP_LIVE[g]:
            return Expect(Reply.GROUP_STATE, (g,), g, f)
        if not FILE_OPEN[f]:
            return Expect(Reply.FILE_STATE, (f,), g, f)
        return Expect(Reply.OK, (), g, f)

    async def run(c: Case) -> ScriptReply:
        reply = await c.state.record_s3_upload(c.record, c.uid, "s3-upload-id")
        snap = await c.state.snapshot(c.record.session_id)
        assert snap is not None and (snap.s3_upload_id(c.uid) == "s3-upload-id") == (reply.code is Reply.OK)
        return reply

    await drive(state, settings, run, expect)


async def test_every_script_loads_into_valkey(state: UploadState) -> None:
    await state.load_scripts()
    shas = [s.sha for s in all_scripts().values()]
    assert await state.redis.script_exists(*shas) == [True] * len(shas)


async def test_a_broken_script_fails_when_loaded(redis: Redis) -> None:
    broken = render("broken", "-- KEYS: state\nif key.state then return {${reply.ok}}", {})  # missing `end`
    with pytest.raises(ResponseError):
        await redis.script_load(broken.source)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("return ${F.nope}", "unknown name"),
        ("--! include nowhere\nreturn 1", "unknown library"),
        ("-- KEYS: a, a\nreturn 1", "appears twice"),
        ("-- KEYS: Bad-Name\nreturn 1", "bad name"),
        ("-- KEYS: a\n-- KEYS: b\nreturn 1", "declared twice"),
    ],
)
def test_rendering_refuses_unknown_names_and_bad_contracts(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render("s", source, {})


def test_a_contract_binds_by_name_and_refuses_missing_or_unknown_names() -> None:
    contract = Contract.parse("s", "-- KEYS: state\n-- ARGV: a, b\n-- JOBS: purge\n-- REST: ids\n")
    job = JobSpec("j1", "q", b"blob", 5, 6)
    keys, args = contract.bind("s", {"state": "S", "a": 1, "b": 2, "purge": job, "ids": ["x", "y"]})
    assert keys == ["S", "arq:job:j1", "arq:result:j1", "q"]
    assert args == [1, 2, "j1", b"blob", 6, 5, "x", "y"]
    with pytest.raises(TypeError, match=r"missing \['b'\], unknown \['c'\]"):
        contract.bind("s", {"state": "S", "a": 1, "c": 2, "purge": job, "ids": []})
    assert "arg.ids = {}" in contract.prologue() and "for i = 7, #ARGV" in contract.prologue()


def test_scripts_name_fields_statuses_and_replies_only_through_the_python_constants() -> None:
    from importlib import resources

    from app.state.keys import Field

    folder = resources.files("app.state").joinpath("lua")
    files = {e.name: e.read_text() for e in folder.iterdir() if e.name.endswith(".lua")}
    assert len(files) == len(all_scripts())
    literals = {*GroupStatus, *FileStatus, *Reply, *(v for k, v in vars(Field).items() if k.isupper()),
                *(v for k, v in vars(FileField).items() if k.isupper())}  # fmt: skip
    for name, text in files.items():
        code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())  # comments may name them
        for literal in literals:
            assert f"'{literal}'" not in code, (name, literal)


async def test_mark_uploading_fixes_the_checksum_algorithm_once(state: UploadState, settings: Settings) -> None:
    c = await setup_case(state, settings, 900, G.INITIALIZED, F.INITIALIZED)
    first = await state.mark_uploading(c.record, c.uid, c.now, algorithm="CRC64NVME")
    assert (first.code, first.text()) == (Reply.OK, "CRC64NVME")
    other = await state.mark_uploading(c.record, c.uid, c.now, algorithm="SHA256")
    assert (other.code, other.text()) == (Reply.CHECKSUM_CONFLICT, "CRC64NVME")
    same = await state.mark_uploading(c.record, c.uid, c.now, algorithm="CRC64NVME")
    none = await state.mark_uploading(c.record, c.uid, c.now)  # a call naming none: the file's stays
    assert [(r.code, r.text()) for r in (same, none)] == [(Reply.OK, "CRC64NVME")] * 2
    snap = await state.snapshot(c.record.session_id)
    assert snap is not None and snap.checksum_algorithm(c.uid) == "CRC64NVME"
    # An uploading file without one: only a late (single_put) file may still take one.
    sibling = await state.mark_uploading(c.record, c.sibling, c.now)
    assert (sibling.code, sibling.text()) == (Reply.OK, "")
    refused = await state.mark_uploading(c.record, c.sibling, c.now, algorithm="CRC32")
    assert (refused.code, refused.text()) == (Reply.CHECKSUM_CONFLICT, "")
    late = await state.mark_uploading(c.record, c.sibling, c.now, algorithm="CRC32", late=True)
    assert (late.code, late.text()) == (Reply.OK, "CRC32")


async def test_finish_complete_builds_the_library_again_when_another_checksum_was_recorded(
    state: UploadState, settings: Settings
) -> None:
    # Both files completing, both with an algorithm; the sibling's completion records its checksum first.
    c = await setup_case(state, settings, 901, G.UPLOADING, F.COMPLETING, sibling=F.COMPLETING)
    for uid in (c.uid, c.sibling):
        await state.redis.hset(state_key(c.record.session_id), file_field(FileField.CHECKSUM_ALGORITHM, uid), "CRC32")
    await state.redis.hset(state_key(c.record.session_id), file_field(FileField.ATTEMPT, c.sibling), "1")
    before = await state.snapshot(c.record.session_id)  # taken by our worker while the sibling still completes
    assert before is not None
    mine, theirs = Checksum("CRC32", "FULL_OBJECT", "NhCmhg=="), Checksum("CRC32", "FULL_OBJECT", "AAAAew==")
    library = LibraryTemplate.build({"sessionId": c.record.session_id}, now_ms=c.now)

    async def finish(uid: str, checksum: Checksum, seen: str) -> ScriptReply:
        return await state.finish_complete(
            c.record, uid, now_ms=c.now, retention_ms=10**6, library=library, processing_queue="q",
            checksum=checksum.encode(), checksums_seen=seen,
        )  # fmt: skip

    assert before.checksums_seen() == "\n"  # two files with an algorithm, none recorded yet
    assert (await finish(c.sibling, theirs, f"\n{theirs.encode()}")).code is Reply.FILE_COMPLETED
    stale = await finish(c.uid, mine, f"{mine.encode()}\n")  # built without the sibling's checksum
    assert stale.code is Reply.CHECKSUMS_CHANGED
    snap = await state.snapshot(c.record.session_id)
    assert snap is not None and snap.file_status(c.uid) is F.COMPLETING and snap.status is G.UPLOADING  # untouched
    assert snap.checksum(c.sibling) == theirs
    done = await finish(c.uid, mine, f"{mine.encode()}\n{theirs.encode()}")
    assert done.code is Reply.GROUP_COMPLETED
    after = await state.snapshot(c.record.session_id)
    assert after is not None and after.checksum(c.uid) == mine
