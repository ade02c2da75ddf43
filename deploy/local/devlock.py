"""One `make run` per data dir and per API port: locks held for the stack's life, naming who holds them.

A second `make run` in the same checkout would otherwise share the API port with the first (granian binds with
SO_REUSEPORT, so both listen and requests alternate between two stacks) and overwrite, then delete, the first
one's dev.env. So a stack takes two flock()s before it touches anything:

- `<data dir>/devstack.lock`: one stack per data dir (its Valkey AOF and dev.env live there);
- `<temp dir>/spatialgen-devstack-<port>.lock`: one stack per API port on this machine, whatever its checkout.

Each lock file holds the holder's pid, API URL, data dir and checkout, so the refusal can name the running stack.
The kernel releases a lock when its holder dies however it dies (SIGKILL too): there is no stale pid file to
clean up. Lock files are never deleted (a delete races with a second stack opening the file); the holder
empties its file on the way out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DATA_LOCK_FILE = "devstack.lock"


class StackConflict(Exception):
    """Another stack (or another program) holds what this one needs; the message says which and what to do."""


@dataclass(frozen=True)
class Holder:
    """What a lock file says about the stack holding it."""

    pid: str
    api_url: str
    data_dir: str
    checkout: str

    def describe(self) -> str:
        return f"pid {self.pid or '?'}, API {self.api_url or '?'}, data dir {self.data_dir or '?'}" + (
            f", started in {self.checkout}" if self.checkout else ""
        )


def port_lock_path(port: int) -> Path:
    """The machine-wide lock of one API port."""
    return Path(tempfile.gettempdir()) / f"spatialgen-devstack-{port}.lock"


def read_holder(path: Path) -> Holder:
    """The holder a lock file names (empty fields if it names none)."""
    values: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8").splitlines():
            name, sep, value = line.partition("=")
            if sep:
                values[name.strip()] = value.strip()
    return Holder(values.get("pid", ""), values.get("api_url", ""), values.get("data_dir", ""),
                  values.get("checkout", ""))  # fmt: skip


def _how_to_stop(holder: Holder) -> str:
    pid = f"`kill {holder.pid}`" if holder.pid else "its pid"
    return f"Stop it with Ctrl-C in its terminal (or {pid})"


def _data_dir_taken(lock: StackLock, holder: Holder) -> str:
    data = lock.data_dir
    other = data.with_name(data.name + "2") if data.name else Path(".data2")
    return (
        f"a dev stack already runs on the data dir {data} ({holder.describe()}); "
        f"its CLI tools read {data / 'dev.env'}, which this one leaves alone.\n"
        f"{_how_to_stop(holder)}, or run a second stack with its own data dir and port:\n"
        f"  SPATIALGEN_DATA_DIR={other} SPATIALGEN_PORT={lock.port + 1} make run"
    )


def _port_taken(lock: StackLock, holder: Holder) -> str:
    return (
        f"port {lock.port} is taken by another dev stack ({holder.describe()}).\n"
        f"{_how_to_stop(holder)}, or run this one on another port:\n"
        f"  SPATIALGEN_PORT={lock.port + 1} make run"
    )


class StackLock:
    """The locks of one running stack: its data dir and its API port (`acquire`, then `release` at the end)."""

    def __init__(self, data_dir: Path, host: str, port: int) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.api_url = f"http://{host}:{port}"
        self._fds: list[int] = []

    def acquire(self) -> None:
        """Take both locks and check the port is free; StackConflict (nothing changed) if any is taken."""
        try:
            self._take(self.data_dir / DATA_LOCK_FILE, _data_dir_taken)
            self._take(port_lock_path(self.port), _port_taken)
            self._check_port_free()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Empty the lock files and let go of the locks."""
        for fd in reversed(self._fds):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the flock
        self._fds.clear()

    def _take(self, path: Path, explain: Callable[[StackLock, Holder], str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:  # another user's port lock: readable, not ours to write
            raise StackConflict(explain(self, read_holder(path))) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StackConflict(explain(self, read_holder(path))) from None
            raise
        self._fds.append(fd)
        record = {"pid": str(os.getpid()), "api_url": self.api_url, "data_dir": str(self.data_dir.resolve()),
                  "checkout": os.getcwd()}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, "".join(f"{k}={v}\n" for k, v in record.items()).encode(), 0)

    def _check_port_free(self) -> None:
        """Something that is no dev stack (or a stack started before these locks existed) may hold the port."""
        with socket.socket() as probe:
            # SO_REUSEADDR lets a port in TIME_WAIT (a stack just stopped) pass; on Linux a listener still refuses.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise StackConflict(
                    f"port {self.port} on {self.host} is taken ({exc.strerror}): something already listens there "
                    f"(`ss -ltnp 'sport = :{self.port}'` shows what). Stop it, or run this stack on another port:\n"
                    f"  SPATIALGEN_PORT={self.port + 1} make run"
                ) from None
