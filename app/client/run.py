"""The transfer engine of one group: part workers, fresh URLs, retries and completion, over the API client.

At most `parallel` parts are in flight across all files: that many workers take parts from one queue ordered by
file, so the first files finish (and are completed) while later ones still upload. A part that fails is retried
with backoff (a fresh URL when storage refused the old one); too many failures in a row stop the run, resumable.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from app.client.api import ServiceClient
from app.client.errors import PartFailed, ServiceError, SessionGone, StateFileError, first_error
from app.client.events import (
    BytesSent,
    FileChecksum,
    FileCompleted,
    FileStarted,
    GroupCompleted,
    GroupStarted,
    PartDone,
    Reporter,
    Retry,
)
from app.client.integrity import FileChecksums, Verified, check_signed
from app.client.models import CompletedFile, FileProgress, PartUrl
from app.client.plan import (
    GROUP_DEAD,
    REFRESH_MARGIN_SECONDS,
    FileAction,
    check_part_url,
    file_action,
    missing_parts,
    part_range,
    present_parts,
    url_batch,
)
from app.client.retry import COMPLETE_FOLLOW_SECONDS
from app.client.state import FileState, SessionState, save_state
from app.client.transfer import PutFailure

COMPLETE_ROUNDS = 3
"""Completions tried per file when storage refuses the part list (parts are listed and sent again in between)."""
COMPLETING_POLL_SECONDS = 1.0
SAVE_EVERY_SECONDS = 1.0
"""State files with part checksums are written again at most this often while parts are sent (and at the end)."""


@dataclass(frozen=True)
class UploadResult:
    """How a group upload ended."""

    session_id: str
    library_id: int | None
    bytes_sent: int
    """Bytes this run sent (parts storage already held are not counted)."""
    seconds: float
    resumed: bool
    state_file: Path | None


class UrlBook:
    """Presigned URLs of one file's pending parts, fetched in batches just before they are needed."""

    def __init__(self, client: ServiceClient, session_id: str, file: FileRun, on_progress: Reporter) -> None:
        self.client = client
        self.session_id = session_id
        self.file = file
        self.on_progress = on_progress
        self._urls: dict[int, tuple[PartUrl, float]] = {}
        self._lock = asyncio.Lock()

    async def get(self, part_number: int) -> PartUrl:
        """A URL for the part that is not about to expire."""
        if not self._usable(part_number):
            async with self._lock:  # one part-urls call at a time per file; the others find its answer
                if not self._usable(part_number):
                    await self._fetch(part_number)
        return self._urls[part_number][0]

    def done(self, part_number: int) -> None:
        """Drop the URL of a part storage has accepted."""
        self._urls.pop(part_number, None)

    def forget(self) -> None:
        """Drop every URL: one was refused or expired, and its siblings were signed at the same time."""
        self._urls.clear()

    def _usable(self, part_number: int) -> bool:
        entry = self._urls.get(part_number)
        if entry is None:
            return False
        url, fetched = entry
        expires = datetime.fromisoformat(url.expires_at).timestamp()
        # Refresh ahead of expiry (a PUT started just before expiresAt fails), but with short-lived URLs
        # never by more than a quarter of their lifetime, or every URL would look stale at once.
        margin = min(REFRESH_MARGIN_SECONDS, (expires - fetched) / 4)
        return time.time() < expires - margin

    async def _fetch(self, part_number: int) -> None:
        f = self.file
        pending = sorted(n for n in f.pending if n not in self._urls)
        batch = url_batch(part_number, pending)
        sums = None
        if f.sums.enabled:  # a URL signs its part's checksum: only parts whose checksum is known (`part_number`'s is)
            sums = {n: v for n in batch if (v := f.sums.known(n)) is not None}
        answer = await self.client.part_urls(self.session_id, f.state.upload_id, None if sums else batch,
                                             checksums=sums, on_progress=self.on_progress)  # fmt: skip
        now = time.time()
        for p in answer.parts:
            check_part_url(p, part_size=f.state.part_size_bytes, total_bytes=f.state.size_bytes)
            if sums is not None:
                check_signed(p, f.sums.algorithm or "", sums.get(p.part_number))
            self._urls[p.part_number] = (p, now)
        if part_number not in self._urls:
            raise ServiceError(502, "inconsistent_answer", f"no URL for part {part_number} in the answer",
                               call="part-urls")  # fmt: skip


