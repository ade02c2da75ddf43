"""The resume state: a small JSON file per upload group, and the idempotency key derived from the inputs.

No part or ETag is recorded: on resume, storage itself says what it holds (GET .../parts).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
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
    """Write the state atomically (a crash mid-write leaves the previous version, never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.json.format(_encoder.encode(state), indent=2) + b"\n")
    os.replace(tmp, path)


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
    """Read a state file; StateFileError if it is missing or not one of ours."""
    try:
        raw = path.read_bytes()
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
