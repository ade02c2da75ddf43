"""The uploader where a newcomer goes wrong: a URL where nothing listens, a group the service no longer has, a
missing URL or key. No server runs: a closed loopback port refuses, httpx's MockTransport plays the API."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.client import cli, config
from app.client.api import ServiceClient
from app.client.errors import ServiceError, ServiceUnreachable, SessionGone
from app.client.events import Event, Retry
from app.client.retry import FIRST_CONTACT_DELAYS, Backoff
from app.client.state import FileState, SessionState, remove_state, save_state, state_path
from app.client.upload import UploadClient, _forget_lost_runs

Handler = Callable[[httpx.Request], httpx.Response]


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mocked(client: ServiceClient, handler: Handler) -> ServiceClient:
    """The client with its API calls answered by `handler` (same base URL and headers)."""
    client._api = httpx.AsyncClient(base_url=client.base_url, headers=client._api.headers,
                                    transport=httpx.MockTransport(handler))  # fmt: skip
    return client


def problem(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"status": status, "code": code, "title": code, "detail": f"{code} (mock)"})


def session(sid: str = "s1", key: str = "sgu1-x", url: str = "http://api", path: str = "/none/l.mov") -> SessionState:
    f = FileState(upload_id="u1", path=path, file_name="l.mov", file_role="video", size_bytes=12,
                  part_size_bytes=5, total_parts=3, upload_strategy="multipart")  # fmt: skip
    return SessionState(api_url=url, session_id=sid, video_name="Film", files=[f], idempotency_key=key)


# --- nothing listens at the URL ----------------------------------------------------------------


async def test_a_refused_first_connection_gives_up_after_a_few_quick_tries() -> None:
    events: list[Event] = []
    url = f"http://127.0.0.1:{closed_port()}"
    async with ServiceClient(url, "sgk_x") as client:
        with pytest.raises(ServiceUnreachable) as caught:
            await client.group_status("s1", on_progress=events.append)
    assert str(caught.value).startswith(f"status: cannot connect to {url} (ConnectError")
    assert (caught.value.status, caught.value.code) == (0, "unreachable")
    retries = [e for e in events if isinstance(e, Retry)]
    assert [r.delay_seconds for r in retries] == list(FIRST_CONTACT_DELAYS)  # not the ten tries of a hiccup


async def test_once_the_api_answered_a_refused_connection_is_a_hiccup_and_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return problem(404, "session_not_found")
        raise httpx.ConnectError("Connection refused", request=request)

    client = mocked(ServiceClient("http://api", "sgk_x", backoff=Backoff(0.001, 0.001), api_attempts=5), handler)
    async with client:
        with pytest.raises(ServiceError):
            await client.group_status("s1")  # the 404: the API answered
        with pytest.raises(ServiceError) as caught:
            await client.group_status("s1")
    assert not isinstance(caught.value, ServiceUnreachable) and caught.value.code == "unreachable"
    assert len(calls) == 1 + 5  # every try of the second call


@pytest.mark.parametrize(
    ("flags", "env", "hint"),
    [
        (["--api-url", "{url}"], {"SPATIALGEN_API_KEY": "sgk_x"}, "the URL came from --api-url: check it"),
        ([], {"SPATIALGEN_API_URL": "{url}", "SPATIALGEN_API_KEY": "sgk_x"}, "came from SPATIALGEN_API_URL"),
        ([], {"dev.env": "{url}"}, "written by `make run`: is that stack still running?"),
    ],
)
def test_the_command_names_where_the_url_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flags: list[str],
    env: dict[str, str], hint: str,
) -> None:  # fmt: skip
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.chdir(tmp_path)
    for name in ("SPATIALGEN_API_URL", "SPATIALGEN_API_KEY", "SPATIALGEN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if name == "dev.env":
            (tmp_path / ".data").mkdir()
            (tmp_path / ".data" / "dev.env").write_text(f"SPATIALGEN_API_URL={url}\nSPATIALGEN_API_KEY=sgk_x\n")
        else:
            monkeypatch.setenv(name, value.format(url=url))
    (tmp_path / "v.mp4").write_bytes(b"x" * 100)
    argv = ["send", "--layout", "2D", "--name", "n", "--video", "v.mp4", *(f.format(url=url) for f in flags)]
    assert cli.main(argv) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert f"error: start: cannot connect to {url}" in err and hint in err, err
    assert "0 unreachable" not in err and not (tmp_path / ".spatialgen-upload").exists()


def test_missing_url_or_key_never_says_run_make_run_here_when_a_url_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SPATIALGEN_API_URL", "SPATIALGEN_API_KEY", "SPATIALGEN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["status", "s1"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "no API URL: pass --api-url or set SPATIALGEN_API_URL" in err and str(tmp_path) in err
    assert cli.main(["status", "s1", "--api-url", "http://elsewhere:8000"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "no API key for http://elsewhere:8000 (URL from --api-url)" in err and "make run`" in err
    assert "run `make run` here" not in err


def test_locate_says_where_each_value_came_from(tmp_path: Path) -> None:
    (tmp_path / "dev.env").write_text("SPATIALGEN_API_URL=http://dev\nSPATIALGEN_API_KEY=sgk_dev\n")
    (tmp_path / "key").write_text("sgk_file")
    (tmp_path / "key").chmod(0o600)
    env = {"SPATIALGEN_DATA_DIR": str(tmp_path)}
    found = config.locate(None, env)
    assert (found.url, found.url_from, found.key_from) == ("http://dev", str(tmp_path / "dev.env"),
                                                          str(tmp_path / "dev.env"))  # fmt: skip
    found = config.locate(None, env | {"SPATIALGEN_API_URL": "http://env"}, api_key_file=tmp_path / "key",
                          recorded_url="http://env", recorded_from="the state file x.json")  # fmt: skip
    assert (found.url_from, found.key_from) == ("SPATIALGEN_API_URL", f"--api-key-file {tmp_path / 'key'}")
    assert "the URL came from SPATIALGEN_API_URL: check it" in found.url_hint()
    assert config.locate(None, {"SPATIALGEN_DATA_DIR": str(tmp_path / "none")}).url_from == ""


# --- a group the service no longer has ---------------------------------------------------------


async def test_resuming_a_group_the_service_no_longer_has_says_so_and_suggests_new(tmp_path: Path) -> None:
    (tmp_path / "l.mov").write_bytes(b"x" * 12)
    path = state_path(tmp_path, "s1")
    save_state(session(path=str(tmp_path / "l.mov")), path)
    client = mocked(UploadClient("http://api", "sgk_x"), lambda request: problem(404, "session_not_found"))
    async with client:
        with pytest.raises(SessionGone) as caught:
            await client.resume_group("s1", state_file=path)
    message = str(caught.value)
    assert "upload group s1 (named by the state file" in message and "unknown to http://api" in message
    assert "a `make run` stack starts empty" in message and "--new" in message
    assert path.exists()  # only send --new drops it, once the service has said the group is gone


async def test_send_new_drops_only_a_state_file_whose_group_is_gone(tmp_path: Path) -> None:
    save_state(session("gone", key="k"), state_path(tmp_path, "gone"))
    save_state(session("alive", key="k2"), state_path(tmp_path, "alive"))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/gone"):
            return problem(404, "session_not_found")
        return httpx.Response(200, json={})

    async with mocked(UploadClient("http://api", "sgk_x"), handler) as client:
        await _forget_lost_runs(client, "k", tmp_path, lambda event: None)
        assert not state_path(tmp_path, "gone").exists()
        await _forget_lost_runs(client, "k2", tmp_path, lambda event: None)
        assert state_path(tmp_path, "alive").exists()


def test_a_completed_groups_state_file_and_its_emptied_folder_go(tmp_path: Path) -> None:
    folder = tmp_path / ".spatialgen-upload"
    save_state(session("a"), state_path(folder, "a"))
    save_state(session("b"), state_path(folder, "b"))
    remove_state(state_path(folder, "a"), default_dir=True)
    assert [p.name for p in folder.iterdir()] == ["b.json"]
    remove_state(state_path(folder, "b"), default_dir=True)
    assert not folder.exists()
    remove_state(None, default_dir=True)
