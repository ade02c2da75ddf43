"""Where the uploader's API key may come from and go to, and who can read the state files it writes.

The key goes only to the URL configured for the run, never to one a state file names; it is read from the
environment or a private file, never from an argument; state files are 0600 in a 0700 folder, written atomically.
Servers here are loopback listeners in a thread that record what reaches them and answer 404.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.client import cli, config
from app.client.errors import ConfigError, StateFileError
from app.client.state import (
    STATE_DIR,
    FileState,
    SessionState,
    load_state,
    save_state,
    state_path,
    states_in,
)

ROOT = Path(__file__).resolve().parents[2]
SID = "5ea97a59-0000-4000-8000-000000000001"
KEY = "sgk_secret-key-for-tests"


class Listener:
    """An HTTP server on a free loopback port that records every request (path and API key) and answers 404."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                seen.append((self.path, self.headers.get("X-SPATIALGEN-APPKEY")))
                body = json.dumps({"status": 404, "code": "session_not_found", "title": "t", "detail": "d"}).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def configured() -> Iterator[Listener]:
    """The service configured for the run."""
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture
def recorded() -> Iterator[Listener]:
    """Another server, named only by a state file."""
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with no SPATIALGEN_API_* variables and no dev.env."""
    monkeypatch.chdir(tmp_path)
    for name in ("SPATIALGEN_API_URL", "SPATIALGEN_API_KEY", "SPATIALGEN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def write_state(folder: Path, api_url: str) -> Path:
    """A state file of session SID in `folder` (the working folder), whose one local file exists unchanged (so a
    resume would go on to the API)."""
    movie = folder / "movie.mov"
    movie.write_bytes(b"x" * 12)
    f = FileState(upload_id="u1", path=str(movie), file_name="movie.mov", file_role="video", size_bytes=12,
                  part_size_bytes=12, total_parts=1, upload_strategy="single_put",
                  mtime_ns=movie.stat().st_mtime_ns)  # fmt: skip
    state = SessionState(api_url=api_url, session_id=SID, video_name="Film", files=[f], idempotency_key="sgu1-x")
    save_state(state, state_path(folder / STATE_DIR, SID))
    return state_path(Path(STATE_DIR), SID)  # as the command names it, from the working folder


def key_file(folder: Path, mode: int, text: str = KEY + "\n") -> Path:
    path = folder / "api-key"
    path.write_text(text)
    path.chmod(mode)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the key goes only to the URL configured for the run -----------------------------------------


@pytest.mark.parametrize("command", ["status", "cancel", "resume"])
@pytest.mark.parametrize("source", ["SPATIALGEN_API_URL", "dev.env"])
def test_a_state_file_naming_another_url_is_refused_and_nothing_is_sent(
    home: Path, configured: Listener, recorded: Listener, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], command: str, source: str,
) -> None:  # fmt: skip
    path = write_state(home, recorded.url)
    if source == "dev.env":
        (home / ".data").mkdir()
        (home / ".data" / "dev.env").write_text(f"SPATIALGEN_API_URL={configured.url}\nSPATIALGEN_API_KEY={KEY}\n")
        named = str(Path(".data") / "dev.env")
    else:
        monkeypatch.setenv("SPATIALGEN_API_URL", configured.url)
        monkeypatch.setenv("SPATIALGEN_API_KEY", KEY)
        named = source
    assert cli.main([command, SID]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"the state file {path} records the API URL {recorded.url}, but {named} gives {configured.url}" in err
    assert f"add --api-url {recorded.url} to continue where it started, or --api-url {configured.url}" in err
    assert recorded.requests == [] and configured.requests == []


def test_with_no_url_configured_a_state_files_url_is_refused_too(
    home: Path, recorded: Listener, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_state(home, recorded.url)
    monkeypatch.setenv("SPATIALGEN_API_KEY", KEY)
    for command in ("status", "cancel", "resume"):
        assert cli.main([command, SID]) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert f"the state file {path} records the API URL {recorded.url}, and no URL is configured" in err
        assert f"to continue there, add --api-url {recorded.url}" in err
    assert recorded.requests == []


def test_an_explicit_api_url_is_used_whatever_the_state_file_says(
    home: Path, configured: Listener, recorded: Listener, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = write_state(home, recorded.url)
    monkeypatch.setenv("SPATIALGEN_API_URL", recorded.url)  # even the environment agreeing with the state file
    monkeypatch.setenv("SPATIALGEN_API_KEY", KEY)
    assert cli.main(["status", SID, "--api-url", configured.url]) == cli.EXIT_FAILED  # the listener's 404
    assert f"note: the state file {path} records {recorded.url}; using {configured.url} from --api-url" in (
        capsys.readouterr().err
    )
    assert cli.main(["resume", SID, "--api-url", configured.url]) == cli.EXIT_FAILED
    assert configured.requests == [(f"/api/videos/uploads/{SID}", KEY)] * 2
    assert recorded.requests == []


def test_a_state_file_agreeing_with_the_configured_url_is_used(
    home: Path, configured: Listener, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(home, configured.url.upper() + "/")  # the same service: case and a trailing slash aside
    monkeypatch.setenv("SPATIALGEN_API_URL", configured.url)
    monkeypatch.setenv("SPATIALGEN_API_KEY", KEY)
    assert cli.main(["status", SID]) == cli.EXIT_FAILED
    assert "note:" not in capsys.readouterr().err
    assert configured.requests == [(f"/api/videos/uploads/{SID}", KEY)]


def test_locate_never_answers_with_a_state_files_url(tmp_path: Path) -> None:
    env = {"SPATIALGEN_DATA_DIR": str(tmp_path), "SPATIALGEN_API_KEY": KEY}
    with pytest.raises(ConfigError, match="no URL is configured"):
        config.locate(None, env, recorded_url="http://state")
    with pytest.raises(ConfigError, match="but SPATIALGEN_API_URL gives http://env"):
        config.locate(None, env | {"SPATIALGEN_API_URL": "http://env"}, recorded_url="http://state")
    found = config.locate("http://flag", env, recorded_url="http://state")
    assert (found.url, found.url_from) == ("http://flag", "--api-url")
    found = config.locate(None, env | {"SPATIALGEN_API_URL": "http://env"}, recorded_url="HTTP://ENV/")
    assert (found.url, found.url_from, found.note) == ("http://env", "SPATIALGEN_API_URL", "")


# --- the key comes from the environment or a private file, never from an argument ----------------


@pytest.mark.parametrize("argv", [["--api-key", KEY], [f"--api-key={KEY}"], ["--api-key"]])
def test_a_key_given_as_an_argument_is_refused_before_any_request(
    home: Path, configured: Listener, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as caught:  # refused as argparse refuses an unknown option: at once
        cli.main(["status", SID, "--api-url", configured.url, *argv])
    assert caught.value.code == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert "--api-key is not accepted" in err and "`ps`" in err and "shell history" in err
    assert "Set SPATIALGEN_API_KEY" in err and "--api-key-file PATH" in err
    assert KEY not in out + err and configured.requests == []


def test_a_private_key_file_is_read_and_wins_over_the_environment(
    home: Path, configured: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPATIALGEN_API_KEY", "sgk_from_the_environment")
    path = key_file(home, 0o600, f"\n  {KEY}\r\n")
    assert cli.main(["status", SID, "--api-url", configured.url, "--api-key-file", str(path)]) == cli.EXIT_FAILED
    path.chmod(0o400)
    assert cli.main(["status", SID, "--api-url", configured.url, "--api-key-file", str(path)]) == cli.EXIT_FAILED
    assert [key for _, key in configured.requests] == [KEY, KEY]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o601], ids=oct)
def test_a_key_file_others_can_open_is_refused(
    home: Path, configured: Listener, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    path = key_file(home, mode)
    assert cli.main(["status", SID, "--api-url", configured.url, "--api-key-file", str(path)]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert f"the API key file {path} is open to other users (mode {mode:04o})" in err
    assert f"chmod 600 {path}" in err
    assert KEY not in out + err and configured.requests == []


@pytest.mark.parametrize(
    ("text", "says"),
    [("", "is empty"), (" \n", "is empty"), (f"{KEY}\nsgk_other\n", "holds more than one key"),
     (f"SPATIALGEN_API_KEY = {KEY}", "holds more than one key"), ("x" * 5000, "holds more than one key")],
)  # fmt: skip
def test_a_key_file_holding_anything_but_one_key_is_refused_without_quoting_it(
    home: Path, configured: Listener, capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    path = key_file(home, 0o600, text)
    assert cli.main(["status", SID, "--api-url", configured.url, "--api-key-file", str(path)]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert f"the API key file {path} {says}" in err
    assert KEY not in out + err and "xxxxx" not in err and configured.requests == []


def test_a_key_file_that_cannot_be_read_is_named(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = ["status", SID, "--api-url", "http://127.0.0.1:9"]
    assert cli.main([*url, "--api-key-file", "nope"]) == cli.EXIT_USAGE
    assert "cannot read the API key file nope (--api-key-file): No such file or directory" in capsys.readouterr().err
    (home / "folder").mkdir(mode=0o700)
    assert cli.main([*url, "--api-key-file", "folder"]) == cli.EXIT_USAGE
    assert "cannot read the API key file folder (--api-key-file): Is a directory" in capsys.readouterr().err


def test_help_offers_the_environment_and_a_key_file_never_a_key_argument(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("send", "resume", "status", "cancel"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        assert "--api-key-file PATH" in text and "readable by you alone" in text
        assert not re.search(r"--api-key(?!-file)", text), command
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "never\n  an argument (ps and shell history show those)" in text


def test_no_command_in_the_docs_puts_a_key_in_its_arguments() -> None:
    # The benchmarks run the command too.
    docs = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "Makefile", *sorted((ROOT / "deploy").rglob("*.*")),
            *sorted((ROOT / "tests" / "bench").glob("*.py"))]  # fmt: skip
    for path in docs:
        if path.suffix in (".pyc", ".png") or not path.is_file():
            continue
        text = path.read_text()
        assert not re.search(r"--api-key[ =\"']", text), f"{path} passes --api-key a value"
        # curl -H "X-SPATIALGEN-APPKEY: $KEY" shows the key in `ps` too: the README hands curl a header file.
        assert not re.search(r"-H ['\"]X-SPATIALGEN-APPKEY: \$", text), f"{path} gives curl the key as an argument"


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
