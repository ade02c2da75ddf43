"""The lifecycle vocabulary: every status has a place, every refusal an error code; bounded polling."""

from __future__ import annotations

import asyncio

import pytest

from app.domain.contract import FileRole, Layout, UploadStrategy
from app.domain.lifecycle import (
    LIVE_GROUP,
    OPEN_FILE,
    SETTLED_FILE,
    TERMINAL_GROUP,
    TRACKED_FILE,
    FileStatus,
    GroupStatus,
)
from app.domain.records import FileRecord, GroupRecord
from app.state import GroupSnapshot
from app.uploads import polling
from app.uploads.polling import poll_until
from app.uploads.refusals import file_refusal, group_refusal

GROUP_CODES = {
    GroupStatus.INITIALIZED: None, GroupStatus.UPLOADING: None, GroupStatus.COMPLETED: "session_completed",
    GroupStatus.CANCELED: "session_canceled", GroupStatus.EXPIRED: "session_expired",
    GroupStatus.FAILED: "session_failed",
}  # fmt: skip
FILE_CODES = {
    FileStatus.INITIALIZED: None, FileStatus.UPLOADING: None, FileStatus.COMPLETING: "file_completing",
    FileStatus.COMPLETED: "file_completed", FileStatus.CANCELED: "session_canceled",
    FileStatus.EXPIRED: "session_expired", FileStatus.FAILED: "file_failed",
}  # fmt: skip


def snapshot() -> GroupSnapshot:
    f = FileRecord(upload_id="u", role=FileRole.VIDEO, name="v.mov", total_bytes=1, part_size=1, total_parts=1,
                   strategy=UploadStrategy.SINGLE_PUT, language=None, ext=".mov")  # fmt: skip
    record = GroupRecord(session_id="s", account="a", key_prefix="a/s/", video_name="v", description=None,
                         layout=Layout.FLAT_2D, perspective=None, folder_name=None, created_ms=0, expires_ms=1,
                         files=(f,))  # fmt: skip
    return GroupSnapshot(record, {"r:u": "size_mismatch:wrong size"})


def test_sets_partition_the_statuses() -> None:
    assert set(GroupStatus) == LIVE_GROUP | TERMINAL_GROUP and not LIVE_GROUP & TERMINAL_GROUP
    assert OPEN_FILE < TRACKED_FILE and not TRACKED_FILE & SETTLED_FILE


@pytest.mark.parametrize("status", list(GroupStatus))
def test_every_group_status_is_either_live_or_refused_with_its_code(status: GroupStatus) -> None:
    assert set(GROUP_CODES) == set(GroupStatus)  # a new status must be given its answer here
    if GROUP_CODES[status] is None:
        assert status in LIVE_GROUP
        with pytest.raises(AssertionError):
            group_refusal(snapshot(), status)
    else:
        err = group_refusal(snapshot(), status)
        assert err.status == 409 and err.spec.code == GROUP_CODES[status]


@pytest.mark.parametrize("status", list(FileStatus))
def test_every_file_status_is_either_open_or_refused_with_its_code(status: FileStatus) -> None:
    assert set(FILE_CODES) == set(FileStatus)
    snap = snapshot()
    if FILE_CODES[status] is None:
        assert status in OPEN_FILE
        with pytest.raises(AssertionError):
            file_refusal(snap, snap.record.files[0], status)
    else:
        err = file_refusal(snap, snap.record.files[0], status)
        assert err.status == 409 and err.spec.code == FILE_CODES[status]
        if status is FileStatus.FAILED:
            assert "(size_mismatch): wrong size" in err.detail and err.extra == {"reason": "size_mismatch"}


async def test_poll_until_reads_at_once_then_until_done_or_time_is_up() -> None:
    reads: list[int] = []

    async def read() -> int:
        reads.append(len(reads))
        return reads[-1]

    assert await poll_until(read, lambda v: v == 3, within=10, interval=0) == (3, True)
    assert reads == [0, 1, 2, 3]
    reads.clear()
    value, done = await poll_until(read, lambda v: False, within=0, interval=0)
    assert (value, done, reads) == (0, False, [0])  # a zero wait still looks once
    assert await asyncio.wait_for(poll_until(read, lambda v: False, within=0.05, interval=0.01), 5) is not None


async def test_poll_until_backs_off_and_can_skip_looks_that_cannot_succeed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pauses between looks (a fake clock: no real waiting): 50 ms doubling to 1 s, the last look at the
    deadline; `first_after` delays the first look."""
    now = [0.0]
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(round(seconds, 6))
        now[0] += seconds

    monkeypatch.setattr(polling.asyncio, "sleep", sleep)
    monkeypatch.setattr(polling.time, "monotonic", lambda: now[0])
    looks: list[float] = []

    async def read() -> float:
        looks.append(round(now[0], 6))
        return now[0]

    await poll_until(read, lambda v: False, within=4.0)
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 0.45]
    assert looks == [0.0, 0.05, 0.15, 0.35, 0.75, 1.55, 2.55, 3.55, 4.0]  # 9 looks in 4 s, not 80
    pauses.clear()
    looks.clear()
    now[0] = 0.0
    assert await poll_until(read, lambda v: v >= 0.3, within=5.0, first_after=0.1) == (0.45, True)
    assert looks == [0.1, 0.15, 0.25, 0.45]  # the first look only after first_after
    now[0] = 0.0
    looks.clear()
    await poll_until(read, lambda v: False, within=0.0, first_after=0.1)
    assert looks == [0.0]  # a zero wait still looks once, at once
