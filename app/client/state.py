"""The resume state: a small JSON file per upload group, and the idempotency key derived from the inputs.

No ETag is recorded: on resume, storage itself says what it holds (GET .../parts). A file with a checksum algorithm
keeps its parts' checksums (the whole file's is combined from them, so a resume need not read again the parts
storage holds). State files are the owner's alone (0600, in a folder created 0700): they name the service, the
session and local paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from app.client.errors import StateFileError

STATE_DIR = ".spatialgen-upload"
"""Default folder of state files, in the current directory: `<STATE_DIR>/<sessionId>.json`."""
STATE_VERSION = 1
SAMPLE_BYTES = 64 * 1024
"""Bytes hashed at each end of a file for its fingerprint (changes in content usually show there)."""
FILE_MODE = 0o600
DIR_MODE = 0o700


class FileState(msgspec.Struct, rename="camel", kw_only=True):
    """One file of the group: where it is locally and how the service cut it into parts."""

    upload_id: str
    path: str
    file_name: str
    file_role: str
    size_bytes: int
    part_size_bytes: int
    total_parts: int
    upload_strategy: str
    language_tag: str | None = None
    mtime_ns: int = 0
    """Modification time when the group was created; 0 if unknown (resumed from another machine)."""
    completed: bool = False
    checksum_algorithm: str | None = None
    """The file's checksum algorithm (CRC64NVME, ...), as the service recorded it; None: no checksums."""
    part_checksums: dict[int, str] = {}
    """Part number → base64 checksum of the parts computed so far."""


class SessionState(msgspec.Struct, rename="camel", kw_only=True):
    """What a resume needs: the service, the group, the local files; never the API key."""

    api_url: str
    session_id: str
    video_name: str
    files: list[FileState]
    idempotency_key: str | None = None
    status: str = "uploading"
    """`uploading`, `completed` or `canceled`, as far as this client knows."""
    library_id: int | None = None
    version: int = STATE_VERSION


_encoder = msgspec.json.Encoder()


def state_path(directory: Path, session_id: str) -> Path:
    """Where the state of a session lives in a state folder."""
    return directory / f"{session_id}.json"


def save_state(state: SessionState, path: Path) -> None:
    """Write the state atomically and privately: a temporary file, created 0600, renamed over the old one (a crash
    mid-write leaves the previous version, never half a file; a looser old file is replaced by a 0600 one)."""
    _state_folder(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600, O_EXCL
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(msgspec.json.format(_encoder.encode(state), indent=2) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _state_folder(directory: Path) -> None:
    """Create a missing state folder 0700; make the default one (STATE_DIR, ours by its name) 0700 if it is not.

    Any other existing folder is left as it is: --state-dir or a --state file can name a folder that is not the
    uploader's alone (the current directory, a home, /tmp), and the state files in it are 0600 anyway.
    """
    try:
        directory.mkdir(mode=DIR_MODE, parents=True)
        directory.chmod(DIR_MODE)  # mkdir's mode goes through the umask
    except FileExistsError:
        if directory.name == STATE_DIR and stat.S_IMODE(directory.stat().st_mode) & 0o077:
            with contextlib.suppress(PermissionError):  # another user's: not ours to change, our files are 0600
                directory.chmod(DIR_MODE)


def remove_state(path: Path | None, *, default_dir: bool) -> None:
    """Remove a completed group's state file (a repeat of the same send finds the group through its Idempotency-Key
    for 24 h, and then has nothing left to do); with default_dir, an emptied state folder goes too."""
    if path is None:
        return
    path.unlink(missing_ok=True)
    if default_dir:
        with contextlib.suppress(OSError):  # not empty, or not ours to remove
            path.parent.rmdir()


def load_state(path: Path) -> SessionState:
    """Read a state file; StateFileError if it is missing, not one of ours, or open to others and not ours to close.

    A state file others can read or write (one an older client wrote with the umask's 0644) is made 0600 first.
    """
    try:
        with open(path, "rb") as fh:
            _make_private(fh.fileno(), path)
            raw = fh.read()
    except FileNotFoundError:
        raise StateFileError(f"no state file at {path}") from None
    except OSError as exc:
        raise StateFileError(f"cannot read state file {path}: {exc.strerror}") from None
    try:
        state = msgspec.json.decode(raw, type=SessionState)
    except msgspec.DecodeError as exc:
        raise StateFileError(f"{path} is not an upload state file: {exc}") from None
    if state.version != STATE_VERSION:
        raise StateFileError(f"{path} has state version {state.version}; this client reads {STATE_VERSION}")
    return state


def _make_private(fd: int, path: Path) -> None:
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if not mode & 0o077 or os.name != "posix":  # Windows has no such bits (any file shows 0666)
        return
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError as exc:  # another user's file: someone else could have written it
        raise StateFileError(
            f"{path} is open to other users (mode {mode:04o}) and cannot be made private ({exc.strerror}); "
            f"it is not used: check who wrote it, then chmod 600 {path}"
        ) from None


def states_in(directory: Path) -> Iterator[tuple[Path, SessionState]]:
    """Every readable state file of a state folder (others are skipped: they may belong to another tool)."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.json")):
        try:
            yield path, load_state(path)
        except StateFileError:
            continue


def find_state(directory: Path, api_url: str, idempotency_key: str) -> tuple[Path, SessionState] | None:
    """The state of an earlier run with the same inputs against the same service, if any."""
    for path, state in states_in(directory):
        if state.idempotency_key == idempotency_key and state.api_url == api_url:
            return path, state
    return None


def fingerprint(path: Path, size: int) -> str:
    """A cheap content fingerprint: SHA-256 over the size and the first and last 64 KiB."""
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(SAMPLE_BYTES))
        if size > SAMPLE_BYTES:
            fh.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
            h.update(fh.read(SAMPLE_BYTES))
    return h.hexdigest()


def idempotency_key(body: dict[str, Any], fingerprints: Sequence[str], *, fresh: bool = False) -> str:
    """The Idempotency-Key of a start request: the same body and file contents give the same key on any machine.

    The service replays the first answer for a key it has seen (same account, 24 h), so re-running the same
    upload continues the same group instead of making a second one. `fresh` salts it: always a new group.
    """
    h = hashlib.sha256(msgspec.json.encode(body, order="sorted"))
    for fp in fingerprints:
        h.update(fp.encode())
    if fresh:
        h.update(secrets.token_bytes(16))
    return f"sgu1-{h.hexdigest()}"