@dataclass(eq=False)
class FileRun:
    """One file during a run: what is left to send and the ETags of what storage holds."""

    index: int
    state: FileState
    pending: set[int] = field(default_factory=set)
    etags: dict[int, str] = field(default_factory=dict)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    urls: UrlBook | None = None
    sums: FileChecksums = field(init=False)
    resend: set[int] = field(default_factory=set)
    """Parts to send again although storage holds them (storage refused their checksum at completion)."""

    def __post_init__(self) -> None:
        self.sums = FileChecksums(self.state)

    @property
    def path(self) -> Path:
        """The local file."""
        return Path(self.state.path)


class GroupRun:
    """One run over a group: the part workers, one driver per file, and the state file kept current."""

    def __init__(self, client: ServiceClient, state: SessionState, path: Path | None, on_progress: Reporter) -> None:
        self.client = client
        self.state = state
        self.state_file = path
        self.report = on_progress
        self.files = [FileRun(i, fs) for i, fs in enumerate(state.files)]
        for f in self.files:
            f.urls = UrlBook(client, state.session_id, f, on_progress)
        self.queue: asyncio.PriorityQueue[tuple[int, int]] = asyncio.PriorityQueue()
        self.unfinished = len(self.files)
        self.bytes_sent = 0
        self.library_id: int | None = None
        self.started = time.monotonic()
        self.saved = 0.0

    async def run(self, *, resumed: bool) -> UploadResult:
        """Upload and complete every file not completed yet; returns once the group is completed."""
        sid = self.state.session_id
        progress: dict[str, FileProgress] = {}
        if resumed:
            try:
                status = await self.client.group_status(sid, on_progress=self.report)
            except ServiceError as exc:
                if (exc.status, exc.code) == (404, "session_not_found"):
                    named = str(self.state_file) if self.state_file else None
                    raise SessionGone(sid, self.client.base_url, named, call="status") from None
                raise
            if status.status in GROUP_DEAD:
                why = f"upload group {sid} is {status.status}; start a new group (send --new)"
                raise ServiceError(409, f"session_{status.status}", why)
            if {f.upload_id for f in status.files} != {f.upload_id for f in self.state.files}:
                raise StateFileError(f"the files of upload group {sid} are not the ones in its state")
            progress = {f.upload_id: f for f in status.files}
            self.library_id = status.library_id
        total = sum(f.size_bytes for f in self.state.files)
        self.report(GroupStarted(session_id=sid, video_name=self.state.video_name, file_count=len(self.files),
                                 total_bytes=total, resumed=resumed))  # fmt: skip
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(self.client.parallel):
                    tg.create_task(self._worker())
                for f in self.files:
                    tg.create_task(self._drive(f, progress.get(f.state.upload_id)))
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        if self.library_id is None:  # every file was completed before this run, or by another client
            self.library_id = (await self.client.group_status(sid, on_progress=self.report)).library_id
        self.state.status = "completed"
        self.state.library_id = self.library_id
        self._save()
        seconds = time.monotonic() - self.started
        self.report(GroupCompleted(session_id=sid, library_id=self.library_id, bytes_sent=self.bytes_sent,
                                   seconds=round(seconds, 3)))  # fmt: skip
        return UploadResult(sid, self.library_id, self.bytes_sent, seconds, resumed, self.state_file)

    def _save(self) -> None:
        if self.state_file is not None:
            save_state(self.state, self.state_file)
            self.saved = time.monotonic()

    def _save_soon(self) -> None:
        """Keep the parts' checksums in the state file, at most once a SAVE_EVERY_SECONDS."""
        if time.monotonic() - self.saved >= SAVE_EVERY_SECONDS:
            self._save()

    # --- one file ----------------------------------------------------------------------------

    async def _drive(self, f: FileRun, progress: FileProgress | None) -> None:
        """Bring one file to `completed`: learn what storage holds, queue the rest, complete, re-sync if refused."""
        fs = f.state
        action = FileAction.UPLOAD
        if progress is not None:
            action = file_action(progress.status, file_name=fs.file_name, failure_reason=progress.failure)
            if action is FileAction.WAIT:
                progress = await self._wait_while_completing(fs)
                action = file_action(progress.status, file_name=fs.file_name, failure_reason=progress.failure)
        if action is FileAction.SKIP:
            self.report(FileStarted(upload_id=fs.upload_id, file_name=fs.file_name, total_bytes=fs.size_bytes,
                                    total_parts=fs.total_parts, present_parts=fs.total_parts,
                                    present_bytes=fs.size_bytes))  # fmt: skip
            self._file_done(f, None, already=True, checksum=f.sums.verify(progress.checksum if progress else None))
            return
        # A file that never left `initialized` was never given a URL, so storage cannot hold any of it.
        listed = progress is not None and progress.status != "initialized"
        for round_ in range(1, COMPLETE_ROUNDS + 1):
            present = await self._present(f) if listed else {}
            present = {n: etag for n, etag in present.items() if n not in f.resend}
            f.resend.clear()
            missing = missing_parts(fs.total_parts, present)
            f.etags = dict(present)
            f.pending = set(missing)
            f.drained.clear()
            present_bytes = sum(_part_bytes(fs, n) for n in present)
            self.report(FileStarted(upload_id=fs.upload_id, file_name=fs.file_name, total_bytes=fs.size_bytes,
                                    total_parts=fs.total_parts, present_parts=len(present),
                                    present_bytes=present_bytes, missing_parts=len(missing)))  # fmt: skip
            await self._send(f, present, missing)
            try:
                done = await self._complete(f)
            except ServiceError as exc:
                if round_ == COMPLETE_ROUNDS or not _repairable(f, exc):
                    raise
                self.report(Retry(what="api", call="complete", reason=f"{exc.status} {exc.code}", attempt=round_,
                                  delay_seconds=0.0, upload_id=fs.upload_id))  # fmt: skip
                listed = True
                continue
            self._file_done(f, done.library_id, already=False, checksum=f.sums.verify(done.checksum))
            return

    async def _send(self, f: FileRun, present: dict[int, str], missing: list[int]) -> None:
        """Queue the missing parts and wait until the workers have sent them all."""
        for n in missing:
            self.queue.put_nowait((f.index, n))
        # Parts storage held before the state file kept their checksums are read locally once, meanwhile.
        filling = asyncio.ensure_future(f.sums.fill(sorted(present))) if f.sums.enabled and present else None
        try:
            if missing:
                await f.drained.wait()
            if filling is not None:
                await filling
        finally:
            if filling is not None:
                filling.cancel()

    async def _complete(self, f: FileRun) -> CompletedFile:
        """Complete the file with its parts' ETags and, with a checksum algorithm, their checksums and the whole's."""
        fs = f.state
        parts = sorted(f.etags.items()) if fs.upload_strategy == "multipart" else None
        part_sums, whole = None, None
        if f.sums.enabled:
            await f.sums.fill(f.etags)  # each part was computed before its PUT: nothing left to read
            part_sums, whole = (f.sums.parts() if parts else None), f.sums.whole()
            self._save()
        return await self.client.complete_file(self.state.session_id, fs.upload_id, parts, part_checksums=part_sums,
                                               checksum=whole, on_progress=self.report)  # fmt: skip

    async def _present(self, f: FileRun) -> dict[int, str]:
        fs = f.state
        received = await self.client.received_parts(self.state.session_id, fs.upload_id, on_progress=self.report)
        return present_parts(received.parts, part_size=fs.part_size_bytes, total_bytes=fs.size_bytes,
                             total_parts=fs.total_parts)  # fmt: skip

    async def _wait_while_completing(self, fs: FileState) -> FileProgress:
        """Poll the group while a worker assembles the file (the run that asked for it may have died)."""
        deadline = time.monotonic() + COMPLETE_FOLLOW_SECONDS
        while True:
            status = await self.client.group_status(self.state.session_id, on_progress=self.report)
            current = next(f for f in status.files if f.upload_id == fs.upload_id)
            if current.status != "completing":
                if status.library_id is not None:
                    self.library_id = status.library_id
                return current
            if time.monotonic() > deadline:
                raise ServiceError(202, "still_completing", f"{fs.file_name} is still being completed", call="status")
            await asyncio.sleep(COMPLETING_POLL_SECONDS)

    def _file_done(self, f: FileRun, library_id: int | None, *, already: bool, checksum: Verified | None) -> None:
        f.state.completed = True
        if library_id is not None:
            self.library_id = library_id
        self._save()
        shown = None
        if checksum is not None:
            shown = FileChecksum(algorithm=checksum.algorithm, type=checksum.type, value=checksum.value,
                                 verified=checksum.verified)  # fmt: skip
        self.report(FileCompleted(upload_id=f.state.upload_id, file_name=f.state.file_name, library_id=library_id,
                                  already=already, checksum=shown))  # fmt: skip
        self.unfinished -= 1
        if self.unfinished == 0:  # every file is completed: let the workers go
            for _ in range(self.client.parallel):
                self.queue.put_nowait((len(self.files), 0))

    # --- parts -------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            index, n = await self.queue.get()
            if index == len(self.files):
                return
            f = self.files[index]
            await self._send_part(f, n)
            f.pending.discard(n)
            if not f.pending:
                f.drained.set()

    async def _send_part(self, f: FileRun, n: int) -> None:
        """PUT one part until storage takes it; a fresh URL after a refusal; give up after too many failures."""
        fs = f.state
        assert f.urls is not None
        start, end = part_range(n, fs.part_size_bytes, fs.size_bytes)
        uid = fs.upload_id

        def on_bytes(k: int) -> None:
            self.report(BytesSent(upload_id=uid, size_bytes=k))

        if f.sums.enabled:  # before the URL, which signs it
            await f.sums.part(n)
        failures = 0
        while True:
            url = await f.urls.get(n)
            try:
                etag = await self.client.put_part(
                    url.url, f.path, start, end - start, on_bytes=on_bytes, headers=url.headers, expect=f.sums.expect(n)
                )
            except PutFailure as exc:
                failures += 1
                if exc.sent:
                    self.report(BytesSent(upload_id=uid, size_bytes=-exc.sent))
                if exc.new_url:
                    f.urls.forget()
                if failures >= self.client.part_failures:
                    raise PartFailed(fs.file_name, n, failures, exc.reason) from None
                # A first refusal is most likely an expired URL: fetch a new one at once.
                first_refusal = exc.new_url and failures == 1
                delay = 0.0 if first_refusal else self.client.backoff.delay(failures, exc.retry_after)
                self.report(Retry(what="part", reason=exc.reason, attempt=failures, delay_seconds=round(delay, 3),
                                  upload_id=uid, part_number=n, new_url=exc.new_url))  # fmt: skip
                await asyncio.sleep(delay)
                continue
            f.urls.done(n)
            f.etags[n] = etag
            self.bytes_sent += end - start
            self.report(PartDone(upload_id=uid, file_name=fs.file_name, part_number=n, size_bytes=end - start,
                                 attempts=failures + 1))  # fmt: skip
            if f.sums.enabled:
                self._save_soon()
            return


def _repairable(f: FileRun, exc: ServiceError) -> bool:
    """Whether another round can fix a refused completion: storage lacks a part (a part vanished, or an ETag
    differs: list again, resend), or it found a part whose checksum is not the one kept here (compute it again
    from the file and send the part again)."""
    if exc.code == "checksum_mismatch" and exc.part_number is not None:
        f.state.part_checksums.pop(exc.part_number, None)
        f.resend.add(exc.part_number)
        return True
    return exc.code == "missing_parts"


def _part_bytes(fs: FileState, part_number: int) -> int:
    start, end = part_range(part_number, fs.part_size_bytes, fs.size_bytes)
    return end - start
