"""Who can read the uploader's state files: 0600 in a 0700 folder, written atomically through a 0600 temporary;
older looser ones are made private, or refused when they cannot be.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.client.errors import StateFileError
from app.client.state import (
    STATE_DIR,
    FileState,
    SessionState,
    load_state,
    save_state,
    state_path,
    states_in,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- state files are the owner's alone ------------------------------------------------------------


def session(url: str = "http://api") -> SessionState:
    f = FileState(upload_id="u1", path="/data/l.mov", file_name="l.mov", file_role="video", size_bytes=12,
                  part_size_bytes=5, total_parts=3, upload_strategy="multipart")  # fmt: skip
    return SessionState(api_url=url, session_id="s1", video_name="Film", files=[f], idempotency_key="k")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away: modes must come from the code, not from the umask."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_state_files_are_written_0600_in_a_folder_created_0700_through_a_0600_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed: list[tuple[str, int]] = []
    replace = os.replace

    def watched(src: Any, dst: Any) -> None:
        renamed.append((Path(src).name, mode_of(Path(src))))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", watched)
    for folder in (tmp_path / STATE_DIR, tmp_path / "deeper" / "states"):
        path = state_path(folder, "s1")
        save_state(session(), path)
        assert (mode_of(folder), mode_of(path)) == (0o700, 0o600)
        assert [p.name for p in folder.iterdir()] == ["s1.json"]  # no temporary left behind
    assert [mode for _, mode in renamed] == [0o600, 0o600]
    assert all(name.startswith(".s1.json.") and name.endswith(".tmp") for name, _ in renamed)


def test_a_write_that_fails_midway_leaves_the_previous_state_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = state_path(tmp_path, "s1")
    save_state(session(), path)
    before = path.read_bytes()

    def crash(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="No space left"):
        save_state(session("http://other"), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["s1.json"]


@pytest.mark.parametrize("mode", [0o644, 0o664, 0o666, 0o640, 0o604], ids=oct)
def test_an_older_looser_state_file_is_made_private_when_read_or_written(tmp_path: Path, mode: int) -> None:
    path = state_path(tmp_path, "s1")
    save_state(session(), path)
    path.chmod(mode)
    assert load_state(path) == session() and mode_of(path) == 0o600
    path.chmod(mode)
    save_state(session(), path)
    assert mode_of(path) == 0o600


def test_the_default_state_folder_is_made_private_and_no_other_folder_is_touched(tmp_path: Path) -> None:
    ours, shared = tmp_path / STATE_DIR, tmp_path / "shared"
    for folder in (ours, shared):
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)
        save_state(session(), state_path(folder, "s1"))
    assert (mode_of(ours), mode_of(shared)) == (0o700, 0o755)
    assert mode_of(state_path(shared, "s1")) == 0o600


def test_a_default_state_folder_of_another_user_is_used_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = tmp_path / STATE_DIR
    ours.mkdir(mode=0o777)
    ours.chmod(0o777)

    def not_yours(self: Path, mode: int) -> None:  # as for another user's folder (root may chmod anything)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "chmod", not_yours)
    save_state(session(), state_path(ours, "s1"))
    assert mode_of(ours) == 0o777 and mode_of(state_path(ours, "s1")) == 0o600


def test_a_looser_state_file_that_cannot_be_made_private_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = state_path(tmp_path, "s1")
    save_state(session(), path)
    path.chmod(0o646)

    def not_yours(fd: int, mode: int) -> None:  # as for another user's file (root may chmod anything)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", not_yours)
    with pytest.raises(StateFileError) as caught:
        load_state(path)
    assert str(caught.value) == (
        f"{path} is open to other users (mode 0646) and cannot be made private (Operation not permitted); it is "
        f"not used: check who wrote it, then chmod 600 {path}"
    )
    assert list(states_in(tmp_path)) == []  # a send's search for an earlier run skips it
