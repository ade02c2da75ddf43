"""Showing progress: rich bars on a terminal, one JSON event per line (--json), or plain lines otherwise.

Each renderer is a Reporter (it takes events); the command picks one.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

import msgspec

from app.client.events import (
    BytesSent,
    Event,
    FileCompleted,
    FileStarted,
    GroupCompleted,
    GroupStarted,
    PartDone,
    Retry,
)

_encoder = msgspec.json.Encoder()


def human_bytes(n: float) -> str:
    """`1.5 GiB`-style size."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def describe_checksum(event: FileCompleted) -> str:
    """`, CRC64NVME FULL_OBJECT abc= (verified)` for a file with a checksum, else nothing."""
    c = event.checksum
    if c is None:
        return ""
    return f", {c.algorithm} {c.type} {c.value} " + ("(verified)" if c.verified else "(recorded, not compared)")


def describe_retry(event: Retry) -> str:
    """One line about a retry, for people."""
    what = f"part {event.part_number}" if event.what == "part" else f"{event.call} call"
    then = "new URL, " if event.new_url else ""
    return f"retry {what} (failure {event.attempt}: {event.reason}); {then}next try in {event.delay_seconds:.1f} s"


class JsonLines:
    """Writes every event but bytes_sent as one JSON object per line (for scripts and CI logs)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: Event) -> None:
        if isinstance(event, BytesSent):
            return
        self.stream.write(_encoder.encode(event).decode() + "\n")
        self.stream.flush()


class PlainLines:
    """Plain lines on stderr when there is no terminal: each file's start and end, retries, every 10 % overall."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = 0
        self.held: dict[str, int] = {}  # upload id -> bytes sent or held by storage
        self.sent = 0  # bytes sent by this run (the throughput; what storage held before is not)
        self.started = time.monotonic()
        self.next_tenth = 1
        self.names: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, BytesSent):
            self.held[event.upload_id] = self.held.get(event.upload_id, 0) + event.size_bytes
            self.sent += event.size_bytes
            self._tenths()
        elif isinstance(event, GroupStarted):
            resumed = ", resumed" if event.resumed else ""
            self.total = event.total_bytes
            self._line(f"group {event.session_id}: {event.file_count} files, {human_bytes(event.total_bytes)}{resumed}")
        elif isinstance(event, FileStarted):
            self.names[event.upload_id] = event.file_name
            self.held[event.upload_id] = event.present_bytes  # again after a re-listing: what storage holds now
            held = f", storage holds {event.present_parts}" if event.present_parts else ""
            self._line(f"{event.file_name}: {event.missing_parts} of {event.total_parts} parts to send{held}")
            self._tenths()  # a file storage already holds moves the total too
        elif isinstance(event, Retry):
            where = f"{self.names.get(event.upload_id or '', '')}: " if event.upload_id else ""
            self._line(where + describe_retry(event))
        elif isinstance(event, FileCompleted):
            before = " (before this run)" if event.already else ""
            self._line(f"{event.file_name}: completed{before}{describe_checksum(event)}")
        elif isinstance(event, GroupCompleted):
            self._line(f"group {event.session_id} completed: libraryId {event.library_id}")

    def _tenths(self) -> None:
        """The overall line, each time another tenth of the group's bytes is held."""
        if not self.total:
            return
        done = self.done
        # Progress can go back (a failed attempt rewound, a file listed again): the next line is then due sooner.
        self.next_tenth = min(self.next_tenth, done * 10 // self.total + 1)
        if done * 10 >= self.next_tenth * self.total:
            self.next_tenth = done * 10 // self.total + 1
            self._line(self._overall())

    @property
    def done(self) -> int:
        """Bytes of the group sent or held by storage."""
        return sum(self.held.values())

    def _overall(self) -> str:
        elapsed = time.monotonic() - self.started
        done = self.done
        rate = self.sent / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        return (f"{human_bytes(done)} of {human_bytes(self.total)} ({100 * done // self.total} %), "
                f"{human_bytes(rate)}/s, ETA {eta:.0f} s")  # fmt: skip

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


class RichBars:
    """Per-file and total bars with bytes, throughput and ETA on a terminal (stderr), via rich.progress."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            refresh_per_second=4,
        )
        self.tasks: dict[str, TaskID] = {}
        self.names: dict[str, str] = {}
        self.total: TaskID | None = None

    def __enter__(self) -> RichBars:
        self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:  # noqa: C901, PLR0912 - one branch per event type
        p = self.progress
        if isinstance(event, BytesSent):
            task = self.tasks.get(event.upload_id)
            if task is not None:
                p.advance(task, event.size_bytes)
            if self.total is not None:
                p.advance(self.total, event.size_bytes)
        elif isinstance(event, GroupStarted):
            resumed = " (resumed)" if event.resumed else ""
            p.console.print(f"upload group {event.session_id}: {event.file_count} files{resumed}")
            self.total = p.add_task("[bold]total", total=event.total_bytes)
        elif isinstance(event, FileStarted):
            self.names[event.upload_id] = event.file_name
            task = self.tasks.get(event.upload_id)
            if task is None:
                # Bytes storage already held are a starting point, not throughput.
                self.tasks[event.upload_id] = p.add_task(
                    event.file_name, total=event.total_bytes, completed=event.present_bytes
                )
            else:
                p.reset(task, total=event.total_bytes, completed=event.present_bytes)
            if self.total is not None and event.present_bytes:
                held = int(sum(t.completed for t in p.tasks if t.id != self.total))
                p.reset(self.total, completed=held)
        elif isinstance(event, Retry):
            where = f"{self.names.get(event.upload_id or '', '')}: " if event.upload_id else ""
            p.console.print(f"[yellow]{where}{describe_retry(event)}")
        elif isinstance(event, PartDone):
            pass
        elif isinstance(event, FileCompleted):
            task = self.tasks.get(event.upload_id)
            if task is not None:
                p.update(task, description=f"[green]✓ {event.file_name}")
            if event.checksum is not None:
                p.console.print(f"{event.file_name}: completed{describe_checksum(event)}")
        elif isinstance(event, GroupCompleted):
            p.console.print(f"[green]upload group {event.session_id} completed: libraryId {event.library_id}")
